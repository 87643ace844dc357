//! The size of a result beyond the model's own scale: `--outscale F`, `--width W`,
//! `--height H`.
//!
//! Where it sits: after [`upscale`](crate::upscale). The network always runs at its own
//! scale (that is what it was trained for); the result is then resampled to the size asked
//! for with Lanczos-3 ([`superres_imaging::resample::resize_lanczos`]), as Real-ESRGAN's
//! `--outscale` does with OpenCV's Lanczos. So a ×4 model gives a ×2 or ×3 result that is
//! sharper than a ×2 model's, and a result can be made to fit a layout's width.

use std::fmt;

use superres_imaging::Image;
use superres_imaging::resample::resize_lanczos;

use crate::UpscaleError;

/// The size asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum OutputSize {
    /// The model's own scale.
    #[default]
    Model,
    /// The input's size times this factor (≥ 1), each side rounded to the nearest pixel.
    Scale(f64),
    /// This width; the height keeps the input's aspect ratio.
    Width(usize),
    /// This height; the width keeps the input's aspect ratio.
    Height(usize),
    /// Exactly this width and height.
    Exact(usize, usize),
}

/// Largest factor or side accepted: beyond any real use, well inside `usize` arithmetic.
const MAX_SIDE: usize = 1 << 20;
const MAX_FACTOR: f64 = 64.0;

impl OutputSize {
    /// The size from the options as given: `outscale`, `width`, `height`, at most one of
    /// `outscale` and the sides. Errors name the option.
    pub fn from_options(
        outscale: Option<f64>,
        width: Option<usize>,
        height: Option<usize>,
    ) -> Result<OutputSize, String> {
        let side = |name: &str, v: usize| {
            if (1..=MAX_SIDE).contains(&v) {
                Ok(v)
            } else {
                Err(format!(
                    "{name} must be between 1 and {MAX_SIDE} pixels, not {v}"
                ))
            }
        };
        match (outscale, width, height) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                Err("give either outscale or width/height, not both".into())
            }
            (Some(f), None, None) => {
                if f.is_finite() && (1.0..=MAX_FACTOR).contains(&f) {
                    Ok(OutputSize::Scale(f))
                } else {
                    Err(format!(
                        "outscale must be a number from 1 to {MAX_FACTOR}, not {f}"
                    ))
                }
            }
            (None, Some(w), None) => Ok(OutputSize::Width(side("width", w)?)),
            (None, None, Some(h)) => Ok(OutputSize::Height(side("height", h)?)),
            (None, Some(w), Some(h)) => {
                Ok(OutputSize::Exact(side("width", w)?, side("height", h)?))
            }
            (None, None, None) => Ok(OutputSize::Model),
        }
    }

    /// The result's size for a `width × height` input and a model of `scale`.
    pub fn resolve(self, width: usize, height: usize, scale: usize) -> (usize, usize) {
        let keep = |num: usize, den: usize, other: usize| {
            // Round other * num / den to the nearest pixel, at least 1.
            let n = (other as u128 * num as u128 * 2 + den as u128) / (2 * den.max(1) as u128);
            (n as usize).max(1)
        };
        match self {
            OutputSize::Model => (width * scale, height * scale),
            OutputSize::Scale(f) => {
                let side = |v: usize| ((v as f64 * f).round() as usize).max(1);
                (side(width), side(height))
            }
            OutputSize::Width(w) => (w, keep(w, width, height)),
            OutputSize::Height(h) => (keep(h, height, width), h),
            OutputSize::Exact(w, h) => (w, h),
        }
    }

    /// Resamples a model's `result` (of an input of `width × height`) to this size; the
    /// result itself when it already has it.
    pub fn apply(
        self,
        result: Image,
        width: usize,
        height: usize,
        scale: usize,
    ) -> Result<Image, UpscaleError> {
        let (w, h) = self.resolve(width, height, scale);
        if (w, h) == (result.width, result.height) {
            return Ok(result);
        }
        resize_lanczos(&result, w, h).map_err(|e| UpscaleError::BadImage(e.to_string()))
    }
}

impl fmt::Display for OutputSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputSize::Model => f.write_str("the model's scale"),
            OutputSize::Scale(s) => write!(f, "×{s}"),
            OutputSize::Width(w) => write!(f, "width {w}"),
            OutputSize::Height(h) => write!(f, "height {h}"),
            OutputSize::Exact(w, h) => write!(f, "{w}×{h}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_option_and_keep_the_aspect_ratio() {
        assert_eq!(OutputSize::Model.resolve(10, 7, 4), (40, 28));
        assert_eq!(OutputSize::Scale(2.0).resolve(10, 7, 4), (20, 14));
        assert_eq!(OutputSize::Scale(1.5).resolve(11, 7, 4), (17, 11));
        assert_eq!(OutputSize::Width(100).resolve(40, 30, 3), (100, 75));
        assert_eq!(OutputSize::Height(45).resolve(40, 30, 3), (60, 45));
        assert_eq!(OutputSize::Exact(9, 9).resolve(40, 30, 3), (9, 9));
        assert_eq!(
            OutputSize::Width(1).resolve(1000, 1, 2),
            (1, 1),
            "at least 1"
        );
    }

    #[test]
    fn options_are_checked_with_their_names() {
        let f = OutputSize::from_options;
        assert_eq!(f(None, None, None), Ok(OutputSize::Model));
        assert_eq!(f(Some(2.5), None, None), Ok(OutputSize::Scale(2.5)));
        assert_eq!(f(None, Some(8), Some(6)), Ok(OutputSize::Exact(8, 6)));
        for bad in [0.5, f64::NAN, f64::INFINITY, 1000.0] {
            assert!(
                f(Some(bad), None, None).unwrap_err().contains("outscale"),
                "{bad}"
            );
        }
        assert!(
            f(Some(2.0), Some(5), None)
                .unwrap_err()
                .contains("not both")
        );
        assert!(f(None, Some(0), None).unwrap_err().contains("width"));
        assert!(
            f(None, None, Some(usize::MAX))
                .unwrap_err()
                .contains("height")
        );
    }
}
