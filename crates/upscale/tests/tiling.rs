//! Tiling is invisible: a tiled upscale equals the untiled one for every family (a network
//! wide enough for the CPU's Winograd convolutions included), at 8 and 16 bits, at tile sizes
//! above and below the receptive field, with edge windows shifted inward, and on images
//! smaller than one tile. Channel layouts (gray, RGBA, 16-bit) keep their shape, depth and
//! alpha.
//!
//! The networks are built in `common` with random weights, so these tests need no external
//! file.

mod common;

use common::{assert_close, edsr_like, edsr_wide, photo, photo16, rgb_like, run, y_like};
use superres_upscale::{ColorKind, Image, Options, Samples, TileMode, upscale};

#[test]
fn tiled_output_equals_untiled_output() {
    for scale in [2, 3] {
        for (model, kind) in [
            (edsr_like(scale), ColorKind::Rgb),
            (edsr_like(scale), ColorKind::Gray),
            (edsr_wide(scale), ColorKind::Rgb),
            (y_like(scale), ColorKind::Rgb),
            (y_like(scale), ColorKind::Gray),
            (rgb_like(scale), ColorKind::Rgb),
            (rgb_like(scale), ColorKind::Gray),
        ] {
            let margin = model.receptive_field().margin();
            assert!(
                margin >= 3,
                "receptive field of {} is {margin}",
                model.name()
            );
            for img in [photo(37, 23, kind), photo16(37, 23, kind)] {
                let bits = if img.color.is_16bit() { 16 } else { 8 };
                let whole = run(&model, &img, 0);
                for tile in [1, 2, margin - 1, margin, 8, 16, 36, 100] {
                    let tiled = run(&model, &img, tile);
                    let what = format!("{} x{scale} {kind:?} {bits}-bit tile {tile}", model.name());
                    assert_close(&tiled, &whole, &what);
                }
            }
        }
    }
}

#[test]
fn images_smaller_than_a_tile_and_single_pixels_work() {
    let model = y_like(2);
    for (w, h) in [(1, 1), (1, 5), (3, 2)] {
        let img = photo(w, h, ColorKind::Rgb);
        let out = run(&model, &img, 64);
        assert_eq!((out.width, out.height), (2 * w, 2 * h));
        assert_close(&out, &run(&model, &img, 0), &format!("{w}x{h}"));
    }
}

#[test]
fn progress_counts_tiles_and_cancel_stops() {
    let model = y_like(2);
    let img = photo(20, 20, ColorKind::Rgb);
    let opts = Options {
        tile: Some(5),
        ..Options::default()
    };
    assert_eq!(model.tiling(20, 20, &opts).tiles.len(), 16);
    let mut seen = Vec::new();
    upscale(&model, &img, &opts, &mut |p| {
        seen.push((p.tiles_done, p.tiles_total));
        true
    })
    .unwrap();
    assert_eq!(seen, (1..=16).map(|i| (i, 16)).collect::<Vec<_>>());
    let mut calls = 0;
    let r = upscale(&model, &img, &opts, &mut |_| {
        calls += 1;
        false
    });
    assert!(
        matches!(r, Err(superres_upscale::UpscaleError::Cancelled)),
        "{r:?}"
    );
    assert_eq!(calls, 1, "cancel is honoured at the next tile");
}

#[test]
fn memory_budget_picks_tiles_that_keep_the_result_identical() {
    let model = edsr_like(2);
    let img = photo(60, 40, ColorKind::Rgb);
    // A budget so small it forces many tiles.
    let small = Options {
        tile: None,
        memory_budget: 64 << 10,
        tile_mode: TileMode::Exact,
    };
    let mut tiles = 0;
    let out = upscale(&model, &img, &small, &mut |p| {
        tiles = p.tiles_total;
        true
    })
    .unwrap();
    assert!(
        tiles > 4,
        "a 64 KiB budget should need many tiles, got {tiles}"
    );
    assert_close(&out, &run(&model, &img, 0), "budgeted tiles");
}

#[test]
fn gray_rgba_and_16bit_keep_shape_depth_and_alpha() {
    for model in [edsr_like(2), y_like(2)] {
        // Gray in, gray out, for both families.
        let gray = photo(9, 7, ColorKind::Gray);
        let out = run(&model, &gray, 0);
        assert_eq!(
            (out.color_kind, out.width, out.height),
            (ColorKind::Gray, 18, 14),
            "{}",
            model.name()
        );

        // RGBA: alpha upscaled separately and kept.
        let mut rgba = photo(9, 7, ColorKind::Rgb);
        let alpha: Vec<u8> = (0..63).map(|i| if i % 9 < 4 { 0 } else { 255 }).collect();
        rgba.alpha = Some(Samples::U8(alpha));
        let out = run(&model, &rgba, 0);
        let Some(Samples::U8(a)) = &out.alpha else {
            panic!("alpha lost")
        };
        assert_eq!(a.len(), 18 * 14);
        assert_eq!(a[0], 0, "transparent corner stays transparent");
        assert_eq!(a[18 * 14 - 1], 255, "opaque corner stays opaque");

        // 16-bit in, 16-bit out, and close to the 8-bit result scaled up.
        let img8 = photo(9, 7, ColorKind::Rgb);
        let Samples::U8(v) = &img8.color else {
            unreachable!()
        };
        let img16 = Image {
            color: Samples::U16(v.iter().map(|&x| x as u16 * 257).collect()),
            ..img8.clone()
        };
        let out16 = run(&model, &img16, 0);
        let out8 = run(&model, &img8, 0);
        let (Samples::U16(a), Samples::U8(b)) = (&out16.color, &out8.color) else {
            panic!("depth changed")
        };
        let worst = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f32 / 257.0 - y as f32).abs())
            .fold(0.0, f32::max);
        assert!(
            worst <= 2.0,
            "{}: 16-bit result strays {worst} (8-bit units) from the 8-bit one",
            model.name()
        );
    }
}
