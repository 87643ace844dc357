//! The arithmetic around the network, per family: how samples become the network's input
//! and how its output becomes samples again.
//!
//! 8-bit colour follows OpenCV `dnn_superres` to the bit. Its arithmetic on the samples that
//! cross to the network is written once, as the engine's 8-bit maps ([`io_u8`]): a backend
//! applies them where the tile is (the CPU on the host, a GPU in its conversion kernels), so
//! a tile crosses the bus as bytes both ways. 16-bit input is a case OpenCV does not handle
//! (it truncates to the high byte, or feeds EDSR garbage); here it is processed in `f32`
//! throughout, with the same colour model expressed in floating point, and rounded to
//! 16 bits only at the end.

use superres_engine::Io;
use superres_engine::io::{InputMap, OutputMap};
use superres_imaging::opencv::{
    EDSR_MEAN_BGR, INV_255, rgb_to_ycrcb, u8_to_unit, unit_to_u8, ycrcb_to_rgb,
};
pub use superres_import::Family;

/// How 8-bit samples of `family` cross to the network and back, as OpenCV computes them:
/// - [`Family::Edsr`]: the network sees `[B, G, R] − mean` of `R, G, B` samples
///   (`convertTo(CV_32F)`, `subtract`), and its output becomes `R, G, B` again as
///   `saturate(round(out + mean))`.
/// - [`Family::Rgb`]: `R, G, B / 255` in; `saturate(round(v · 255))` out, which also clamps to
///   `[0, 1]`.
/// - [`Family::YChannel`]: Y of the fixed-point YCrCb times `float32(1/255)`
///   ([`u8_to_unit`]) in; `saturate(round(v · 255))` out
///   ([`unit_to_u8`]), merged with the chroma by
///   [`merge_u8`].
///
/// The input samples are the image's `R, G, B` (gray replicated) for EDSR and RGB models and
/// the Y plane for Y-channel ones; the outputs are `R, G, B` or Y samples.
pub fn io_u8(family: Family) -> Io {
    let [mb, mg, mr] = EDSR_MEAN_BGR;
    let (input, output) = match family {
        Family::Edsr => (
            InputMap {
                perm: [2, 1, 0, 3],
                add: [-mb, -mg, -mr, 0.0],
                mul: 1.0,
                div: 1.0,
            },
            OutputMap {
                perm: [2, 1, 0, 3],
                add: [mr, mg, mb, 0.0],
                mul: 1.0,
            },
        ),
        Family::Rgb => (InputMap::scaled(1.0, 255.0), OutputMap::scaled(255.0)),
        Family::YChannel => (InputMap::scaled(INV_255, 1.0), OutputMap::scaled(255.0)),
    };
    Io {
        input: Some(input),
        output: Some(output),
    }
}

/// BT.601 luma weights (OpenCV's float YCrCb), used for 16-bit input. The chroma factors are
/// the exact inverses of `2 (1 - weight)`, so that 16-bit colours round-trip to the last bit.
const YR: f32 = 0.299;
const YG: f32 = 0.587;
const YB: f32 = 0.114;
const CR: f32 = 1.0 / (2.0 * (1.0 - YR));
const CB: f32 = 1.0 / (2.0 * (1.0 - YB));

/// One 8-bit pixel in YCrCb: Y as the network's 8-bit input sample, and Cr, Cb in `[0, 1]` as
/// the chroma resize sees them (`convertTo(CV_32F, 1/255)`).
#[inline]
pub fn ycrcb_u8(r: u8, g: u8, b: u8) -> (u8, [f32; 2]) {
    let (y, cr, cb) = rgb_to_ycrcb(r, g, b);
    (y, [u8_to_unit(cr), u8_to_unit(cb)])
}

