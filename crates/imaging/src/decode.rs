//! Uploaded bytes to an [`Image`], safely.
//!
//! Where it sits in the data path: first. Whatever a client sends reaches this module before
//! anything else touches it, so it is written for hostile input:
//!
//! - The format is chosen from the content (magic bytes), never from a file name or a
//!   declared content type, and only the six accepted formats reach a decoder. Well-known
//!   formats that are not accepted (SVG, PDF, HEIC, AVIF, …) are named in the error.
//! - The dimensions are read from the header and checked against [`Limits`] before any
//!   pixel memory is allocated, so a 20-byte file claiming 100000×100000 pixels fails at once
//!   with [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge). The decoders' own allocations
//!   are capped by [`Limits::max_alloc_bytes`].
//! - Every failure is an [`ImageError`]; nothing here panics on any input.
//!
//! What the decoded image looks like: EXIF orientation is applied (the pixels are turned
//! upright, and the EXIF kept says orientation 1), the ICC profile, EXIF and XMP are kept
//! for the encoder (see [`crate::metadata`]),
//! alpha is split into its own plane and dropped when it is fully opaque (it would only be
//! resampled and written for nothing), and samples are 8- or 16-bit (floating-point TIFFs
//! are converted to 16-bit, clamped to `[0, 1]`).

use std::io::Cursor;

use ::image::{
    ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader,
    error::ImageError as CodecError,
};

use crate::error::ImageError;
use crate::image::{ColorKind, Image, Samples};

/// The formats this crate accepts, in the words used in error messages.
pub const ACCEPTED_FORMATS: &str = "PNG, JPEG, WebP, BMP, TIFF, GIF";

/// Bounds on what [`decode`] accepts, checked against the header before pixels are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Widest accepted image, in pixels. Default 16384.
    pub max_width: u32,
    /// Tallest accepted image, in pixels. Default 16384.
    pub max_height: u32,
    /// Most pixels (`width * height`) accepted. Default 100 000 000 (100 MP), so a square
    /// image at the side limit does not pass on its own.
    pub max_pixels: u64,
    /// Most bytes a decoder may allocate, its output buffer included. Default 1 GiB, which
    /// holds a 100 MP image at 16-bit RGBA (800 MB) with room for the decoder's own buffers.
    pub max_alloc_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_width: 16384,
            max_height: 16384,
            max_pixels: 100_000_000,
            max_alloc_bytes: 1 << 30,
        }
    }
}

impl Limits {
    /// Checks a width and height from a header against these limits.
    pub fn check_dimensions(&self, width: u32, height: u32) -> Result<(), ImageError> {
        if width > self.max_width || height > self.max_height {
            return Err(ImageError::too_large(format!(
                "the image is {width}x{height} pixels; the largest accepted is {}x{}",
                self.max_width, self.max_height
            )));
        }
        let pixels = width as u64 * height as u64;
        if pixels > self.max_pixels {
            return Err(ImageError::too_large(format!(
                "the image is {width}x{height} pixels ({}); the most accepted is {}",
                megapixels(pixels),
                megapixels(self.max_pixels)
            )));
        }
        Ok(())
    }
}

/// A pixel count in megapixels, or plainly when under a tenth of one.
fn megapixels(pixels: u64) -> String {
    if pixels >= 100_000 {
        format!("{:.1} megapixels", pixels as f64 / 1e6)
    } else {
        format!("{pixels} pixels")
    }
}

/// A byte count in the largest binary unit that keeps it at 1 or more.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    format!("{value:.1} {unit}")
}

/// An accepted input format, as recognised from the content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputFormat {
    Png,
    Jpeg,
    Webp,
    Bmp,
    Tiff,
    Gif,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Png => "PNG",
            InputFormat::Jpeg => "JPEG",
            InputFormat::Webp => "WebP",
            InputFormat::Bmp => "BMP",
            InputFormat::Tiff => "TIFF",
            InputFormat::Gif => "GIF",
        }
    }

    fn codec(self) -> ImageFormat {
        match self {
            InputFormat::Png => ImageFormat::Png,
            InputFormat::Jpeg => ImageFormat::Jpeg,
            InputFormat::Webp => ImageFormat::WebP,
            InputFormat::Bmp => ImageFormat::Bmp,
            InputFormat::Tiff => ImageFormat::Tiff,
            InputFormat::Gif => ImageFormat::Gif,
        }
    }
}

