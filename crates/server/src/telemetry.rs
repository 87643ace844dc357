//! Logs and metrics: the tracing subscriber, the Prometheus recorder and the per-request
//! metrics layer.
//!
//! Where it sits: around everything. Request logging is tower-http's `TraceLayer` (one line
//! per request, in a span carrying the request id); this module installs the subscriber that
//! writes those lines (text or JSON), the process-wide Prometheus recorder that `/metrics`
//! renders, and [`track_requests`], the layer counting requests by route and status.
//!
//! Metric names (all prefixed `superres_`): `http_requests_total{route,method,status}`,
//! `http_request_duration_seconds{route}`, `queue_depth`, `jobs_in_flight`,
//! `queue_wait_seconds`, `run_seconds{model}`, `rejected_total{reason}`,
//! `jobs_total{status}`, `pixels_processed_total`, `model_load_seconds{model}`,
//! `models_loaded`, and per device, refreshed on every scrape by [`record_devices`]:
//! `device_info{device,name,precision}` (always 1), `device_memory_total_bytes{device}`,
//! `device_memory_used_bytes{device}`, `device_utilisation_percent{device}` (the last three
//! where the backend knows them: GPUs through NVML).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use superres_upscale::{DeviceStatus, Precision};

use crate::config::LogFormat;

/// Installs the global tracing subscriber, writing to standard error. The filter comes from `SUPERRES_LOG` (same syntax
/// as `RUST_LOG`), `info` by default. Does nothing if one is already installed.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SUPERRES_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Histogram buckets for durations, seconds: from a fast health check to a slow large image.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The process-wide Prometheus recorder, installed on first use. Several servers in one
/// process (tests) share it.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
            {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    // Another recorder owns the process: /metrics still answers, empty.
                    tracing::warn!("cannot install the Prometheus recorder: {e}");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "superres_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "superres_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request duration by route"
    );
    describe_gauge!("superres_queue_depth", "Jobs waiting for a worker");
    describe_gauge!("superres_jobs_in_flight", "Jobs being run by a worker");
    describe_histogram!(
        "superres_queue_wait_seconds",
        Unit::Seconds,
        "Time a job waited in the queue"
    );
    describe_histogram!(
        "superres_run_seconds",
        Unit::Seconds,
        "Time a worker spent on a successful job (decode, upscale, encode)"
    );
    describe_counter!(
        "superres_rejected_total",
        "Images refused because the queue was full"
    );
    describe_counter!("superres_jobs_total", "Jobs ended, by final status");
    describe_counter!(
        "superres_pixels_processed_total",
        "Input pixels upscaled successfully"
    );
    describe_histogram!(
        "superres_model_load_seconds",
        Unit::Seconds,
        "Time to load and prepare a model"
    );
    describe_gauge!("superres_models_loaded", "Models in the current catalog");
    describe_gauge!(
        "superres_device_info",
        "The devices models run on (always 1), with their name and precision"
    );
    describe_gauge!(
        "superres_device_memory_total_bytes",
        Unit::Bytes,
        "Memory of the device"
    );
    describe_gauge!(
        "superres_device_memory_used_bytes",
        Unit::Bytes,
        "Memory in use on the device (by every process)"
    );
    describe_gauge!(
        "superres_device_utilisation_percent",
        Unit::Percent,
        "Percent of the last sampling period the device was busy"
    );
}

/// Sets the per-device gauges from a backend's [`Backend::status`](superres_upscale::Backend::status).
pub fn record_devices(devices: &[DeviceStatus], precision: Precision) {
    for d in devices {
        let id = d.id.clone();
        metrics::gauge!(
            "superres_device_info",
            "device" => id.clone(),
            "name" => d.name.clone(),
            "precision" => precision.name()
        )
        .set(1.0);
        if let Some(v) = d.memory_total_bytes {
            metrics::gauge!("superres_device_memory_total_bytes", "device" => id.clone())
                .set(v as f64);
        }
        if let Some(v) = d.memory_used_bytes {
            metrics::gauge!("superres_device_memory_used_bytes", "device" => id.clone())
                .set(v as f64);
        }
        if let Some(v) = d.utilisation_percent {
            metrics::gauge!("superres_device_utilisation_percent", "device" => id).set(v);
        }
    }
}

/// Counts every request by matched route (never the raw path, which would let clients
/// create unbounded label values), method and status, and times it.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("superres_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("superres_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
