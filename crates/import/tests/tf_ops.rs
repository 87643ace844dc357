//! Each supported TensorFlow op in a GraphDef built here, imported and executed by the
//! reference interpreter against values worked out by hand; plus the spelled-out PReLU and
//! leaky ReLU, residual and pixel-shuffle patterns through the optimiser.

mod common;

use common::{run, same_bits};
use prost::Message;
use superres_graph::{Activation, Graph, Op, Tensor};
use superres_import::tf::proto::{AttrValue, GraphDef, NodeDef, TensorProto};
use superres_import::{Family, ImportError, Overrides, import_unoptimized, load_bytes};

fn encode(nodes: Vec<NodeDef>) -> Vec<u8> {
    GraphDef { node: nodes }.encode_to_vec()
}

fn placeholder() -> NodeDef {
    NodeDef::new("IteratorGetNext", "Placeholder", &[]).with("dtype", AttrValue::dtype(1))
}

fn conv(name: &str, x: &str, filter: &str, padding: &str) -> NodeDef {
    NodeDef::new(name, "Conv2D", &[x, filter])
        .with("T", AttrValue::dtype(1))
        .with("data_format", AttrValue::s("NHWC"))
        .with("padding", AttrValue::s(padding))
        .with("strides", AttrValue::ints(&[1, 1, 1, 1]))
        .with("dilations", AttrValue::ints(&[1, 1, 1, 1]))
}

fn weights(name: &str, shape: &[i64], v: &[f32]) -> NodeDef {
    NodeDef::constant(name, TensorProto::f32_content(shape, v))
}

fn scalar(name: &str, v: f32) -> NodeDef {
    NodeDef::constant(name, TensorProto::f32_scalar(v))
}

fn nchw_output(x: &str) -> [NodeDef; 2] {
    [
        NodeDef::constant(
            "NCHW_output/perm",
            TensorProto::i32_content(&[4], &[0, 3, 1, 2]),
        ),
        NodeDef::new("NCHW_output", "Transpose", &[x, "NCHW_output/perm"]),
    ]
}

/// A 1×1 identity convolution over `c` channels, so that the image input's channel count
/// can be inferred and the op under test sees a conv output.
fn identity_conv(c: usize) -> [NodeDef; 2] {
    let mut w = vec![0.0; c * c];
    for i in 0..c {
        w[i * c + i] = 1.0;
    }
    [
        weights("eye", &[1, 1, c as i64, c as i64], &w),
        conv("conv", "IteratorGetNext", "eye", "SAME"),
    ]
}

