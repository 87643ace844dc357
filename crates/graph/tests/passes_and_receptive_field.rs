//! Optimisation passes and receptive fields, checked by running graphs through the
//! reference interpreter.

use superres_engine::cpu::reference::run;
use superres_graph::passes::optimize;
use superres_graph::{
    Activation, BinaryOp, Conv2d, DepthToSpaceMode, Graph, Op, Padding, Tensor, ValueId,
};

/// Deterministic values in `[lo, hi)`.
fn values(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            lo + (hi - lo) * ((s >> 8) as f32 / (1u32 << 24) as f32)
        })
        .collect()
}

fn conv(k: usize, cin: usize, cout: usize, seed: u32, lo: f32) -> Op {
    Op::Conv2d(Conv2d::same(
        k,
        k,
        cin,
        cout,
        values(k * k * cin * cout, seed, lo, 1.0),
        None,
    ))
}

/// `x` enlarged `factor` times, nearest neighbour.
fn nearest(g: &mut Graph, factor: usize, x: ValueId) -> ValueId {
    let mode = superres_graph::ResizeMode::Nearest;
    g.push("up", Op::Resize { factor, mode }, vec![x])
        .expect("up")
}

fn outputs(g: &Graph, x: &Tensor) -> Vec<Tensor> {
    run(g, x).unwrap_or_else(|e| panic!("interpreter failed: {e}"))
}

fn assert_same_bits(a: &[Tensor], b: &[Tensor]) {
    assert_eq!(a.len(), b.len(), "output count");
    for (k, (p, q)) in a.iter().zip(b).enumerate() {
        assert_eq!(p.shape(), q.shape(), "output {k}: shape");
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        if let Some(i) = bits(p).iter().zip(bits(q)).position(|(x, y)| *x != y) {
            panic!(
                "output {k}: value {i} differs: {} vs {}",
                p.data()[i],
                q.data()[i]
            );
        }
    }
}

/// ESPCN's shape: 5×5, 3×3, 3×3 convolutions at input resolution, then a ×2 shuffle.
fn espcn_like(lo: f32) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", 1);
    let a = g.push("c1", conv(5, 1, 4, 1, lo), vec![x]).expect("c1");
    let b = g.push("c2", conv(3, 4, 4, 2, lo), vec![a]).expect("c2");
    let c = g.push("c3", conv(3, 4, 4, 3, lo), vec![b]).expect("c3");
    let d = g
        .push(
            "d2s",
            Op::DepthToSpace {
                block: 2,
                mode: DepthToSpaceMode::Dcr,
            },
            vec![c],
        )
        .expect("d2s");
    g.output("out", d);
    g
}

#[test]
fn receptive_field_adds_the_kernel_radii() {
    let rf = espcn_like(0.1).receptive_field();
    assert_eq!((rf.top, rf.bottom, rf.left, rf.right), (4, 4, 4, 4));
    assert_eq!(rf.margin(), 4);
}

#[test]
fn receptive_field_of_an_even_kernel_is_asymmetric() {
    let mut g = Graph::new();
    let x = g.input("x", 1);
    let c = g.push("c", conv(4, 1, 1, 1, 0.1), vec![x]).expect("conv");
    g.output("out", c);
    let rf = g.receptive_field();
    assert_eq!((rf.top, rf.bottom, rf.left, rf.right), (1, 2, 1, 2));
}

#[test]
fn receptive_field_after_upsampling_counts_in_input_pixels_rounded_up() {
    let mut g = Graph::new();
    let x = g.input("x", 4);
    let d = g
        .push(
            "d2s",
            Op::DepthToSpace {
                block: 2,
                mode: DepthToSpaceMode::Dcr,
            },
            vec![x],
        )
        .expect("d2s");
    let c = g.push("c", conv(3, 1, 1, 1, 0.1), vec![d]).expect("conv");
    g.output("out", c);
    // One output pixel of the ×2 image reaches half an input pixel: one after rounding up.
    assert_eq!(g.receptive_field().margin(), 1);
}

/// With positive weights and no activation every input pixel in the field moves the output
/// upwards, so "changed" is exactly "inside".
#[test]
fn output_changes_exactly_when_a_pixel_inside_the_receptive_field_changes() {
    let g = espcn_like(0.05);
    let margin = g.receptive_field().margin();
    let (h, w) = (16, 16);
    let x = Tensor::image(h, w, 1, values(h * w, 9, 0.0, 1.0));
    let base = outputs(&g, &x).remove(0);
    let (cy, cx) = (8, 8);
    let block = |t: &Tensor| -> Vec<u32> {
        let ow = w * 2;
        [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|(i, j)| t.data()[(cy * 2 + i) * ow + cx * 2 + j].to_bits())
            .collect()
    };
    for (dy, dx) in [
        (0isize, 4isize),
        (-4, 0),
        (4, -4),
        (0, 5),
        (-5, 0),
        (5, 5),
        (0, -6),
    ] {
        let mut p = x.clone();
        let at = ((cy as isize + dy) as usize) * w + (cx as isize + dx) as usize;
        p.data_mut()[at] += 1.0;
        let changed = block(&outputs(&g, &p).remove(0)) != block(&base);
        let inside = dy.unsigned_abs() <= margin && dx.unsigned_abs() <= margin;
        assert_eq!(
            changed, inside,
            "perturbation at ({dy}, {dx}): changed = {changed}"
        );
    }
}

