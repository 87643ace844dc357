//! The `superres` binary as a user runs it: output naming, batches that survive a broken
//! file, formats, `models inspect` and `bench --json`.
//!
//! The model is the small SRVGGNetCompact-shaped ONNX fixture committed with the importer
//! tests, so nothing outside the repository is needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_superres"))
}

fn fixture_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../import/tests/fixtures/srvgg_compact_x4.onnx")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("superres-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_png(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 30) as u8, ((x + y) * 9) as u8])
    });
    img.save(path).unwrap();
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the binary runs");
    eprintln!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn one_input_defaults_to_stem_x_scale_beside_it() {
    let dir = temp_dir("single");
    let input = dir.join("photo.png");
    write_png(&input, 7, 5);
    let out = run(bin()
        .arg("upscale")
        .arg(&input)
        .arg("--model")
        .arg(fixture_model())
        .arg("--quiet"));
    assert!(out.status.success());
    let result =
        image::open(dir.join("photo_x4.png")).expect("photo_x4.png written beside the input");
    assert_eq!((result.width(), result.height()), (28, 20));
}

#[test]
fn one_input_with_o_names_the_file_and_its_format() {
    let dir = temp_dir("named");
    let input = dir.join("a.png");
    write_png(&input, 6, 6);
    let target = dir.join("result.jpg");
    let out = run(bin()
        .arg("upscale")
        .arg(&input)
        .arg("-o")
        .arg(&target)
        .arg("--model")
        .arg(fixture_model()));
    assert!(out.status.success());
    let bytes = std::fs::read(&target).unwrap();
    assert_eq!(
        &bytes[..3],
        &[0xFF, 0xD8, 0xFF],
        "-o result.jpg writes a JPEG"
    );
}

#[test]
fn a_batch_keeps_going_past_a_broken_file_and_fails_at_the_end() {
    let dir = temp_dir("batch");
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    write_png(&inputs.join("one.png"), 5, 4);
    write_png(&inputs.join("two.png"), 3, 3);
    std::fs::write(inputs.join("broken.png"), b"not really a png").unwrap();
    let outdir = dir.join("out");
    let out = run(bin()
        .arg("upscale")
        .arg(&inputs)
        .arg("-o")
        .arg(&outdir)
        .arg("--model")
        .arg(fixture_model())
        .arg("--format")
        .arg("webp"));
    assert!(
        !out.status.success(),
        "a failed file makes the exit status non-zero"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("broken.png"),
        "the broken file is named: {stderr}"
    );
    for (name, (w, h)) in [("one", (20, 16)), ("two", (12, 12))] {
        let img = image::open(outdir.join(format!("{name}.webp")))
            .unwrap_or_else(|e| panic!("{name}.webp: {e}"));
        assert_eq!((img.width(), img.height()), (w, h), "{name}");
    }
    assert!(!outdir.join("broken.webp").exists());
}

#[test]
fn unknown_model_name_lists_what_exists() {
    let dir = temp_dir("unknown");
    let input = dir.join("p.png");
    write_png(&input, 4, 4);
    let out = run(bin()
        .arg("upscale")
        .arg(&input)
        .arg("--model")
        .arg("no-such-model"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no model named 'no-such-model'"),
        "{stderr}"
    );
}

#[test]
fn models_inspect_reports_family_scale_and_field() {
    let out = run(bin().arg("models").arg("inspect").arg(fixture_model()));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("family:           rgb"), "{text}");
    assert!(text.contains("scale:            4"), "{text}");
    assert!(text.contains("receptive field:"), "{text}");
}

#[test]
fn bench_json_has_the_documented_fields() {
    let out = run(bin()
        .args([
            "bench", "--size", "16x12", "--runs", "2", "--json", "--model",
        ])
        .arg(fixture_model()));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "model",
        "device",
        "size",
        "runs",
        "median_ms",
        "min_ms",
        "megapixels_per_s",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["size"], "16x12");
    assert_eq!(v["runs"], 2);
}

#[test]
fn max_input_side_downscales_before_upscaling() {
    let dir = temp_dir("cap");
    let input = dir.join("wide.png");
    write_png(&input, 12, 6);
    let target = dir.join("out.png");
    let out = run(bin()
        .arg("upscale")
        .arg(&input)
        .arg("-o")
        .arg(&target)
        .arg("--max-input-side")
        .arg("6")
        .arg("--model")
        .arg(fixture_model()));
    assert!(out.status.success());
    let img = image::open(&target).unwrap();
    assert_eq!(
        (img.width(), img.height()),
        (24, 12),
        "12×6 capped to 6×3, then ×4"
    );
}
