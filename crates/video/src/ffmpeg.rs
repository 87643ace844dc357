//! The ffmpeg side: probing, decoding a segment to raw frames, encoding frames, joining.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use serde::Deserialize;
use superres_imaging::{ColorKind, Image, Samples};

/// Why a video could not be upscaled.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error(
        "{0} is not installed (or not on PATH): video needs ffmpeg and ffprobe \
         (Debian/Ubuntu: apt-get install ffmpeg)"
    )]
    Missing(&'static str),
    #[error("{0}")]
    Probe(String),
    #[error("ffmpeg failed {what}: {detail}")]
    Ffmpeg { what: String, detail: String },
    #[error("{0}")]
    Frame(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VideoError {
    let what = what.into();
    move |source| VideoError::Io { what, source }
}

/// The colour description of a video stream, as ffmpeg names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColorTags {
    pub primaries: Option<String>,
    pub transfer: Option<String>,
    pub space: Option<String>,
    /// `tv` (limited) or `pc` (full).
    pub range: Option<String>,
}

/// What `ffprobe` says about a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub width: usize,
    pub height: usize,
    /// Frame rate as a fraction (`r_frame_rate`, else `avg_frame_rate`).
    pub fps: (u64, u64),
    /// Frames of the video stream, when the container says.
    pub frames: Option<u64>,
    /// Seconds, when known.
    pub duration: Option<f64>,
    pub codec: String,
    pub audio_streams: usize,
    pub subtitle_streams: usize,
    pub color: ColorTags,
}

impl Probe {
    pub fn fps_f64(&self) -> f64 {
        self.fps.0 as f64 / self.fps.1.max(1) as f64
    }

    /// Frames expected: the container's count, else duration × rate.
    pub fn expected_frames(&self) -> Option<u64> {
        self.frames.filter(|&n| n > 0).or_else(|| {
            self.duration
                .map(|d| (d * self.fps_f64()).round() as u64)
                .filter(|&n| n > 0)
        })
    }
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Deserialize)]
struct StreamJson {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<usize>,
    height: Option<usize>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    nb_frames: Option<String>,
    duration: Option<String>,
    color_primaries: Option<String>,
    color_transfer: Option<String>,
    color_space: Option<String>,
    color_range: Option<String>,
    #[serde(default)]
    disposition: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct FormatJson {
    duration: Option<String>,
}

fn rate(s: &Option<String>) -> Option<(u64, u64)> {
    let (n, d) = s.as_deref()?.split_once('/')?;
    let (n, d) = (n.parse::<u64>().ok()?, d.parse::<u64>().ok()?);
    (n > 0 && d > 0).then_some((n, d))
}

/// Whether `ffmpeg` and `ffprobe` run here.
pub fn ffmpeg_available() -> Result<(), VideoError> {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(VideoError::Missing(if tool == "ffmpeg" {
                "ffmpeg"
            } else {
                "ffprobe"
            }));
        }
    }
    Ok(())
}

/// Whether the first bytes of a file look like a video container (ISO BMFF/MP4/MOV,
/// Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg). A quick test that needs no ffprobe; the
/// probe decides.
pub fn looks_like_video(head: &[u8]) -> bool {
    let at = |i: usize, m: &[u8]| head.get(i..i + m.len()) == Some(m);
    at(4, b"ftyp")
        || at(0, &[0x1A, 0x45, 0xDF, 0xA3])
        || (at(0, b"RIFF") && at(8, b"AVI "))
        || at(0, &[0x47]) && head.get(188) == Some(&0x47)
        || at(0, &[0x00, 0x00, 0x01, 0xBA])
        || at(0, b"FLV")
        || at(0, b"OggS")
}

