//! `superres upscale clip.mp4`: a video through the model, frame by frame, with a progress
//! bar in frames and an ETA. The work is `superres_video::upscale_video`'s; this file picks
//! the output name, wires the model in and reports.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use superres_upscale::{Model, Options, OutputSize, upscale, upscale_tta};
use superres_video::{VideoOptions, upscale_video};

/// Extensions a video output keeps from its input; anything else becomes `.mp4`.
const VIDEO_EXTENSIONS: &[&str] = &["mp4", "mkv", "webm", "mov", "m4v"];

/// Whether `path` holds a video rather than an image: not an image format superres reads,
/// and the first bytes of a video container.
pub fn is_video(path: &Path) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = vec![0u8; 512];
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    head.truncate(n);
    superres_imaging::sniff_format(&head).is_err() && superres_video::looks_like_video(&head)
}

/// The default output of a video: `<stem><suffix>.<ext>` beside it, the input's container
/// kept when it is one we write, else MP4.
pub fn default_output(input: &Path, suffix: &str) -> PathBuf {
    let ext = input
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .filter(|e| VIDEO_EXTENSIONS.contains(&e.as_str()))
        .unwrap_or_else(|| "mp4".into());
    let stem = input
        .file_stem()
        .map_or_else(|| "video".into(), |s| s.to_string_lossy().into_owned());
    input.with_file_name(format!("{stem}{suffix}.{ext}"))
}

/// What a video run needs from the command line.
pub struct VideoRun<'a> {
    pub model: &'a Model,
    pub options: &'a Options,
    pub size: OutputSize,
    pub tta: bool,
    pub video: VideoOptions,
    pub quiet: bool,
}

/// Upscales one video; Ctrl-C stops it after the current frame, leaving the finished
/// segments for `--resume` and nothing under the output's name.
pub fn run_video(input: &Path, output: &Path, r: &VideoRun<'_>) -> anyhow::Result<String> {
    let bar = if r.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{bar:30}] {pos}/{len} frames {per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix("video");
    bar.set_message(input.display().to_string());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Without the handler a signal would still stop the run, only less tidily.
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    let model = r.model;
    let run = if r.tta { upscale_tta } else { upscale };
    let mut frame = |image: superres_imaging::Image| {
        let (w, h) = (image.width, image.height);
        let out = run(model, &image, r.options, &mut |_| {
            !stop.load(Ordering::Relaxed)
        })
        .map_err(|e| e.to_string())?;
        r.size
            .apply(out, w, h, model.scale())
            .map_err(|e| e.to_string())
    };
    let mut progress = |done: u64, expected: Option<u64>| {
        if let Some(n) = expected {
            bar.set_length(n.max(done));
        }
        bar.set_position(done);
        !stop.load(Ordering::Relaxed)
    };
    let result = upscale_video(input, output, &r.video, &mut frame, &mut progress);
    bar.finish_and_clear();
    let summary = result
        .map_err(|e| match e {
            superres_video::VideoError::Cancelled => anyhow::anyhow!(
                "stopped; the finished segments are kept in {}.parts: run again with --resume \
             to go on",
                output.display()
            ),
            e => anyhow::Error::new(e),
        })
        .with_context(|| format!("{}", input.display()))?;
    let resumed = if summary.resumed_frames > 0 {
        format!(", {} resumed", summary.resumed_frames)
    } else {
        String::new()
    };
    Ok(format!(
        "{} frames, {}×{}{resumed}",
        summary.frames, summary.width, summary.height
    ))
}