fn import(nodes: Vec<NodeDef>) -> Graph {
    import_unoptimized(&encode(nodes), "test.pb")
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

fn image(h: usize, w: usize, c: usize, v: &[f32]) -> Tensor {
    Tensor::image(h, w, c, v.to_vec())
}

/// Runs the unoptimised and the optimised graph, checks they agree bit for bit and returns
/// the first output of the unoptimised one.
fn eval(g: &Graph, x: &Tensor) -> Tensor {
    let opt = superres_graph::passes::optimize(g).unwrap_or_else(|e| panic!("{e}"));
    let a = run(g, x);
    let b = run(&opt, x);
    for (p, q) in a.iter().zip(&b) {
        same_bits(p, q).unwrap_or_else(|e| panic!("optimised graph differs: {e}"));
    }
    a.into_iter().next().expect("an output")
}

fn assert_values(what: &str, got: &Tensor, shape: (usize, usize, usize), want: &[f32]) {
    assert_eq!(got.hwc(), Some(shape), "{what}: shape");
    assert_eq!(got.data(), want, "{what}: values");
}

#[test]
fn conv_same_odd_kernel_pads_one_on_each_side() {
    let mut nodes = vec![placeholder(), weights("w", &[3, 3, 1, 1], &[1.0; 9])];
    nodes.push(conv("conv", "IteratorGetNext", "w", "SAME"));
    nodes.extend(nchw_output("conv"));
    let g = import(nodes);
    assert_eq!(
        g.input_channels(),
        Some(1),
        "channels inferred from the kernel"
    );
    let x = image(2, 3, 1, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // 3×3 box sums with zero padding.
    assert_values(
        "box",
        &eval(&g, &x),
        (2, 3, 1),
        &[12.0, 21.0, 16.0, 12.0, 21.0, 16.0],
    );
}

#[test]
fn conv_same_even_kernel_pads_less_before_than_after() {
    let mut nodes = vec![placeholder(), weights("w", &[2, 2, 1, 1], &[1.0; 4])];
    nodes.push(conv("conv", "IteratorGetNext", "w", "SAME"));
    let g = import(nodes);
    let x = image(2, 3, 1, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    // 2×2: nothing before, one after.
    assert_values(
        "2x2",
        &eval(&g, &x),
        (2, 3, 1),
        &[12.0, 16.0, 9.0, 9.0, 11.0, 6.0],
    );

    let mut nodes = vec![placeholder(), weights("w", &[4, 4, 1, 1], &[1.0; 16])];
    nodes.push(conv("conv", "IteratorGetNext", "w", "SAME"));
    let g = import(nodes);
    let x = image(3, 3, 1, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    // 4×4 (LapSRN's upsampling kernels): one before, two after.
    let y = eval(&g, &x);
    assert_eq!(y.hwc(), Some((3, 3, 1)));
    assert_eq!(y.data()[0], 45.0, "rows/cols -1..=2 cover the whole image");
    assert_eq!(y.data()[4], 45.0, "rows/cols 0..=3");
    assert_eq!(y.data()[8], 5.0 + 6.0 + 8.0 + 9.0, "rows/cols 1..=4");
}

#[test]
fn conv_valid_with_stride_and_dilation_and_explicit_padding() {
    let mut nodes = vec![placeholder(), weights("w", &[1, 3, 1, 1], &[1.0; 3])];
    nodes.push(
        conv("conv", "IteratorGetNext", "w", "VALID")
            .with("strides", AttrValue::ints(&[1, 2, 2, 1])),
    );
    let g = import(nodes);
    let x = image(3, 5, 1, &(1..=15).map(|v| v as f32).collect::<Vec<_>>());
    assert_values(
        "valid stride 2",
        &eval(&g, &x),
        (2, 2, 1),
        &[6.0, 12.0, 36.0, 42.0],
    );

    let mut nodes = vec![placeholder(), weights("w", &[1, 2, 1, 1], &[1.0; 2])];
    nodes.push(
        conv("conv", "IteratorGetNext", "w", "SAME")
            .with("dilations", AttrValue::ints(&[1, 2, 2, 1])),
    );
    let g = import(nodes);
    let x = image(1, 4, 1, &[1.0, 2.0, 3.0, 4.0]);
    // Effective width 3: in[x-1] + in[x+1].
    assert_values("dilated", &eval(&g, &x), (1, 4, 1), &[2.0, 4.0, 6.0, 3.0]);

    let mut nodes = vec![placeholder(), weights("w", &[1, 1, 1, 1], &[2.0])];
    nodes.push(conv("conv", "IteratorGetNext", "w", "EXPLICIT").with(
        "explicit_paddings",
        AttrValue::ints(&[0, 0, 1, 0, 0, 2, 0, 0]),
    ));
    let g = import(nodes);
    let x = image(1, 2, 1, &[1.0, 2.0]);
    assert_values(
        "explicit",
        &eval(&g, &x),
        (2, 4, 1),
        &[0.0, 0.0, 0.0, 0.0, 2.0, 4.0, 0.0, 0.0],
    );
}

#[test]
fn conv_same_with_stride_is_refused() {
    let mut nodes = vec![placeholder(), weights("w", &[3, 3, 1, 1], &[1.0; 9])];
    nodes.push(
        conv("conv", "IteratorGetNext", "w", "SAME")
            .with("strides", AttrValue::ints(&[1, 2, 2, 1])),
    );
    let err = import_unoptimized(&encode(nodes), "s.pb").expect_err("SAME stride 2");
    assert!(
        matches!(err, ImportError::UnsupportedOp { ref node, .. } if node == "conv"),
        "{err}"
    );
}

#[test]
fn elementwise_ops_with_images_scalars_and_per_channel_constants() {
    // Two channels: x = [[1, -2], [-3, 4]] (one pixel per row).
    let x = image(2, 1, 2, &[1.0, -2.0, -3.0, 4.0]);
    let cases: Vec<(&str, Vec<NodeDef>, Vec<f32>)> = vec![
        (
            "BiasAdd per channel",
            vec![
                weights("b", &[2], &[10.0, 20.0]),
                NodeDef::new("y", "BiasAdd", &["conv", "b"])
                    .with("data_format", AttrValue::s("NHWC")),
            ],
            vec![11.0, 18.0, 7.0, 24.0],
        ),
        (
            "Add scalar",
            vec![scalar("k", 0.5), NodeDef::new("y", "Add", &["conv", "k"])],
            vec![1.5, -1.5, -2.5, 4.5],
        ),
        (
            "Mul const first",
            vec![
                weights("k", &[2], &[2.0, -1.0]),
                NodeDef::new("y", "Mul", &["k", "conv"]),
            ],
            vec![2.0, 2.0, -6.0, -4.0],
        ),
        (
            "Sub const",
            vec![
                weights("k", &[1, 1, 1, 2], &[1.0, 2.0]),
                NodeDef::new("y", "Sub", &["conv", "k"]),
            ],
            vec![0.0, -4.0, -4.0, 2.0],
        ),
        (
            "Sub from const",
            vec![scalar("k", 1.0), NodeDef::new("y", "Sub", &["k", "conv"])],
            vec![0.0, 3.0, 4.0, -3.0],
        ),
        (
            "Add of two images",
            vec![NodeDef::new("y", "AddV2", &["conv", "conv"])],
            vec![2.0, -4.0, -6.0, 8.0],
        ),
        (
            "Mul of two images",
            vec![NodeDef::new("y", "Mul", &["conv", "conv"])],
            vec![1.0, 4.0, 9.0, 16.0],
        ),
        (
            "Abs",
            vec![NodeDef::new("y", "Abs", &["conv"])],
            vec![1.0, 2.0, 3.0, 4.0],
        ),
        (
            "Neg",
            vec![NodeDef::new("y", "Neg", &["conv"])],
            vec![-1.0, 2.0, 3.0, -4.0],
        ),
        (
            "Relu",
            vec![NodeDef::new("y", "Relu", &["conv"])],
            vec![1.0, 0.0, 0.0, 4.0],
        ),
        (
            "Tanh",
            vec![NodeDef::new("y", "Tanh", &["conv"])],
            vec![1f32.tanh(), (-2f32).tanh(), (-3f32).tanh(), 4f32.tanh()],
        ),
        (
            "Identity",
            vec![NodeDef::new("y", "Identity", &["conv"])],
            vec![1.0, -2.0, -3.0, 4.0],
        ),
    ];
    for (what, extra, want) in cases {
        let mut nodes = vec![placeholder()];
        nodes.extend(identity_conv(2));
        nodes.extend(extra);
        nodes.extend(nchw_output("y"));
        let g = import(nodes);
        assert_values(what, &eval(&g, &x), (2, 1, 2), &want);
    }
}

#[test]
fn depth_to_space_is_dcr() {
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(8));
    nodes.push(
        NodeDef::new("y", "DepthToSpace", &["conv"])
            .with("block_size", AttrValue::i(2))
            .with("data_format", AttrValue::s("NHWC")),
    );
    let g = import(nodes);
    let x = image(1, 1, 8, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    // out[i, j, c] = in[(i*2 + j)*2 + c]
    assert_values(
        "d2s",
        &eval(&g, &x),
        (2, 2, 2),
        &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
    );
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(2));
}

#[test]
fn dequantize_min_first_folds_as_opencv_does() {
    let q: Vec<u8> = vec![0, 1, 126, 127, 254, 255];
    // scale = (max - min) / 255 = 1/128 exactly and min / scale = -126.5, a tie that
    // cvRound breaks to even (-126, not -127): the grid is w = (q - 126) / 128.
    let (lo, hi) = (-126.5f32 / 128.0, 128.5f32 / 128.0);
    let mut nodes = vec![placeholder()];
    nodes.push(NodeDef::constant(
        "w_quantized_const",
        TensorProto::quint8_content(&[1, 1, 1, 6], &q),
    ));
    nodes.push(NodeDef::constant(
        "w_quantized_min",
        TensorProto::f32_content(&[], &[lo]),
    ));
    nodes.push(NodeDef::constant(
        "w_quantized_max",
        TensorProto::f32_content(&[], &[hi]),
    ));
    nodes.push(
        NodeDef::new(
            "w",
            "Dequantize",
            &["w_quantized_const", "w_quantized_min", "w_quantized_max"],
        )
        .with("T", AttrValue::dtype(12))
        .with("mode", AttrValue::s("MIN_FIRST")),
    );
    nodes.push(conv("conv", "IteratorGetNext", "w", "SAME"));
    let g = import(nodes);
    let Op::Conv2d(c) = &g.nodes[g.outputs[0].1.0].op else {
        panic!("the output is not the convolution");
    };
    let want: Vec<f32> = [-126.0f32, -125.0, 0.0, 1.0, 128.0, 129.0]
        .iter()
        .map(|v| v / 128.0)
        .collect();
    assert_eq!(c.weights, want);
    assert_eq!(superres_import::tf::dequantize_min_first(&q, lo, hi), want);

    let mut bad = vec![placeholder()];
    bad.push(NodeDef::constant(
        "q",
        TensorProto::quint8_content(&[1, 1, 1, 1], &[3]),
    ));
    bad.push(scalar("lo", 0.0));
    bad.push(scalar("hi", 1.0));
    bad.push(
        NodeDef::new("w", "Dequantize", &["q", "lo", "hi"]).with("mode", AttrValue::s("SCALED")),
    );
    bad.push(conv("conv", "IteratorGetNext", "w", "SAME"));
    let err = import_unoptimized(&encode(bad), "q.pb").expect_err("SCALED mode");
    assert!(err.to_string().contains("MIN_FIRST"), "{err}");
}

#[test]
fn constants_from_float_val_int_val_and_tensor_content() {
    // A 1×1×1×2 kernel from a single float_val (TensorFlow repeats the last value).
    let mut t = TensorProto::f32_scalar(3.0);
    t.tensor_shape = Some(superres_import::tf::proto::TensorShapeProto::from_dims(&[
        1, 1, 1, 2,
    ]));
    let mut nodes = vec![placeholder(), NodeDef::constant("w", t)];
    nodes.push(conv("conv", "IteratorGetNext", "w", "SAME"));
    let g = import(nodes);
    assert_values(
        "float_val fill",
        &eval(&g, &image(1, 1, 1, &[2.0])),
        (1, 1, 2),
        &[6.0, 6.0],
    );

    // quint8 from int_val, dequantised.
    let q = TensorProto {
        dtype: 12,
        tensor_shape: Some(superres_import::tf::proto::TensorShapeProto::from_dims(&[
            1, 1, 1, 1,
        ])),
        int_val: vec![255],
        ..TensorProto::default()
    };
    let mut nodes = vec![
        placeholder(),
        NodeDef::constant("q", q),
        scalar("lo", 0.0),
        scalar("hi", 2.0),
    ];
    nodes.push(
        NodeDef::new("w", "Dequantize", &["q", "lo", "hi"]).with("mode", AttrValue::s("MIN_FIRST")),
    );
    nodes.push(conv("conv", "IteratorGetNext", "w", "SAME"));
    let g = import(nodes);
    let y = eval(&g, &image(1, 1, 1, &[1.0]));
    assert_eq!(y.data(), &[255.0 * (2.0f32 / 255.0)]);

    // A kernel whose tensor_content is one byte short is corrupt, not a panic.
    let mut t = TensorProto::f32_content(&[1, 1, 1, 2], &[1.0, 2.0]);
    t.tensor_content.pop();
    let nodes = vec![
        placeholder(),
        NodeDef::constant("w", t),
        conv("conv", "IteratorGetNext", "w", "SAME"),
    ];
    let err = import_unoptimized(&encode(nodes), "short.pb").expect_err("short tensor_content");
    assert!(
        err.to_string().contains("tensor_content has 7 bytes"),
        "{err}"
    );
}

#[test]
fn file_order_need_not_be_topological_and_input_channels_come_through_identity() {
    let mut nodes = vec![
        placeholder(),
        NodeDef::new("id", "Identity", &["IteratorGetNext"]),
    ];
    nodes.push(weights(
        "w",
        &[1, 1, 3, 3],
        &[1.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 100.0],
    ));
    nodes.push(conv("conv", "id", "w", "VALID"));
    nodes.extend(nchw_output("conv"));
    nodes.reverse();
    let bytes = encode(nodes);
    let m = load_bytes(&bytes, "rev.pb", Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.graph.input_channels(), Some(3));
    assert_eq!(
        m.family,
        Family::Edsr,
        "three channels from a GraphDef are EDSR's BGR"
    );
    assert_eq!(m.scale, 1);
    let y = run(&m.graph, &image(1, 1, 3, &[1.0, 2.0, 3.0])).remove(0);
    assert_eq!(y.data(), &[1.0, 20.0, 300.0]);
}

#[test]
fn outputs_are_the_nchw_transposes_full_scale_first_else_unconsumed_nodes() {
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(4));
    nodes.push(NodeDef::new("d2s", "DepthToSpace", &["conv"]).with("block_size", AttrValue::i(2)));
    nodes.push(NodeDef::constant(
        "p",
        TensorProto::i32_content(&[4], &[0, 3, 1, 2]),
    ));
    nodes.push(NodeDef::new("NCHW_output_1x", "Transpose", &["conv", "p"]));
    nodes.push(NodeDef::new("NCHW_output", "Transpose", &["d2s", "p"]));
    let g = import(nodes);
    let names: Vec<&str> = g.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["NCHW_output", "NCHW_output_1x"]);
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(2));

    // Without NCHW_output: the unconsumed operator, not the unused constant.
    let mut nodes = vec![placeholder(), scalar("unused", 1.0)];
    nodes.extend(identity_conv(1));
    nodes.push(NodeDef::new("relu", "Relu", &["conv"]));
    let g = import(nodes);
    let names: Vec<&str> = g.outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["relu"]);
}