/// What the file holds; an error naming the file when it has no video stream.
pub fn probe(path: &Path) -> Result<Probe, VideoError> {
    ffmpeg_available()?;
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .map_err(|_| VideoError::Missing("ffprobe"))?;
    if !out.status.success() {
        return Err(VideoError::Probe(format!(
            "ffprobe cannot read {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let json: ProbeJson = serde_json::from_slice(&out.stdout)
        .map_err(|e| VideoError::Probe(format!("ffprobe's answer for {}: {e}", path.display())))?;
    let is_picture = |s: &StreamJson| {
        s.disposition
            .as_ref()
            .and_then(|d| d.get("attached_pic"))
            .and_then(|v| v.as_i64())
            == Some(1)
    };
    let video = json
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video") && !is_picture(s))
        .ok_or_else(|| VideoError::Probe(format!("{} has no video stream", path.display())))?;
    let (width, height) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => {
            return Err(VideoError::Probe(format!(
                "{}: the video stream has no size",
                path.display()
            )));
        }
    };
    let fps = rate(&video.r_frame_rate)
        .filter(|&(n, d)| n / d <= 1000)
        .or_else(|| rate(&video.avg_frame_rate))
        .ok_or_else(|| VideoError::Probe(format!("{}: no frame rate", path.display())))?;
    let count = |kind: &str| {
        json.streams
            .iter()
            .filter(|s| s.codec_type.as_deref() == Some(kind))
            .count()
    };
    let duration = video
        .duration
        .as_deref()
        .or(json.format.as_ref().and_then(|f| f.duration.as_deref()))
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0);
    let tag = |v: &Option<String>| v.clone().filter(|s| s != "unknown" && !s.is_empty());
    Ok(Probe {
        width,
        height,
        fps,
        frames: video.nb_frames.as_deref().and_then(|n| n.parse().ok()),
        duration,
        codec: video.codec_name.clone().unwrap_or_default(),
        audio_streams: count("audio"),
        subtitle_streams: count("subtitle"),
        color: ColorTags {
            primaries: tag(&video.color_primaries),
            transfer: tag(&video.color_transfer),
            space: tag(&video.color_space),
            range: tag(&video.color_range),
        },
    })
}

/// How to encode the result.
#[derive(Clone, Debug)]
pub struct VideoOptions {
    /// ffmpeg's encoder name; `None` picks from the output's extension: `libvpx-vp9` for
    /// `.webm`, else `libx264`.
    pub codec: Option<String>,
    /// Constant rate factor (quality; lower is better): 18 for x264 (visually lossless),
    /// 24 for VP9, when `None`.
    pub crf: Option<u8>,
    /// Frames per segment (the unit of `resume`).
    pub segment_frames: usize,
    /// Keep the finished segments of an interrupted run and go on from there.
    pub resume: bool,
}

impl Default for VideoOptions {
    fn default() -> Self {
        VideoOptions {
            codec: None,
            crf: None,
            segment_frames: 240,
            resume: false,
        }
    }
}

/// How a run went.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoSummary {
    pub frames: u64,
    /// Frames taken from segments of an earlier run.
    pub resumed_frames: u64,
    pub width: usize,
    pub height: usize,
}

/// ffmpeg's matrix name for `scale` (`bt709`, `bt601`, ...) from a stream's colour space.
fn matrix(space: Option<&str>) -> &'static str {
    match space {
        Some("bt709") => "bt709",
        Some("bt2020nc") | Some("bt2020c") => "bt2020",
        Some("smpte240m") => "smpte240m",
        Some("fcc") => "fcc",
        _ => "bt601",
    }
}

fn range(r: Option<&str>) -> &'static str {
    match r {
        Some("pc") | Some("jpeg") => "full",
        _ => "limited",
    }
}

fn ext_of(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("mp4")
        .to_ascii_lowercase()
}

