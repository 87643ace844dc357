//! An [`Image`] to the bytes of a PNG, JPEG or WebP file.
//!
//! Where it sits in the data path: last. The upscaled image is written in the format the
//! client asked for, with the input's metadata (see [`crate::metadata`]) unless
//! [`EncodeOptions::keep_metadata`] is off: the ICC profile, so colours look the same as in
//! the upload (PNG `iCCP`, JPEG `APP2 ICC_PROFILE`, WebP `ICCP`), the EXIF with its
//! orientation upright (PNG `eXIf`, JPEG `APP1 Exif`, WebP `EXIF`) and the XMP (PNG `iTXt
//! XML:com.adobe.xmp`, JPEG `APP1`, WebP `XMP `).
//!
//! What each format keeps:
//!
//! | format | depth | alpha | quality |
//! | --- | --- | --- | --- |
//! | PNG | 8 or 16 bit, as the image | kept | lossless; [`PngCompression`] trades speed for size |
//! | JPEG | 8 bit (16-bit rounded to nearest) | dropped: JPEG has none, the colour under transparent pixels shows | [`EncodeOptions::jpeg_quality`] |
//! | WebP | 8 bit (16-bit rounded to nearest) | kept | lossless by default; lossy (libwebp) with [`EncodeOptions::webp_quality`] |
//!
//! The codecs: PNG through the `png` crate (its `iTXt` chunks carry XMP, which the `image`
//! crate's PNG writer cannot); JPEG through `image`; lossless WebP through `image-webp`, whose
//! writer takes all three kinds of metadata; lossy WebP through `webp` (libwebp, the
//! reference encoder; no pure-Rust lossy WebP encoder exists), put into an extended
//! container with the metadata by [`crate::metadata::webp_container`].

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use ::image::codecs::jpeg::JpegEncoder;
use ::image::{ExtendedColorType, ImageEncoder};

use crate::error::ImageError;
use crate::image::{ColorKind, Image, Samples};
use crate::metadata;

/// A format [`encode`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    Png,
    Jpeg,
    Webp,
}

impl OutputFormat {
    /// The MIME type of the encoded bytes.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Png => "image/png",
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Webp => "image/webp",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Webp => "webp",
        }
    }

    /// The format named by a file extension (`"png"`, `".JPG"`, `"jpeg"`, `"webp"`), if any.
    pub fn from_extension(ext: &str) -> Option<Self> {
        let ext = ext.strip_prefix('.').unwrap_or(ext);
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(OutputFormat::Png),
            "jpg" | "jpeg" | "jpe" | "jfif" => Some(OutputFormat::Jpeg),
            "webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }

    /// The format a path's extension names, if any.
    pub fn from_path(path: &Path) -> Option<Self> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Self::from_extension)
    }

    /// The output format that keeps an input's format when it can be written, PNG otherwise
    /// (BMP, TIFF and GIF inputs).
    pub fn for_input(input: crate::InputFormat) -> Self {
        match input {
            crate::InputFormat::Jpeg => OutputFormat::Jpeg,
            crate::InputFormat::Webp => OutputFormat::Webp,
            _ => OutputFormat::Png,
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputFormat::Png => "png",
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Webp => "webp",
        })
    }
}

impl FromStr for OutputFormat {
    type Err = ImageError;

    /// `png`, `jpeg`, `jpg` or `webp`, in any case, with any ASCII white space around it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim_ascii().to_ascii_lowercase().as_str() {
            "png" => Ok(OutputFormat::Png),
            "jpeg" | "jpg" => Ok(OutputFormat::Jpeg),
            "webp" => Ok(OutputFormat::Webp),
            _ => Err(ImageError::unsupported(format!(
                "unknown output format {s:?}: choose png, jpeg or webp"
            ))),
        }
    }
}

/// PNG compression effort.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PngCompression {
    /// Quick, somewhat larger files: the default, since upscaled images are large and the
    /// time is spent while the client waits.
    #[default]
    Fast,
    /// zlib's default level.
    Default,
    /// Smallest files, slowest.
    Best,
}

