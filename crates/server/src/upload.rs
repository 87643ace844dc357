//! The upload extractor: a multipart request into the image bytes and the job's options.
//!
//! Where it sits: first in `POST /enhance` and `POST /v1/jobs`. It reads the multipart field
//! `image` and the optional `model`, `format`, `outscale`, `width` and `height` (as fields or
//! query parameters; a field wins), within the body-size limit of the `DefaultBodyLimit` layer. The uploaded file name
//! is never used for anything, so a hostile one (`../../etc/passwd`) is harmless.
//!
//! [`check_header`] then reads the header only: the format must be one we decode (415
//! otherwise), the header must be readable (422) and the size it claims within the pixel
//! limit (413), and [`check_request`] what the result would need: its pixel count and an
//! estimate of its memory (413 beyond either limit), so those uploads are refused before
//! they take a place in the queue. Full decoding happens on a worker.

use axum::body::Bytes;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::StatusCode;
use serde::Deserialize;
use superres_imaging::{Header, Limits, OutputFormat};
use superres_upscale::{Model, Options, OutputSize};

use crate::error::ApiError;
use crate::queue::RequestLimits;
use crate::state::AppState;

/// An uploaded image and what the client asked for.
#[derive(Debug)]
pub struct Upload {
    pub image: Bytes,
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
    /// `png` (the default), `jpeg` (or `jpg`) or `webp`, in any case.
    #[param(
        pattern = r"^[ \t\n\f\r]*([Pp][Nn][Gg]|[Jj][Pp][Ee]?[Gg]|[Ww][Ee][Bb][Pp])?[ \t\n\f\r]*$"
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
    /// The image: PNG, JPEG, WebP, BMP, TIFF or GIF (its first frame).
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// The model to run; the server's default when absent.
    #[schema(max_length = 256)]
    model: Option<String>,
    /// `png` (the default), `jpeg` (or `jpg`) or `webp`, in any case.
    #[schema(
        pattern = r"^[ \t\n\f\r]*([Pp][Nn][Gg]|[Jj][Pp][Ee]?[Gg]|[Ww][Ee][Bb][Pp])?[ \t\n\f\r]*$"
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

impl FromRequest<AppState> for Upload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        read_upload(req, state.http.max_body_bytes).await
    }
}

/// Reads an upload from a request: the multipart body's fields and the query string. Any
/// bytes give an [`Upload`] or a 4xx error: 400 for a malformed body or query, a missing
/// `image` field or an overlong text field, 413 (naming `limit_bytes`) when the body
/// exceeds the body limit the router set. It needs no server, so the fuzz target
/// `multipart_upload` drives it directly.
pub async fn read_upload(req: Request, limit_bytes: usize) -> Result<Upload, ApiError> {
    let field_error = |e: MultipartError| multipart_error(e, limit_bytes);
    let Query(query) = Query::<UploadQuery>::try_from_uri(req.uri())
        .map_err(|e| ApiError::bad_field(format!("bad query string: {e}")))?;
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(multipart_rejection)?;
    let mut upload = Upload {
        image: Bytes::new(),
        model: None,
        format: None,
        size: SizeOptions::default(),
    };
    let mut has_image = false;
    while let Some(field) = multipart.next_field().await.map_err(field_error)? {
        match field.name() {
            Some("image") => {
                upload.image = field.bytes().await.map_err(field_error)?;
                has_image = true;
            }
            Some(name @ ("model" | "format" | "outscale" | "width" | "height")) => {
                let name = name.to_string();
                let text = field.text().await.map_err(field_error)?;
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

    /// The output format asked for; PNG when none.
    pub fn output_format(&self) -> Result<OutputFormat, ApiError> {
        match &self.format {
            None => Ok(OutputFormat::Png),
            Some(f) => f
                .parse::<OutputFormat>()
                .map_err(|e| ApiError::bad_field(e.message().to_string())),
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

/// Refuses (413) an upload whose result would exceed `limits`: first its pixel count, then
/// the memory it would need (the output image plus `model`'s peak for the run size
/// `options` give). Cheap: the run's peak comes from the model's buffer plan, not a run.
pub fn check_request(
    header: &Header,
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
        rt.block_on(read_upload(request(query, fields), 1000))
    }

    #[test]
    fn fields_win_over_the_query_and_options_are_trimmed() {
        let u = read(
            "model=q&format=webp",
            &[("image", b"bytes"), ("model", b" m\t"), ("other", b"x")],
        )
        .unwrap();
        assert_eq!(&u.image[..], b"bytes");
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
