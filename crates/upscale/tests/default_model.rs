//! The built-in default model: it loads with no file on disk, is what `default` resolves
//! to, and computes what ONNX Runtime computed for the same input (fixture made by
//! `tests/fixtures/make_default_fixture.py`).

use std::path::Path;

use superres_engine::cpu::CpuBackend;
use superres_graph::Tensor;
use superres_import::{Family, Overrides};
use superres_upscale::registry::{self, ModelSource};
use superres_upscale::{ColorKind, Image, Options, upscale};

fn fixture(name: &str) -> superres_testdata::Npy {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    superres_testdata::read_npy(&p).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn default_resolves_to_the_builtin_model_without_any_file() {
    let entry = registry::resolve(registry::DEFAULT_MODEL, None).unwrap();
    assert_eq!(entry.source, ModelSource::Builtin("default"));
    let model = entry
        .source
        .load(&entry.name, &CpuBackend::new(), Overrides::default())
        .unwrap();
    assert_eq!(model.scale(), 3);
    assert_eq!(model.family(), Family::YChannel);
    assert_eq!(model.info().source, "builtin");
}

#[test]
fn default_model_matches_onnx_runtime() {
    let model = registry::ModelSource::Builtin("default")
        .load("default", &CpuBackend::new(), Overrides::default())
        .unwrap();
    let (h, w, c, input) = superres_testdata::nchw_to_hwc(&fixture("default_x3_in.npy"));
    let (oh, ow, oc, want) = superres_testdata::nchw_to_hwc(&fixture("default_x3_out.npy"));
    let got = model
        .forward(&Tensor::image(h, w, c, input))
        .unwrap()
        .remove(0);
    assert_eq!(got.shape(), &[oh, ow, oc]);
    let worst = got
        .data()
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4,
        "largest difference from ONNX Runtime: {worst}"
    );
}

#[test]
fn default_model_upscales_by_three_and_keeps_flat_regions_their_colour() {
    // A checkerboard of flat 5×5 squares: the result is 3× larger and flat areas keep their colour.
    let (w, h) = (30, 20);
    let data: Vec<u8> = (0..w * h * 3)
        .map(|i| {
            let (px, ch) = (i / 3, i % 3);
            let (x, y) = (px % w, px / w);
            if (x / 5 + y / 5) % 2 == 0 {
                40 + ch as u8 * 30
            } else {
                200 - ch as u8 * 20
            }
        })
        .collect();
    let img = Image::from_u8(w, h, ColorKind::Rgb, data);
    let model = registry::ModelSource::Builtin("default")
        .load("default", &CpuBackend::new(), Overrides::default())
        .unwrap();
    let out = upscale(&model, &img, &Options::default(), &mut |_| true).unwrap();
    assert_eq!(
        (out.width, out.height, out.color_kind),
        (90, 60, ColorKind::Rgb)
    );
    // The centre of a flat 5×5 square stays its colour (±3 for ringing).
    let superres_upscale::Samples::U8(v) = &out.color else {
        panic!("8-bit in, 8-bit out")
    };
    let centre = ((7 * 3) * 90 + 7 * 3) * 3;
    for ch in 0..3 {
        let want = 40 + ch as i32 * 30;
        assert!(
            (v[centre + ch] as i32 - want).abs() <= 3,
            "channel {ch}: {} vs {want}",
            v[centre + ch]
        );
    }
}
