//! Every TensorFlow model in the shared assets: import, detection, optimisation and
//! OpenCV parity of the raw network output. Skipped (visibly) without the shared assets.

mod common;

use std::collections::BTreeMap;

use common::{Rng, assert_close, file_name, read_npz, run, same_bits, tf_models};
use superres_graph::{Activation, Graph, Op, Tensor};
use superres_import::{Family, Overrides, import_unoptimized, load};

fn counts(g: &Graph) -> BTreeMap<&'static str, usize> {
    g.op_counts().into_iter().collect()
}

fn conv_epilogues(g: &Graph) -> Vec<&superres_graph::Epilogue> {
    g.nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv2d(c) => Some(&c.epilogue),
            _ => None,
        })
        .collect()
}

/// (file stem prefix, family, convs, raw op counts that identify the spelling).
/// Op kinds and how many of each an unoptimised graph must have.
type OpCounts = &'static [(&'static str, usize)];

fn expectations(stem: &str) -> Option<(Family, usize, OpCounts)> {
    Some(if stem.starts_with("ESPCN") {
        (
            Family::YChannel,
            3,
            &[("Add", 3), ("Relu", 2), ("Tanh", 1), ("DepthToSpace", 1)],
        )
    } else if stem.starts_with("FSRCNN-small") {
        (
            Family::YChannel,
            5,
            &[("Abs", 4), ("Sub", 4), ("Mul", 8), ("Relu", 4), ("Add", 9)],
        )
    } else if stem.starts_with("FSRCNN") {
        (
            Family::YChannel,
            8,
            &[
                ("Abs", 7),
                ("Sub", 7),
                ("Mul", 14),
                ("Relu", 7),
                ("Add", 15),
            ],
        )
    } else if stem == "LapSRN_x2" {
        (
            Family::YChannel,
            12,
            &[("Relu", 24), ("Mul", 24), ("Sub", 12), ("DepthToSpace", 2)],
        )
    } else if stem == "LapSRN_x4" {
        (
            Family::YChannel,
            24,
            &[("Relu", 48), ("Mul", 48), ("Sub", 24), ("DepthToSpace", 4)],
        )
    } else if stem == "LapSRN_x8" {
        (
            Family::YChannel,
            36,
            &[("Relu", 72), ("Mul", 72), ("Sub", 36), ("DepthToSpace", 6)],
        )
    } else if stem.starts_with("EDSR_B2F16") {
        (
            Family::Edsr,
            7,
            &[("Add", 10), ("Mul", 2), ("Relu", 2), ("DepthToSpace", 1)],
        )
    } else if stem.starts_with("EDSR_B32F256") {
        (
            Family::Edsr,
            67,
            &[("Add", 100), ("Mul", 32), ("Relu", 32), ("DepthToSpace", 1)],
        )
    } else {
        return None;
    })
}

fn scale_of(stem: &str) -> usize {
    let s = stem.split("_x").nth(1).unwrap_or("");
    s.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("no scale in {stem}"))
}

