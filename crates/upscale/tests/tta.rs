//! Test-time augmentation makes any network exactly equivariant to flips and quarter turns:
//! the 8 runs of a turned image are the 8 runs of the image, so their mean is the turned
//! mean. A network with random weights is not equivariant by itself, which the test checks
//! first, so the property is not met by accident. Alpha and 16-bit images keep their shape.

mod common;

use common::{edsr_like, photo, photo16, rgb_like, run};
use superres_upscale::{ColorKind, Dihedral, Options, Progress, upscale_tta};

fn tta(model: &superres_upscale::Model, img: &superres_upscale::Image) -> superres_upscale::Image {
    let opts = Options {
        tile: Some(0),
        ..Options::default()
    };
    upscale_tta(model, img, &opts, &mut |_| true).unwrap()
}

#[test]
fn tta_results_turn_with_the_image() {
    for model in [edsr_like(2), rgb_like(3)] {
        for img in [photo(13, 9, ColorKind::Rgb), photo16(7, 10, ColorKind::Rgb)] {
            let plain = run(&model, &img, 0);
            let reference = tta(&model, &img);
            assert_eq!(
                (reference.width, reference.height),
                (plain.width, plain.height)
            );
            assert_ne!(
                reference,
                plain,
                "{}: the 8 runs differ from one",
                model.name()
            );
            let mut equivariant_alone = true;
            for t in Dihedral::all().into_iter().skip(1) {
                let turned = t.apply(&img);
                if run(&model, &turned, 0) != t.apply(&plain) {
                    equivariant_alone = false;
                }
                assert_eq!(
                    tta(&model, &turned),
                    t.apply(&reference),
                    "{} {t:?}",
                    model.name()
                );
            }
            assert!(
                !equivariant_alone,
                "{}: the network alone is not equivariant",
                model.name()
            );
        }
    }
}

#[test]
fn tta_progress_counts_the_tiles_of_all_eight_runs_and_cancel_stops() {
    let model = rgb_like(2);
    let img = photo(20, 20, ColorKind::Rgb);
    let opts = Options {
        tile: Some(10),
        ..Options::default()
    };
    let mut seen: Vec<Progress> = Vec::new();
    upscale_tta(&model, &img, &opts, &mut |p| {
        seen.push(p);
        true
    })
    .unwrap();
    let last = seen.last().unwrap();
    assert_eq!(last.tiles_done, last.tiles_total);
    assert_eq!(last.tiles_total % 8, 0);
    assert!(seen.windows(2).all(|w| w[0].tiles_done <= w[1].tiles_done));
    let mut calls = 0;
    let r = upscale_tta(&model, &img, &opts, &mut |_| {
        calls += 1;
        calls < 3
    });
    assert!(
        matches!(r, Err(superres_upscale::UpscaleError::Cancelled)),
        "{r:?}"
    );
}
