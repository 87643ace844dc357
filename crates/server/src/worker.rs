//! The inference workers: plain threads that take jobs from the queue and run them.
//!
//! Where it sits: behind the [`JobQueue`]. Decoding, upscaling and encoding are seconds of
//! CPU (or GPU) work each; running them on the async runtime would stall health checks and
//! uploads, so they happen here, on `--workers` dedicated threads. Each job is run inside
//! `catch_unwind`: a panic in a model run fails that job with a 500 and the thread goes on
//! to the next one.
//!
//! The [`Upscaler`] trait is the seam between a worker and the pipeline. The service runs
//! [`Pipeline`] (the real [`superres_upscale::upscale`]); a wrapper can add instrumentation
//! or, in tests, slow a run down or make it fail.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use superres_imaging::{Image, decode, encode};
use superres_upscale::{Model, Options, Progress, UpscaleError};

use crate::error::ApiError;
use crate::queue::{JobOutput, JobQueue, Task, Timings};

/// Runs a model over an image. `progress` is called after every tile; `false` from it asks
/// the run to stop (cancel or timeout).
pub trait Upscaler: Send + Sync + 'static {
    fn upscale(
        &self,
        model: &Model,
        image: &Image,
        options: &Options,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Image, UpscaleError>;
}

/// The real pipeline.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pipeline;

impl Upscaler for Pipeline {
    fn upscale(
        &self,
        model: &Model,
        image: &Image,
        options: &Options,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Image, UpscaleError> {
        superres_upscale::upscale(model, image, options, progress)
    }
}

/// The worker threads of one queue.
pub struct WorkerPool {
    queue: Arc<JobQueue>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts `count` workers on `queue`.
    pub fn start(
        queue: Arc<JobQueue>,
        upscaler: Arc<dyn Upscaler>,
        count: usize,
    ) -> std::io::Result<WorkerPool> {
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            let queue = Arc::clone(&queue);
            let upscaler = Arc::clone(&upscaler);
            let thread = std::thread::Builder::new()
                .name(format!("superres-worker-{i}"))
                .spawn(move || work(&queue, upscaler.as_ref()))?;
            threads.push(thread);
        }
        Ok(WorkerPool { queue, threads })
    }

    /// Stops the workers once the queue is empty and waits for them.
    pub fn join(mut self) {
        self.queue.stop_workers();
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a worker thread ended with a panic");
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        // Without a join (the server future was dropped), the threads still must not wait
        // for work forever.
        self.queue.stop_workers();
    }
}

fn work(queue: &JobQueue, upscaler: &dyn Upscaler) {
    while let Some(task) = queue.next_task() {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| run(queue, upscaler, &task)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown cause".into());
                tracing::error!(job = %task.id, model = %task.model.name(), "model run panicked: {what}");
                Err(ApiError::internal(format!(
                    "the model run failed unexpectedly ({what}); the server keeps running"
                )))
            });
        let run_time = started.elapsed();
        if outcome.is_ok() {
            metrics::histogram!("superres_run_seconds", "model" => task.model.name().to_string())
                .record(run_time.as_secs_f64());
        }
        queue.finish(&task.id, outcome, run_time);
    }
}

/// Decode, upscale, encode: one job, on a worker thread.
fn run(queue: &JobQueue, upscaler: &dyn Upscaler, task: &Task) -> Result<JobOutput, ApiError> {
    let config = queue.config();
    let mut timings = Timings {
        queue: task.queue_wait,
        ..Timings::default()
    };
    let stage = Instant::now();
    let image = decode(&task.bytes, &config.limits)?;
    timings.decode = stage.elapsed();

    let stage = Instant::now();
    let deadline = stage + config.job_timeout;
    let mut timed_out = false;
    if task.cancel.load(Ordering::Relaxed) {
        return Err(ApiError::from(UpscaleError::Cancelled));
    }
    let result = upscaler.upscale(&task.model, &image, &config.options, &mut |p| {
        task.view.send_modify(|v| v.progress = p.fraction());
        if Instant::now() >= deadline {
            timed_out = true;
            return false;
        }
        !task.cancel.load(Ordering::Relaxed)
    });
    let upscaled = match result {
        Ok(image) => image,
        Err(UpscaleError::Cancelled) if timed_out => {
            return Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "timeout",
                format!(
                    "the job took longer than the limit of {} s and was stopped",
                    config.job_timeout.as_secs()
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let upscaled = task
        .size
        .apply(upscaled, image.width, image.height, task.model.scale())?;
    timings.upscale = stage.elapsed();
    metrics::counter!("superres_pixels_processed_total").increment(image.pixel_count() as u64);

    let stage = Instant::now();
    let bytes = encode(&upscaled, task.format, &config.encode)?;
    timings.encode = stage.elapsed();
    Ok(JobOutput {
        bytes: bytes.into(),
        format: task.format,
        model: task.model.name().to_string(),
        width: upscaled.width,
        height: upscaled.height,
        timings,
    })
}
