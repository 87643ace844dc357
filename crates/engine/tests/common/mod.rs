//! A network that uses every operator and every lowering path of the device plan that the
//! shared models do not: grouped, strided, dilated and unevenly padded convolutions, every
//! activation, unary and binary operators with tensor, per-channel and scalar operands, both
//! resize modes, both depth-to-space orders, edge replication and cropping around an unpadded
//! convolution, squeeze-and-excitation, a three-way concatenation and two outputs.

#![allow(dead_code)]

use superres_graph::{
    Activation, BinaryOp, Border, Conv2d, Dense, DepthToSpaceMode, Graph, Op, Padding, ResizeMode,
    SqueezeExcite, Tensor, UnaryOp, ValueId,
};

/// Deterministic values in `[-scale, scale]`.
pub fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0) * scale)
        .collect()
}

fn conv(kh: usize, cin: usize, cout: usize, groups: usize, seed: usize) -> Conv2d {
    let mut c = Conv2d::same(
        kh,
        kh,
        cin,
        cout,
        values(
            kh * kh * (cin / groups) * cout,
            seed,
            1.5 / (kh * kh * cin / groups) as f32,
        ),
        Some(values(cout, seed + 1, 0.2)),
    );
    c.groups = groups;
    c
}

fn push(g: &mut Graph, name: &str, op: Op, inputs: Vec<ValueId>) -> ValueId {
    g.push(name, op, inputs)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Input: 3 channels, even height and width.
pub fn every_op_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", 3);
    let mut c = conv(3, 3, 12, 1, 1);
    c.epilogue.activation = Some(Activation::Relu);
    let a = push(&mut g, "a", Op::Conv2d(c), vec![x]);
    let mut c = conv(3, 12, 12, 2, 2);
    c.epilogue.activation = Some(Activation::PRelu(values(12, 3, 0.5)));
    let b = push(&mut g, "grouped", Op::Conv2d(c), vec![a]);
    let mut c = conv(3, 12, 12, 1, 4);
    c.epilogue.residual = Some(0.1);
    let r = push(&mut g, "residual", Op::Conv2d(c), vec![b, a]);
    let mut c = conv(4, 12, 6, 1, 5);
    c.epilogue.activation = Some(Activation::Sigmoid);
    let d = push(&mut g, "uneven", Op::Conv2d(c), vec![r]);
    let e = push(&mut g, "neg", Op::Unary(UnaryOp::Neg), vec![d]);
    let k = g.constant("scale", Tensor::new(vec![6], values(6, 6, 2.0)));
    let f = push(&mut g, "mul", Op::Binary(BinaryOp::Mul), vec![e, k]);
    let q = g.constant("quarter", Tensor::scalar(0.25));
    let f = push(&mut g, "sub", Op::Binary(BinaryOp::Sub), vec![f, q]);
    let f = push(&mut g, "abs", Op::Unary(UnaryOp::Abs), vec![f]);
    let mut c = conv(3, 12, 8, 1, 7);
    c.stride = (2, 2);
    c.padding = Padding {
        top: 1,
        bottom: 1,
        left: 1,
        right: 1,
    };
    c.epilogue.activation = Some(Activation::Tanh);
    let s = push(&mut g, "strided", Op::Conv2d(c), vec![r]);
    let up = push(
        &mut g,
        "bilinear",
        Op::Resize {
            factor: 2,
            mode: ResizeMode::Bilinear,
        },
        vec![s],
    );
    let mut c = conv(3, 8, 8, 1, 8);
    c.dilation = (2, 2);
    c.padding = Padding::same(3, 3, (2, 2));
    c.epilogue.activation = Some(Activation::LeakyRelu(0.2));
    let dl = push(&mut g, "dilated", Op::Conv2d(c), vec![up]);
    let nr = push(
        &mut g,
        "nearest",
        Op::Resize {
            factor: 2,
            mode: ResizeMode::Nearest,
        },
        vec![s],
    );
    let sum = push(&mut g, "add", Op::Binary(BinaryOp::Add), vec![dl, nr]);
    // Bicubic up (×2) and down (×1/2, brought back by a nearest ×2).
    let bc = push(
        &mut g,
        "bicubic",
        Op::Resize {
            factor: 2,
            mode: ResizeMode::Bicubic { down: 1 },
        },
        vec![s],
    );
    let sum = push(
        &mut g,
        "add_bicubic",
        Op::Binary(BinaryOp::Add),
        vec![sum, bc],
    );
    let bd = push(
        &mut g,
        "bicubic_half",
        Op::Resize {
            factor: 1,
            mode: ResizeMode::Bicubic { down: 2 },
        },
        vec![up],
    );
    let bd = push(
        &mut g,
        "nearest_back",
        Op::Resize {
            factor: 2,
            mode: ResizeMode::Nearest,
        },
        vec![bd],
    );
    let sum = push(&mut g, "add_half", Op::Binary(BinaryOp::Add), vec![sum, bd]);
    let two = g.constant("two", Tensor::scalar(2.0));
    let dv = push(&mut g, "div", Op::Binary(BinaryOp::Div), vec![sum, two]);
    let dv = push(
        &mut g,
        "clip",
        Op::Activation(Activation::Clip {
            min: -0.5,
            max: 0.75,
        }),
        vec![dv],
    );
    // Replicated edges, an unpadded convolution, a crop back to the input's size (waifu2x),
    // then channel attention (CUNet).
    let wide = push(
        &mut g,
        "replicate",
        Op::Border(Border {
            top: 2,
            bottom: 1,
            left: 3,
            right: 0,
        }),
        vec![r],
    );
    let mut c = conv(3, 12, 12, 1, 11);
    c.padding = Padding::default();
    let valid = push(&mut g, "unpadded", Op::Conv2d(c), vec![wide]);
    let cropped = push(
        &mut g,
        "crop",
        Op::Border(Border {
            top: -1,
            bottom: 0,
            left: 0,
            right: -1,
        }),
        vec![valid],
    );
    let dense = |cin: usize, cout: usize, seed: usize, a: Activation| Dense {
        cin,
        cout,
        weights: values(cin * cout, seed, 0.5),
        bias: Some(values(cout, seed + 1, 0.1)),
        activation: Some(a),
    };
    let se = SqueezeExcite {
        layers: vec![
            dense(12, 4, 12, Activation::Relu),
            dense(4, 12, 14, Activation::Sigmoid),
        ],
    };
    let attended = push(&mut g, "attention", Op::SqueezeExcite(se), vec![cropped]);
    let cat = push(&mut g, "concat", Op::Concat, vec![f, dv, attended]);
    let c = conv(3, 26, 12, 1, 9);
    let u = push(&mut g, "up_dcr", Op::Conv2d(c), vec![cat]);
    let o1 = push(
        &mut g,
        "dcr",
        Op::DepthToSpace {
            block: 2,
            mode: DepthToSpaceMode::Dcr,
        },
        vec![u],
    );
    let c = conv(1, 26, 12, 1, 10);
    let u = push(&mut g, "up_crd", Op::Conv2d(c), vec![cat]);
    let o2 = push(
        &mut g,
        "crd",
        Op::DepthToSpace {
            block: 2,
            mode: DepthToSpaceMode::Crd,
        },
        vec![u],
    );
    let out = push(&mut g, "sum", Op::Binary(BinaryOp::Add), vec![o1, o2]);
    g.output("out", out);
    g.output("crd", o2);
    g
}
