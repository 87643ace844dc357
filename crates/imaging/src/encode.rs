//! An [`Image`] to the bytes of a PNG, JPEG or WebP file.
//!
//! Where it sits in the data path: last. The upscaled image is written in the format the
//! client asked for, with the input's ICC profile embedded so colours look the same as in the
//! upload (PNG `iCCP`, JPEG `APP2 ICC_PROFILE`, WebP `ICCP`).
//!
//! What each format keeps:
//!
//! | format | depth | alpha | quality |
//! | --- | --- | --- | --- |
//! | PNG | 8 or 16 bit, as the image | kept | lossless; [`PngCompression`] trades speed for size |
//! | JPEG | 8 bit (16-bit rounded to nearest) | dropped: JPEG has none, the colour under transparent pixels shows | [`EncodeOptions::jpeg_quality`] |
//! | WebP | 8 bit (16-bit rounded to nearest) | kept | always **lossless**: the encoder has no lossy mode, so `jpeg_quality` does not apply |

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use ::image::codecs::jpeg::JpegEncoder;
use ::image::codecs::png::{CompressionType, FilterType, PngEncoder};
use ::image::codecs::webp::WebPEncoder;
use ::image::{ExtendedColorType, ImageEncoder};

use crate::error::ImageError;
use crate::image::{ColorKind, Image, Samples};

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
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            jpeg_quality: 90,
            png_compression: PngCompression::Fast,
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
    let result = match format {
        OutputFormat::Png => {
            let compression = match opts.png_compression {
                PngCompression::Fast => CompressionType::Fast,
                PngCompression::Default => CompressionType::Default,
                PngCompression::Best => CompressionType::Best,
            };
            let mut encoder = PngEncoder::new_with_quality(out, compression, FilterType::Adaptive);
            set_profile(&mut encoder, image)?;
            if image.is_16bit() {
                let bytes: Vec<u8> = image
                    .interleaved_u16()
                    .iter()
                    .flat_map(|v| v.to_ne_bytes())
                    .collect();
                encoder.write_image(&bytes, w, h, color_type(image, true))
            } else {
                encoder.write_image(&pixels_u8(image, true), w, h, color_type(image, false))
            }
        }
        OutputFormat::Jpeg => {
            let quality = opts.jpeg_quality.clamp(1, 100);
            let mut encoder = JpegEncoder::new_with_quality(out, quality);
            set_profile(&mut encoder, image)?;
            let kind = match image.color_kind {
                ColorKind::Gray => ExtendedColorType::L8,
                ColorKind::Rgb => ExtendedColorType::Rgb8,
            };
            encoder.write_image(&pixels_u8(image, false), w, h, kind)
        }
        OutputFormat::Webp => {
            let mut encoder = WebPEncoder::new_lossless(out);
            set_profile(&mut encoder, image)?;
            encoder.write_image(&pixels_u8(image, true), w, h, color_type(image, false))
        }
    };
    result.map_err(|e| ImageError::internal(format!("{format} encoding failed: {e}")))
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

fn set_profile(encoder: &mut impl ImageEncoder, image: &Image) -> Result<(), ImageError> {
    if let Some(profile) = image.icc_profile.as_ref().filter(|p| !p.is_empty()) {
        encoder
            .set_icc_profile(profile.clone())
            .map_err(|e| ImageError::internal(format!("cannot embed the ICC profile: {e}")))?;
    }
    Ok(())
}

fn color_type(image: &Image, sixteen: bool) -> ExtendedColorType {
    use ExtendedColorType::*;
    match (image.color_kind, image.has_alpha(), sixteen) {
        (ColorKind::Gray, false, false) => L8,
        (ColorKind::Gray, true, false) => La8,
        (ColorKind::Rgb, false, false) => Rgb8,
        (ColorKind::Rgb, true, false) => Rgba8,
        (ColorKind::Gray, false, true) => L16,
        (ColorKind::Gray, true, true) => La16,
        (ColorKind::Rgb, false, true) => Rgb16,
        (ColorKind::Rgb, true, true) => Rgba16,
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
