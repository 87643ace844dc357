//! Networks with strides (any image size runs: reflect-padded to the input multiple, output
//! cropped) and deep networks in a bounded budget (exact or blended tiles, and the automatic
//! choice between them).
//!
//! The strided networks are the RRDBNet ×2 and ×1 PyTorch fixtures of `superres-import`
//! (Real-ESRGAN's pixel-unshuffle of 2 and 4 as a stride-2/4 convolution): their untiled
//! outputs match PyTorch there where sizes divide, and here (a) the CPU backend's forward pass
//! matches PyTorch on the same fixtures, (b) an image of any size equals *our own untiled run
//! of the image reflect-padded to the multiple*, cropped, and (c) exact tiles of any size
//! equal the untiled result. The deep networks are built here with seeded random weights.

mod common;

use std::path::PathBuf;

use common::{Rng, assert_close, conv, photo};
use superres_engine::cpu::CpuBackend;
use superres_graph::{Activation, Conv2d, DepthToSpaceMode, Graph, Op, Tensor};
use superres_import::{Family, Format, ImportedModel, Overrides};
use superres_testdata::{nchw_to_hwc, read_npy};
use superres_upscale::{
    BLEND_OVERLAP, ColorKind, Image, Model, Options, Samples, TileMode, Tiling, upscale,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../import/tests/fixtures/pytorch")
        .join(name)
}