/// Runs a command to its end; its stderr becomes the error.
fn run(cmd: &mut Command, what: &str) -> Result<(), VideoError> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|_| VideoError::Missing("ffmpeg"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VideoError::Ffmpeg {
            what: what.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn seconds(frame: u64, fps: (u64, u64)) -> String {
    // Half a frame early, so the frame itself is the first one kept by the accurate seek.
    let t = (frame as f64 - 0.5).max(0.0) * fps.1 as f64 / fps.0 as f64;
    format!("{t:.6}")
}

/// Upscales the video `input` into `output`, calling `frame` on every frame (an RGB
/// image; it answers the upscaled one, all of one size) and `progress(done, expected)`
/// before the first and after each. `progress` answering `false` cancels: the finished segments stay for a
/// resume, no output is written.
pub fn upscale_video(
    input: &Path,
    output: &Path,
    options: &VideoOptions,
    frame: &mut dyn FnMut(Image) -> Result<Image, String>,
    progress: &mut dyn FnMut(u64, Option<u64>) -> bool,
) -> Result<VideoSummary, VideoError> {
    let info = probe(input)?;
    let ext = ext_of(output);
    let parts = PathBuf::from(format!("{}.parts", output.display()));
    if !options.resume && parts.exists() {
        std::fs::remove_dir_all(&parts).map_err(io(format!("cannot clear {}", parts.display())))?;
    }
    std::fs::create_dir_all(&parts).map_err(io(format!("cannot create {}", parts.display())))?;
    let expected = info.expected_frames();
    // The count is known before the first frame is.
    if !progress(0, expected) {
        return Err(VideoError::Cancelled);
    }
    let per = options.segment_frames.max(1) as u64;
    let mut done = 0u64;
    let mut resumed = 0u64;
    let mut out_size: Option<(usize, usize)> = None;
    let mut segments = Vec::new();
    for k in 0u64.. {
        let seg = parts.join(format!("seg{k:06}.mkv"));
        let count = parts.join(format!("seg{k:06}.frames"));
        if options.resume && seg.is_file() {
            let n = std::fs::read_to_string(&count)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            let size = std::fs::read_to_string(parts.join("size")).ok();
            if let (Some(n), Some(size)) = (n, size) {
                if let Some((w, h)) = size.trim().split_once('x') {
                    out_size = w.parse().ok().zip(h.parse().ok());
                }
                done += n;
                resumed += n;
                segments.push(seg);
                if !progress(done, expected) {
                    return Err(VideoError::Cancelled);
                }
                if n < per {
                    break;
                }
                continue;
            }
        }
        let n = encode_segment(
            input,
            &info,
            &ext,
            options,
            k * per,
            per,
            &seg,
            &mut out_size,
            frame,
            &mut |i| progress(done + i, expected),
        )?;
        if n == 0 {
            break;
        }
        std::fs::write(&count, n.to_string()).map_err(io("cannot record a segment"))?;
        if let Some((w, h)) = out_size {
            std::fs::write(parts.join("size"), format!("{w}x{h}"))
                .map_err(io("cannot record the frame size"))?;
        }
        done += n;
        segments.push(seg);
        if n < per {
            break;
        }
    }
    let Some((width, height)) = out_size.filter(|_| done > 0) else {
        return Err(VideoError::Probe(format!(
            "{} has no frames to upscale",
            input.display()
        )));
    };
    join(input, output, &info, &ext, &parts, &segments)?;
    let _ = std::fs::remove_dir_all(&parts);
    Ok(VideoSummary {
        frames: done,
        resumed_frames: resumed,
        width,
        height,
    })
}

/// Decodes frames `first..first + count` of `input`, upscales them and encodes them into
/// `seg` (through `seg`'s `.tmp` name, renamed once complete). Answers how many frames the
/// segment got (0 past the end).
#[allow(clippy::too_many_arguments)]
fn encode_segment(
    input: &Path,
    info: &Probe,
    ext: &str,
    options: &VideoOptions,
    first: u64,
    count: u64,
    seg: &Path,
    out_size: &mut Option<(usize, usize)>,
    frame: &mut dyn FnMut(Image) -> Result<Image, String>,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<u64, VideoError> {
    let (w, h) = (info.width, info.height);
    let mut decoder = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(["-ss", &seconds(first, info.fps)])
        .arg("-i")
        .arg(input)
        .args(["-map", "0:v:0", "-frames:v", &count.to_string()])
        .args([
            "-vf",
            &format!(
                "scale=in_color_matrix={}:in_range={},format=rgb24",
                matrix(info.color.space.as_deref()),
                range(info.color.range.as_deref())
            ),
        ])
        .args([
            "-fps_mode",
            "cfr",
            "-r",
            &format!("{}/{}", info.fps.0, info.fps.1),
        ])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|_| VideoError::Missing("ffmpeg"))?;
    let stdout = decoder
        .stdout
        .take()
        .ok_or_else(|| VideoError::Frame("no decoder output".into()))?;
    // Frames are read on their own thread, two ahead, so decoding overlaps the model.
    let frame_bytes = w * h * 3;
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(2);
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::with_capacity(1 << 20, stdout);
        loop {
            let mut buf = vec![0u8; frame_bytes];
            if r.read_exact(&mut buf).is_err() || tx.send(buf).is_err() {
                break;
            }
        }
    });
    let tmp = seg.with_extension("tmp.mkv");
    let mut encoder: Option<(Child, ChildStdin)> = None;
    let mut n = 0u64;
    let result = (|| -> Result<(), VideoError> {
        for raw in rx.iter() {
            let image = Image::from_u8(w, h, ColorKind::Rgb, raw);
            let up = frame(image).map_err(VideoError::Frame)?;
            let (ow, oh) = (up.width, up.height);
            match *out_size {
                None => *out_size = Some((ow, oh)),
                Some(s) if s != (ow, oh) => {
                    return Err(VideoError::Frame(format!(
                        "frame {} came out {ow}x{oh}, not {}x{} like the others",
                        first + n,
                        s.0,
                        s.1
                    )));
                }
                _ => {}
            }
            if encoder.is_none() {
                encoder = Some(start_encoder(info, ext, options, ow, oh, &tmp)?);
            }
            let pixels = match (&up.color, up.color_kind) {
                (Samples::U8(v), ColorKind::Rgb) => v.clone(),
                _ => up.gray_to_rgb().to_8bit().color.to_u8(),
            };
            if let Some((_, stdin)) = encoder.as_mut() {
                stdin
                    .write_all(&pixels)
                    .map_err(io("the encoder stopped taking frames"))?;
            }
            n += 1;
            if !progress(n) {
                return Err(VideoError::Cancelled);
            }
        }
        Ok(())
    })();
    // However it ended, stop the decoder (it may still be writing) and collect both.
    let _ = decoder.kill();
    drop(rx);
    let _ = reader.join();
    let mut decode_err = String::new();
    if let Some(mut e) = decoder.stderr.take() {
        let _ = e.read_to_string(&mut decode_err);
    }
    let decoded = decoder.wait();
    let finish = encoder.map(|(mut child, stdin)| {
        drop(stdin);
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (child.wait(), err)
    });
    result?;
    if n == 0 {
        // Past the end, or a decoder that failed before any frame.
        if first == 0 {
            let failed = decoded.map(|s| !s.success()).unwrap_or(true);
            if failed && !decode_err.trim().is_empty() {
                return Err(VideoError::Ffmpeg {
                    what: format!("decoding {}", input.display()),
                    detail: decode_err.trim().to_string(),
                });
            }
        }
        return Ok(0);
    }
    match finish {
        Some((Ok(status), _)) if status.success() => {}
        Some((_, err)) => {
            return Err(VideoError::Ffmpeg {
                what: "encoding a segment".into(),
                detail: err.trim().to_string(),
            });
        }
        None => {}
    }
    std::fs::rename(&tmp, seg).map_err(io(format!("cannot finish {}", seg.display())))?;
    Ok(n)
}

