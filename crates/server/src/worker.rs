//! The inference workers: plain threads that take jobs from the queue and run them.
//!
//! Where it sits: behind the [`JobQueue`]. Decoding, upscaling and encoding are seconds of
//! CPU (or GPU) work each; running them on the async runtime would stall health checks and
//! uploads, so they happen here, on `--workers` dedicated threads. A video job is the same
//! work once per frame, between an ffmpeg that decodes and one that encodes
//! ([`superres_video`]), with `--job-timeout-secs` bounding each frame. Each job is run inside
//! `catch_unwind`: a panic in a model run fails that job with a 500 and the thread goes on
//! to the next one.
//!
//! The [`Upscaler`] trait is the seam between a worker and the pipeline. The service runs
//! [`Pipeline`] (the real [`superres_upscale::upscale`]); a wrapper can add instrumentation
//! or, in tests, slow a run down or make it fail.

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use superres_imaging::{Image, OutputFormat, decode, encode};
use superres_upscale::{Model, Options, Progress, UpscaleError};
use superres_video::{VideoError, VideoOptions, upscale_video};

use crate::error::ApiError;
use crate::jobs::JobError;
use crate::media::{Container, Format, Media, VideoFile};
use crate::queue::{JobOutput, JobQueue, QueueConfig, Task, Timings};

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
        let outcome = run_guarded(queue.config(), upscaler, &task);
        let run_time = started.elapsed();
        if outcome.is_ok() {
            metrics::histogram!("superres_run_seconds", "model" => task.model.name().to_string())
                .record(run_time.as_secs_f64());
        }
        queue.finish(&task.id, outcome.map_err(JobError::from), run_time);
    }
}

/// [`run`] inside `catch_unwind`: a panic in a model run fails that job only.
pub(crate) fn run_guarded(
    config: &QueueConfig,
    upscaler: &dyn Upscaler,
    task: &Task,
) -> Result<JobOutput, ApiError> {
    catch_unwind(AssertUnwindSafe(|| run(config, upscaler, task))).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        tracing::error!(job = %task.id, model = %task.model.name(), "model run panicked: {what}");
        Err(ApiError::internal(format!(
            "the model run failed unexpectedly ({what}); the server keeps running"
        )))
    })
}

/// One job, on a worker thread: an image or a video.
fn run(config: &QueueConfig, upscaler: &dyn Upscaler, task: &Task) -> Result<JobOutput, ApiError> {
    match (&task.media, task.format) {
        (Media::Image(bytes), Format::Image(format)) => {
            run_image(config, upscaler, task, bytes, format)
        }
        (Media::Video(file), Format::Video(container)) => {
            run_video(config, upscaler, task, file, container)
        }
        _ => Err(ApiError::internal(
            "the job's result format does not fit its upload",
        )),
    }
}

/// Decode, upscale, encode.
fn run_image(
    config: &QueueConfig,
    upscaler: &dyn Upscaler,
    task: &Task,
    bytes: &[u8],
    format: OutputFormat,
) -> Result<JobOutput, ApiError> {
    let mut timings = Timings {
        queue: task.queue_wait,
        ..Timings::default()
    };
    let stage = Instant::now();
    let image = decode(bytes, &config.limits)?;
    timings.decode = stage.elapsed();

    let stage = Instant::now();
    let upscaled = upscale_one(config, upscaler, task, &image, &mut |fraction| {
        task.view.send_modify(|v| v.progress = fraction);
    })?;
    timings.upscale = stage.elapsed();
    metrics::counter!("superres_pixels_processed_total").increment(image.pixel_count() as u64);

    let stage = Instant::now();
    let bytes = encode(&upscaled, format, &config.encode)?;
    timings.encode = stage.elapsed();
    Ok(JobOutput {
        media: Media::Image(bytes.into()),
        format: Format::Image(format),
        model: task.model.name().to_string(),
        width: upscaled.width,
        height: upscaled.height,
        timings,
    })
}

