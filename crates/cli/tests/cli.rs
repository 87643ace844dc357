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

/// A file whose result would exceed `--max-output-pixels` fails by name with both sizes,
/// nothing is written for it, and the batch goes on.
#[test]
fn a_result_over_the_output_pixel_limit_fails_that_file_only() {
    let dir = temp_dir("outlimit");
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    write_png(&inputs.join("big.png"), 6, 5); // ×4: 24×20 = 480 pixels
    write_png(&inputs.join("small.png"), 5, 4); // ×4: 20×16 = 320 pixels
    let outdir = dir.join("out");
    let out = run(bin()
        .arg("upscale")
        .arg(&inputs)
        .arg("-o")
        .arg(&outdir)
        .arg("--model")
        .arg(fixture_model())
        .arg("--max-output-pixels")
        .arg("400"));
    assert!(!out.status.success(), "an over-limit file fails the run");
    let stderr = stderr(&out);
    assert!(
        stderr.contains("big.png")
            && stderr.contains("24x20 = 480 pixels")
            && stderr.contains("limit of 400 output pixels"),
        "the file, its size and the limit are named: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !outdir.join("big.png").exists(),
        "nothing is written for it"
    );
    let img = image::open(outdir.join("small.png")).expect("the next file is upscaled");
    assert_eq!((img.width(), img.height()), (20, 16));
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
fn a_recursive_batch_keeps_the_tree_skips_what_exists_and_sums_up() {
    let dir = temp_dir("tree");
    let inputs = dir.join("in");
    std::fs::create_dir_all(inputs.join("trip/day1")).unwrap();
    write_png(&inputs.join("top.png"), 4, 3);
    write_png(&inputs.join("trip/a.png"), 3, 2);
    write_png(&inputs.join("trip/day1/b.png"), 2, 2);
    write_png(&inputs.join("trip/day1/done.png"), 2, 2);
    std::fs::write(inputs.join("trip/broken.png"), b"not really a png").unwrap();
    std::fs::write(inputs.join("trip/notes.txt"), b"not an image at all").unwrap();
    let outdir = dir.join("out");
    std::fs::create_dir_all(outdir.join("trip/day1")).unwrap();
    std::fs::write(outdir.join("trip/day1/done.png"), b"made before").unwrap();
    let out = run(bin()
        .arg("upscale")
        .arg(&inputs)
        .args(["-r", "--skip-existing", "--quiet", "-o"])
        .arg(&outdir)
        .arg("--model")
        .arg(fixture_model()));
    assert!(
        !out.status.success(),
        "one file failed, so the exit status is non-zero"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("done 3, skipped 1, failed 1 in "),
        "the summary: {stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.png"));
    for (name, (w, h)) in [
        ("top", (16, 12)),
        ("trip/a", (12, 8)),
        ("trip/day1/b", (8, 8)),
    ] {
        let img = image::open(outdir.join(format!("{name}.png")))
            .unwrap_or_else(|e| panic!("{name}.png: {e}"));
        assert_eq!((img.width(), img.height()), (w, h), "{name}");
    }
    assert_eq!(
        std::fs::read(outdir.join("trip/day1/done.png")).unwrap(),
        b"made before",
        "an existing output is left alone"
    );
    assert!(!outdir.join("trip/broken.png").exists());

    // Without -r only the folder's own images are taken.
    let flat = dir.join("flat");
    let out = run(bin()
        .arg("upscale")
        .arg(&inputs)
        .args(["--quiet", "-o"])
        .arg(&flat)
        .arg("--model")
        .arg(fixture_model()));
    assert!(out.status.success());
    assert!(flat.join("top.png").is_file() && !flat.join("trip").exists());
}

