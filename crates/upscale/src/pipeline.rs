//! Tiled execution of a model over an image.
//!
//! How an image goes through the network, and why:
//! - **Sizing.** Without [`Options::tile`], a tile's run region (core plus margins) is the
//!   largest square whose [`Executable::peak_bytes`] fits the budget: [`Options::memory_budget`],
//!   or less where the device reports less free memory (four fifths of it, shared among its
//!   lanes). The side is found by binary search, since the peak grows with the side. The
//!   figure comes from the buffer plan the run itself allocates, so the budget holds whatever
//!   the network's depth or width.
//! - **Shape.** Every tile of an image has the same run size ([`tiles`]: windows at the
//!   image's edge are shifted inward rather than clipped, which is exact since they hold only
//!   real pixels): a backend plans, compiles and allocates for one shape per image.
//! - **Batching.** Same-shape tiles are stacked into one [`Batch`] of
//!   [`Executable::preferred_batch`] tiles (fewer if that batch would exceed the budget):
//!   a device with small tiles is kept busy, while the CPU takes them one at a time.
//! - **Overlap.** Up to [`Executable::lanes`] + 1 submissions are in flight: the host prepares
//!   the next batch's input, and writes the previous batch's cores, while the device computes.
//!   The CPU computes inside `submit`, so there the same work happens in the same order, with
//!   the next tile computed just before the previous one is written.
//! - **Transfer.** 8-bit images cross to the backend as bytes with the family's maps
//!   ([`family::io_u8`]), and come back as bytes: a quarter of the traffic of `f32`, and the
//!   same arithmetic wherever the backend applies it. 16-bit images stay on the `f32` path.
//! - **Out of memory.** A submission the device cannot fit is retried with half the batch,
//!   then with tiles of half the side (the tiles not yet written are cut again), down to a
//!   core of [`MIN_CORE`] pixels; only then is the error returned.

use std::borrow::Cow;
use std::collections::VecDeque;

use superres_engine::{Batch, EngineError, Executable, HostData, Io, Pending};
use superres_imaging::opencv::resize_linear_region;
use superres_imaging::tiles::{self, Rect, Tile};
use superres_imaging::{ColorKind, Image, Samples};

use crate::family::{self, Family};
use crate::{Model, UpscaleError};

/// The smallest tile core, in input pixels, that sizing and out-of-memory retries go down
/// to: below it, the margins around a core cost more than the core itself.
pub const MIN_CORE: usize = 16;

/// How to run an upscale.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tile core side in input pixels: `Some(0)` runs the whole image at once, `None` derives
    /// the side from `memory_budget`.
    pub tile: Option<usize>,
    /// Bytes one submission may take at its peak, as the backend plans it (activations,
    /// input and output copies, workspaces): sizes the tiles when `tile` is `None`, and caps
    /// the batch. The tile core never goes below [`MIN_CORE`] or twice the network's margin,
    /// so a budget too small for those is exceeded by a bounded amount.
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
    /// Tiles of the image; it grows if tiles are cut smaller after the device ran out of
    /// memory.
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

/// How an image is cut and submitted (see [`Model::tiling`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Row-major; every run region has the same size.
    pub tiles: Vec<Tile>,
    /// Tiles per submission.
    pub batch: usize,
}

impl Tiling {
    /// `(width, height)` of every run region (zeros for an empty image).
    pub fn run_size(&self) -> (usize, usize) {
        self.tiles.first().map_or((0, 0), |t| (t.run.w, t.run.h))
    }
}

/// Bytes one submission may take: on a device, what it reports free for one run (its free
/// memory shared among its lanes), so tiles follow the GPU's memory; on the host, the
/// caller's budget.
fn budget(exe: &dyn Executable, options: &Options) -> u64 {
    match exe.memory_available() {
        Some(free) => free,
        None => options.memory_budget as u64,
    }
}

/// Whether a run of `n` images of `h × w` fits `budget`; a size the backend cannot plan does not.
fn fits(exe: &dyn Executable, h: usize, w: usize, n: usize, budget: u64) -> bool {
    exe.peak_bytes(h, w, n).is_ok_and(|bytes| bytes <= budget)
}

/// The tiles of a `width × height` image and the batch they start with.
pub(crate) fn tiling(model: &Model, width: usize, height: usize, options: &Options) -> Tiling {
    plan(model, width, height, options).0
}