/// Settings of [`encode`]; each applies to one format and is ignored by the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncodeOptions {
    /// JPEG quality, 1 to 100 (values outside are clamped). Default 90.
    pub jpeg_quality: u8,
    /// PNG compression effort. Default [`PngCompression::Fast`].
    pub png_compression: PngCompression,
    /// WebP: lossy at this quality (1 to 100, clamped), or lossless when `None` (the
    /// default).
    pub webp_quality: Option<u8>,
    /// Write the image's ICC profile, EXIF and XMP. Default on.
    pub keep_metadata: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            jpeg_quality: 90,
            png_compression: PngCompression::Fast,
            webp_quality: None,
            keep_metadata: true,
        }
    }
}

/// The largest side a JPEG can hold (its header stores 16-bit sizes).
const JPEG_MAX_SIDE: usize = 65535;
/// The largest side a WebP can hold (14-bit sizes).
const WEBP_MAX_SIDE: usize = 16384;

/// Encodes `image` in `format`, embedding its ICC profile. See the module documentation for
/// what each format keeps.
pub fn encode(
    image: &Image,
    format: OutputFormat,
    opts: &EncodeOptions,
) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    encode_to(image, format, opts, &mut out)?;
    Ok(out)
}

/// [`encode`] into any writer, e.g. a buffered file, so a large result is never held twice
/// in memory as pixels and as encoded bytes.
pub fn encode_to(
    image: &Image,
    format: OutputFormat,
    opts: &EncodeOptions,
    out: &mut impl Write,
) -> Result<(), ImageError> {
    image.validate()?;
    if image.width == 0 || image.height == 0 {
        return Err(ImageError::internal(format!(
            "cannot encode an image of {}x{} pixels",
            image.width, image.height
        )));
    }
    let max_side = match format {
        OutputFormat::Png => u32::MAX as usize,
        OutputFormat::Jpeg => JPEG_MAX_SIDE,
        OutputFormat::Webp => WEBP_MAX_SIDE,
    };
    if image.width > max_side || image.height > max_side {
        return Err(ImageError::too_large(format!(
            "the result is {}x{} pixels; {} holds at most {max_side} pixels per side: choose PNG",
            image.width,
            image.height,
            format.to_string().to_uppercase()
        )));
    }
    let (w, h) = (image.width as u32, image.height as u32);
    let meta = Meta::of(image, opts);
    let failed = |e: String| ImageError::internal(format!("{format} encoding failed: {e}"));
    match format {
        OutputFormat::Png => write_png(image, opts, &meta, out).map_err(|e| failed(e.to_string())),
        OutputFormat::Jpeg => {
            let quality = opts.jpeg_quality.clamp(1, 100);
            let kind = match image.color_kind {
                ColorKind::Gray => ExtendedColorType::L8,
                ColorKind::Rgb => ExtendedColorType::Rgb8,
            };
            let mut bytes = Vec::new();
            let mut encoder = JpegEncoder::new_with_quality(&mut bytes, quality);
            if let Some(icc) = meta.icc {
                encoder
                    .set_icc_profile(icc.to_vec())
                    .map_err(|e| failed(e.to_string()))?;
            }
            if let Some(exif) = meta.exif {
                encoder
                    .set_exif_metadata(exif.to_vec())
                    .map_err(|e| failed(e.to_string()))?;
            }
            encoder
                .write_image(&pixels_u8(image, false), w, h, kind)
                .map_err(|e| failed(e.to_string()))?;
            // An XMP packet too large for one segment is left out rather than split.
            if let Some(with) = meta.xmp.and_then(|x| metadata::jpeg_with_xmp(&bytes, x)) {
                bytes = with;
            }
            out.write_all(&bytes).map_err(|e| failed(e.to_string()))
        }
        OutputFormat::Webp => {
            let rgb = match image.color_kind {
                ColorKind::Rgb => Cow::Borrowed(image),
                ColorKind::Gray => Cow::Owned(image.gray_to_rgb()),
            };
            let pixels = pixels_u8(&rgb, true);
            let bytes = match opts.webp_quality {
                None => {
                    let mut bytes = Vec::new();
                    let mut encoder = image_webp::WebPEncoder::new(&mut bytes);
                    if let Some(icc) = meta.icc {
                        encoder.set_icc_profile(icc.to_vec());
                    }
                    if let Some(exif) = meta.exif {
                        encoder.set_exif_metadata(exif.to_vec());
                    }
                    if let Some(xmp) = meta.xmp {
                        encoder.set_xmp_metadata(xmp.to_vec());
                    }
                    let kind = if rgb.has_alpha() {
                        image_webp::ColorType::Rgba8
                    } else {
                        image_webp::ColorType::Rgb8
                    };
                    encoder
                        .encode(&pixels, w, h, kind)
                        .map_err(|e| failed(e.to_string()))?;
                    bytes
                }
                Some(q) => {
                    let q = f32::from(q.clamp(1, 100));
                    let encoder = if rgb.has_alpha() {
                        webp::Encoder::from_rgba(&pixels, w, h)
                    } else {
                        webp::Encoder::from_rgb(&pixels, w, h)
                    };
                    let lossy = encoder.encode(q).to_vec();
                    if meta.is_empty() {
                        lossy
                    } else {
                        let with = metadata::WebpMetadata {
                            icc: meta.icc,
                            exif: meta.exif,
                            xmp: meta.xmp,
                        };
                        metadata::webp_container(&lossy, w, h, with).ok_or_else(|| {
                            failed("libwebp wrote a file that is not a still WebP".into())
                        })?
                    }
                }
            };
            out.write_all(&bytes).map_err(|e| failed(e.to_string()))
        }
    }
}

