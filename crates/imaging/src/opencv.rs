//! OpenCV's pixel arithmetic, bit for bit: what `dnn_superres` does around the network.
//!
//! Users compare our output with OpenCV's, so the conversions are not "a YCrCb conversion"
//! but *OpenCV's* one: 14-bit fixed point with its rounding, `float32(1/255)` scaling,
//! round-half-to-even with saturation, and the bilinear resize of the pip wheels (Intel IPP
//! path: half-pixel centres, `float32` weights, one fused multiply-add per tap). Each
//! function states the formula it reproduces; the parity tests against OpenCV's own outputs
//! are in `superres-upscale`.

const SHIFT: i32 = 14;
const HALF: i32 = 1 << (SHIFT - 1);

/// The DIV2K mean OpenCV subtracts for EDSR, in **B, G, R** order.
pub const EDSR_MEAN_BGR: [f32; 3] = [103.154_58, 111.561_55, 114.356_3];

/// `float32(1/255)`: the factor of `convertTo(CV_32F, 1/255)`.
pub const INV_255: f32 = (1.0f64 / 255.0) as f32;

#[inline]
fn sat_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// `cvtColor(COLOR_BGR2YCrCb)` on 8-bit samples: returns `(Y, Cr, Cb)`.
#[inline]
pub fn rgb_to_ycrcb(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let y = (b * 1868 + g * 9617 + r * 4899 + HALF) >> SHIFT;
    let cr = ((r - y) * 11682 + (128 << SHIFT) + HALF) >> SHIFT;
    let cb = ((b - y) * 9241 + (128 << SHIFT) + HALF) >> SHIFT;
    (sat_u8(y), sat_u8(cr), sat_u8(cb))
}

/// `cvtColor(COLOR_YCrCb2BGR)` on 8-bit samples: returns `(R, G, B)`.
#[inline]
pub fn ycrcb_to_rgb(y: u8, cr: u8, cb: u8) -> (u8, u8, u8) {
    let (y, cr, cb) = (y as i32, cr as i32 - 128, cb as i32 - 128);
    let b = y + ((cb * 29049 + HALF) >> SHIFT);
    let g = y + ((cb * -5636 + cr * -11698 + HALF) >> SHIFT);
    let r = y + ((cr * 22987 + HALF) >> SHIFT);
    (sat_u8(r), sat_u8(g), sat_u8(b))
}

/// `convertTo(CV_8U)` of a float: `cvRound` (round half to even), then saturate.
#[inline]
pub fn saturate_u8(v: f32) -> u8 {
    // NaN compares false everywhere and ends at 0, as cvRound's integer conversion saturates.
    let r = v.round_ties_even();
    if r >= 255.0 {
        255
    } else if r > 0.0 {
        r as u8
    } else {
        0
    }
}

/// `convertTo(CV_8U, 255.0)` of a value in `[0, 1]`: `float32(v * 255)`, rounded and saturated.
#[inline]
pub fn unit_to_u8(v: f32) -> u8 {
    saturate_u8(v * 255.0)
}

/// `convertTo(CV_32F, 1/255)` of an 8-bit sample.
#[inline]
pub fn u8_to_unit(v: u8) -> f32 {
    v as f32 * INV_255
}

/// Source index pair and weight of one output coordinate of OpenCV's `INTER_LINEAR` resize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearTap {
    pub i0: usize,
    pub i1: usize,
    pub w: f32,
}

/// The tap of output coordinate `o` when `n` source samples are scaled by `scale`:
/// `src = (o + 0.5) * (1/scale) - 0.5` in `f64`, weight rounded to `f32`, edges replicated.
pub fn linear_tap(o: usize, n: usize, scale: usize) -> LinearTap {
    let src = (o as f64 + 0.5) * (1.0 / scale as f64) - 0.5;
    let f = src.floor();
    let mut w = (src - f) as f32;
    let mut i0 = f as i64;
    if i0 < 0 {
        i0 = 0;
        w = 0.0;
    }
    if i0 >= n as i64 - 1 {
        i0 = n as i64 - 1;
        w = 0.0;
    }
    let i0 = i0 as usize;
    LinearTap {
        i0,
        i1: (i0 + 1).min(n - 1),
        w,
    }
}

/// `fma(p1 - p0, w, p0)` with the difference rounded to `f32` first. The product of two
/// `f32` is exact in `f64`, so this is the fused multiply-add of the IPP kernels.
#[inline]
pub fn lerp(p0: f32, p1: f32, w: f32) -> f32 {
    let d = p1 - p0;
    (p0 as f64 + d as f64 * w as f64) as f32
}