#[test]
fn outscale_width_and_height_resize_the_result() {
    let dir = temp_dir("sizes");
    let input = dir.join("photo.png");
    write_png(&input, 10, 6);
    for (args, name, size) in [
        (vec!["--outscale", "2"], "photo_x2.png", (20, 12)),
        (vec!["--outscale", "2.5"], "photo_x2.5.png", (25, 15)),
        (vec!["--width", "50"], "photo_w50.png", (50, 30)),
        (vec!["--height", "9"], "photo_h9.png", (15, 9)),
        (
            vec!["--width", "7", "--height", "7"],
            "photo_7x7.png",
            (7, 7),
        ),
    ] {
        let out = run(bin()
            .arg("upscale")
            .arg(&input)
            .args(&args)
            .arg("--quiet")
            .arg("--model")
            .arg(fixture_model()));
        assert!(out.status.success(), "{args:?}");
        let img = image::open(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((img.width(), img.height()), size, "{args:?}");
    }
    let out = run(bin()
        .arg("upscale")
        .arg(&input)
        .args(["--outscale", "0.5", "--quiet", "--model"])
        .arg(fixture_model()));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("outscale must be a number from 1"));
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
fn models_inspect_reports_format_architecture_family_scale_and_field() {
    let out = run(bin().arg("models").arg("inspect").arg(fixture_model()));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("format:           Onnx"), "{text}");
    assert!(text.contains("architecture:     SRVGGNetCompact"), "{text}");
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

/// What is missing for a GPU on this machine, as the engine reports it; `None` (and the
/// GPU-less assertions skipped) on a machine with a usable GPU.
fn gpu_missing() -> Option<String> {
    match superres_engine::cuda::probe().usable() {
        Ok(()) => {
            eprintln!("SKIPPED: this machine has a usable GPU; the no-GPU assertions do not apply");
            None
        }
        Err(e) => Some(e.0),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn devices_reports_the_cpu_and_why_no_gpu_is_usable() {
    let out = run(bin().arg("devices"));
    assert!(out.status.success(), "a report exits 0");
    let text = String::from_utf8_lossy(&out.stdout);
    let isa = superres_engine::cpu::Isa::detect().name();
    assert!(text.contains(&format!("instruction set: {isa}")), "{text}");
    assert!(text.contains("threads:"), "{text}");
    for part in ["driver:", "NVRTC:", "cuDNN:"] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
    if let Some(missing) = gpu_missing() {
        assert!(
            text.contains(&format!("no usable GPU: {missing}\n")),
            "{text}"
        );
        assert!(text.contains("--device auto uses the CPU"), "{text}");
    }

    let out = run(bin().args(["devices", "--json"]));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["cpu"]["isa"], isa);
    assert!(v["cpu"]["threads"].as_u64().is_some_and(|n| n >= 1), "{v}");
    for lib in ["driver", "nvrtc", "cudnn"] {
        let l = &v["cuda"][lib];
        assert!(
            l["path"].is_string() || l["error"].is_string(),
            "{lib}: path or error in {v}"
        );
    }
    assert!(v["cuda"]["gpus"].is_array(), "{v}");
    if let Some(missing) = gpu_missing() {
        assert_eq!(v["cuda"]["usable"], false);
        assert_eq!(v["cuda"]["unusable_reason"], missing.as_str());
        assert_eq!(v["auto"], "cpu");
    }
}

#[test]
fn upscale_on_auto_runs_on_the_cpu_and_says_why() {
    let Some(missing) = gpu_missing() else { return };
    let dir = temp_dir("auto");
    let input = dir.join("p.png");
    write_png(&input, 5, 4);
    let out = run(bin()
        .arg("upscale")
        .arg(&input)
        .args(["--device", "auto", "--quiet", "--model"])
        .arg(fixture_model()));
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains("device: cpu ("), "{err}");
    assert!(
        err.contains(&format!(", precision exact — no usable GPU: {missing}\n")),
        "the reason names what is missing: {err}"
    );
    let img = image::open(dir.join("p_x4.png")).expect("the output is written");
    assert_eq!((img.width(), img.height()), (20, 16));

    // A GPU precision through auto: still the CPU, exact, with a note.
    let out = run(bin()
        .arg("upscale")
        .arg(&input)
        .args([
            "--device",
            "auto",
            "--precision",
            "fp16",
            "--quiet",
            "--model",
        ])
        .arg(fixture_model()));
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(err.contains(", precision exact — no usable GPU: "), "{err}");
    assert!(
        err.contains("note: precision fp16 applies to GPUs only; the CPU computes exactly"),
        "{err}"
    );
}

#[test]
fn upscale_on_cuda_without_a_gpu_fails_naming_what_is_missing() {
    let Some(missing) = gpu_missing() else { return };
    let dir = temp_dir("cuda");
    let input = dir.join("p.png");
    write_png(&input, 4, 4);
    for device in ["cuda", "cuda:0", "cuda:1", "cuda:all", "cuda:0,1"] {
        let out = run(bin()
            .arg("upscale")
            .arg(&input)
            .args(["--device", device, "--quiet", "--model"])
            .arg(fixture_model()));
        assert_eq!(out.status.code(), Some(1), "{device}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "error: device '{device}' is not available: {missing}"
            )),
            "{device}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!dir.join("p_x4.png").exists(), "nothing is written");
}

#[test]
fn unknown_devices_and_precisions_are_clear_errors() {
    let dir = temp_dir("badargs");
    let input = dir.join("p.png");
    write_png(&input, 4, 4);
    for (args, says) in [
        (
            &["--device", "tpu"][..],
            "unknown device 'tpu' (expected auto, cpu, cuda",
        ),
        (&["--device", "cuda:x"][..], "'x' is not a GPU ordinal"),
        (&["--device", "cuda:0,0"][..], "GPU 0 is listed twice"),
        (
            &["--precision", "fp8"][..],
            "unknown precision 'fp8' (expected exact, tf32, fp16 or bf16)",
        ),
    ] {
        let out = run(bin().arg("upscale").arg(&input).args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: a usage error");
        let err = stderr(&out);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // The CPU computes exactly: another precision asked of it is refused.
    let out = run(bin()
        .arg("upscale")
        .arg(&input)
        .args(["--device", "cpu", "--precision", "bf16", "--model"])
        .arg(fixture_model()));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "precision 'bf16' needs a GPU: the CPU computes in exact (f32) precision only"
        ),
        "{err}"
    );
    // The same checks apply to bench and serve.
    let out = run(bin().args(["bench", "--precision", "fp8"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(bin().args(["serve", "--device", "tpu"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown device 'tpu'"));
    let out = run(bin()
        .args(["serve", "--bind", "127.0.0.1:0", "--device", "cpu"])
        .env("SUPERRES_PRECISION", "fp16"));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("precision 'fp16' needs a GPU"));
    let config = dir.join("bad.toml");
    std::fs::write(&config, "precision = \"fp8\"\n").unwrap();
    let out = run(bin()
        .args(["serve", "--bind", "127.0.0.1:0", "--config"])
        .arg(&config));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml") && err.contains("unknown precision 'fp8'"),
        "{err}"
    );
}

#[test]
fn bench_json_reports_the_precision() {
    let out = run(bin()
        .args(["bench", "--size", "8x8", "--runs", "1", "--json"])
        .args(["--device", "cpu", "--precision", "exact", "--model"])
        .arg(fixture_model()));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["precision"], "exact");
    assert!(v["device"].as_str().unwrap().starts_with("cpu ("), "{v}");
}

/// `serve --device auto` logs the device it chose and why, before it listens.
#[test]
fn serve_logs_the_device_and_the_reason() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let mut child = bin()
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--device",
            "auto",
            "--model",
        ])
        .arg(fixture_model())
        .env("SUPERRES_LOG", "info")
        .env("SUPERRES_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let done = line.contains("listening");
            if tx.send(line).is_err() || done {
                break;
            }
        }
    });
    let mut log = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let done = line.contains("listening");
        log.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join("\n");
    assert!(log.contains("listening"), "the server started: {log}");
    let line = log
        .lines()
        .find(|l| l.contains("device: "))
        .unwrap_or_else(|| panic!("no device line in the log:\n{log}"));
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("requested=auto"), "{line}");
    if let Some(missing) = gpu_missing() {
        assert!(line.contains("device: cpu ("), "{line}");
        assert!(
            line.contains(&format!("no usable GPU: {missing}")),
            "{line}"
        );
        assert!(line.contains(", precision exact — "), "{line}");
    }
}

