//! Tiling is invisible: a tiled upscale equals the untiled one for every family, at tile
//! sizes above and below the receptive field, and on images smaller than one tile. Channel
//! layouts (gray, RGBA, 16-bit) keep their shape, depth and alpha.
//!
//! The networks are built here with random weights, so these tests need no external file.

use superres_engine::cpu::CpuBackend;
use superres_graph::{Activation, Conv2d, DepthToSpaceMode, Graph, Op, Padding, ValueId};
use superres_import::{Family, Format, ImportedModel};
use superres_upscale::{ColorKind, Image, Model, Options, Samples, upscale};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

fn conv(rng: &mut Rng, k: usize, cin: usize, cout: usize, act: Option<Activation>) -> Conv2d {
    let mut c = Conv2d::same(
        k,
        k,
        cin,
        cout,
        rng.vec(k * k * cin * cout, 2.0 / (k * k * cin) as f32),
        Some(rng.vec(cout, 0.1)),
    );
    c.epilogue.activation = act;
    c
}

/// A small EDSR-shaped network: head conv, one residual block (×0.1), global skip, upsampler.
fn edsr_like(scale: usize) -> Model {
    let mut rng = Rng(7);
    let mut g = Graph::new();
    let x = g.input("in", 3);
    let head = g
        .push("head", Op::Conv2d(conv(&mut rng, 3, 3, 8, None)), vec![x])
        .unwrap();
    let a = g
        .push(
            "a",
            Op::Conv2d(conv(&mut rng, 3, 8, 8, Some(Activation::Relu))),
            vec![head],
        )
        .unwrap();
    let mut b = conv(&mut rng, 3, 8, 8, None);
    b.epilogue.residual = Some(0.1);
    let b = g.push("b", Op::Conv2d(b), vec![a, head]).unwrap();
    let up = conv(&mut rng, 3, 8, 3 * scale * scale, None);
    let up = g.push("up", Op::Conv2d(up), vec![b]).unwrap();
    shuffle_and_prepare(g, up, scale, Family::Edsr, "edsr-like")
}

/// An FSRCNN-shaped Y-channel network with a 5×5 head, PReLU and a 4×4 (asymmetric) conv.
fn y_like(scale: usize) -> Model {
    let mut rng = Rng(11);
    let mut g = Graph::new();
    let x = g.input("in", 1);
    let slopes = rng.vec(6, 0.5);
    let h = g
        .push(
            "head",
            Op::Conv2d(conv(&mut rng, 5, 1, 6, Some(Activation::PRelu(slopes)))),
            vec![x],
        )
        .unwrap();
    let mut even = conv(&mut rng, 4, 6, 6, Some(Activation::LeakyRelu(0.2)));
    even.padding = Padding::same(4, 4, (1, 1));
    let e = g.push("even", Op::Conv2d(even), vec![h]).unwrap();
    let mut up = conv(&mut rng, 3, 6, scale * scale, None);
    up.epilogue.bias = Some(vec![0.5; scale * scale]);
    let up = g.push("up", Op::Conv2d(up), vec![e]).unwrap();
    shuffle_and_prepare(g, up, scale, Family::YChannel, "y-like")
}

/// Ends a test network with a pixel shuffle and prepares it on the CPU.
fn shuffle_and_prepare(
    mut g: Graph,
    up: ValueId,
    scale: usize,
    family: Family,
    name: &str,
) -> Model {
    let mode = DepthToSpaceMode::Dcr;
    let y = g
        .push("shuffle", Op::DepthToSpace { block: scale, mode }, vec![up])
        .unwrap();
    g.output("out", y);
    let format = Format::TensorFlow;
    let imported = ImportedModel {
        graph: g,
        family,
        scale,
        format,
    };
    Model::prepare(name, "test", imported, &CpuBackend::new()).unwrap()
}

fn photo(w: usize, h: usize, kind: ColorKind) -> Image {
    let c = kind.channels();
    let data = (0..w * h * c)
        .map(|i| {
            let (px, ch) = (i / c, i % c);
            let (x, y) = (px % w, px / w);
            ((x * 7 + y * 13 + ch * 50 + (x * y) % 17) % 256) as u8
        })
        .collect();
    Image::from_u8(w, h, kind, data)
}

fn run(model: &Model, img: &Image, tile: usize) -> Image {
    let opts = Options {
        tile: Some(tile),
        ..Options::default()
    };
    upscale(model, img, &opts, &mut |_| true).unwrap()
}

fn assert_close(a: &Image, b: &Image, what: &str) {
    assert_eq!(
        (a.width, a.height, a.color_kind),
        (b.width, b.height, b.color_kind),
        "{what}: shape"
    );
    let (x, y) = (a.color.to_u16(), b.color.to_u16());
    let worst = x
        .iter()
        .zip(&y)
        .map(|(p, q)| p.abs_diff(*q))
        .max()
        .unwrap_or(0);
    assert!(
        worst <= 1,
        "{what}: tiled differs from untiled by up to {worst}"
    );
}

#[test]
fn tiled_output_equals_untiled_output() {
    for scale in [2, 3] {
        for (model, kind) in [
            (edsr_like(scale), ColorKind::Rgb),
            (y_like(scale), ColorKind::Rgb),
            (y_like(scale), ColorKind::Gray),
        ] {
            let margin = model.receptive_field().margin();
            assert!(
                margin >= 3,
                "receptive field of {} is {margin}",
                model.name()
            );
            let img = photo(37, 23, kind);
            let whole = run(&model, &img, 0);
            for tile in [1, 2, margin - 1, margin, 8, 16, 36, 100] {
                let tiled = run(&model, &img, tile);
                assert_close(
                    &tiled,
                    &whole,
                    &format!("{} x{scale} {kind:?} tile {tile}", model.name()),
                );
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