fn start_encoder(
    info: &Probe,
    ext: &str,
    options: &VideoOptions,
    w: usize,
    h: usize,
    tmp: &Path,
) -> Result<(Child, ChildStdin), VideoError> {
    let codec = options.codec.clone().unwrap_or_else(|| {
        if ext == "webm" {
            "libvpx-vp9"
        } else {
            "libx264"
        }
        .to_string()
    });
    let crf = options
        .crf
        .unwrap_or(if codec.contains("vpx") { 24 } else { 18 });
    let c = &info.color;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-y"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24"])
        .args(["-s", &format!("{w}x{h}")])
        .args(["-framerate", &format!("{}/{}", info.fps.0, info.fps.1)])
        .args(["-i", "-"])
        // 4:2:0 needs even sides: an odd side gets one more (copied) pixel.
        .args([
            "-vf",
            &format!(
                "pad=ceil(iw/2)*2:ceil(ih/2)*2,scale=out_color_matrix={}:out_range={},format=yuv420p",
                matrix(c.space.as_deref()),
                range(c.range.as_deref())
            ),
        ])
        .args(["-c:v", &codec, "-crf", &crf.to_string()]);
    if codec.contains("vpx") {
        cmd.args(["-b:v", "0", "-row-mt", "1"]);
    } else if codec == "libx264" {
        cmd.args(["-preset", "medium"]);
    }
    for (flag, v) in [
        ("-color_primaries", &c.primaries),
        ("-color_trc", &c.transfer),
        ("-colorspace", &c.space),
        ("-color_range", &c.range),
    ] {
        if let Some(v) = v {
            cmd.args([flag, v]);
        }
    }
    let mut child = cmd
        .arg(tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|_| VideoError::Missing("ffmpeg"))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| VideoError::Frame("no encoder input".into()))?;
    Ok((child, stdin))
}