#[test]
fn every_shared_model_imports_with_family_scale_and_fused_epilogues() {
    let shared = superres_testdata::shared_or_skip!();
    let files = tf_models(&shared);
    let mut checked = 0;
    for path in &files {
        let name = file_name(path);
        let stem = name.trim_end_matches(".pb");
        if stem == "MDSRq" {
            continue;
        }
        let (family, convs, raw_ops) =
            expectations(stem).unwrap_or_else(|| panic!("{name}: no expectation for this model"));
        let bytes = std::fs::read(path).expect("readable model");
        let (_, raw) = import_unoptimized(&bytes, &name).unwrap_or_else(|e| panic!("{e}"));
        let raw_counts = counts(&raw);
        assert_eq!(
            raw_counts.get("Conv2d"),
            Some(&convs),
            "{name}: raw convolutions"
        );
        for &(op, n) in raw_ops {
            assert_eq!(
                raw_counts.get(op),
                Some(&n),
                "{name}: raw count of {op}: {raw_counts:?}"
            );
        }
        let m = load(path, Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.family, family, "{name}: family");
        assert_eq!(m.scale, scale_of(stem), "{name}: scale");
        assert_eq!(m.format, superres_import::Format::TensorFlow);
        let opt = counts(&m.graph);
        assert_eq!(
            opt.get("Conv2d"),
            Some(&convs),
            "{name}: optimised convolutions"
        );
        let epi = conv_epilogues(&m.graph);
        if stem.starts_with("LapSRN") {
            let levels = scale_of(stem).trailing_zeros() as usize;
            // Per pyramid level, only the sum of the two branches and its leaky ReLU remain.
            let want: BTreeMap<&str, usize> = [
                ("Input", 1),
                ("Conv2d", convs),
                ("DepthToSpace", 2 * levels),
                ("Add", levels),
                ("LeakyRelu", levels),
            ]
            .into_iter()
            .collect();
            assert_eq!(opt, want, "{name}: optimised ops");
            let names: Vec<&str> = m.graph.outputs.iter().map(|(n, _)| n.as_str()).collect();
            let mut want_names = vec!["NCHW_output".to_string()];
            if levels > 1 {
                want_names.extend((1..=levels).map(|l| format!("NCHW_output_{}x", 1 << l)));
            }
            assert_eq!(names, want_names, "{name}: outputs, full scale first");
            for (n, v) in &m.graph.outputs {
                let want = if n == "NCHW_output" {
                    scale_of(stem)
                } else {
                    n.trim_start_matches("NCHW_output_")
                        .trim_end_matches('x')
                        .parse()
                        .unwrap_or(0)
                };
                assert_eq!(m.graph.scale_factor(*v), Some(want), "{name}: scale of {n}");
            }
            let leaky = epi
                .iter()
                .filter(|e| e.activation == Some(Activation::LeakyRelu(0.2)))
                .count();
            // Every convolution but the two upsampling ones per level ends in a leaky ReLU,
            // the residual upsampling branch gets it hoisted over its shuffle.
            assert_eq!(leaky, convs - levels, "{name}: fused leaky ReLUs");
        } else {
            let want: BTreeMap<&str, usize> =
                [("Input", 1), ("Conv2d", convs), ("DepthToSpace", 1)]
                    .into_iter()
                    .collect();
            assert_eq!(
                opt, want,
                "{name}: everything but the shuffle fuses into convolutions"
            );
            assert!(
                epi.iter().all(|e| e.bias.is_some()),
                "{name}: every conv has a bias"
            );
            if stem.starts_with("ESPCN") {
                let acts: Vec<_> = epi.iter().map(|e| e.activation.clone()).collect();
                assert_eq!(
                    acts,
                    [
                        Some(Activation::Relu),
                        Some(Activation::Relu),
                        Some(Activation::Tanh)
                    ],
                    "{name}: ESPCN activations, the final Tanh hoisted before the shuffle"
                );
            } else if stem.starts_with("FSRCNN") {
                let prelu = epi
                    .iter()
                    .filter(|e| matches!(e.activation, Some(Activation::PRelu(_))))
                    .count();
                assert_eq!(prelu, convs - 1, "{name}: PReLUs recognised");
                let last = epi
                    .last()
                    .and_then(|e| e.bias.as_ref())
                    .expect("final bias");
                let s = scale_of(stem);
                assert_eq!(
                    last.len(),
                    s * s,
                    "{name}: BiasAdd after the shuffle moved before it"
                );
                assert!(
                    last.iter().all(|&b| b == last[0]),
                    "{name}: one bias repeated"
                );
            } else {
                let blocks = if stem.starts_with("EDSR_B2F16") {
                    2
                } else {
                    32
                };
                let scaled = epi.iter().filter(|e| e.residual == Some(0.1f32)).count();
                let plain = epi.iter().filter(|e| e.residual == Some(1.0)).count();
                assert_eq!((scaled, plain), (blocks, 1), "{name}: fused residual adds");
                let relus = epi
                    .iter()
                    .filter(|e| e.activation == Some(Activation::Relu))
                    .count();
                assert_eq!(relus, blocks, "{name}: fused ReLUs");
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} models were checked");
}

#[test]
fn mdsrq_is_refused_with_a_clear_error() {
    let shared = superres_testdata::shared_or_skip!();
    let path = shared.join("models/opencv/MDSRq.pb");
    let err = load(&path, Overrides::default()).expect_err("MDSRq has tf.case control flow");
    let msg = err.to_string();
    assert!(
        msg.contains("MDSRq.pb") && msg.contains("Switch") && msg.contains("control flow"),
        "unhelpful error: {msg}"
    );
}

#[test]
fn overrides_are_checked_against_the_graph() {
    let shared = superres_testdata::shared_or_skip!();
    let path = shared.join("models/opencv/ESPCN_x3.pb");
    let ok = Overrides {
        family: Some(Family::YChannel),
        scale: Some(3),
    };
    assert_eq!(load(&path, ok).map(|m| m.scale).ok(), Some(3));
    let err = load(
        &path,
        Overrides {
            scale: Some(2),
            ..Overrides::default()
        },
    )
    .expect_err("ESPCN_x3 is not a x2 model")
    .to_string();
    assert!(
        err.contains("scale 2") && err.contains("upscales by 3"),
        "{err}"
    );
    let err = load(
        &path,
        Overrides {
            family: Some(Family::Edsr),
            ..Overrides::default()
        },
    )
    .expect_err("a 1-channel network cannot be EDSR")
    .to_string();
    assert!(err.contains("edsr") && err.contains("3-channel"), "{err}");
}

fn random_input(g: &Graph, rng: &mut Rng, h: usize, w: usize, family_edsr: bool) -> Tensor {
    let c = g.input_channels().expect("one input");
    if family_edsr {
        rng.image(h, w, c, -115.0, 141.0)
    } else {
        rng.image(h, w, c, 0.0, 1.0)
    }
}

#[test]
fn optimised_graph_matches_unoptimised_bit_for_bit_on_every_model() {
    let shared = superres_testdata::shared_or_skip!();
    let mut rng = Rng::new(7);
    for path in tf_models(&shared) {
        let name = file_name(&path);
        if name == "MDSRq.pb" {
            continue;
        }
        let bytes = std::fs::read(&path).expect("readable model");
        let (_, raw) = import_unoptimized(&bytes, &name).unwrap_or_else(|e| panic!("{e}"));
        let opt = superres_graph::passes::optimize(&raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let big = name.starts_with("EDSR_B32F256");
        let (h, w) = if big { (7, 6) } else { (17, 13) };
        let x = random_input(&raw, &mut rng, h, w, name.starts_with("EDSR"));
        let a = run(&raw, &x);
        let b = run(&opt, &x);
        assert_eq!(a.len(), b.len(), "{name}: output count");
        for (k, (p, q)) in a.iter().zip(&b).enumerate() {
            same_bits(p, q).unwrap_or_else(|e| panic!("{name}: output {k}: {e}"));
        }
    }
}

/// Runs `model` on the stored blob and compares with OpenCV's raw output.
fn raw_parity(model: &str, case: &str, rtol: f32, atol: f32) {
    let shared = superres_testdata::shared_or_skip!();
    let dir = if model.starts_with("EDSR") {
        "models/synthetic"
    } else {
        "models/opencv"
    };
    let m = load(
        &shared.join(dir).join(format!("{model}.pb")),
        Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let raw = shared.join("reference/raw");
    let read = |suffix: &str| {
        let p = raw.join(format!("{model}__{case}.{suffix}.npy"));
        superres_testdata::read_npy(&p).unwrap_or_else(|e| panic!("{e}"))
    };
    let (h, w, c, blob) = superres_testdata::nchw_to_hwc(&read("blob"));
    let (oh, ow, oc, want) = superres_testdata::nchw_to_hwc(&read("out"));
    let out = run(&m.graph, &Tensor::image(h, w, c, blob));
    assert_eq!(out[0].hwc(), Some((oh, ow, oc)), "{model}: output shape");
    assert_close(
        &format!("{model} on {case}"),
        out[0].data(),
        &want,
        rtol,
        atol,
    );
}

#[test]
fn espcn_raw_output_matches_opencv() {
    raw_parity("ESPCN_x3", "butterfly", 0.0, 1e-5);
}

#[test]
fn fsrcnn_raw_output_matches_opencv() {
    raw_parity("FSRCNN_x3", "butterfly", 0.0, 1e-5);
}

#[test]
fn lapsrn_raw_output_matches_opencv() {
    raw_parity("LapSRN_x2", "butterfly", 0.0, 1e-5);
}

#[test]
fn quantized_edsr_raw_output_matches_opencv() {
    raw_parity("EDSR_B2F16_x3", "butterfly", 1e-5, 5e-3);
}

#[test]
fn float_edsr_raw_output_matches_opencv() {
    raw_parity("EDSR_B2F16_x3_float", "butterfly", 1e-5, 5e-3);
}

/// The full-size synthetic EDSR (32 blocks, 256 filters) on the stored 48×32 crop:
/// about 120 GFLOP through the reference interpreter.
#[test]
fn full_size_edsr_raw_output_matches_opencv() {
    raw_parity("EDSR_B32F256_x3", "butterfly_crop48x32", 1e-5, 5e-3);
}

#[test]
fn dequantized_weights_match_opencv_bit_for_bit() {
    let shared = superres_testdata::shared_or_skip!();
    for s in [2, 3, 4] {
        let stem = format!("EDSR_B2F16_x{s}");
        let dir = shared.join("models/synthetic");
        let arrays = read_npz(&dir.join(format!("{stem}.weights.npz")));
        let bytes = std::fs::read(dir.join(format!("{stem}.pb"))).expect("readable model");
        let (_, g) = import_unoptimized(&bytes, &stem).unwrap_or_else(|e| panic!("{e}"));
        let kernels: Vec<&[f32]> = g
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                Op::Conv2d(c) => Some(&c.weights[..]),
                _ => None,
            })
            .collect();
        let mut matched = 0;
        for (name, shape, want) in &arrays {
            let Some(w) = name.strip_prefix("stored/") else {
                continue;
            };
            if shape.len() != 4 {
                continue;
            }
            let found = kernels.iter().any(|k| {
                k.len() == want.len() && k.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits())
            });
            assert!(
                found,
                "{stem}: no convolution carries OpenCV's dequantised {w} bit for bit"
            );
            matched += 1;
        }
        assert_eq!(matched, 7, "{stem}: kernels compared");
    }
}

#[test]
fn receptive_fields_of_the_opencv_models() {
    let shared = superres_testdata::shared_or_skip!();
    for (model, top, bottom) in [
        ("ESPCN_x2", 4, 4),
        ("FSRCNN_x3", 6, 6),
        ("FSRCNN-small_x4", 3, 3),
        // Ten 3×3 convolutions, then the 4×4 upsampling convolution (1 before, 2 after).
        ("LapSRN_x2", 11, 12),
    ] {
        let m = load(
            &shared.join(format!("models/opencv/{model}.pb")),
            Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let rf = m.graph.receptive_field();
        assert_eq!(
            (rf.top, rf.bottom, rf.left, rf.right),
            (top, bottom, top, bottom),
            "{model}: receptive field"
        );
    }
}

/// A perturbed input pixel changes ESPCN's output exactly within its receptive field.
#[test]
fn espcn_output_depends_on_inputs_within_the_receptive_field_only() {
    let shared = superres_testdata::shared_or_skip!();
    let m = load(
        &shared.join("models/opencv/ESPCN_x3.pb"),
        Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let margin = m.graph.receptive_field().margin();
    assert_eq!(margin, 4);
    let (h, w, s) = (20, 20, 3);
    let x = Rng::new(3).image(h, w, 1, 0.0, 1.0);
    let base = run(&m.graph, &x).remove(0);
    let (cy, cx) = (10, 10);
    // The output block of input pixel (cy, cx).
    let block = |t: &Tensor| -> Vec<u32> {
        (cy * s..cy * s + s)
            .flat_map(|y| (cx * s..cx * s + s).map(move |xx| (y, xx)))
            .map(|(y, xx)| t.data()[y * w * s + xx].to_bits())
            .collect()
    };
    for dist in 0..=margin + 2 {
        let mut p = x.clone();
        p.data_mut()[cy * w + cx + dist] += 0.5;
        let out = run(&m.graph, &p).remove(0);
        let changed = block(&out) != block(&base);
        assert_eq!(
            changed,
            dist <= margin,
            "perturbing the input {dist} px away {} the output",
            if changed { "changed" } else { "did not change" }
        );
    }
}

#[test]
fn every_shared_model_reports_its_opencv_architecture() {
    let shared = superres_testdata::shared_or_skip!();
    let mut checked = 0;
    for path in tf_models(&shared) {
        let name = file_name(&path);
        let want = if name.starts_with("EDSR") {
            "EDSR"
        } else if name.starts_with("ESPCN") {
            "ESPCN"
        } else if name.starts_with("FSRCNN") {
            "FSRCNN"
        } else if name.starts_with("LapSRN") {
            "LapSRN"
        } else {
            continue;
        };
        let m = load(&path, Overrides::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(m.architecture(), Some(want), "{name}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} models checked");
}
