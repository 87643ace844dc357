//! Hostile and broken uploads: each must fail with the right kind, quickly, without a panic.

use std::io::Cursor;
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use superres_imaging::{
    ErrorKind, Header, ImageError, InputFormat, Limits, decode, probe, probe_header,
};

/// CRC-32 (ISO-HDLC), as PNG chunks need.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A PNG whose header claims `width × height` RGB pixels, followed by an empty IDAT and IEND.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    png_chunk(&mut png, b"IDAT", &[]);
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A BMP file header plus BITMAPINFOHEADER claiming `width × height` at 24 bits, no pixels.
fn bmp_claiming(width: i32, height: i32) -> Vec<u8> {
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&54u32.to_le_bytes()); // file size (a lie, as an attacker's would be)
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes()); // pixel data offset
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&width.to_le_bytes());
    bmp.extend_from_slice(&height.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp
}

fn encoded(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .unwrap_or_else(|e| panic!("test setup: writing {format:?} failed: {e}"));
    out.into_inner()
}

fn sample_rgb(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    }))
}

/// Decodes with default limits, expecting an error of `kind`; returns it and checks timing.
fn expect_error(what: &str, bytes: &[u8], kind: ErrorKind) -> ImageError {
    expect_error_with(what, bytes, &Limits::default(), kind)
}

fn expect_error_with(what: &str, bytes: &[u8], limits: &Limits, kind: ErrorKind) -> ImageError {
    let start = Instant::now();
    let result = decode(bytes, limits);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "{what}: rejecting took {took:?}, expected well under a second"
    );
    match result {
        Ok(image) => panic!(
            "{what}: expected a {kind:?} error, decoded a {}x{} image",
            image.width, image.height
        ),
        Err(e) => {
            eprintln!("{what}: {:?}: {e}", e.kind());
            assert_eq!(e.kind(), kind, "{what}: wrong kind, message: {e}");
            assert!(!e.to_string().is_empty(), "{what}: empty message");
            e
        }
    }
}

#[test]
fn zero_bytes_is_corrupt() {
    let e = expect_error("empty upload", &[], ErrorKind::Corrupt);
    assert!(e.to_string().contains("empty"), "message: {e}");
}

#[test]
fn plain_text_is_unsupported() {
    let e = expect_error(
        "plain text",
        b"Hello, this is not an image.\nJust some text.\n",
        ErrorKind::Unsupported,
    );
    assert!(e.to_string().contains("text"), "message: {e}");
    assert!(e.to_string().contains("PNG, JPEG"), "message: {e}");
}

#[test]
fn svg_is_unsupported_with_a_helpful_message() {
    let svg = br#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#;
    let e = expect_error("SVG", svg, ErrorKind::Unsupported);
    assert_eq!(
        e.to_string(),
        "SVG is not supported: upload a raster image (PNG, JPEG, WebP, BMP, TIFF, GIF)"
    );
    // Without the XML declaration, after a byte-order mark and whitespace.
    let bare = b"\xEF\xBB\xBF  \n<svg viewBox=\"0 0 1 1\"></svg>";
    let e = expect_error("bare SVG", bare, ErrorKind::Unsupported);
    assert!(e.to_string().starts_with("SVG "), "message: {e}");
}

#[test]
fn pdf_is_unsupported() {
    let e = expect_error(
        "PDF",
        b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
        ErrorKind::Unsupported,
    );
    assert!(
        e.to_string().starts_with("PDF is not supported"),
        "message: {e}"
    );
}

#[test]
fn other_known_formats_are_named() {
    let heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic";
    let e = expect_error("HEIC", heic, ErrorKind::Unsupported);
    assert!(e.to_string().contains("HEIC"), "message: {e}");
    let avif = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf";
    let e = expect_error("AVIF", avif, ErrorKind::Unsupported);
    assert!(e.to_string().contains("AVIF"), "message: {e}");
    let binary = [0x00u8, 0x13, 0x37, 0xFE, 0x01, 0x02, 0x03, 0x04, 0x05];
    let e = expect_error("unknown binary", &binary, ErrorKind::Unsupported);
    assert!(e.to_string().contains("00 13 37 FE"), "message: {e}");
}