/// [`tiling`], and the budget it was sized for.
fn plan(model: &Model, width: usize, height: usize, options: &Options) -> (Tiling, u64) {
    let exe = model.executable();
    let margin = model.receptive_field().margin();
    let budget = budget(exe, options);
    let tiles = match options.tile {
        Some(t) => tiles::plan(width, height, t, margin),
        None => {
            let floor = MIN_CORE.max(2 * margin) + 2 * margin;
            let longest = width.max(height).max(floor);
            let side = tiles::largest_fitting(floor, longest, |r| {
                fits(exe, r.min(height), r.min(width), 1, budget)
            })
            .unwrap_or(floor);
            tiles::plan_within(width, height, side, margin)
        }
    };
    let batch = batch_size(exe, &tiles, budget);
    (Tiling { tiles, batch }, budget)
}

/// Tiles per submission for `tiles` (all of one run size): the backend's preference, capped
/// by the budget and the number of tiles.
fn batch_size(exe: &dyn Executable, tiles: &[Tile], budget: u64) -> usize {
    let Some(run) = tiles.first().map(|t| t.run) else {
        return 1;
    };
    let want = exe.preferred_batch(run.h, run.w).clamp(1, tiles.len());
    if want == 1 {
        return 1;
    }
    tiles::largest_fitting(1, want, |n| fits(exe, run.h, run.w, n, budget)).unwrap_or(1)
}

/// Upscales `image` with `model`. `progress` is called after every tile; returning `false`
/// from it cancels the upscale (what is in flight is dropped).
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
    let (ow, oh) = (w * s, h * s);
    let mut out = match &image.color {
        Samples::U8(_) => Samples::U8(vec![0; ow * oh * ch]),
        Samples::U16(_) => Samples::U16(vec![0; ow * oh * ch]),
    };
    let job = Job::new(model, image);
    let (tiling, budget) = plan(model, w, h, options);
    job.run(tiling, budget, &mut out, progress)?;
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
        exif: image.exif.clone(),
        xmp: image.xmp.clone(),
    })
}

/// The planes a Y-channel model's pre- and post-processing need, computed once per image.
enum Planes<'a> {
    /// 8-bit images: the Y samples the network's input map reads (the image itself when it
    /// is gray), and Cr, Cb in `[0, 1]` for the chroma resize (empty for gray).
    Y8 {
        y: Cow<'a, [u8]>,
        cr: Vec<f32>,
        cb: Vec<f32>,
    },
    /// 16-bit images: Y, Cr, Cb in `[0, 1]` (Cr, Cb empty for gray).
    Y16 {
        y: Vec<f32>,
        cr: Vec<f32>,
        cb: Vec<f32>,
    },
    /// EDSR and RGB models read the image's samples directly.
    Direct,
}

impl Planes<'_> {
    fn chroma(&self) -> Option<(&[f32], &[f32])> {
        match self {
            Planes::Y8 { cr, cb, .. } | Planes::Y16 { cr, cb, .. } if !cr.is_empty() => {
                Some((cr, cb))
            }
            _ => None,
        }
    }
}

/// One image's upscale: the image, its planes, and how its samples cross to the backend.
struct Job<'a> {
    model: &'a Model,
    image: &'a Image,
    family: Family,
    planes: Planes<'a>,
    /// The family's 8-bit maps for 8-bit images; none for 16-bit ones (`f32` both ways).
    io: Io,
    /// Channels of the network's input and of the output this pipeline reads.
    channels: usize,
}