/// Upscales one image (or video frame) to the task's size, within the job timeout (which
/// bounds each image, and so each frame of a video) and stopping when the job is
/// cancelled. `progress` gets the fraction of its tiles done.
fn upscale_one(
    config: &QueueConfig,
    upscaler: &dyn Upscaler,
    task: &Task,
    image: &Image,
    progress: &mut dyn FnMut(f64),
) -> Result<Image, ApiError> {
    let deadline = Instant::now() + config.job_timeout;
    let mut timed_out = false;
    if task.cancel.load(Ordering::Relaxed) {
        return Err(ApiError::from(UpscaleError::Cancelled));
    }
    let result = upscaler.upscale(&task.model, image, &config.options, &mut |p| {
        progress(p.fraction());
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
    Ok(task
        .size
        .apply(upscaled, image.width, image.height, task.model.scale())?)
}

/// Streams a video's frames through the model with ffmpeg (see [`superres_video`]) into
/// `upscaled.<ext>` in the job's folder. Progress counts frames, and the tiles of the frame
/// being run; a cancel stops at the next tile.
fn run_video(
    config: &QueueConfig,
    upscaler: &dyn Upscaler,
    task: &Task,
    input: &VideoFile,
    container: Container,
) -> Result<JobOutput, ApiError> {
    let started = Instant::now();
    let output = input
        .dir
        .path()
        .join(format!("upscaled.{}", container.extension()));
    // Frames done and expected, shared by the frame and progress callbacks.
    let done = Cell::new(0u64);
    let total = Cell::new(None::<u64>);
    let show = |frames_done: u64, fraction: f64| {
        let total = total.get();
        task.view.send_modify(|v| {
            v.frames_done = Some(frames_done);
            v.frames_total = total;
            v.progress = total.map_or(0.0, |n| {
                ((frames_done as f64 + fraction) / n.max(1) as f64).min(1.0)
            });
        });
    };
    // The frame callback answers text to ffmpeg's side; the job's own error is kept here.
    let mut failure: Option<ApiError> = None;
    let mut pixels = 0u64;
    let mut frame = |image: Image| -> Result<Image, String> {
        pixels += image.pixel_count() as u64;
        upscale_one(config, upscaler, task, &image, &mut |f| show(done.get(), f)).map_err(|e| {
            let message = e.message().to_string();
            failure = Some(e);
            message
        })
    };
    let mut progress = |frames_done: u64, expected: Option<u64>| {
        done.set(frames_done);
        total.set(expected.map(|n| n.max(frames_done)));
        show(frames_done, 0.0);
        !task.cancel.load(Ordering::Relaxed)
    };
    let options = VideoOptions::default();
    let result = upscale_video(&input.path, &output, &options, &mut frame, &mut progress);
    metrics::counter!("superres_pixels_processed_total").increment(pixels);
    let summary = match (result, failure) {
        (Ok(summary), _) => summary,
        (Err(_), Some(failure)) => return Err(failure),
        (Err(e), None) => return Err(video_error(e)),
    };
    // The upload is not needed any more; the folder stays for the result.
    let _ = std::fs::remove_file(&input.path);
    let len = std::fs::metadata(&output)
        .map_err(|e| ApiError::internal(format!("the upscaled video is missing: {e}")))?
        .len();
    Ok(JobOutput {
        media: Media::Video(VideoFile {
            dir: input.dir.clone(),
            path: output,
            len,
        }),
        format: Format::Video(container),
        model: task.model.name().to_string(),
        width: summary.width,
        height: summary.height,
        timings: Timings {
            queue: task.queue_wait,
            upscale: started.elapsed(),
            ..Timings::default()
        },
    })
}

/// A video run's failure as the job reports it.
fn video_error(e: VideoError) -> ApiError {
    match e {
        VideoError::Cancelled => ApiError::from(UpscaleError::Cancelled),
        VideoError::Missing(_) => ApiError::video_unsupported(e.to_string()),
        VideoError::Probe(_) | VideoError::Ffmpeg { .. } => ApiError::corrupt_video(e),
        VideoError::Frame(_) | VideoError::Io { .. } => ApiError::internal(e.to_string()),
    }
}
