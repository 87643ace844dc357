//! The HTTP contract of DESIGN.md, endpoint by endpoint, over real HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use superres_import::Family;
use superres_server::{ModelSetup, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhance_answers_the_upscaled_png_with_model_and_timing_headers() {
    let server = start_with_models(
        settings(),
        vec![
            tiny_model("rgbx2", 2, Family::Rgb),
            tiny_model("yx3", 3, Family::YChannel),
        ],
    )
    .await;
    let http = client();

    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(20, 12)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-superres-model"], "rgbx2");
    let timing = r.headers()["server-timing"].to_str().unwrap().to_string();
    assert!(timing.contains("upscale;dur="), "Server-Timing: {timing}");
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(png_size(&r.bytes().await.unwrap()), (40, 24));

    // The model as a field, the format as a query parameter.
    let form = image_form(png(10, 10)).text("model", "yx3");
    let r = http
        .post(server.url("/enhance?format=jpeg"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.headers()["x-superres-model"], "yx3");
    let img = image::load_from_memory(&r.bytes().await.unwrap()).expect("a JPEG");
    assert_eq!((img.width(), img.height()), (30, 30));

    // The format as a field, the model as a query parameter.
    let form = image_form(png(8, 8)).text("format", "webp");
    let r = http
        .post(server.url("/enhance?model=yx3"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/webp");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_errors_are_json_with_design_codes() {
    let server = start_with_models(settings(), vec![tiny_model("m", 2, Family::Rgb)]).await;
    let http = client();
    let post = |form: reqwest::multipart::Form, path: &str| {
        http.post(server.url(path)).multipart(form).send()
    };

    let no_image = reqwest::multipart::Form::new().text("model", "m");
    let r = post(no_image, "/enhance").await.unwrap();
    assert_eq!(error_code(r, 400).await, "missing_field");

    let r = post(image_form(png(4, 4)).text("model", "nope"), "/enhance")
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "unknown_model");

    let r = post(image_form(png(4, 4)), "/v1/jobs?format=gif")
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_field");

    let r = http
        .post(server.url("/enhance"))
        .body("not multipart")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_field");

    let r = http.get(server.url("/no/such/thing")).send().await.unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");

    let r = http.get(server.url("/enhance")).send().await.unwrap();
    assert_eq!(error_code(r, 405).await, "method_not_allowed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_from_queued_to_done_and_its_result_is_the_image() {
    let slow = SlowUpscaler::new(4, Duration::from_millis(60));
    let server = start(
        settings(),
        ModelSetup::Loaded {
            models: vec![tiny_model("m", 2, Family::Rgb)],
            default: None,
            backend: superres_upscale::device::cpu(),
        },
        slow,
    )
    .await;
    let http = client();

    let r = http
        .post(server.url("/v1/jobs"))
        .multipart(image_form(png(16, 16)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let accepted: serde_json::Value = r.json().await.unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/jobs/{id}"));
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["position"], 0);

    // Before it is done, the result is a 409.
    let r = http
        .get(server.url(&format!("{location}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 409).await, "not_done");

    // The event stream shows every change, ending with "done".
    let r = http
        .get(server.url(&format!("{location}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = r.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("events keep coming until the job ends")
    {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&"done"), "{statuses:?}");
    assert!(statuses.contains(&"running"), "{statuses:?}");
    let progress: Vec<f64> = events
        .iter()
        .map(|e| e["progress"].as_f64().unwrap())
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress goes up: {progress:?}"
    );
    assert!(
        progress.iter().any(|p| *p > 0.0 && *p < 1.0),
        "intermediate progress: {progress:?}"
    );

    let r = http.get(server.url(&location)).send().await.unwrap();
    let view: serde_json::Value = r.json().await.unwrap();
    assert_eq!(view["status"], "done");
    assert_eq!(view["progress"], 1.0);
    assert!(
        view["position"].is_null() && view["error"].is_null(),
        "{view}"
    );

    let r = http
        .get(server.url(&format!("{location}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-superres-model"], "m");
    assert_eq!(png_size(&r.bytes().await.unwrap()), (32, 32));

    let r = http
        .get(server.url("/v1/jobs/nonexistent"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = http
        .get(server.url("/v1/jobs/nonexistent/result"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = http
        .delete(server.url("/v1/jobs/nonexistent"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 404).await, "not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_a_queued_job_and_stops_a_running_one_at_the_next_tile() {
    let slow = SlowUpscaler::new(50, Duration::from_millis(20));
    let server = start(
        settings(),
        ModelSetup::Loaded {
            models: vec![tiny_model("m", 2, Family::Rgb)],
            default: None,
            backend: superres_upscale::device::cpu(),
        },
        slow.clone(),
    )
    .await;
    let http = client();
    let submit = || async {
        let r = http
            .post(server.url("/v1/jobs"))
            .multipart(image_form(png(8, 8)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    };
    let running = submit().await;
    let queued = submit().await;
    let third = submit().await;
    let v = wait_for_status(&server, &http, &running, "running").await;
    assert_eq!(v["status"], "running", "{v}");
    let v: serde_json::Value = http
        .get(server.url(&format!("/v1/jobs/{third}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["position"], 1, "two jobs ahead, one running: {v}");

    let r = http
        .delete(server.url(&format!("/v1/jobs/{queued}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["status"], "cancelled");
    let v: serde_json::Value = http
        .get(server.url(&format!("/v1/jobs/{third}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["position"], 0, "moved up after the cancel: {v}");

    let r = http
        .delete(server.url(&format!("/v1/jobs/{running}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = wait_for_status(&server, &http, &running, "cancelled").await["status"].clone();
    assert_eq!(
        status, "cancelled",
        "the running job stops at its next tile"
    );
    let r = http
        .get(server.url(&format!("/v1/jobs/{running}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 409).await, "cancelled");
    let r = http
        .delete(server.url(&format!("/v1/jobs/{third}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report = server.stop().await;
    assert_eq!(report.abandoned, 0);
    assert!(
        slow.runs.load(std::sync::atomic::Ordering::SeqCst) <= 2,
        "the cancelled queued job never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_model_fails_its_job_with_500_and_the_server_keeps_serving() {
    let server = start(
        settings(),
        ModelSetup::Loaded {
            models: vec![
                tiny_model("m", 2, Family::Rgb),
                tiny_model("explode", 2, Family::Rgb),
            ],
            default: Some("m".into()),
            backend: superres_upscale::device::cpu(),
        },
        SlowUpscaler::new(0, Duration::ZERO),
    )
    .await;
    let http = client();
    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(8, 8)).text("model", "explode"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 500).await, "internal");

    let r = http
        .post(server.url("/v1/jobs?model=explode"))
        .multipart(image_form(png(8, 8)))
        .send()
        .await
        .unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let view = wait_for_status(&server, &http, &id, "failed").await;
    assert_eq!(view["status"], "failed", "{view}");
    assert!(
        view["error"].as_str().unwrap().contains("exploded"),
        "{view}"
    );
    let r = http
        .get(server.url(&format!("/v1/jobs/{id}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 500).await, "internal");

    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(8, 8)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the same worker serves the next job");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_the_timeout_is_stopped() {
    let server = start(
        Settings {
            job_timeout: Duration::from_millis(100),
            ..settings()
        },
        ModelSetup::Loaded {
            models: vec![tiny_model("m", 2, Family::Rgb)],
            default: None,
            backend: superres_upscale::device::cpu(),
        },
        SlowUpscaler::new(100, Duration::from_millis(20)),
    )
    .await;
    let r = client()
        .post(server.url("/enhance"))
        .multipart(image_form(png(8, 8)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 500).await, "timeout");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_models_metrics_and_the_page() {
    let server = start_with_models(
        settings(),
        vec![
            tiny_model("a", 2, Family::Rgb),
            tiny_model("b", 4, Family::YChannel),
        ],
    )
    .await;
    let http = client();
    let r = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = http.get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list: serde_json::Value = r.json().await.unwrap();
    let models = list["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    assert_eq!(models[0]["name"], "a");
    assert_eq!(models[0]["family"], "rgb");
    assert_eq!(models[0]["scale"], 2);
    assert_eq!(models[0]["source"], "test");
    assert!(
        models[0]["device"].as_str().unwrap().starts_with("cpu"),
        "{list}"
    );
    assert_eq!(models[0]["precision"], "exact");
    assert_eq!(models[0]["default"], true);
    assert_eq!(models[1]["family"], "y");
    assert_eq!(models[1]["scale"], 4);

    // One request so the request metrics have a sample.
    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(6, 6)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for name in [
        "superres_http_requests_total",
        "superres_queue_depth",
        "superres_jobs_in_flight",
        "superres_queue_wait_seconds_bucket",
        "superres_run_seconds_bucket",
        "superres_pixels_processed_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    assert!(text.contains("route=\"/enhance\""), "{text}");

    for (path, ct, needle) in [
        ("/", "text/html", "<"),
        ("/app.js", "text/javascript", ""),
        ("/style.css", "text/css", ""),
    ] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ct),
            "{path}"
        );
        assert!(r.text().await.unwrap().contains(needle));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_endpoint_and_device_metrics_show_the_cpu() {
    let server = start_with_models(settings(), vec![tiny_model("a", 2, Family::Rgb)]).await;
    let http = client();

    let r = http.get(server.url("/v1/devices")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["backend"].as_str().unwrap().starts_with("cpu ("),
        "{body}"
    );
    assert_eq!(body["precision"], "exact");
    let devices = body["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{body}");
    assert_eq!(devices[0]["id"], "cpu");
    assert!(
        devices[0]["name"].as_str().unwrap().contains("threads"),
        "{body}"
    );
    // Host memory and load are not a device's: unknown, not zero.
    assert!(devices[0]["memory_total_bytes"].is_null(), "{body}");
    assert!(devices[0]["utilisation_percent"].is_null(), "{body}");

    let text = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let info = text
        .lines()
        .find(|l| l.starts_with("superres_device_info{"))
        .unwrap_or_else(|| panic!("no superres_device_info in /metrics:\n{text}"));
    assert!(info.contains("device=\"cpu\""), "{info}");
    assert!(info.contains("precision=\"exact\""), "{info}");
    assert!(info.ends_with(" 1"), "{info}");
    // No memory gauge for a device whose memory is unknown.
    assert!(
        !text.contains("superres_device_memory_used_bytes{device=\"cpu\"}"),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_models_load_then_reload_makes_it_ready() {
    let dir = temp_dir("ready");
    let backend = superres_upscale::device::cpu();
    let server = start(
        admin_settings(),
        // The default model is named but not in the folder yet (the built-in models are
        // there, so an unnamed default would load at once).
        ModelSetup::Disk {
            dir: Some(dir.clone()),
            model: Some("compact".into()),
            backend,
        },
        Arc::new(superres_server::Pipeline),
    )
    .await;
    let http = client();
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The named model is missing: loading fails and the service stays unready.
    let mut code = String::new();
    for _ in 0..50 {
        let r = http.get(server.url("/readyz")).send().await.unwrap();
        code = error_code(r, 503).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(code, "not_ready");
    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(4, 4)))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 503).await, "not_ready");
    let r = http
        .post(server.url("/v1/models/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 500).await, "reload_failed");

    let fixture = onnx_fixture();
    std::fs::copy(&fixture, dir.join("compact.onnx")).unwrap();
    let r = http
        .post(server.url("/v1/models/reload"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let report: serde_json::Value = r.json().await.unwrap();
    assert_eq!(report["models"][0]["name"], "compact");
    assert_eq!(
        http.get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(6, 5)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(png_size(&r.bytes().await.unwrap()), (24, 20));
    server.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enhance_client_that_disconnects_frees_its_worker() {
    // One worker, and a run that would take hours unless it is cancelled.
    let slow = SlowUpscaler::new(1_000_000, Duration::from_millis(20));
    let server = start(
        settings(),
        ModelSetup::Loaded {
            models: vec![tiny_model("m", 2, Family::Rgb)],
            default: None,
            backend: superres_upscale::device::cpu(),
        },
        slow.clone(),
    )
    .await;
    // A client that goes away once its job is running.
    let http = client();
    let request = http
        .post(server.url("/enhance"))
        .multipart(image_form(png(8, 8)))
        .send();
    let request = tokio::spawn(request);
    wait_until("the /enhance job to start", || {
        let runs = slow.runs.load(std::sync::atomic::Ordering::SeqCst);
        async move { (runs == 1).then_some(()) }
    })
    .await;
    request.abort();
    assert!(
        request.await.is_err_and(|e| e.is_cancelled()),
        "the client went away before an answer"
    );
    // The abandoned job stops at its next tile, so the next job gets the only worker. Were
    // it not abandoned, the second job would wait for hours and the wait below would fail.
    let id = submit_job(&server, &http, png(8, 8)).await;
    let view = wait_for_status(&server, &http, &id, "running").await;
    assert_eq!(view["status"], "running", "{view}");
    assert_eq!(
        slow.runs.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the abandoned job had started, and the second one runs on the freed worker"
    );
    let r = http
        .delete(server.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        wait_for_status(&server, &http, &id, "cancelled").await["status"],
        "cancelled"
    );
    assert_eq!(server.stop().await.abandoned, 0);
}

/// The JSON error of a response: status, code and message.
async fn error_of(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.expect("error body is JSON");
    let text = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    (status, text("code"), text("error"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_output_pixel_limit_is_refused_before_it_is_queued() {
    // ×2: 20×12 gives 40×24 = 960 pixels, exactly the limit; 21×12 gives 42×24 = 1008.
    let settings = Settings {
        max_output_pixels: 960,
        ..settings()
    };
    let server = start_with_models(settings, vec![tiny_model("m", 2, Family::Rgb)]).await;
    let http = client();
    let post = |w, h, path: &str| {
        http.post(server.url(path))
            .multipart(image_form(png(w, h)))
            .send()
    };

    let r = post(20, 12, "/enhance").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(png_size(&r.bytes().await.unwrap()), (40, 24));

    for path in ["/enhance", "/v1/jobs"] {
        let (status, code, message) = error_of(post(21, 12, path).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (413, "too_large"),
            "{path}: {message}"
        );
        assert!(
            message.contains("42x24 = 1008 pixels") && message.contains("limit of 960"),
            "{path}: the would-be size and the limit are named: {message}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_memory_limit_is_refused_before_it_is_queued() {
    // The limit is exactly what a 20×12 upload needs: its ×2 RGB result (8-bit) and the
    // model's peak for the run the pipeline would make of it.
    let model = tiny_model("m", 2, Family::Rgb);
    let options = superres_upscale::Options {
        tile: None,
        memory_budget: Settings::default().memory_budget_bytes,
        ..Default::default()
    };
    let tiling = model.tiling(20, 12, &options);
    let (rw, rh) = tiling.run_size();
    let needed = 40 * 24 * 3 + model.peak_bytes(rh, rw, tiling.batch).unwrap();
    let settings = Settings {
        max_request_memory_bytes: needed,
        ..settings()
    };
    let server = start_with_models(settings, vec![model]).await;
    let http = client();
    let post = |w, h| {
        http.post(server.url("/enhance"))
            .multipart(image_form(png(w, h)))
            .send()
    };

    let r = post(20, 12).await.unwrap();
    assert_eq!(r.status(), 200, "an upload needing exactly the limit runs");
    assert_eq!(png_size(&r.bytes().await.unwrap()), (40, 24));

    let (status, code, message) = error_of(post(40, 24).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (413, "too_large"), "{message}");
    assert!(
        message.contains("MiB") && message.contains("max_request_memory_mb"),
        "the estimate and the limit are named: {message}"
    );

    let r = client().get(server.url("/readyz")).send().await.unwrap();
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["queued"], 0, "nothing was queued: {ready}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outscale_width_and_height_resize_the_result() {
    let settings = Settings {
        max_output_pixels: 2000,
        ..settings()
    };
    let server = start_with_models(settings, vec![tiny_model("m", 2, Family::Rgb)]).await;
    let http = client();
    // A 10×6 input through a ×2 model, then resampled.
    for (query, fields, size) in [
        ("", vec![("outscale", "1.5")], (15, 9)),
        ("?width=30", vec![], (30, 18)),
        ("?height=3", vec![], (5, 3)),
        ("?outscale=3", vec![("width", "8"), ("height", "4")], (8, 4)),
    ] {
        let mut form = image_form(png(10, 6));
        for (k, v) in &fields {
            form = form.text(*k, *v);
        }
        let form_only = fields.iter().any(|(k, _)| *k != "outscale");
        let r = http
            .post(server.url(&format!("/enhance{query}")))
            .multipart(form)
            .send()
            .await
            .unwrap();
        if form_only {
            // outscale in the query and sides in the form: the two may not be combined.
            let (status, code, message) = error_of(r).await;
            assert_eq!((status, code.as_str()), (400, "bad_field"), "{message}");
            assert!(message.contains("not both"), "{message}");
            continue;
        }
        assert_eq!(r.status(), 200, "{query} {fields:?}");
        assert_eq!(
            png_size(&r.bytes().await.unwrap()),
            size,
            "{query} {fields:?}"
        );
    }
    // Through a job, from the query.
    let r = http
        .post(server.url("/v1/jobs?width=40"))
        .multipart(image_form(png(10, 6)))
        .send()
        .await
        .unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        wait_for_status(&server, &http, &id, "done").await["status"],
        "done"
    );
    let r = http
        .get(server.url(&format!("/v1/jobs/{id}/result")))
        .send()
        .await
        .unwrap();
    assert_eq!(png_size(&r.bytes().await.unwrap()), (40, 24));
    // Bad values are 400 naming the option; a resized result over the limit is 413.
    for (query, needle) in [
        ("?outscale=0.5", "outscale must be a number from 1"),
        ("?outscale=big", "'outscale' must be a number"),
        ("?width=-3", "'width' must be a whole number"),
        ("?height=0", "height must be between 1"),
    ] {
        let r = http
            .post(server.url(&format!("/enhance{query}")))
            .multipart(image_form(png(10, 6)))
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(r).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "bad_field"),
            "{query}: {message}"
        );
        assert!(message.contains(needle), "{query}: {message}");
    }
    let r = http
        .post(server.url("/enhance?width=100"))
        .multipart(image_form(png(10, 6)))
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(r).await;
    assert_eq!(status, 413, "{message}");
    assert!(message.contains("100x60 = 6000 pixels"), "{message}");
    server.stop().await;
}
