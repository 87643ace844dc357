//! PyTorch state dicts (`.pth`, `.safetensors`) checked against PyTorch.
//!
//! The fixtures in `tests/fixtures/pytorch/` are written by `tools/pytorch_fixtures.py`: tiny
//! SRVGGNetCompact, RRDBNet and SPAN networks with seeded random weights, saved by torch.save and
//! as safetensors, with an NCHW input and PyTorch's output as `.npy`. Each parity test
//! imports a file, runs it with the reference interpreter and compares with PyTorch's output:
//! `|ours - torch| <= 1e-4` everywhere (absolute, on values around [0, 1]).

use std::path::PathBuf;

use superres_graph::{Graph, Tensor};
use superres_import::pytorch::{self, Architecture, Options, RrdbLayout, SrvggActivation};
use superres_import::{Family, Format, ImportError, Overrides, detect_format, load_bytes};
use superres_testdata::{nchw_to_hwc, read_npy};

const ATOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pytorch")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    let p = fixture(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn import(name: &str) -> Graph {
    pytorch::import(&read(name), name).unwrap_or_else(|e| panic!("importing {name}: {e}"))
}

fn npy_image(name: &str) -> Tensor {
    let npy = read_npy(&fixture(name)).unwrap_or_else(|e| panic!("{e}"));
    let (h, w, c, data) = nchw_to_hwc(&npy);
    Tensor::image(h, w, c, data)
}

/// Runs `g` on `<stem>_in.npy` and compares with `<stem>_out.npy`; returns the max abs diff.
fn parity(g: &Graph, stem: &str) -> f32 {
    let x = npy_image(&format!("{stem}_in.npy"));
    let want = npy_image(&format!("{stem}_out.npy"));
    let outs = superres_engine::cpu::reference::run(g, &x)
        .unwrap_or_else(|e| panic!("{stem}: running the imported graph: {e}"));
    let got = &outs[0];
    assert_eq!(got.shape(), want.shape(), "{stem}: output shape [H, W, C]");
    let worst = got
        .data()
        .iter()
        .zip(want.data())
        .map(|(a, b)| (a - b).abs())
        .fold(
            0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        );
    assert!(
        worst <= ATOL,
        "{stem}: max |ours - PyTorch| = {worst} > {ATOL}"
    );
    eprintln!("{stem}: max |ours - PyTorch| = {worst:e}");
    worst
}

fn check(file: &str, stem: &str) -> Graph {
    let g = import(file);
    g.validate().expect("the imported graph validates");
    parity(&g, stem);
    // And through the optimising front door, as the CLI and server load it.
    let m = load_bytes(&read(file), file, Overrides::default())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(m.format, Format::PyTorch);
    assert_eq!(m.family, Family::Rgb);
    parity(&m.graph, stem);
    g
}

fn count(g: &Graph, kind: &str) -> usize {
    g.op_counts()
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, n)| n)
}

