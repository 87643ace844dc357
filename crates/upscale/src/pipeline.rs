//! Tiled execution of a model over an image.
//!
//! How an image goes through the network, and why:
//! - **Sizing.** Without [`Options::tile`], a tile's run region (core plus margins) is the
//!   largest square whose [`Executable::peak_bytes`] fits the budget: [`Options::memory_budget`],
//!   or less where the device reports less free memory (four fifths of it, shared among its
//!   lanes). The side is found by binary search, since the peak grows with the side. The
//!   figure comes from the buffer plan the run itself allocates, so the budget holds whatever
//!   the network's depth or width.
//! - **Exact or blended** ([`TileMode`]). Exact tiles carry a margin of the whole receptive
//!   field and keep only their cores: the result is the untiled one. A deep network (RRDBNet:
//!   about 350 px a side) needs runs of at least 700 px plus the core for that, which no
//!   modest budget holds, and most of each run would be margin. [`TileMode::Auto`] therefore
//!   takes exact tiles when they fit the budget and spend at most half the compute on
//!   margins, and otherwise overlapping tiles of the budget's size, [`BLEND_OVERLAP`] pixels
//!   of overlap, mixed with linear ramps ([`tiles::feather`]): the budget holds for every
//!   network, at a small, measured difference near the tile borders.
//! - **Input multiple.** A network with strides (Real-ESRGAN ×2 and ×1 begin with a
//!   pixel-unshuffle) takes only sides that are multiples of [`Model::input_multiple`]. The
//!   image is reflect-padded on the right and bottom to that multiple (as Real-ESRGAN does),
//!   tiles are cut on that grid (cores, margins, run sizes and window positions are
//!   multiples of it, so the tiled result equals the untiled run of the padded image), and
//!   the output is cropped to `scale ×` the image.
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
//!   then with tiles of half the side (the tiles not yet written are cut again; blended
//!   tiles are all planned again), down to a core of [`MIN_CORE`] pixels; only then is the
//!   error returned.

use std::borrow::Cow;
use std::collections::VecDeque;

use superres_engine::{Batch, EngineError, Executable, HostData, Io, Pending};
use superres_imaging::opencv::resize_linear_region;
use superres_imaging::tiles::{self, Rect, Tile, padded};
use superres_imaging::{ColorKind, Image, Samples};

use crate::family::{self, Family};
use crate::{Model, UpscaleError};

/// The smallest tile core, in input pixels, that sizing and out-of-memory retries go down
/// to: below it, the margins around a core cost more than the core itself.
pub const MIN_CORE: usize = 16;

/// Overlap of neighbouring blended tiles, in input pixels (rounded up to the model's input
/// multiple): each tile drops its outer 3/8 and the weights ramp across the middle quarter
/// (see `tiles::feather`). Chosen on Real-ESRGAN's x4plus (RRDBNet) against the whole
/// image, at the default budget: 16 px gave 40-44 dB, 64 px 50-57 dB, 80 px 54-60 dB
/// (BENCHMARKS.md).
pub const BLEND_OVERLAP: usize = 80;

/// How tiles are cut and put back together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TileMode {
    /// Margins of the whole receptive field, cores kept: the result equals the untiled one.
    /// With a budget too small for a core of [`MIN_CORE`] plus the margins, the smallest
    /// such run is taken anyway (the budget is exceeded).
    Exact,
    /// Tiles of the budget's size overlapping by [`BLEND_OVERLAP`] pixels, their outputs
    /// mixed with linear ramps across the overlap. Honours the budget for any network; the
    /// result differs from the untiled one near tile borders.
    Blend,
    /// [`Exact`](TileMode::Exact) where it fits the budget with at most half of the compute
    /// spent on margins, else [`Blend`](TileMode::Blend). With a fixed [`Options::tile`]:
    /// exact.
    #[default]
    Auto,
}

impl TileMode {
    pub fn name(self) -> &'static str {
        match self {
            TileMode::Exact => "exact",
            TileMode::Blend => "blend",
            TileMode::Auto => "auto",
        }
    }
}

