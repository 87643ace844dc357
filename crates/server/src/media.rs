//! What a job carries in and out: an image in memory or a video on disk, and the formats a
//! result is written in.
//!
//! Where it sits: between [`crate::upload`], the [`crate::queue`] and [`crate::worker`]. An
//! image travels as bytes, as it always has. A video never does: the extractor streams the
//! upload into a folder of the job's own under the server's video folder ([`VideoUploads`],
//! bounded by `--max-video-mb`), the worker reads it with ffmpeg one frame at a time
//! ([`superres_video`]) and writes the result beside it, and the result endpoint streams that
//! file with HTTP ranges, so a browser can seek in it. The job's folder is removed with
//! everything in it when the last holder lets go of it: when the job is forgotten (result
//! TTL, `DELETE`, a failed or abandoned run), or when the server exits.
//!
//! Why the disk: a video is many times the size of any image, and its result more so; the
//! result store's memory budget is for images. What a video job holds on disk is bounded by
//! `--max-video-mb` for its input and its result's lifetime by the result TTL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde::Serialize;
use superres_imaging::OutputFormat;

use crate::error::ApiError;

/// What a job works on, or what it made.
#[derive(Clone, Debug)]
pub enum Media {
    Image(Bytes),
    Video(VideoFile),
}

impl Media {
    pub fn kind(&self) -> MediaKind {
        match self {
            Media::Image(_) => MediaKind::Image,
            Media::Video(_) => MediaKind::Video,
        }
    }

    /// Bytes held in memory (a video is on disk: none).
    pub fn memory_bytes(&self) -> usize {
        match self {
            Media::Image(bytes) => bytes.len(),
            Media::Video(_) => 0,
        }
    }
}

/// Whether a job is an image or a video, as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Video,
}

/// A video file in a job's folder.
#[derive(Clone, Debug)]
pub struct VideoFile {
    /// Keeps the folder (and so the file) alive.
    pub dir: JobDir,
    pub path: PathBuf,
    /// Its size in bytes.
    pub len: u64,
}

/// A job's own folder under the server's video folder. Clones share it; it is removed with
/// everything in it when the last one is dropped.
#[derive(Clone, Debug)]
pub struct JobDir(Arc<tempfile::TempDir>);

impl JobDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Where uploaded videos go, and what the server can do with them.
#[derive(Debug)]
pub struct VideoUploads {
    /// Removed, with every job folder left in it, when the server's state is dropped.
    root: tempfile::TempDir,
    max_bytes: u64,
    /// Why this server cannot read videos, when it cannot (no ffmpeg).
    unavailable: Option<String>,
}

impl VideoUploads {
    /// A fresh video folder under `parent` (the system's temporary folder when `None`) for
    /// uploads of at most `max_bytes`, and whether ffmpeg is here to read them.
    pub fn new(parent: Option<&Path>, max_bytes: u64) -> std::io::Result<VideoUploads> {
        let unavailable = superres_video::ffmpeg_available()
            .err()
            .map(|e| e.to_string());
        if let Some(why) = &unavailable {
            tracing::warn!("video uploads will be refused: {why}");
        }
        Self::with_tools(parent, max_bytes, unavailable)
    }

    /// [`VideoUploads::new`], told whether ffmpeg is here (`unavailable`: why not).
    pub fn with_tools(
        parent: Option<&Path>,
        max_bytes: u64,
        unavailable: Option<String>,
    ) -> std::io::Result<VideoUploads> {
        let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
        std::fs::create_dir_all(&parent)?;
        let root = tempfile::Builder::new()
            .prefix("superres-video-")
            .tempdir_in(parent)?;
        Ok(VideoUploads {
            root,
            max_bytes,
            unavailable,
        })
    }

    /// Largest accepted video upload, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// 415 when this server cannot read videos.
    pub fn check_available(&self) -> Result<(), ApiError> {
        match &self.unavailable {
            None => Ok(()),
            Some(why) => Err(ApiError::video_unsupported(format!(
                "this server cannot read videos: {why}"
            ))),
        }
    }

