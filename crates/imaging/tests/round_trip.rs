//! Encode → decode round trips, input formats, EXIF orientation and ICC profiles.

use std::io::Cursor;

use image::codecs::png::PngEncoder;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageFormat, RgbImage};
use superres_imaging::{
    ColorKind, EncodeOptions, Image, Limits, OutputFormat, Samples, decode, encode,
};

/// A made-up ICC profile body: the codecs carry it as opaque bytes.
fn fake_icc() -> Vec<u8> {
    let mut p = b"\0\0\x01\x2Cappl\x02\x10\0\0mntrRGB XYZ ".to_vec();
    p.extend((0..280u32).map(|i| (i * 31 % 251) as u8));
    p
}

fn gradient(w: usize, h: usize, kind: ColorKind, alpha: bool, sixteen: bool) -> Image {
    let ch = kind.channels();
    let value = |x: usize, y: usize, c: usize| ((x * 37 + y * 91 + c * 53) % 256) as u16;
    let mut color = Vec::with_capacity(w * h * ch);
    let mut a = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            for c in 0..ch {
                color.push(value(x, y, c));
            }
            a.push(((x * 255) / w.max(1)) as u16);
        }
    }
    let wrap = |v: Vec<u16>| {
        if sixteen {
            // Distinct low bytes, so 16-bit precision is visible.
            Samples::U16(v.iter().map(|&s| s * 256 + (s % 7) * 17).collect())
        } else {
            Samples::U8(v.iter().map(|&s| s as u8).collect())
        }
    };
    Image::new(w, h, kind, wrap(color), alpha.then(|| wrap(a)))
        .unwrap_or_else(|e| panic!("test setup: {e}"))
}

fn decode_ok(bytes: &[u8], what: &str) -> Image {
    decode(bytes, &Limits::default()).unwrap_or_else(|e| panic!("{what}: decode failed: {e}"))
}

fn encode_ok(image: &Image, format: OutputFormat, what: &str) -> Vec<u8> {
    encode(image, format, &EncodeOptions::default())
        .unwrap_or_else(|e| panic!("{what}: encode failed: {e}"))
}

fn max_abs_diff(a: &[u8], b: &[u8]) -> u8 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

const SHAPES: [(ColorKind, bool); 4] = [
    (ColorKind::Gray, false),
    (ColorKind::Gray, true),
    (ColorKind::Rgb, false),
    (ColorKind::Rgb, true),
];

#[test]
fn png_round_trip_is_exact_at_8_and_16_bits() {
    for (kind, alpha) in SHAPES {
        for sixteen in [false, true] {
            let what = format!("PNG {kind:?} alpha={alpha} 16-bit={sixteen}");
            let original = gradient(13, 9, kind, alpha, sixteen);
            let back = decode_ok(&encode_ok(&original, OutputFormat::Png, &what), &what);
            assert_eq!(back, original, "{what}: decoded image differs");
        }
    }
}

#[test]
fn webp_round_trip_is_lossless_at_8_bits() {
    for (kind, alpha) in SHAPES {
        for sixteen in [false, true] {
            let what = format!("WebP {kind:?} alpha={alpha} 16-bit={sixteen}");
            let original = gradient(13, 9, kind, alpha, sixteen);
            let back = decode_ok(&encode_ok(&original, OutputFormat::Webp, &what), &what);
            assert_eq!((back.width, back.height), (13, 9), "{what}: size");
            assert!(!back.is_16bit(), "{what}: WebP is 8-bit");
            assert_eq!(back.has_alpha(), alpha, "{what}: alpha presence");
            let expected = original.to_8bit();
            // The WebP decoder gives RGB even for gray sources.
            let back_rgb = back.gray_to_rgb();
            let expected_rgb = expected.gray_to_rgb();
            assert_eq!(
                back_rgb.color, expected_rgb.color,
                "{what}: lossless colour differs"
            );
            assert_eq!(back.alpha, expected.alpha, "{what}: lossless alpha differs");
        }
    }
}

