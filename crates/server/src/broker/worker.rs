//! A worker node of the cluster: takes jobs for the models it has loaded from their
//! streams, runs them as this process's workers do, and reports back.
//!
//! Where it sits: the cluster's side of [`crate::worker`]. Each of `--workers` slots is a
//! task that loops: first reclaim an entry that has been idle past the visibility timeout
//! (its worker is gone), else read a new one (blocking a second at most), then
//! [`scripts::CLAIM`] it, fetch its image from the blob store, run it on a blocking thread
//! ([`crate::worker::run_guarded`]: the same decode, upscale, encode), store the result and
//! [`scripts::FINISH`]. While it runs, a heartbeat ([`scripts::PROGRESS`]) holds the entry
//! and carries progress and cancellation both ways.
//!
//! Stopping (SIGTERM): the slots stop taking jobs, and a job still running is stopped at
//! its next tile and handed back to the queue ([`scripts::HANDBACK`]), so another worker
//! starts it at once rather than after the visibility timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
};
use superres_imaging::OutputFormat;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    BLOBS, Broker, Fields, GROUP, SLOTS, STATS, WORKERS, channel, heartbeat_interval, job_key,
    models_key, now_ms, scripts, stream_key,
};
use crate::jobs::JobError;
use crate::media::{Format, Media, MediaKind};
use crate::models::ModelRegistry;
use crate::queue::{JobStatus, JobView, Task};
use crate::worker::{Upscaler, run_guarded};

/// The running slots of a worker node.
pub struct ClusterWorkers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterWorkers {
    /// Starts `slots` workers and the node's heartbeat.
    pub fn start(
        broker: Arc<Broker>,
        models: Arc<ModelRegistry>,
        upscaler: Arc<dyn Upscaler>,
        slots: usize,
    ) -> ClusterWorkers {
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(heartbeat(
            Arc::clone(&broker),
            Arc::clone(&models),
            slots,
            stop.subscribe(),
        )));
        for number in 0..slots {
            let slot = Slot {
                broker: Arc::clone(&broker),
                models: Arc::clone(&models),
                upscaler: Arc::clone(&upscaler),
                stop: stop.subscribe(),
                consumer: broker.settings().node.clone(),
            };
            tasks.push(tokio::spawn(async move {
                tracing::debug!(slot = number, "cluster worker started");
                slot.run().await;
            }));
        }
        ClusterWorkers { stop, tasks }
    }

    /// Stops taking jobs, hands running ones back, and waits for the slots.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Tells the cluster this node is alive, how many slots it has and which models it holds,
/// and makes sure each model's stream and group exist. Also collects due blobs.
async fn heartbeat(
    broker: Arc<Broker>,
    models: Arc<ModelRegistry>,
    slots: usize,
    mut stop: watch::Receiver<bool>,
) {
    let every = heartbeat_interval(broker.settings().visibility_timeout);
    let node = broker.settings().node.clone();
    let mut groups_made: Vec<String> = Vec::new();
    let mut changes = models.changes();
    while !*stop.borrow() {
        let mut con = broker.con();
        let live_until = now_ms() + broker.live_window_ms();
        let generation = *changes.borrow_and_update();
        let names: Vec<String> = models.names();
        let mut pipe = redis::pipe();
        pipe.zadd(WORKERS, &node, live_until).ignore();
        pipe.hset(SLOTS, &node, slots).ignore();
        for name in &names {
            pipe.zadd(models_key(name), &node, live_until).ignore();
        }
        if let Err(e) = pipe.query_async::<()>(&mut con).await {
            tracing::warn!("cluster heartbeat failed: {e}");
        } else {
            for name in &names {
                if groups_made.contains(name) {
                    continue;
                }
                let made: redis::RedisResult<()> = con
                    .xgroup_create_mkstream(stream_key(name), GROUP, "0")
                    .await;
                match made {
                    Ok(()) => groups_made.push(name.clone()),
                    Err(e) if e.code() == Some("BUSYGROUP") => groups_made.push(name.clone()),
                    Err(e) => {
                        tracing::warn!(model = %name, "cannot create the stream's group: {e}")
                    }
                }
            }
            broker.announced.fetch_max(generation, Ordering::SeqCst);
            if let Err(e) = broker.collect_blobs().await {
                tracing::warn!("{e}");
            }
        }
        // A new catalog (the first load, a reload) is announced at once: the node is not
        // ready until it is.
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = changes.changed() => {}
            _ = stopped(&mut stop) => {}
        }
    }
    // Leaving: the cluster stops counting this node at once.
    let mut con = broker.con();
    let mut pipe = redis::pipe();
    pipe.zrem(WORKERS, &node).ignore();
    pipe.hdel(SLOTS, &node).ignore();
    for name in models.names() {
        pipe.zrem(models_key(&name), &node).ignore();
    }
    let _: redis::RedisResult<()> = pipe.query_async(&mut con).await;
}