#[test]
fn truncated_png_is_corrupt() {
    let png = encoded(sample_rgb(40, 30), ImageFormat::Png);
    for keep in [9, 20, 33, png.len() / 2, png.len() - 13] {
        expect_error(
            &format!("PNG cut to {keep} of {} bytes", png.len()),
            &png[..keep],
            ErrorKind::Corrupt,
        );
    }
}

#[test]
fn truncated_jpeg_is_corrupt() {
    let jpeg = encoded(sample_rgb(40, 30), ImageFormat::Jpeg);
    for keep in [3, 4, 20, 100] {
        expect_error(
            &format!("JPEG cut to {keep} of {} bytes", jpeg.len()),
            &jpeg[..keep],
            ErrorKind::Corrupt,
        );
    }
}

#[test]
fn png_claiming_100000_square_is_too_large_before_decoding() {
    let png = png_claiming(100_000, 100_000);
    assert!(png.len() < 100, "test setup: the file should be tiny");
    let e = expect_error("100000x100000 PNG", &png, ErrorKind::TooLarge);
    let msg = e.to_string();
    assert!(
        msg.contains("100000x100000"),
        "names the actual size: {msg}"
    );
    assert!(msg.contains("16384x16384"), "names the limit: {msg}");
}

#[test]
fn bmp_claiming_huge_size_is_too_large() {
    let bmp = bmp_claiming(60_000, 60_000);
    let e = expect_error("60000x60000 BMP", &bmp, ErrorKind::TooLarge);
    assert!(e.to_string().contains("60000x60000"), "message: {e}");
}

#[test]
fn jpeg_claiming_huge_size_is_too_large() {
    // A real JPEG whose frame header (SOF0) is patched to claim 60000x50000.
    let mut jpeg = encoded(sample_rgb(16, 16), ImageFormat::Jpeg);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .unwrap_or_else(|| panic!("test setup: no SOF0 marker in the encoder's JPEG"));
    jpeg[sof + 5..sof + 7].copy_from_slice(&50_000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let e = expect_error("60000x50000 JPEG", &jpeg, ErrorKind::TooLarge);
    assert!(e.to_string().contains("60000x50000"), "message: {e}");
}

#[test]
fn zero_by_zero_png_is_corrupt() {
    expect_error("0x0 PNG", &png_claiming(0, 0), ErrorKind::Corrupt);
    expect_error("0x5 PNG", &png_claiming(0, 5), ErrorKind::Corrupt);
}

#[test]
fn pixel_limit_names_megapixels() {
    let png = png_claiming(12_000, 10_000);
    let e = expect_error("120 MP PNG", &png, ErrorKind::TooLarge);
    assert!(e.to_string().contains("120.0 megapixels"), "message: {e}");
    assert!(e.to_string().contains("100.0 megapixels"), "message: {e}");
}

#[test]
fn custom_limits_apply_to_real_images() {
    let png = encoded(sample_rgb(64, 48), ImageFormat::Png);
    let narrow = Limits {
        max_width: 32,
        ..Limits::default()
    };
    let e = expect_error_with(
        "64x48 under a 32 px limit",
        &png,
        &narrow,
        ErrorKind::TooLarge,
    );
    assert!(e.to_string().contains("64x48"), "message: {e}");
    let few = Limits {
        max_pixels: 1000,
        ..Limits::default()
    };
    expect_error_with(
        "3072 px under a 1000 px limit",
        &png,
        &few,
        ErrorKind::TooLarge,
    );
    let tight = Limits {
        max_alloc_bytes: 1024,
        ..Limits::default()
    };
    expect_error_with("9 KiB image under 1 KiB", &png, &tight, ErrorKind::TooLarge);
    assert!(
        decode(&png, &Limits::default()).is_ok(),
        "fits the defaults"
    );
}

#[test]
fn every_prefix_and_corruption_of_every_format_fails_cleanly() {
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(9, 7, |x, y| {
        image::Rgba([(x * 30) as u8, (y * 30) as u8, 77, (x * y * 4) as u8])
    }));
    let files = [
        ("PNG", encoded(rgba.clone(), ImageFormat::Png)),
        ("JPEG", encoded(sample_rgb(9, 7), ImageFormat::Jpeg)),
        ("WebP", encoded(rgba.clone(), ImageFormat::WebP)),
        ("BMP", encoded(rgba.clone(), ImageFormat::Bmp)),
        ("TIFF", encoded(rgba.clone(), ImageFormat::Tiff)),
        ("GIF", encoded(rgba, ImageFormat::Gif)),
    ];
    for (name, bytes) in &files {
        assert!(
            decode(bytes, &Limits::default()).is_ok(),
            "{name}: the intact file must decode"
        );
        // Prefixes: any error kind is acceptable, a panic or hang is not.
        for keep in 0..bytes.len() {
            let _ = decode(&bytes[..keep], &Limits::default());
        }
        // Single-byte corruptions throughout the file.
        for i in (0..bytes.len()).step_by(3) {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0xA5;
            let _ = decode(&damaged, &Limits::default());
        }
    }
}

