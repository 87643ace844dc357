//! Foreign, truncated and random bytes give an error naming the file, never a panic.

mod common;

use common::{Rng, file_name};
use superres_import::{Format, ImportError, Overrides, detect_format, load_bytes};

fn must_fail(bytes: &[u8], what: &str) -> ImportError {
    match load_bytes(bytes, "model.pb", Overrides::default()) {
        Ok(m) => panic!(
            "{what}: imported as a {:?} model with {} nodes",
            m.format,
            m.graph.nodes.len()
        ),
        Err(e) => {
            assert!(
                e.to_string().starts_with("model.pb"),
                "{what}: error does not name the file: {e}"
            );
            e
        }
    }
}

#[test]
fn empty_text_and_image_files_are_not_models() {
    for (bytes, what) in [
        (&b""[..], "empty"),
        (&b"hello, this is a text file\n"[..], "text"),
        (&b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"[..], "png"),
        (&b"\xff\xd8\xff\xe0\0\x10JFIF"[..], "jpeg"),
    ] {
        let e = must_fail(bytes, what);
        assert!(
            matches!(e, ImportError::UnknownFormat { .. }),
            "{what}: {e}"
        );
    }
}

#[test]
fn the_shared_png_and_readme_are_refused_as_unknown_formats() {
    let shared = superres_testdata::shared_or_skip!();
    for p in [
        shared.join("reference/inputs/butterfly_crop48x32.png"),
        shared.join("models/opencv/OPS.md"),
    ] {
        let bytes = std::fs::read(&p).expect("readable asset");
        let e = must_fail(&bytes, &file_name(&p));
        assert!(
            matches!(e, ImportError::UnknownFormat { .. }),
            "{}: {e}",
            p.display()
        );
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::new(11);
    for len in [1usize, 2, 3, 7, 16, 100, 1000, 5000] {
        for _ in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let _ = load_bytes(&bytes, "model.pb", Overrides::default());
        }
    }
    // Random bytes behind a valid-looking GraphDef tag.
    for _ in 0..200 {
        let mut bytes = vec![0x0a];
        bytes.extend((0..64).map(|_| rng.next_u64() as u8));
        let _ = load_bytes(&bytes, "model.pb", Overrides::default());
    }
}

#[test]
fn truncated_models_fail_cleanly_at_every_offset() {
    let shared = superres_testdata::shared_or_skip!();
    for model in ["ESPCN_x2.pb", "FSRCNN-small_x3.pb"] {
        let bytes =
            std::fs::read(shared.join("models/opencv").join(model)).expect("readable model");
        assert_eq!(detect_format(&bytes), Ok(Format::TensorFlow));
        let mut errors = 0;
        let step = (bytes.len() / 1500).max(1);
        let cuts: Vec<usize> = (1..bytes.len() - 2)
            .step_by(step)
            .chain(bytes.len() - 8..bytes.len() - 2)
            .collect();
        for &cut in &cuts {
            // A cut on a record boundary can leave a smaller valid graph; anything else must
            // be an error, and nothing may panic.
            if load_bytes(&bytes[..cut], model, Overrides::default()).is_err() {
                errors += 1;
            }
        }
        assert!(
            errors * 10 >= cuts.len() * 9,
            "{model}: only {errors} of {} truncations were refused",
            cuts.len()
        );
        // One byte short of the end cuts the trailing empty `library` record in half.
        let e = load_bytes(&bytes[..bytes.len() - 1], model, Overrides::default())
            .expect_err("a cut record");
        assert!(matches!(e, ImportError::Corrupt { .. }), "{model}: {e}");
    }
}

#[test]
fn flipped_bytes_in_a_real_model_never_panic() {
    let shared = superres_testdata::shared_or_skip!();
    let bytes =
        std::fs::read(shared.join("models/opencv/FSRCNN-small_x2.pb")).expect("readable model");
    let mut rng = Rng::new(5);
    for _ in 0..400 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            let i = (rng.next_u64() as usize) % b.len();
            b[i] = rng.next_u64() as u8;
        }
        if let Ok(m) = load_bytes(&b, "flipped.pb", Overrides::default()) {
            // Whatever survives must still be a valid graph the interpreter can run.
            let x = rng.image(5, 4, m.graph.input_channels().unwrap_or(1), 0.0, 1.0);
            let _ = superres_engine::cpu::reference::run(&m.graph, &x);
        }
    }
}

#[test]
fn onnx_files_are_recognised_as_onnx() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("onnx") {
            continue;
        }
        let bytes = std::fs::read(&p).expect("readable fixture");
        assert_eq!(detect_format(&bytes), Ok(Format::Onnx), "{}", p.display());
        seen += 1;
    }
    assert!(seen > 0, "no ONNX fixtures in {}", dir.display());
}
