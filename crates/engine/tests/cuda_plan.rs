//! The CUDA backend's device plan, executed by its host twin, against the reference
//! interpreter on every shared model: lowering, channel padding, the split of convolutions
//! into products and epilogues, layouts, batching and buffer reuse are all checked here,
//! on machines without a GPU. The same runs measure each precision's loss (emulated
//! `f16`/`bf16` storage and TF32 products): the numbers the README's precision table quotes.

mod common;

use std::path::{Path, PathBuf};

use superres_engine::cpu::reference;
use superres_engine::cuda::dplan::{DevicePlan, Lowered, Step, padded_channels};
use superres_engine::cuda::twin::Twin;
use superres_engine::io::{InputMap, OutputMap};
use superres_engine::{Batch, HostData, Io, Precision};
use superres_graph::Tensor;
use superres_import::{Family, Overrides};

/// Every model under the shared folder that the importer reads (`MDSRq.pb` holds TensorFlow
/// control flow for several scales and is refused by design), smallest first.
fn shared_models(shared: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = ["models/opencv", "models/synthetic"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(shared.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pb"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("MDSR"))
        })
        .collect();
    v.sort_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()));
    v
}

/// A smooth test image with detail, in the family's input range.
fn image(h: usize, w: usize, c: usize, family: Family, seed: usize) -> Tensor {
    let mut data = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let t = ((x * 7 + y * 3 + ch * 11 + seed * 5) as f32 * 0.37).sin() * 0.4
                    + ((x + 2 * y + seed) as f32 * 0.11).cos() * 0.3
                    + 0.5;
                let t = t.clamp(0.0, 1.0);
                data.push(match family {
                    Family::Edsr => (t * 255.0).round() - 110.0,
                    _ => (t * 255.0).round() / 255.0,
                });
            }
        }
    }
    Tensor::image(h, w, c, data)
}

