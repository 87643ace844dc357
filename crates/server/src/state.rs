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
use crate::models::ModelRegistry;
use crate::queue::JobQueue;

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<JobQueue>,
    pub models: Arc<ModelRegistry>,
    pub metrics: PrometheusHandle,
    pub http: HttpLimits,
    /// The admin token and the API keys.
    pub access: Arc<Access>,
}

/// Limits the router enforces with layers.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub upload_timeout: Duration,
}

/// The access rules, for the [`Admin`](crate::auth::Admin) and
/// [`Caller`](crate::auth::Caller) extractors.
impl FromRef<AppState> for Arc<Access> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.access)
    }
}
