//! The cluster: jobs in Redis, shared by many API and worker nodes (`--broker redis://…`).
//!
//! Where it sits: the second [`JobBackend`], beside this process's own queue. API nodes
//! (`--role api`) check uploads and submit them; worker nodes (`--role worker`) run them
//! ([`worker`]); `--role all` does both. Every node answers every job endpoint for every
//! job, whichever node took it.
//!
//! Why Redis Streams: it is what the people who run this already operate (and what KEDA
//! scales on), a stream with a consumer group is a durable queue with acknowledgements,
//! and with AOF a restart loses no accepted job. Images never travel through Redis: the
//! upload and the result live in the blob store (`--blob-store file:///shared/dir`, through
//! the `object_store` crate), and Redis holds only ids, states, progress and counters.
//!
//! Keys (all under the `superres:` prefix):
//! - `job:{id}`: a hash, the job's state: `status`, `model`, `owner`, `format`, the size
//!   options, `input` and `result` (blob keys), `progress`, `error_code`/`error`, the
//!   `fence` and `attempts` of at-least-once delivery, the `worker` holding it, `msgid`
//!   (its stream entry), timings. Finished jobs expire after the result TTL.
//! - `queue:{model}`: the stream of job ids for one model, with the consumer group
//!   `workers`; a worker reads only the streams of the models it has loaded.
//! - `stats`: the cluster's `queued` and `running` counts and the average run time, which
//!   back-pressure (429 with `Retry-After`) is computed from on any API node.
//! - `workers` (live worker nodes by heartbeat), `slots` (their worker threads),
//!   `models:{model}` (the worker nodes that have a model loaded).
//! - `idem:{owner}:{key}`: the job an `Idempotency-Key` made, for the result TTL.
//! - `blobs`: blob keys by the time they are to be deleted; every worker node's heartbeat
//!   deletes the due ones.
//! - `owner:{name}`: an API key's jobs queued or running, for its limit of jobs in flight.
//! - `events:{id}`: a pub/sub channel that says "this job changed"; a follower re-reads the
//!   hash, and re-reads it every [`RESYNC`] anyway, so a missed message costs a delay at
//!   most.
//!
//! Delivery is at least once, results exactly once: a worker [`scripts::CLAIM`]s a job and
//! gets its fence; its heartbeat ([`scripts::PROGRESS`]) keeps the entry from being
//! reclaimed; a job idle past `--visibility-timeout-secs` is reclaimed by a live worker
//! (`XAUTOCLAIM`), which raises the fence, so the first worker's late result is refused by
//! [`scripts::FINISH`]. After `--max-attempts` losses the job fails `worker_lost`. Decode
//! errors, bad models and cancellations are outcomes, never retried.
//!
//! Redis unreachable: every call fails within a second or two with `broker_unavailable`
//! (503), `/readyz` says 503, and the connection comes back by itself.

pub mod scripts;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use object_store::path::Path as BlobPath;
use object_store::{ObjectStore, ObjectStoreExt};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use superres_imaging::OutputFormat;
use superres_upscale::OutputSize;

use crate::jobs::{BoxFuture, Depth, JobBackend, JobError, ViewStream};
use crate::media::{Format, Media, MediaKind};
use crate::queue::{JobOutput, JobRequest, JobStatus, JobView, QueueConfig, Timings};

/// How often a follower of a job re-reads it even without a message.
pub const RESYNC: Duration = Duration::from_secs(2);

/// The consumer group every worker node reads the streams with.
pub const GROUP: &str = "workers";

/// What a node of the cluster does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Takes requests and runs jobs.
    #[default]
    All,
    /// Takes requests only.
    Api,
    /// Runs jobs only (its HTTP port answers health, readiness and metrics).
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }

    pub fn runs_jobs(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }

    pub fn takes_requests(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "all" => Ok(Role::All),
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            other => Err(format!(
                "unknown role '{other}' (expected all, api or worker)"
            )),
        }
    }
}