/// One 8-bit level in the network's output units.
fn level(family: Family) -> f32 {
    match family {
        Family::Edsr => 1.0,
        _ => 1.0 / 255.0,
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// PSNR of `got` against `want` on the 8-bit scale of the family.
fn psnr(got: &[f32], want: &[f32], family: Family) -> f64 {
    let l = level(family) as f64;
    let mse: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            let d = (*g as f64 - *w as f64) / l;
            d * d
        })
        .sum::<f64>()
        / got.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

fn stack(images: &[Tensor]) -> Batch {
    let (h, w, c) = images[0].hwc().expect("image");
    Batch {
        n: images.len(),
        h,
        w,
        c,
        data: HostData::F32(images.iter().flat_map(|t| t.data().to_vec()).collect()),
    }
}

#[test]
fn the_device_plan_matches_the_reference_on_every_shared_model_in_every_precision() {
    let shared = superres_testdata::shared_or_skip!();
    let models = shared_models(&shared);
    assert!(
        models.len() >= 16,
        "expected the shared models, found {models:?}"
    );
    let mut worst: Vec<(Precision, f64, String)> = Vec::new();
    for path in &models {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let m = superres_import::load(path, Overrides::default()).expect("import");
        let c = m.graph.input_channels().unwrap();
        let full = name.contains("B32F256");
        let (h, w) = if full { (14, 18) } else { (23, 29) };
        let inputs = [image(h, w, c, m.family, 1), image(h, w, c, m.family, 2)];
        let want: Vec<Vec<Tensor>> = inputs
            .iter()
            .map(|x| reference::run(&m.graph, x).expect("reference"))
            .collect();
        let precisions: &[Precision] = if full {
            &[Precision::Exact, Precision::Fp16]
        } else {
            &Precision::ALL
        };
        for &p in precisions {
            let twin = Twin::new(&m.graph, p).expect("lower");
            let got = twin.run(&stack(&inputs), &Io::default()).expect("twin run");
            assert_eq!(got.len(), m.graph.outputs.len(), "{name}");
            for (k, out) in got.iter().enumerate() {
                for (i, w_i) in want.iter().enumerate() {
                    let want_t = &w_i[k];
                    let got_t = out.tensor(i);
                    assert_eq!(got_t.shape(), want_t.shape(), "{name} output {k}");
                    let d = max_diff(got_t.data(), want_t.data()) / level(m.family);
                    let q = psnr(got_t.data(), want_t.data(), m.family);
                    if p == Precision::Exact {
                        assert!(d < 0.02, "{name} {p} image {i}: max diff {d} levels");
                    }
                    match worst.iter_mut().find(|(wp, _, _)| *wp == p) {
                        Some(entry) if q < entry.1 => *entry = (p, q, name.clone()),
                        Some(_) => {}
                        None => worst.push((p, q, name.clone())),
                    }
                }
            }
        }
    }
    for (p, q, name) in &worst {
        eprintln!("twin {p}: lowest PSNR against the reference {q:.1} dB ({name})");
    }
    let get = |p: Precision| worst.iter().find(|w| w.0 == p).map_or(0.0, |w| w.1);
    // fp32 storage with fp32 (or TF32) products is far past visibility; f16 storage keeps
    // 11 significant bits, bf16 8: the default precision must stay above 50 dB.
    assert!(get(Precision::Exact) > 80.0, "{worst:?}");
    assert!(get(Precision::Fp16) >= 50.0, "{worst:?}");
    assert!(get(Precision::Tf32) >= 50.0, "{worst:?}");
    assert!(get(Precision::Bf16) > 40.0, "{worst:?}");
}

#[test]
fn channels_above_four_are_padded_to_multiples_of_eight_and_asymmetric_padding_is_explicit() {
    assert_eq!(padded_channels(1), 1);
    assert_eq!(padded_channels(3), 3);
    assert_eq!(padded_channels(9), 16);
    assert_eq!(padded_channels(56), 56);
    assert_eq!(padded_channels(2304), 2304);
    let shared = superres_testdata::shared_or_skip!();
    let espcn = superres_import::load(
        &shared.join("models/opencv/ESPCN_x3.pb"),
        Overrides::default(),
    )
    .expect("import");
    let low = Lowered::new(&espcn.graph, Precision::Fp16).expect("lower");
    let nine: Vec<usize> = (0..low.cs.len())
        .filter(|&i| espcn.graph.nodes[i].channels == Some(9))
        .map(|i| low.cs[i])
        .collect();
    assert!(
        !nine.is_empty() && nine.iter().all(|&c| c == 16),
        "{nine:?}"
    );
    let plan = DevicePlan::new(&low, 3, 20, 24).expect("plan");
    assert_eq!(plan.n, 3);
    assert_eq!(plan.outputs[0].h, 60);
    assert_eq!(plan.outputs[0].c, 1);
    // Every convolution is a product followed by its epilogue.
    let convs = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Conv { .. }))
        .count();
    assert_eq!(
        convs,
        espcn
            .graph
            .nodes
            .iter()
            .filter(|n| matches!(n.op, superres_graph::Op::Conv2d(_)))
            .count()
    );
    for (i, s) in plan.steps.iter().enumerate() {
        if matches!(s, Step::Conv { .. }) {
            assert!(
                matches!(plan.steps[i + 1], Step::Pointwise { .. }),
                "step {i}"
            );
        }
    }
    // Batches scale the buffers, not the plan's shape.
    let one = DevicePlan::new(&low, 1, 20, 24).expect("plan");
    assert_eq!(
        plan.arena_bytes() - plan.input_bytes - plan.pad_bytes,
        3 * (one.arena_bytes() - one.input_bytes - one.pad_bytes)
    );
    assert_eq!(plan.steps.len(), one.steps.len());
    // LapSRN's 4×4 transposed convolutions lower to convolutions with uneven padding,
    // which cuDNN cannot express: they get an explicit zero-padding step.
    let lapsrn = superres_import::load(
        &shared.join("models/opencv/LapSRN_x2.pb"),
        Overrides::default(),
    )
    .expect("import");
    let low = Lowered::new(&lapsrn.graph, Precision::Exact).expect("lower");
    let plan = DevicePlan::new(&low, 1, 16, 16).expect("plan");
    let padded = plan
        .steps
        .iter()
        .filter(|s| matches!(s, Step::Conv { pad: Some(_), .. }))
        .count();
    assert!(
        padded > 0 && plan.pad_bytes > 0,
        "no explicit padding in LapSRN"
    );
}