#[test]
fn jpeg_round_trip_is_close_and_drops_alpha() {
    for (kind, alpha) in SHAPES {
        for sixteen in [false, true] {
            let what = format!("JPEG {kind:?} alpha={alpha} 16-bit={sixteen}");
            let original = gradient(32, 24, kind, alpha, sixteen);
            let opts = EncodeOptions {
                jpeg_quality: 100,
                ..EncodeOptions::default()
            };
            let bytes = encode(&original, OutputFormat::Jpeg, &opts)
                .unwrap_or_else(|e| panic!("{what}: encode failed: {e}"));
            let back = decode_ok(&bytes, &what);
            assert_eq!((back.width, back.height), (32, 24), "{what}: size");
            assert_eq!(back.color_kind, kind, "{what}: colour kind");
            assert!(
                !back.is_16bit() && !back.has_alpha(),
                "{what}: 8-bit, no alpha"
            );
            let expected = original.to_8bit();
            let diff = max_abs_diff(&back.color.to_u8(), &expected.color.to_u8());
            // Quality 100 with chroma subsampling on a busy gradient: small, not zero.
            let limit = if kind == ColorKind::Gray { 8 } else { 80 };
            assert!(diff <= limit, "{what}: max difference {diff} > {limit}");
        }
    }
}

#[test]
fn jpeg_quality_changes_the_size() {
    let image = gradient(64, 64, ColorKind::Rgb, false, false);
    let size = |q: u8| {
        let opts = EncodeOptions {
            jpeg_quality: q,
            ..EncodeOptions::default()
        };
        encode(&image, OutputFormat::Jpeg, &opts).map(|b| b.len())
    };
    let (low, high) = (size(20), size(95));
    assert!(
        matches!((&low, &high), (Ok(l), Ok(h)) if l < h),
        "quality 20 gave {low:?} bytes, quality 95 gave {high:?}"
    );
    assert!(size(0).is_ok(), "quality 0 is clamped, not an error");
}

#[test]
fn bmp_tiff_gif_inputs_decode() {
    let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(10, 6, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 40) as u8, 200])
    }));
    for format in [ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::Gif] {
        let mut bytes = Cursor::new(Vec::new());
        rgb.write_to(&mut bytes, format)
            .unwrap_or_else(|e| panic!("test setup {format:?}: {e}"));
        let back = decode_ok(bytes.get_ref(), &format!("{format:?}"));
        assert_eq!(
            (back.width, back.height, back.color_kind, back.bit_depth()),
            (10, 6, ColorKind::Rgb, 8),
            "{format:?}: shape"
        );
        if format != ImageFormat::Gif {
            // GIF quantises to a palette; the others are lossless.
            assert_eq!(back.color.to_u8(), rgb.to_rgb8().into_raw(), "{format:?}");
        }
    }
}

#[test]
fn sixteen_bit_tiff_stays_16_bit_and_float_tiff_becomes_16_bit() {
    let rgb16 = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(5, 4, |x, y| {
        image::Rgb([x as u16 * 10000 + 3, y as u16 * 15000 + 1, 65535])
    }));
    let mut bytes = Cursor::new(Vec::new());
    rgb16
        .write_to(&mut bytes, ImageFormat::Tiff)
        .unwrap_or_else(|e| panic!("test setup: {e}"));
    let back = decode_ok(bytes.get_ref(), "16-bit TIFF");
    assert_eq!(back.color, Samples::U16(rgb16.to_rgb16().into_raw()));

    let float = DynamicImage::ImageRgb32F(image::ImageBuffer::from_fn(3, 2, |x, _| {
        image::Rgb([x as f32 * 0.5, 1.5, -0.25])
    }));
    let mut bytes = Cursor::new(Vec::new());
    float
        .write_to(&mut bytes, ImageFormat::Tiff)
        .unwrap_or_else(|e| panic!("test setup: {e}"));
    let back = decode_ok(bytes.get_ref(), "float TIFF");
    assert!(
        back.is_16bit() && !back.has_alpha(),
        "float TIFF: 16-bit RGB"
    );
    assert_eq!(
        back.color.to_u16()[..3],
        [0, 65535, 0],
        "float values are scaled to 16 bits and clamped to [0, 1]"
    );
}

