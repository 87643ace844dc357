//! The upload extractor: a multipart request into the image (or video) and the job's options.
//!
//! Where it sits: first in `POST /enhance` and `POST /v1/jobs`. It reads the multipart field
//! `image` and the optional `model`, `format`, `outscale`, `width` and `height` (as fields or
//! query parameters; a field wins). The uploaded file name is never used for anything, so a
//! hostile one (`../../etc/passwd`) is harmless.
//!
//! The `image` field is read a chunk at a time. Its first bytes decide what it is: a video
//! container (and not an image format) is streamed to a file of its own
//! ([`crate::media`]) up to `--max-video-mb`, anything else is held in memory up to
//! `--max-body-mb`, and each limit is enforced as the bytes arrive, so neither is ever
//! exceeded in memory or on disk. Text fields are read up to [`MAX_TEXT_FIELD`] bytes.
//!
//! [`check_header`] then reads an image's header only: the format must be one we decode
//! (415 otherwise), the header must be readable (422) and the size it claims within the
//! pixel limit (413), and [`check_request`] what the result would need: its pixel count and
//! an estimate of its memory (413 beyond either limit), so those uploads are refused before
//! they take a place in the queue. Full decoding happens on a worker.

use axum::body::Bytes;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::StatusCode;
use serde::Deserialize;
use superres_imaging::{Header, Limits};
use superres_upscale::{Model, Options, OutputSize};
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;
use crate::media::{Format, Media, VideoFile, VideoUploads, video_format};
use crate::queue::RequestLimits;
use crate::state::AppState;

/// An uploaded image or video and what the client asked for.
#[derive(Debug)]
pub struct Upload {
    pub media: Media,
    pub model: Option<String>,
    pub format: Option<String>,
    /// The result's size, as `outscale`, `width` and `height` were given.
    pub size: SizeOptions,
}

/// The size options as given (text, checked by [`Upload::output_size`]).
#[derive(Debug, Default)]
pub struct SizeOptions {
    pub outscale: Option<String>,
    pub width: Option<String>,
    pub height: Option<String>,
}

/// The options as query parameters; a form field of the same name wins.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// The model to run (see `/v1/models`); the server's default when absent.
    #[param(max_length = 256)]
    model: Option<String>,
    /// An image's result: `png` (the default), `jpeg` (or `jpg`) or `webp`; a video's:
    /// `mp4` (the default), `webm` or `mkv`; in any case.
    #[param(
        pattern = r"^[ \t\n\f\r]*([Pp][Nn][Gg]|[Jj][Pp][Ee]?[Gg]|[Ww][Ee][Bb][Pp]|[Mm][Pp]4|[Ww][Ee][Bb][Mm]|[Mm][Kk][Vv])?[ \t\n\f\r]*$"
    )]
    format: Option<String>,
    /// Resample the model's result to this factor of the input (1 to 64, e.g. `2` with a
    /// ×4 model), with Lanczos-3. Not with `width`/`height`.
    #[param(value_type = Option<f64>, minimum = 1, maximum = 64)]
    outscale: Option<String>,
    /// Resample the result to this width; the height keeps the aspect ratio unless
    /// `height` is given too.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1048576)]
    width: Option<String>,
    /// Resample the result to this height; the width keeps the aspect ratio unless `width`
    /// is given too.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1048576)]
    height: Option<String>,
}

