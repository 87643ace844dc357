//! The shared test photographs decode with the expected layout and survive re-encoding.

use superres_imaging::{ColorKind, EncodeOptions, Limits, OutputFormat, decode, encode};

#[test]
fn shared_images_decode_with_expected_layout() {
    let shared = superres_testdata::shared_or_skip!();
    let images = shared.join("images");
    let expect = [
        (
            "special/butterfly_gray.png",
            256,
            256,
            ColorKind::Gray,
            8,
            false,
        ),
        (
            "special/plant_16bit.png",
            250,
            166,
            ColorKind::Rgb,
            16,
            false,
        ),
        ("special/plant_rgba.png", 500, 333, ColorKind::Rgb, 8, true),
    ];
    for (path, w, h, kind, depth, alpha) in expect {
        let bytes = std::fs::read(images.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let image = decode(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            (
                image.width,
                image.height,
                image.color_kind,
                image.bit_depth(),
                image.has_alpha()
            ),
            (w, h, kind, depth, alpha),
            "{path}: (width, height, colour, depth, alpha)"
        );
        // PNG output keeps everything exactly.
        let png = encode(&image, OutputFormat::Png, &EncodeOptions::default())
            .unwrap_or_else(|e| panic!("{path}: encode: {e}"));
        let back = decode(&png, &Limits::default()).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(back, image, "{path}: PNG round trip differs");
    }
}

#[test]
fn every_shared_photograph_decodes() {
    let shared = superres_testdata::shared_or_skip!();
    let mut seen = 0;
    for dir in ["opencv", "set5", "special"] {
        let entries = std::fs::read_dir(shared.join("images").join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"));
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
                continue;
            };
            if !matches!(ext, "png" | "jpg" | "jpeg") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let image = decode(&bytes, &Limits::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                image.width > 0 && image.height > 0 && image.validate().is_ok(),
                "{}: empty or inconsistent image",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 10, "expected the shared photographs, found {seen}");
}