/// The metadata an encoder writes: the image's, unless the options strip it.
struct Meta<'a> {
    icc: Option<&'a [u8]>,
    exif: Option<&'a [u8]>,
    xmp: Option<&'a [u8]>,
}

impl<'a> Meta<'a> {
    fn of(image: &'a Image, opts: &EncodeOptions) -> Meta<'a> {
        let keep =
            |v: &'a Option<Vec<u8>>| v.as_deref().filter(|b| opts.keep_metadata && !b.is_empty());
        Meta {
            icc: keep(&image.icc_profile),
            exif: keep(&image.exif),
            xmp: keep(&image.xmp),
        }
    }

    fn is_empty(&self) -> bool {
        self.icc.is_none() && self.exif.is_none() && self.xmp.is_none()
    }
}

/// The `iTXt` keyword under which PNG files carry XMP.
const PNG_XMP_KEYWORD: &str = "XML:com.adobe.xmp";

fn write_png<W: Write>(
    image: &Image,
    opts: &EncodeOptions,
    meta: &Meta<'_>,
    out: &mut W,
) -> Result<(), png::EncodingError> {
    let mut info = png::Info::with_size(image.width as u32, image.height as u32);
    info.icc_profile = meta.icc.map(Cow::Borrowed);
    info.exif_metadata = meta.exif.map(Cow::Borrowed);
    let mut encoder = png::Encoder::with_info(out, info)?;
    if let Some(xmp) = meta.xmp {
        // XMP is UTF-8 XML; a packet that is not is left out rather than mangled.
        if let Ok(text) = std::str::from_utf8(xmp) {
            encoder.add_itxt_chunk(PNG_XMP_KEYWORD.into(), text.into())?;
        }
    }
    encoder.set_color(match (image.color_kind, image.has_alpha()) {
        (ColorKind::Gray, false) => png::ColorType::Grayscale,
        (ColorKind::Gray, true) => png::ColorType::GrayscaleAlpha,
        (ColorKind::Rgb, false) => png::ColorType::Rgb,
        (ColorKind::Rgb, true) => png::ColorType::Rgba,
    });
    encoder.set_compression(match opts.png_compression {
        PngCompression::Fast => png::Compression::Fast,
        PngCompression::Default => png::Compression::Balanced,
        PngCompression::Best => png::Compression::High,
    });
    encoder.set_filter(png::Filter::Adaptive);
    if image.is_16bit() {
        encoder.set_depth(png::BitDepth::Sixteen);
        let bytes: Vec<u8> = image
            .interleaved_u16()
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        stream_png(encoder, &bytes)
    } else {
        encoder.set_depth(png::BitDepth::Eight);
        stream_png(encoder, &pixels_u8(image, true))
    }
}

/// Writes the image data streamed: the compressed data goes out chunk by chunk as rows are
/// filtered, instead of being gathered whole first (as `write_image_data` does), which for a
/// 16000×12000 result would hold a few hundred MB more at the very end of a job.
fn stream_png<W: Write>(
    encoder: png::Encoder<'_, W>,
    data: &[u8],
) -> Result<(), png::EncodingError> {
    let mut writer = encoder.write_header()?;
    let mut stream = writer.stream_writer()?;
    stream.write_all(data)?;
    stream.finish()?;
    writer.finish()
}

/// 8-bit samples ready for an encoder: the colour buffer itself when nothing needs
/// interleaving or narrowing (the common case, which then costs no copy of a possibly
/// very large result), else colour and (if `with_alpha`) alpha interleaved.
fn pixels_u8(image: &Image, with_alpha: bool) -> Cow<'_, [u8]> {
    match (&image.color, with_alpha && image.alpha.is_some()) {
        (Samples::U8(v), false) => Cow::Borrowed(v),
        (_, false) => Cow::Owned(image.color.to_u8()),
        (_, true) => Cow::Owned(image.interleaved_u8()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_extensions() {
        for (s, f) in [
            ("png", OutputFormat::Png),
            ("PNG", OutputFormat::Png),
            ("jpeg", OutputFormat::Jpeg),
            ("jpg", OutputFormat::Jpeg),
            (" Jpg ", OutputFormat::Jpeg),
            ("webp", OutputFormat::Webp),
        ] {
            assert_eq!(s.parse::<OutputFormat>().ok(), Some(f), "parsing {s:?}");
        }
        let e = "gif".parse::<OutputFormat>().err();
        assert_eq!(
            e.map(|e| e.to_string()).as_deref(),
            Some("unknown output format \"gif\": choose png, jpeg or webp")
        );
        assert_eq!(
            OutputFormat::from_extension(".JPEG"),
            Some(OutputFormat::Jpeg)
        );
        assert_eq!(OutputFormat::from_extension("tiff"), None);
        assert_eq!(
            OutputFormat::from_path(Path::new("/out/x2/photo.WebP")),
            Some(OutputFormat::Webp)
        );
        assert_eq!(OutputFormat::from_path(Path::new("noext")), None);
    }

    #[test]
    fn content_types_and_extensions_agree() {
        for f in [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp] {
            assert_eq!(OutputFormat::from_extension(f.extension()), Some(f));
            assert_eq!(f.to_string().parse::<OutputFormat>().ok(), Some(f));
            assert!(f.content_type().starts_with("image/"));
        }
        assert_eq!(OutputFormat::Jpeg.content_type(), "image/jpeg");
        assert_eq!(OutputFormat::Webp.extension(), "webp");
    }

    #[test]
    fn inputs_map_to_a_writable_format() {
        use crate::InputFormat as I;
        assert_eq!(OutputFormat::for_input(I::Jpeg), OutputFormat::Jpeg);
        assert_eq!(OutputFormat::for_input(I::Webp), OutputFormat::Webp);
        for i in [I::Png, I::Bmp, I::Tiff, I::Gif] {
            assert_eq!(OutputFormat::for_input(i), OutputFormat::Png, "{i}");
        }
    }
}
