//! The arithmetic around the network, per family: how samples become the network's input
//! and how its output becomes samples again.
//!
//! 8-bit colour follows OpenCV `dnn_superres` to the bit. 16-bit input is a case OpenCV does
//! not handle (it truncates to the high byte, or feeds EDSR garbage); here it is processed in
//! `f32` throughout, with the same colour model expressed in floating point, and rounded to
//! 16 bits only at the end.

use superres_imaging::opencv::{
    EDSR_MEAN_BGR, rgb_to_ycrcb, saturate_u8, u8_to_unit, unit_to_u8, ycrcb_to_rgb,
};
pub use superres_import::Family;

/// BT.601 luma weights (OpenCV's float YCrCb), used for 16-bit input. The chroma factors are
/// the exact inverses of `2 (1 - weight)`, so that 16-bit colours round-trip to the last bit.
const YR: f32 = 0.299;
const YG: f32 = 0.587;
const YB: f32 = 0.114;
const CR: f32 = 1.0 / (2.0 * (1.0 - YR));
const CB: f32 = 1.0 / (2.0 * (1.0 - YB));

/// One pixel in YCrCb as the network and the chroma resize see it (`[0, 1]` scale).
#[inline]
pub fn ycrcb_unit_u8(r: u8, g: u8, b: u8) -> [f32; 3] {
    let (y, cr, cb) = rgb_to_ycrcb(r, g, b);
    [u8_to_unit(y), u8_to_unit(cr), u8_to_unit(cb)]
}

/// 16-bit twin of [`ycrcb_unit_u8`]: float YCrCb of values scaled to `[0, 1]`.
#[inline]
pub fn ycrcb_unit_u16(r: u16, g: u16, b: u16) -> [f32; 3] {
    let k = 1.0 / 65535.0;
    let (r, g, b) = (r as f32 * k, g as f32 * k, b as f32 * k);
    let y = YR * r + YG * g + YB * b;
    [y, (r - y) * CR + 0.5, (b - y) * CB + 0.5]
}

/// Merges network Y with upscaled chroma into 8-bit RGB, as OpenCV does: each plane
/// `convertTo(CV_8U, 255)`, then the fixed-point YCrCb → BGR conversion.
#[inline]
pub fn merge_u8(y: f32, cr: f32, cb: f32) -> [u8; 3] {
    let (r, g, b) = ycrcb_to_rgb(unit_to_u8(y), unit_to_u8(cr), unit_to_u8(cb));
    [r, g, b]
}

/// 16-bit twin of [`merge_u8`], in floating point.
#[inline]
pub fn merge_u16(y: f32, cr: f32, cb: f32) -> [u16; 3] {
    let r = y + (cr - 0.5) / CR;
    let b = y + (cb - 0.5) / CB;
    let g = (y - YR * r - YB * b) / YG;
    [unit_to_u16(r), unit_to_u16(g), unit_to_u16(b)]
}

#[inline]
pub fn unit_to_u16(v: f32) -> u16 {
    (v * 65535.0).round_ties_even().clamp(0.0, 65535.0) as u16
}

/// EDSR input of one 8-bit RGB pixel: `[B, G, R] - mean`.
#[inline]
pub fn edsr_in_u8(r: u8, g: u8, b: u8) -> [f32; 3] {
    [
        b as f32 - EDSR_MEAN_BGR[0],
        g as f32 - EDSR_MEAN_BGR[1],
        r as f32 - EDSR_MEAN_BGR[2],
    ]
}

/// EDSR input of a 16-bit pixel, in the same 0..255 units as 8-bit (divided by 257).
#[inline]
pub fn edsr_in_u16(r: u16, g: u16, b: u16) -> [f32; 3] {
    let k = 1.0 / 257.0;
    [
        b as f32 * k - EDSR_MEAN_BGR[0],
        g as f32 * k - EDSR_MEAN_BGR[1],
        r as f32 * k - EDSR_MEAN_BGR[2],
    ]
}

/// EDSR output `[B, G, R]` back to 8-bit RGB: `out + mean`, round half to even, saturate.
#[inline]
pub fn edsr_out_u8(bgr: &[f32]) -> [u8; 3] {
    [
        saturate_u8(bgr[2] + EDSR_MEAN_BGR[2]),
        saturate_u8(bgr[1] + EDSR_MEAN_BGR[1]),
        saturate_u8(bgr[0] + EDSR_MEAN_BGR[0]),
    ]
}

#[inline]
pub fn edsr_out_u16(bgr: &[f32]) -> [u16; 3] {
    let f = |v: f32, m: f32| ((v + m) * 257.0).round_ties_even().clamp(0.0, 65535.0) as u16;
    [
        f(bgr[2], EDSR_MEAN_BGR[2]),
        f(bgr[1], EDSR_MEAN_BGR[1]),
        f(bgr[0], EDSR_MEAN_BGR[0]),
    ]
}

/// OpenCV's `COLOR_BGR2GRAY` on 8-bit samples (same 14-bit fixed point as Y of YCrCb).
#[inline]
pub fn gray_u8(r: u8, g: u8, b: u8) -> u8 {
    rgb_to_ycrcb(r, g, b).0
}

#[inline]
pub fn gray_u16(r: u16, g: u16, b: u16) -> u16 {
    (YR * r as f32 + YG * g as f32 + YB * b as f32)
        .round_ties_even()
        .clamp(0.0, 65535.0) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_ycrcb_round_trips_16bit_colours() {
        for (r, g, b) in [
            (0u16, 0u16, 0u16),
            (65535, 0, 0),
            (1234, 40000, 65535),
            (30000, 30000, 30000),
        ] {
            let [y, cr, cb] = ycrcb_unit_u16(r, g, b);
            let back = merge_u16(y, cr, cb);
            for (got, want) in back.iter().zip([r, g, b]) {
                assert!(
                    (*got as i32 - want as i32).abs() <= 1,
                    "{:?} -> {back:?}",
                    (r, g, b)
                );
            }
        }
    }

    #[test]
    fn edsr_mean_round_trips_8bit() {
        for v in [0u8, 1, 103, 128, 255] {
            let x = edsr_in_u8(v, v, v);
            assert_eq!(edsr_out_u8(&x), [v, v, v]);
        }
    }
}