impl std::fmt::Display for InputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The accepted format the bytes are in, from their magic bytes alone.
///
/// Empty input is [`Corrupt`](crate::ErrorKind::Corrupt); anything else that is not one of
/// the accepted formats is [`Unsupported`](crate::ErrorKind::Unsupported), naming the format
/// when it is a well-known one.
pub fn sniff_format(bytes: &[u8]) -> Result<InputFormat, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::corrupt(
            "the upload is empty (0 bytes): send the image file's contents",
        ));
    }
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Ok(InputFormat::Png);
    }
    if starts(b"\xFF\xD8\xFF") {
        return Ok(InputFormat::Jpeg);
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Ok(InputFormat::Webp);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Ok(InputFormat::Gif);
    }
    if starts(b"II*\0") || starts(b"MM\0*") || starts(b"II+\0") || starts(b"MM\0+") {
        return Ok(InputFormat::Tiff);
    }
    if starts(b"BM") && bytes.len() >= 14 {
        return Ok(InputFormat::Bmp);
    }
    let what = known_unsupported(bytes);
    Err(ImageError::unsupported(match what {
        Some(name) => {
            format!("{name} is not supported: upload a raster image ({ACCEPTED_FORMATS})")
        }
        None if looks_like_text(bytes) => {
            format!("the upload is text, not an image: upload a raster image ({ACCEPTED_FORMATS})")
        }
        None => format!(
            "unrecognised file format (first bytes {}): upload a raster image ({ACCEPTED_FORMATS})",
            hex_prefix(bytes)
        ),
    }))
}

/// The name of a well-known format that is not accepted, to say so in the error.
fn known_unsupported(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"%PDF-") {
        return Some("PDF");
    }
    if starts(b"%!PS") || starts(b"\xC5\xD0\xD3\xC6") {
        return Some("PostScript");
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return Some(match &bytes[8..12] {
            b"avif" | b"avis" => "AVIF",
            b"heic" | b"heix" | b"hevc" | b"hevx" | b"heim" | b"heis" | b"mif1" | b"msf1" => {
                "HEIC/HEIF"
            }
            b"crx " => "Canon RAW",
            _ => "A video or other ISO media file",
        });
    }
    if starts(b"\xFF\x0A") || starts(b"\0\0\0\x0CJXL \r\n\x87\n") {
        return Some("JPEG XL");
    }
    if starts(b"\0\0\0\x0CjP  \r\n\x87\n") || starts(b"\xFF\x4F\xFF\x51") {
        return Some("JPEG 2000");
    }
    if starts(b"8BPS") {
        return Some("Photoshop PSD");
    }
    if starts(b"\0\0\x01\0") || starts(b"\0\0\x02\0") {
        return Some("ICO/CUR");
    }
    if starts(b"v/1\x01") {
        return Some("OpenEXR");
    }
    if starts(b"#?RADIANCE") || starts(b"#?RGBE") {
        return Some("Radiance HDR");
    }
    if starts(b"qoif") {
        return Some("QOI");
    }
    if starts(b"DDS ") {
        return Some("DDS");
    }
    if bytes.len() >= 3
        && bytes[0] == b'P'
        && (b'1'..=b'7').contains(&bytes[1])
        && bytes[2].is_ascii_whitespace()
    {
        return Some("PNM (PBM/PGM/PPM)");
    }
    if starts(b"\x1F\x8B") {
        return Some("A gzip-compressed file (such as SVGZ)");
    }
    if starts(b"PK\x03\x04") {
        return Some("A ZIP archive");
    }
    if is_svg(bytes) {
        return Some("SVG");
    }
    let text = text_start(bytes);
    if starts_with_ignore_case(text, b"<!doctype html") || starts_with_ignore_case(text, b"<html") {
        return Some("HTML");
    }
    None
}

/// The bytes after a UTF-8 byte-order mark and leading whitespace.
fn text_start(bytes: &[u8]) -> &[u8] {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let skip = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    &bytes[skip..]
}

