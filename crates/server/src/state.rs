//! What every handler can reach: the queue, the models, the metrics, the router's limits
//! and the access rules.
//!
//! Where it sits: below the routes ([`crate::http`]) and the extractors
//! ([`crate::upload`], [`crate::auth`]) that take it, above the parts it holds. It names
//! only those parts, so the modules that use it never import one another to reach it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Access;
use crate::jobs::JobBackend;
use crate::media::VideoUploads;
use crate::models::ModelRegistry;

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Where jobs live: this process's queue, or the cluster's.
    pub jobs: Arc<dyn JobBackend>,
    pub models: Arc<ModelRegistry>,
    pub metrics: PrometheusHandle,
    pub http: HttpLimits,
    /// The admin token and the API keys.
    pub access: Arc<Access>,
    /// Where video uploads go; `None` when they are turned off (`--max-video-mb 0`).
    pub videos: Option<Arc<VideoUploads>>,
    /// Whether the page and the image and job endpoints are served (not on a cluster's
    /// worker node).
    pub takes_requests: bool,
}

/// Limits the router enforces with layers.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Largest image upload.
    pub max_body_bytes: usize,
    /// Largest video upload; 0 when they are turned off.
    pub max_video_bytes: u64,
    pub upload_timeout: Duration,
}

/// Room in a request body for the multipart framing and the text fields around an upload.
const FORM_OVERHEAD_BYTES: usize = 1 << 20;

impl HttpLimits {
    /// The router's limit on a whole request body: room for the largest upload of either
    /// kind and its form. The extractor holds each upload to its own limit as it arrives.
    pub fn body_limit(&self) -> usize {
        let video = usize::try_from(self.max_video_bytes).unwrap_or(usize::MAX);
        self.max_body_bytes
            .max(video)
            .saturating_add(FORM_OVERHEAD_BYTES)
    }
}

/// The access rules, for the [`Admin`](crate::auth::Admin) and
/// [`Caller`](crate::auth::Caller) extractors.
impl FromRef<AppState> for Arc<Access> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.access)
    }
}
