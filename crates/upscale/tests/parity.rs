//! Parity with OpenCV `dnn_superres`: every case OpenCV produced in
//! `shared/reference/manifest.json` is reproduced from the same `.pb` file and input.
//!
//! Tolerance (per case): max |diff| ≤ 1 and at most 0.1 % of values differing. Our
//! convolutions sum in a different order than OpenCV's, so a value that lands within a few
//! ulps of a .5 rounding boundary may round the other way; anything beyond that is a bug.

use std::collections::HashMap;
use std::path::Path;

use superres_engine::cpu::CpuBackend;
use superres_engine::cuda::twin::TwinBackend;
use superres_engine::{Backend, Precision};
use superres_import::{Family, Overrides};
use superres_upscale::{ColorKind, Image, Model, Options, Samples, TileMode, upscale};

fn read_png(path: &Path) -> Image {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match img {
        image::DynamicImage::ImageLuma8(g) => Image::from_u8(
            g.width() as usize,
            g.height() as usize,
            ColorKind::Gray,
            g.into_raw(),
        ),
        other => {
            let rgb = other.to_rgb8();
            Image::from_u8(
                rgb.width() as usize,
                rgb.height() as usize,
                ColorKind::Rgb,
                rgb.into_raw(),
            )
        }
    }
}

struct Stats {
    max_diff: u8,
    differing: usize,
    total: usize,
}

fn compare(got: &Image, want: &Image) -> Stats {
    assert_eq!(
        (got.width, got.height, got.color_kind),
        (want.width, want.height, want.color_kind)
    );
    let (Samples::U8(g), Samples::U8(w)) = (&got.color, &want.color) else {
        panic!("expected 8-bit images");
    };
    let mut s = Stats {
        max_diff: 0,
        differing: 0,
        total: g.len(),
    };
    for (a, b) in g.iter().zip(w) {
        let d = a.abs_diff(*b);
        if d > 0 {
            s.differing += 1;
            s.max_diff = s.max_diff.max(d);
        }
    }
    s
}

fn run_cases(filter: impl Fn(&str) -> bool) {
    let opts = Options {
        tile: Some(0),
        ..Options::default()
    };
    run_cases_on(&CpuBackend::new(), &opts, usize::MAX, filter);
}

/// Every case of the models `filter` accepts (at most `per_model` images each), on
/// `backend` with `opts`, against OpenCV's outputs.
fn run_cases_on(
    backend: &dyn Backend,
    opts: &Options,
    per_model: usize,
    filter: impl Fn(&str) -> bool,
) {
    let shared = superres_testdata::shared_or_skip!();
    let reference = shared.join("reference");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference.join("manifest.json")).expect("manifest"))
            .expect("json");
    let mut models: HashMap<String, Model> = HashMap::new();
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut failures = Vec::new();
    let mut count = 0;
    let mut identical = 0;
    for case in manifest["cases"].as_array().expect("cases") {
        let Some(output) = case["output"].as_str() else {
            continue;
        };
        let name = case["model"].as_str().expect("model");
        if !filter(name) {
            continue;
        }
        let n = taken.entry(name.to_string()).or_default();
        if *n >= per_model {
            continue;
        }
        *n += 1;
        let model = models.entry(name.to_string()).or_insert_with(|| {
            let file = shared.join(case["model_file"].as_str().expect("model_file"));
            Model::load(&file, backend, Overrides::default()).unwrap_or_else(|e| panic!("{e}"))
        });
        let algo = case["algo"].as_str().expect("algo");
        let want_family = if algo == "edsr" {
            Family::Edsr
        } else {
            Family::YChannel
        };
        assert_eq!(model.family(), want_family, "{name}: detected family");
        assert_eq!(
            model.scale() as u64,
            case["scale"].as_u64().expect("scale"),
            "{name}: detected scale"
        );
        let input = read_png(&reference.join(case["input"].as_str().expect("input")));
        let want = read_png(&reference.join(output));
        let got = upscale(model, &input, opts, &mut |_| true)
            .unwrap_or_else(|e| panic!("{name}/{output}: {e}"));
        let s = compare(&got, &want);
        count += 1;
        if s.differing == 0 {
            identical += 1;
        }
        let frac = s.differing as f64 / s.total as f64;
        eprintln!(
            "{output:40} max|diff| {} differing {:>5} of {:>7} ({:.4} %)",
            s.max_diff,
            s.differing,
            s.total,
            100.0 * frac
        );
        if s.max_diff > 1 || frac > 0.001 {
            failures.push(format!(
                "{output}: max|diff| {} and {:.4} % differing",
                s.max_diff,
                100.0 * frac
            ));
        }
    }
    eprintln!("{count} cases, {identical} byte-identical");
    assert!(count > 0, "no case matched the filter");
    assert!(
        failures.is_empty(),
        "cases outside tolerance:\n{}",
        failures.join("\n")
    );
}

#[test]
fn espcn_matches_opencv() {
    run_cases(|m| m.starts_with("ESPCN"));
}

#[test]
fn fsrcnn_matches_opencv() {
    run_cases(|m| m.starts_with("FSRCNN"));
}

#[test]
fn lapsrn_matches_opencv() {
    run_cases(|m| m.starts_with("LapSRN"));
}

#[test]
fn tiny_edsr_matches_opencv() {
    run_cases(|m| m.starts_with("EDSR_B2F16"));
}

#[test]
fn full_size_edsr_matches_opencv() {
    run_cases(|m| m.starts_with("EDSR_B32F256"));
}

/// The CUDA backend's device plan, run by its host twin through the whole pipeline — tiles
/// sized from the device plan's own `peak_bytes` under a small budget, same-shape tiles in
/// batches of three, 8-bit maps — meets OpenCV's outputs with the CPU's tolerance. (The GPU
/// run of the same cases is `bench/gpu.sh`.)
#[test]
fn the_device_plan_matches_opencv_tiled_and_batched() {
    let backend = TwinBackend {
        precision: Precision::Exact,
        batch: 3,
    };
    let opts = Options {
        tile: None,
        memory_budget: 24 << 20,
        // Exact tiles: what is compared with OpenCV is the untiled result.
        tile_mode: TileMode::Exact,
    };
    run_cases_on(&backend, &opts, 3, |m| !m.starts_with("EDSR_B32F256"));
}