#[test]
fn other_transposes_are_refused_with_the_node_named() {
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(1));
    nodes.push(NodeDef::constant(
        "p",
        TensorProto::i32_content(&[4], &[0, 2, 1, 3]),
    ));
    nodes.push(NodeDef::new("NCHW_output", "Transpose", &["conv", "p"]));
    let err = import_unoptimized(&encode(nodes), "t.pb").expect_err("perm [0,2,1,3]");
    let msg = err.to_string();
    assert!(
        msg.contains("t.pb") && msg.contains("NCHW_output") && msg.contains("permutation"),
        "{msg}"
    );

    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(1));
    nodes.push(NodeDef::constant(
        "p",
        TensorProto::i32_content(&[4], &[0, 3, 1, 2]),
    ));
    nodes.push(NodeDef::new("mid", "Transpose", &["conv", "p"]));
    nodes.push(NodeDef::new("relu", "Relu", &["mid"]));
    let err = import_unoptimized(&encode(nodes), "t.pb").expect_err("transpose inside");
    assert!(
        matches!(err, ImportError::UnsupportedOp { ref node, .. } if node == "mid"),
        "{err}"
    );
}

#[test]
fn unsupported_ops_and_dangling_inputs_name_file_node_and_op() {
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(1));
    nodes.push(NodeDef::new("pool", "MaxPool", &["conv"]));
    let err = import_unoptimized(&encode(nodes), "pool.pb").expect_err("MaxPool");
    match &err {
        ImportError::UnsupportedOp { file, node, op, .. } => {
            assert_eq!(
                (file.as_str(), node.as_str(), op.as_str()),
                ("pool.pb", "pool", "MaxPool")
            );
        }
        other => panic!("expected UnsupportedOp, got {other}"),
    }
    assert!(
        err.to_string().contains("unsupported op 'MaxPool'"),
        "{err}"
    );

    let nodes = vec![placeholder(), NodeDef::new("relu", "Relu", &["nowhere"])];
    let err = import_unoptimized(&encode(nodes), "d.pb").expect_err("dangling input");
    assert!(err.to_string().contains("'nowhere' is not a node"), "{err}");

    // Without any convolution the input's channel count cannot be known.
    let nodes = vec![
        placeholder(),
        NodeDef::new("relu", "Relu", &["IteratorGetNext"]),
    ];
    let err = import_unoptimized(&encode(nodes), "c.pb").expect_err("no conv");
    assert!(err.to_string().contains("input channels"), "{err}");
}

