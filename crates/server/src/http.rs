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
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use superres_upscale::{DeviceStatus, Precision};
use tower::{ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::services::ServeFile;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::ToSchema;

use crate::assets;
use crate::auth::{Access, Admin, Caller};
use crate::error::{ApiError, ErrorBody, json_errors};
use crate::jobs::Depth;
use crate::media::{Media, VideoFile};
use crate::models::ModelRegistry;
use crate::queue::{JobOutput, JobRequest, JobStatus, JobView, Owner};
use crate::state::AppState;
use crate::telemetry::{record_devices, track_requests};
use crate::upload::{InputShape, Upload, UploadForm, UploadQuery, check_header, check_request};

/// The application: every route, with its layers.
pub fn router(state: AppState) -> Router {
    let limits = state.http;
    let request_id = HeaderName::from_static("x-request-id");
    let service = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(list_models))
        .route("/v1/models/reload", post(reload_models))
        .route("/v1/devices", get(list_devices))
        .route("/openapi.json", get(openapi_json));
    // A cluster's worker node (`--role worker`) takes no requests: its port is for probes
    // and metrics.
    let app = if state.takes_requests {
        service
            .route("/", get(assets::index))
            .route("/app.js", get(assets::app_js))
            .route("/style.css", get(assets::style_css))
            .route("/enhance", post(enhance))
            .route("/v1/jobs", post(create_job))
            .route("/v1/jobs/{id}", get(job_status).delete(cancel_job))
            .route("/v1/jobs/{id}/events", get(job_events))
            .route("/v1/jobs/{id}/result", get(job_result))
    } else {
        service
    };
    app.fallback(not_found).with_state(state).layer(
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
            .layer(DefaultBodyLimit::max(limits.body_limit())),
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

#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok`: the process answers.
    status: &'static str,
}

/// Liveness: the process answers. Says nothing about the models (see `/readyz`).
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The process is alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Ready {
    /// `ready`.
    status: &'static str,
    /// Models loaded.
    models: usize,
    /// Jobs waiting for a worker.
    queued: usize,
    /// Jobs being run.
    running: usize,
}

/// Readiness: the models are loaded and the server is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "service", responses(
    (status = 200, description = "Ready for requests", body = Ready),
    (status = 503, description = "Models not loaded yet (or none could be), or shutting down", body = ErrorBody),
))]
pub(crate) async fn readyz(State(app): State<AppState>) -> Result<Json<Ready>, ApiError> {
    if app.jobs.is_draining() {
        return Err(ApiError::shutting_down());
    }
    if !app.models.is_ready() {
        return Err(ApiError::not_ready(app.models.not_ready_reason()));
    }
    if let Some(why) = app.jobs.not_ready(app.models.generation()) {
        return Err(ApiError::not_ready(why));
    }
    let Depth {
        queued, running, ..
    } = app.jobs.depth().await?;
    Ok(Json(Ready {
        status: "ready",
        models: app.models.list().len(),
        queued,
        running,
    }))
}

/// `GET /v1/devices`: the backend the models run on and its devices, as
/// [`Backend::status`](superres_upscale::Backend::status) reports them now.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeviceList {
    /// e.g. `cpu (avx512, 2 threads)`.
    backend: String,
    precision: &'static str,
    devices: Vec<DeviceView>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DeviceView {
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

/// The backend the models run on and its devices, with memory and load where known.
#[utoipa::path(get, path = "/v1/devices", tag = "service",
    responses((status = 200, description = "The devices", body = DeviceList)))]
pub(crate) async fn list_devices(
    State(app): State<AppState>,
) -> Result<Json<DeviceList>, ApiError> {
    let (backend, precision, devices) = device_status(&app).await?;
    Ok(Json(DeviceList {
        backend,
        precision: precision.name(),
        devices: devices.into_iter().map(DeviceView::from).collect(),
    }))
}