/// The multipart form of `POST /enhance` and `POST /v1/jobs`. Other fields are ignored.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // Describes the form; the extractor reads it field by field.
pub struct UploadForm {
    /// The image: PNG, JPEG, WebP, BMP, TIFF or GIF (its first frame). On `/v1/jobs`, also a
    /// video (MP4, MOV, MKV, WebM, AVI, MPEG-TS, FLV, Ogg: any container and codec ffmpeg
    /// reads) of at most `--max-video-mb`.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// The model to run; the server's default when absent.
    #[schema(max_length = 256)]
    model: Option<String>,
    /// An image's result: `png` (the default), `jpeg` (or `jpg`) or `webp`; a video's:
    /// `mp4` (the default), `webm` or `mkv`; in any case.
    #[schema(
        pattern = r"^[ \t\n\f\r]*([Pp][Nn][Gg]|[Jj][Pp][Ee]?[Gg]|[Ww][Ee][Bb][Pp]|[Mm][Pp]4|[Ww][Ee][Bb][Mm]|[Mm][Kk][Vv])?[ \t\n\f\r]*$"
    )]
    format: Option<String>,
    /// Resample the model's result to this factor of the input (1 to 64), with Lanczos-3.
    /// Not with `width`/`height`.
    #[schema(minimum = 1, maximum = 64)]
    outscale: Option<f64>,
    /// Resample the result to this width (the height keeps the aspect ratio unless `height`
    /// is given too).
    #[schema(minimum = 1, maximum = 1048576)]
    width: Option<u32>,
    /// Resample the result to this height (the width keeps the aspect ratio unless `width`
    /// is given too).
    #[schema(minimum = 1, maximum = 1048576)]
    height: Option<u32>,
}

/// Longest accepted value of a text field (`model`, `format`).
pub const MAX_TEXT_FIELD: usize = 256;

/// Bytes of the `image` field looked at to tell a video from an image (an MPEG-TS needs
/// its second packet's sync byte, at 188).
const SNIFF_BYTES: usize = 512;

/// How much an upload may bring.
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits<'a> {
    /// Largest image upload (the `--max-body-mb` limit).
    pub image_bytes: usize,
    /// Where videos go and how large they may be; `None`: videos are refused (415).
    pub video: Option<&'a VideoUploads>,
}

impl FromRequest<AppState> for Upload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limits = UploadLimits {
            image_bytes: state.http.max_body_bytes,
            video: state.videos.as_deref(),
        };
        read_upload(req, limits).await
    }
}

/// Reads an upload from a request: the multipart body's fields and the query string. Any
/// bytes give an [`Upload`] or a 4xx error: 400 for a malformed body or query, a missing
/// `image` field or an overlong text field, 413 when an image exceeds `image_bytes` (or the
/// body the router's limit), `video_too_large` (413) when a video exceeds its limit,
/// `video_unsupported` (415) for a video when `limits.video` is `None` or has no ffmpeg.
/// It needs no server, so the fuzz target `multipart_upload` drives it directly.
pub async fn read_upload(req: Request, limits: UploadLimits<'_>) -> Result<Upload, ApiError> {
    let limit_bytes = limits.image_bytes;
    let field_error = |e: MultipartError| multipart_error(e, limit_bytes);
    let Query(query) = Query::<UploadQuery>::try_from_uri(req.uri())
        .map_err(|e| ApiError::bad_field(format!("bad query string: {e}")))?;
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(multipart_rejection)?;
    let mut upload = Upload {
        media: Media::Image(Bytes::new()),
        model: None,
        format: None,
        size: SizeOptions::default(),
    };
    let mut has_image = false;
    while let Some(mut field) = multipart.next_field().await.map_err(field_error)? {
        match field.name() {
            Some("image") => {
                upload.media = read_media(&mut field, limits).await?;
                has_image = true;
            }
            Some(name @ ("model" | "format" | "outscale" | "width" | "height")) => {
                let name = name.to_string();
                let text = read_text(&mut field, &name, limit_bytes).await?;
                let text = given(&name, &text)?;
                *upload.option(&name) = text;
            }
            // Other fields are ignored, as the service this one replaces did.
            _ => {}
        }
    }
    if !has_image {
        return Err(ApiError::missing_field("image"));
    }
    for (name, value) in [
        ("model", &query.model),
        ("format", &query.format),
        ("outscale", &query.outscale),
        ("width", &query.width),
        ("height", &query.height),
    ] {
        let option = upload.option(name);
        if option.is_none() {
            *option = value
                .as_deref()
                .map(|v| given(name, v))
                .transpose()?
                .flatten();
        }
    }
    Ok(upload)
}