fn starts_with_ignore_case(bytes: &[u8], prefix: &[u8]) -> bool {
    bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// An XML document whose first few kilobytes open an `<svg` element.
fn is_svg(bytes: &[u8]) -> bool {
    let text = text_start(bytes);
    if !text.starts_with(b"<") {
        return false;
    }
    let head = &text[..text.len().min(4096)];
    head.windows(4).any(|w| w.eq_ignore_ascii_case(b"<svg"))
}

/// Printable UTF-8 (with ordinary whitespace) throughout the first 512 bytes.
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    // A multi-byte character may be cut at the end of the window.
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) if e.error_len().is_none() => {
            // The cut is at the end: the prefix up to it is valid.
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !valid.is_empty()
        && valid
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Decodes an uploaded file into an [`Image`].
///
/// The format is recognised from the content ([`sniff_format`]); GIF, animated WebP and
/// multi-page TIFF give their first frame. See the module documentation for what is checked
/// before decoding and how the result is laid out.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Image, ImageError> {
    let format = sniff_format(bytes)?;
    decode_as(bytes, format, limits)
}

/// The format and size an upload's header declares, checked against `limits`, without
/// decoding pixels. Works on the first bytes of a PNG (its size is in the first chunk); for
/// the other formats the whole header must be present.
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<(InputFormat, u32, u32), ImageError> {
    let format = sniff_format(bytes)?;
    let (width, height) = match png_ihdr_size(bytes) {
        Some(size) if format == InputFormat::Png => size,
        _ => header_decoder(bytes, format, limits)?.dimensions(),
    };
    check_size(format, width, height, limits)?;
    Ok((format, width, height))
}

/// What an upload's header declares: its format, size and the layout of the [`Image`]
/// [`decode`] would make of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub format: InputFormat,
    pub width: u32,
    pub height: u32,
    /// Colour channels of the decoded image: 1 (grey) or 3 (RGB), alpha not counted.
    pub color_channels: usize,
    /// Whether the decoded image may carry an alpha plane (it is dropped when opaque).
    pub has_alpha: bool,
    /// Bytes per decoded sample: 1 (8-bit) or 2 (16-bit; also floating point input).
    pub bytes_per_sample: usize,
}

impl Header {
    /// Samples per pixel of the decoded image, alpha included.
    pub fn channels(&self) -> usize {
        self.color_channels + usize::from(self.has_alpha)
    }
}

/// [`probe`], with the sample layout the header declares. The size is checked against
/// `limits` first; a PNG whose header the codec cannot read past its first chunk gets the
/// layout its `IHDR` declares (a palette counted as having alpha).
pub fn probe_header(bytes: &[u8], limits: &Limits) -> Result<Header, ImageError> {
    let (format, width, height) = probe(bytes, limits)?;
    let header = |(color_channels, has_alpha, bytes_per_sample)| Header {
        format,
        width,
        height,
        color_channels,
        has_alpha,
        bytes_per_sample,
    };
    match header_decoder(bytes, format, limits) {
        Ok(decoder) => Ok(header(layout(decoder.color_type()))),
        Err(e) => match png_ihdr_layout(bytes) {
            Some(l) if format == InputFormat::Png => Ok(header(l)),
            _ => Err(e),
        },
    }
}

/// `(colour channels, alpha, bytes per sample)` of the [`Image`] a codec's colour type
/// decodes into (see `from_dynamic`).
fn layout(color: ColorType) -> (usize, bool, usize) {
    let wide = usize::from(color.bytes_per_pixel() > color.channel_count());
    let gray = matches!(
        color,
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    );
    // Every layout but these keeps (or, converted to RGBA, gains) an alpha plane.
    let alpha = !matches!(
        color,
        ColorType::L8 | ColorType::L16 | ColorType::Rgb8 | ColorType::Rgb16 | ColorType::Rgb32F
    );
    (if gray { 1 } else { 3 }, alpha, 1 + wide)
}

/// The layout a PNG's `IHDR` declares: bit depth and colour type.
fn png_ihdr_layout(bytes: &[u8]) -> Option<(usize, bool, usize)> {
    let ihdr = bytes.get(12..26).filter(|h| h.starts_with(b"IHDR"))?;
    let wide = usize::from(ihdr[12] == 16);
    match ihdr[13] {
        0 => Some((1, false, 1 + wide)),
        4 => Some((1, true, 1 + wide)),
        2 => Some((3, false, 1 + wide)),
        3 | 6 => Some((3, true, 1 + wide)),
        _ => None,
    }
}