/// How this node reaches the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerSettings {
    /// `redis://HOST:PORT[/DB]` (or `rediss://`, `redis+unix://`).
    pub url: String,
    pub role: Role,
    /// `file:///DIR` (a folder every node sees: NFS, a shared volume) or
    /// `s3://BUCKET[/PREFIX]`.
    pub blob_store: String,
    /// A running job whose worker has not been heard from for this long is given to
    /// another.
    pub visibility_timeout: Duration,
    /// Times a job may be lost with its worker before it fails `worker_lost`.
    pub max_attempts: u32,
    /// This node's name in the cluster (its consumer name and heartbeat).
    pub node: String,
}

/// Why the cluster cannot be joined.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("invalid --broker {0:?}: {1}")]
    Url(String, String),
    #[error("invalid --blob-store {0:?}: {1}")]
    BlobStore(String, String),
}

/// What this node shares with the cluster: the connection, the blob store, the keys.
pub struct Broker {
    redis: ConnectionManager,
    client: redis::Client,
    blobs: Arc<dyn ObjectStore>,
    config: QueueConfig,
    settings: BrokerSettings,
    draining: AtomicBool,
    /// The model registry's generation this node last told the cluster it holds (0:
    /// none yet).
    announced: AtomicU64,
}

/// The key prefix of everything this service keeps in Redis.
const NS: &str = "superres";

fn job_key(id: &str) -> String {
    format!("{NS}:job:{id}")
}

fn stream_key(model: &str) -> String {
    format!("{NS}:queue:{model}")
}

fn models_key(model: &str) -> String {
    format!("{NS}:models:{model}")
}

fn channel(id: &str) -> String {
    format!("{NS}:events:{id}")
}

const STATS: &str = "superres:stats";
/// The worker nodes, each scored with the time (ms) until which it counts as live: its
/// own three heartbeats ahead, so nodes with different visibility timeouts agree on who
/// is live. `superres:models:NAME` holds the nodes with model NAME the same way.
const WORKERS: &str = "superres:workers";
const SLOTS: &str = "superres:slots";
const BLOBS: &str = "superres:blobs";

/// Milliseconds since the epoch: the cluster's clock is its nodes' wall clocks.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unavailable(e: redis::RedisError) -> JobError {
    JobError::unavailable(e)
}

fn blob_error(e: object_store::Error) -> JobError {
    JobError::internal(format!("the blob store failed: {e}"))
}