fn arch(file: &str) -> Architecture {
    let sd = pytorch::read_state_dict(&read(file), file).unwrap_or_else(|e| panic!("{e}"));
    pytorch::detect(&sd, file, Options::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(bytes: &[u8], name: &str) -> String {
    match pytorch::import(bytes, name) {
        Ok(_) => panic!("{name}: imported, expected an error"),
        Err(e) => e.to_string(),
    }
}

// --- SRVGGNetCompact ---------------------------------------------------------------------

#[test]
fn srvgg_prelu_pth_matches_pytorch() {
    let g = check("srvgg_prelu_x4.pth", "srvgg_prelu_x4");
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(4));
    assert_eq!(count(&g, "Conv2d"), 6, "{:?}", g.op_counts());
    assert_eq!(count(&g, "DepthToSpace"), 1);
    assert_eq!(count(&g, "Resize"), 1);
    assert_eq!(
        arch("srvgg_prelu_x4.pth"),
        Architecture::SrvggCompact {
            channels: 3,
            num_feat: 8,
            num_conv: 4,
            scale: 4,
            activation: SrvggActivation::PRelu
        }
    );
}

#[test]
fn srvgg_safetensors_f32_f16_bf16_and_pth_give_identical_graphs() {
    let pth = import("srvgg_prelu_x4.pth");
    for f in [
        "srvgg_prelu_x4.safetensors",
        "srvgg_prelu_x4_f16.safetensors",
        "srvgg_prelu_x4_bf16.safetensors",
    ] {
        let g = check(f, "srvgg_prelu_x4");
        assert!(g == pth, "{f}: the graph differs from the .pth one");
    }
}

#[test]
fn srvgg_leakyrelu_from_safetensors_metadata_matches_pytorch() {
    check("srvgg_lrelu_x3.safetensors", "srvgg_lrelu_x3");
}

#[test]
fn srvgg_without_prelu_needs_the_activation_named() {
    let f = "srvgg_relu_x2.safetensors";
    let e = err(&read(f), f);
    assert!(
        e.contains("SRVGGNetCompact") && e.contains("act_type"),
        "{e}"
    );
    let opts = Options {
        srvgg_activation: Some(SrvggActivation::Relu),
    };
    let g = pytorch::import_with(&read(f), f, opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(2));
    parity(&g, "srvgg_relu_x2");
}

// --- RRDBNet -----------------------------------------------------------------------------

#[test]
fn rrdb_x4_params_ema_pth_matches_pytorch() {
    let g = check("rrdb_x4.pth", "rrdb_x4");
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(4));
    assert_eq!(
        arch("rrdb_x4.pth"),
        Architecture::Rrdb {
            layout: RrdbLayout::New,
            channels: 3,
            num_feat: 8,
            num_block: 2,
            num_grow_ch: 4,
            upsamples: 2,
            unshuffle: 1,
            scale: 4
        }
    );
}

#[test]
fn rrdb_pth_and_safetensors_give_identical_graphs() {
    let a = import("rrdb_x4.pth");
    let b = check("rrdb_x4.safetensors", "rrdb_x4");
    assert!(a == b, "the .safetensors graph differs from the .pth one");
}

#[test]
fn rrdb_old_layout_matches_pytorch() {
    check("rrdb_x4_old.pth", "rrdb_x4_old");
    let Architecture::Rrdb {
        layout,
        num_block,
        scale,
        ..
    } = arch("rrdb_x4_old.pth")
    else {
        panic!("not RRDB")
    };
    assert_eq!((layout, num_block, scale), (RrdbLayout::Old, 1, 4));
}

#[test]
fn rrdb_old_layout_x8_matches_pytorch() {
    let g = check("rrdb_x8_old.pth", "rrdb_x8_old");
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(8));
    assert_eq!(count(&g, "Resize"), 3);
}

#[test]
fn rrdb_x2_pixel_unshuffle_matches_pytorch() {
    let g = check("rrdb_x2.safetensors", "rrdb_x2");
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(2));
    let Architecture::Rrdb { unshuffle, .. } = arch("rrdb_x2.safetensors") else {
        panic!("not RRDB")
    };
    assert_eq!(unshuffle, 2);
}

#[test]
fn rrdb_x1_half_pth_pixel_unshuffle_matches_pytorch() {
    let g = check("rrdb_x1.pth", "rrdb_x1");
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(1));
    let Architecture::Rrdb {
        unshuffle, scale, ..
    } = arch("rrdb_x1.pth")
    else {
        panic!("not RRDB")
    };
    assert_eq!((unshuffle, scale), (4, 1));
}

// --- SPAN --------------------------------------------------------------------------------

/// A state dict of a fixture without its `eval_conv` tensors (the train-time branches only).
fn without_eval_conv(file: &str) -> pytorch::StateDict {
    let mut sd = pytorch::read_state_dict(&read(file), file).unwrap_or_else(|e| panic!("{e}"));
    let before = sd.tensors.len();
    sd.tensors.retain(|k, _| !k.contains(".eval_conv."));
    assert_eq!(before - sd.tensors.len(), 40, "20 Conv3XC eval_convs");
    sd
}