/// Prometheus metrics: requests, jobs, queue depth, stage times, devices.
#[utoipa::path(get, path = "/metrics", tag = "service", responses(
    (status = 200, description = "The Prometheus text format", content_type = "text/plain", body = String),
))]
pub(crate) async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    match device_status(&app).await {
        Ok((_, precision, devices)) => record_devices(&devices, precision),
        Err(e) => tracing::warn!("{e}"),
    }
    // The queue's figures (a cluster's shared ones included) as of now.
    if let Err(e) = app.jobs.depth().await {
        tracing::warn!("{e}");
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

/// Checks an upload and turns it into a job for the queue, owned by the caller's key: an
/// image from its header, a video from what ffprobe says of it (its frames are held to the
/// limits an image is).
async fn job_request(
    app: &AppState,
    caller: &Caller,
    upload: Upload,
) -> Result<JobRequest, ApiError> {
    let format = upload.output_format()?;
    let size = upload.output_size()?;
    let model = app.models.resolve(upload.model.as_deref())?;
    let config = app.jobs.config();
    let shape = match &upload.media {
        Media::Image(bytes) => InputShape::from(&check_header(bytes, &config.limits)?),
        Media::Video(_) if !app.jobs.takes_video() => {
            return Err(ApiError::video_unsupported(
                "video jobs run on a single node: this server's jobs go through a cluster \
                 broker, which carries images only",
            ));
        }
        Media::Video(file) => {
            let path = file.path.clone();
            let probe = tokio::task::spawn_blocking(move || superres_video::probe(&path))
                .await
                .map_err(|e| ApiError::internal(format!("the video probe did not finish: {e}")))?
                .map_err(ApiError::corrupt_video)?;
            let frame_pixels = (probe.width as u64).saturating_mul(probe.height as u64);
            if frame_pixels > config.limits.max_pixels {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!(
                        "the video's frames are {}×{}, more than the limit of {} pixels",
                        probe.width, probe.height, config.limits.max_pixels
                    ),
                ));
            }
            InputShape::video_frame(probe.width, probe.height)
        }
    };
    check_request(
        &shape,
        &model,
        &config.options,
        &config.request_limits,
        size,
    )?;
    Ok(JobRequest {
        media: upload.media,
        model,
        format,
        size,
        owner: caller.0.as_ref().map(|k| Owner {
            name: Arc::clone(&k.name),
            max_in_flight: k.max_in_flight,
        }),
    })
}

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// The `Idempotency-Key` header: 1 to [`MAX_IDEMPOTENCY_KEY`] bytes of visible ASCII (400
/// otherwise, an empty one included); absent is none.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_field(format!(
            "the Idempotency-Key header must be visible ASCII of at most \
             {MAX_IDEMPOTENCY_KEY} bytes"
        ))
    };
    let text = value.to_str().map_err(|_| bad())?;
    if text.is_empty()
        || text.len() > MAX_IDEMPOTENCY_KEY
        || !text.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad());
    }
    Ok(Some(text.to_string()))
}

/// `POST /enhance`: waits in the same queue as jobs and answers the image itself.
///
/// The drop-in endpoint: the upscaled image in the response body, as PNG unless `format`
/// asks for another. A client that disconnects abandons its job.
#[utoipa::path(post, path = "/enhance", tag = "images",
    params(UploadQuery),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The upscaled image",
            content(("image/png"), ("image/jpeg"), ("image/webp")),
            headers(
                ("x-superres-model" = String, description = "The model that made it"),
                ("server-timing" = String, description = "Milliseconds in queue, decode, upscale, encode"),
            )),
        (status = 400, description = "No `image` field, a bad field, an unknown model or a malformed body", body = ErrorBody),
        (status = 401, description = "API keys are required and none was sent", body = ErrorBody),
        (status = 403, description = "The API key is not valid", body = ErrorBody),
        (status = 408, description = "The upload took longer than --upload-timeout-secs", body = ErrorBody),
        (status = 413, description = "The body, the image or the result (pixels or memory) exceeds a limit", body = ErrorBody),
        (status = 415, description = "Not an image format superres reads", body = ErrorBody),
        (status = 422, description = "The image is damaged", body = ErrorBody),
        (status = 429, description = "The queue is full, or the API key has its limit of jobs in flight",
            body = ErrorBody, headers(("retry-after" = u64, description = "Seconds after which there may be room"))),
        (status = 500, description = "The model run failed or exceeded --job-timeout-secs", body = ErrorBody),
        (status = 503, description = "Models not loaded yet, or shutting down", body = ErrorBody),
    ))]
