//! Routes and handlers: translation between the wire and the job queue, and nothing else.
//!
//! Where it sits: the outside of the service. Each handler is a small async fn whose
//! arguments are extractors; the work it asks for is done by the
//! [`JobQueue`](crate::queue::JobQueue) and the workers, the models come from the
//! [`ModelRegistry`]. Cross-cutting concerns are tower layers applied in [`router`]: request
//! ids, one log line per request, request metrics, JSON error bodies, the upload timeout and
//! the body-size limit. Who may call what is decided by the extractors of [`crate::auth`]:
//! [`Admin`] on the admin endpoints, [`Caller`] on the submissions and the job endpoints.
//! The page, health, readiness, `/metrics`, `/v1/models` and `/v1/devices` stay open: they
//! carry no one's images.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use futures_util::Stream;
use serde::Serialize;
use superres_upscale::{DeviceStatus, Precision};
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::assets;
use crate::auth::{Access, Admin, Caller};
use crate::error::{ApiError, json_errors};
use crate::models::ModelRegistry;
use crate::queue::{JobOutput, JobRequest, JobStatus, Owner};
use crate::state::AppState;
use crate::telemetry::{record_devices, track_requests};
use crate::upload::{Upload, check_header, check_request};

/// The application: every route, with its layers.
pub fn router(state: AppState) -> Router {
    let limits = state.http;
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/style.css", get(assets::style_css))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/enhance", post(enhance))
        .route("/v1/jobs", post(create_job))
        .route("/v1/jobs/{id}", get(job_status).delete(cancel_job))
        .route("/v1/jobs/{id}/events", get(job_events))
        .route("/v1/jobs/{id}/result", get(job_result))
        .route("/v1/models", get(list_models))
        .route("/v1/models/reload", post(reload_models))
        .route("/v1/devices", get(list_devices))
        .fallback(not_found)
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(DefaultOnResponse::new().level(Level::INFO))
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::from_fn(track_requests))
                .layer(middleware::map_response(json_errors))
                .layer(RequestBodyTimeoutLayer::new(limits.upload_timeout))
                .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        )
}

fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| req.uri().path(), |p| p.as_str());
    // `key` is filled in by the `Caller` extractor when the request carries an API key.
    tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        route = %route,
        key = tracing::field::Empty
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; see DESIGN.md for the API",
    )
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    models: usize,
    /// Jobs waiting for a worker.
    queued: usize,
    /// Jobs being run.
    running: usize,
}

async fn readyz(State(app): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if app.queue.is_draining() {
        return Err(ApiError::shutting_down());
    }
    if !app.models.is_ready() {
        return Err(ApiError::not_ready(app.models.not_ready_reason()));
    }
    let (queued, running) = app.queue.depth();
    Ok(Json(Ready {
        status: "ready",
        models: app.models.list().len(),
        queued,
        running,
    }))
}

/// `GET /v1/devices`: the backend the models run on and its devices, as
/// [`Backend::status`](superres_upscale::Backend::status) reports them now.
#[derive(Serialize)]
struct DeviceList {
    /// e.g. `cpu (avx512, 2 threads)`.
    backend: String,
    precision: &'static str,
    devices: Vec<DeviceView>,
}

#[derive(Serialize)]
struct DeviceView {
    /// `cpu` or `cuda:N`.
    id: String,
    name: String,
    memory_total_bytes: Option<u64>,
    memory_used_bytes: Option<u64>,
    utilisation_percent: Option<f64>,
}

impl From<DeviceStatus> for DeviceView {
    fn from(d: DeviceStatus) -> Self {
        DeviceView {
            id: d.id,
            name: d.name,
            memory_total_bytes: d.memory_total_bytes,
            memory_used_bytes: d.memory_used_bytes,
            utilisation_percent: d.utilisation_percent,
        }
    }
}

/// The backend's device status, read off the async runtime (NVML queries block briefly).
async fn device_status(app: &AppState) -> Result<(String, Precision, Vec<DeviceStatus>), ApiError> {
    let backend = Arc::clone(app.models.backend());
    tokio::task::spawn_blocking(move || (backend.name(), backend.precision(), backend.status()))
        .await
        .map_err(|e| ApiError::internal(format!("the device status could not be read: {e}")))
}

async fn list_devices(State(app): State<AppState>) -> Result<Json<DeviceList>, ApiError> {
    let (backend, precision, devices) = device_status(&app).await?;
    Ok(Json(DeviceList {
        backend,
        precision: precision.name(),
        devices: devices.into_iter().map(DeviceView::from).collect(),
    }))
}

async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    match device_status(&app).await {
        Ok((_, precision, devices)) => record_devices(&devices, precision),
        Err(e) => tracing::warn!("{e}"),
    }
    app.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