impl Broker {
    /// Joins the cluster: no connection is made yet (it is made on first use and remade
    /// whenever it is lost), so a node starts while Redis is down and says so in
    /// `/readyz`.
    pub fn new(settings: BrokerSettings, config: QueueConfig) -> Result<Broker, BrokerError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| BrokerError::Url(redacted(&settings.url), e.to_string()))?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| BrokerError::Url(redacted(&settings.url), e.to_string()))?;
        let blobs = blob_store(&settings.blob_store)?;
        Ok(Broker {
            redis,
            client,
            blobs,
            config,
            settings,
            draining: AtomicBool::new(false),
            announced: AtomicU64::new(0),
        })
    }

    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn con(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// Refuses new submissions from this node from now on.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// How long this worker's silence means it is gone: three of its heartbeats.
    pub(crate) fn live_window_ms(&self) -> u64 {
        3 * heartbeat_interval(self.settings.visibility_timeout).as_millis() as u64
    }

    /// The live worker nodes and their worker threads.
    async fn live_slots(&self) -> Result<(usize, usize), JobError> {
        let mut con = self.con();
        let nodes: Vec<String> = con
            .zrangebyscore(WORKERS, now_ms(), "+inf")
            .await
            .map_err(unavailable)?;
        if nodes.is_empty() {
            return Ok((0, 0));
        }
        let slots: Vec<Option<usize>> = redis::cmd("HMGET")
            .arg(SLOTS)
            .arg(&nodes)
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        Ok((nodes.len(), slots.into_iter().flatten().sum()))
    }

    async fn stats(&self) -> Result<(usize, usize, Option<f64>), JobError> {
        let mut con = self.con();
        let (queued, running, ewma): (Option<i64>, Option<i64>, Option<f64>) = redis::pipe()
            .hget(STATS, "queued")
            .hget(STATS, "running")
            .hget(STATS, "ewma_ms")
            .query_async(&mut con)
            .await
            .map_err(unavailable)?;
        let count = |v: Option<i64>| v.unwrap_or(0).max(0) as usize;
        Ok((count(queued), count(running), ewma.map(|ms| ms / 1000.0)))
    }

    /// A job's hash, if it exists and `owner` may see it.
    async fn load(&self, id: &str, owner: Option<&str>) -> Result<Fields, JobError> {
        let mut con = self.con();
        let map: HashMap<String, String> = con.hgetall(job_key(id)).await.map_err(unavailable)?;
        let fields = Fields(map);
        if fields.get("status").is_empty() || fields.get("owner") != owner.unwrap_or("") {
            return Err(JobError::not_found(id));
        }
        Ok(fields)
    }

    /// A job's view as clients see it, with its queue position when queued.
    async fn load_view(&self, id: &str, owner: Option<&str>) -> Result<JobView, JobError> {
        let fields = self.load(id, owner).await?;
        let mut view = fields.view(id);
        if view.status == JobStatus::Queued {
            let mut con = self.con();
            let ahead: usize = redis::Script::new(scripts::POSITION)
                .key(stream_key(fields.get("model")))
                .arg(GROUP)
                .arg(fields.get("msgid"))
                .invoke_async(&mut con)
                .await
                .map_err(unavailable)?;
            view.position = Some(ahead);
        }
        Ok(view)
    }

    async fn put_blob(&self, key: &str, bytes: axum::body::Bytes) -> Result<(), JobError> {
        self.blobs
            .put(&BlobPath::from(key), bytes.into())
            .await
            .map(|_| ())
            .map_err(blob_error)
    }

    async fn get_blob(&self, key: &str) -> Result<axum::body::Bytes, JobError> {
        let got = self
            .blobs
            .get(&BlobPath::from(key))
            .await
            .map_err(blob_error)?;
        got.bytes().await.map_err(blob_error)
    }

    async fn delete_blob(&self, key: &str) {
        if key.is_empty() {
            return;
        }
        match self.blobs.delete(&BlobPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => tracing::warn!(blob = key, "cannot delete a blob: {e}"),
        }
    }

    /// Deletes the blobs whose time has come (results past their TTL, inputs of cancelled
    /// jobs). Any node may: a blob deleted twice is no harm.
    pub async fn collect_blobs(&self) -> Result<usize, JobError> {
        let mut con = self.con();
        let due: Vec<String> = con
            .zrangebyscore_limit(BLOBS, "-inf", now_ms(), 0, 100)
            .await
            .map_err(unavailable)?;
        for key in &due {
            self.delete_blob(key).await;
            let _: () = con.zrem(BLOBS, key).await.map_err(unavailable)?;
        }
        Ok(due.len())
    }

    async fn submit_job(
        &self,
        request: JobRequest,
        key: Option<String>,
    ) -> Result<JobView, JobError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(JobError::shutting_down());
        }
        let Media::Image(bytes) = request.media else {
            return Err(JobError::new(
                "video_unsupported",
                "video jobs run on a single node, not through the cluster",
            ));
        };
        let Format::Image(format) = request.format else {
            return Err(JobError::internal("an image job with a video format"));
        };
        let model = request.model.name().to_string();
        let mut con = self.con();
        let holders: usize = con
            .zcount(models_key(&model), now_ms(), "+inf")
            .await
            .map_err(unavailable)?;
        if holders == 0 {
            return Err(JobError::new(
                "no_worker",
                format!("no worker of the cluster has the model '{model}' loaded"),
            ));
        }
        let (queued, running, ewma) = self.stats().await?;
        let (_, slots) = self.live_slots().await?;
        let limit = self.config.queue_size + slots.saturating_sub(running);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let input = format!("inputs/{id}");
        self.put_blob(&input, bytes).await?;
        let owner = request.owner.as_ref().map_or("", |o| &*o.name).to_string();
        let (outscale, width, height) = size_fields(request.size);
        let idem = key
            .as_ref()
            .map(|k| format!("{NS}:idem:{owner}:{k}"))
            .unwrap_or_else(|| format!("{NS}:idem:-"));
        let ttl = self.config.result_ttl.as_secs().max(1);
        let submit = redis::Script::new(scripts::SUBMIT);
        let mut script = submit.prepare_invoke();
        script
            .key(job_key(&id))
            .key(stream_key(&model))
            .key(STATS)
            .key(&idem)
            .key(format!("{NS}:owner:{owner}"))
            .arg(&id)
            .arg(limit)
            .arg(ttl)
            .arg(if key.is_some() { "1" } else { "0" })
            .arg(format!("{NS}:job:"))
            .arg(request.owner.as_ref().map_or(0, |o| o.max_in_flight));
        for (name, value) in [
            ("id", id.as_str()),
            ("status", "queued"),
            ("model", model.as_str()),
            ("owner", owner.as_str()),
            ("format", format.extension()),
            ("want_outscale", outscale.as_str()),
            ("want_width", width.as_str()),
            ("want_height", height.as_str()),
            ("input", input.as_str()),
            ("progress", "0"),
            ("fence", "0"),
            ("attempts", "0"),
            ("cancel", "0"),
        ] {
            script.arg(name).arg(value);
        }
        script.arg("created_ms").arg(now_ms());
        let answer: Vec<String> = match script.invoke_async(&mut con).await {
            Ok(a) => a,
            Err(e) => {
                self.delete_blob(&input).await;
                return Err(unavailable(e));
            }
        };
        match answer.first().map(String::as_str) {
            Some("ok") => {
                let ahead = answer.get(1).and_then(|n| n.parse().ok()).unwrap_or(0);
                Ok(JobView {
                    id,
                    status: JobStatus::Queued,
                    progress: 0.0,
                    position: Some(ahead),
                    error: None,
                    model,
                    kind: MediaKind::Image,
                    frames_done: None,
                    frames_total: None,
                })
            }
            Some("existing") => {
                self.delete_blob(&input).await;
                let existing = answer.get(1).cloned().unwrap_or_default();
                self.load_view(&existing, request.owner.as_ref().map(|o| &*o.name))
                    .await
            }
            Some("owner_full") => {
                self.delete_blob(&input).await;
                let per_job = ewma.unwrap_or(2.0);
                metrics::counter!("superres_rejected_total", "reason" => "key_limit").increment(1);
                let limit = request.owner.as_ref().map_or(0, |o| o.max_in_flight);
                Err(JobError::too_many_jobs(
                    &owner,
                    limit,
                    per_job.ceil() as u64,
                ))
            }
            _ => {
                self.delete_blob(&input).await;
                let per_job = ewma.unwrap_or(2.0);
                let retry = ((queued + running) as f64 * per_job / slots.max(1) as f64).ceil();
                metrics::counter!("superres_rejected_total", "reason" => "queue_full").increment(1);
                Err(JobError::queue_full(queued, retry.max(1.0) as u64))
            }
        }
    }

    /// The job's result and its removal (an `/enhance` request keeps nothing).
    async fn take(&self, id: &str, owner: Option<&str>) -> Result<Arc<JobOutput>, JobError> {
        let output = self.job_result(id, owner).await;
        let fields = self.load(id, owner).await.ok();
        let mut con = self.con();
        let _: Result<(), _> = con.del(job_key(id)).await;
        if let Some(fields) = fields {
            self.delete_blob(fields.get("result")).await;
            self.delete_blob(fields.get("input")).await;
        }
        output
    }

    async fn job_result(&self, id: &str, owner: Option<&str>) -> Result<Arc<JobOutput>, JobError> {
        let fields = self.load(id, owner).await?;
        match fields.get("status") {
            "done" => {
                let bytes = self.get_blob(fields.get("result")).await?;
                let format = fields
                    .get("format")
                    .parse::<OutputFormat>()
                    .unwrap_or(OutputFormat::Png);
                let ms = |name: &str| Duration::from_millis(fields.number(name) as u64);
                Ok(Arc::new(JobOutput {
                    media: Media::Image(bytes),
                    format: Format::Image(format),
                    model: fields.get("model").to_string(),
                    width: fields.number("width") as usize,
                    height: fields.number("height") as usize,
                    timings: Timings {
                        queue: ms("t_queue"),
                        decode: ms("t_decode"),
                        upscale: ms("t_upscale"),
                        encode: ms("t_encode"),
                    },
                }))
            }
            "failed" | "cancelled" => Err(fields.error()),
            status => Err(JobError::new(
                "not_done",
                format!("job '{id}' has no result yet: it is {status}"),
            )),
        }
    }

    async fn cancel_job(&self, id: &str, owner: Option<&str>) -> Result<JobView, JobError> {
        let before = self.load_view(id, owner).await?;
        let mut con = self.con();
        let answer: Vec<String> = redis::Script::new(scripts::CANCEL)
            .key(job_key(id))
            .key(STATS)
            .key(stream_key(&before.model))
            .key(BLOBS)
            .arg(owner.unwrap_or(""))
            .arg(now_ms())
            .arg(self.config.result_ttl.as_secs().max(1))
            .arg(channel(id))
            .invoke_async(&mut con)
            .await
            .map_err(unavailable)?;
        match answer.first().map(String::as_str) {
            Some("missing") => Err(JobError::not_found(id)),
            Some("forgotten") => Ok(before),
            _ => self.load_view(id, owner).await,
        }
    }

    /// The job's views, now and on every change, until a final state (or until it is
    /// forgotten).
    async fn follow(
        self: Arc<Self>,
        id: String,
        owner: Option<String>,
    ) -> Result<ViewStream, JobError> {
        let first = self.load_view(&id, owner.as_deref()).await?;
        let mut pubsub = self.client.get_async_pubsub().await.map_err(unavailable)?;
        pubsub.subscribe(channel(&id)).await.map_err(unavailable)?;
        let messages = pubsub.into_on_message();
        let state = Follow {
            broker: self,
            id,
            owner,
            messages: Box::pin(messages),
            subscribed: true,
            last: None,
            pending: Some(first),
        };
        let views = futures_util::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                if let Some(view) = state.pending.take() {
                    let terminal = view.status.is_terminal();
                    state.last = Some(view.clone());
                    return Some((view, (!terminal).then_some(state)));
                }
                // A message, or the resync timer: then re-read. Once the subscription is
                // gone (Redis restarted), only the timer is left.
                tokio::select! {
                    message = state.messages.next(), if state.subscribed => {
                        if message.is_none() {
                            state.subscribed = false;
                        }
                    }
                    _ = tokio::time::sleep(RESYNC) => {}
                }
                match state
                    .broker
                    .load_view(&state.id, state.owner.as_deref())
                    .await
                {
                    Ok(view) if Some(&view) != state.last.as_ref() => state.pending = Some(view),
                    Ok(_) => {}
                    // Forgotten (deleted, expired): the stream ends.
                    Err(e) if e.code() == "not_found" => return None,
                    // Redis away: keep waiting; the next resync tries again.
                    Err(_) => {}
                }
            }
        });
        Ok(Box::pin(views))
    }
}