fn add_const(g: &mut Graph, name: &str, x: ValueId, k: Vec<f32>) -> ValueId {
    let len = k.len();
    let c = g.constant(&format!("{name}/k"), Tensor::new(vec![len], k));
    g.push(name, Op::Binary(BinaryOp::Add), vec![x, c])
        .expect("add")
}

#[test]
fn bias_after_an_activation_is_not_folded_into_the_bias() {
    // relu(conv) + b must not become relu(conv + b).
    let mut g = Graph::new();
    let x = g.input("x", 1);
    let c = g.push("c", conv(3, 1, 2, 1, -1.0), vec![x]).expect("conv");
    let r = g
        .push("relu", Op::Activation(Activation::Relu), vec![c])
        .expect("relu");
    let y = add_const(&mut g, "bias", r, vec![0.5, -0.5]);
    g.output("out", y);
    let opt = optimize(&g).expect("optimize");
    assert_eq!(
        opt.op_counts(),
        [("Add", 1), ("Const", 1), ("Conv2d", 1), ("Input", 1)]
    );
    let x = Tensor::image(6, 5, 1, values(30, 4, -1.0, 1.0));
    assert_same_bits(&outputs(&g, &x), &outputs(&opt, &x));
}

#[test]
fn a_value_read_by_an_output_is_not_fused_away() {
    let mut g = Graph::new();
    let x = g.input("x", 2);
    let c = g.push("c", conv(3, 2, 2, 1, -1.0), vec![x]).expect("conv");
    let s = g
        .push("sum", Op::Binary(BinaryOp::Add), vec![x, c])
        .expect("sum");
    g.output("out", s);
    g.output("conv_out", c);
    let opt = optimize(&g).expect("optimize");
    assert!(
        opt.nodes
            .iter()
            .all(|n| !matches!(&n.op, Op::Conv2d(c) if c.epilogue.residual.is_some())),
        "the convolution's own value is an output; the residual must stay a separate Add"
    );
    let x = Tensor::image(5, 4, 2, values(40, 5, -1.0, 1.0));
    assert_same_bits(&outputs(&g, &x), &outputs(&opt, &x));
}

#[test]
fn crd_shuffle_spreads_a_per_channel_bias_in_place() {
    let mut g = Graph::new();
    let x = g.input("x", 2);
    let c = g.push("c", conv(1, 2, 8, 1, -1.0), vec![x]).expect("conv");
    let d = g
        .push(
            "d2s",
            Op::DepthToSpace {
                block: 2,
                mode: DepthToSpaceMode::Crd,
            },
            vec![c],
        )
        .expect("d2s");
    let b = add_const(&mut g, "bias", d, vec![10.0, 20.0]);
    let t = g
        .push("tanh", Op::Activation(Activation::Tanh), vec![b])
        .expect("tanh");
    g.output("out", t);
    let opt = optimize(&g).expect("optimize");
    let Op::Conv2d(conv) = &opt.nodes[1].op else {
        panic!("expected the convolution second, got {:?}", opt.op_counts());
    };
    assert_eq!(
        conv.epilogue.bias,
        Some(vec![10.0, 10.0, 10.0, 10.0, 20.0, 20.0, 20.0, 20.0]),
        "CRD: channel c of the output comes from input channels c*4 .. c*4+3"
    );
    assert_eq!(conv.epilogue.activation, Some(Activation::Tanh));
    assert_eq!(
        opt.op_counts(),
        [("Conv2d", 1), ("DepthToSpace", 1), ("Input", 1)]
    );
    let x = Tensor::image(3, 4, 2, values(24, 6, -0.1, 0.1));
    assert_same_bits(&outputs(&g, &x), &outputs(&opt, &x));
}

#[test]
fn dead_branches_are_removed() {
    let mut g = Graph::new();
    let x = g.input("x", 1);
    let dead = g
        .push("dead", conv(3, 1, 1, 1, 0.0), vec![x])
        .expect("dead conv");
    let _ = g
        .push("dead_relu", Op::Activation(Activation::Relu), vec![dead])
        .expect("relu");
    let c = g.push("c", conv(3, 1, 1, 2, 0.0), vec![x]).expect("conv");
    g.output("out", c);
    let opt = optimize(&g).expect("optimize");
    let names: Vec<&str> = opt.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["x", "c"]);
    assert_eq!(opt.outputs, [("out".to_string(), ValueId(1))]);
}