fn run(g: &Graph, stem: &str) -> Tensor {
    let x = npy_image(&format!("{stem}_in.npy"));
    superres_engine::cpu::reference::run(g, &x)
        .unwrap_or_else(|e| panic!("{stem}: {e}"))
        .swap_remove(0)
}

#[test]
fn span_x2_with_eval_conv_matches_pytorch() {
    let g = check("span_x2.pth", "span_x2");
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(2));
    assert_eq!(count(&g, "Conv2d"), 22, "{:?}", g.op_counts());
    assert_eq!(count(&g, "Sigmoid"), 18);
    assert_eq!(count(&g, "Concat"), 1);
    assert_eq!(count(&g, "DepthToSpace"), 1);
    assert_eq!(
        arch("span_x2.pth"),
        Architecture::Span {
            channels: 3,
            out_channels: 3,
            feature_channels: 8,
            scale: 2,
            norm: true,
            eval_conv: true,
        }
    );
}

#[test]
fn span_x4_train_branches_only_are_folded_and_match_pytorch() {
    let g = check("span_x4_train.pth", "span_x4_train");
    assert_eq!(g.scale_factor(g.outputs[0].1), Some(4));
    assert_eq!(
        arch("span_x4_train.pth"),
        Architecture::Span {
            channels: 3,
            out_channels: 3,
            feature_channels: 8,
            scale: 4,
            norm: false,
            eval_conv: false,
        }
    );
}