/// Joins the segments without re-encoding, copies in the input's audio, subtitles and
/// metadata, and renames the result to `output`.
fn join(
    input: &Path,
    output: &Path,
    info: &Probe,
    ext: &str,
    parts: &Path,
    segments: &[PathBuf],
) -> Result<(), VideoError> {
    let list = parts.join("segments.txt");
    let mut text = String::new();
    for s in segments {
        let abs = std::fs::canonicalize(s).map_err(io("cannot find a segment"))?;
        text.push_str(&format!(
            "file '{}'\n",
            abs.display().to_string().replace('\'', "'\\''")
        ));
    }
    std::fs::write(&list, text).map_err(io("cannot write the segment list"))?;
    let partial = output.with_extension(format!("partial.{ext}"));
    let attempt = |audio_codec: &str| {
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-v", "error", "-nostdin", "-y"])
            .args(["-f", "concat", "-safe", "0", "-i"])
            .arg(&list)
            .arg("-i")
            .arg(input)
            .args(["-map", "0:v:0", "-map", "1:a?", "-map", "1:s?"])
            .args(["-map_metadata", "1", "-c:v", "copy", "-c:a", audio_codec]);
        match ext {
            "mp4" | "m4v" | "mov" => cmd.args(["-c:s", "mov_text", "-movflags", "+faststart"]),
            "webm" => cmd.args(["-c:s", "webvtt"]),
            _ => cmd.args(["-c:s", "copy"]),
        };
        run(
            cmd.arg(&partial),
            "joining the segments and copying audio and subtitles",
        )
    };
    let fallback = if ext == "webm" { "libopus" } else { "aac" };
    if let Err(first) = attempt("copy") {
        if info.audio_streams == 0 {
            return Err(first);
        }
        // The container cannot hold the original audio codec: re-encode it.
        attempt(fallback)?;
    }
    std::fs::rename(&partial, output).map_err(io(format!("cannot write {}", output.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_recognised_by_their_first_bytes() {
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypisom");
        assert!(looks_like_video(&mp4));
        assert!(looks_like_video(&[0x1A, 0x45, 0xDF, 0xA3, 1]));
        assert!(looks_like_video(b"RIFF\0\0\0\0AVI LIST"));
        assert!(!looks_like_video(b"RIFF\0\0\0\0WEBPVP8 "));
        assert!(!looks_like_video(b"\x89PNG\r\n\x1a\n"));
        assert!(!looks_like_video(b""));
    }

    #[test]
    fn seeks_land_half_a_frame_early_and_rates_parse() {
        assert_eq!(seconds(0, (25, 1)), "0.000000");
        assert_eq!(seconds(25, (25, 1)), "0.980000");
        assert_eq!(rate(&Some("30000/1001".into())), Some((30000, 1001)));
        assert_eq!(rate(&Some("0/0".into())), None);
        assert_eq!(matrix(Some("bt709")), "bt709");
        assert_eq!(matrix(None), "bt601");
        assert_eq!(range(Some("pc")), "full");
    }
}
