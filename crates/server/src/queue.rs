//! The bounded job queue: every image, from `/enhance` or `/v1/jobs`, waits here for a worker.
//!
//! Where it sits: between the HTTP handlers (async, never blocking) and the inference workers
//! (plain threads, see [`crate::worker`]). The handlers [`submit`](JobQueue::submit); a
//! worker blocks in [`next_task`](JobQueue::next_task) and reports back with
//! [`finish`](JobQueue::finish). The lock is held only for bookkeeping, never across a run.
//!
//! Its promises:
//! - **Bounded.** At most `queue_size` images wait beyond those the idle workers are about to
//!   take; one more is refused with 429 and a `Retry-After` estimated from the number of jobs
//!   ahead and an exponentially weighted average of recent run times.
//! - **Nothing accepted is dropped.** A job leaves the queue only by running, by an explicit
//!   cancel, or when the `/enhance` client that waits for it goes away (the work would be
//!   thrown away). A shutdown drains the queue before the process exits.
//! - **Observable.** Every job has a [`JobView`] in a `watch` channel, updated on every
//!   change (queue position, tile progress, final state), which the status endpoint, the
//!   server-sent events and `/enhance` read.
//! - **Private to their owner.** With API keys configured, a job belongs to the key that
//!   made it ([`JobRequest::owner`]): it counts against that key's limit of jobs in flight
//!   while queued or running, and another key asking for it is told it does not exist.
//! - **Bounded memory for results.** Finished jobs are kept for a time-to-live, and results
//!   beyond a total byte budget are evicted, oldest first. A video's result is a file
//!   ([`crate::media`]): it counts against no memory budget and goes with its job.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use superres_imaging::{EncodeOptions, Limits};
use superres_upscale::{Model, Options, OutputSize};
use tokio::sync::{Notify, watch};

use crate::clock::Clock;
use crate::jobs::{BoxFuture, Depth, JobBackend, JobError, ViewStream};
use crate::media::{Format, Media, MediaKind};

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// A job as clients see it (`GET /v1/jobs/{id}` and every server-sent event).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: String,
    pub status: JobStatus,
    /// Fraction of tiles done, `0` to `1`.
    pub progress: f64,
    /// Jobs ahead of this one while queued (`0`: it starts next); `null` otherwise.
    pub position: Option<usize>,
    /// Why the job failed, for a person; `null` unless failed.
    pub error: Option<String>,
    /// The model the job runs on.
    pub model: String,
    /// `image` or `video`.
    pub kind: MediaKind,
    /// A video's frames upscaled so far; `null` for an image.
    pub frames_done: Option<u64>,
    /// A video's frame count, when its container says (or its duration and rate do);
    /// `null` for an image.
    pub frames_total: Option<u64>,
}

/// How long each stage of a job took, for the `Server-Timing` header.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub queue: Duration,
    pub decode: Duration,
    pub upscale: Duration,
    pub encode: Duration,
}

/// A finished job's result.
#[derive(Clone, Debug)]
pub struct JobOutput {
    /// The image's bytes, or the video's file.
    pub media: Media,
    pub format: Format,
    pub model: String,
    pub width: usize,
    pub height: usize,
    pub timings: Timings,
}

/// An accepted image waiting for (or being run by) a worker.
pub struct Task {
    pub id: String,
    pub media: Media,
    pub model: Model,
    pub format: Format,
    /// The result's size (the model's scale unless asked otherwise).
    pub size: OutputSize,
    pub cancel: Arc<AtomicBool>,
    pub view: Arc<watch::Sender<JobView>>,
    pub queue_wait: Duration,
}

/// What a handler asks the queue to run.
pub struct JobRequest {
    pub media: Media,
    pub model: Model,
    pub format: Format,
    pub size: OutputSize,
    /// The API key the job belongs to; `None` on an open service.
    pub owner: Option<Owner>,
}

/// The API key a job belongs to, and how many of its jobs may be in flight at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: Arc<str>,
    /// Jobs of this owner that may be queued or running at once; one more gets 429.
    pub max_in_flight: usize,
}

/// Fixed for the life of the queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    pub queue_size: usize,
    pub workers: usize,
    pub job_timeout: Duration,
    pub result_ttl: Duration,
    pub result_store_bytes: usize,
    pub limits: Limits,
    /// Checked before a job is queued: see [`RequestLimits`].
    pub request_limits: RequestLimits,
    pub options: Options,
    pub encode: EncodeOptions,
    /// When jobs are queued and finish, and so when results expire.
    pub clock: Clock,
}