#[test]
fn fully_opaque_alpha_is_dropped_on_decode() {
    let mut image = gradient(6, 5, ColorKind::Rgb, true, false);
    image.alpha = Some(Samples::U8(vec![255; 30]));
    let back = decode_ok(&encode_ok(&image, OutputFormat::Png, "opaque"), "opaque");
    assert!(
        !back.has_alpha(),
        "an all-255 alpha plane should be dropped"
    );
    assert_eq!(back.color, image.color);
}

/// A JPEG with an APP1 Exif segment whose only tag is Orientation = `orientation`.
fn jpeg_with_orientation(image: &DynamicImage, orientation: u16) -> Vec<u8> {
    let mut jpeg = Cursor::new(Vec::new());
    image
        .write_to(&mut jpeg, ImageFormat::Jpeg)
        .unwrap_or_else(|e| panic!("test setup: {e}"));
    let jpeg = jpeg.into_inner();
    let mut tiff = b"MM\0\x2A\0\0\0\x08".to_vec(); // big-endian TIFF header, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    app1.extend_from_slice(&payload);
    // After SOI and the JFIF APP0 segment, where cameras put it.
    let mut at = 2;
    if jpeg[2..4] == [0xFF, 0xE0] {
        at = 4 + u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
    }
    let mut out = jpeg[..at].to_vec();
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[at..]);
    out
}

#[test]
fn exif_orientation_6_rotates_clockwise() {
    // 32×16: left half red, right half blue.
    let source = DynamicImage::ImageRgb8(RgbImage::from_fn(32, 16, |x, _| {
        if x < 16 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    }));
    let plain = decode_ok(&jpeg_with_orientation(&source, 1), "orientation 1");
    assert_eq!(
        (plain.width, plain.height),
        (32, 16),
        "orientation 1 is upright"
    );

    let rotated = decode_ok(&jpeg_with_orientation(&source, 6), "orientation 6");
    assert_eq!(
        (rotated.width, rotated.height),
        (16, 32),
        "orientation 6 swaps width and height"
    );
    // Rotating 90° clockwise puts the left (red) half on top.
    let px = |x: usize, y: usize| {
        let i = (y * rotated.width + x) * 3;
        let c = rotated.color.to_u8();
        [c[i], c[i + 1], c[i + 2]]
    };
    let (top, bottom) = (px(8, 4), px(8, 27));
    assert!(
        top[0] > 200 && top[2] < 60,
        "top should be red after rotation, got {top:?}"
    );
    assert!(
        bottom[2] > 200 && bottom[0] < 60,
        "bottom should be blue after rotation, got {bottom:?}"
    );
}

fn png_with_profile(profile: &[u8]) -> Vec<u8> {
    let pixels = gradient(8, 8, ColorKind::Rgb, false, false).color.to_u8();
    let mut out = Vec::new();
    let mut encoder = PngEncoder::new(&mut out);
    encoder
        .set_icc_profile(profile.to_vec())
        .unwrap_or_else(|e| panic!("test setup: {e}"));
    encoder
        .write_image(&pixels, 8, 8, image::ExtendedColorType::Rgb8)
        .unwrap_or_else(|e| panic!("test setup: {e}"));
    out
}

fn profile_in(bytes: &[u8], format: ImageFormat) -> Option<Vec<u8>> {
    let reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder = reader
        .into_decoder()
        .unwrap_or_else(|e| panic!("reading back {format:?}: {e}"));
    decoder
        .icc_profile()
        .unwrap_or_else(|e| panic!("reading the profile of {format:?}: {e}"))
}

