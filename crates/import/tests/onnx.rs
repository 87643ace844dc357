//! ONNX import checked against ONNX Runtime.
//!
//! The fixtures are written by `tools/onnx_fixtures/make_srvgg.py`: small ONNX graphs, an
//! NCHW input and ONNX Runtime's outputs as `.npy`. Each test imports a graph, runs it with
//! the reference interpreter and compares every output with ONNX Runtime's within
//! `|ours - ort| <= ATOL + RTOL·|ort|`.

use std::path::PathBuf;

use prost::Message;
use superres_graph::{Graph, Tensor};
use superres_import::ImportError;
use superres_import::onnx::{self, proto};
use superres_testdata::{nchw_to_hwc, read_npy};

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    let p = fixture(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn import(name: &str) -> Graph {
    onnx::import(&read(name), name).unwrap_or_else(|e| panic!("importing {name}: {e}"))
}

fn npy_image(name: &str) -> Tensor {
    let npy = read_npy(&fixture(name)).unwrap_or_else(|e| panic!("{e}"));
    let (h, w, c, data) = nchw_to_hwc(&npy);
    Tensor::image(h, w, c, data)
}

/// Imports `<stem>.onnx`, runs it on `<stem>_in.npy` and compares output `k` with
/// `<expected>_out<k>.npy`.
fn check_against(stem: &str, expected: &str) -> Graph {
    let g = import(&format!("{stem}.onnx"));
    let x = npy_image(&format!("{expected}_in.npy"));
    let outs = superres_engine::cpu::reference::run(&g, &x)
        .unwrap_or_else(|e| panic!("{stem}: running the imported graph: {e}"));
    assert!(!outs.is_empty(), "{stem}: no outputs");
    for (k, (got, (name, _))) in outs.iter().zip(&g.outputs).enumerate() {
        let want = npy_image(&format!("{expected}_out{k}.npy"));
        assert_eq!(
            got.shape(),
            want.shape(),
            "{stem}: output {k} ('{name}') has shape [H, W, C] {:?}, ONNX Runtime gives {:?}",
            got.shape(),
            want.shape()
        );
        let mut worst = (0.0f32, 0usize);
        for (i, (&a, &b)) in got.data().iter().zip(want.data()).enumerate() {
            let excess = (a - b).abs() - (ATOL + RTOL * b.abs());
            let excess = if excess.is_nan() {
                f32::INFINITY
            } else {
                excess
            };
            if excess > worst.0 {
                worst = (excess, i);
            }
        }
        let i = worst.1;
        assert!(
            worst.0 <= 0.0,
            "{stem}: output {k} ('{name}') differs from ONNX Runtime at flat HWC index {i}: \
             got {}, expected {} (tolerance {ATOL} + {RTOL}·|expected|)",
            got.data()[i],
            want.data()[i]
        );
    }
    let expected_outputs = (0..)
        .take_while(|k| fixture(&format!("{expected}_out{k}.npy")).exists())
        .count();
    assert_eq!(
        outs.len(),
        expected_outputs,
        "{stem}: number of outputs differs from ONNX Runtime's"
    );
    g
}

fn check(stem: &str) -> Graph {
    check_against(stem, stem)
}

fn count(g: &Graph, kind: &str) -> usize {
    g.op_counts()
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, n)| n)
}

#[test]
fn srvgg_compact_x4_matches_onnx_runtime() {
    let g = check("srvgg_compact_x4");
    assert_eq!(g.input_channels(), Some(3));
    assert_eq!(
        g.scale_factor(g.outputs[0].1),
        Some(4),
        "scale of the output"
    );
    assert_eq!(count(&g, "Conv2d"), 6, "{:?}", g.op_counts());
    assert_eq!(count(&g, "PRelu"), 5, "{:?}", g.op_counts());
    assert_eq!(count(&g, "DepthToSpace"), 1, "{:?}", g.op_counts());
    assert_eq!(count(&g, "Resize"), 1, "{:?}", g.op_counts());
    assert_eq!(count(&g, "Add"), 1, "{:?}", g.op_counts());
    g.validate().expect("the imported graph validates");
}