/// What one request may need once upscaled, checked from the upload's header before it
/// takes a place in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most pixels (width × height) of the upscaled result.
    pub max_output_pixels: u64,
    /// Most bytes of the output image plus the model's peak for one run.
    pub max_memory_bytes: u64,
}

struct Job {
    view: Arc<watch::Sender<JobView>>,
    /// Present while queued; the worker takes it.
    input: Option<(Media, Model, Format, OutputSize)>,
    cancel: Arc<AtomicBool>,
    outcome: Option<Result<Arc<JobOutput>, JobError>>,
    enqueued_at: Instant,
    finished_at: Option<Instant>,
    /// The queue's count of ended jobs when this one ended: the eviction order.
    finished_order: u64,
    /// An `/enhance` job whose client went away: forget it as soon as it ends.
    forget_when_done: bool,
    /// The API key's name that made it; only that key sees it.
    owner: Option<Arc<str>>,
    /// The `Idempotency-Key` it was made with, to forget with it.
    key: Option<IdempotencyKey>,
}

/// An `Idempotency-Key` is the owner's own: two keys' equal strings are two jobs.
type IdempotencyKey = (Option<Arc<str>>, String);

impl Job {
    fn status(&self) -> JobStatus {
        self.view.borrow().status
    }

    /// Whether `owner` may see this job: the same key, or both anonymous.
    fn is_visible_to(&self, owner: Option<&str>) -> bool {
        self.owner.as_deref() == owner
    }

    fn result_len(&self) -> usize {
        match &self.outcome {
            Some(Ok(out)) => out.media.memory_bytes(),
            _ => 0,
        }
    }
}

#[derive(Default)]
struct Inner {
    pending: VecDeque<String>,
    jobs: HashMap<String, Job>,
    running: usize,
    draining: bool,
    stopping: bool,
    stored_bytes: usize,
    /// Exponentially weighted average of run times, seconds.
    ewma_run_secs: Option<f64>,
    finished: u64,
    /// Jobs by the `Idempotency-Key` they were made with.
    keys: HashMap<IdempotencyKey, String>,
}

/// The queue, the job table and the finished results. Shared as `Arc<JobQueue>` by the
/// handlers and the workers.
pub struct JobQueue {
    config: QueueConfig,
    inner: Mutex<Inner>,
    work_ready: Condvar,
    idle: Notify,
}

/// Weight of the newest run time in the average.
const EWMA_ALPHA: f64 = 0.3;
/// Run time assumed before any job has finished, seconds.
const FIRST_RUN_GUESS_SECS: f64 = 2.0;