/// The `image` field: a video to its own file, anything else into memory, each within its
/// limit as it arrives.
async fn read_media(field: &mut Field<'_>, limits: UploadLimits<'_>) -> Result<Media, ApiError> {
    let error = |e: MultipartError| multipart_error(e, limits.image_bytes);
    let mut head = Vec::new();
    while head.len() < SNIFF_BYTES {
        match field.chunk().await.map_err(error)? {
            Some(chunk) => head.extend_from_slice(&chunk),
            None => break,
        }
    }
    let is_video =
        superres_imaging::sniff_format(&head).is_err() && superres_video::looks_like_video(&head);
    if is_video {
        let videos = limits.video.ok_or_else(|| {
            ApiError::video_unsupported("video uploads are turned off on this server")
        })?;
        videos.check_available()?;
        return read_video(field, head, videos, limits.image_bytes)
            .await
            .map(Media::Video);
    }
    let mut bytes = head;
    loop {
        if bytes.len() > limits.image_bytes {
            return Err(ApiError::body_too_large(limits.image_bytes));
        }
        match field.chunk().await.map_err(error)? {
            Some(chunk) => bytes.extend_from_slice(&chunk),
            None => return Ok(Media::Image(bytes.into())),
        }
    }
}

/// Streams the rest of a video upload into a new job folder, after its first bytes `head`.
/// On any error the folder goes with the partial file.
async fn read_video(
    field: &mut Field<'_>,
    head: Vec<u8>,
    videos: &VideoUploads,
    image_bytes: usize,
) -> Result<VideoFile, ApiError> {
    let write_error =
        |e: std::io::Error| ApiError::internal(format!("cannot store the uploaded video: {e}"));
    let dir = videos.job_dir()?;
    let path = dir.path().join("input");
    let mut file = tokio::fs::File::create(&path).await.map_err(write_error)?;
    let mut len = head.len() as u64;
    file.write_all(&head).await.map_err(write_error)?;
    loop {
        if len > videos.max_bytes() {
            return Err(ApiError::video_too_large(videos.max_bytes()));
        }
        match field
            .chunk()
            .await
            .map_err(|e| multipart_error(e, image_bytes))?
        {
            Some(chunk) => {
                len += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(write_error)?;
            }
            None => break,
        }
    }
    file.flush().await.map_err(write_error)?;
    Ok(VideoFile { dir, path, len })
}

/// A text field, read no further than one byte past [`MAX_TEXT_FIELD`] (so an overlong one
/// is refused by [`given`] without being held); 400 when it is not UTF-8.
async fn read_text(
    field: &mut Field<'_>,
    name: &str,
    limit_bytes: usize,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while bytes.len() <= MAX_TEXT_FIELD {
        match field
            .chunk()
            .await
            .map_err(|e| multipart_error(e, limit_bytes))?
        {
            Some(chunk) => bytes.extend_from_slice(&chunk),
            None => break,
        }
    }
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_field(format!("the '{name}' option is not UTF-8 text")))
}

/// The text option `name` as given: without the ASCII white space around it, absent when
/// empty; 400 beyond [`MAX_TEXT_FIELD`] bytes.
fn given(name: &str, text: &str) -> Result<Option<String>, ApiError> {
    if text.len() > MAX_TEXT_FIELD {
        return Err(ApiError::bad_field(format!(
            "the '{name}' option is longer than {MAX_TEXT_FIELD} bytes"
        )));
    }
    Ok(Some(text.trim_ascii().to_string()).filter(|t| !t.is_empty()))
}

impl Upload {
    /// The text option `name` (one of the five the extractor reads).
    fn option(&mut self, name: &str) -> &mut Option<String> {
        match name {
            "model" => &mut self.model,
            "format" => &mut self.format,
            "outscale" => &mut self.size.outscale,
            "width" => &mut self.size.width,
            _ => &mut self.size.height,
        }
    }

