//! Test-time augmentation: the model run on the image's 8 flips and quarter turns, each
//! result turned back and the 8 averaged (`superres upscale --tta`).
//!
//! Where it sits: around [`upscale`], which it calls 8 times. A network is not exactly
//! equivariant to flips and rotations, so the 8 results differ a little; their mean cancels
//! part of each one's error (the "self-ensemble" of EDSR and Real-ESRGAN's TTA). The cost is
//! 8 runs. The results are averaged as they come back from the pipeline, in its output
//! depth (8 or 16 bits), with exact integer sums, and rounded once: averaging the networks'
//! float outputs instead would differ by at most half a level. Alpha is averaged the same
//! way. The gain measured on Set5 is in the README.

use superres_imaging::{Image, Samples};

use crate::{Model, Options, Progress, UpscaleError, upscale};

/// One of the 8 symmetries of a rectangle: transpose first (`swap`), then mirror the
/// columns (`flip_x`) and the rows (`flip_y`) of the result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dihedral {
    pub swap: bool,
    pub flip_x: bool,
    pub flip_y: bool,
}

impl Dihedral {
    /// All 8, the identity first.
    pub fn all() -> [Dihedral; 8] {
        let mut all = [Dihedral {
            swap: false,
            flip_x: false,
            flip_y: false,
        }; 8];
        for (i, d) in all.iter_mut().enumerate() {
            *d = Dihedral {
                swap: i & 4 != 0,
                flip_x: i & 1 != 0,
                flip_y: i & 2 != 0,
            };
        }
        all
    }

    /// The transform that undoes this one. A transpose followed by mirrors is undone by the
    /// mirrors (each its own inverse) followed by the transpose, which is the transpose
    /// followed by the mirrors with their axes exchanged.
    pub fn inverse(self) -> Dihedral {
        if self.swap {
            Dihedral {
                swap: true,
                flip_x: self.flip_y,
                flip_y: self.flip_x,
            }
        } else {
            self
        }
    }

    /// The image transformed; its ICC profile is kept.
    pub fn apply(self, image: &Image) -> Image {
        let (w, h) = (image.width, image.height);
        let (ow, oh) = if self.swap { (h, w) } else { (w, h) };
        // Where source pixel (x, y) lands.
        let target = |x: usize, y: usize| {
            let (mut u, mut v) = if self.swap { (y, x) } else { (x, y) };
            if self.flip_x {
                u = ow - 1 - u;
            }
            if self.flip_y {
                v = oh - 1 - v;
            }
            v * ow + u
        };
        let move_plane = |plane: &Samples, c: usize| match plane {
            Samples::U8(d) => Samples::U8(permute(d, w, h, c, target)),
            Samples::U16(d) => Samples::U16(permute(d, w, h, c, target)),
        };
        Image {
            width: ow,
            height: oh,
            color_kind: image.color_kind,
            color: move_plane(&image.color, image.color_kind.channels()),
            alpha: image.alpha.as_ref().map(|a| move_plane(a, 1)),
            icc_profile: image.icc_profile.clone(),
            exif: image.exif.clone(),
            xmp: image.xmp.clone(),
        }
    }
}

fn permute<T: Copy + Default>(
    data: &[T],
    w: usize,
    h: usize,
    c: usize,
    target: impl Fn(usize, usize) -> usize,
) -> Vec<T> {
    let mut out = vec![T::default(); data.len()];
    for y in 0..h {
        for x in 0..w {
            let (s, d) = ((y * w + x) * c, target(x, y) * c);
            out[d..d + c].copy_from_slice(&data[s..s + c]);
        }
    }
    out
}

/// Sums of the results' samples, exact (at most 8 × 65535 per sample).
struct Sums {
    color: Vec<u32>,
    alpha: Option<Vec<u32>>,
}

fn add(sum: &mut [u32], plane: &Samples) {
    match plane {
        Samples::U8(d) => sum.iter_mut().zip(d).for_each(|(s, &v)| *s += u32::from(v)),
        Samples::U16(d) => sum.iter_mut().zip(d).for_each(|(s, &v)| *s += u32::from(v)),
    }
}

/// The mean of `n` results, rounded half up, in the depth of `like`.
fn mean(sum: &[u32], n: u32, like: &Samples) -> Samples {
    let avg = |s: u32| (s + n / 2) / n;
    match like {
        Samples::U8(_) => Samples::U8(sum.iter().map(|&s| avg(s) as u8).collect()),
        Samples::U16(_) => Samples::U16(sum.iter().map(|&s| avg(s) as u16).collect()),
    }
}

