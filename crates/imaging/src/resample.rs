//! Classical resampling around the network: the alpha plane up, oversized inputs down.
//!
//! Where it sits in the data path: the networks upscale colour only, so the alpha plane of an
//! upload is upscaled here with bicubic interpolation ([`resize_plane_bicubic_u8`],
//! [`resize_plane_bicubic_u16`]) and re-attached; and an input larger than the service's
//! optional `--max-input-side` is shrunk here before it reaches the network
//! ([`downscale_lanczos`]).
//!
//! Both use `fast_image_resize`: SIMD separable convolution for 8- and 16-bit samples of one
//! to four channels, with alpha-weighted (premultiplied) filtering for interleaved alpha,
//! which is what shrinking an RGBA image correctly needs and what would otherwise be written
//! and vectorised by hand here. These helpers are not OpenCV-exact (only the colour path
//! must be, see [`opencv`](crate::opencv)).

use fast_image_resize as fr;

use crate::error::ImageError;
use crate::image::{ColorKind, Image, Samples, deinterleave};

/// OpenCV's bicubic kernel (`INTER_CUBIC`, `a = -0.75`), so an upscaled alpha plane has the
/// sharpness users get from OpenCV; edge handling and rounding are `fast_image_resize`'s.
fn cubic_kernel(x: f64) -> f64 {
    const A: f64 = -0.75;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
    } else {
        0.0
    }
}

fn bicubic() -> Result<fr::ResizeAlg, ImageError> {
    let filter = fr::Filter::new("cubic a=-0.75", cubic_kernel, 2.0)
        .map_err(|e| ImageError::internal(format!("bicubic filter: {e}")))?;
    Ok(fr::ResizeAlg::Convolution(fr::FilterType::Custom(filter)))
}

fn lanczos() -> fr::ResizeAlg {
    fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3)
}

fn side(v: usize, what: &str) -> Result<u32, ImageError> {
    match u32::try_from(v) {
        Ok(0) | Err(_) => Err(ImageError::internal(format!(
            "cannot resample: {what} is {v} pixels"
        ))),
        Ok(s) => Ok(s),
    }
}

/// One resize of interleaved samples of `pixel_type` from `w × h` to `nw × nh`.
#[allow(clippy::too_many_arguments)]
fn resize_bytes(
    src: &[u8],
    dst: &mut [u8],
    (w, h): (usize, usize),
    (nw, nh): (usize, usize),
    pixel_type: fr::PixelType,
    algorithm: fr::ResizeAlg,
    premultiply: bool,
) -> Result<(), ImageError> {
    let (w, h) = (side(w, "the width")?, side(h, "the height")?);
    let (nw, nh) = (side(nw, "the new width")?, side(nh, "the new height")?);
    let expected = w as usize * h as usize * pixel_type.size();
    if src.len() != expected {
        return Err(ImageError::internal(format!(
            "cannot resample: a {w}x{h} plane needs {expected} bytes, it has {}",
            src.len()
        )));
    }
    let fail = |e: &dyn std::fmt::Display| ImageError::internal(format!("resampling failed: {e}"));
    let src = fr::images::ImageRef::new(w, h, src, pixel_type).map_err(|e| fail(&e))?;
    let mut dst =
        fr::images::Image::from_slice_u8(nw, nh, dst, pixel_type).map_err(|e| fail(&e))?;
    let options = fr::ResizeOptions::new()
        .resize_alg(algorithm)
        .use_alpha(premultiply);
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| fail(&e))
}

/// Resizes one 8-bit plane of `w × h` samples to `new_w × new_h` with OpenCV's bicubic
/// kernel. Meant for upscaling an alpha plane next to the network's colour output.
pub fn resize_plane_bicubic_u8(
    plane: &[u8],
    w: usize,
    h: usize,
    new_w: usize,
    new_h: usize,
) -> Result<Vec<u8>, ImageError> {
    let mut out = vec![0u8; new_w.saturating_mul(new_h)];
    resize_bytes(
        plane,
        &mut out,
        (w, h),
        (new_w, new_h),
        fr::PixelType::U8,
        bicubic()?,
        false,
    )?;
    Ok(out)
}

/// [`resize_plane_bicubic_u8`] for a 16-bit plane.
pub fn resize_plane_bicubic_u16(
    plane: &[u16],
    w: usize,
    h: usize,
    new_w: usize,
    new_h: usize,
) -> Result<Vec<u16>, ImageError> {
    let mut out = vec![0u16; new_w.saturating_mul(new_h)];
    resize_bytes(
        bytemuck::cast_slice(plane),
        bytemuck::cast_slice_mut(&mut out),
        (w, h),
        (new_w, new_h),
        fr::PixelType::U16,
        bicubic()?,
        false,
    )?;
    Ok(out)
}

