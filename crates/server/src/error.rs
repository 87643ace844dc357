//! The one error type of the HTTP service, and the layer that gives every failure its shape.
//!
//! Where it sits: at the edge. Handlers, the job queue and the model registry return
//! [`ApiError`]; its [`IntoResponse`] writes the JSON body every client sees,
//! `{"error": "<for a person>", "code": "<for a program>"}`, with the status DESIGN.md
//! promises and, for a full queue, a `Retry-After` header. Responses that are produced below
//! the handlers (unknown routes, wrong methods, tower layers' own rejections) are rewritten
//! into the same shape by [`json_errors`], so a client never has to parse two error formats.

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use superres_imaging::{ErrorKind, ImageError};
use superres_upscale::UpscaleError;

use crate::jobs::JobError;

/// A failure to answer a request, with the status and machine code it is reported with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
    /// A 401 that asks for a bearer credential (`WWW-Authenticate: Bearer`).
    bearer_challenge: bool,
}

/// Every error's body.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody<'a> {
    /// What went wrong, for a person.
    pub error: &'a str,
    /// What went wrong, for a program: e.g. `queue_full`, `corrupt_image`, `not_found`.
    pub code: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            bearer_challenge: false,
        }
    }

    /// 401 with `WWW-Authenticate: Bearer`: the request needs a credential it lacks (or
    /// sends one in a form that is not `Bearer <secret>`).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError {
            bearer_challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
    }

    /// 403: the credential is not one this server knows.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 403: no admin token is configured, so no one may use the admin endpoints.
    pub fn admin_disabled() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "admin endpoints are disabled: set --admin-token",
        )
    }

    /// 400: a required multipart field is absent.
    pub fn missing_field(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "missing_field",
            format!(
                "the request has no '{name}' field: send the image as multipart/form-data field '{name}'"
            ),
        )
    }

    /// 400: a field is present but its value is not acceptable.
    pub fn bad_field(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_field", message)
    }

    /// 400: the requested model is not loaded.
    pub fn unknown_model(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unknown_model", message)
    }

    pub fn job_not_found(id: &str) -> Self {
        JobError::not_found(id).into()
    }

    /// 409: the job exists but has no result (yet, or any more).
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413: the result resampled to the size asked for would exceed the pixel limit.
    pub fn resized_too_large(width: u64, height: u64, limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the resized result would be {width}x{height} = {} pixels, more than the \
                 limit of {limit} output pixels",
                width.saturating_mul(height)
            ),
        )
    }

    /// 413: the upload exceeds the body limit.
    pub fn body_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the upload is larger than the limit of {} MB",
                limit_bytes.div_ceil(1_000_000)
            ),
        )
    }

    /// 413: upscaled `scale` times, a `width × height` upload would have more pixels than
    /// `limit`.
    pub fn output_too_large(width: u64, height: u64, scale: u64, limit: u64) -> Self {
        let (ow, oh) = (width.saturating_mul(scale), height.saturating_mul(scale));
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the result would be {ow}x{oh} = {} pixels (the {width}x{height} image upscaled \
                 x{scale}), more than the limit of {limit} output pixels (max_output_pixels)",
                ow.saturating_mul(oh)
            ),
        )
    }

    /// 413: the request would need `needed` bytes (`image` of them for the output image,
    /// the rest for the model's runs), more than `limit`.
    pub fn memory_too_large(needed: u64, image: u64, limit: u64) -> Self {
        let mib = |b: u64| b.div_ceil(1 << 20);
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "upscaling this image would need about {} MiB ({} MiB for the result, {} MiB \
                 for the model's runs), more than the limit of {} MiB per request \
                 (max_request_memory_mb)",
                mib(needed),
                mib(image),
                mib(needed.saturating_sub(image)),
                mib(limit)
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 503 while models are loading (or failed to load).
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message)
    }

    /// 503 once a shutdown has begun: nothing new is accepted.
    pub fn shutting_down() -> Self {
        JobError::shutting_down().into()
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after_secs
    }
}