/// [`upscale`] with test-time augmentation: the 8 flips and quarter turns of `image`, each
/// upscaled, turned back and averaged. Progress counts the tiles of all 8 runs; returning
/// `false` from `progress` cancels.
pub fn upscale_tta(
    model: &Model,
    image: &Image,
    options: &Options,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Image, UpscaleError> {
    let transforms = Dihedral::all();
    let runs = transforms.len();
    let mut sums: Option<(Sums, Image)> = None;
    for (i, t) in transforms.into_iter().enumerate() {
        let turned = t.apply(image);
        let out = upscale(model, &turned, options, &mut |p| {
            progress(Progress {
                tiles_done: i * p.tiles_total + p.tiles_done,
                tiles_total: runs * p.tiles_total,
            })
        })?;
        let out = t.inverse().apply(&out);
        match &mut sums {
            None => {
                let mut s = Sums {
                    color: vec![0; out.color.len()],
                    alpha: out.alpha.as_ref().map(|a| vec![0; a.len()]),
                };
                add(&mut s.color, &out.color);
                if let (Some(sum), Some(a)) = (&mut s.alpha, &out.alpha) {
                    add(sum, a);
                }
                sums = Some((s, out));
            }
            Some((s, first)) => {
                if (out.width, out.height, out.color.len())
                    != (first.width, first.height, first.color.len())
                {
                    return Err(UpscaleError::BadImage(format!(
                        "the turned image gave a {}×{} result, not {}×{}: this model is not \
                         the same on all orientations of the image, so --tta cannot be used",
                        out.width, out.height, first.width, first.height
                    )));
                }
                add(&mut s.color, &out.color);
                if let (Some(sum), Some(a)) = (&mut s.alpha, &out.alpha) {
                    add(sum, a);
                }
            }
        }
    }
    let Some((s, mut result)) = sums else {
        return Err(UpscaleError::BadImage("no run was made".into()));
    };
    let n = runs as u32;
    result.color = mean(&s.color, n, &result.color);
    if let (Some(sum), Some(a)) = (&s.alpha, &result.alpha) {
        result.alpha = Some(mean(sum, n, a));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use superres_imaging::ColorKind;

    fn numbered(w: usize, h: usize) -> Image {
        let data = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let mut img = Image::from_u8(w, h, ColorKind::Rgb, data);
        img.alpha = Some(Samples::U8(
            (0..w * h).map(|i| (i * 7 % 256) as u8).collect(),
        ));
        img
    }

    #[test]
    fn the_eight_are_distinct_and_each_inverse_undoes_its_transform() {
        let img = numbered(5, 3);
        let mut seen = Vec::new();
        for t in Dihedral::all() {
            let turned = t.apply(&img);
            assert_eq!(
                (turned.width, turned.height),
                if t.swap { (3, 5) } else { (5, 3) }
            );
            assert_eq!(t.inverse().apply(&turned), img, "{t:?}");
            assert!(!seen.contains(&turned), "{t:?} repeats another");
            seen.push(turned);
        }
    }

    #[test]
    fn a_quarter_turn_moves_the_corner_where_it_should() {
        // Transpose then mirror the columns: a clockwise quarter turn.
        let t = Dihedral {
            swap: true,
            flip_x: true,
            flip_y: false,
        };
        let img = Image::from_u8(2, 1, ColorKind::Gray, vec![10, 20]);
        let turned = t.apply(&img);
        assert_eq!((turned.width, turned.height), (1, 2));
        assert_eq!(turned.color, Samples::U8(vec![10, 20]));
        let img = Image::from_u8(1, 2, ColorKind::Gray, vec![10, 20]);
        assert_eq!(t.apply(&img).color, Samples::U8(vec![20, 10]));
    }

    #[test]
    fn the_mean_rounds_half_up_in_the_output_depth() {
        assert_eq!(
            mean(&[0, 4, 3, 8 * 255], 8, &Samples::U8(vec![])),
            Samples::U8(vec![0, 1, 0, 255])
        );
        assert_eq!(
            mean(&[8 * 65535], 8, &Samples::U16(vec![])),
            Samples::U16(vec![65535])
        );
    }
}