/// FSRCNN's PReLU exactly as the files spell it (`Mul(alpha, sub)` with the constant first).
fn prelu_nodes(x: &str, alpha: &[f32]) -> Vec<NodeDef> {
    vec![
        weights("alpha", &[alpha.len() as i64], alpha),
        NodeDef::new("Abs", "Abs", &[x]),
        NodeDef::new("sub", "Sub", &[x, "Abs"]),
        NodeDef::new("mul", "Mul", &["alpha", "sub"]),
        scalar("mul_1/y", 0.5),
        NodeDef::new("mul_1", "Mul", &["mul", "mul_1/y"]),
        NodeDef::new("Relu", "Relu", &[x]),
        NodeDef::new("add_1", "Add", &["Relu", "mul_1"]),
    ]
}

/// LapSRN's leaky ReLU exactly as the files spell it.
fn leaky_nodes(x: &str) -> Vec<NodeDef> {
    vec![
        scalar("mul/x", -1.0),
        NodeDef::new("mul", "Mul", &["mul/x", x]),
        NodeDef::new("Relu_1", "Relu", &["mul"]),
        scalar("mul_1/x", 0.2),
        NodeDef::new("mul_1", "Mul", &["mul_1/x", "Relu_1"]),
        NodeDef::new("Relu", "Relu", &[x]),
        NodeDef::new("sub", "Sub", &["Relu", "mul_1"]),
    ]
}