/// The log of `serve ARGS` on the CPU up to its "listening" line (or its end, when it
/// cannot start).
fn serve_log(args: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let mut child = bin()
        .args(["serve", "--device", "cpu", "--model"])
        .arg(fixture_model())
        .args(args)
        .env("SUPERRES_LOG", "info")
        .env("SUPERRES_LOG_FORMAT", "text")
        .env_remove("SUPERRES_ADMIN_TOKEN")
        .env_remove("SUPERRES_API_KEYS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let done = line.contains("listening");
            if tx.send(line).is_err() || done {
                break;
            }
        }
    });
    let mut log = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        let done = line.contains("listening");
        log.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log.join("\n")
}

/// Listening beyond loopback with no access control is warned about before "listening";
/// with a token, or on loopback, it is not.
#[test]
fn serve_warns_when_it_is_open_beyond_loopback() {
    let warning = "with no access control";
    let log = serve_log(&["--bind", "0.0.0.0:0"]);
    assert!(log.contains("listening"), "the server started: {log}");
    let line = log
        .lines()
        .find(|l| l.contains(warning))
        .unwrap_or_else(|| panic!("no warning in the log:\n{log}"));
    assert!(
        line.contains("WARN") && line.contains("--api-keys"),
        "{line}"
    );

    for args in [
        &["--bind", "0.0.0.0:0", "--admin-token", "s3cret"][..],
        &["--bind", "127.0.0.1:0"][..],
    ] {
        let log = serve_log(args);
        assert!(log.contains("listening"), "{args:?}: {log}");
        assert!(!log.contains(warning), "{args:?}: {log}");
        assert!(!log.contains("s3cret"), "the token is never logged: {log}");
    }

    let log = serve_log(&["--bind", "127.0.0.1:0", "--api-keys", "/nonexistent/keys"]);
    assert!(!log.contains("listening"), "{log}");
    assert!(log.contains("cannot read the API key file"), "{log}");
}