/// Width and height from a PNG's IHDR chunk, which the signature is followed by.
fn png_ihdr_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let ihdr = bytes.get(12..24).filter(|h| h.starts_with(b"IHDR"))?;
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&ihdr[4..8]), be(&ihdr[8..12])))
}

/// A decoder that has read the header only. The side and pixel limits are checked by the
/// caller, from the header, to name the actual size in the error; the decoders only get the
/// allocation cap.
fn header_decoder<'a>(
    bytes: &'a [u8],
    format: InputFormat,
    limits: &Limits,
) -> Result<impl ImageDecoder + 'a, ImageError> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.codec());
    let mut codec_limits = ::image::Limits::default();
    codec_limits.max_image_width = None;
    codec_limits.max_image_height = None;
    codec_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(codec_limits);
    reader
        .into_decoder()
        .map_err(|e| from_codec(e, format.name(), limits))
}

fn check_size(
    format: InputFormat,
    width: u32,
    height: u32,
    limits: &Limits,
) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::corrupt(format!(
            "the {format} header gives the image a size of {width}x{height} pixels: it has no pixels"
        )));
    }
    limits.check_dimensions(width, height)
}

fn decode_as(bytes: &[u8], format: InputFormat, limits: &Limits) -> Result<Image, ImageError> {
    let name = format.name();
    // The PNG size is checked before the codec reads further, which it would do for chunks
    // that come before the pixel data.
    if let (InputFormat::Png, Some((w, h))) = (format, png_ihdr_size(bytes)) {
        check_size(format, w, h, limits)?;
    }
    let mut decoder = header_decoder(bytes, format, limits)?;
    let (width, height) = decoder.dimensions();
    check_size(format, width, height, limits)?;
    let needed = decoder.total_bytes();
    if needed > limits.max_alloc_bytes {
        return Err(ImageError::too_large(format!(
            "decoding this {width}x{height} image needs {}, more than the limit of {}",
            human_bytes(needed),
            human_bytes(limits.max_alloc_bytes)
        )));
    }

    let icc_profile = decoder
        .icc_profile()
        .map_err(|e| from_codec(e, name, limits))?
        .filter(|p| !p.is_empty());
    // Damaged metadata only loses the metadata, never the image.
    let exif = decoder
        .exif_metadata()
        .ok()
        .flatten()
        .and_then(|e| crate::metadata::upright_exif(&e));
    let xmp = decoder
        .xmp_metadata()
        .ok()
        .flatten()
        .filter(|x| !x.is_empty());
    let orientation = decoder
        .orientation()
        .unwrap_or(::image::metadata::Orientation::NoTransforms);

    let mut pixels =
        DynamicImage::from_decoder(decoder).map_err(|e| from_codec(e, name, limits))?;
    pixels.apply_orientation(orientation);

    let mut image = from_dynamic(pixels)?;
    image.icc_profile = icc_profile;
    image.exif = exif;
    image.xmp = xmp;
    image.drop_opaque_alpha();
    Ok(image)
}

