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
/// see [`fit_within`]. Colour and alpha are filtered together with alpha weighting, so fully
/// transparent pixels do not bleed their colour into visible ones. Depth, colour kind and
/// ICC profile are kept. An image that already fits is returned unchanged.
pub fn downscale_lanczos(image: &Image, max_side: usize) -> Result<Image, ImageError> {
    image.validate()?;
    let (nw, nh) = fit_within(image.width, image.height, max_side);
    if (nw, nh) == (image.width, image.height) {
        return Ok(image.clone());
    }
    let channels = image.color_kind.channels() + usize::from(image.has_alpha());
    let (from, to) = ((image.width, image.height), (nw, nh));
    let premultiply = image.has_alpha();
    let (color, alpha) = if image.is_16bit() {
        let pixel_type = match channels {
            1 => fr::PixelType::U16,
            2 => fr::PixelType::U16x2,
            3 => fr::PixelType::U16x3,
            _ => fr::PixelType::U16x4,
        };
        let mut out = vec![0u16; nw * nh * channels];
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
        let mut out = vec![0u8; nw * nh * channels];
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
    out.icc_profile = image.icc_profile.clone();
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