/// A 6×4 JPEG whose EXIF says orientation 6 (view turned 90° clockwise) and Make "Cam".
fn jpeg_with_exif(path: &Path) {
    use image::ImageEncoder;
    let mut exif = b"II*\0".to_vec();
    exif.extend_from_slice(&8u32.to_le_bytes());
    exif.extend_from_slice(&2u16.to_le_bytes());
    for (tag, ty, count, value) in [
        (0x010Fu16, 2u16, 4u32, *b"Cam\0"),
        (0x0112, 3, 1, [6, 0, 0, 0]),
    ] {
        exif.extend_from_slice(&tag.to_le_bytes());
        exif.extend_from_slice(&ty.to_le_bytes());
        exif.extend_from_slice(&count.to_le_bytes());
        exif.extend_from_slice(&value);
    }
    exif.extend_from_slice(&[0; 4]);
    let pixels: Vec<u8> = (0..6 * 4 * 3).map(|i| (i * 11 % 256) as u8).collect();
    let mut out = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
    encoder.set_exif_metadata(exif).unwrap();
    encoder
        .write_image(&pixels, 6, 4, image::ExtendedColorType::Rgb8)
        .unwrap();
    std::fs::write(path, out).unwrap();
}

fn exif_of(path: &Path, format: image::ImageFormat) -> Option<Vec<u8>> {
    use image::ImageDecoder;
    let bytes = std::fs::read(path).unwrap();
    let mut d = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_decoder()
        .unwrap();
    d.exif_metadata().unwrap()
}