struct Follow {
    broker: Arc<Broker>,
    id: String,
    owner: Option<String>,
    messages: std::pin::Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>,
    /// Whether `messages` still delivers.
    subscribed: bool,
    last: Option<JobView>,
    pending: Option<JobView>,
}

/// A job's hash as read.
struct Fields(HashMap<String, String>);

impl Fields {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }

    fn number(&self, name: &str) -> f64 {
        self.get(name).parse().unwrap_or(0.0)
    }

    fn error(&self) -> JobError {
        match self.get("status") {
            "cancelled" => JobError::cancelled(),
            _ => JobError::from_wire(self.get("error_code"), self.get("error")),
        }
    }

    fn view(&self, id: &str) -> JobView {
        let status = match self.get("status") {
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => JobStatus::Queued,
        };
        JobView {
            id: id.to_string(),
            status,
            progress: if status == JobStatus::Done {
                1.0
            } else {
                self.number("progress").clamp(0.0, 1.0)
            },
            position: None,
            error: (status == JobStatus::Failed).then(|| self.get("error").to_string()),
            model: self.get("model").to_string(),
            kind: MediaKind::Image,
            frames_done: None,
            frames_total: None,
        }
    }

    /// The output size the job was asked for.
    fn size(&self) -> OutputSize {
        let number = |name: &str| self.get(name).parse::<f64>().ok();
        let side = |name: &str| self.get(name).parse::<usize>().ok();
        OutputSize::from_options(
            number("want_outscale"),
            side("want_width"),
            side("want_height"),
        )
        .unwrap_or_default()
    }
}