#[test]
fn srvgg_with_reshape_transpose_pixel_shuffle_matches_onnx_runtime() {
    let g = check_against("srvgg_compact_x4_reshape", "srvgg_compact_x4");
    let d2s = g
        .nodes
        .iter()
        .find(|n| n.op.kind() == "DepthToSpace")
        .expect("the Reshape/Transpose/Reshape became a DepthToSpace");
    assert_eq!(
        d2s.op,
        superres_graph::Op::DepthToSpace {
            block: 4,
            mode: superres_graph::DepthToSpaceMode::Crd
        }
    );
    // Same weights, same graph as the DepthToSpace variant apart from names.
    let plain = import("srvgg_compact_x4.onnx");
    let kinds = |g: &Graph| g.nodes.iter().map(|n| n.op.clone()).collect::<Vec<_>>();
    assert_eq!(
        kinds(&g),
        kinds(&plain),
        "the two exports import to different operators"
    );
}

#[test]
fn conv_with_asymmetric_pads_and_inline_weights() {
    check("op_conv_pads");
}

#[test]
fn conv_with_stride_dilation_and_groups() {
    check("op_conv_stride_group");
}

#[test]
fn conv_with_auto_pad() {
    check("op_conv_autopad");
}

#[test]
fn conv_transpose_lowered_to_conv_and_depth_to_space() {
    let g = check("op_conv_transpose");
    for (name, v) in &g.outputs {
        assert_eq!(g.node(*v).op.kind(), "DepthToSpace", "output {name}");
    }
}

#[test]
fn binary_operators() {
    check("op_binary");
}

#[test]
fn activations() {
    check("op_activations");
}

#[test]
fn clip_with_attributes_at_opset_10() {
    check("op_clip_attrs");
}

#[test]
fn depth_to_space_dcr_and_crd() {
    check("op_depth_to_space");
}

#[test]
fn resize_by_scales_and_sizes() {
    check("op_resize");
}

#[test]
fn upsample_at_opset_9() {
    check("op_upsample");
}

#[test]
fn concat_constant_and_identity() {
    check("op_concat_constant");
}

#[test]
fn resize_sizes_from_a_shape_subgraph() {
    let g = check("op_shape_subgraph");
    assert_eq!(
        g.nodes.len(),
        2,
        "the shape subgraph folds away: {:?}",
        g.op_counts()
    );
}

// ----- refusals --------------------------------------------------------------------------

fn import_err(name: &str) -> ImportError {
    match onnx::import(&read(name), name) {
        Ok(g) => panic!(
            "{name}: imported although it should fail: {:?}",
            g.op_counts()
        ),
        Err(e) => e,
    }
}