/// 16-bit twin of [`ycrcb_u8`]: float YCrCb of values scaled to `[0, 1]`, all three as the
/// network and the chroma resize see them.
#[inline]
pub fn ycrcb_unit_u16(r: u16, g: u16, b: u16) -> [f32; 3] {
    let k = 1.0 / 65535.0;
    let (r, g, b) = (r as f32 * k, g as f32 * k, b as f32 * k);
    let y = YR * r + YG * g + YB * b;
    [y, (r - y) * CR + 0.5, (b - y) * CB + 0.5]
}

/// Merges the network's Y (already 8-bit: [`io_u8`]'s output map) with upscaled chroma into
/// 8-bit RGB, as OpenCV does: each chroma plane `convertTo(CV_8U, 255)`, then the fixed-point
/// YCrCb → BGR conversion.
#[inline]
pub fn merge_u8(y: u8, cr: f32, cb: f32) -> [u8; 3] {
    let (r, g, b) = ycrcb_to_rgb(y, unit_to_u8(cr), unit_to_u8(cb));
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

/// EDSR output `[B, G, R]` back to 16-bit RGB: `(out + mean) · 257`, rounded and clamped.
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
    use superres_imaging::opencv::saturate_u8;

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

    /// Applies a map to one pixel of samples, as a backend does.
    fn map_in(family: Family, px: &[u8]) -> Vec<f32> {
        let io = io_u8(family);
        let map = io.input.expect("input map");
        let mut out = vec![0.0; px.len()];
        map.convert(px, px.len(), &mut out);
        out
    }

    fn map_out(family: Family, v: &[f32]) -> Vec<u8> {
        let io = io_u8(family);
        let map = io.output.expect("output map");
        let mut out = vec![0; v.len()];
        map.convert(v, v.len(), &mut out);
        out
    }

    #[test]
    fn input_maps_are_opencvs_arithmetic_to_the_bit() {
        for v in 0..=255u8 {
            let (r, g, b) = (v, v.wrapping_mul(7), v.wrapping_add(91));
            let edsr = map_in(Family::Edsr, &[r, g, b]);
            let want = [
                b as f32 - EDSR_MEAN_BGR[0],
                g as f32 - EDSR_MEAN_BGR[1],
                r as f32 - EDSR_MEAN_BGR[2],
            ];
            assert_eq!(
                edsr.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.map(f32::to_bits)
            );
            let y = map_in(Family::YChannel, &[v]);
            assert_eq!(y[0].to_bits(), u8_to_unit(v).to_bits());
            let rgb = map_in(Family::Rgb, &[r, g, b]);
            let want = [r, g, b].map(|c| (c as f32 / 255.0).to_bits());
            assert_eq!(rgb.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn output_maps_are_opencvs_rounding() {
        let mut values = vec![
            f32::NAN,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e9,
            -1e9,
        ];
        for k in -300..=600 {
            // Steps of half a level, and values just beside each half.
            let x = k as f32 * 0.5;
            values.extend([x, x.next_up(), x.next_down()]);
        }
        for &x in &values {
            let unit = x / 255.0;
            assert_eq!(
                map_out(Family::YChannel, &[unit]),
                [unit_to_u8(unit)],
                "{x}"
            );
            let rgb = map_out(Family::Rgb, &[unit, x, -unit]);
            assert_eq!(rgb, [unit, x, -unit].map(unit_to_u8), "{x}");
            let bgr = [x - 100.0, x, x + 0.25];
            let want = [
                saturate_u8(bgr[2] + EDSR_MEAN_BGR[2]),
                saturate_u8(bgr[1] + EDSR_MEAN_BGR[1]),
                saturate_u8(bgr[0] + EDSR_MEAN_BGR[0]),
            ];
            assert_eq!(map_out(Family::Edsr, &bgr), want, "{x}");
        }
    }

    #[test]
    fn edsr_mean_round_trips_8bit() {
        for v in [0u8, 1, 103, 128, 255] {
            let x = map_in(Family::Edsr, &[v, v, v]);
            assert_eq!(map_out(Family::Edsr, &x), [v, v, v]);
        }
    }
}