pub(crate) async fn enhance(
    State(app): State<AppState>,
    caller: Caller,
    upload: Upload,
) -> Result<Response, ApiError> {
    if matches!(upload.media, Media::Video(_)) {
        return Err(ApiError::video_needs_job());
    }
    let request = job_request(&app, &caller, upload).await?;
    let output = app.jobs.run(request).await?;
    Ok(image_response(&output))
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Accepted {
    /// The job's id, for `/v1/jobs/{id}`.
    id: String,
    /// `queued`.
    status: JobStatus,
    /// Jobs ahead of it.
    position: Option<usize>,
}

/// The headers `POST /v1/jobs` reads, as the description states them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // Describes the header; `idempotency_key` reads it.
pub(crate) struct JobHeaders {
    /// Any visible ASCII up to 256 bytes: the same key (from the same API key) answers the
    /// job it first made, on any node, while that job is kept, instead of making another.
    #[param(rename = "Idempotency-Key", pattern = r"^[!-~]{1,256}$")]
    idempotency_key: Option<String>,
}

/// `POST /v1/jobs`: 202 with the job's id and a `Location` to poll.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    params(UploadQuery, JobHeaders),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    security((), ("api_key" = [])),
    responses(
        (status = 202, description = "Queued", body = Accepted,
            headers(("location" = String, description = "The job: `/v1/jobs/{id}`"))),
        (status = 400, description = "No `image` field, a bad field, an unknown model or a malformed body", body = ErrorBody),
        (status = 401, description = "API keys are required and none was sent", body = ErrorBody),
        (status = 403, description = "The API key is not valid", body = ErrorBody),
        (status = 408, description = "The upload took longer than --upload-timeout-secs", body = ErrorBody),
        (status = 413, description = "The body, the image or the result (pixels or memory) exceeds a limit", body = ErrorBody),
        (status = 415, description = "Not an image format superres reads", body = ErrorBody),
        (status = 422, description = "The image header is damaged", body = ErrorBody),
        (status = 429, description = "The queue is full, or the API key has its limit of jobs in flight",
            body = ErrorBody, headers(("retry-after" = u64, description = "Seconds after which there may be room"))),
        (status = 503, description = "Models not loaded yet, shutting down, the cluster's Redis unreachable (`broker_unavailable`), or no worker has the model (`no_worker`)", body = ErrorBody),
    ))]
pub(crate) async fn create_job(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    upload: Upload,
) -> Result<impl IntoResponse, ApiError> {
    let key = idempotency_key(&headers)?;
    let request = job_request(&app, &caller, upload).await?;
    let view = app.jobs.submit(request, key).await?;
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

/// A job's state, progress and queue position.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 401, description = "API keys are required and none was sent", body = ErrorBody),
        (status = 403, description = "The API key is not valid", body = ErrorBody),
        (status = 404, description = "No such job (or another key's, or expired)", body = ErrorBody),
    ))]
pub(crate) async fn job_status(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.jobs.view(&id, caller.owner()).await?))
}

/// Cancels a job: a queued one at once, a running one at its next tile (both stay readable
/// as `cancelled` until the result TTL); a finished one is forgotten with its result.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The job after the change", body = JobView),
        (status = 401, description = "API keys are required and none was sent", body = ErrorBody),
        (status = 403, description = "The API key is not valid", body = ErrorBody),
        (status = 404, description = "No such job (or another key's, or expired)", body = ErrorBody),
    ))]
pub(crate) async fn cancel_job(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(app.jobs.cancel(&id, caller.owner()).await?))
}

/// One server-sent event of `/v1/jobs/{id}/events`, as the description states it.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the stream; the handler writes `Event`s.
pub(crate) struct JobEvent {
    /// The job's view (a `JobView`) as JSON.
    #[schema(content_media_type = "application/json")]
    data: String,
    /// The event type: always the default, `message`.
    event: Option<String>,
}

/// `GET /v1/jobs/{id}/events`: the job's view now and on every change, until it ends.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "Server-sent events, each `data:` a JobView, ending after a final state",
            content_type = "text/event-stream", body = JobEvent),
        (status = 401, description = "API keys are required and none was sent", body = ErrorBody),
        (status = 403, description = "The API key is not valid", body = ErrorBody),
        (status = 404, description = "No such job (or another key's, or expired)", body = ErrorBody),
    ))]
