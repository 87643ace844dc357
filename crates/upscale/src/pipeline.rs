//! Tiled execution of a model over an image.

use superres_graph::Tensor;
use superres_imaging::opencv::resize_linear_region;
use superres_imaging::tiles::{self, Rect, Tile};
use superres_imaging::{ColorKind, Image, Samples};

use crate::family::{self, Family};
use crate::{Model, UpscaleError};

/// How to run an upscale.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tile side in input pixels: `Some(0)` runs the whole image at once, `None` derives the
    /// side from `memory_budget`.
    pub tile: Option<usize>,
    /// Bytes the network's activations of one tile may take when `tile` is `None`.
    pub memory_budget: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tile: None,
            memory_budget: 256 << 20,
        }
    }
}

/// Where an upscale is, reported after each tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub tiles_done: usize,
    pub tiles_total: usize,
}

impl Progress {
    /// Completed fraction in `[0, 1]`.
    pub fn fraction(&self) -> f64 {
        if self.tiles_total == 0 {
            1.0
        } else {
            self.tiles_done as f64 / self.tiles_total as f64
        }
    }
}

/// The colour input of the network for the whole image, computed once, and the planes the
/// post-processing needs.
enum Planes {
    /// Y, Cr, Cb in `[0, 1]` (Cr/Cb empty for gray input).
    YCrCb {
        y: Vec<f32>,
        cr: Vec<f32>,
        cb: Vec<f32>,
    },
    /// Network input computed per tile from the samples (EDSR and RGB families).
    Direct,
}

/// Upscales `image` with `model`. `progress` is called after every tile; returning `false`
/// from it cancels the upscale between tiles.
pub fn upscale(
    model: &Model,
    image: &Image,
    options: &Options,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<Image, UpscaleError> {
    let (w, h) = (image.width, image.height);
    let ch = image.color_kind.channels();
    if w == 0 || h == 0 {
        return Err(UpscaleError::BadImage("the image has no pixels".into()));
    }
    if image.color.len() != w * h * ch {
        return Err(UpscaleError::BadImage(format!(
            "{} samples for a {w}×{h} image with {ch} channel(s)",
            image.color.len()
        )));
    }
    let s = model.scale();
    let margin = model.receptive_field().margin();
    let side = match options.tile {
        Some(t) => t,
        None => {
            let budget_values = options.memory_budget / std::mem::size_of::<f32>();
            // A core narrower than twice the margin would spend most of the time on overlap;
            // deep networks (large margins) may then exceed the budget by a bounded amount.
            let side = tiles::side_for_budget(budget_values, model.values_per_pixel(), margin)
                .max(2 * margin)
                .max(16);
            if side >= w.max(h) { 0 } else { side }
        }
    };
    let plan = tiles::plan(w, h, side, margin);
    let planes = prepare_planes(model.family(), image);

    let (ow, oh) = (w * s, h * s);
    let mut out = match &image.color {
        Samples::U8(_) => Samples::U8(vec![0; ow * oh * ch]),
        Samples::U16(_) => Samples::U16(vec![0; ow * oh * ch]),
    };
    let total = plan.len();
    for (i, tile) in plan.iter().enumerate() {
        let input = tile_input(model.family(), image, &planes, tile.run);
        let outputs = model.executable().run(&input)?;
        let y = outputs.into_iter().next().ok_or_else(|| {
            UpscaleError::BadImage(format!("model '{}' produced no output", model.name()))
        })?;
        let want_c = match model.family() {
            Family::YChannel => 1,
            Family::Edsr | Family::Rgb => 3,
        };
        if y.hwc() != Some((tile.run.h * s, tile.run.w * s, want_c)) {
            return Err(UpscaleError::BadImage(format!(
                "model '{}' produced {:?} for a {}×{} tile, expected [{}, {}, {want_c}] (scale {s})",
                model.name(),
                y.shape(),
                tile.run.w,
                tile.run.h,
                tile.run.h * s,
                tile.run.w * s
            )));
        }
        write_core(model.family(), image, &planes, s, tile, &y, &mut out);
        if !progress(Progress {
            tiles_done: i + 1,
            tiles_total: total,
        }) && i + 1 < total
        {
            return Err(UpscaleError::Cancelled);
        }
    }
    // Alpha is not image content a network was trained on: it is resampled on its own
    // (bicubic), so transparency stays where it was.
    let alpha = image
        .alpha
        .as_ref()
        .map(|a| superres_imaging::resample::resize_plane_bicubic(a, w, h, ow, oh))
        .transpose()
        .map_err(|e| UpscaleError::BadImage(format!("alpha channel: {e}")))?;
    Ok(Image {
        width: ow,
        height: oh,
        color_kind: image.color_kind,
        color: out,
        alpha,
        icc_profile: image.icc_profile.clone(),
    })
}

fn prepare_planes(family: Family, image: &Image) -> Planes {
    if family != Family::YChannel {
        return Planes::Direct;
    }
    let n = image.pixel_count();
    match (&image.color, image.color_kind) {
        (Samples::U8(v), ColorKind::Gray) => Planes::YCrCb {
            y: v.iter()
                .map(|&p| superres_imaging::opencv::u8_to_unit(p))
                .collect(),
            cr: vec![],
            cb: vec![],
        },
        (Samples::U16(v), ColorKind::Gray) => Planes::YCrCb {
            y: v.iter().map(|&p| p as f32 / 65535.0).collect(),
            cr: vec![],
            cb: vec![],
        },
        (samples, ColorKind::Rgb) => {
            let (mut y, mut cr, mut cb) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let mut push = |p: [f32; 3]| {
                y.push(p[0]);
                cr.push(p[1]);
                cb.push(p[2]);
            };
            match samples {
                Samples::U8(v) => v
                    .chunks_exact(3)
                    .for_each(|p| push(family::ycrcb_unit_u8(p[0], p[1], p[2]))),
                Samples::U16(v) => v
                    .chunks_exact(3)
                    .for_each(|p| push(family::ycrcb_unit_u16(p[0], p[1], p[2]))),
            }
            Planes::YCrCb { y, cr, cb }
        }
    }
}

/// The network input for the region `r`.
fn tile_input(family: Family, image: &Image, planes: &Planes, r: Rect) -> Tensor {
    let w = image.width;
    let ch = image.color_kind.channels();
    if let Planes::YCrCb { y, .. } = planes {
        let mut data = Vec::with_capacity(r.area());
        for row in r.y..r.y + r.h {
            data.extend_from_slice(&y[row * w + r.x..][..r.w]);
        }
        return Tensor::image(r.h, r.w, 1, data);
    }
    let mut data = Vec::with_capacity(r.area() * 3);
    for row in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            let i = (row * w + x) * ch;
            let px: [f32; 3] = match (&image.color, family) {
                (Samples::U8(v), Family::Edsr) => {
                    let (rr, g, b) = rgb_at(v, i, ch);
                    family::edsr_in_u8(rr, g, b)
                }
                (Samples::U16(v), Family::Edsr) => {
                    let (rr, g, b) = rgb_at(v, i, ch);
                    family::edsr_in_u16(rr, g, b)
                }
                (Samples::U8(v), _) => {
                    let (rr, g, b) = rgb_at(v, i, ch);
                    [rr as f32, g as f32, b as f32].map(|c| c / 255.0)
                }
                (Samples::U16(v), _) => {
                    let (rr, g, b) = rgb_at(v, i, ch);
                    [rr as f32, g as f32, b as f32].map(|c| c / 65535.0)
                }
            };
            data.extend_from_slice(&px);
        }
    }
    Tensor::image(r.h, r.w, 3, data)
}