    /// The result's size asked for; the model's scale when none. 400 naming the option for
    /// a value that is not a number in range, or `outscale` with a side.
    pub fn output_size(&self) -> Result<OutputSize, ApiError> {
        let number = |name: &str, v: &Option<String>| -> Result<Option<f64>, ApiError> {
            v.as_deref()
                .map(|t| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .ok_or_else(|| {
                            ApiError::bad_field(format!("'{name}' must be a number, not {t:?}"))
                        })
                })
                .transpose()
        };
        let side = |name: &str, v: &Option<String>| -> Result<Option<usize>, ApiError> {
            v.as_deref()
                .map(|t| {
                    t.parse::<usize>().map_err(|_| {
                        ApiError::bad_field(format!(
                            "'{name}' must be a whole number of pixels, not {t:?}"
                        ))
                    })
                })
                .transpose()
        };
        let s = &self.size;
        OutputSize::from_options(
            number("outscale", &s.outscale)?,
            side("width", &s.width)?,
            side("height", &s.height)?,
        )
        .map_err(ApiError::bad_field)
    }

    /// The output format asked for: an image's (PNG when none) or a video's (MP4 when
    /// none); 400 for a name that is not one of the upload's kind.
    pub fn output_format(&self) -> Result<Format, ApiError> {
        match (&self.media, &self.format) {
            (Media::Video(_), f) => video_format(f.as_deref()).map(Format::Video),
            (Media::Image(_), None) => Ok(Format::Image(superres_imaging::OutputFormat::Png)),
            (Media::Image(_), Some(f)) => {
                f.parse()
                    .map(Format::Image)
                    .map_err(|e: superres_imaging::ImageError| {
                        ApiError::bad_field(e.message().to_string())
                    })
            }
        }
    }
}

fn multipart_rejection(e: MultipartRejection) -> ApiError {
    ApiError::bad_field(format!(
        "expected a multipart/form-data body with an 'image' field ({})",
        e.body_text()
    ))
}

fn multipart_error(e: MultipartError, limit_bytes: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::body_too_large(limit_bytes);
    }
    ApiError::bad_field(format!(
        "the multipart body is malformed: {}",
        e.body_text()
    ))
}

/// Refuses, from the header alone, uploads that are not an accepted image format, whose
/// header cannot be read (422), or whose header claims more pixels than `limits` allow (413),
/// before they take a place in the queue. Answers what the header declares.
pub fn check_header(bytes: &[u8], limits: &Limits) -> Result<Header, ApiError> {
    Ok(superres_imaging::probe_header(bytes, limits)?)
}

/// What the upscaler is given, from an image's header or a video's probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputShape {
    pub width: u32,
    pub height: u32,
    /// Colour channels, alpha not counted: 1 (grey) or 3.
    pub color_channels: usize,
    pub has_alpha: bool,
    /// 1 (8-bit) or 2.
    pub bytes_per_sample: usize,
}

impl From<&Header> for InputShape {
    fn from(h: &Header) -> Self {
        InputShape {
            width: h.width,
            height: h.height,
            color_channels: h.color_channels,
            has_alpha: h.has_alpha,
            bytes_per_sample: h.bytes_per_sample,
        }
    }
}

impl InputShape {
    /// A video's frames: 8-bit RGB (how they cross from ffmpeg).
    pub fn video_frame(width: usize, height: usize) -> InputShape {
        let side = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        InputShape {
            width: side(width),
            height: side(height),
            color_channels: 3,
            has_alpha: false,
            bytes_per_sample: 1,
        }
    }
}

/// What upscaling an upload needs, estimated from its header before it is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Estimate {
    /// Width × height of the result.
    pub output_pixels: u64,
    /// Bytes of the result's pixels: `output_pixels × channels × bytes per sample`.
    pub image_bytes: u64,
    /// The model's peak for one run of the size (and batch) the pipeline starts with.
    pub run_bytes: u64,
}

impl Estimate {
    /// The request's memory: the output image and the model's run.
    pub fn total_bytes(&self) -> u64 {
        self.image_bytes.saturating_add(self.run_bytes)
    }
}

/// Output pixels of a `width × height` image upscaled `scale` times (saturating).
pub fn output_pixels(width: u64, height: u64, scale: u64) -> u64 {
    width
        .saturating_mul(scale)
        .saturating_mul(height.saturating_mul(scale))
}