#[test]
fn explicit_padding_survives_optimisation() {
    let mut g = Graph::new();
    let x = g.input("x", 1);
    let mut c = Conv2d::same(2, 2, 1, 1, vec![1.0, 2.0, 3.0, 4.0], None);
    c.padding = Padding {
        top: 0,
        bottom: 1,
        left: 1,
        right: 0,
    };
    let c = g.push("c", Op::Conv2d(c), vec![x]).expect("conv");
    let y = add_const(&mut g, "b", c, vec![0.25]);
    g.output("out", y);
    let opt = optimize(&g).expect("optimize");
    assert_eq!(opt.op_counts(), [("Conv2d", 1), ("Input", 1)]);
    let x = Tensor::image(3, 3, 1, values(9, 8, -1.0, 1.0));
    assert_same_bits(&outputs(&g, &x), &outputs(&opt, &x));
}

#[test]
fn without_weights_keeps_the_topology_and_drops_only_convolution_weights() {
    let g = espcn_like(-1.0);
    let t = g.without_weights();
    assert_eq!(t.nodes.len(), g.nodes.len());
    assert_eq!(t.outputs, g.outputs);
    assert_eq!(t.receptive_field(), g.receptive_field());
    assert_eq!(t.macs_per_input_pixel(), g.macs_per_input_pixel());
    let mut convs = 0;
    for (a, b) in g.nodes.iter().zip(&t.nodes) {
        assert_eq!(
            (&a.name, &a.inputs, a.channels),
            (&b.name, &b.inputs, b.channels)
        );
        match (&a.op, &b.op) {
            (Op::Conv2d(a), Op::Conv2d(b)) => {
                convs += 1;
                assert!(!a.weights.is_empty() && b.weights.is_empty());
                assert_eq!((a.kh, a.kw, a.cin, a.cout), (b.kh, b.kw, b.cin, b.cout));
                assert_eq!(a.epilogue, b.epilogue);
            }
            (a, b) => assert_eq!(a, b),
        }
    }
    assert!(convs > 0, "the graph has convolutions");
    let weights: usize = g
        .nodes
        .iter()
        .map(|n| match &n.op {
            Op::Conv2d(c) => c.weights.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(g.parameter_count() - t.parameter_count(), weights);
}

#[test]
fn input_multiple_is_the_lcm_of_the_stride_denominators() {
    let strided = |stride: usize, cin: usize| {
        let mut c = Conv2d::same(
            stride,
            stride,
            cin,
            cin,
            vec![0.0; stride * stride * cin * cin],
            None,
        );
        c.stride = (stride, stride);
        c.padding = Padding::default();
        Op::Conv2d(c)
    };
    let mut g = Graph::new();
    let x = g.input("x", 1);
    g.output("out", x);
    assert_eq!(g.input_multiple(), 1);
    // Stride 2, then back up ×2, then stride 3 from the full-size grid: lcm(2, 3) = 6.
    let mut g = Graph::new();
    let x = g.input("x", 1);
    let a = g.push("s2", strided(2, 1), vec![x]).expect("s2");
    let up = nearest(&mut g, 2, a);
    let b = g.push("s3", strided(3, 1), vec![up]).expect("s3");
    g.output("out", b);
    assert_eq!(g.input_multiple(), 6);
    // Two stride-2 convolutions in a row: 4 (Real-ESRGAN ×1's pixel-unshuffle of 4).
    let mut g = Graph::new();
    let x = g.input("x", 1);
    let a = g.push("a", strided(2, 1), vec![x]).expect("a");
    let b = g.push("b", strided(2, 1), vec![a]).expect("b");
    g.output("out", b);
    assert_eq!(g.input_multiple(), 4);
}

/// Real-ESRGAN Compact's tail: `DepthToSpace(conv) + Resize(nearest, input)`, both modes.
#[test]
fn an_enlarged_input_added_after_a_shuffle_becomes_the_convolutions_residual() {
    for mode in [DepthToSpaceMode::Dcr, DepthToSpaceMode::Crd] {
        let mut g = Graph::new();
        let x = g.input("x", 3);
        let a = g
            .push("body", conv(3, 3, 8, 1, -1.0), vec![x])
            .expect("body");
        let p = g
            .push("act", Op::Activation(Activation::LeakyRelu(0.1)), vec![a])
            .expect("act");
        let c = g
            .push("last", conv(3, 8, 12, 2, -1.0), vec![p])
            .expect("last");
        let d = g
            .push("d2s", Op::DepthToSpace { block: 2, mode }, vec![c])
            .expect("d2s");
        let up = nearest(&mut g, 2, x);
        let s = g
            .push("add", Op::Binary(BinaryOp::Add), vec![up, d])
            .expect("add");
        g.output("out", s);
        let opt = optimize(&g).expect("optimize");
        assert_eq!(
            opt.op_counts(),
            [("Conv2d", 3), ("DepthToSpace", 1), ("Input", 1)],
            "{mode:?}: the resize and the add are gone"
        );
        let residual = opt.nodes.iter().find_map(|n| match &n.op {
            Op::Conv2d(c) if c.cout == 12 && c.kh == 3 => Some(c.epilogue.residual),
            _ => None,
        });
        assert_eq!(residual, Some(Some(1.0)), "{mode:?}");
        let x = Tensor::image(5, 7, 3, values(105, 9, -1.0, 1.0));
        assert_same_bits(&outputs(&g, &x), &outputs(&opt, &x));
    }
}
