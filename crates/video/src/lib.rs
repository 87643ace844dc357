//! Video through superres, with Debian's `ffmpeg` and `ffprobe` as subprocesses.
//!
//! Where it sits: beside the image path. [`probe`] reads what a file holds; [`upscale_video`]
//! streams its frames out of one `ffmpeg` (raw RGB on a pipe), through the caller's frame
//! function (the model), into another `ffmpeg` that encodes them, and never holds more than
//! a couple of frames: nothing is decoded to disk or to memory in full.
//!
//! Why ffmpeg as a process: it reads every container and codec people have, and its
//! command line is what they already know; linking libav* would tie the build to one
//! FFmpeg ABI and its build flags. Frames cross as `rgb24`, converted with the source's own
//! colour matrix and range, so the colours survive the round trip.
//!
//! Resumable: the frames are cut into segments ([`VideoOptions::segment_frames`]), each
//! encoded to its own file in `<output>.parts/` and renamed there once complete. An
//! interrupted run (Ctrl-C, a crash) leaves the finished segments; `resume` skips them. At
//! the end the segments are joined without re-encoding, the audio and subtitle streams of
//! the input are copied in, the container's metadata too, and the file is renamed to its
//! final name: until then it is `<output>.partial.<ext>`, so no half-written output ever
//! has the final name.
//!
//! Preserved: frame count, frame rate and so duration (the frames keep the input's
//! constant rate; a variable-rate input is resampled to its average rate), the colour
//! primaries, transfer, matrix and range tags, audio and subtitles (copied; audio is
//! re-encoded to AAC only when the container cannot hold the original codec).

mod ffmpeg;

pub use ffmpeg::{
    ColorTags, Probe, VideoError, VideoOptions, VideoSummary, ffmpeg_available, looks_like_video,
    probe, upscale_video,
};