    /// A new, empty folder for one job.
    pub fn job_dir(&self) -> Result<JobDir, ApiError> {
        tempfile::Builder::new()
            .prefix("job-")
            .tempdir_in(self.root.path())
            .map(|d| JobDir(Arc::new(d)))
            .map_err(|e| ApiError::internal(format!("cannot make a folder for the video: {e}")))
    }
}

/// The container a video result is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    /// H.264 in MP4: what every browser and player reads.
    Mp4,
    /// VP9 in WebM.
    Webm,
    /// H.264 in Matroska, which also holds any audio and subtitle codec as it is.
    Mkv,
}

impl Container {
    pub fn extension(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Webm => "webm",
            Container::Mkv => "mkv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Container::Mp4 => "video/mp4",
            Container::Webm => "video/webm",
            Container::Mkv => "video/x-matroska",
        }
    }

    /// The container named by a `format` option (`mp4`, `webm` or `mkv`, in any case).
    pub fn parse(name: &str) -> Option<Container> {
        match name.to_ascii_lowercase().as_str() {
            "mp4" => Some(Container::Mp4),
            "webm" => Some(Container::Webm),
            "mkv" => Some(Container::Mkv),
            _ => None,
        }
    }
}

/// The format of a job's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Image(OutputFormat),
    Video(Container),
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Image(f) => f.content_type(),
            Format::Video(c) => c.content_type(),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Image(f) => f.extension(),
            Format::Video(c) => c.extension(),
        }
    }
}

/// The result format for a video from its `format` option: MP4 when absent; 400 for an
/// image format or an unknown name.
pub fn video_format(option: Option<&str>) -> Result<Container, ApiError> {
    match option {
        None => Ok(Container::Mp4),
        Some(name) => Container::parse(name).ok_or_else(|| {
            ApiError::bad_field(format!(
                "a video's result is written as mp4, webm or mkv, not {name:?}"
            ))
        }),
    }
}

impl ApiError {
    /// 415: a video on a server that cannot read videos, or where they are turned off.
    pub fn video_unsupported(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "video_unsupported",
            message,
        )
    }

    /// 413: a video upload beyond `--max-video-mb`.
    pub fn video_too_large(limit_bytes: u64) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "video_too_large",
            format!(
                "the video is larger than this server accepts ({} MB, --max-video-mb)",
                limit_bytes / 1_000_000
            ),
        )
    }

    /// 415 on `/enhance`: it answers images; a video goes through a job.
    pub fn video_needs_job() -> Self {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "video_needs_job",
            "POST /enhance answers images only: submit a video to POST /v1/jobs and fetch \
             its result when the job is done",
        )
    }

    /// 422: a file that looks like a video but that ffprobe cannot read.
    pub fn corrupt_video(detail: impl std::fmt::Display) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_video",
            format!("the video cannot be read: {detail}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_video_format_is_a_container_and_an_image_format_is_400() {
        assert_eq!(video_format(None).unwrap(), Container::Mp4);
        assert_eq!(video_format(Some("WebM")).unwrap(), Container::Webm);
        assert_eq!(
            video_format(Some("mkv")).unwrap().content_type(),
            "video/x-matroska"
        );
        let e = video_format(Some("png")).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.message().contains("mp4, webm or mkv"), "{e:?}");
    }

    #[test]
    fn a_job_folder_goes_when_its_last_holder_does() {
        let uploads = VideoUploads::new(None, 1000).unwrap();
        let dir = uploads.job_dir().unwrap();
        let path = dir.path().to_path_buf();
        std::fs::write(path.join("in"), b"x").unwrap();
        let file = VideoFile {
            dir: dir.clone(),
            path: path.join("in"),
            len: 1,
        };
        drop(dir);
        assert!(file.path.is_file(), "the file still holds the folder");
        drop(file);
        assert!(!path.exists(), "removed with its last holder");
        let root = uploads.root().to_path_buf();
        drop(uploads);
        assert!(!root.exists(), "the video folder goes with the server");
    }
}