/// The status each job code is reported with.
fn status_of(code: &str) -> StatusCode {
    match code {
        "not_found" => StatusCode::NOT_FOUND,
        "not_done" | "cancelled" => StatusCode::CONFLICT,
        "queue_full" | "too_many_jobs" => StatusCode::TOO_MANY_REQUESTS,
        "shutting_down" | "not_ready" | "broker_unavailable" | "no_worker" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        "too_large" | "video_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsupported_format" | "video_unsupported" | "video_needs_job" => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        "corrupt_image" | "corrupt_video" => StatusCode::UNPROCESSABLE_ENTITY,
        "bad_field" | "unknown_model" | "missing_field" => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A job's failure at the edge: its code's status, its message, its retry time.
impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        ApiError {
            retry_after_secs: e.retry_after_secs(),
            ..ApiError::new(status_of(e.code()), e.code(), e.message())
        }
    }
}

/// A worker's failure (decoding, the model, encoding) as the job records it.
impl From<ApiError> for JobError {
    fn from(e: ApiError) -> Self {
        let job = JobError::from_wire(e.code, e.message);
        match e.retry_after_secs {
            Some(secs) => job.with_retry_after(secs),
            None => job,
        }
    }
}

/// The status and code of each [`ErrorKind`]: 422 for a damaged image, 415 for a format
/// that is not read or written, 413 for an image beyond a limit, 500 for the rest.
impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let (status, code) = match e.kind() {
            ErrorKind::Corrupt => (StatusCode::UNPROCESSABLE_ENTITY, "corrupt_image"),
            ErrorKind::Unsupported => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_format"),
            ErrorKind::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.message())
    }
}

impl From<UpscaleError> for ApiError {
    fn from(e: UpscaleError) -> Self {
        match e {
            // The image decoded but the network cannot take it (e.g. a model that wants
            // three channels and a buffer that disagrees): the input's fault.
            UpscaleError::BadImage(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "corrupt_image", m)
            }
            UpscaleError::Cancelled => ApiError::conflict("cancelled", "the job was cancelled"),
            other => ApiError::internal(format!("the model run failed: {other}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: &self.message,
            code: self.code,
        });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.bearer_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"superres\""),
            );
        }
        response
    }
}

/// The machine code for a status produced outside the handlers.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_format",
        StatusCode::UNPROCESSABLE_ENTITY => "corrupt_image",
        StatusCode::TOO_MANY_REQUESTS => "queue_full",
        StatusCode::SERVICE_UNAVAILABLE => "not_ready",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Rewrites any error response that is not already JSON into the `{"error","code"}` shape,
/// keeping its status and headers and using its text (if short) as the message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|t| !t.is_empty());
    let message = match (status, text) {
        (StatusCode::NOT_FOUND, _) => {
            "no such endpoint; see GET / for the web page and DESIGN.md for the API".to_string()
        }
        (_, Some(t)) => t,
        (s, None) => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let error = ApiError::new(status, code_for(status), message).into_response();
    let (new_parts, new_body) = error.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in &new_parts.headers {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, Body::new(new_body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_error_kinds_map_to_design_statuses() {
        let cases = [
            (ImageError::corrupt("x"), 422, "corrupt_image"),
            (ImageError::unsupported("x"), 415, "unsupported_format"),
            (ImageError::too_large("x"), 413, "too_large"),
            (ImageError::internal("x"), 500, "internal"),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from(e);
            assert_eq!(api.status().as_u16(), status, "{code}");
            assert_eq!(api.code(), code);
        }
    }

    #[test]
    fn every_job_code_has_its_status_and_survives_the_round_trip() {
        for (code, status) in [
            ("not_found", 404),
            ("cancelled", 409),
            ("queue_full", 429),
            ("broker_unavailable", 503),
            ("worker_lost", 500),
            ("corrupt_video", 422),
            ("video_too_large", 413),
        ] {
            let api = ApiError::from(JobError::from_wire(code, "m"));
            assert_eq!((api.status().as_u16(), api.code()), (status, code));
            assert_eq!(JobError::from(api).code(), code);
        }
    }

    #[test]
    fn queue_full_carries_retry_after_of_at_least_one_second() {
        let r = ApiError::from(JobError::queue_full(3, 0)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn unauthorized_asks_for_a_bearer_credential_and_forbidden_does_not() {
        let r = ApiError::unauthorized("x").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"superres\""
        );
        let r = ApiError::forbidden("x").into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(!r.headers().contains_key(header::WWW_AUTHENTICATE));
        let r = ApiError::from(JobError::too_many_jobs("alice", 2, 0)).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