/// Refuses (413) an upload (an image, or one frame of a video) whose result would exceed `limits`: first its pixel count, then
/// the memory it would need (the output image plus `model`'s peak for the run size
/// `options` give). Cheap: the run's peak comes from the model's buffer plan, not a run.
pub fn check_request(
    header: &InputShape,
    model: &Model,
    options: &Options,
    limits: &RequestLimits,
    size: OutputSize,
) -> Result<Estimate, ApiError> {
    let (w, h, scale) = (
        u64::from(header.width),
        u64::from(header.height),
        model.scale() as u64,
    );
    let model_pixels = output_pixels(w, h, scale);
    if model_pixels > limits.max_output_pixels {
        return Err(ApiError::output_too_large(
            w,
            h,
            scale,
            limits.max_output_pixels,
        ));
    }
    // A resampled result is held beside the model's, so the larger one counts.
    let (fw, fh) = size.resolve(
        header.width as usize,
        header.height as usize,
        scale as usize,
    );
    let resized_pixels = (fw as u64).saturating_mul(fh as u64);
    if resized_pixels > limits.max_output_pixels {
        return Err(ApiError::resized_too_large(
            fw as u64,
            fh as u64,
            limits.max_output_pixels,
        ));
    }
    let output_pixels = model_pixels.max(resized_pixels);
    // The result has the colour channels of the image, or of an RGB model's output.
    let channels =
        header.color_channels.max(model.input_channels()) + usize::from(header.has_alpha);
    let image_bytes = output_pixels
        .saturating_mul(channels as u64)
        .saturating_mul(header.bytes_per_sample as u64);
    // Host memory only: on a GPU the runs live in device memory, which the device bounds
    // itself (tiles follow its free memory, an out-of-memory retries smaller), and what
    // the host holds is the result image.
    let run_bytes = if model.memory_available().is_some() {
        0
    } else {
        let tiling = model.tiling(header.width as usize, header.height as usize, options);
        let (run_w, run_h) = tiling.run_size();
        // A size the backend cannot plan fails in the run, with the run's own error.
        model.peak_bytes(run_h, run_w, tiling.batch).unwrap_or(0)
    };
    let estimate = Estimate {
        output_pixels,
        image_bytes,
        run_bytes,
    };
    if estimate.total_bytes() > limits.max_memory_bytes {
        return Err(ApiError::memory_too_large(
            estimate.total_bytes(),
            image_bytes,
            limits.max_memory_bytes,
        ));
    }
    Ok(estimate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        v.extend_from_slice(&width.to_be_bytes());
        v.extend_from_slice(&height.to_be_bytes());
        v.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32fast::hash(&v[12..]);
        v.extend_from_slice(&crc.to_be_bytes());
        v
    }

    fn request(query: &str, fields: &[(&str, &[u8])]) -> Request {
        let b = "b0undary";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(value);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        axum::http::Request::builder()
            .method("POST")
            .uri(format!("/enhance?{query}"))
            .header("content-type", format!("multipart/form-data; boundary={b}"))
            .body(axum::body::Body::from(body))
            .unwrap()
    }

    fn read(query: &str, fields: &[(&str, &[u8])]) -> Result<Upload, ApiError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let limits = UploadLimits {
            image_bytes: 1000,
            video: None,
        };
        rt.block_on(read_upload(request(query, fields), limits))
    }

    #[test]
    fn fields_win_over_the_query_and_options_are_trimmed() {
        let u = read(
            "model=q&format=webp",
            &[("image", b"bytes"), ("model", b" m\t"), ("other", b"x")],
        )
        .unwrap();
        assert!(matches!(&u.media, Media::Image(b) if &b[..] == b"bytes"));
        assert_eq!(u.model.as_deref(), Some("m"));
        assert_eq!(u.format.as_deref(), Some("webp"), "from the query");
        let u = read("model=%20%20", &[("image", b""), ("format", b"")]).unwrap();
        assert_eq!((u.model, u.format), (None, None), "blank is absent");
    }

    #[test]
    fn overlong_options_and_a_missing_image_are_400() {
        let long = "m".repeat(MAX_TEXT_FIELD + 1);
        for (query, fields) in [
            (format!("model={long}"), vec![("image", &b"x"[..])]),
            (
                String::new(),
                vec![("image", &b"x"[..]), ("format", long.as_bytes())],
            ),
        ] {
            let e = read(&query, &fields).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e:?}");
            assert!(e.message().contains("longer than 256 bytes"), "{e:?}");
        }
        let e = read("", &[("model", b"m")]).unwrap_err();
        assert_eq!(e.code(), "missing_field");
    }

    /// The first bytes of an MP4 (an `ftyp` box), then `len` more.
    fn mp4_like(len: usize) -> Vec<u8> {
        let mut v = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
        v.resize(v.len() + len, 7);
        v
    }

    fn read_with(
        fields: &[(&str, &[u8])],
        video: Option<&VideoUploads>,
    ) -> Result<Upload, ApiError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let limits = UploadLimits {
            image_bytes: 1000,
            video,
        };
        rt.block_on(read_upload(request("", fields), limits))
    }

    #[test]
    fn an_image_over_its_limit_is_413_as_it_arrives() {
        let e = read_with(&[("image", &[1u8; 1001])], None).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        );
        assert!(read_with(&[("image", &[1u8; 1000])], None).is_ok());
    }

    #[test]
    fn a_video_goes_to_its_own_file_within_its_limit() {
        let videos = VideoUploads::with_tools(None, 5000, None).unwrap();
        let bytes = mp4_like(3000);
        let u = read_with(&[("image", &bytes), ("format", b"webm")], Some(&videos)).unwrap();
        let Media::Video(file) = &u.media else {
            panic!("not a video: {:?}", u.media);
        };
        assert_eq!(
            std::fs::read(&file.path).unwrap(),
            bytes,
            "over the image limit, on disk"
        );
        assert_eq!(file.len, bytes.len() as u64);
        assert!(file.path.starts_with(videos.root()));
        assert_eq!(
            u.output_format().unwrap(),
            Format::Video(crate::media::Container::Webm)
        );
        let dir = file.dir.path().to_path_buf();
        drop(u);
        assert!(!dir.exists(), "the upload's folder goes with it");

        let e = read_with(&[("image", &mp4_like(6000))], Some(&videos)).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::PAYLOAD_TOO_LARGE, "video_too_large")
        );
        let left: Vec<_> = std::fs::read_dir(videos.root()).unwrap().collect();
        assert!(left.is_empty(), "a refused upload leaves nothing: {left:?}");
    }

    #[test]
    fn a_video_where_videos_cannot_be_read_is_415() {
        let e = read_with(&[("image", &mp4_like(10))], None).unwrap_err();
        assert_eq!(
            (e.status(), e.code()),
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "video_unsupported")
        );
        let no_ffmpeg =
            VideoUploads::with_tools(None, 5000, Some("ffmpeg is missing".into())).unwrap();
        let e = read_with(&[("image", &mp4_like(10))], Some(&no_ffmpeg)).unwrap_err();
        assert_eq!(e.code(), "video_unsupported");
        assert!(e.message().contains("ffmpeg is missing"), "{e:?}");
    }

    #[test]
    fn an_image_format_for_a_video_and_a_video_format_for_an_image_are_400() {
        let videos = VideoUploads::with_tools(None, 5000, None).unwrap();
        let u = read_with(
            &[("image", &mp4_like(10)), ("format", b"png")],
            Some(&videos),
        )
        .unwrap();
        assert_eq!(
            u.output_format().unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
        let u = read_with(&[("image", b"x"), ("format", b"mp4")], Some(&videos)).unwrap();
        assert_eq!(
            u.output_format().unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_header_claiming_too_many_pixels_is_refused_before_decoding() {
        let err = check_header(&png_header(100_000, 100_000), &Limits::default()).unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE, "{err:?}");
    }

    #[test]
    fn output_pixels_multiply_both_sides_and_saturate() {
        assert_eq!(output_pixels(4096, 4096, 8), 4096 * 8 * 4096 * 8);
        assert_eq!(output_pixels(u64::MAX, 2, 2), u64::MAX);
    }

    #[test]
    fn text_is_unsupported_and_empty_is_corrupt() {
        let text = check_header(b"hello, world", &Limits::default()).unwrap_err();
        assert_eq!(text.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let empty = check_header(b"", &Limits::default()).unwrap_err();
        assert_eq!(empty.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