/// One worker slot.
struct Slot {
    broker: Arc<Broker>,
    models: Arc<ModelRegistry>,
    upscaler: Arc<dyn Upscaler>,
    stop: watch::Receiver<bool>,
    consumer: String,
}

/// A stream entry handed to this slot.
struct Entry {
    stream: String,
    msgid: String,
    job: String,
}

impl Slot {
    async fn run(self) {
        while !self.stopping() {
            match self.next_entry().await {
                Ok(Some(entry)) => self.handle(entry).await,
                Ok(None) => {}
                // The heartbeat makes each model's group as the node starts.
                Err(e) if e.code() == Some("NOGROUP") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!("cannot read the job streams: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn streams(&self) -> Vec<String> {
        self.models.names().iter().map(|m| stream_key(m)).collect()
    }

    /// A reclaimed entry (its worker went silent) first, else a new one.
    async fn next_entry(&self) -> redis::RedisResult<Option<Entry>> {
        let streams = self.streams();
        if streams.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Ok(None);
        }
        let mut con = self.broker.con();
        let idle = self.broker.settings().visibility_timeout.as_millis() as u64;
        for stream in &streams {
            let reply: StreamAutoClaimReply = con
                .xautoclaim_options(
                    stream,
                    GROUP,
                    &self.consumer,
                    idle,
                    "0-0",
                    StreamAutoClaimOptions::default().count(1),
                )
                .await?;
            if let Some(id) = reply.claimed.into_iter().next() {
                tracing::warn!(entry = %id.id, "reclaimed a job from a worker that went silent");
                return Ok(entry_of(stream, id));
            }
        }
        let options = StreamReadOptions::default()
            .group(GROUP, &self.consumer)
            .count(1)
            .block(1000);
        let ids: Vec<&str> = streams.iter().map(|_| ">").collect();
        let reply: Option<StreamReadReply> = con.xread_options(&streams, &ids, &options).await?;
        let entry = reply.and_then(|r| {
            r.keys
                .into_iter()
                .find_map(|k| k.ids.into_iter().next().map(|id| (k.key, id)))
        });
        Ok(entry.and_then(|(stream, id)| entry_of(&stream, id)))
    }

    async fn ack(&self, entry: &Entry) {
        let mut con = self.broker.con();
        let _: redis::RedisResult<()> = redis::pipe()
            .xack(&entry.stream, GROUP, &[&entry.msgid])
            .xdel(&entry.stream, &[&entry.msgid])
            .query_async(&mut con)
            .await;
    }

    async fn handle(&self, entry: Entry) {
        let broker = &self.broker;
        let mut con = broker.con();
        let settings = broker.settings();
        let claim: redis::RedisResult<Vec<String>> = redis::Script::new(scripts::CLAIM)
            .key(job_key(&entry.job))
            .key(STATS)
            .key(BLOBS)
            .arg(&self.consumer)
            .arg(settings.max_attempts)
            .arg(now_ms())
            .arg(&entry.msgid)
            .arg(broker.config().result_ttl.as_secs().max(1))
            .arg(channel(&entry.job))
            .invoke_async(&mut con)
            .await;
        let fence = match claim
            .as_deref()
            .map(|c| (c.first().map(String::as_str), c.get(1)))
        {
            Ok((Some("run"), Some(fence))) => fence.clone(),
            Ok(_) => {
                // Cancelled, finished, handed back or failed worker_lost: nothing to run.
                self.ack(&entry).await;
                return;
            }
            Err(e) => {
                tracing::warn!(job = %entry.job, "cannot claim a job: {e}");
                return;
            }
        };
        let started = Instant::now();
        let outcome = self.execute(&entry, &fence).await;
        let run_ms = started.elapsed().as_millis() as u64;
        match outcome {
            Execution::Stale => {
                tracing::warn!(job = %entry.job, "the job was given to another worker: this result is dropped");
            }
            Execution::HandBack => {
                let handed: redis::RedisResult<String> = redis::Script::new(scripts::HANDBACK)
                    .key(job_key(&entry.job))
                    .key(STATS)
                    .key(&entry.stream)
                    .arg(&fence)
                    .arg(GROUP)
                    .arg(&entry.msgid)
                    .arg(channel(&entry.job))
                    .invoke_async(&mut con)
                    .await;
                tracing::info!(job = %entry.job, "stopping: the job was handed back ({handed:?})");
            }
            Execution::Done(fields, result) => {
                self.finish(&entry, &fence, "done", fields, &result, run_ms)
                    .await;
            }
            Execution::Failed(error) => {
                let status = if error.code() == "cancelled" {
                    "cancelled"
                } else {
                    "failed"
                };
                let fields = vec![
                    ("error_code".to_string(), error.code().to_string()),
                    ("error".to_string(), error.message().to_string()),
                ];
                self.finish(&entry, &fence, status, fields, "", run_ms)
                    .await;
            }
        }
    }

    /// Records the outcome under the fence; a refused (stale) one leaves no blob behind.
    async fn finish(
        &self,
        entry: &Entry,
        fence: &str,
        status: &str,
        fields: Vec<(String, String)>,
        result: &str,
        run_ms: u64,
    ) {
        let broker = &self.broker;
        let ttl = broker.config().result_ttl;
        let finish = redis::Script::new(scripts::FINISH);
        let mut script = finish.prepare_invoke();
        script
            .key(job_key(&entry.job))
            .key(STATS)
            .key(&entry.stream)
            .key(BLOBS)
            .arg(fence)
            .arg(status)
            .arg(GROUP)
            .arg(&entry.msgid)
            .arg(ttl.as_secs().max(1))
            .arg(now_ms())
            .arg(channel(&entry.job))
            .arg(run_ms)
            .arg(now_ms() + ttl.as_millis() as u64)
            .arg(result);
        for (name, value) in &fields {
            script.arg(name).arg(value);
        }
        let mut con = broker.con();
        let answer: redis::RedisResult<String> = script.invoke_async(&mut con).await;
        let input = format!("inputs/{}", entry.job);
        match answer.as_deref() {
            Ok("ok") => {
                broker.delete_blob(&input).await;
                metrics::counter!("superres_jobs_total", "status" => status.to_string())
                    .increment(1);
            }
            Ok(_) => {
                tracing::warn!(job = %entry.job, "a late result was refused: the job is another worker's");
                broker.delete_blob(result).await;
            }
            Err(e) => {
                // The entry stays pending: the job is reclaimed once its heartbeat is missed.
                tracing::warn!(job = %entry.job, "cannot record the outcome: {e}");
                broker.delete_blob(result).await;
            }
        }
    }

    /// Runs a claimed job, with its heartbeat.
    async fn execute(&self, entry: &Entry, fence: &str) -> Execution {
        let broker = &self.broker;
        let Some(fields) = self.load_any(&entry.job).await else {
            return Execution::Failed(JobError::internal("the job's record is gone"));
        };
        let model = match self.models.resolve(Some(fields.get("model"))) {
            Ok(m) => m,
            Err(e) => return Execution::Failed(JobError::from(e)),
        };
        let bytes = match broker.get_blob(fields.get("input")).await {
            Ok(b) => b,
            Err(e) => return Execution::Failed(e),
        };
        let format = fields
            .get("format")
            .parse::<OutputFormat>()
            .unwrap_or(OutputFormat::Png);
        let queue_wait = Duration::from_millis(
            (fields.number("started_ms") - fields.number("created_ms")).max(0.0) as u64,
        );
        let view = JobView {
            id: entry.job.clone(),
            status: JobStatus::Running,
            progress: 0.0,
            position: None,
            error: None,
            model: model.name().to_string(),
            kind: MediaKind::Image,
            frames_done: None,
            frames_total: None,
        };
        let (tx, mut rx) = watch::channel(view);
        let cancel = Arc::new(AtomicBool::new(false));
        let task = Task {
            id: entry.job.clone(),
            media: Media::Image(bytes),
            model,
            format: Format::Image(format),
            size: fields.size(),
            cancel: Arc::clone(&cancel),
            view: Arc::new(tx),
            queue_wait,
        };
        let config = broker.config().clone();
        let upscaler = Arc::clone(&self.upscaler);
        let mut run = tokio::task::spawn_blocking(move || {
            let outcome = run_guarded(&config, upscaler.as_ref(), &task);
            (outcome, task)
        });
        let every = heartbeat_interval(broker.settings().visibility_timeout);
        let mut stale = false;
        let mut handing_back = false;
        let mut progress: Option<f64> = None;
        let mut stop = self.stop.clone();
        // Beats go out every `every`, and sooner (at most one per PROGRESS_EVERY) while
        // there is progress to report; the run's end is never waited for on a timer.
        let mut last_beat = Instant::now();
        let mut watching = true;
        let outcome = loop {
            let next = if progress.is_some() {
                PROGRESS_EVERY
                    .min(every)
                    .saturating_sub(last_beat.elapsed())
            } else {
                every.saturating_sub(last_beat.elapsed())
            };
            tokio::select! {
                done = &mut run => break done,
                // Stopping: the run is stopped at its next tile and handed back.
                _ = stopped(&mut stop), if !handing_back => {}
                changed = rx.changed(), if watching => {
                    match changed {
                        Ok(()) => progress = Some(rx.borrow_and_update().progress),
                        Err(_) => watching = false,
                    }
                    continue;
                }
                _ = tokio::time::sleep(next) => {}
            }
            if self.stopping() && !handing_back {
                handing_back = true;
                cancel.store(true, Ordering::SeqCst);
            }
            last_beat = Instant::now();
            match self.beat(entry, fence, progress.take()).await {
                Beat::Cancel => cancel.store(true, Ordering::SeqCst),
                Beat::Stale => {
                    stale = true;
                    cancel.store(true, Ordering::SeqCst);
                }
                Beat::Ok | Beat::Unreachable => {}
            }
        };
        let (outcome, task) = match outcome {
            Ok(pair) => pair,
            Err(e) => return Execution::Failed(JobError::internal(format!("the run failed: {e}"))),
        };
        if stale {
            return Execution::Stale;
        }
        match outcome {
            Err(e) if handing_back && e.code() == "cancelled" => Execution::HandBack,
            Err(e) => Execution::Failed(JobError::from(e)),
            Ok(output) => {
                let Media::Image(bytes) = output.media else {
                    return Execution::Failed(JobError::internal("an image job made a video"));
                };
                let key = format!("results/{}-{fence}.{}", task.id, format.extension());
                if let Err(e) = broker.put_blob(&key, bytes).await {
                    return Execution::Failed(e);
                }
                let t = output.timings;
                let ms = |d: Duration| d.as_millis().to_string();
                let fields = vec![
                    ("result".to_string(), key.clone()),
                    ("width".to_string(), output.width.to_string()),
                    ("height".to_string(), output.height.to_string()),
                    ("progress".to_string(), "1".to_string()),
                    ("t_queue".to_string(), ms(t.queue)),
                    ("t_decode".to_string(), ms(t.decode)),
                    ("t_upscale".to_string(), ms(t.upscale)),
                    ("t_encode".to_string(), ms(t.encode)),
                ];
                Execution::Done(fields, key)
            }
        }
    }

    /// A job's hash whatever its owner (a worker runs every owner's jobs).
    async fn load_any(&self, id: &str) -> Option<Fields> {
        let mut con = self.broker.con();
        let map: std::collections::HashMap<String, String> = con.hgetall(job_key(id)).await.ok()?;
        (!map.is_empty()).then_some(Fields(map))
    }

    async fn beat(&self, entry: &Entry, fence: &str, progress: Option<f64>) -> Beat {
        let mut con = self.broker.con();
        let answer: redis::RedisResult<String> = redis::Script::new(scripts::PROGRESS)
            .key(job_key(&entry.job))
            .key(&entry.stream)
            .arg(fence)
            .arg(progress.map(|p| format!("{p:.4}")).unwrap_or_default())
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(&entry.msgid)
            .arg(channel(&entry.job))
            .invoke_async(&mut con)
            .await;
        match answer.as_deref() {
            Ok("ok") => Beat::Ok,
            Ok("cancel") => Beat::Cancel,
            Ok(_) => Beat::Stale,
            Err(_) => Beat::Unreachable,
        }
    }
}

/// Resolves once the node is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The borrow it answers is not kept: it must not live across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// The most often a running job's progress is sent to the cluster.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

enum Beat {
    Ok,
    Cancel,
    Stale,
    Unreachable,
}

enum Execution {
    Done(Vec<(String, String)>, String),
    Failed(JobError),
    HandBack,
    Stale,
}

fn entry_of(stream: &str, id: redis::streams::StreamId) -> Option<Entry> {
    let job = match id.map.get("id") {
        Some(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok()?,
        Some(redis::Value::SimpleString(s)) => s.clone(),
        _ => return None,
    };
    Some(Entry {
        stream: stream.to_string(),
        msgid: id.id,
        job,
    })
}