fn fused_activation(g: &Graph) -> Option<Activation> {
    g.nodes.iter().find_map(|n| match &n.op {
        Op::Conv2d(c) => c.epilogue.activation.clone(),
        _ => None,
    })
}

#[test]
fn spelled_out_prelu_computes_prelu_and_fuses_into_the_convolution() {
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(2));
    nodes.extend(prelu_nodes("conv", &[0.25, -0.5]));
    nodes.extend(nchw_output("add_1"));
    let g = import(nodes);
    let x = image(2, 2, 2, &[1.0, -2.0, -4.0, 3.0, 0.0, -0.5, 7.5, 1e-3]);
    let want = [1.0, 1.0, -1.0, 3.0, 0.0, 0.25, 7.5, 1e-3];
    assert_values("prelu", &eval(&g, &x), (2, 2, 2), &want);
    let opt = superres_graph::passes::optimize(&g).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fused_activation(&opt),
        Some(Activation::PRelu(vec![0.25, -0.5]))
    );
    assert_eq!(
        opt.nodes.len(),
        2,
        "only the input and the convolution remain: {:?}",
        opt.op_counts()
    );
}

#[test]
fn spelled_out_leaky_relu_computes_leaky_relu_and_fuses_into_the_convolution() {
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(1));
    nodes.extend(leaky_nodes("conv"));
    nodes.extend(nchw_output("sub"));
    let g = import(nodes);
    let x = image(1, 4, 1, &[2.0, -2.0, 0.0, -0.7]);
    let want = [2.0, 0.2f32 * -2.0, 0.0, 0.2f32 * -0.7];
    assert_values("leaky", &eval(&g, &x), (1, 4, 1), &want);
    let opt = superres_graph::passes::optimize(&g).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fused_activation(&opt), Some(Activation::LeakyRelu(0.2)));
    assert_eq!(opt.nodes.len(), 2, "{:?}", opt.op_counts());
}

