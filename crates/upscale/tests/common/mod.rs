//! Test networks with random weights and synthetic images, shared by the pipeline tests, so
//! they need no external file.

#![allow(dead_code)]

use superres_engine::Backend;
use superres_engine::cpu::CpuBackend;
use superres_graph::{Activation, Conv2d, DepthToSpaceMode, Graph, Op, Padding, ValueId};
use superres_import::{Family, Format, ImportedModel};
use superres_upscale::{ColorKind, Image, Model, Options, Samples, upscale};

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

pub fn conv(rng: &mut Rng, k: usize, cin: usize, cout: usize, act: Option<Activation>) -> Conv2d {
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

/// An EDSR-shaped network of `width` features: head conv, one residual block (×0.1),
/// upsampler. From 16 features on, the block's convolutions take the CPU's Winograd path.
pub fn edsr_graph(scale: usize, width: usize) -> ImportedModel {
    let mut rng = Rng(7 + width as u64);
    let mut g = Graph::new();
    let x = g.input("in", 3);
    let head = g
        .push(
            "head",
            Op::Conv2d(conv(&mut rng, 3, 3, width, None)),
            vec![x],
        )
        .unwrap();
    let a = g
        .push(
            "a",
            Op::Conv2d(conv(&mut rng, 3, width, width, Some(Activation::Relu))),
            vec![head],
        )
        .unwrap();
    let mut b = conv(&mut rng, 3, width, width, None);
    b.epilogue.residual = Some(0.1);
    let b = g.push("b", Op::Conv2d(b), vec![a, head]).unwrap();
    let up = conv(&mut rng, 3, width, 3 * scale * scale, None);
    let up = g.push("up", Op::Conv2d(up), vec![b]).unwrap();
    shuffle(g, up, scale, Family::Edsr)
}

/// An FSRCNN-shaped Y-channel network with a 5×5 head, PReLU and a 4×4 (asymmetric) conv.
pub fn y_graph(scale: usize) -> ImportedModel {
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
    shuffle(g, up, scale, Family::YChannel)
}

/// An ONNX-style RGB network (`[0, 1]` in and out), biased towards mid-grey.
pub fn rgb_graph(scale: usize) -> ImportedModel {
    let mut rng = Rng(23);
    let mut g = Graph::new();
    let x = g.input("in", 3);
    let h = g
        .push(
            "head",
            Op::Conv2d(conv(&mut rng, 3, 3, 8, Some(Activation::LeakyRelu(0.1)))),
            vec![x],
        )
        .unwrap();
    let m = g
        .push(
            "mid",
            Op::Conv2d(conv(&mut rng, 3, 8, 8, Some(Activation::Relu))),
            vec![h],
        )
        .unwrap();
    let mut up = conv(&mut rng, 3, 8, 3 * scale * scale, None);
    up.epilogue.bias = Some(vec![0.5; 3 * scale * scale]);
    let up = g.push("up", Op::Conv2d(up), vec![m]).unwrap();
    shuffle(g, up, scale, Family::Rgb)
}

/// Ends a test network with a pixel shuffle.
fn shuffle(mut g: Graph, up: ValueId, scale: usize, family: Family) -> ImportedModel {
    let mode = DepthToSpaceMode::Dcr;
    let y = g
        .push("shuffle", Op::DepthToSpace { block: scale, mode }, vec![up])
        .unwrap();
    g.output("out", y);
    ImportedModel {
        graph: g,
        family,
        scale,
        format: Format::TensorFlow,
    }
}

pub fn prepare_on(imported: ImportedModel, name: &str, backend: &dyn Backend) -> Model {
    Model::prepare(name, "test", imported, backend).unwrap()
}

pub fn cpu(imported: ImportedModel, name: &str) -> Model {
    prepare_on(imported, name, &CpuBackend::new())
}

pub fn edsr_like(scale: usize) -> Model {
    cpu(edsr_graph(scale, 8), "edsr-like")
}

pub fn edsr_wide(scale: usize) -> Model {
    cpu(edsr_graph(scale, 16), "edsr-wide")
}

pub fn y_like(scale: usize) -> Model {
    cpu(y_graph(scale), "y-like")
}

pub fn rgb_like(scale: usize) -> Model {
    cpu(rgb_graph(scale), "rgb-like")
}

pub fn photo(w: usize, h: usize, kind: ColorKind) -> Image {
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

/// `photo` with 16-bit samples that are not multiples of 257.
pub fn photo16(w: usize, h: usize, kind: ColorKind) -> Image {
    let img = photo(w, h, kind);
    let Samples::U8(v) = &img.color else {
        unreachable!()
    };
    let color = v
        .iter()
        .enumerate()
        .map(|(i, &x)| x as u16 * 256 + (i % 251) as u16)
        .collect();
    Image {
        color: Samples::U16(color),
        ..img
    }
}

pub fn run_with(model: &Model, img: &Image, opts: &Options) -> Image {
    upscale(model, img, opts, &mut |_| true).unwrap()
}

pub fn run(model: &Model, img: &Image, tile: usize) -> Image {
    let opts = Options {
        tile: Some(tile),
        ..Options::default()
    };
    run_with(model, img, &opts)
}

/// Equal up to one 16-bit level (8-bit samples are widened exactly, so they must be equal):
/// a 16-bit sample rounds at a boundary that a sum in another order can cross.
pub fn assert_close(a: &Image, b: &Image, what: &str) {
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

/// The same samples, bit for bit.
pub fn assert_identical(a: &Image, b: &Image, what: &str) {
    assert_eq!(
        (a.width, a.height, a.color_kind),
        (b.width, b.height, b.color_kind),
        "{what}: shape"
    );
    assert!(a.color == b.color, "{what}: samples differ");
    assert!(a.alpha == b.alpha, "{what}: alpha differs");
}