/// Checks an upload and turns it into a job for the queue, owned by the caller's key.
fn job_request(app: &AppState, caller: &Caller, upload: Upload) -> Result<JobRequest, ApiError> {
    let format = upload.output_format()?;
    let model = app.models.resolve(upload.model.as_deref())?;
    let config = app.queue.config();
    let header = check_header(&upload.image, &config.limits)?;
    check_request(&header, &model, &config.options, &config.request_limits)?;
    Ok(JobRequest {
        bytes: upload.image,
        model,
        format,
        owner: caller.0.as_ref().map(|k| Owner {
            name: Arc::clone(&k.name),
            max_in_flight: k.max_in_flight,
        }),
    })
}

/// `POST /enhance`: waits in the same queue as jobs and answers the image itself.
async fn enhance(
    State(app): State<AppState>,
    caller: Caller,
    upload: Upload,
) -> Result<Response, ApiError> {
    let request = job_request(&app, &caller, upload)?;
    let ticket = app.queue.submit_and_wait(request)?;
    let output = ticket.outcome().await?;
    Ok(image_response(&output))
}

#[derive(Serialize)]
struct Accepted {
    id: String,
    status: JobStatus,
    position: Option<usize>,
}

/// `POST /v1/jobs`: 202 with the job's id and a `Location` to poll.
async fn create_job(
    State(app): State<AppState>,
    caller: Caller,
    upload: Upload,
) -> Result<impl IntoResponse, ApiError> {
    let request = job_request(&app, &caller, upload)?;
    let view = app.queue.submit(request)?;
    let location = format!("/v1/jobs/{}", view.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(Accepted {
            id: view.id,
            status: view.status,
            position: view.position,
        }),
    ))
}

async fn job_status(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    app.queue
        .view(&id, caller.owner())
        .map(Json)
        .ok_or_else(|| ApiError::job_not_found(&id))
}

async fn cancel_job(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    app.queue.cancel(&id, caller.owner()).map(Json)
}

/// `GET /v1/jobs/{id}/events`: the job's view now and on every change, until it ends.
async fn job_events(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let receiver = app
        .queue
        .subscribe(&id, caller.owner())
        .ok_or_else(|| ApiError::job_not_found(&id))?;
    let events = futures_util::stream::unfold(Some((receiver, true)), |state| async move {
        let (mut receiver, first) = state?;
        // A closed channel means the job was forgotten (expired or deleted): end the stream.
        if !first && receiver.changed().await.is_err() {
            return None;
        }
        let view = receiver.borrow_and_update().clone();
        let event = Event::default()
            .json_data(&view)
            .unwrap_or_else(|_| Event::default().data("{}"));
        let next = (!view.status.is_terminal()).then_some((receiver, false));
        Some((Ok(event), next))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

async fn job_result(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let output = app.queue.result(&id, caller.owner())?;
    Ok(image_response(&output))
}

#[derive(Serialize)]
struct ModelList {
    models: Vec<crate::models::ModelView>,
}

async fn list_models(State(app): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    if !app.models.is_ready() {
        return Err(ApiError::not_ready(app.models.not_ready_reason()));
    }
    Ok(Json(ModelList {
        models: app.models.list(),
    }))
}

/// `POST /v1/models/reload` (admin): the same as SIGHUP, the models and the API key file.
async fn reload_models(
    State(app): State<AppState>,
    _admin: Admin,
) -> Result<impl IntoResponse, ApiError> {
    let models = Arc::clone(&app.models);
    let access = Arc::clone(&app.access);
    let report = tokio::task::spawn_blocking(move || reload_all(&models, &access))
        .await
        .map_err(|e| ApiError::internal(format!("the reload did not finish: {e}")))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e))?;
    Ok(Json(report))
}

/// What `POST /v1/models/reload` answers: the models' report, with the number of API keys
/// now in use (`null` without a key file). A key file that cannot be read keeps the keys
/// in use and adds its error to `errors`.
#[derive(Serialize)]
pub struct FullReload {
    #[serde(flatten)]
    pub models: crate::models::ReloadReport,
    pub keys: Option<usize>,
}

/// Reloads the models, then the key file. Blocking: run it off the async runtime.
pub fn reload_all(models: &ModelRegistry, access: &Access) -> Result<FullReload, String> {
    let keys = access.reload_keys();
    let mut report = models.reload()?;
    let keys = match keys {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("{e}; keeping the API keys in use");
            report.errors.push(e);
            access.keys.as_ref().map(|k| k.current().len())
        }
    };
    Ok(FullReload {
        models: report,
        keys,
    })
}

/// The image of a finished job, with the model that made it and where the time went.
fn image_response(output: &JobOutput) -> Response {
    let t = &output.timings;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let timing = format!(
        "queue;dur={:.1}, decode;dur={:.1}, upscale;dur={:.1}, encode;dur={:.1}",
        ms(t.queue),
        ms(t.decode),
        ms(t.upscale),
        ms(t.encode)
    );
    let mut response = (
        [(header::CONTENT_TYPE, output.format.content_type())],
        output.bytes.clone(),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&output.model) {
        headers.insert(HeaderName::from_static("x-superres-model"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&timing) {
        headers.insert(HeaderName::from_static("server-timing"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "inline; filename=\"upscaled.{}\"",
        output.format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}