#[test]
fn probe_reads_the_size_without_decoding() {
    let png = encoded(sample_rgb(40, 30), ImageFormat::Png);
    assert_eq!(
        probe(&png[..33], &Limits::default()).ok(),
        Some((InputFormat::Png, 40, 30)),
        "a PNG's size is known from its first 33 bytes"
    );
    let jpeg = encoded(sample_rgb(40, 30), ImageFormat::Jpeg);
    assert_eq!(
        probe(&jpeg, &Limits::default()).ok(),
        Some((InputFormat::Jpeg, 40, 30))
    );
    let huge = png_claiming(100_000, 100_000);
    let e = probe(&huge[..24], &Limits::default()).err();
    assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::TooLarge));
    let e = probe(b"%PDF-1.4", &Limits::default()).err();
    assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::Unsupported));
}

#[test]
fn probe_header_gives_the_layout_the_decoded_image_has() {
    let limits = Limits::default();
    let layout = |bytes: &[u8]| {
        let h: Header = probe_header(bytes, &limits).expect("a readable header");
        let image = decode(bytes, &limits).expect("decodes");
        let decoded_alpha = image.has_alpha();
        (
            h,
            image.color_kind.channels(),
            decoded_alpha,
            if image.is_16bit() { 2 } else { 1 },
        )
    };
    let (h, channels, _, bytes) = layout(&encoded(sample_rgb(7, 5), ImageFormat::Png));
    assert_eq!((h.format, h.width, h.height), (InputFormat::Png, 7, 5));
    assert_eq!(
        (h.color_channels, h.has_alpha, h.bytes_per_sample),
        (channels, false, bytes)
    );
    assert_eq!(h.channels(), 3);

    let rgba = RgbaImage::from_fn(6, 4, |x, _| image::Rgba([1, 2, 3, (x * 40) as u8]));
    let (h, channels, alpha, _) =
        layout(&encoded(DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
    assert_eq!((h.color_channels, h.has_alpha), (channels, alpha));
    assert_eq!(h.channels(), 4);

    let gray16 = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(5, 5, |x, y| {
        image::Luma([(x * 9000 + y) as u16])
    });
    let (h, channels, _, bytes) = layout(&encoded(
        DynamicImage::ImageLuma16(gray16),
        ImageFormat::Png,
    ));
    assert_eq!((h.color_channels, h.bytes_per_sample), (channels, bytes));
    assert_eq!((h.color_channels, h.bytes_per_sample), (1, 2));

    let (h, _, _, _) = layout(&encoded(sample_rgb(9, 8), ImageFormat::Jpeg));
    assert_eq!(
        (h.format, h.channels(), h.bytes_per_sample),
        (InputFormat::Jpeg, 3, 1)
    );

    // A PNG cut after its first chunk: the layout its IHDR declares.
    let png = encoded(sample_rgb(40, 30), ImageFormat::Png);
    let h = probe_header(&png[..33], &limits).expect("the IHDR is enough");
    assert_eq!(
        (h.width, h.height, h.channels(), h.bytes_per_sample),
        (40, 30, 3, 1)
    );
    let e = probe_header(&png_claiming(100_000, 100_000)[..24], &limits).err();
    assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::TooLarge));
}