pub(crate) async fn job_events(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let views = app.jobs.events(&id, caller.owner()).await?;
    let events = views.map(|view| {
        Ok(Event::default()
            .json_data(&view)
            .unwrap_or_else(|_| Event::default().data("{}")))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// A finished job's image or video. A failed job answers its own error, with the status it
/// failed with. A video is streamed from its file and answers `Range` requests.
#[utoipa::path(get, path = "/v1/jobs/{id}/result", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    security((), ("api_key" = [])),
    responses(
        (status = 200, description = "The upscaled image or video",
            content(("image/png"), ("image/jpeg"), ("image/webp"), ("video/mp4"), ("video/webm"), ("video/x-matroska")),
            headers(
                ("x-superres-model" = String, description = "The model that made it"),
                ("server-timing" = String, description = "Milliseconds in queue, decode, upscale, encode"),
            )),
        (status = 206, description = "The part of a video a `Range` header asked for",
            content(("video/mp4"), ("video/webm"), ("video/x-matroska"))),
        (status = 401, description = "API keys are required and none was sent", body = ErrorBody),
        (status = 403, description = "The API key is not valid", body = ErrorBody),
        (status = 404, description = "No such job (or another key's, or expired)", body = ErrorBody),
        (status = 409, description = "Not done yet (`not_done`), or cancelled (`cancelled`)", body = ErrorBody),
        (status = 413, description = "The job failed: its image exceeded a limit", body = ErrorBody),
        (status = 415, description = "The job failed: not an image format superres reads", body = ErrorBody),
        (status = 416, description = "A `Range` outside the video"),
        (status = 422, description = "The job failed: the image or video is damaged", body = ErrorBody),
        (status = 500, description = "The job failed: the model run failed or took too long", body = ErrorBody),
    ))]
pub(crate) async fn job_result(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let output = app.jobs.result(&id, caller.owner()).await?;
    match &output.media {
        Media::Image(_) => Ok(image_response(&output)),
        Media::Video(file) => video_response(&output, file, headers).await,
    }
}

/// A video result from its file, through tower-http's `ServeFile`: ranges, `If-Range`,
/// `Last-Modified` and `HEAD` as a file server does them.
async fn video_response(
    output: &JobOutput,
    file: &VideoFile,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut request = axum::http::Request::new(axum::body::Body::empty());
    *request.headers_mut() = headers;
    let served = ServeFile::new(&file.path)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::internal(format!("the video result cannot be read: {e}")))?;
    if served.status() == StatusCode::NOT_FOUND {
        // Expired (its folder removed) between the lookup and the read.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "job_not_found",
            "the video result is gone (expired)",
        ));
    }
    let mut response = served.map(axum::body::Body::new);
    if response.status().is_success() {
        let content_type = HeaderValue::from_static(output.format.content_type());
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        describe_result(&mut response, output);
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ModelList {
    models: Vec<crate::models::ModelView>,
}

/// The models loaded, with their family, scale, source, device and precision.
#[utoipa::path(get, path = "/v1/models", tag = "service", responses(
    (status = 200, description = "The models", body = ModelList),
    (status = 503, description = "Models not loaded yet", body = ErrorBody),
))]
pub(crate) async fn list_models(State(app): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    if !app.models.is_ready() {
        return Err(ApiError::not_ready(app.models.not_ready_reason()));
    }
    Ok(Json(ModelList {
        models: app.models.list(),
    }))
}

/// `POST /v1/models/reload` (admin): the same as SIGHUP, the models and the API key file.
#[utoipa::path(post, path = "/v1/models/reload", tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "What the reload did", body = FullReload),
        (status = 401, description = "No admin token was sent", body = ErrorBody),
        (status = 403, description = "The token is not valid, or admin endpoints are disabled (no --admin-token)", body = ErrorBody),
        (status = 500, description = "The models folder could not be read", body = ErrorBody),
    ))]
pub(crate) async fn reload_models(
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
#[derive(Serialize, ToSchema)]
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

/// This description (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "service", responses(
    (status = 200, description = "The OpenAPI 3.1 description of this API", content_type = "application/json", body = Object),
))]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document(),
    )
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
    let bytes = match &output.media {
        Media::Image(bytes) => bytes.clone(),
        Media::Video(_) => Default::default(),
    };
    let mut response = (
        [(header::CONTENT_TYPE, output.format.content_type())],
        bytes,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&timing) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("server-timing"), v);
    }
    describe_result(&mut response, output);
    response
}

/// The headers every result carries: the model that made it and a download name.
fn describe_result(response: &mut Response, output: &JobOutput) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&output.model) {
        headers.insert(HeaderName::from_static("x-superres-model"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!(
        "inline; filename=\"upscaled.{}\"",
        output.format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
}