#[test]
fn icc_profile_survives_decode_and_encode() {
    let profile = fake_icc();
    let decoded = decode_ok(&png_with_profile(&profile), "PNG with iCCP");
    assert_eq!(
        decoded.icc_profile.as_deref(),
        Some(&profile[..]),
        "decode keeps the profile"
    );
    for (format, codec) in [
        (OutputFormat::Png, ImageFormat::Png),
        (OutputFormat::Jpeg, ImageFormat::Jpeg),
        (OutputFormat::Webp, ImageFormat::WebP),
    ] {
        let bytes = encode_ok(&decoded, format, "profile");
        assert_eq!(
            profile_in(&bytes, codec).as_deref(),
            Some(&profile[..]),
            "{format}: profile missing or changed in the output"
        );
    }
    // Without a profile, none is written.
    let bare = Image {
        icc_profile: None,
        exif: None,
        xmp: None,
        ..decoded
    };
    let bytes = encode_ok(&bare, OutputFormat::Png, "no profile");
    assert_eq!(profile_in(&bytes, ImageFormat::Png), None);
}

#[test]
fn encode_rejects_inconsistent_images_without_panicking() {
    let mut image = gradient(4, 4, ColorKind::Rgb, true, false);
    image.width = 5;
    for format in [OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp] {
        let e = encode(&image, format, &EncodeOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{format}: a 5x4 image with 4x4 samples was encoded"));
        assert_eq!(e.kind(), superres_imaging::ErrorKind::Internal, "{e}");
    }
    let mut mixed = gradient(4, 4, ColorKind::Gray, true, false);
    mixed.alpha = Some(Samples::U16(vec![0; 16]));
    assert!(encode(&mixed, OutputFormat::Png, &EncodeOptions::default()).is_err());
    let empty = Image::new(0, 3, ColorKind::Gray, Samples::U8(vec![]), None)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(encode(&empty, OutputFormat::Png, &EncodeOptions::default()).is_err());
}

#[test]
fn webp_rejects_sides_over_its_limit() {
    let wide = Image::new(16385, 1, ColorKind::Gray, Samples::U8(vec![0; 16385]), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let e = encode(&wide, OutputFormat::Webp, &EncodeOptions::default())
        .err()
        .unwrap_or_else(|| panic!("WebP encoded a 16385 px wide image"));
    assert_eq!(e.kind(), superres_imaging::ErrorKind::TooLarge, "{e}");
    assert!(encode(&wide, OutputFormat::Png, &EncodeOptions::default()).is_ok());
}

/// A little-endian EXIF (TIFF) whose IFD0 holds Make = "Cam" and the orientation.
fn exif_with(orientation: u16) -> Vec<u8> {
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&2u16.to_le_bytes());
    // Make: ASCII, 4 bytes inline.
    t.extend_from_slice(&0x010Fu16.to_le_bytes());
    t.extend_from_slice(&2u16.to_le_bytes());
    t.extend_from_slice(&4u32.to_le_bytes());
    t.extend_from_slice(b"Cam\0");
    // Orientation: SHORT, 1 value.
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&orientation.to_le_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    t
}

const XMP: &[u8] = br#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="superres test"/></rdf:RDF></x:xmpmeta>"#;

/// A 6×4 JPEG with EXIF (orientation 6: turn 90° clockwise to view), XMP and an ICC profile.
fn jpeg_with_metadata() -> Vec<u8> {
    let pixels = gradient(6, 4, ColorKind::Rgb, false, false).color.to_u8();
    let mut out = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
    encoder.set_icc_profile(fake_icc()).unwrap();
    encoder.set_exif_metadata(exif_with(6)).unwrap();
    encoder
        .write_image(&pixels, 6, 4, image::ExtendedColorType::Rgb8)
        .unwrap();
    superres_imaging::metadata::jpeg_with_xmp(&out, XMP).unwrap()
}

fn metadata_in(bytes: &[u8], format: ImageFormat) -> [Option<Vec<u8>>; 3] {
    let reader = image::ImageReader::with_format(Cursor::new(bytes), format);
    let mut d = reader.into_decoder().unwrap();
    [
        d.icc_profile().unwrap(),
        d.exif_metadata().unwrap(),
        d.xmp_metadata().unwrap(),
    ]
}

#[test]
fn exif_xmp_and_icc_survive_into_every_output_format_with_orientation_upright() {
    use superres_imaging::metadata::exif_orientation;
    let decoded = decode_ok(&jpeg_with_metadata(), "JPEG with metadata");
    assert_eq!(
        (decoded.width, decoded.height),
        (4, 6),
        "orientation 6 applied"
    );
    let exif = decoded.exif.clone().expect("EXIF kept");
    assert_eq!(
        exif_orientation(&exif),
        Some(1),
        "the kept EXIF says upright"
    );
    assert!(
        exif.windows(4).any(|w| w == b"Cam\0"),
        "other tags are kept"
    );
    assert_eq!(decoded.xmp.as_deref(), Some(XMP));
    assert_eq!(decoded.icc_profile.as_deref(), Some(&fake_icc()[..]));
    let lossy = EncodeOptions {
        webp_quality: Some(80),
        ..EncodeOptions::default()
    };
    for (format, codec, opts, what) in [
        (
            OutputFormat::Png,
            ImageFormat::Png,
            EncodeOptions::default(),
            "PNG",
        ),
        (
            OutputFormat::Jpeg,
            ImageFormat::Jpeg,
            EncodeOptions::default(),
            "JPEG",
        ),
        (
            OutputFormat::Webp,
            ImageFormat::WebP,
            EncodeOptions::default(),
            "lossless WebP",
        ),
        (OutputFormat::Webp, ImageFormat::WebP, lossy, "lossy WebP"),
    ] {
        let bytes = encode(&decoded, format, &opts).unwrap_or_else(|e| panic!("{what}: {e}"));
        let [icc, exif, xmp] = metadata_in(&bytes, codec);
        assert_eq!(icc.as_deref(), Some(&fake_icc()[..]), "{what}: ICC");
        let exif = exif.unwrap_or_else(|| panic!("{what}: EXIF missing"));
        assert_eq!(exif_orientation(&exif), Some(1), "{what}: orientation");
        assert!(exif.windows(4).any(|w| w == b"Cam\0"), "{what}: Make");
        assert_eq!(xmp.as_deref(), Some(XMP), "{what}: XMP");
        // And it reads back upright: no second turn.
        let again = decode_ok(&bytes, what);
        assert_eq!((again.width, again.height), (4, 6), "{what}");
        let stripped = EncodeOptions {
            keep_metadata: false,
            ..opts
        };
        let bytes = encode(&decoded, format, &stripped).unwrap();
        assert_eq!(
            metadata_in(&bytes, codec),
            [None, None, None],
            "{what}: stripped"
        );
    }
}

#[test]
fn lossy_webp_is_smaller_than_lossless_and_close_to_the_image() {
    // Photo-like: smooth waves and a little noise (a gradient alone compresses losslessly
    // to almost nothing).
    let (w, h) = (64usize, 48usize);
    let mut seed = 12345u32;
    let mut color = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = (seed >> 28) as f64 - 8.0;
                let v = 128.0
                    + 60.0 * (x as f64 * 0.3 + c as f64).sin()
                    + 40.0 * (y as f64 * 0.17 + x as f64 * 0.05).cos()
                    + noise;
                color.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    let alpha = (0..w * h).map(|i| (i % 200 + 55) as u8).collect();
    let img = Image::new(
        w,
        h,
        ColorKind::Rgb,
        Samples::U8(color),
        Some(Samples::U8(alpha)),
    )
    .unwrap();
    let lossless = encode(&img, OutputFormat::Webp, &EncodeOptions::default()).unwrap();
    let opts = EncodeOptions {
        webp_quality: Some(75),
        ..EncodeOptions::default()
    };
    let lossy = encode(&img, OutputFormat::Webp, &opts).unwrap();
    assert!(
        lossy.len() < lossless.len(),
        "{} vs {}",
        lossy.len(),
        lossless.len()
    );
    let back = decode_ok(&lossy, "lossy WebP");
    assert_eq!((back.width, back.height, back.has_alpha()), (64, 48, true));
    let a = img.color.to_u8();
    let b = back.color.to_u8();
    let mse: f64 = a
        .iter()
        .zip(&b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    let psnr = 10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10();
    assert!(psnr > 25.0, "lossy WebP at 75 is a fair copy: {psnr:.1} dB");
    assert_eq!(
        decode_ok(&lossless, "lossless WebP").color.to_u8(),
        a,
        "lossless is exact"
    );
}
