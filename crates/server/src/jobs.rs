//! The job backend seam: what the handlers ask of wherever jobs live, and the errors it
//! answers with.
//!
//! Where it sits: between the HTTP handlers ([`crate::http`]) and the two places jobs can
//! live: this process's own [`JobQueue`](crate::queue::JobQueue) (the default), or a Redis
//! cluster shared by many API and worker nodes ([`crate::broker`], `--broker`). The
//! handlers hold an `Arc<dyn JobBackend>` and never know which.
//!
//! The domain speaks no HTTP: a failure is a [`JobError`], a machine code and a message for
//! a person (and, when a client may retry, after how long). The edge ([`crate::error`])
//! gives each code its status. Codes are plain strings on the wire, so a job that failed
//! on one node reads the same from any other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;

use crate::queue::{JobOutput, JobRequest, JobView, QueueConfig};

/// A boxed future of the backend (object safe, `Send`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A job's view now and on every change, ending after a final state.
pub type ViewStream = Pin<Box<dyn Stream<Item = JobView> + Send>>;

/// How busy the backend is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Jobs being run.
    pub running: usize,
    /// Workers alive (this process's threads, or the cluster's worker nodes).
    pub workers: usize,
}

/// Where jobs live. Every method that names a job takes the caller's owner (API key name):
/// another owner's job is as unknown as one that never existed.
pub trait JobBackend: Send + Sync + 'static {
    /// The limits and options every job is checked and run with.
    fn config(&self) -> &QueueConfig;

    /// Accepts a job, or refuses it (`queue_full`/`too_many_jobs` with a retry time,
    /// `shutting_down`, `broker_unavailable`). The same `idempotency_key` from the same
    /// owner answers the job it first made.
    fn submit(
        &self,
        request: JobRequest,
        idempotency_key: Option<String>,
    ) -> BoxFuture<'_, Result<JobView, JobError>>;

    /// Accepts a job and waits for its outcome (`POST /enhance`). Dropping the future
    /// before it ends abandons the job: a client that went away costs no more work.
    fn run(&self, request: JobRequest) -> BoxFuture<'_, Result<Arc<JobOutput>, JobError>>;

    /// The job's view.
    fn view<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<JobView, JobError>>;

    /// The job's view now and on every change.
    fn events<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ViewStream, JobError>>;

    /// A finished job's result; the job's own error when it failed, `not_done` before.
    fn result<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Arc<JobOutput>, JobError>>;

    /// Cancels a queued or running job (it stays readable as `cancelled`), or forgets a
    /// finished one with its result.
    fn cancel<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<JobView, JobError>>;

    /// How busy it is; an error when the backend cannot be reached.
    fn depth(&self) -> BoxFuture<'_, Result<Depth, JobError>>;

    /// Whether it takes videos (the embedded queue does; the cluster moves images only).
    fn takes_video(&self) -> bool;

    /// Whether new jobs are refused because this node is shutting down.
    fn is_draining(&self) -> bool;

    /// Why this node is not ready to run the models of registry generation `models`
    /// although they are loaded (a cluster worker that has not yet told the cluster it
    /// holds them); `None` when it is.
    fn not_ready(&self, models: u64) -> Option<String> {
        let _ = models;
        None
    }
}

/// Why the backend refused or failed a job, as every node reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

/// Every code a job can fail or be refused with; a code read from elsewhere that is not
/// one of them reads as `internal`.
const CODES: &[&str] = &[
    "not_found",
    "not_done",
    "cancelled",
    "queue_full",
    "too_many_jobs",
    "shutting_down",
    "not_ready",
    "broker_unavailable",
    "no_worker",
    "worker_lost",
    "too_large",
    "video_too_large",
    "unsupported_format",
    "video_unsupported",
    "video_needs_job",
    "corrupt_image",
    "corrupt_video",
    "bad_field",
    "unknown_model",
    "missing_field",
    "timeout",
    "internal",
];

impl JobError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        JobError {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A code and message as stored (in Redis, say): an unknown code is `internal`.
    pub fn from_wire(code: &str, message: impl Into<String>) -> Self {
        let code = CODES
            .iter()
            .copied()
            .find(|c| *c == code)
            .unwrap_or("internal");
        JobError::new(code, message)
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs.max(1));
        self
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

    pub fn not_found(id: &str) -> Self {
        JobError::new(
            "not_found",
            format!("no job '{id}': it never existed, or its result expired"),
        )
    }

    pub fn cancelled() -> Self {
        JobError::new("cancelled", "the job was cancelled")
    }

    /// The queue is full: `queued` jobs wait.
    pub fn queue_full(queued: usize, retry_after_secs: u64) -> Self {
        JobError::new(
            "queue_full",
            format!(
                "the server is busy ({queued} images waiting): retry in about {} s",
                retry_after_secs.max(1)
            ),
        )
        .with_retry_after(retry_after_secs)
    }

    /// The API key `name` already has `limit` jobs queued or running.
    pub fn too_many_jobs(name: &str, limit: usize, retry_after_secs: u64) -> Self {
        JobError::new(
            "too_many_jobs",
            format!(
                "the API key '{name}' already has {limit} job(s) queued or running, its \
                 limit: retry in about {} s, once one has finished",
                retry_after_secs.max(1)
            ),
        )
        .with_retry_after(retry_after_secs)
    }

    pub fn shutting_down() -> Self {
        JobError::new(
            "shutting_down",
            "the server is shutting down and accepts no new images",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        JobError::new("internal", message)
    }

    /// The shared queue cannot be reached.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        JobError::new(
            "broker_unavailable",
            format!("the job queue (Redis) cannot be reached: {detail}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_from_the_wire_is_one_of_ours_or_internal() {
        assert_eq!(
            JobError::from_wire("worker_lost", "m").code(),
            "worker_lost"
        );
        assert_eq!(JobError::from_wire("rm -rf", "m").code(), "internal");
        let e = JobError::queue_full(3, 0);
        assert_eq!(e.retry_after_secs(), Some(1), "at least a second");
        assert!(e.message().contains("3 images waiting"));
    }
}