#[test]
fn patterns_are_left_alone_when_an_intermediate_value_has_another_reader() {
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(2));
    nodes.extend(prelu_nodes("conv", &[0.25, -0.5]));
    nodes.extend(nchw_output("add_1"));
    // `sub` (x - |x|) is also a graph output.
    nodes.push(NodeDef::constant(
        "p2",
        TensorProto::i32_content(&[4], &[0, 3, 1, 2]),
    ));
    nodes.push(NodeDef::new("NCHW_output_sub", "Transpose", &["sub", "p2"]));
    let g = import(nodes);
    let x = image(1, 2, 2, &[1.0, -2.0, -4.0, 3.0]);
    let y = eval(&g, &x);
    assert_eq!(y.data(), &[1.0, 1.0, -1.0, 3.0]);
    let opt = superres_graph::passes::optimize(&g).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !opt.nodes
            .iter()
            .any(|n| matches!(n.op, Op::Activation(Activation::PRelu(_)))),
        "PReLU must not be recognised while `sub` is read elsewhere"
    );
    assert_eq!(fused_activation(&opt), None);
}

#[test]
fn edsr_residual_scaling_fuses_into_the_convolution() {
    // skip = conv(x) + b0; y = skip + 0.1 * (conv2(skip) + b1)
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(2));
    nodes.push(weights("b0", &[2], &[1.0, -1.0]));
    nodes.push(NodeDef::new("add", "Add", &["conv", "b0"]));
    nodes.push(weights("w2", &[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]));
    nodes.push(conv("conv2", "add", "w2", "SAME"));
    nodes.push(weights("b1", &[2], &[0.5, 0.25]));
    nodes.push(NodeDef::new("add_1", "Add", &["conv2", "b1"]));
    nodes.push(scalar("mul/y", 0.1));
    nodes.push(NodeDef::new("mul", "Mul", &["add_1", "mul/y"]));
    nodes.push(NodeDef::new("add_2", "Add", &["add", "mul"]));
    nodes.extend(nchw_output("add_2"));
    let g = import(nodes);
    let x = image(1, 1, 2, &[1.0, 2.0]);
    // skip = [2, 1]; conv2 = [2*1 + 1*3, 2*2 + 1*4] = [5, 8]; + b1 = [5.5, 8.25]
    let want = [2.0 + 5.5f32 * 0.1, 1.0 + 8.25f32 * 0.1];
    assert_values("residual", &eval(&g, &x), (1, 1, 2), &want);
    let opt = superres_graph::passes::optimize(&g).unwrap_or_else(|e| panic!("{e}"));
    let residual: Vec<Option<f32>> = opt
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv2d(c) => Some(c.epilogue.residual),
            _ => None,
        })
        .collect();
    assert_eq!(residual, [None, Some(0.1)]);
    assert_eq!(opt.nodes.len(), 3, "{:?}", opt.op_counts());
}