#[test]
fn metadata_is_kept_upright_or_stripped_and_webp_quality_makes_it_lossy() {
    let dir = temp_dir("metadata");
    let input = dir.join("cam.jpg");
    jpeg_with_exif(&input);
    for (name, format) in [
        ("out.jpg", image::ImageFormat::Jpeg),
        ("out.png", image::ImageFormat::Png),
        ("out.webp", image::ImageFormat::WebP),
    ] {
        let out = dir.join(name);
        assert!(
            run(bin()
                .arg("upscale")
                .arg(&input)
                .arg("-o")
                .arg(&out)
                .args(["--quiet", "--model"])
                .arg(fixture_model()))
            .status
            .success()
        );
        let img = image::open(&out).unwrap();
        assert_eq!(
            (img.width(), img.height()),
            (16, 24),
            "{name}: turned upright, ×4"
        );
        let exif = exif_of(&out, format).unwrap_or_else(|| panic!("{name}: EXIF kept"));
        let orientation = exif
            .windows(2)
            .position(|w| w == [0x12, 0x01])
            .map(|at| exif[at + 8]);
        assert_eq!(orientation, Some(1), "{name}: orientation reset to 1");
        assert!(
            exif.windows(4).any(|w| w == b"Cam\0"),
            "{name}: other tags kept"
        );
    }
    let stripped = dir.join("stripped.jpg");
    assert!(
        run(bin()
            .arg("upscale")
            .arg(&input)
            .arg("-o")
            .arg(&stripped)
            .args(["--quiet", "--strip-metadata", "--model"])
            .arg(fixture_model()))
        .status
        .success()
    );
    assert_eq!(exif_of(&stripped, image::ImageFormat::Jpeg), None);
    // --quality makes WebP lossy: a VP8 (not VP8L) bitstream.
    let lossy = dir.join("lossy.webp");
    assert!(
        run(bin()
            .arg("upscale")
            .arg(&input)
            .arg("-o")
            .arg(&lossy)
            .args(["--quiet", "--quality", "80", "--model"])
            .arg(fixture_model()))
        .status
        .success()
    );
    let bytes = std::fs::read(&lossy).unwrap();
    assert!(bytes.windows(4).any(|w| w == b"VP8 "), "a lossy bitstream");
    assert!(!bytes.windows(4).any(|w| w == b"VP8L"));
    assert!(
        exif_of(&lossy, image::ImageFormat::WebP).is_some(),
        "lossy WebP keeps EXIF"
    );
}

use superres_testdata::video::{ffmpeg_or_skip, streams, video_stream};

/// A test clip made by ffmpeg itself: testsrc2 at 25 fps with a sine audio track.
fn make_clip(path: &Path, w: u32, h: u32, seconds: u32) {
    superres_testdata::video::make_clip(path, w, h, 25, seconds);
}

#[test]
fn a_video_keeps_its_frames_rate_duration_and_audio() {
    if !ffmpeg_or_skip() {
        return;
    }
    let dir = temp_dir("video");
    let clip = dir.join("clip.mp4");
    make_clip(&clip, 40, 30, 2);
    let out = run(bin()
        .arg("upscale")
        .arg(&clip)
        .args(["--quiet", "--model"])
        .arg(fixture_model()));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("50 frames, 160×120"));
    let result = dir.join("clip_x4.mp4");
    let v = video_stream(&result);
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(160), Some(120))
    );
    assert_eq!(v["nb_read_frames"], "50", "same frame count");
    assert_eq!(v["r_frame_rate"], "25/1", "same frame rate");
    let duration: f64 = v["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 2.0).abs() < 0.05, "same duration: {duration}");
    assert!(
        streams(&result).iter().any(|s| s["codec_type"] == "audio"),
        "the audio is copied"
    );
    assert!(
        !dir.join("clip_x4.mp4.parts").exists(),
        "no work files left"
    );
    // --outscale applies to every frame.
    let half = dir.join("half.mkv");
    let out = run(bin()
        .arg("upscale")
        .arg(&clip)
        .arg("-o")
        .arg(&half)
        .args(["--quiet", "--outscale", "2", "--model"])
        .arg(fixture_model()));
    assert!(out.status.success());
    let v = video_stream(&half);
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(80), Some(60))
    );
}

#[cfg(unix)]
#[test]
fn an_interrupted_video_leaves_no_output_and_resumes_from_its_segments() {
    if !ffmpeg_or_skip() {
        return;
    }
    let dir = temp_dir("resume");
    let clip = dir.join("long.mp4");
    make_clip(&clip, 48, 32, 4);
    let result = dir.join("long_x4.mp4");
    let parts = dir.join("long_x4.mp4.parts");
    let args = |cmd: &mut Command| {
        cmd.arg("upscale")
            .arg(&clip)
            .args(["--quiet", "--tta", "--segment-frames", "10", "--model"])
            .arg(fixture_model());
    };
    let mut cmd = bin();
    args(&mut cmd);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first segment is finished, Ctrl-C.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !parts.join("seg000000.mkv").is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first segment was never finished"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was interrupted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "an interrupted run fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--resume"),
        "it says how to go on: {stderr}"
    );
    assert!(!result.exists(), "nothing under the final name");
    let kept = std::fs::read_dir(&parts)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "mkv"))
        .count();
    assert!((1..10).contains(&kept), "finished segments kept: {kept}");

    let mut cmd = bin();
    args(&mut cmd);
    let out = run(cmd.arg("--resume"));
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("100 frames") && stdout.contains("resumed"),
        "{stdout}"
    );
    let v = video_stream(&result);
    assert_eq!(v["nb_read_frames"], "100", "every frame once");
    let duration: f64 = v["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - 4.0).abs() < 0.05, "{duration}");
    assert!(!parts.exists());
}

