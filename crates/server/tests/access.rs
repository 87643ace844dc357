//! Who may do what, over real HTTP: the admin token on the admin endpoints, API keys on
//! submissions and jobs, per-key limits, private jobs, and the key file's reload.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use superres_import::Family;
use superres_server::{ModelSetup, Server, ServerError, Settings};

/// A key file line for `key`: `name:sha256(key)[:max]`.
fn key_line(name: &str, key: &str, max: Option<usize>) -> String {
    let hex: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match max {
        Some(m) => format!("{name}:{hex}:{m}\n"),
        None => format!("{name}:{hex}\n"),
    }
}

fn write_keys(dir: &Path, lines: &[String]) -> PathBuf {
    let path = dir.join("keys.txt");
    std::fs::write(&path, format!("# test keys\n{}", lines.concat())).unwrap();
    path
}

fn loaded() -> ModelSetup {
    ModelSetup::Loaded {
        models: vec![tiny_model("m", 2, Family::Rgb)],
        default: None,
        backend: superres_upscale::device::cpu(),
    }
}

/// Submits a job with an optional key; answers the response.
async fn submit(
    http: &reqwest::Client,
    server: &TestServer,
    key: Option<&str>,
) -> reqwest::Response {
    let mut req = http
        .post(server.url("/v1/jobs"))
        .multipart(image_form(png(8, 8)));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    req.send().await.unwrap()
}