impl std::fmt::Display for TileMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TileMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exact" => Ok(TileMode::Exact),
            "blend" => Ok(TileMode::Blend),
            "auto" => Ok(TileMode::Auto),
            other => Err(format!(
                "unknown tile mode '{other}' (expected exact, blend or auto)"
            )),
        }
    }
}

/// How to run an upscale.
#[derive(Clone, Debug)]
pub struct Options {
    /// Tile core side in input pixels (for blended tiles: the step between them, the run being
    /// [`BLEND_OVERLAP`] more): `Some(0)` runs the whole image at once, `None` derives the side
    /// from `memory_budget`.
    pub tile: Option<usize>,
    /// Bytes one submission may take at its peak, as the backend plans it (activations,
    /// input and output copies, workspaces): sizes the tiles when `tile` is `None`, and caps
    /// the batch. Exact tiles never go below a core of [`MIN_CORE`] plus the margins, blended
    /// ones below [`MIN_CORE`] plus the overlap, so a budget too small for those is exceeded
    /// by a bounded amount.
    ///
    /// The default, 768 MiB, is sized for deep networks: blended tiles cost
    /// `(run / (run − BLEND_OVERLAP))²` of the compute, and RRDBNet ×4 (2.25 KB per input
    /// pixel with its tail in bands) gets runs of 570×567 on a 4000×3000 photo, 1.29× its
    /// pixels (at 256 MiB: 325×324, 1.69×), while the whole job, with its 576 MB result, 67 MB of
    /// weights (large runs transform them for themselves) and the blend's rows, stays under
    /// 2 GiB (BENCHMARKS.md). Shallow networks simply get larger exact tiles, with less of
    /// their compute in margins.
    pub memory_budget: usize,
    /// Exact or blended tiles, or the choice by cost ([`TileMode::Auto`]).
    pub tile_mode: TileMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tile: None,
            memory_budget: 768 << 20,
            tile_mode: TileMode::Auto,
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
    /// Row-major; every run region has the same size. Rectangles are in the image padded to
    /// [`Tiling::align`] (they may reach past its right and bottom edges by less than that).
    pub tiles: Vec<Tile>,
    /// Tiles per submission.
    pub batch: usize,
    /// [`TileMode::Exact`] or [`TileMode::Blend`]: what [`TileMode::Auto`] chose.
    pub mode: TileMode,
    /// Overlap of blended tiles in input pixels (0 for exact ones).
    pub overlap: usize,
    /// The model's input multiple: every run side and position is a multiple of it.
    pub align: usize,
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

/// Compute of `tiles` (their run areas) over the padded image's area: 1 when nothing is
/// computed twice, 2 when margins take half of the compute.
fn redundancy(tiles: &[Tile], width: usize, height: usize) -> f64 {
    let runs: usize = tiles.iter().map(|t| t.run.area()).sum();
    runs as f64 / (width * height).max(1) as f64
}

/// [`tiling`], and the budget it was sized for.
fn plan(model: &Model, width: usize, height: usize, options: &Options) -> (Tiling, u64) {
    let exe = model.executable();
    let margin = model.receptive_field().margin();
    let a = model.input_multiple();
    let budget = budget(exe, options);
    let (pw, ph) = (padded(width, a), padded(height, a));
    let overlap = padded(BLEND_OVERLAP, a);
    // The largest run side (a multiple of `a`, from `floor` up) whose run fits the budget.
    let largest = |floor: usize| {
        let longest = pw.max(ph).max(floor);
        tiles::largest_fitting(floor / a, longest / a, |u| {
            fits(exe, (u * a).min(ph), (u * a).min(pw), 1, budget)
        })
        .map(|u| u * a)
    };
    let blend = |run: usize| tiles::plan_blend(width, height, run, overlap, a);
    let blend_floor = padded(overlap + MIN_CORE, a);
    let sized_blend = || blend(largest(blend_floor).unwrap_or(blend_floor));
    let (mode, tiles) = match (options.tile, options.tile_mode) {
        (Some(t), TileMode::Blend) => {
            let run = if t == 0 {
                usize::MAX
            } else {
                t.saturating_add(overlap)
            };
            (TileMode::Blend, blend(run))
        }
        (Some(t), _) => (TileMode::Exact, tiles::plan(width, height, t, margin, a)),
        (None, TileMode::Blend) => (TileMode::Blend, sized_blend()),
        (None, mode) => {
            // The smallest useful exact run: a core of MIN_CORE and the margins.
            let floor = padded(MIN_CORE, a) + 2 * padded(margin, a);
            let side = largest(floor);
            let exact = tiles::plan_within(width, height, side.unwrap_or(floor), margin, a);
            let cheap = side.is_some() && redundancy(&exact, pw, ph) <= 2.0;
            if mode == TileMode::Exact || cheap {
                (TileMode::Exact, exact)
            } else {
                (TileMode::Blend, sized_blend())
            }
        }
    };
    let batch = batch_size(exe, &tiles, budget);
    let overlap = if mode == TileMode::Blend { overlap } else { 0 };
    (
        Tiling {
            tiles,
            batch,
            mode,
            overlap,
            align: a,
        },
        budget,
    )
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
    /// The model's input multiple: runs are read from the image reflect-padded to it.
    align: usize,
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
            align: model.input_multiple(),
        }
    }

    /// Runs every tile of `tiling`, keeping up to `lanes + 1` submissions in flight, and writes
    /// the cores (or, blending, the weighted outputs) into `out`.
    fn run(
        &self,
        tiling: Tiling,
        budget: u64,
        out: &mut Samples,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<(), UpscaleError> {
        let exe = self.model.executable();
        let depth = exe.lanes().saturating_add(1);
        let overlap = tiling.overlap;
        let mut blend =
            (tiling.mode == TileMode::Blend).then(|| self.blender(&tiling.tiles, overlap));
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
                    Ok(outputs) => {
                        self.finish(&tiles, outputs, out, blend.as_mut(), &mut count, progress)?
                    }
                    Err(EngineError::OutOfMemory(why)) => failed = Some((tiles, why)),
                    Err(e) => return Err(e.into()),
                }
            }
            let Some((tiles, why)) = failed else {
                continue;
            };
            let failed_batch = tiles.len();
            let mut retry = tiles;
            if let Some(b) = blend.as_mut() {
                // Blended tiles are accumulated in order: nothing in flight is kept (it may
                // come after the failed tiles), all of it is run again.
                for (tiles, pending) in std::mem::take(&mut in_flight) {
                    let _ = pending.wait();
                    retry.extend(tiles);
                }
                retry.sort_by_key(|t| (t.run.y, t.run.x));
                for tile in retry.into_iter().rev() {
                    queue.push_front(tile);
                }
                count.done = count.total - queue.len();
                if failed_batch > 1 {
                    cap = failed_batch / 2;
                    continue;
                }
                let side = b.run.0.max(b.run.1);
                let smaller = (side / 2).max(padded(overlap + MIN_CORE, self.align));
                if smaller >= side {
                    return Err(EngineError::OutOfMemory(why).into());
                }
                // The whole image again, with smaller tiles (the rows already written are
                // written again).
                let (w, h) = (self.image.width, self.image.height);
                let tiles = tiles::plan_blend(w, h, smaller, overlap, self.align);
                *b = self.blender(&tiles, overlap);
                cap = batch_size(exe, &tiles, budget);
                count = Count {
                    done: 0,
                    total: tiles.len(),
                };
                queue = tiles.into();
                continue;
            }
            // Out of memory: let what is in flight finish (it frees its memory, and its
            // results are kept), then retry the failed tiles smaller.
            for (tiles, pending) in std::mem::take(&mut in_flight) {
                match pending.wait() {
                    Ok(outputs) => self.finish(&tiles, outputs, out, None, &mut count, progress)?,
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
            let smaller = tiles::split(&cores, w, h, (side / 2).max(MIN_CORE), margin, self.align);
            cap = batch_size(exe, &smaller, budget);
            count.total = count.done + smaller.len();
            queue = smaller.into();
        }
        if let Some(b) = blend.as_mut() {
            let end = padded(self.image.height, self.align) * self.model.scale();
            self.flush(b, end, out);
        }
        Ok(())
    }

    /// The accumulator of blended `tiles` (a grid of one run size, as
    /// [`tiles::plan_blend`] makes it) overlapping by `overlap`.
    fn blender(&self, tiles: &[Tile], overlap: usize) -> Blender {
        let s = self.model.scale();
        let (pw, ph) = (
            padded(self.image.width, self.align),
            padded(self.image.height, self.align),
        );
        let run = tiles.first().map_or((0, 0), |t| (t.run.w, t.run.h));
        let mut xs: Vec<usize> = tiles.iter().map(|t| t.run.x).collect();
        let mut ys: Vec<usize> = tiles.iter().map(|t| t.run.y).collect();
        xs.sort_unstable();
        xs.dedup();
        ys.sort_unstable();
        ys.dedup();
        let wx = tiles::feather(&xs, run.0, pw, overlap, s);
        let wy = tiles::feather(&ys, run.1, ph, overlap, s);
        let row = pw * s * self.channels;
        Blender {
            acc: vec![0.0; run.1 * s * row],
            base: 0,
            xs,
            ys,
            wx,
            wy,
            run,
        }
    }

    /// Adds the weighted network output `v` of blend tile `tile` to `b`, first writing out
    /// the rows no later tile reaches.
    fn blend_in(&self, b: &mut Blender, tile: &Tile, v: NetOut, out: &mut Samples) {
        let s = self.model.scale();
        let c = self.channels;
        let r = tile.run;
        let (Ok(i), Ok(j)) = (b.xs.binary_search(&r.x), b.ys.binary_search(&r.y)) else {
            return;
        };
        if r.y * s > b.base {
            self.flush(b, r.y * s, out);
        }
        let row = padded(self.image.width, self.align) * s * c;
        let (tw, th) = (r.w * s, r.h * s);
        let (wx, wy) = (&b.wx[i], &b.wy[j]);
        for (yy, &fy) in wy.iter().enumerate().take(th) {
            let dst = (r.y * s + yy - b.base) * row + r.x * s * c;
            let acc = &mut b.acc[dst..dst + tw * c];
            let src = yy * tw * c;
            match v {
                NetOut::U8(y) => {
                    for (k, a) in acc.iter_mut().enumerate() {
                        *a += fy * wx[k / c] * f32::from(y[src + k]);
                    }
                }
                NetOut::F32(y) => {
                    for (k, a) in acc.iter_mut().enumerate() {
                        *a += fy * wx[k / c] * y[src + k];
                    }
                }
            }
        }
    }

    /// Writes the accumulated output rows of `b` before `end` (a multiple of the scale) into
    /// `out`, with the family's post-processing, and moves the accumulator down.
    fn flush(&self, b: &mut Blender, end: usize, out: &mut Samples) {
        let s = self.model.scale();
        let c = self.channels;
        let pw = padded(self.image.width, self.align);
        let row = pw * s * c;
        let rows = end.saturating_sub(b.base).min(b.acc.len() / row.max(1));
        if rows == 0 {
            return;
        }
        let y0 = b.base / s;
        let run = Rect {
            x: 0,
            y: y0,
            w: pw,
            h: rows / s,
        };
        let done = &b.acc[..rows * row];
        let v8: Vec<u8>;
        let v = if matches!(out, Samples::U8(_)) {
            v8 = done
                .iter()
                .map(|&x| x.round().clamp(0.0, 255.0) as u8)
                .collect();
            NetOut::U8(&v8)
        } else {
            NetOut::F32(done)
        };
        self.write_core(run, run, v, out);
        b.acc.copy_within(rows * row.., 0);
        let keep = b.acc.len() - rows * row;
        b.acc[keep..].fill(0.0);
        b.base += rows;
    }

    /// The network input of `tiles` (one run size), stacked into one batch.
    fn input(&self, tiles: &[Tile]) -> Batch {
        let r0 = tiles.first().map(|t| t.run).unwrap_or_default();
        let values = tiles.len() * r0.area() * self.channels;
        let (width, height) = (self.image.width, self.image.height);
        let ch = self.image.color_kind.channels();
        let data = match (&self.planes, &self.image.color) {
            (Planes::Y8 { y, .. }, _) => {
                let mut d = Vec::with_capacity(values);
                tiles
                    .iter()
                    .for_each(|t| copy_rows(y, (width, height), 1, t.run, &mut d));
                HostData::U8(d)
            }
            (Planes::Y16 { y, .. }, _) => {
                let mut d = Vec::with_capacity(values);
                tiles
                    .iter()
                    .for_each(|t| copy_rows(y, (width, height), 1, t.run, &mut d));
                HostData::F32(d)
            }
            (Planes::Direct, Samples::U8(v)) => {
                // The samples as R, G, B; the input map does the family's arithmetic.
                let mut d = Vec::with_capacity(values);
                for t in tiles {
                    if ch == 3 {
                        copy_rows(v, (width, height), 3, t.run, &mut d);
                    } else {
                        let mut gray = Vec::with_capacity(t.run.area());
                        copy_rows(v, (width, height), 1, t.run, &mut gray);
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
                        let row = reflect(row, height);
                        for x in r.x..r.x + r.w {
                            let x = reflect(x, width);
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
        mut blend: Option<&mut Blender>,
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
            match blend.as_deref_mut() {
                Some(b) => self.blend_in(b, tile, v, out),
                None => self.write_core(tile.core, tile.run, v, out),
            }
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

    /// Writes the upscaled `core` (from the network output `v` of the region `run`, which
    /// holds it) into `out`, applying the family's post-processing; what lies in the padding
    /// beyond the image is dropped.
    fn write_core(&self, core: Rect, run: Rect, v: NetOut, out: &mut Samples) {
        let s = self.model.scale();
        let (iw, ih) = (self.image.width, self.image.height);
        let c = Rect {
            w: (core.x + core.w).min(iw).saturating_sub(core.x),
            h: (core.y + core.h).min(ih).saturating_sub(core.y),
            ..core
        };
        let r = run;
        if c.w == 0 || c.h == 0 {
            return;
        }
        let ow = self.image.width * s;
        let ch = self.image.color_kind.channels();
        let yc = self.channels;
        let yw = r.w * s;
        let (dx, dy) = ((c.x - r.x) * s, (c.y - r.y) * s);
        // Chroma of the core, upscaled exactly as the whole plane would be.
        let core_out = (c.x * s, c.y * s, c.w * s, c.h * s);
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

/// Blended tiles' outputs being summed: output rows `[base, base + run height × scale)` of
/// the padded image, every column, the network's channels, each tile's output weighted by its
/// column's and row's feathered weights (which sum to 1 at every pixel).
struct Blender {
    acc: Vec<f32>,
    /// First output row held in `acc`; the rows above it are written.
    base: usize,
    /// Window starts of the grid's columns and rows, in input pixels.
    xs: Vec<usize>,
    ys: Vec<usize>,
    /// Weights per column / row of windows, per output pixel of the window.
    wx: Vec<Vec<f32>>,
    wy: Vec<Vec<f32>>,
    /// `(width, height)` of every window.
    run: (usize, usize),
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

/// Appends the rows of region `r` of a `width × height` plane with `ch` samples a pixel;
/// where `r` reaches past the plane's right or bottom edge, the plane is reflected.
fn copy_rows<T: Copy>(
    plane: &[T],
    (width, height): (usize, usize),
    ch: usize,
    r: Rect,
    out: &mut Vec<T>,
) {
    let inside = (r.x + r.w).min(width).saturating_sub(r.x);
    for row in r.y..r.y + r.h {
        let line = &plane[reflect(row, height) * width * ch..][..width * ch];
        out.extend_from_slice(&line[r.x * ch..][..inside * ch]);
        for x in r.x + inside..r.x + r.w {
            let x = reflect(x, width);
            out.extend_from_slice(&line[x * ch..][..ch]);
        }
    }
}

/// Index `i` of an axis of `n` samples, reflected at its ends without repeating the edge
/// sample (`n, n+1, …` read `n−2, n−3, …`, as NumPy's and PyTorch's `reflect` padding),
/// periodically where the padding is longer than the axis.
fn reflect(i: usize, n: usize) -> usize {
    if i < n {
        return i;
    }
    let period = 2 * n.saturating_sub(1);
    if period == 0 {
        return 0;
    }
    let m = i % period;
    if m < n { m } else { period - m }
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