/// `(r, g, b)` at sample index `i`; gray is replicated.
#[inline]
fn rgb_at<T: Copy>(v: &[T], i: usize, ch: usize) -> (T, T, T) {
    if ch == 1 {
        (v[i], v[i], v[i])
    } else {
        (v[i], v[i + 1], v[i + 2])
    }
}

/// Writes the upscaled core of `tile` (from the network output `y` of its run region)
/// into `out`, applying the family's post-processing.
fn write_core(
    family: Family,
    image: &Image,
    planes: &Planes,
    s: usize,
    tile: &Tile,
    y: &Tensor,
    out: &mut Samples,
) {
    let (c, r) = (tile.core, tile.run);
    let ow = image.width * s;
    let ch = image.color_kind.channels();
    let yc = y.hwc().map_or(1, |t| t.2);
    let yw = r.w * s;
    let (dx, dy) = ((c.x - r.x) * s, (c.y - r.y) * s);
    let core_out = (c.x * s, c.y * s, c.w * s, c.h * s);
    // Chroma of the core, upscaled exactly as the whole plane would be.
    let chroma = match planes {
        Planes::YCrCb { cr, cb, .. } if !cr.is_empty() => Some((
            resize_linear_region(cr, image.width, image.height, s, core_out),
            resize_linear_region(cb, image.width, image.height, s, core_out),
        )),
        _ => None,
    };
    let yd = y.data();
    for row in 0..c.h * s {
        for col in 0..c.w * s {
            let src = ((dy + row) * yw + dx + col) * yc;
            let v = &yd[src..src + yc];
            let dst = ((c.y * s + row) * ow + c.x * s + col) * ch;
            let k = row * c.w * s + col;
            match (family, &mut *out, &chroma) {
                (Family::YChannel, Samples::U8(o), Some((cr, cb))) => {
                    o[dst..dst + 3].copy_from_slice(&family::merge_u8(v[0], cr[k], cb[k]));
                }
                (Family::YChannel, Samples::U16(o), Some((cr, cb))) => {
                    o[dst..dst + 3].copy_from_slice(&family::merge_u16(v[0], cr[k], cb[k]));
                }
                (Family::YChannel, Samples::U8(o), None) => {
                    o[dst] = superres_imaging::opencv::unit_to_u8(v[0]);
                }
                (Family::YChannel, Samples::U16(o), None) => o[dst] = family::unit_to_u16(v[0]),
                (Family::Edsr, Samples::U8(o), _) => {
                    let p = family::edsr_out_u8(v);
                    put(o, dst, ch, p, family::gray_u8);
                }
                (Family::Edsr, Samples::U16(o), _) => {
                    let p = family::edsr_out_u16(v);
                    put(o, dst, ch, p, family::gray_u16);
                }
                (Family::Rgb, Samples::U8(o), _) => {
                    let p = [v[0], v[1], v[2]].map(superres_imaging::opencv::unit_to_u8);
                    put(o, dst, ch, p, family::gray_u8);
                }
                (Family::Rgb, Samples::U16(o), _) => {
                    let p = [v[0], v[1], v[2]].map(family::unit_to_u16);
                    put(o, dst, ch, p, family::gray_u16);
                }
            }
        }
    }
}

#[inline]
fn put<T: Copy>(o: &mut [T], dst: usize, ch: usize, p: [T; 3], gray: fn(T, T, T) -> T) {
    if ch == 1 {
        o[dst] = gray(p[0], p[1], p[2]);
    } else {
        o[dst..dst + 3].copy_from_slice(&p);
    }
}