/// The size options as the job's fields (empty: not given).
fn size_fields(size: OutputSize) -> (String, String, String) {
    let none = String::new;
    match size {
        OutputSize::Model => (none(), none(), none()),
        OutputSize::Scale(f) => (f.to_string(), none(), none()),
        OutputSize::Width(w) => (none(), w.to_string(), none()),
        OutputSize::Height(h) => (none(), none(), h.to_string()),
        OutputSize::Exact(w, h) => (none(), w.to_string(), h.to_string()),
    }
}

/// A Redis URL fit for a log line: a password in it is replaced by `***`.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// How often a worker tells the cluster it is alive and holds its jobs: a third of the
/// visibility timeout, between 200 ms and 10 s.
pub(crate) fn heartbeat_interval(visibility: Duration) -> Duration {
    (visibility / 3).clamp(Duration::from_millis(200), Duration::from_secs(10))
}

/// The blob store named by `--blob-store`: a shared folder, or an S3 bucket (and prefix)
/// with its credentials, region and endpoint from the standard `AWS_*` variables
/// (`AWS_ENDPOINT` for an S3-compatible store such as MinIO).
fn blob_store(url: &str) -> Result<Arc<dyn ObjectStore>, BrokerError> {
    let bad = |why: String| BrokerError::BlobStore(url.to_string(), why);
    if let Some(dir) = url.strip_prefix("file://") {
        std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| bad(e.to_string()))?;
        return Ok(Arc::new(store));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("expected s3://BUCKET[/PREFIX]".into()));
        }
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        });
    }
    Err(bad(
        "expected file:///DIR (a folder every node sees) or s3://BUCKET[/PREFIX]".into(),
    ))
}