impl JobQueue {
    pub fn new(config: QueueConfig) -> JobQueue {
        JobQueue {
            config,
            inner: Mutex::new(Inner::default()),
            work_ready: Condvar::new(),
            idle: Notify::new(),
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// The lock is never held across user code that can panic, but a panic elsewhere must
    /// not take the whole service down with a poisoned lock.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accepts a job or refuses it (queue full, or its owner's limit of jobs in flight
    /// reached: 429; shutting down: 503).
    pub fn submit(&self, request: JobRequest) -> Result<JobView, JobError> {
        self.submit_keyed(request, None)
    }

    /// [`submit`](Self::submit), where the owner's same `key` answers the job it first
    /// made (while that job is kept) instead of making another.
    pub fn submit_keyed(
        &self,
        request: JobRequest,
        key: Option<String>,
    ) -> Result<JobView, JobError> {
        let mut inner = self.lock();
        if inner.draining {
            return Err(JobError::shutting_down());
        }
        self.sweep(&mut inner, self.config.clock.now());
        let key = key.map(|k| (request.owner.as_ref().map(|o| Arc::clone(&o.name)), k));
        if let Some(job) = key
            .as_ref()
            .and_then(|k| inner.keys.get(k))
            .and_then(|id| inner.jobs.get(id))
        {
            return Ok(job.view.borrow().clone());
        }
        if let Some(owner) = &request.owner {
            let in_flight = inner
                .jobs
                .values()
                .filter(|j| j.owner.as_deref() == Some(&*owner.name) && !j.status().is_terminal())
                .count();
            if in_flight >= owner.max_in_flight {
                metrics::counter!("superres_rejected_total", "reason" => "key_limit").increment(1);
                let retry = self.retry_after_secs(&inner);
                return Err(JobError::too_many_jobs(
                    &owner.name,
                    owner.max_in_flight,
                    retry,
                ));
            }
        }
        let idle_workers = self.config.workers.saturating_sub(inner.running);
        if inner.pending.len() >= self.config.queue_size + idle_workers {
            metrics::counter!("superres_rejected_total", "reason" => "queue_full").increment(1);
            let retry = self.retry_after_secs(&inner);
            return Err(JobError::queue_full(inner.pending.len(), retry));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let view = JobView {
            id: id.clone(),
            status: JobStatus::Queued,
            progress: 0.0,
            position: Some(inner.pending.len()),
            error: None,
            model: request.model.name().to_string(),
            kind: request.media.kind(),
            frames_done: None,
            frames_total: None,
        };
        let (tx, _) = watch::channel(view.clone());
        inner.jobs.insert(
            id.clone(),
            Job {
                view: Arc::new(tx),
                input: Some((request.media, request.model, request.format, request.size)),
                cancel: Arc::new(AtomicBool::new(false)),
                outcome: None,
                enqueued_at: self.config.clock.now(),
                finished_at: None,
                finished_order: 0,
                forget_when_done: false,
                owner: request.owner.map(|o| o.name),
                key: key.clone(),
            },
        );
        if let Some(key) = key {
            inner.keys.insert(key, id.clone());
        }
        inner.pending.push_back(id);
        publish_depth(&inner);
        drop(inner);
        self.work_ready.notify_one();
        Ok(view)
    }

    /// Accepts a job whose submitter waits for its outcome (`/enhance`).
    pub fn submit_and_wait(self: &Arc<Self>, request: JobRequest) -> Result<Ticket, JobError> {
        let owner = request.owner.as_ref().map(|o| Arc::clone(&o.name));
        let view = self.submit(request)?;
        let receiver = self
            .subscribe(&view.id, owner.as_deref())
            .ok_or_else(|| JobError::internal("the job vanished as it was accepted"))?;
        Ok(Ticket {
            queue: Arc::clone(self),
            id: view.id,
            receiver,
            settled: false,
        })
    }

    /// The seconds after which a refused client may find room: the jobs ahead of it,
    /// spread over the workers, times the average run time.
    fn retry_after_secs(&self, inner: &Inner) -> u64 {
        let per_job = inner.ewma_run_secs.unwrap_or(FIRST_RUN_GUESS_SECS);
        let ahead = (inner.pending.len() + inner.running) as f64;
        let workers = self.config.workers.max(1) as f64;
        (ahead * per_job / workers).ceil().max(1.0) as u64
    }

    /// The job `id` if `owner` may see it. Another owner's job is as unknown as a job that
    /// never existed, so ids tell nothing about other keys' work.
    fn visible<'a>(inner: &'a Inner, id: &str, owner: Option<&str>) -> Option<&'a Job> {
        inner.jobs.get(id).filter(|j| j.is_visible_to(owner))
    }

    /// The current view of a job `owner` may see.
    pub fn view(&self, id: &str, owner: Option<&str>) -> Option<JobView> {
        let mut inner = self.lock();
        self.sweep(&mut inner, self.config.clock.now());
        Self::visible(&inner, id, owner).map(|j| j.view.borrow().clone())
    }

    /// A receiver of every change to the view of a job `owner` may see.
    pub fn subscribe(&self, id: &str, owner: Option<&str>) -> Option<watch::Receiver<JobView>> {
        let inner = self.lock();
        Self::visible(&inner, id, owner).map(|j| j.view.subscribe())
    }

    /// A finished job's result: 404 unknown (or not `owner`'s), 409 not done (or
    /// cancelled), the job's own error when it failed.
    pub fn result(&self, id: &str, owner: Option<&str>) -> Result<Arc<JobOutput>, JobError> {
        let mut inner = self.lock();
        self.sweep(&mut inner, self.config.clock.now());
        let job = Self::visible(&inner, id, owner).ok_or_else(|| JobError::not_found(id))?;
        match &job.outcome {
            Some(Ok(output)) => Ok(Arc::clone(output)),
            Some(Err(e)) if job.status() == JobStatus::Cancelled => Err(e.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => {
                let view = job.view.borrow();
                let where_ = match view.position {
                    Some(p) => format!("queued with {p} job(s) ahead"),
                    None => format!("running, {:.0}% done", view.progress * 100.0),
                };
                Err(JobError::new(
                    "not_done",
                    format!("job '{id}' has no result yet: it is {where_}"),
                ))
            }
        }
    }

    /// Cancels a job: a queued one leaves the queue at once, a running one stops at its next
    /// tile; a finished one is forgotten with its result. Answers the view after the change;
    /// 404 for a job `owner` may not see.
    pub fn cancel(&self, id: &str, owner: Option<&str>) -> Result<JobView, JobError> {
        let mut inner = self.lock();
        let job = Self::visible(&inner, id, owner).ok_or_else(|| JobError::not_found(id))?;
        let status = job.status();
        let view = match status {
            JobStatus::Queued => {
                inner.pending.retain(|p| p != id);
                let job = inner
                    .jobs
                    .get_mut(id)
                    .ok_or_else(|| JobError::not_found(id))?;
                job.input = None;
                job.outcome = Some(Err(cancelled()));
                job.finished_at = Some(self.config.clock.now());
                job.view.send_modify(|v| {
                    v.status = JobStatus::Cancelled;
                    v.position = None;
                });
                metrics::counter!("superres_jobs_total", "status" => "cancelled").increment(1);
                let view = job.view.borrow().clone();
                self.publish_positions(&inner);
                self.notify_if_idle(&inner);
                view
            }
            JobStatus::Running => {
                job.cancel.store(true, Ordering::Relaxed);
                job.view.borrow().clone()
            }
            _ => {
                let view = job.view.borrow().clone();
                self.remove(&mut inner, id);
                view
            }
        };
        Ok(view)
    }

    /// Forgets an `/enhance` job whose client is gone: a queued one is dropped unrun, a
    /// running one is cancelled at its next tile and forgotten when it stops.
    fn abandon(&self, id: &str) {
        let mut inner = self.lock();
        let Some(job) = inner.jobs.get_mut(id) else {
            return;
        };
        match job.status() {
            JobStatus::Queued => {
                inner.pending.retain(|p| p != id);
                self.remove(&mut inner, id);
                self.publish_positions(&inner);
                self.notify_if_idle(&inner);
            }
            JobStatus::Running => {
                job.cancel.store(true, Ordering::Relaxed);
                job.forget_when_done = true;
            }
            _ => self.remove(&mut inner, id),
        }
    }

    /// Removes a finished job and hands its outcome over (`/enhance` keeps no results). Its
    /// result leaves the store's count with it.
    fn take(&self, id: &str) -> Result<Arc<JobOutput>, JobError> {
        let mut inner = self.lock();
        let outcome = match inner.jobs.remove(id) {
            Some(mut job) => {
                if let Some(key) = &job.key {
                    inner.keys.remove(key);
                }
                inner.stored_bytes = inner.stored_bytes.saturating_sub(job.result_len());
                publish_store(&inner);
                job.outcome.take()
            }
            None => None,
        };
        outcome.unwrap_or_else(|| Err(JobError::internal("the job ended without an outcome")))
    }

    /// Bytes of results the store holds now.
    pub fn stored_bytes(&self) -> usize {
        self.lock().stored_bytes
    }

    fn remove(&self, inner: &mut Inner, id: &str) {
        if let Some(job) = inner.jobs.remove(id) {
            if let Some(key) = &job.key {
                inner.keys.remove(key);
            }
            inner.stored_bytes = inner.stored_bytes.saturating_sub(job.result_len());
            publish_store(inner);
        }
    }

    /// Blocks a worker until there is a job to run; `None` once the queue stops.
    pub fn next_task(&self) -> Option<Task> {
        let mut inner = self.lock();
        loop {
            while let Some(id) = inner.pending.pop_front() {
                let Some(job) = inner.jobs.get_mut(&id) else {
                    continue;
                };
                let Some((media, model, format, size)) = job.input.take() else {
                    continue;
                };
                let queue_wait = self.config.clock.since(job.enqueued_at);
                job.view.send_modify(|v| {
                    v.status = JobStatus::Running;
                    v.position = None;
                });
                let task = Task {
                    id: id.clone(),
                    media,
                    model,
                    format,
                    size,
                    cancel: Arc::clone(&job.cancel),
                    view: Arc::clone(&job.view),
                    queue_wait,
                };
                inner.running += 1;
                metrics::histogram!("superres_queue_wait_seconds").record(queue_wait.as_secs_f64());
                self.publish_positions(&inner);
                publish_depth(&inner);
                return Some(task);
            }
            if inner.stopping {
                return None;
            }
            inner = self
                .work_ready
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Records a worker's outcome for a job.
    pub fn finish(&self, id: &str, outcome: Result<JobOutput, JobError>, run_time: Duration) {
        let mut inner = self.lock();
        inner.running = inner.running.saturating_sub(1);
        inner.finished += 1;
        let inner_finished = inner.finished;
        let now = self.config.clock.now();
        if outcome.is_ok() {
            let secs = run_time.as_secs_f64();
            inner.ewma_run_secs = Some(match inner.ewma_run_secs {
                Some(avg) => EWMA_ALPHA * secs + (1.0 - EWMA_ALPHA) * avg,
                None => secs,
            });
        }
        let status = match &outcome {
            Ok(_) => JobStatus::Done,
            Err(e) if e.code() == "cancelled" => JobStatus::Cancelled,
            Err(_) => JobStatus::Failed,
        };
        metrics::counter!("superres_jobs_total", "status" => status.as_str()).increment(1);
        let stored = outcome.as_ref().map_or(0, |o| o.media.memory_bytes());
        if let Some(job) = inner.jobs.get_mut(id) {
            let error = outcome.as_ref().err().map(|e| e.message().to_string());
            job.outcome = Some(outcome.map(Arc::new));
            job.finished_at = Some(now);
            job.finished_order = inner_finished;
            let forget = job.forget_when_done;
            job.view.send_modify(|v| {
                v.status = status;
                v.position = None;
                if status == JobStatus::Done {
                    v.progress = 1.0;
                }
                if status == JobStatus::Failed {
                    v.error = error;
                }
            });
            inner.stored_bytes += stored;
            if forget {
                self.remove(&mut inner, id);
            }
        }
        self.sweep(&mut inner, now);
        publish_depth(&inner);
        self.notify_if_idle(&inner);
    }

    /// Drops finished jobs past their time-to-live, then the oldest results while the total
    /// exceeds the byte budget (all but the newest).
    fn sweep(&self, inner: &mut Inner, now: Instant) {
        let ttl = self.config.result_ttl;
        let expired: Vec<String> = inner
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.finished_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= ttl)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.remove(inner, &id);
        }
        // The newest result is kept even when it alone exceeds the budget: its client has
        // not had a chance to fetch it yet.
        while inner.stored_bytes > self.config.result_store_bytes {
            let mut stored: Vec<(&String, u64)> = inner
                .jobs
                .iter()
                .filter(|(_, j)| j.result_len() > 0)
                .map(|(id, j)| (id, j.finished_order))
                .collect();
            if stored.len() <= 1 {
                break;
            }
            stored.sort_by_key(|(_, t)| *t);
            let oldest = stored.first().map(|(id, _)| (*id).clone());
            match oldest {
                Some(id) => {
                    tracing::debug!(job = %id, "result evicted: result store full");
                    self.remove(inner, &id);
                }
                None => break,
            }
        }
    }

    fn publish_positions(&self, inner: &Inner) {
        for (i, id) in inner.pending.iter().enumerate() {
            if let Some(job) = inner.jobs.get(id) {
                job.view.send_if_modified(|v| {
                    let changed = v.position != Some(i);
                    v.position = Some(i);
                    changed
                });
            }
        }
    }

    fn notify_if_idle(&self, inner: &Inner) {
        if inner.pending.is_empty() && inner.running == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Jobs waiting and running.
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.pending.len(), inner.running)
    }

    /// Jobs that ended (any way) since the queue started.
    pub fn finished_count(&self) -> u64 {
        self.lock().finished
    }

    pub fn is_draining(&self) -> bool {
        self.lock().draining
    }

    /// Refuses new jobs from now on; those accepted still run.
    pub fn begin_drain(&self) {
        self.lock().draining = true;
    }

    /// Waits until no job is queued or running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.lock();
                if inner.pending.is_empty() && inner.running == 0 {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Gives up on what is left after a drain timed out: queued jobs are cancelled unrun,
    /// running ones at their next tile. Answers how many jobs that was.
    pub fn abandon_all(&self) -> usize {
        let mut inner = self.lock();
        let pending: Vec<String> = inner.pending.drain(..).collect();
        let mut count = pending.len();
        for id in &pending {
            if let Some(job) = inner.jobs.get_mut(id) {
                job.input = None;
                job.outcome = Some(Err(cancelled()));
                job.finished_at = Some(self.config.clock.now());
                job.view.send_modify(|v| {
                    v.status = JobStatus::Cancelled;
                    v.position = None;
                });
            }
        }
        for job in inner.jobs.values() {
            if job.status() == JobStatus::Running {
                job.cancel.store(true, Ordering::Relaxed);
                count += 1;
            }
        }
        publish_depth(&inner);
        count
    }

    /// Lets the workers return once the queue is empty.
    pub fn stop_workers(&self) {
        self.lock().stopping = true;
        self.work_ready.notify_all();
    }
}

fn cancelled() -> JobError {
    JobError::cancelled()
}

fn publish_depth(inner: &Inner) {
    metrics::gauge!("superres_queue_depth").set(inner.pending.len() as f64);
    metrics::gauge!("superres_jobs_in_flight").set(inner.running as f64);
    publish_store(inner);
}

/// The result store's size, published wherever it changes (a sweep on a status request
/// included, so the gauge is never stale).
fn publish_store(inner: &Inner) {
    metrics::gauge!("superres_result_store_bytes").set(inner.stored_bytes as f64);
}

/// The claim of an `/enhance` request on its job. Dropping it before the job ends (the
/// client disconnected) abandons the job, so no worker time is spent on a result nobody will
/// read.
pub struct Ticket {
    queue: Arc<JobQueue>,
    id: String,
    receiver: watch::Receiver<JobView>,
    settled: bool,
}

impl Ticket {
    /// Waits for the job to end and answers its result.
    pub async fn outcome(mut self) -> Result<Arc<JobOutput>, JobError> {
        loop {
            if self.receiver.borrow_and_update().status.is_terminal() {
                self.settled = true;
                return self.queue.take(&self.id);
            }
            if self.receiver.changed().await.is_err() {
                self.settled = true;
                return Err(JobError::internal("the job was dropped before it ended"));
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.queue.abandon(&self.id);
        }
    }
}

/// This process's queue as the handlers' [`JobBackend`]: the default, with no broker.
pub struct LocalBackend {
    queue: Arc<JobQueue>,
}

impl LocalBackend {
    pub fn new(queue: Arc<JobQueue>) -> LocalBackend {
        LocalBackend { queue }
    }
}

/// An answer that is ready now, as a backend future.
fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl JobBackend for LocalBackend {
    fn config(&self) -> &QueueConfig {
        self.queue.config()
    }

    fn submit(
        &self,
        request: JobRequest,
        idempotency_key: Option<String>,
    ) -> BoxFuture<'_, Result<JobView, JobError>> {
        ready(self.queue.submit_keyed(request, idempotency_key))
    }

    fn run(&self, request: JobRequest) -> BoxFuture<'_, Result<Arc<JobOutput>, JobError>> {
        let ticket = self.queue.submit_and_wait(request);
        Box::pin(async move { ticket?.outcome().await })
    }

    fn view<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<JobView, JobError>> {
        ready(
            self.queue
                .view(id, owner)
                .ok_or_else(|| JobError::not_found(id)),
        )
    }

    fn events<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ViewStream, JobError>> {
        let stream = self.queue.subscribe(id, owner).map(|receiver| {
            let views = futures_util::stream::unfold(Some((receiver, true)), |state| async move {
                let (mut receiver, first) = state?;
                // A closed channel means the job was forgotten (expired or deleted).
                if !first && receiver.changed().await.is_err() {
                    return None;
                }
                let view = receiver.borrow_and_update().clone();
                let next = (!view.status.is_terminal()).then_some((receiver, false));
                Some((view, next))
            });
            Box::pin(views) as ViewStream
        });
        ready(stream.ok_or_else(|| JobError::not_found(id)))
    }

    fn result<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Arc<JobOutput>, JobError>> {
        ready(self.queue.result(id, owner))
    }

    fn cancel<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<JobView, JobError>> {
        ready(self.queue.cancel(id, owner))
    }

    fn depth(&self) -> BoxFuture<'_, Result<Depth, JobError>> {
        let (queued, running) = self.queue.depth();
        ready(Ok(Depth {
            queued,
            running,
            workers: self.queue.config().workers,
        }))
    }

    fn takes_video(&self) -> bool {
        true
    }

    fn is_draining(&self) -> bool {
        self.queue.is_draining()
    }
}
