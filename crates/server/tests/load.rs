//! The service under load: a full queue, a model switch and a shutdown while requests run.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use superres_import::Family;
use superres_server::{Clock, ModelSetup, Pipeline, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_concurrent_uploads_get_only_200_or_429_and_the_server_recovers() {
    let server = start(
        Settings {
            queue_size: 2,
            workers: 1,
            ..settings()
        },
        ModelSetup::Loaded {
            models: vec![tiny_model("m", 2, Family::Rgb)],
            default: None,
            backend: superres_upscale::device::cpu(),
        },
        SlowUpscaler::new(3, Duration::from_millis(25)),
    )
    .await;
    let http = client();
    let input = png(12, 9);
    let requests = (0..40).map(|_| {
        let http = http.clone();
        let url = server.url("/enhance");
        let input = input.clone();
        tokio::spawn(async move { http.post(url).multipart(image_form(input)).send().await })
    });
    let responses = futures_util::future::join_all(requests).await;
    let (mut ok, mut busy) = (0, 0);
    for r in responses {
        let r = r.unwrap().expect("every request gets an answer");
        match r.status().as_u16() {
            200 => {
                assert_eq!(r.headers()["content-type"], "image/png");
                assert_eq!(png_size(&r.bytes().await.unwrap()), (24, 18));
                ok += 1;
            }
            429 => {
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .expect("Retry-After is whole seconds");
                assert!(retry >= 1);
                assert_eq!(error_code(r, 429).await, "queue_full");
                busy += 1;
            }
            other => panic!("unexpected status {other}: {:?}", r.text().await),
        }
    }
    assert_eq!(ok + busy, 40);
    assert!(
        ok >= 3,
        "at least the queue's worth was served ({ok} ok, {busy} busy)"
    );
    assert!(
        busy >= 1,
        "a queue of 2 refuses some of 40 at once ({ok} ok)"
    );

    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(5, 5)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "answers normally afterwards");
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("superres_rejected_total"), "{metrics}");
    assert_eq!(server.stop().await.abandoned, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_load_completes_every_accepted_job() {
    let slow = SlowUpscaler::new(3, Duration::from_millis(30));
    let server = start(
        Settings {
            queue_size: 6,
            workers: 1,
            ..settings()
        },
        ModelSetup::Loaded {
            models: vec![tiny_model("m", 2, Family::Rgb)],
            default: None,
            backend: superres_upscale::device::cpu(),
        },
        slow.clone(),
    )
    .await;
    let http = client();
    // Three async jobs, then four waiting /enhance requests.
    for _ in 0..3 {
        let r = http
            .post(server.url("/v1/jobs"))
            .multipart(image_form(png(8, 8)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let waiting: Vec<_> = (0..4)
        .map(|_| {
            let http = http.clone();
            let url = server.url("/enhance");
            tokio::spawn(
                async move { http.post(url).multipart(image_form(png(8, 8))).send().await },
            )
        })
        .collect();
    // Once all seven are accepted, ask for the shutdown while jobs are queued and running.
    wait_until(
        "all seven uploads to be accepted while jobs still wait",
        || {
            let ready = http.get(server.url("/readyz")).send();
            let started = slow.runs.load(std::sync::atomic::Ordering::SeqCst) as u64;
            async move {
                let ready: serde_json::Value = ready.await.ok()?.json().await.ok()?;
                let queued = ready["queued"].as_u64()?;
                let waiting = queued + ready["running"].as_u64()?;
                (started + queued == 7 && waiting >= 2).then_some(())
            }
        },
    )
    .await;
    let handle = server.handle.clone();
    let stopping = tokio::spawn(server.stop());
    let mut ok = 0;
    for w in waiting {
        let r = w
            .await
            .unwrap()
            .expect("a waiting /enhance gets its answer during the drain");
        assert_eq!(
            r.status(),
            200,
            "accepted before the shutdown, so it completes"
        );
        assert_eq!(png_size(&r.bytes().await.unwrap()), (16, 16));
        ok += 1;
    }
    let report = stopping.await.unwrap();
    assert_eq!(ok, 4);
    assert_eq!(report.abandoned, 0, "{report:?}");
    assert_eq!(
        slow.runs.load(std::sync::atomic::Ordering::SeqCst),
        7,
        "every accepted job ran"
    );
    assert!(report.finished_while_draining >= 1, "{report:?}");
    drop(handle);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipping_current_and_reloading_under_load_fails_no_request() {
    let fixture = onnx_fixture();
    let dir = temp_dir("switch");
    for version in ["1", "2"] {
        std::fs::create_dir_all(dir.join("compact").join(version)).unwrap();
        std::fs::copy(
            &fixture,
            dir.join("compact").join(version).join("model.onnx"),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("1", dir.join("compact/current")).unwrap();
    let backend = superres_upscale::device::cpu();
    let server = start(
        Settings {
            queue_size: 64,
            workers: 2,
            ..admin_settings()
        },
        ModelSetup::Disk {
            dir: Some(dir.clone()),
            model: Some("compact".into()),
            backend,
        },
        Arc::new(Pipeline),
    )
    .await;
    let http = client();
    wait_ready(&server, &http).await;
    // The folder's model, next to the built-in ones.
    let source = |list: serde_json::Value| {
        list["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "compact")
            .and_then(|m| m["source"].as_str())
            .unwrap()
            .to_string()
    };
    let before = source(
        http.get(server.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap(),
    );
    assert!(before.ends_with("compact/1/model.onnx"), "{before}");

    let requests: Vec<_> = (0..16)
        .map(|i| {
            let http = http.clone();
            let url = server.url(if i % 2 == 0 {
                "/enhance"
            } else {
                "/enhance?model=compact"
            });
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 10)).await;
                http.post(url)
                    .multipart(image_form(png(10, 7)))
                    .send()
                    .await
            })
        })
        .collect();
    // Flip `current` to version 2 and reload, twice, while the requests run.
    for target in ["2", "1"] {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let tmp = dir.join("compact/current.tmp");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join("compact/current")).unwrap();
        let r = http
            .post(server.url("/v1/models/reload"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let report: serde_json::Value = r.json().await.unwrap();
        assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
        let now = source(
            http.get(server.url("/v1/models"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap(),
        );
        assert!(
            now.ends_with(&format!("compact/{target}/model.onnx")),
            "{now}"
        );
    }
    for r in requests {
        let r = r.await.unwrap().expect("answered");
        assert_eq!(r.status(), 200, "no request fails because of a reload");
        assert_eq!(png_size(&r.bytes().await.unwrap()), (40, 28));
    }
    assert_eq!(server.stop().await.abandoned, 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// The time-to-live is checked on the queue's clock, here a manual one: the result is there
/// until the instant the TTL has passed since the job finished, and gone from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_expire_after_their_time_to_live() {
    let clock = Clock::manual();
    let ttl = Duration::from_secs(600);
    let server = start_with_models(
        Settings {
            result_ttl: ttl,
            clock: clock.clone(),
            ..settings()
        },
        vec![tiny_model("m", 2, Family::Rgb)],
    )
    .await;
    let http = client();
    let id = submit_job(&server, &http, png(4, 4)).await;
    assert_eq!(
        wait_for_status(&server, &http, &id, "done").await["status"],
        "done"
    );
    let result = || {
        http.get(server.url(&format!("/v1/jobs/{id}/result")))
            .send()
    };
    assert_eq!(result().await.unwrap().status(), 200);
    clock.advance(ttl - Duration::from_millis(1));
    assert_eq!(
        result().await.unwrap().status(),
        200,
        "kept until the TTL has passed"
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(error_code(result().await.unwrap(), 404).await, "not_found");
    let r = http
        .get(server.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 404).await,
        "not_found",
        "the job is forgotten too"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_result_store_evicts_the_oldest_results_beyond_its_budget() {
    let server = start_with_models(
        Settings {
            result_store_bytes: 1,
            ..settings()
        },
        vec![tiny_model("m", 2, Family::Rgb)],
    )
    .await;
    let http = client();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = submit_job(&server, &http, png(4, 4)).await;
        assert_eq!(
            wait_for_status(&server, &http, &id, "done").await["status"],
            "done"
        );
        // A budget of one byte still keeps the newest result.
        let r = http
            .get(server.url(&format!("/v1/jobs/{id}/result")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(id);
    }
    let r = http
        .get(server.url(&format!("/v1/jobs/{}/result", ids[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 404).await,
        "not_found",
        "the older result was evicted"
    );
    server.stop().await;
}