/// The cluster as the handlers' [`JobBackend`].
pub struct RedisBackend {
    broker: Arc<Broker>,
}

impl RedisBackend {
    pub fn new(broker: Arc<Broker>) -> RedisBackend {
        RedisBackend { broker }
    }
}

/// Abandons an `/enhance` job whose client went away: cancels it (a queued one at once, a
/// running one at its next tile, when its worker records it cancelled); it then expires
/// with the result TTL like any ended job. Runs as its own task: the request that owned it
/// is gone.
struct Abandon {
    broker: Arc<Broker>,
    id: Option<(String, Option<String>)>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some((id, owner)) = self.id.take() {
            let broker = Arc::clone(&self.broker);
            tokio::spawn(async move {
                let _ = broker.cancel_job(&id, owner.as_deref()).await;
            });
        }
    }
}

impl JobBackend for RedisBackend {
    fn config(&self) -> &QueueConfig {
        &self.broker.config
    }

    fn submit(
        &self,
        request: JobRequest,
        idempotency_key: Option<String>,
    ) -> BoxFuture<'_, Result<JobView, JobError>> {
        Box::pin(self.broker.submit_job(request, idempotency_key))
    }

    fn run(&self, request: JobRequest) -> BoxFuture<'_, Result<Arc<JobOutput>, JobError>> {
        Box::pin(async move {
            let owner = request.owner.as_ref().map(|o| o.name.to_string());
            let view = self.broker.submit_job(request, None).await?;
            let mut guard = Abandon {
                broker: Arc::clone(&self.broker),
                id: Some((view.id.clone(), owner.clone())),
            };
            let mut views = Arc::clone(&self.broker)
                .follow(view.id.clone(), owner.clone())
                .await?;
            while let Some(v) = views.next().await {
                if v.status.is_terminal() {
                    break;
                }
            }
            guard.id = None;
            self.broker.take(&view.id, owner.as_deref()).await
        })
    }

    fn view<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<JobView, JobError>> {
        Box::pin(self.broker.load_view(id, owner))
    }

    fn events<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<ViewStream, JobError>> {
        Box::pin(Arc::clone(&self.broker).follow(id.to_string(), owner.map(str::to_string)))
    }

    fn result<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Arc<JobOutput>, JobError>> {
        Box::pin(self.broker.job_result(id, owner))
    }

    fn cancel<'a>(
        &'a self,
        id: &'a str,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<JobView, JobError>> {
        Box::pin(self.broker.cancel_job(id, owner))
    }

    fn depth(&self) -> BoxFuture<'_, Result<Depth, JobError>> {
        Box::pin(async move {
            let (queued, running, _) = self.broker.stats().await?;
            let (workers, _) = self.broker.live_slots().await?;
            metrics::gauge!("superres_cluster_queue_depth").set(queued as f64);
            metrics::gauge!("superres_cluster_workers").set(workers as f64);
            Ok(Depth {
                queued,
                running,
                workers,
            })
        })
    }

    fn takes_video(&self) -> bool {
        false
    }

    fn is_draining(&self) -> bool {
        self.broker.draining.load(Ordering::SeqCst)
    }

    fn not_ready(&self, models: u64) -> Option<String> {
        let announced = self.broker.announced.load(Ordering::SeqCst);
        (self.broker.settings.role.runs_jobs() && announced < models).then(|| {
            "the models are loaded but the cluster has not yet been told this worker holds them"
                .to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_options_survive_the_hash() {
        for size in [
            OutputSize::Model,
            OutputSize::Scale(2.5),
            OutputSize::Width(100),
            OutputSize::Height(7),
            OutputSize::Exact(30, 40),
        ] {
            let (o, w, h) = size_fields(size);
            let fields = Fields(HashMap::from([
                ("want_outscale".to_string(), o),
                ("want_width".to_string(), w),
                ("want_height".to_string(), h),
            ]));
            assert_eq!(fields.size(), size);
        }
    }

    #[test]
    fn roles_and_blob_stores_are_checked() {
        assert_eq!("API".parse::<Role>(), Ok(Role::Api));
        assert!(
            "boss"
                .parse::<Role>()
                .unwrap_err()
                .contains("all, api or worker")
        );
        assert!(blob_store("ftp://host/x").is_err());
        assert!(blob_store("s3:///prefix").is_err(), "no bucket");
        let s3 = blob_store("s3://bucket").expect("an S3 store, made offline");
        assert!(s3.to_string().contains("bucket"), "{s3}");
        let prefixed = blob_store("s3://bucket/some/prefix/").expect("with a prefix");
        assert!(prefixed.to_string().contains("some/prefix"), "{prefixed}");
        let dir = std::env::temp_dir().join(format!("superres-blobs-{}", std::process::id()));
        let url = format!("file://{}", dir.display());
        assert!(blob_store(&url).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A broker whose Redis is not there (nothing listens on the port).
    fn absent_broker(url: &str) -> Broker {
        let dir = std::env::temp_dir().join(format!("superres-absent-{}", std::process::id()));
        let settings = BrokerSettings {
            url: url.to_string(),
            role: Role::Api,
            blob_store: format!("file://{}", dir.display()),
            visibility_timeout: Duration::from_secs(30),
            max_attempts: 3,
            node: "test".into(),
        };
        let config = QueueConfig {
            queue_size: 1,
            workers: 1,
            job_timeout: Duration::from_secs(1),
            result_ttl: Duration::from_secs(1),
            result_store_bytes: 1,
            limits: superres_imaging::Limits::default(),
            request_limits: crate::queue::RequestLimits {
                max_output_pixels: 1,
                max_memory_bytes: 1,
            },
            options: superres_upscale::Options::default(),
            encode: superres_imaging::EncodeOptions::default(),
            clock: crate::Clock::system(),
        };
        Broker::new(settings, config).expect("a broker, connected lazily")
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_prompt_503_over_plain_and_tls_urls() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        for url in [
            format!("redis://127.0.0.1:{port}"),
            format!("rediss://127.0.0.1:{port}"),
        ] {
            let backend = RedisBackend::new(Arc::new(absent_broker(&url)));
            let started = std::time::Instant::now();
            let e = backend.depth().await.unwrap_err();
            assert_eq!(e.code(), "broker_unavailable", "{url}: {e:?}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{url}: no hang"
            );
        }
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redacted("redis://:s3cret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redacted("redis://user:pw@h"), "redis://***@h");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn heartbeats_are_a_third_of_the_timeout_within_bounds() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(30)),
            Duration::from_secs(10)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(30)),
            Duration::from_millis(200)
        );
    }
}