async fn job_id(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_are_disabled_without_a_token() {
    let server = start_with_models(settings(), vec![tiny_model("m", 2, Family::Rgb)]).await;
    let http = client();
    for auth in [None, Some("anything")] {
        let mut req = http.post(server.url("/v1/models/reload"));
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "admin_disabled", "{body}");
        assert_eq!(
            body["error"], "admin endpoints are disabled: set --admin-token",
            "{body}"
        );
    }
    // The open endpoints stay open, and so do submissions without a key file.
    for path in ["/healthz", "/readyz", "/v1/models", "/v1/devices", "/"] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(6, 6)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_needs_the_admin_token() {
    let server = start_with_models(admin_settings(), vec![tiny_model("m", 2, Family::Rgb)]).await;
    let http = client();
    let reload = || http.post(server.url("/v1/models/reload"));

    let r = reload().send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"superres\"");
    assert_eq!(error_code(r, 401).await, "unauthorized");

    let r = reload()
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "unauthorized");

    for wrong in ["wrong", "test-admin-toke", "test-admin-token-and-more"] {
        let r = reload().bearer_auth(wrong).send().await.unwrap();
        assert!(!r.headers().contains_key("www-authenticate"));
        assert_eq!(error_code(r, 403).await, "forbidden", "{wrong}");
    }

    let r = reload().bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["models"][0]["name"], "m", "{report}");
    assert!(report["keys"].is_null(), "no key file: {report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_need_a_known_key_and_jobs_are_private_to_it() {
    let dir = temp_dir("keys");
    let keys = write_keys(
        &dir,
        &[
            key_line("alice", "alice-key", None),
            key_line("bob", "bob-key", None),
        ],
    );
    let settings = Settings {
        api_keys: Some(keys),
        ..settings()
    };
    let server = start_with_models(settings, vec![tiny_model("m", 2, Family::Rgb)]).await;
    let http = client();

    // /enhance: no key 401, an unknown key 403, a known key the image.
    let enhance = || {
        http.post(server.url("/enhance"))
            .multipart(image_form(png(6, 6)))
    };
    let r = enhance().send().await.unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"superres\"");
    assert_eq!(error_code(r, 401).await, "unauthorized");
    let r = enhance().bearer_auth("mallory-key").send().await.unwrap();
    assert_eq!(error_code(r, 403).await, "forbidden");
    let r = enhance().bearer_auth("alice-key").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(png_size(&r.bytes().await.unwrap()), (12, 12));

    // /v1/jobs: the same.
    let r = submit(&http, &server, None).await;
    assert_eq!(error_code(r, 401).await, "unauthorized");
    let r = submit(
        &http,
        &server,
        Some(&key_line("alice", "alice-key", None)[6..70]),
    )
    .await;
    assert_eq!(
        error_code(r, 403).await,
        "forbidden",
        "the digest is not a key"
    );
    let id = job_id(submit(&http, &server, Some("alice-key")).await).await;

    // Alice sees her job; Bob, and anyone without a key, are told it does not exist.
    let view = wait_for_status_as(&server, &http, &id, "done", Some("alice-key")).await;
    assert_eq!(view["status"], "done", "{view}");
    for suffix in ["", "/events", "/result"] {
        let url = server.url(&format!("/v1/jobs/{id}{suffix}"));
        let r = http.get(&url).bearer_auth("bob-key").send().await.unwrap();
        assert_eq!(error_code(r, 404).await, "not_found", "bob: {suffix}");
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(error_code(r, 401).await, "unauthorized", "no key: {suffix}");
    }
    let r = http
        .delete(server.url(&format!("/v1/jobs/{id}")))
        .bearer_auth("bob-key")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = http
        .get(server.url(&format!("/v1/jobs/{id}/events")))
        .bearer_auth("alice-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(server.url(&format!("/v1/jobs/{id}/result")))
        .bearer_auth("alice-key")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "Bob's attempts did not touch Alice's result"
    );
    assert_eq!(png_size(&r.bytes().await.unwrap()), (16, 16));
    let r = http
        .delete(server.url(&format!("/v1/jobs/{id}")))
        .bearer_auth("alice-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_has_a_limit_of_jobs_in_flight() {
    let dir = temp_dir("limits");
    // Bob's line names a limit of 1; Alice gets the default, 2 here.
    let keys = write_keys(
        &dir,
        &[
            key_line("alice", "alice-key", None),
            key_line("bob", "bob-key", Some(1)),
        ],
    );
    let settings = Settings {
        api_keys: Some(keys),
        api_key_max_in_flight: 2,
        queue_size: 10,
        ..settings()
    };
    let slow = SlowUpscaler::new(100, Duration::from_millis(20));
    let server = start(settings, loaded(), slow).await;
    let http = client();

    let bob = job_id(submit(&http, &server, Some("bob-key")).await).await;
    let r = submit(&http, &server, Some("bob-key")).await;
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    let (status, code, message) = {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (
            status,
            body["code"].as_str().unwrap().to_string(),
            body["error"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!((status, code.as_str()), (429, "too_many_jobs"), "{message}");
    assert!(
        message.contains("'bob'") && message.contains("1 job(s)"),
        "the key and its limit are named: {message}"
    );
    let r = http
        .post(server.url("/enhance"))
        .bearer_auth("bob-key")
        .multipart(image_form(png(6, 6)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, 429).await,
        "too_many_jobs",
        "/enhance counts too"
    );

    // Other keys are not held back by Bob's limit; Alice has two.
    let a1 = job_id(submit(&http, &server, Some("alice-key")).await).await;
    let a2 = job_id(submit(&http, &server, Some("alice-key")).await).await;
    let r = submit(&http, &server, Some("alice-key")).await;
    assert_eq!(error_code(r, 429).await, "too_many_jobs");

    // A cancelled job is no longer in flight: Bob may submit again.
    let r = http
        .delete(server.url(&format!("/v1/jobs/{bob}")))
        .bearer_auth("bob-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view = wait_for_status_as(&server, &http, &bob, "cancelled", Some("bob-key")).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    let r = submit(&http, &server, Some("bob-key")).await;
    assert_eq!(r.status(), 202, "Bob's cancelled job no longer counts");
    let bob2 = job_id(r).await;
    for (id, key) in [(a1, "alice-key"), (a2, "alice-key"), (bob2, "bob-key")] {
        http.delete(server.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
    }
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_file_is_reloaded_with_the_models_and_a_bad_one_keeps_the_keys() {
    let dir = temp_dir("reload-keys");
    let keys = write_keys(&dir, &[key_line("alice", "alice-key", None)]);
    let settings = Settings {
        api_keys: Some(keys.clone()),
        ..admin_settings()
    };
    let server = start(settings, loaded(), SlowUpscaler::new(0, Duration::ZERO)).await;
    let http = client();
    let enhance = |key: &'static str| {
        http.post(server.url("/enhance"))
            .bearer_auth(key)
            .multipart(image_form(png(4, 4)))
            .send()
    };
    assert_eq!(enhance("alice-key").await.unwrap().status(), 200);
    assert_eq!(enhance("carol-key").await.unwrap().status(), 403);

    // Carol replaces Alice; the admin reload picks it up.
    write_keys(&dir, &[key_line("carol", "carol-key", None)]);
    let r = http
        .post(server.url("/v1/models/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["keys"], 1, "{report}");
    assert!(report["errors"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(enhance("alice-key").await.unwrap().status(), 403);
    assert_eq!(enhance("carol-key").await.unwrap().status(), 200);

    // A malformed file is reported and the keys in use stay.
    std::fs::write(&keys, "dave:not-a-digest\n").unwrap();
    let r = http
        .post(server.url("/v1/models/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    let errors = report["errors"].to_string();
    assert!(
        errors.contains("keys.txt") && errors.contains("line 1"),
        "{report}"
    );
    assert_eq!(report["keys"], 1, "{report}");
    assert_eq!(enhance("carol-key").await.unwrap().status(), 200);

    // The reload SIGHUP runs reads the file too.
    write_keys(&dir, &[key_line("erin", "erin-key", Some(3))]);
    let report = server.handle.reload().await.unwrap();
    assert_eq!(report.keys, Some(1));
    assert_eq!(enhance("erin-key").await.unwrap().status(), 200);
    assert_eq!(enhance("carol-key").await.unwrap().status(), 403);
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_key_file_stops_the_start() {
    let dir = temp_dir("bad-keys");
    let bad = dir.join("bad.txt");
    std::fs::write(&bad, "alice:1234\n").unwrap();
    for (path, needle) in [
        (bad, "line 1"),
        (dir.join("absent.txt"), "cannot read the API key file"),
    ] {
        let settings = Settings {
            api_keys: Some(path),
            ..settings()
        };
        let err = match Server::bind(settings, loaded()).await {
            Ok(_) => panic!("the server started with a bad key file"),
            Err(e) => e,
        };
        assert!(matches!(err, ServerError::Keys(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