#[test]
fn scale_alone_picks_the_built_in_model_of_that_scale() {
    let dir = temp_dir("builtin-scale");
    let input = dir.join("small.png");
    write_png(&input, 6, 5);
    for (scale, size) in [("2", (12, 10)), ("3", (18, 15)), ("4", (24, 20))] {
        let out = dir.join(format!("out{scale}.png"));
        let r = run(bin()
            .arg("upscale")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(["--quiet", "--scale", scale]));
        assert!(r.status.success(), "--scale {scale}");
        let img = image::open(&out).unwrap();
        assert_eq!((img.width(), img.height()), size, "--scale {scale}");
    }
    let r = run(bin()
        .arg("upscale")
        .arg(&input)
        .args(["--quiet", "--scale", "5"]));
    assert!(!r.status.success());
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("no built-in model has scale 5") && stderr.contains("default_x4"),
        "{stderr}"
    );
    let listed = run(bin().args(["models", "list"]));
    let stdout = String::from_utf8_lossy(&listed.stdout);
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} listed: {stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for (name, scale) in [
        ("default", "×3"),
        ("default_x2", "×2"),
        ("default_x4", "×4"),
    ] {
        let cols = line(name);
        assert_eq!(&cols[1..5], ["onnx", "-", "y", scale], "{name}: {cols:?}");
        assert!(
            cols[5].parse::<u64>().unwrap() > 60_000,
            "{name}: parameters {cols:?}"
        );
    }
    let inspected = run(bin().args(["models", "inspect", "default_x2"]));
    assert!(inspected.status.success());
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(text.contains("scale:            2"), "{text}");
    assert!(text.contains("architecture:     unknown"), "{text}");
}

#[test]
fn upscale_takes_a_pytorch_safetensors_model_and_the_folder_lists_pth_and_safetensors() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../import/tests/fixtures/pytorch");
    let dir = temp_dir("pytorch");
    let input = dir.join("photo.png");
    write_png(&input, 7, 5);
    let out = dir.join("photo_big.png");
    let r = run(bin()
        .arg("upscale")
        .arg(&input)
        .arg("--model")
        .arg(fixtures.join("srvgg_prelu_x4.safetensors"))
        .arg("-o")
        .arg(&out)
        .arg("--quiet"));
    assert!(r.status.success());
    let img = image::open(&out).expect("the output is written");
    assert_eq!((img.width(), img.height()), (28, 20));

    let models = dir.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::copy(
        fixtures.join("srvgg_prelu_x4.pth"),
        models.join("compact.pth"),
    )
    .unwrap();
    std::fs::copy(
        fixtures.join("rrdb_x2.safetensors"),
        models.join("esrgan.safetensors"),
    )
    .unwrap();
    let listed = run(bin().args(["models", "list", "--models"]).arg(&models));
    assert!(listed.status.success());
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        stdout
            .lines()
            .next()
            .is_some_and(|l| l.split_whitespace().eq([
                "name",
                "format",
                "architecture",
                "family",
                "scale",
                "parameters",
                "MACs/pixel",
                "field",
                "source"
            ])),
        "{stdout}"
    );
    for (name, arch, scale) in [
        ("compact", "SRVGGNetCompact", "×4"),
        ("esrgan", "RRDBNet", "×2"),
    ] {
        let cols: Vec<&str> = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} listed: {stdout}"))
            .split_whitespace()
            .collect();
        assert_eq!(
            &cols[1..5],
            ["pytorch", arch, "rgb", scale],
            "{name}: {cols:?}"
        );
    }
}