#[test]
fn span_eval_conv_and_folded_branches_give_the_same_result() {
    let f = "span_x2.pth";
    let folded = pytorch::build(&without_eval_conv(f), f, Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let Architecture::Span { eval_conv, .. } =
        pytorch::detect(&without_eval_conv(f), f, Options::default()).expect("SPAN")
    else {
        panic!("not SPAN")
    };
    assert!(!eval_conv);
    let eval = import(f);
    assert!(
        folded != eval,
        "the folded graph should carry its own weights"
    );
    let worst_torch = parity(&folded, "span_x2");
    let (a, b) = (run(&eval, "span_x2"), run(&folded, "span_x2"));
    let worst = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    eprintln!("span_x2: eval_conv vs folded: {worst:e} (folded vs PyTorch {worst_torch:e})");
    assert!(
        worst <= 1e-5,
        "eval_conv and folded branches differ by {worst}"
    );
}

#[test]
fn span_truncated_or_altered_dicts_are_clear_errors() {
    let f = "span_x2.pth";
    let base = pytorch::read_state_dict(&read(f), f).unwrap_or_else(|e| panic!("{e}"));
    let build = |sd: &pytorch::StateDict| match pytorch::build(sd, f, Options::default()) {
        Ok(_) => panic!("built an altered SPAN"),
        Err(e) => e.to_string(),
    };
    // A block missing both its eval_conv and a train-time branch.
    let mut sd = without_eval_conv(f);
    sd.tensors.remove("block_4.c2_r.conv.1.weight");
    let e = build(&sd);
    assert!(
        e.contains("SPAN") && e.contains("block_4.c2_r.conv.1.weight"),
        "{e}"
    );
    let mut sd = without_eval_conv(f);
    sd.tensors.remove("block_3.c1_r.sk.weight");
    let e = build(&sd);
    assert!(
        e.contains("SPAN") && e.contains("block_3.c1_r") && e.contains("eval_conv"),
        "{e}"
    );
    // A block cut off (as a truncated dict: the last blocks missing).
    let mut sd = base.clone();
    sd.tensors.retain(|k, _| !k.starts_with("block_6."));
    let e = build(&sd);
    assert!(e.contains("SPAN") && e.contains("block_6.c1_r"), "{e}");
    // No upsampler.
    let mut sd = base.clone();
    sd.tensors.remove("upsampler.0.weight");
    let e = build(&sd);
    assert!(
        e.contains("SPAN") && e.contains("upsampler.0.weight"),
        "{e}"
    );
    // An eval_conv of the wrong width.
    let mut sd = base.clone();
    let t = sd
        .tensors
        .get_mut("block_2.c3_r.eval_conv.weight")
        .expect("key");
    t.shape = vec![8, 4, 3, 3];
    t.data.truncate(8 * 4 * 9);
    let e = build(&sd);
    assert!(e.contains("block_2.c3_r.eval_conv.weight"), "{e}");
    // A folded branch of the wrong shape.
    let mut sd = without_eval_conv(f);
    let t = sd.tensors.get_mut("conv_2.conv.2.weight").expect("key");
    t.shape = vec![8, 8, 1, 1];
    t.data.truncate(64);
    let e = build(&sd);
    assert!(
        e.contains("SPAN") && e.contains("conv_2.conv.2.weight") && e.contains("[8, 16, 1, 1]"),
        "{e}"
    );
    // Upsampler outputs that are no channels · scale².
    let mut sd = base.clone();
    let t = sd.tensors.get_mut("upsampler.0.weight").expect("key");
    t.shape[0] = 7;
    t.data.truncate(7 * 8 * 9);
    let e = build(&sd);
    assert!(e.contains("SPAN") && e.contains("7 outputs"), "{e}");
    // The file itself cut short.
    let b = read(f);
    for cut in (0..b.len()).step_by(4099).chain([b.len() - 1]) {
        let _ = pytorch::import(&b[..cut], f).map(|_| panic!("{f} cut at {cut} imported"));
    }
}

// --- detection, safety, corruption -------------------------------------------------------

#[test]
fn format_detection() {
    for f in [
        "srvgg_prelu_x4.pth",
        "srvgg_prelu_x4.safetensors",
        "rrdb_x4.pth",
    ] {
        assert_eq!(detect_format(&read(f)), Ok(Format::PyTorch), "{f}");
    }
    let e = detect_format(b"PK\x03\x04not a torch zip").unwrap_err();
    assert!(e.contains("zip archive"), "{e}");
}

/// A safetensors file from (name, shape, f32 data) triples.
fn safetensors(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut data = Vec::new();
    for (i, (name, shape, vals)) in tensors.iter().enumerate() {
        let start = data.len();
        for v in vals {
            data.extend_from_slice(&v.to_le_bytes());
        }
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            data.len()
        ));
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

#[test]
fn an_unknown_state_dict_lists_what_was_found() {
    let b = safetensors(&[
        ("encoder.weight", vec![2, 3, 1, 1], vec![0.0; 6]),
        ("decoder.bias", vec![2], vec![0.0; 2]),
    ]);
    let e = err(&b, "mystery.safetensors");
    assert!(
        e.contains("mystery.safetensors")
            && e.contains("2 tensors")
            && e.contains("encoder.weight [2, 3, 1, 1]")
            && e.contains("decoder.bias [2]"),
        "{e}"
    );
}

#[test]
fn shape_mismatches_are_clear_errors() {
    // body.2 expects 8 input channels but gets 4 from body.0.
    let b = safetensors(&[
        ("body.0.weight", vec![4, 3, 3, 3], vec![0.0; 108]),
        ("body.1.weight", vec![4], vec![0.1; 4]),
        ("body.2.weight", vec![48, 8, 3, 3], vec![0.0; 48 * 72]),
    ]);
    let e = err(&b, "bad.safetensors");
    assert!(
        e.contains("body.2.weight") && e.contains("[48, 8, 3, 3]"),
        "{e}"
    );
    // The last convolution's outputs are not 3·scale².
    let b = safetensors(&[
        ("body.0.weight", vec![4, 3, 3, 3], vec![0.0; 108]),
        ("body.1.weight", vec![4], vec![0.1; 4]),
        ("body.2.weight", vec![5, 4, 3, 3], vec![0.0; 180]),
    ]);
    let e = err(&b, "bad.safetensors");
    assert!(e.contains("5 outputs"), "{e}");
    // A bias of the wrong length.
    let b = safetensors(&[
        ("body.0.weight", vec![4, 3, 3, 3], vec![0.0; 108]),
        ("body.0.bias", vec![3], vec![0.0; 3]),
        ("body.1.weight", vec![4], vec![0.1; 4]),
        ("body.2.weight", vec![12, 4, 3, 3], vec![0.0; 432]),
    ]);
    let e = err(&b, "bad.safetensors");
    assert!(
        e.contains("body.0.bias") && e.contains("expected [4]"),
        "{e}"
    );
}

#[test]
fn a_malicious_pickle_is_refused_by_name_and_nothing_runs() {
    let marker = std::env::current_dir()
        .expect("cwd")
        .join("superres_pwned_by_pickle");
    let _ = std::fs::remove_file(&marker);
    let e = err(&read("malicious.pth"), "malicious.pth");
    assert!(e.contains("'os.system'") && e.contains("refused"), "{e}");
    assert!(!marker.exists(), "the pickle's command ran");
    // The same through load_bytes.
    let Err(e) = load_bytes(
        &read("malicious.pth"),
        "malicious.pth",
        Overrides::default(),
    ) else {
        panic!("loaded")
    };
    assert!(e.to_string().contains("os.system"), "{e}");
}

/// Rewrites the data.pkl of a torch.save zip (stored entries, so the bytes are in place):
/// replaces `from` by `to` of the same length and fixes nothing else but the CRC check,
/// which zip verifies, so the CRC is recomputed.
fn patch_pickle(zip: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = zip.to_vec();
    let at = out
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern in the pickle");
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn other_globals_are_refused_by_name() {
    let pth = read("srvgg_prelu_x4.pth");
    // `collections\nOrderedDict` → `builtins\neval\n` padded to the same length is not
    // possible in place, so swap the module of the first GLOBAL for one of equal length.
    for (from, to, name) in [
        (
            &b"collections\nOrderedDict\n"[..],
            &b"collections\nOrderedDicx\n"[..],
            "collections.OrderedDicx",
        ),
        (
            &b"torch\nFloatStorage\n"[..],
            &b"posix\nFloatStorage\n"[..],
            "posix.FloatStorage",
        ),
    ] {
        let b = patch_pickle(&pth, from, to);
        let e = err(&b, "patched.pth");
        // Either the CRC check of the zip reader or the unpickler refuses it; with the CRC
        // fixed (below) it must be the unpickler, naming the global.
        let fixed = fix_crc(&b);
        let e2 = err(&fixed, "patched.pth");
        assert!(e2.contains(&format!("'{name}'")), "{e} / {e2}");
    }
}

/// Recomputes the CRC-32 of every stored entry of a zip (local headers and central
/// directory), so that tests can edit entries in place.
fn fix_crc(zip: &[u8]) -> Vec<u8> {
    fn crc32(b: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &x in b {
            c ^= u32::from(x);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let u16at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let u32at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut out = zip.to_vec();
    let mut crcs = std::collections::HashMap::new();
    let mut i = 0;
    while i + 30 <= out.len() && out[i..i + 4] == *b"PK\x03\x04" {
        let size = u32at(&out, i + 18) as usize;
        let (n, x) = (u16at(&out, i + 26), u16at(&out, i + 28));
        let name = out[i + 30..i + 30 + n].to_vec();
        let data = i + 30 + n + x;
        let crc = crc32(&out[data..data + size]);
        out[i + 14..i + 18].copy_from_slice(&crc.to_le_bytes());
        crcs.insert(name, crc);
        i = data + size;
    }
    let mut j = i;
    while j + 46 <= out.len() && out[j..j + 4] == *b"PK\x01\x02" {
        let (n, x, c) = (
            u16at(&out, j + 28),
            u16at(&out, j + 30),
            u16at(&out, j + 32),
        );
        let name = out[j + 46..j + 46 + n].to_vec();
        if let Some(crc) = crcs.get(&name) {
            out[j + 16..j + 20].copy_from_slice(&crc.to_le_bytes());
        }
        j += 46 + n + x + c;
    }
    out
}

#[test]
fn truncated_and_garbled_files_are_errors_not_panics() {
    for f in [
        "srvgg_prelu_x4.pth",
        "srvgg_prelu_x4.safetensors",
        "rrdb_x4.pth",
        "rrdb_x1.pth",
    ] {
        let b = read(f);
        // Every truncation point on a coarse grid, and a few near the ends.
        let mut cuts: Vec<usize> = (0..b.len()).step_by(97).collect();
        cuts.extend([1, 8, 9, 20, b.len() - 1, b.len() - 22]);
        for cut in cuts {
            let _ = pytorch::import(&b[..cut], f).map(|_| panic!("{f} cut at {cut} imported"));
            let _ = load_bytes(&b[..cut], f, Overrides::default());
        }
        // Flipped bytes: any result but a panic (a flip inside weights still imports).
        for (k, at) in (0..b.len()).step_by(61).enumerate() {
            let mut g = b.clone();
            g[at] ^= 0x5a ^ (k as u8);
            let _ = load_bytes(&g, f, Overrides::default());
            let _ = load_bytes(&fix_crc(&g), f, Overrides::default());
        }
    }
    let b = read("srvgg_prelu_x4.safetensors");
    let e = err(&b[..b.len() - 10], "cut.safetensors");
    assert!(e.contains("corrupt safetensors"), "{e}");
    let b = read("srvgg_prelu_x4.pth");
    let e = err(&b[..b.len() - 10], "cut.pth");
    assert!(
        e.contains("cut.pth") && e.contains("corrupt PyTorch"),
        "{e}"
    );
}

#[test]
fn tensor_views_outside_their_storage_are_refused() {
    // The first tensor, body.0.weight [8, 3, 3, 3], has storage offset 0 (`K\x00` after
    // the persistent id): make it 1, so its last element lies past the storage.
    let pth = read("srvgg_prelu_x4.pth");
    let b = fix_crc(&patch_pickle(
        &pth,
        b"QK\x00(K\x08K\x03K\x03K\x03t",
        b"QK\x01(K\x08K\x03K\x03K\x03t",
    ));
    let e = err(&b, "view.pth");
    assert!(e.contains("body.0.weight") && e.contains("storage"), "{e}");
    // A declared storage size that does not match the entry.
    let b = fix_crc(&patch_pickle(&pth, b"K\xd8tq", b"K\xd9tq"));
    let e = err(&b, "size.pth");
    assert!(e.contains("declare"), "{e}");
}

#[test]
fn legacy_torch_save_is_a_clear_error() {
    let b = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
    assert_eq!(detect_format(b), Ok(Format::PyTorch));
    let e = err(b, "old.pth");
    assert!(e.contains("legacy"), "{e}");
}

#[test]
fn import_error_names_file_for_zip_without_pickle() {
    let e = match pytorch::read_state_dict(
        b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
        "e.pth",
    ) {
        Err(ImportError::Corrupt { file, .. }) => file,
        other => panic!("{other:?}"),
    };
    assert_eq!(e, "e.pth");
}

#[test]
fn the_architecture_is_reported_for_every_fixture() {
    for (file, want) in [
        ("srvgg_prelu_x4.pth", "SRVGGNetCompact"),
        ("srvgg_prelu_x4.safetensors", "SRVGGNetCompact"),
        ("srvgg_lrelu_x3.safetensors", "SRVGGNetCompact"),
        ("rrdb_x1.pth", "RRDBNet"),
        ("rrdb_x2.safetensors", "RRDBNet"),
        ("rrdb_x4.pth", "RRDBNet"),
        ("rrdb_x4_old.pth", "RRDBNet"),
        ("rrdb_x8_old.pth", "RRDBNet"),
        ("span_x2.pth", "SPAN"),
        ("span_x4_train.pth", "SPAN"),
    ] {
        let m = load_bytes(&read(file), file, Overrides::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(m.architecture(), Some(want), "{file}");
    }
}