fn load(name: &str) -> Model {
    Model::load(&fixture(name), &CpuBackend::new(), Overrides::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn npy(name: &str) -> Tensor {
    let n = read_npy(&fixture(name)).unwrap_or_else(|e| panic!("{e}"));
    let (h, w, c, data) = nchw_to_hwc(&n);
    Tensor::image(h, w, c, data)
}

fn go(model: &Model, img: &Image, opts: &Options) -> Image {
    upscale(model, img, opts, &mut |_| true)
        .unwrap_or_else(|e| panic!("{} on {}x{}: {e}", model.name(), img.width, img.height))
}

fn opts(tile: Option<usize>, mode: TileMode) -> Options {
    Options {
        tile,
        tile_mode: mode,
        ..Options::default()
    }
}

/// `img` (8-bit) reflect-padded on the right and bottom to `pw × ph`, as NumPy's `reflect`.
fn reflect_pad(img: &Image, pw: usize, ph: usize) -> Image {
    let Samples::U8(v) = &img.color else {
        panic!("8-bit only")
    };
    let c = img.color_kind.channels();
    let fold = |i: usize, n: usize| {
        let p = 2 * (n - 1);
        match i {
            _ if i < n => i,
            _ if p == 0 => 0,
            _ if i % p < n => i % p,
            _ => p - i % p,
        }
    };
    let mut out = Vec::with_capacity(pw * ph * c);
    for y in 0..ph {
        for x in 0..pw {
            let i = (fold(y, img.height) * img.width + fold(x, img.width)) * c;
            out.extend_from_slice(&v[i..i + c]);
        }
    }
    Image::from_u8(pw, ph, img.color_kind, out)
}

/// The top-left `w × h` of `img`.
fn crop(img: &Image, w: usize, h: usize) -> Image {
    let Samples::U8(v) = &img.color else {
        panic!("8-bit only")
    };
    let c = img.color_kind.channels();
    let mut out = Vec::with_capacity(w * h * c);
    for y in 0..h {
        out.extend_from_slice(&v[(y * img.width) * c..][..w * c]);
    }
    Image::from_u8(w, h, img.color_kind, out)
}

/// PSNR of two 8-bit images of one shape, in dB.
fn psnr(a: &Image, b: &Image) -> f64 {
    let (Samples::U8(x), Samples::U8(y)) = (&a.color, &b.color) else {
        panic!("8-bit only")
    };
    assert_eq!(x.len(), y.len());
    let mse = x
        .iter()
        .zip(y)
        .map(|(p, q)| (f64::from(*p) - f64::from(*q)).powi(2))
        .sum::<f64>()
        / x.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

#[test]
fn rrdb_x2_and_x1_forward_matches_pytorch_where_sizes_divide() {
    for (file, stem) in [
        ("rrdb_x2.safetensors", "rrdb_x2"),
        ("rrdb_x1.pth", "rrdb_x1"),
    ] {
        let model = load(file);
        let x = npy(&format!("{stem}_in.npy"));
        let want = npy(&format!("{stem}_out.npy"));
        let got = model.forward(&x).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(got[0].shape(), want.shape(), "{file}");
        let worst = got[0]
            .data()
            .iter()
            .zip(want.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "{file}: max |ours - PyTorch| = {worst}");
    }
}

#[test]
fn rrdb_x2_and_x1_upscale_any_size_as_the_padded_image_would() {
    for (file, multiple) in [("rrdb_x2.safetensors", 2), ("rrdb_x1.pth", 4)] {
        let model = load(file);
        assert_eq!(model.input_multiple(), multiple, "{file}");
        let s = model.scale();
        for (w, h) in [(7, 5), (1, 1), (3, 9), (13, 6)] {
            let img = photo(w, h, ColorKind::Rgb);
            let (pw, ph) = (w.next_multiple_of(multiple), h.next_multiple_of(multiple));
            // Our own untiled run of the reflect-padded image, cropped.
            let padded = go(
                &model,
                &reflect_pad(&img, pw, ph),
                &opts(Some(0), TileMode::Exact),
            );
            let want = crop(&padded, w * s, h * s);
            for o in [
                opts(Some(0), TileMode::Exact),
                opts(None, TileMode::Auto),
                opts(Some(2), TileMode::Exact),
                opts(Some(4), TileMode::Exact),
            ] {
                let got = go(&model, &img, &o);
                assert_eq!((got.width, got.height), (w * s, h * s));
                assert_close(&got, &want, &format!("{file} {w}x{h} {o:?}"));
            }
            // Blended tiles run at any size too (a different result by design).
            let got = go(&model, &img, &opts(Some(4), TileMode::Blend));
            assert_eq!((got.width, got.height), (w * s, h * s));
        }
        // The untiled run equals the network's forward pass on the padded image (f32 in
        // `[0, 1]`), rounded: the padding is the only thing added.
        let img = photo(7, 5, ColorKind::Rgb);
        let (pw, ph) = (
            7usize.next_multiple_of(multiple),
            5usize.next_multiple_of(multiple),
        );
        let pad = reflect_pad(&img, pw, ph);
        let Samples::U8(pv) = &pad.color else {
            unreachable!()
        };
        let x = Tensor::image(
            ph,
            pw,
            3,
            pv.iter().map(|&v| f32::from(v) / 255.0).collect(),
        );
        let y = model.forward(&x).unwrap_or_else(|e| panic!("{e}"));
        let got = go(&model, &img, &Options::default());
        let Samples::U8(g) = &got.color else {
            unreachable!()
        };
        let ow = pw * s;
        for (i, &v) in g.iter().enumerate() {
            let (px, c) = (i / 3, i % 3);
            let (ox, oy) = (px % (7 * s), px / (7 * s));
            let f = y[0].data()[(oy * ow + ox) * 3 + c];
            let r = (f.clamp(0.0, 1.0) * 255.0).round();
            assert!(
                (f32::from(v) - r).abs() <= 1.0,
                "{file} at {ox},{oy}: {v} vs {r}"
            );
        }
    }
}

#[test]
fn rrdb_x2_and_x1_take_300x200_with_tiles_of_50() {
    for (file, multiple) in [("rrdb_x2.safetensors", 2), ("rrdb_x1.pth", 4)] {
        let model = load(file);
        let s = model.scale();
        let img = photo(300, 200, ColorKind::Rgb);
        let whole = go(&model, &img, &opts(Some(0), TileMode::Exact));
        assert_eq!((whole.width, whole.height), (300 * s, 200 * s));
        let tiled = opts(Some(50), TileMode::Exact);
        let tiling = model.tiling(300, 200, &tiled);
        let (rw, rh) = tiling.run_size();
        assert!(
            tiling.tiles.len() > 1 && rw.is_multiple_of(multiple) && rh.is_multiple_of(multiple)
        );
        assert_close(
            &go(&model, &img, &tiled),
            &whole,
            &format!("{file} tile 50"),
        );
        // Auto with a fixed tile is exact too; blended tiles of 50 run and stay close.
        assert_eq!(
            model.tiling(300, 200, &opts(Some(50), TileMode::Auto)).mode,
            TileMode::Exact
        );
        let blend = go(&model, &img, &opts(Some(50), TileMode::Blend));
        let db = psnr(&blend, &whole);
        eprintln!("{file}: blend (tiles of 50) vs whole image: {db:.1} dB");
        assert!(db >= 35.0, "{file}: blend vs whole {db:.1} dB");
        // And odd sizes with tiles: 301×199.
        let img = photo(301, 199, ColorKind::Rgb);
        let out = go(&model, &img, &tiled);
        assert_eq!((out.width, out.height), (301 * s, 199 * s));
    }
}

/// A 3×3 convolution with He-scaled seeded weights (`gain` times), as a trained network's
/// layers keep their signal rather than shrinking it.
fn he(rng: &mut Rng, cin: usize, cout: usize, gain: f32, act: Option<Activation>) -> Conv2d {
    let mut c = conv(rng, 3, cin, cout, act);
    // `conv` draws from ±1/(9·cin); He's standard deviation is √(2/(9·cin)).
    let k = gain * (2.0 / (9 * cin) as f32).sqrt() / (1.0 / (9 * cin) as f32 / 3f32.sqrt());
    c.weights.iter_mut().for_each(|w| *w *= k);
    c
}

/// A deep, narrow ×2 RGB network: `depth` 3×3 convolutions of `width` features with
/// residuals (so its receptive field is `depth + 2` pixels a side, RRDBNet-like in shape if
/// not in size), seeded random weights.
fn deep(depth: usize, width: usize) -> Model {
    let mut rng = Rng(0x5eed + depth as u64);
    let mut g = Graph::new();
    let x = g.input("in", 3);
    let lrelu = Some(Activation::LeakyRelu(0.2));
    let head = g
        .push(
            "head",
            Op::Conv2d(he(&mut rng, 3, width, 1.0, lrelu.clone())),
            vec![x],
        )
        .unwrap();
    let mut t = head;
    for i in 0..depth {
        let mut c = he(&mut rng, width, width, 1.0, lrelu.clone());
        c.epilogue.residual = Some(0.2);
        t = g.push(&format!("b{i}"), Op::Conv2d(c), vec![t, t]).unwrap();
    }
    let mut up = he(&mut rng, width, 12, 0.5, None);
    up.epilogue.bias = Some(vec![0.5; 12]);
    let up = g.push("up", Op::Conv2d(up), vec![t]).unwrap();
    let mode = DepthToSpaceMode::Dcr;
    let y = g
        .push("shuffle", Op::DepthToSpace { block: 2, mode }, vec![up])
        .unwrap();
    g.output("out", y);
    let imported = ImportedModel {
        graph: g,
        family: Family::Rgb,
        scale: 2,
        format: Format::Onnx,
    };
    Model::prepare(
        &format!("deep{depth}"),
        "test",
        imported,
        &CpuBackend::new(),
    )
    .unwrap()
}

fn budgeted(budget: u64, mode: TileMode) -> Options {
    Options {
        tile: None,
        memory_budget: budget as usize,
        tile_mode: mode,
    }
}

fn peak(model: &Model, t: &Tiling) -> u64 {
    let (w, h) = t.run_size();
    model.peak_bytes(h, w, t.batch).unwrap()
}

#[test]
fn a_deep_net_stays_within_the_budget_by_blending() {
    let model = deep(60, 8);
    let margin = model.receptive_field().margin();
    assert!(margin >= 60, "{margin}");
    // A budget for runs of 128 pixels: exact tiles need 2 × 62 of margins plus a core.
    let budget = model.peak_bytes(128, 128, 1).unwrap();
    let (w, h) = (400, 300);
    let auto = model.tiling(w, h, &budgeted(budget, TileMode::Auto));
    assert_eq!(auto.mode, TileMode::Blend);
    assert_eq!(auto.overlap, BLEND_OVERLAP);
    assert!(
        peak(&model, &auto) <= budget,
        "{} > {budget}",
        peak(&model, &auto)
    );
    let (rw, rh) = auto.run_size();
    assert!(rw <= 128 && rh <= 128 && rw > BLEND_OVERLAP, "{rw}x{rh}");
    assert_eq!(model.tiling(w, h, &budgeted(budget, TileMode::Blend)), auto);
    // Exact, asked for, keeps its margins and exceeds such a budget.
    let exact = model.tiling(w, h, &budgeted(budget, TileMode::Exact));
    assert_eq!(exact.mode, TileMode::Exact);
    assert!(exact.run_size().0 >= 2 * margin);
    assert!(peak(&model, &exact) > budget);
    // The default budget holds too, whatever the image.
    for (w, h) in [(640, 480), (4000, 3000)] {
        let t = model.tiling(w, h, &Options::default());
        assert!(
            peak(&model, &t) <= Options::default().memory_budget as u64,
            "{w}x{h}: {}",
            peak(&model, &t)
        );
    }
}

#[test]
fn auto_is_exact_unless_margins_would_take_half_the_compute() {
    let deep = deep(60, 8);
    let shallow = deep_shallow();
    let budget = deep.peak_bytes(48, 48, 1).unwrap();
    // The shallow net's margins are thin at the same budget: exact.
    let t = shallow.tiling(400, 300, &budgeted(budget, TileMode::Auto));
    assert_eq!(t.mode, TileMode::Exact);
    assert!(t.tiles.len() > 1);
    // A deep net on an image that fits whole: exact (no margins at all).
    let t = deep.tiling(40, 30, &budgeted(budget, TileMode::Auto));
    assert_eq!((t.mode, t.tiles.len()), (TileMode::Exact, 1));
    // A budget that fits exact runs of 3 × the margin: the cores are a third of the run,
    // margins most of the compute: blend.
    let margin = deep.receptive_field().margin();
    let big = deep.peak_bytes(3 * margin, 3 * margin, 1).unwrap();
    let t = deep.tiling(1000, 800, &budgeted(big, TileMode::Auto));
    assert_eq!(t.mode, TileMode::Blend);
    // One that fits exact runs of 12 × the margin: cores of 10/12, exact.
    let huge = deep.peak_bytes(12 * margin, 12 * margin, 1).unwrap();
    let t = deep.tiling(1000, 800, &budgeted(huge, TileMode::Auto));
    assert_eq!(t.mode, TileMode::Exact);
    assert_eq!("blend".parse::<TileMode>(), Ok(TileMode::Blend));
    assert_eq!(" Exact".parse::<TileMode>(), Ok(TileMode::Exact));
    assert_eq!("auto".parse::<TileMode>(), Ok(TileMode::Auto));
    assert!("seamless".parse::<TileMode>().is_err());
    assert_eq!(TileMode::default(), TileMode::Auto);
}

fn deep_shallow() -> Model {
    deep(2, 8)
}

#[test]
fn blended_tiles_stay_close_to_the_whole_image() {
    // 24 layers (receptive field 26), runs of at most 48 with 16 of overlap: 44.5 dB measured.
    let model = deep(24, 8);
    let img = photo(150, 110, ColorKind::Rgb);
    let whole = go(&model, &img, &opts(Some(0), TileMode::Exact));
    let budget = model.peak_bytes(48, 48, 1).unwrap();
    let o = budgeted(budget, TileMode::Blend);
    let t = model.tiling(150, 110, &o);
    assert!(t.tiles.len() >= 9, "{}", t.tiles.len());
    let blend = go(&model, &img, &o);
    let db = psnr(&blend, &whole);
    let spread = psnr(
        &whole,
        &Image::from_u8(300, 220, ColorKind::Rgb, vec![128; 300 * 220 * 3]),
    );
    eprintln!(
        "deep24 blend (runs {:?}) vs whole: {db:.2} dB (whole vs flat grey: {spread:.2} dB)",
        t.run_size()
    );
    assert!(db >= 40.0, "blend vs whole {db:.2} dB");
    // Exact tiles at the same budget (beyond it) are the untiled result.
    let exact = go(&model, &img, &budgeted(budget, TileMode::Exact));
    assert_close(&exact, &whole, "deep24 exact");
    // 16-bit and Y-channel paths blend too (shapes and depth kept).
    let img16 = common::photo16(50, 37, ColorKind::Rgb);
    let b16 = go(&model, &img16, &opts(Some(20), TileMode::Blend));
    assert!(b16.color.is_16bit() && (b16.width, b16.height) == (100, 74));
    let y = common::y_like(2);
    let img = photo(60, 45, ColorKind::Rgb);
    let yb = go(&y, &img, &opts(Some(16), TileMode::Blend));
    let yw = go(&y, &img, &opts(Some(0), TileMode::Exact));
    let db = psnr(&yb, &yw);
    assert!(db >= 35.0, "y-like blend vs whole {db:.2} dB");
}