#[test]
fn eight_bit_maps_run_on_the_device_plan_as_on_the_host() {
    let shared = superres_testdata::shared_or_skip!();
    let m = superres_import::load(
        &shared.join("models/synthetic/EDSR_B2F16_x3.pb"),
        Overrides::default(),
    )
    .expect("import");
    let (h, w) = (13, 17);
    let pixels: Vec<u8> = (0..h * w * 3)
        .map(|i| ((i * 37 + i / 7) % 256) as u8)
        .collect();
    let mean = [103.154_58f32, 111.561_55, 114.356_3];
    let input = InputMap {
        perm: [2, 1, 0, 3],
        add: [-mean[0], -mean[1], -mean[2], 0.0],
        mul: 1.0,
        div: 1.0,
    };
    let output = OutputMap {
        perm: [2, 1, 0, 3],
        add: [mean[2], mean[1], mean[0], 0.0],
        mul: 1.0,
    };
    let batch = Batch {
        n: 1,
        h,
        w,
        c: 3,
        data: HostData::U8(pixels.clone()),
    };
    let twin = Twin::new(&m.graph, Precision::Exact).expect("lower");
    let io = Io {
        input: Some(input),
        output: Some(output),
    };
    let got = twin.run(&batch, &io).expect("run");
    assert_eq!(got.len(), 1);
    let HostData::U8(got) = &got[0].data else {
        panic!("8-bit output expected")
    };
    // The same maps on the host around the reference interpreter.
    let mut x = vec![0.0f32; h * w * 3];
    input.convert(&pixels, 3, &mut x);
    let y = reference::run(&m.graph, &Tensor::image(h, w, 3, x)).expect("reference");
    let mut want = vec![0u8; y[0].len()];
    output.convert(y[0].data(), 3, &mut want);
    let off = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap_or(0);
    assert!(
        worst <= 1 && off * 1000 <= want.len(),
        "{off} of {} values differ, by up to {worst}",
        want.len()
    );
}

#[test]
fn every_operator_and_lowering_path_matches_the_reference() {
    let g = common::every_op_graph();
    g.validate().expect("valid graph");
    let (h, w) = (10, 14);
    let images: Vec<Tensor> = (0..3)
        .map(|i| Tensor::image(h, w, 3, common::values(h * w * 3, 20 + i, 1.0)))
        .collect();
    let want: Vec<Vec<Tensor>> = images
        .iter()
        .map(|x| reference::run(&g, x).expect("reference"))
        .collect();
    // Grouped convolutions keep every channel count unpadded.
    let low = Lowered::new(&g, Precision::Fp16).expect("lower");
    assert!(
        low.cs
            .iter()
            .zip(&g.nodes)
            .all(|(&cs, n)| cs == n.channels.unwrap_or(0))
    );
    for p in Precision::ALL {
        let got = Twin::new(&g, p)
            .expect("lower")
            .run(&stack(&images), &Io::default())
            .expect("run");
        assert_eq!(got.len(), 2);
        for (k, out) in got.iter().enumerate() {
            for (i, w_i) in want.iter().enumerate() {
                let (a, b) = (out.tensor(i), &w_i[k]);
                assert_eq!(a.shape(), b.shape());
                let d = max_diff(a.data(), b.data());
                let bound = match p {
                    Precision::Exact => 1e-4,
                    Precision::Tf32 | Precision::Fp16 => 0.05,
                    Precision::Bf16 => 0.3,
                };
                assert!(d < bound, "{p} output {k} image {i}: max diff {d}");
            }
        }
    }
}