/// The region `[ox, ox+ow) × [oy, oy+oh)` of `cv::resize(src, dst, Size(), s, s)` (bilinear)
/// for a one-channel `f32` plane of `w × h`: horizontal pass first into `f32` rows, then the
/// vertical pass, exactly as OpenCV orders them. Any region gives the same values as the
/// whole image, which is what lets the pipeline process chroma tile by tile.
pub fn resize_linear_region(
    src: &[f32],
    w: usize,
    h: usize,
    scale: usize,
    (ox, oy, ow, oh): (usize, usize, usize, usize),
) -> Vec<f32> {
    debug_assert_eq!(src.len(), w * h);
    let xt: Vec<LinearTap> = (ox..ox + ow).map(|o| linear_tap(o, w, scale)).collect();
    let yt: Vec<LinearTap> = (oy..oy + oh).map(|o| linear_tap(o, h, scale)).collect();
    let row_lo = yt.iter().map(|t| t.i0).min().unwrap_or(0);
    let row_hi = yt.iter().map(|t| t.i1).max().unwrap_or(0);
    let horizontal: Vec<Vec<f32>> = (row_lo..=row_hi.min(h.saturating_sub(1)))
        .map(|r| {
            let row = &src[r * w..][..w];
            xt.iter().map(|t| lerp(row[t.i0], row[t.i1], t.w)).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(ow * oh);
    for t in &yt {
        let r0 = &horizontal[t.i0 - row_lo];
        let r1 = &horizontal[t.i1 - row_lo];
        out.extend(r0.iter().zip(r1).map(|(&a, &b)| lerp(a, b, t.w)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycrcb_round_trip_of_grays_is_identity() {
        for v in 0..=255u8 {
            let (y, cr, cb) = rgb_to_ycrcb(v, v, v);
            assert_eq!((y, cr, cb), (v, 128, 128), "gray {v}");
            assert_eq!(ycrcb_to_rgb(y, cr, cb), (v, v, v));
        }
    }

    #[test]
    fn ycrcb_of_primaries_matches_opencv() {
        // The fixed-point formula of shared/reference/README.md worked by hand.
        assert_eq!(rgb_to_ycrcb(255, 0, 0), (76, 255, 85));
        assert_eq!(rgb_to_ycrcb(0, 255, 0), (150, 21, 43));
        assert_eq!(rgb_to_ycrcb(0, 0, 255), (29, 107, 255));
    }

    #[test]
    fn saturate_rounds_half_to_even_and_clamps() {
        assert_eq!(saturate_u8(0.5), 0);
        assert_eq!(saturate_u8(1.5), 2);
        assert_eq!(saturate_u8(2.5), 2);
        assert_eq!(saturate_u8(-3.0), 0);
        assert_eq!(saturate_u8(254.5), 254);
        assert_eq!(saturate_u8(255.5), 255);
        assert_eq!(saturate_u8(1e9), 255);
        assert_eq!(saturate_u8(f32::NAN), 0);
    }

    #[test]
    fn linear_taps_replicate_edges() {
        // ×2 of 4 samples: first output sits before sample 0, last after sample 3.
        assert_eq!(
            linear_tap(0, 4, 2),
            LinearTap {
                i0: 0,
                i1: 1,
                w: 0.0
            }
        );
        assert_eq!(
            linear_tap(1, 4, 2),
            LinearTap {
                i0: 0,
                i1: 1,
                w: 0.25
            }
        );
        assert_eq!(
            linear_tap(7, 4, 2),
            LinearTap {
                i0: 3,
                i1: 3,
                w: 0.0
            }
        );
    }

    #[test]
    fn region_resize_equals_whole_resize() {
        let (w, h, s) = (7, 5, 3);
        let src: Vec<f32> = (0..w * h)
            .map(|i| ((i * 37) % 255) as f32 / 255.0)
            .collect();
        let whole = resize_linear_region(&src, w, h, s, (0, 0, w * s, h * s));
        let (ox, oy, ow, oh) = (4, 5, 9, 7);
        let part = resize_linear_region(&src, w, h, s, (ox, oy, ow, oh));
        for y in 0..oh {
            for x in 0..ow {
                assert_eq!(
                    part[y * ow + x],
                    whole[(oy + y) * w * s + ox + x],
                    "at ({x},{y})"
                );
            }
        }
    }
}