#[test]
fn unsupported_op_names_file_node_and_op() {
    let e = import_err("bad_unsupported_op.onnx");
    match &e {
        ImportError::UnsupportedOp { file, node, op, .. } => {
            assert_eq!(file, "bad_unsupported_op.onnx");
            assert_eq!(node, "my_softmax");
            assert_eq!(op, "Softmax");
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("my_softmax") && msg.contains("Softmax") && msg.contains("bad_unsupported_op"),
        "message: {msg}"
    );
}

#[test]
fn external_data_is_refused_clearly() {
    let e = import_err("bad_external_data.onnx");
    assert!(
        matches!(e, ImportError::InvalidModel { .. }) && e.to_string().contains("external"),
        "got {e:?}"
    );
}

#[test]
fn reshape_that_is_not_a_pixel_shuffle_is_refused() {
    match import_err("bad_reshape.onnx") {
        ImportError::UnsupportedOp {
            node, op, detail, ..
        } => {
            assert_eq!((node.as_str(), op.as_str()), ("flatten_it", "Reshape"));
            assert!(
                detail
                    .as_deref()
                    .is_some_and(|d| d.contains("pixel shuffle")),
                "detail: {detail:?}"
            );
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
}

#[test]
fn truncated_files_fail_without_panicking() {
    for name in [
        "srvgg_compact_x4_reshape.onnx",
        "op_resize.onnx",
        "op_binary.onnx",
    ] {
        let bytes = read(name);
        let cuts = (0..bytes.len().min(300)).chain((300..bytes.len()).step_by(61));
        for cut in cuts {
            if let Ok(g) = onnx::import(&bytes[..cut], name) {
                panic!(
                    "{name} truncated to {cut} of {} bytes imported: {:?}",
                    bytes.len(),
                    g.op_counts()
                );
            }
        }
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn random_and_mutated_bytes_do_not_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..500 {
        let len = (rng.next() % 2048) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = onnx::import(&bytes, "random.onnx");
    }
    for name in [
        "srvgg_compact_x4_reshape.onnx",
        "op_shape_subgraph.onnx",
        "op_conv_transpose.onnx",
        "op_resize.onnx",
    ] {
        let base = read(name);
        for _ in 0..400 {
            let mut bytes = base.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % bytes.len();
                bytes[i] = rng.next() as u8;
            }
            let _ = onnx::import(&bytes, name);
        }
    }
}

#[test]
fn empty_and_non_onnx_bytes_are_errors() {
    assert!(onnx::import(&[], "empty.onnx").is_err());
    assert!(onnx::import(b"\x08\x01garbage that is not protobuf", "junk.onnx").is_err());
}

// ----- hand-built models -------------------------------------------------------------------

fn value_info(name: &str, dims: &[i64]) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TypeProtoTensor {
                elem_type: proto::data_type::FLOAT,
                shape: Some(proto::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| proto::Dimension {
                            dim_value: (d > 0).then_some(d),
                            dim_param: (d <= 0).then(|| "dyn".to_string()),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn model(opset: i64, nodes: Vec<proto::NodeProto>, inits: Vec<proto::TensorProto>) -> Vec<u8> {
    proto::ModelProto {
        ir_version: 8,
        opset_import: vec![proto::OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: "test".into(),
        graph: Some(proto::GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: inits,
            input: vec![value_info("x", &[1, 3, -1, -1])],
            output: vec![value_info("y", &[1, 3, -1, -1])],
        }),
    }
    .encode_to_vec()
}

fn node(op: &str, name: &str, inputs: &[&str]) -> proto::NodeProto {
    proto::NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["y".into()],
        name: name.into(),
        op_type: op.into(),
        ..Default::default()
    }
}

#[test]
fn opset_outside_the_supported_range_is_refused() {
    let bytes = model(30, vec![node("Relu", "r", &["x"])], vec![]);
    let e = onnx::import(&bytes, "m.onnx").expect_err("opset 30");
    assert!(e.to_string().contains("opset 30"), "{e}");
    let ok = model(13, vec![node("Relu", "r", &["x"])], vec![]);
    onnx::import(&ok, "m.onnx").expect("a Relu at opset 13 imports");
}

#[test]
fn inconsistent_initializer_is_reported_as_corrupt() {
    let w = proto::TensorProto {
        dims: vec![3, 3, 3, 3],
        data_type: proto::data_type::FLOAT,
        name: "w".into(),
        raw_data: vec![0; 12],
        ..Default::default()
    };
    let bytes = model(13, vec![node("Conv", "c", &["x", "w"])], vec![w]);
    match onnx::import(&bytes, "m.onnx") {
        Err(ImportError::Corrupt { reason, .. }) => {
            assert!(
                reason.contains("'w'") && reason.contains("raw_data"),
                "{reason}"
            )
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn conv_with_computed_weights_and_dangling_inputs_are_refused() {
    let bytes = model(13, vec![node("Conv", "c", &["x", "x"])], vec![]);
    match onnx::import(&bytes, "m.onnx") {
        Err(ImportError::UnsupportedOp { node, op, .. }) => {
            assert_eq!((&*node, &*op), ("c", "Conv"))
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
    let bytes = model(13, vec![node("Relu", "r", &["nowhere"])], vec![]);
    match onnx::import(&bytes, "m.onnx") {
        Err(ImportError::InvalidNode { node, message, .. }) => {
            assert_eq!(node, "r");
            assert!(message.contains("nowhere"), "{message}");
        }
        other => panic!("expected InvalidNode, got {other:?}"),
    }
}

#[test]
fn per_width_constant_is_not_mistaken_for_per_channel() {
    // A [3] constant broadcasts along W in ONNX, not along channels.
    let k = proto::TensorProto {
        dims: vec![3],
        data_type: proto::data_type::FLOAT,
        name: "k".into(),
        float_data: vec![1.0, 2.0, 3.0],
        ..Default::default()
    };
    let bytes = model(13, vec![node("Add", "add", &["x", "k"])], vec![k]);
    match onnx::import(&bytes, "m.onnx") {
        Err(ImportError::UnsupportedOp { node, detail, .. }) => {
            assert_eq!(node, "add");
            assert!(detail.is_some_and(|d| d.contains("per channel")));
        }
        other => panic!("expected UnsupportedOp, got {other:?}"),
    }
}

fn int_attr(name: &str, i: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        r#type: proto::attr_type::INT,
        i,
        ..Default::default()
    }
}

fn ints_attr(name: &str, ints: &[i64]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        r#type: proto::attr_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

#[test]
fn implausible_attributes_are_errors_not_overflows() {
    let mut d2s = node("DepthToSpace", "d2s", &["x"]);
    d2s.attribute = vec![int_attr("blocksize", 1 << 33)];
    let e = onnx::import(&model(13, vec![d2s], vec![]), "m.onnx").expect_err("huge block");
    assert!(e.to_string().contains("blocksize"), "{e}");

    let w = proto::TensorProto {
        dims: vec![3, 3, 1, 1],
        data_type: proto::data_type::FLOAT,
        name: "w".into(),
        float_data: vec![0.5; 9],
        ..Default::default()
    };
    let huge = 1i64 << 40;
    for attrs in [
        vec![
            ints_attr("strides", &[huge, huge]),
            ints_attr("output_padding", &[huge - 1, huge - 1]),
        ],
        vec![
            ints_attr("strides", &[1000, 1000]),
            ints_attr("output_padding", &[999, 999]),
        ],
        vec![ints_attr("pads", &[-1, 0, 0, 0])],
    ] {
        let mut ct = node("ConvTranspose", "deconv", &["x", "w"]);
        ct.attribute = attrs.clone();
        let e = onnx::import(&model(13, vec![ct], vec![w.clone()]), "m.onnx")
            .expect_err("implausible ConvTranspose");
        assert!(
            matches!(&e, ImportError::UnsupportedOp { node, .. } if node == "deconv"),
            "{attrs:?}: {e:?}"
        );
    }
}

#[test]
fn float16_constants_are_converted() {
    // [1, 3, 1, 1] float16 per-channel offsets 1.0, -2.0, 0.5 (raw little-endian).
    let k = proto::TensorProto {
        dims: vec![1, 3, 1, 1],
        data_type: proto::data_type::FLOAT16,
        name: "k".into(),
        raw_data: vec![0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38],
        ..Default::default()
    };
    let g = onnx::import(
        &model(13, vec![node("Add", "add", &["x", "k"])], vec![k]),
        "m.onnx",
    )
    .expect("float16 constant");
    let x = Tensor::image(1, 2, 3, vec![0.0; 6]);
    let y = superres_engine::cpu::reference::run(&g, &x).expect("runs");
    assert_eq!(y[0].data(), &[1.0, -2.0, 0.5, 1.0, -2.0, 0.5]);
}

#[test]
fn the_architecture_is_recognised_only_where_it_is_obvious() {
    use superres_import::{Format, Overrides, family, load_bytes};
    for file in ["srvgg_compact_x4.onnx", "srvgg_compact_x4_reshape.onnx"] {
        let m = load_bytes(&read(file), file, Overrides::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(m.architecture(), Some("SRVGGNetCompact"), "{file}");
    }
    // Single-operator graphs fit no architecture.
    for file in [
        "op_conv_pads.onnx",
        "op_depth_to_space.onnx",
        "op_resize.onnx",
    ] {
        assert_eq!(
            family::architecture(Format::Onnx, &import(file)),
            None,
            "{file}"
        );
    }
}