/// One image's network output, as `Batch` data sliced to that image.
#[derive(Clone, Copy)]
enum NetOut<'a> {
    U8(&'a [u8]),
    F32(&'a [f32]),
}

impl<'a> Job<'a> {
    fn new(model: &'a Model, image: &'a Image) -> Job<'a> {
        let family = model.family();
        let io = match image.color {
            Samples::U8(_) => family::io_u8(family),
            Samples::U16(_) => Io::default(),
        };
        let channels = match family {
            Family::YChannel => 1,
            Family::Edsr | Family::Rgb => 3,
        };
        Job {
            model,
            image,
            family,
            planes: Planes::new(family, image),
            io,
            channels,
        }
    }

    /// Runs every tile of `tiling`, keeping up to `lanes + 1` submissions in flight, and writes
    /// the cores into `out`.
    fn run(
        &self,
        tiling: Tiling,
        budget: u64,
        out: &mut Samples,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<(), UpscaleError> {
        let exe = self.model.executable();
        let depth = exe.lanes().saturating_add(1);
        let mut queue: VecDeque<Tile> = tiling.tiles.into();
        let mut cap = tiling.batch.max(1);
        let mut in_flight: VecDeque<(Vec<Tile>, Pending)> = VecDeque::new();
        let mut count = Count {
            done: 0,
            total: queue.len(),
        };
        while !queue.is_empty() || !in_flight.is_empty() {
            // Fill the lanes: each batch is prepared while the ones before it compute.
            let mut failed = None;
            // A backend that computes in `submit` (the CPU) is not run ahead of.
            while in_flight.len() < depth
                && !queue.is_empty()
                && !in_flight.back().is_some_and(|(_, p)| p.is_ready())
            {
                let tiles = take_batch(&mut queue, cap);
                match exe.submit(self.input(&tiles), &self.io) {
                    Ok(pending) => in_flight.push_back((tiles, pending)),
                    Err(EngineError::OutOfMemory(why)) => {
                        failed = Some((tiles, why));
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if failed.is_none()
                && let Some((tiles, pending)) = in_flight.pop_front()
            {
                match pending.wait() {
                    Ok(outputs) => self.finish(&tiles, outputs, out, &mut count, progress)?,
                    Err(EngineError::OutOfMemory(why)) => failed = Some((tiles, why)),
                    Err(e) => return Err(e.into()),
                }
            }
            let Some((tiles, why)) = failed else {
                continue;
            };
            // Out of memory: let what is in flight finish (it frees its memory, and its
            // results are kept), then retry the failed tiles smaller.
            let failed_batch = tiles.len();
            let mut retry = tiles;
            for (tiles, pending) in std::mem::take(&mut in_flight) {
                match pending.wait() {
                    Ok(outputs) => self.finish(&tiles, outputs, out, &mut count, progress)?,
                    Err(EngineError::OutOfMemory(_)) => retry.extend(tiles),
                    Err(e) => return Err(e.into()),
                }
            }
            for tile in retry.into_iter().rev() {
                queue.push_front(tile);
            }
            if failed_batch > 1 {
                cap = failed_batch / 2;
                continue;
            }
            let side = queue
                .iter()
                .map(|t| t.core.w.max(t.core.h))
                .max()
                .unwrap_or(0);
            if side <= MIN_CORE {
                return Err(EngineError::OutOfMemory(why).into());
            }
            let cores: Vec<Rect> = queue.iter().map(|t| t.core).collect();
            let margin = self.model.receptive_field().margin();
            let (w, h) = (self.image.width, self.image.height);
            let smaller = tiles::split(&cores, w, h, (side / 2).max(MIN_CORE), margin);
            cap = batch_size(exe, &smaller, budget);
            count.total = count.done + smaller.len();
            queue = smaller.into();
        }
        Ok(())
    }

    /// The network input of `tiles` (one run size), stacked into one batch.
    fn input(&self, tiles: &[Tile]) -> Batch {
        let r0 = tiles.first().map(|t| t.run).unwrap_or_default();
        let values = tiles.len() * r0.area() * self.channels;
        let width = self.image.width;
        let ch = self.image.color_kind.channels();
        let data = match (&self.planes, &self.image.color) {
            (Planes::Y8 { y, .. }, _) => {
                let mut d = Vec::with_capacity(values);
                tiles
                    .iter()
                    .for_each(|t| copy_rows(y, width, 1, t.run, &mut d));
                HostData::U8(d)
            }
            (Planes::Y16 { y, .. }, _) => {
                let mut d = Vec::with_capacity(values);
                tiles
                    .iter()
                    .for_each(|t| copy_rows(y, width, 1, t.run, &mut d));
                HostData::F32(d)
            }
            (Planes::Direct, Samples::U8(v)) => {
                // The samples as R, G, B; the input map does the family's arithmetic.
                let mut d = Vec::with_capacity(values);
                for t in tiles {
                    if ch == 3 {
                        copy_rows(v, width, 3, t.run, &mut d);
                    } else {
                        let mut gray = Vec::with_capacity(t.run.area());
                        copy_rows(v, width, 1, t.run, &mut gray);
                        d.extend(gray.iter().flat_map(|&g| [g, g, g]));
                    }
                }
                HostData::U8(d)
            }
            (Planes::Direct, Samples::U16(v)) => {
                let mut d = Vec::with_capacity(values);
                for t in tiles {
                    let r = t.run;
                    for row in r.y..r.y + r.h {
                        for x in r.x..r.x + r.w {
                            let (rr, g, b) = rgb_at(v, (row * width + x) * ch, ch);
                            d.extend_from_slice(&match self.family {
                                Family::Edsr => family::edsr_in_u16(rr, g, b),
                                Family::Rgb | Family::YChannel => {
                                    [rr, g, b].map(|c| c as f32 / 65535.0)
                                }
                            });
                        }
                    }
                }
                HostData::F32(d)
            }
        };
        Batch {
            n: tiles.len(),
            h: r0.h,
            w: r0.w,
            c: self.channels,
            data,
        }
    }

    /// Checks a finished run's output and writes the cores of its `tiles`, reporting progress
    /// after each.
    fn finish(
        &self,
        tiles: &[Tile],
        outputs: Vec<Batch>,
        out: &mut Samples,
        count: &mut Count,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<(), UpscaleError> {
        let name = self.model.name();
        let s = self.model.scale();
        let r = tiles.first().map(|t| t.run).unwrap_or_default();
        let y = outputs
            .into_iter()
            .next()
            .ok_or_else(|| UpscaleError::BadImage(format!("model '{name}' produced no output")))?;
        let want = (tiles.len(), r.h * s, r.w * s, self.channels);
        if (y.n, y.h, y.w, y.c) != want {
            return Err(UpscaleError::BadImage(format!(
                "model '{name}' produced {:?} for {} tile(s) of {}×{}, expected {want:?} (scale {s})",
                (y.n, y.h, y.w, y.c),
                tiles.len(),
                r.w,
                r.h,
            )));
        }
        let len = y.image_len();
        for (i, tile) in tiles.iter().enumerate() {
            let v = match (&y.data, &*out) {
                (HostData::U8(v), Samples::U8(_)) => NetOut::U8(&v[i * len..][..len]),
                (HostData::F32(v), Samples::U16(_)) => NetOut::F32(&v[i * len..][..len]),
                _ => {
                    return Err(UpscaleError::BadImage(format!(
                        "model '{name}': the backend returned samples of the wrong type"
                    )));
                }
            };
            self.write_core(tile, v, out);
            count.done += 1;
            let go_on = progress(Progress {
                tiles_done: count.done,
                tiles_total: count.total,
            });
            if !go_on && count.done < count.total {
                return Err(UpscaleError::Cancelled);
            }
        }
        Ok(())
    }

    /// Writes the upscaled core of `tile` (from the network output `v` of its run region)
    /// into `out`, applying the family's post-processing.
    fn write_core(&self, tile: &Tile, v: NetOut, out: &mut Samples) {
        let s = self.model.scale();
        let (c, r) = (tile.core, tile.run);
        let ow = self.image.width * s;
        let ch = self.image.color_kind.channels();
        let yc = self.channels;
        let yw = r.w * s;
        let (dx, dy) = ((c.x - r.x) * s, (c.y - r.y) * s);
        // Chroma of the core, upscaled exactly as the whole plane would be.
        let core_out = (c.x * s, c.y * s, c.w * s, c.h * s);
        let (iw, ih) = (self.image.width, self.image.height);
        let chroma = self.planes.chroma().map(|(cr, cb)| {
            (
                resize_linear_region(cr, iw, ih, s, core_out),
                resize_linear_region(cb, iw, ih, s, core_out),
            )
        });
        for row in 0..c.h * s {
            for col in 0..c.w * s {
                let src = ((dy + row) * yw + dx + col) * yc;
                let dst = ((c.y * s + row) * ow + c.x * s + col) * ch;
                let k = row * c.w * s + col;
                match (self.family, &mut *out, v, &chroma) {
                    (Family::YChannel, Samples::U8(o), NetOut::U8(y), Some((cr, cb))) => {
                        o[dst..dst + 3].copy_from_slice(&family::merge_u8(y[src], cr[k], cb[k]));
                    }
                    (Family::YChannel, Samples::U8(o), NetOut::U8(y), None) => o[dst] = y[src],
                    (Family::YChannel, Samples::U16(o), NetOut::F32(y), Some((cr, cb))) => {
                        o[dst..dst + 3].copy_from_slice(&family::merge_u16(y[src], cr[k], cb[k]));
                    }
                    (Family::YChannel, Samples::U16(o), NetOut::F32(y), None) => {
                        o[dst] = family::unit_to_u16(y[src]);
                    }
                    (Family::Edsr | Family::Rgb, Samples::U8(o), NetOut::U8(y), _) => {
                        let p = [y[src], y[src + 1], y[src + 2]];
                        put(o, dst, ch, p, family::gray_u8);
                    }
                    (Family::Edsr, Samples::U16(o), NetOut::F32(y), _) => {
                        let p = family::edsr_out_u16(&y[src..src + 3]);
                        put(o, dst, ch, p, family::gray_u16);
                    }
                    (Family::Rgb, Samples::U16(o), NetOut::F32(y), _) => {
                        let p = [y[src], y[src + 1], y[src + 2]].map(family::unit_to_u16);
                        put(o, dst, ch, p, family::gray_u16);
                    }
                    // `finish` pairs 8-bit images with 8-bit outputs and 16-bit with `f32`.
                    _ => {}
                }
            }
        }
    }
}

/// Tiles done and in all, for progress reports.
struct Count {
    done: usize,
    total: usize,
}

/// Takes up to `cap` tiles from the front of `queue` that share the first one's run size.
fn take_batch(queue: &mut VecDeque<Tile>, cap: usize) -> Vec<Tile> {
    let size = queue.front().map(|t| (t.run.w, t.run.h));
    let n = queue
        .iter()
        .take(cap.max(1))
        .take_while(|t| Some((t.run.w, t.run.h)) == size)
        .count();
    queue.drain(..n).collect()
}

impl<'a> Planes<'a> {
    fn new(family: Family, image: &'a Image) -> Planes<'a> {
        if family != Family::YChannel {
            return Planes::Direct;
        }
        let n = image.pixel_count();
        match (&image.color, image.color_kind) {
            (Samples::U8(v), ColorKind::Gray) => Planes::Y8 {
                y: Cow::Borrowed(v),
                cr: vec![],
                cb: vec![],
            },
            (Samples::U16(v), ColorKind::Gray) => Planes::Y16 {
                y: v.iter().map(|&p| p as f32 / 65535.0).collect(),
                cr: vec![],
                cb: vec![],
            },
            (Samples::U8(v), ColorKind::Rgb) => {
                let (mut y, mut cr, mut cb) = (
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                );
                for p in v.chunks_exact(3) {
                    let (l, [r, b]) = family::ycrcb_u8(p[0], p[1], p[2]);
                    y.push(l);
                    cr.push(r);
                    cb.push(b);
                }
                Planes::Y8 {
                    y: Cow::Owned(y),
                    cr,
                    cb,
                }
            }
            (Samples::U16(v), ColorKind::Rgb) => {
                let (mut y, mut cr, mut cb) = (
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                    Vec::with_capacity(n),
                );
                for p in v.chunks_exact(3) {
                    let [l, r, b] = family::ycrcb_unit_u16(p[0], p[1], p[2]);
                    y.push(l);
                    cr.push(r);
                    cb.push(b);
                }
                Planes::Y16 { y, cr, cb }
            }
        }
    }
}

/// Appends the rows of region `r` of a plane `width` pixels wide with `ch` samples a pixel.
fn copy_rows<T: Copy>(plane: &[T], width: usize, ch: usize, r: Rect, out: &mut Vec<T>) {
    for row in r.y..r.y + r.h {
        out.extend_from_slice(&plane[(row * width + r.x) * ch..][..r.w * ch]);
    }
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

#[inline]
fn put<T: Copy>(o: &mut [T], dst: usize, ch: usize, p: [T; 3], gray: fn(T, T, T) -> T) {
    if ch == 1 {
        o[dst] = gray(p[0], p[1], p[2]);
    } else {
        o[dst..dst + 3].copy_from_slice(&p);
    }
}