/// [`resize_plane_bicubic_u8`] or [`resize_plane_bicubic_u16`], by the plane's depth.
pub fn resize_plane_bicubic(
    plane: &Samples,
    w: usize,
    h: usize,
    new_w: usize,
    new_h: usize,
) -> Result<Samples, ImageError> {
    Ok(match plane {
        Samples::U8(p) => Samples::U8(resize_plane_bicubic_u8(p, w, h, new_w, new_h)?),
        Samples::U16(p) => Samples::U16(resize_plane_bicubic_u16(p, w, h, new_w, new_h)?),
    })
}

/// The size of a `width × height` image shrunk so that its longer side is `max_side`, the
/// aspect ratio kept (the shorter side rounded, at least 1). Unchanged when it already fits
/// or `max_side` is 0 (no cap).
pub fn fit_within(width: usize, height: usize, max_side: usize) -> (usize, usize) {
    let longest = width.max(height);
    if max_side == 0 || longest <= max_side {
        return (width, height);
    }
    let scale = |v: usize| {
        // Integer rounding of v * max_side / longest, exact for any realistic size.
        let n = (v as u128 * max_side as u128 * 2 + longest as u128) / (2 * longest as u128);
        (n as usize).clamp(1, max_side)
    };
    (scale(width), scale(height))
}

/// The image shrunk with Lanczos-3 so that its longer side is at most `max_side` (0: no cap),
/// see [`fit_within`]. An image that already fits is returned unchanged. See
/// [`resize_lanczos`].
pub fn downscale_lanczos(image: &Image, max_side: usize) -> Result<Image, ImageError> {
    let (nw, nh) = fit_within(image.width, image.height, max_side);
    resize_lanczos(image, nw, nh)
}

/// The image resampled to `width × height` with Lanczos-3, larger or smaller (the
/// high-quality resampler Real-ESRGAN's `--outscale` uses, OpenCV's `INTER_LANCZOS4` being
/// its 4-lobe sibling). Colour and alpha are filtered together with alpha weighting, so fully
/// transparent pixels do not bleed their colour into visible ones. Depth, colour kind and
/// ICC profile are kept. The same size is returned unchanged.
pub fn resize_lanczos(image: &Image, width: usize, height: usize) -> Result<Image, ImageError> {
    image.validate()?;
    let (nw, nh) = (width, height);
    if (nw, nh) == (image.width, image.height) {
        return Ok(image.clone());
    }
    if nw == 0 || nh == 0 {
        return Err(ImageError::unsupported(format!(
            "cannot resample to {nw}x{nh}: both sides must be at least 1"
        )));
    }
    let channels = image.color_kind.channels() + usize::from(image.has_alpha());
    let elements = nw
        .checked_mul(nh)
        .and_then(|n| n.checked_mul(channels))
        .ok_or_else(|| ImageError::too_large(format!("{nw}x{nh} is too large to resample to")))?;
    let (from, to) = ((image.width, image.height), (nw, nh));
    let premultiply = image.has_alpha();
    let (color, alpha) = if image.is_16bit() {
        let pixel_type = match channels {
            1 => fr::PixelType::U16,
            2 => fr::PixelType::U16x2,
            3 => fr::PixelType::U16x3,
            _ => fr::PixelType::U16x4,
        };
        let mut out = vec![0u16; elements];
        let src = image.interleaved_u16();
        resize_bytes(
            bytemuck::cast_slice(&src),
            bytemuck::cast_slice_mut(&mut out),
            from,
            to,
            pixel_type,
            lanczos(),
            premultiply,
        )?;
        split(out, image.color_kind, premultiply, Samples::U16)
    } else {
        let pixel_type = match channels {
            1 => fr::PixelType::U8,
            2 => fr::PixelType::U8x2,
            3 => fr::PixelType::U8x3,
            _ => fr::PixelType::U8x4,
        };
        let mut out = vec![0u8; elements];
        resize_bytes(
            &image.interleaved_u8(),
            &mut out,
            from,
            to,
            pixel_type,
            lanczos(),
            premultiply,
        )?;
        split(out, image.color_kind, premultiply, Samples::U8)
    };
    let mut out = Image::new(nw, nh, image.color_kind, color, alpha)?;
    out.copy_metadata(image);
    Ok(out)
}