#[test]
fn bias_after_the_pixel_shuffle_moves_before_it_repeated_per_sub_pixel() {
    // FSRCNN's tail: conv (no bias) -> DepthToSpace(2) -> BiasAdd(per channel, C = 2).
    let mut nodes = vec![placeholder()];
    nodes.extend(identity_conv(8));
    nodes.push(
        NodeDef::new("DepthToSpace", "DepthToSpace", &["conv"]).with("block_size", AttrValue::i(2)),
    );
    nodes.push(weights("b8", &[2], &[100.0, 200.0]));
    nodes.push(NodeDef::new(
        "NHWC_output",
        "BiasAdd",
        &["DepthToSpace", "b8"],
    ));
    nodes.push(NodeDef::new("tanh", "Tanh", &["NHWC_output"]));
    nodes.extend(nchw_output("NHWC_output"));
    let g = import(nodes);
    let x = image(1, 1, 8, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let want = [100.0, 201.0, 102.0, 203.0, 104.0, 205.0, 106.0, 207.0];
    assert_values("d2s bias", &eval(&g, &x), (2, 2, 2), &want);
    let opt = superres_graph::passes::optimize(&g).unwrap_or_else(|e| panic!("{e}"));
    let bias = opt.nodes.iter().find_map(|n| match &n.op {
        Op::Conv2d(c) => c.epilogue.bias.clone(),
        _ => None,
    });
    assert_eq!(
        bias,
        Some(vec![100.0, 200.0, 100.0, 200.0, 100.0, 200.0, 100.0, 200.0])
    );
    assert_eq!(
        opt.op_counts(),
        [("Conv2d", 1), ("DepthToSpace", 1), ("Input", 1)]
    );
}
