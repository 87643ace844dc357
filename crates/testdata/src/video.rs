//! Test videos made by ffmpeg itself, and what ffprobe says of a result.
//!
//! ffmpeg is a test dependency like the shared assets: without it a video test skips,
//! loudly, except under CI (`CI` set), where its absence fails the test.

use std::path::Path;
use std::process::Command;

/// Whether this is a CI run (`CI` set, non-empty and not `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether ffmpeg can be used; under CI its absence fails the test.
pub fn ffmpeg_or_skip() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || !in_ci(),
        "CI: ffmpeg is not installed (apt-get install ffmpeg)"
    );
    if !ok {
        eprintln!("SKIPPED: ffmpeg is not installed (apt-get install ffmpeg)");
    }
    ok
}

/// A clip of `seconds` at `rate` frames per second: ffmpeg's `testsrc2` pattern in H.264
/// with a 440 Hz sine in AAC.
pub fn make_clip(path: &Path, width: u32, height: u32, rate: u32, seconds: u32) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!(
            "testsrc2=size={width}x{height}:rate={rate}:duration={seconds}"
        ))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={seconds}"))
        .args([
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(path)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "making the test clip");
}

/// ffprobe's streams of a file, frames counted (`nb_read_frames`).
pub fn streams(path: &Path) -> Vec<serde_json::Value> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe's JSON");
    v["streams"].as_array().cloned().unwrap_or_default()
}

/// The first video stream of a file.
pub fn video_stream(path: &Path) -> serde_json::Value {
    streams(path)
        .into_iter()
        .find(|s| s["codec_type"] == "video")
        .expect("a video stream")
}