fn split<T: Copy>(
    data: Vec<T>,
    kind: ColorKind,
    has_alpha: bool,
    wrap: fn(Vec<T>) -> Samples,
) -> (Samples, Option<Samples>) {
    if has_alpha {
        let (c, a) = deinterleave(&data, kind.channels());
        (wrap(c), Some(wrap(a)))
    } else {
        (wrap(data), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_planes_stay_constant() {
        let up = resize_plane_bicubic_u8(&[200; 12], 4, 3, 16, 12);
        assert_eq!(up.as_deref().ok(), Some(&[200u8; 192][..]));
        let up = resize_plane_bicubic_u16(&[40000; 6], 3, 2, 7, 5);
        assert_eq!(up.as_deref().ok(), Some(&[40000u16; 35][..]));
    }

    #[test]
    fn bicubic_upscale_keeps_an_edge_sharp_and_ordered() {
        // A vertical step from 0 to 255 in an 8-wide row, upscaled ×4.
        let row: Vec<u8> = (0..8).map(|x| if x < 4 { 0 } else { 255 }).collect();
        let plane: Vec<u8> = row.iter().cycle().take(8 * 2).copied().collect();
        let up = resize_plane_bicubic_u8(&plane, 8, 2, 32, 8).unwrap_or_else(|e| panic!("{e}"));
        let first = &up[..32];
        assert_eq!(first[..12], [0; 12], "far left stays 0: {first:?}");
        assert_eq!(first[20..], [255; 12], "far right stays 255: {first:?}");
        assert!(
            first[15] < 128 && first[16] > 127,
            "step at the middle: {first:?}"
        );
        for r in 1..8 {
            assert_eq!(&up[r * 32..][..32], first, "row {r} differs from row 0");
        }
    }

    #[test]
    fn wrong_plane_length_is_an_error_not_a_panic() {
        let e = resize_plane_bicubic_u8(&[0; 5], 2, 3, 4, 6).err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.to_string().contains("needs 6 bytes")),
            "got {e:?}"
        );
        assert!(resize_plane_bicubic_u16(&[0; 6], 2, 3, 0, 6).is_err());
        assert!(resize_plane_bicubic_u8(&[], 0, 0, 4, 4).is_err());
    }

    #[test]
    fn fit_within_keeps_the_aspect_ratio() {
        assert_eq!(fit_within(4000, 3000, 1000), (1000, 750));
        assert_eq!(fit_within(3000, 4000, 1000), (750, 1000));
        assert_eq!(fit_within(999, 10, 1000), (999, 10), "already fits");
        assert_eq!(fit_within(5000, 1, 100), (100, 1), "never below 1");
        assert_eq!(fit_within(5000, 3000, 0), (5000, 3000), "0 means no cap");
        assert_eq!(fit_within(1001, 1001, 1000), (1000, 1000));
    }

    fn image(kind: ColorKind, alpha: bool, sixteen: bool) -> Image {
        let (w, h) = (40, 20);
        let n = w * h;
        let color: Vec<u16> = (0..n * kind.channels()).map(|i| (i % 251) as u16).collect();
        let a: Vec<u16> = (0..n)
            .map(|i| if i % w < w / 2 { 0 } else { 255 })
            .collect();
        let wrap = |v: Vec<u16>| {
            if sixteen {
                Samples::U16(v.iter().map(|&s| s * 257).collect())
            } else {
                Samples::U8(v.iter().map(|&s| s as u8).collect())
            }
        };
        let mut img = Image::new(w, h, kind, wrap(color), alpha.then(|| wrap(a)))
            .unwrap_or_else(|e| panic!("{e}"));
        img.icc_profile = Some(vec![9, 9]);
        img
    }

    #[test]
    fn downscale_keeps_depth_kind_alpha_and_profile() {
        for kind in [ColorKind::Gray, ColorKind::Rgb] {
            for alpha in [false, true] {
                for sixteen in [false, true] {
                    let what = format!("{kind:?} alpha={alpha} 16-bit={sixteen}");
                    let src = image(kind, alpha, sixteen);
                    let out = downscale_lanczos(&src, 10).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!((out.width, out.height), (10, 5), "{what}: size");
                    assert_eq!(out.color_kind, kind, "{what}: kind");
                    assert_eq!(out.is_16bit(), sixteen, "{what}: depth");
                    assert_eq!(out.has_alpha(), alpha, "{what}: alpha");
                    assert_eq!(out.icc_profile, src.icc_profile, "{what}: profile");
                    assert!(out.validate().is_ok(), "{what}: inconsistent planes");
                }
            }
        }
    }

    #[test]
    fn downscale_of_a_fitting_image_is_unchanged() {
        let src = image(ColorKind::Rgb, true, false);
        assert_eq!(downscale_lanczos(&src, 40).ok(), Some(src.clone()));
        assert_eq!(downscale_lanczos(&src, 0).ok(), Some(src));
    }

    #[test]
    fn transparent_colour_does_not_bleed_into_opaque_pixels() {
        // Left half transparent magenta, right half opaque green.
        let (w, h) = (64, 8);
        let mut color = Vec::new();
        let mut alpha = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                let opaque = x >= w / 2;
                color.extend_from_slice(if opaque { &[0, 200, 0] } else { &[255, 0, 255] });
                alpha.push(if opaque { 255 } else { 0 });
            }
        }
        let src = Image::new(
            w,
            h,
            ColorKind::Rgb,
            Samples::U8(color),
            Some(Samples::U8(alpha)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = downscale_lanczos(&src, 16).unwrap_or_else(|e| panic!("{e}"));
        let c = out.color.to_u8();
        let a = out.alpha.as_ref().map(Samples::to_u8).unwrap_or_default();
        for x in 0..out.width {
            let i = (out.height - 1) * out.width + x;
            if a[i] > 0 {
                let px = &c[i * 3..][..3];
                assert!(
                    px[0] < 10 && px[2] < 10,
                    "column {x} (alpha {}) picked up magenta: {px:?}",
                    a[i]
                );
            }
        }
    }
}