/// Splits a decoded image into colour and alpha planes at 8 or 16 bits.
fn from_dynamic(pixels: DynamicImage) -> Result<Image, ImageError> {
    let (w, h) = (pixels.width() as usize, pixels.height() as usize);
    let with_alpha_u8 = |data: Vec<u8>, kind: ColorKind| {
        let (color, alpha) = crate::image::deinterleave(&data, kind.channels());
        Image::new(w, h, kind, Samples::U8(color), Some(Samples::U8(alpha)))
    };
    let with_alpha_u16 = |data: Vec<u16>, kind: ColorKind| {
        let (color, alpha) = crate::image::deinterleave(&data, kind.channels());
        Image::new(w, h, kind, Samples::U16(color), Some(Samples::U16(alpha)))
    };
    match pixels {
        DynamicImage::ImageLuma8(b) => {
            Image::new(w, h, ColorKind::Gray, Samples::U8(b.into_raw()), None)
        }
        DynamicImage::ImageLumaA8(b) => with_alpha_u8(b.into_raw(), ColorKind::Gray),
        DynamicImage::ImageRgb8(b) => {
            Image::new(w, h, ColorKind::Rgb, Samples::U8(b.into_raw()), None)
        }
        DynamicImage::ImageRgba8(b) => with_alpha_u8(b.into_raw(), ColorKind::Rgb),
        DynamicImage::ImageLuma16(b) => {
            Image::new(w, h, ColorKind::Gray, Samples::U16(b.into_raw()), None)
        }
        DynamicImage::ImageLumaA16(b) => with_alpha_u16(b.into_raw(), ColorKind::Gray),
        DynamicImage::ImageRgb16(b) => {
            Image::new(w, h, ColorKind::Rgb, Samples::U16(b.into_raw()), None)
        }
        DynamicImage::ImageRgba16(b) => with_alpha_u16(b.into_raw(), ColorKind::Rgb),
        other => match other.color() {
            // Floating point (and any layout added later): 16-bit, alpha kept if present.
            ColorType::Rgb32F => Image::new(
                w,
                h,
                ColorKind::Rgb,
                Samples::U16(other.to_rgb16().into_raw()),
                None,
            ),
            _ => with_alpha_u16(other.to_rgba16().into_raw(), ColorKind::Rgb),
        },
    }
}

/// A decoder's error in the words of this crate.
fn from_codec(e: CodecError, format: &str, limits: &Limits) -> ImageError {
    // The codec's own wording, without the "Format error decoding X:" wrapper.
    let detail = |e: &dyn std::error::Error| match e.source() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    };
    match e {
        CodecError::Limits(d) => ImageError::too_large(format!(
            "decoding this {format} image needs more memory than the limit of {} ({d})",
            human_bytes(limits.max_alloc_bytes)
        )),
        CodecError::Unsupported(d) => ImageError::unsupported(format!(
            "this {format} file uses a feature that is not supported: {d}"
        )),
        CodecError::IoError(d) if d.kind() == std::io::ErrorKind::UnexpectedEof => {
            truncated(format)
        }
        CodecError::IoError(d) => {
            ImageError::corrupt(format!("the {format} data could not be read: {d}"))
        }
        CodecError::Decoding(d) => {
            let text = detail(&d);
            let lower = text.to_ascii_lowercase();
            if [
                "not enough bytes",
                "no more bytes",
                "unexpected eof",
                "unexpected end",
            ]
            .iter()
            .any(|m| lower.contains(m))
            {
                truncated(format)
            } else {
                ImageError::corrupt(format!("the {format} data is damaged: {text}"))
            }
        }
        CodecError::Parameter(d) => {
            ImageError::corrupt(format!("the {format} data is invalid: {d}"))
        }
        CodecError::Encoding(d) => ImageError::internal(format!(
            "unexpected encoder error while decoding {format}: {d}"
        )),
    }
}

fn truncated(format: &str) -> ImageError {
    ImageError::corrupt(format!(
        "the {format} data is truncated: the file ends before the image does"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_written_for_people() {
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(megapixels(3072), "3072 pixels");
        assert_eq!(megapixels(120_000_000), "120.0 megapixels");
    }

    #[test]
    fn sniffing_recognises_each_accepted_signature() {
        let cases: [(&[u8], InputFormat); 8] = [
            (b"\x89PNG\r\n\x1a\n....", InputFormat::Png),
            (b"\xFF\xD8\xFF\xE0", InputFormat::Jpeg),
            (b"RIFF\0\0\0\0WEBPVP8L", InputFormat::Webp),
            (b"GIF89a..", InputFormat::Gif),
            (b"GIF87a..", InputFormat::Gif),
            (b"II*\0\x08\0\0\0", InputFormat::Tiff),
            (b"MM\0*\0\0\0\x08", InputFormat::Tiff),
            (b"BM\0\0\0\0\0\0\0\0\0\0\0\0", InputFormat::Bmp),
        ];
        for (bytes, format) in cases {
            assert_eq!(sniff_format(bytes).ok(), Some(format), "{format}");
        }
        // A RIFF file that is not WebP (a WAV) is not accepted.
        assert!(sniff_format(b"RIFF\0\0\0\0WAVEfmt ").is_err());
    }
}
