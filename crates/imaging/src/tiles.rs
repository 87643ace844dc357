//! Cutting an image into overlapping tiles and placing the upscaled tiles back.
//!
//! A network's output pixel depends on a neighbourhood of input pixels (its receptive
//! field). A tile is therefore run with a margin of that many extra input pixels on each
//! side, and only the upscaled *core* is kept. With a margin at least the receptive field,
//! every kept pixel saw exactly what it would have seen in the whole image, so tiling is
//! seamless by construction rather than by blending ([`plan`], [`plan_within`], [`split`]).
//!
//! Every tile of a plan has a run region of the same size. Where a core touches the image's
//! edge, its run window is shifted inward instead of being clipped: the window still holds
//! only real image content, so the core gets *more* context than it needs and the result is
//! unchanged, while a backend sees one input shape per image (one buffer plan, one compiled
//! graph, and tiles that can be stacked into a batch).
//!
//! **Alignment.** A network with strides (a pixel-unshuffle is a stride-2 or stride-4
//! convolution) needs sides that are multiples of its `align`, and is only translation
//! invariant by multiples of it. Every function here therefore works on the *padded* image,
//! `padded(width, align) × padded(height, align)`: cores, margins, run sizes and window
//! positions are all multiples of `align`, so a tiled run equals the untiled run of the
//! padded image. Rectangles may reach into the padding (at most `align − 1` pixels past the
//! right and bottom edges); the caller fills those pixels (e.g. by reflection) and crops
//! the output. With `align == 1` nothing is padded.
//!
//! **Blending** ([`plan_blend`], [`feather`]) is the other way, for networks whose receptive
//! field is so wide that exact margins would cost more than the tiles themselves: windows
//! overlap by a fixed number of pixels and their outputs are mixed with linear ramps across
//! the overlap, so no seam shows, at the price of results that differ slightly from the
//! untiled run near tile borders.

/// One tile: the core it contributes and the larger region the network runs on, in input
/// pixels. `run` contains `core` and lies inside the padded image (see the module docs).
/// For a blend tile, `core == run`: the whole output is used, weighted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub core: Rect,
    pub run: Rect,
}

/// A rectangle `[x, x+w) × [y, y+h)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl Rect {
    pub fn area(&self) -> usize {
        self.w * self.h
    }
}

/// `n` rounded up to a multiple of `align` (`align` 0 counts as 1).
pub fn padded(n: usize, align: usize) -> usize {
    n.div_ceil(align.max(1)) * align.max(1)
}

/// Tiles covering a `width × height` image with cores of at most `tile × tile` pixels
/// (`tile == 0`: one tile, the whole image) and at least `margin` pixels of context on each
/// side where the image has them, everything aligned to `align` (see the module docs).
///
/// Cores are spread evenly (sizes differ by at most `align` pixels), so no thin sliver is left
/// at the right or bottom edge. Every run region has the same size: the largest core plus
/// `2 × margin` (margin rounded up to `align`), or the padded image's side where that is
/// smaller.
pub fn plan(width: usize, height: usize, tile: usize, margin: usize, align: usize) -> Vec<Tile> {
    let t = if tile == 0 { usize::MAX } else { tile };
    let (pw, ph) = (padded(width, align), padded(height, align));
    split_xy(&[whole(pw, ph)], pw, ph, (t, t), margin, align)
}

/// Tiles whose run regions are at most `run × run` pixels, with the largest cores that
/// leave `margin` pixels of context: a (padded) side of the image that fits in `run` is not
/// cut at all, a longer one gets cores of `run − 2 × margin` (at least `align`). For sizing
/// tiles from what one run of a given size costs.
pub fn plan_within(
    width: usize,
    height: usize,
    run: usize,
    margin: usize,
    align: usize,
) -> Vec<Tile> {
    let a = align.max(1);
    let m = padded(margin, a);
    let run_a = run / a * a;
    let axis = |n: usize| {
        if n <= run {
            n
        } else {
            run_a.saturating_sub(2 * m).max(a)
        }
    };
    let (pw, ph) = (padded(width, a), padded(height, a));
    split_xy(&[whole(pw, ph)], pw, ph, (axis(pw), axis(ph)), margin, a)
}

/// Cuts each of `cores` (disjoint rectangles of the padded `width × height` image, e.g. the
/// cores of tiles not yet run, as a plan with the same `align` made them) into cores of at
/// most `tile × tile` pixels (`tile == 0`: not cut), and gives all of them run regions of
/// one size, as [`plan`] does for a whole image.
pub fn split(
    cores: &[Rect],
    width: usize,
    height: usize,
    tile: usize,
    margin: usize,
    align: usize,
) -> Vec<Tile> {
    let t = if tile == 0 { usize::MAX } else { tile };
    let (pw, ph) = (padded(width, align), padded(height, align));
    split_xy(cores, pw, ph, (t, t), margin, align)
}

/// Blend tiles of a `width × height` image: run windows of `run × run` pixels (the padded
/// image's side where that is smaller; `run` is rounded down to `align`) on a grid, row-major,
/// neighbours overlapping by at least `overlap` pixels (rounded up to `align`), spread evenly
/// so that no window sticks out of the padded image. Each tile's `core` is its `run`: its whole
/// output is used, weighted by [`feather`]. Needs `run > overlap` after rounding (else a run of
/// `overlap + align` is used).
pub fn plan_blend(
    width: usize,
    height: usize,
    run: usize,
    overlap: usize,
    align: usize,
) -> Vec<Tile> {
    let a = align.max(1);
    let (pw, ph) = (padded(width, a), padded(height, a));
    if pw == 0 || ph == 0 {
        return Vec::new();
    }
    let o = padded(overlap, a);
    let r = (run / a * a).max(o + a);
    let (rw, rh) = (blend_run(pw, r, o, a), blend_run(ph, r, o, a));
    let xs = blend_positions(pw, rw, o, a);
    let ys = blend_positions(ph, rh, o, a);
    let mut out = Vec::with_capacity(xs.len() * ys.len());
    for &y in &ys {
        for &x in &xs {
            let rect = Rect { x, y, w: rw, h: rh };
            out.push(Tile {
                core: rect,
                run: rect,
            });
        }
    }
    out
}

/// The run side for an axis of `n` pixels with windows of at most `run`: the axis itself when
/// it fits, else the smallest side that needs no more windows than `run` does (so that the
/// overlaps are close to `overlap` rather than whatever is left over).
fn blend_run(n: usize, run: usize, overlap: usize, a: usize) -> usize {
    if n <= run {
        return n;
    }
    let (nu, ru, ou) = (n / a, run / a, (overlap / a).min(run / a - 1));
    let k = (nu - ou).div_ceil(ru - ou);
    ((nu - ou).div_ceil(k) + ou).min(ru) * a
}

/// Start positions of windows of `run` pixels on an axis of `n` pixels (all multiples of
/// `a`, `run ≤ n`), neighbours overlapping by at least `overlap`, spread evenly.
fn blend_positions(n: usize, run: usize, overlap: usize, a: usize) -> Vec<usize> {
    if n <= run {
        return vec![0];
    }
    // In units of `a`: `k` windows with steps of at most `run − overlap` reach from 0 to n.
    let (nu, ru, ou) = (n / a, run / a, (overlap / a).min(run / a - 1));
    let k = (nu - ou).div_ceil(ru - ou).max(2);
    (0..k).map(|i| i * (nu - ru) / (k - 1) * a).collect()
}

/// The weights of blend tiles along one axis of `n` input pixels (padded), for outputs
/// `scale` times larger: for each window start in `starts` (windows of `run` pixels, as
/// [`plan_blend`] places them), one weight per output pixel of the window. At an inner edge
/// a window's weight is 0 over the outer 3/8 of the overlap, then rises linearly across its
/// middle quarter (a feathered edge); at the image's edges it is 1; the weights are then normalised so that
/// at every output pixel those of the windows covering it sum to 1. A 2-D tile's weight is
/// the product of its column's and its row's.
pub fn feather(
    starts: &[usize],
    run: usize,
    n: usize,
    overlap: usize,
    scale: usize,
) -> Vec<Vec<f32>> {
    let len = run * scale;
    // The outer 3/8 of the overlap at an inner edge is dropped (the network saw too little
    // context there: with Real-ESRGAN's RRDBNet, a linear ramp from the very edge gave
    // 40-44 dB against the whole image, this 54-60 dB), and the weight ramps across the
    // middle quarter.
    let dead = (overlap * scale * 3 / 8) as f32;
    let ramp = ((overlap * scale) as f32 - 2.0 * dead).max(1.0);
    let rise = |from_edge: usize| ((from_edge as f32 + 0.5 - dead) / ramp).clamp(0.0, 1.0);
    let raw: Vec<Vec<f32>> = starts
        .iter()
        .map(|&p| {
            (0..len)
                .map(|q| {
                    let mut w = 1f32;
                    if p > 0 {
                        w = w.min(rise(q));
                    }
                    if p + run < n {
                        w = w.min(rise(len - 1 - q));
                    }
                    w
                })
                .collect()
        })
        .collect();
    let mut sum = vec![0f32; n * scale];
    for (&p, w) in starts.iter().zip(&raw) {
        for (q, &v) in w.iter().enumerate() {
            sum[p * scale + q] += v;
        }
    }
    starts
        .iter()
        .zip(raw)
        .map(|(&p, w)| {
            w.iter()
                .enumerate()
                .map(|(q, &v)| v / sum[p * scale + q])
                .collect()
        })
        .collect()
}

fn whole(width: usize, height: usize) -> Rect {
    Rect {
        x: 0,
        y: 0,
        w: width,
        h: height,
    }
}

/// `[start, start + len)` cut into `ceil(len / tile)` pieces whose lengths differ by at most
/// `a` and are multiples of it (`start`, `len` multiples of `a`), as `(start, length)` pairs.
fn pieces(start: usize, len: usize, tile: usize, a: usize) -> Vec<(usize, usize)> {
    if len == 0 {
        return Vec::new();
    }
    let (lu, tu) = (len.div_ceil(a), (tile / a).max(1));
    let count = lu.div_ceil(tu.clamp(1, lu));
    (0..count)
        .map(|i| {
            let p = i * lu / count * a;
            let q = ((i + 1) * lu / count * a).min(len);
            (start + p, q - p)
        })
        .collect()
}

/// Where a run window of `run` pixels goes on an axis of `n` pixels for a core starting at
/// `start`: `margin` before the core, moved inward where that would leave the image.
fn window(start: usize, run: usize, n: usize, margin: usize) -> usize {
    start.saturating_sub(margin).min(n - run)
}

/// Cuts `cores` of the padded `width × height` image and gives them one run size.
fn split_xy(
    cores: &[Rect],
    width: usize,
    height: usize,
    (tw, th): (usize, usize),
    margin: usize,
    align: usize,
) -> Vec<Tile> {
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let a = align.max(1);
    let margin = padded(margin, a);
    let mut out = Vec::new();
    for c in cores {
        for (y, h) in pieces(c.y, c.h, th, a) {
            for (x, w) in pieces(c.x, c.w, tw, a) {
                out.push(Rect { x, y, w, h });
            }
        }
    }
    // One run size for all: a window of the largest core plus its margins contains every
    // core with its margins, once moved inside the image.
    let widest = out.iter().map(|c| c.w).max().unwrap_or(0);
    let tallest = out.iter().map(|c| c.h).max().unwrap_or(0);
    let rw = padded(widest + 2 * margin, a).min(width);
    let rh = padded(tallest + 2 * margin, a).min(height);
    out.into_iter()
        .map(|core| Tile {
            core,
            run: Rect {
                x: window(core.x, rw, width, margin),
                y: window(core.y, rh, height, margin),
                w: rw,
                h: rh,
            },
        })
        .collect()
}

/// The largest `v` in `lo..=hi` for which `fits(v)` holds, for a `fits` that holds up to some
/// point and not beyond (e.g. "a run of side `v` takes at most the budget"); `None` when
/// `fits(lo)` fails or the range is empty. Calls `fits` about `log2(hi − lo)` times.
pub fn largest_fitting(lo: usize, hi: usize, mut fits: impl FnMut(usize) -> bool) -> Option<usize> {
    if lo > hi || !fits(lo) {
        return None;
    }
    if fits(hi) {
        return Some(hi);
    }
    // Invariant: `fits(good)` holds and `fits(bad)` does not.
    let (mut good, mut bad) = (lo, hi);
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the invariants every plan has: cores partition `region` (the whole image when
    /// `None`), runs are one size, lie inside the image and hold their core with `margin`
    /// pixels of context on every side the image allows.
    fn check(tiles: &[Tile], w: usize, h: usize, margin: usize, region: Option<&[Rect]>) {
        let mut hits = vec![0u8; w * h];
        let Some(first) = tiles.first() else {
            assert!(w == 0 || h == 0, "{w}x{h}: no tiles");
            return;
        };
        for tile in tiles {
            let (c, r) = (tile.core, tile.run);
            let what = format!("{w}x{h} margin {margin}: {tile:?}");
            assert_eq!((r.w, r.h), (first.run.w, first.run.h), "{what}: run size");
            assert!(r.x + r.w <= w && r.y + r.h <= h, "{what}: outside");
            assert!(c.w > 0 && c.h > 0, "{what}: empty core");
            assert!(c.x >= r.x && c.y >= r.y, "{what}: core not in run");
            assert!(c.x - r.x >= margin.min(c.x), "{what}: left context");
            assert!(c.y - r.y >= margin.min(c.y), "{what}: top context");
            let (cr, rr) = (c.x + c.w, r.x + r.w);
            let (cb, rb) = (c.y + c.h, r.y + r.h);
            assert!(rr >= cr && rr - cr >= margin.min(w - cr), "{what}: right");
            assert!(rb >= cb && rb - cb >= margin.min(h - cb), "{what}: bottom");
            for y in c.y..cb {
                for x in c.x..cr {
                    hits[y * w + x] += 1;
                }
            }
        }
        let mut want = vec![0u8; w * h];
        match region {
            None => want.fill(1),
            Some(rects) => {
                for r in rects {
                    for y in r.y..r.y + r.h {
                        want[y * w + r.x..][..r.w].fill(1);
                    }
                }
            }
        }
        assert_eq!(hits, want, "{w}x{h} margin {margin}: not a partition");
    }

    #[test]
    fn cores_partition_the_image_and_runs_are_uniform() {
        for w in [1, 2, 5, 10, 17, 33, 64, 100] {
            for h in [1, 3, 7, 23, 64] {
                for t in [0, 1, 2, 3, 5, 8, 16, 32, 200] {
                    for m in [0, 1, 2, 3, 8] {
                        let tiles = plan(w, h, t, m, 1);
                        check(&tiles, w, h, m, None);
                        for tile in &tiles {
                            let c = tile.core;
                            assert!(t == 0 || (c.w <= t && c.h <= t), "core {c:?} over {t}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn edge_windows_shift_inward_and_keep_their_core() {
        let tiles = plan(10, 10, 5, 3, 1);
        assert_eq!(tiles.len(), 4);
        let run = |x, y| Rect { x, y, w: 10, h: 10 };
        // Cores of 5 plus 3 on each side need 11 pixels: the run is the whole image.
        assert!(tiles.iter().all(|t| t.run == run(0, 0)));

        let tiles = plan(20, 4, 5, 2, 1);
        assert_eq!(tiles.len(), 4);
        let xs: Vec<_> = tiles.iter().map(|t| (t.core.x, t.run.x, t.run.w)).collect();
        assert_eq!(xs, [(0, 0, 9), (5, 3, 9), (10, 8, 9), (15, 11, 9)]);
        assert!(tiles.iter().all(|t| (t.run.y, t.run.h) == (0, 4)));
    }

    #[test]
    fn images_smaller_than_a_tile_are_one_tile() {
        for (w, h) in [(1, 1), (3, 2), (16, 9)] {
            for tiles in [
                plan(w, h, 16, 4, 1),
                plan(w, h, 0, 4, 1),
                plan_within(w, h, 16, 4, 1),
            ] {
                let whole = Rect { x: 0, y: 0, w, h };
                assert_eq!(
                    tiles,
                    [Tile {
                        core: whole,
                        run: whole
                    }]
                );
            }
        }
    }

    #[test]
    fn plan_within_keeps_runs_within_the_side() {
        for w in [1, 9, 40, 101] {
            for h in [1, 12, 57] {
                for run in [1, 4, 9, 20, 64, 128] {
                    for m in [0, 2, 4] {
                        let tiles = plan_within(w, h, run, m, 1);
                        check(&tiles, w, h, m, None);
                        let r = tiles[0].run;
                        let core_fits = run > 2 * m;
                        if core_fits {
                            assert!(r.w <= run && r.h <= run, "{w}x{h} run {run}: {r:?}");
                        }
                        if w <= run && h <= run {
                            assert_eq!(tiles.len(), 1);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn split_replans_the_remaining_cores() {
        let (w, h, m) = (50, 31, 3);
        let first = plan(w, h, 12, m, 1);
        for skip in [0, 1, 4, first.len() - 1] {
            let rest: Vec<Rect> = first[skip..].iter().map(|t| t.core).collect();
            for t in [1, 5, 6, 12, 0] {
                let tiles = split(&rest, w, h, t, m, 1);
                check(&tiles, w, h, m, Some(&rest));
                assert!(
                    tiles
                        .iter()
                        .all(|x| t == 0 || (x.core.w <= t && x.core.h <= t))
                );
            }
        }
    }

    #[test]
    fn empty_image_has_no_tiles() {
        assert!(plan(0, 5, 4, 1, 1).is_empty());
        assert!(plan_within(5, 0, 4, 1, 1).is_empty());
    }

    #[test]
    fn largest_fitting_finds_the_threshold() {
        for lo in 0..6 {
            for hi in lo..20 {
                for limit in 0..25 {
                    let mut calls = 0;
                    let got = largest_fitting(lo, hi, |v| {
                        calls += 1;
                        v <= limit
                    });
                    let want = (lo..=hi).rev().find(|&v| v <= limit);
                    assert_eq!(got, want, "{lo}..={hi} limit {limit}");
                    assert!(calls <= 2 + (hi - lo + 1).ilog2() as usize + 1);
                }
            }
        }
        assert_eq!(largest_fitting(5, 4, |_| true), None);
        assert_eq!(largest_fitting(0, usize::MAX, |v| v < 1000), Some(999));
    }

    #[test]
    fn aligned_plans_partition_the_padded_image_on_the_grid() {
        for a in [2, 4] {
            for w in [1, 5, 7, 18, 33, 100] {
                for h in [1, 3, 8, 23] {
                    let (pw, ph) = (padded(w, a), padded(h, a));
                    for m in [0, 1, 3, 8] {
                        let mut plans = vec![plan_within(w, h, 20, m, a), plan(w, h, 0, m, a)];
                        plans.extend([1, 2, 5, 8, 16].map(|t| plan(w, h, t, m, a)));
                        for tiles in plans {
                            check(&tiles, pw, ph, m, None);
                            for t in &tiles {
                                let (c, r) = (t.core, t.run);
                                for v in [c.x, c.y, c.w, c.h, r.x, r.y, r.w, r.h] {
                                    assert_eq!(v % a, 0, "{w}x{h} a {a} m {m}: {t:?}");
                                }
                            }
                        }
                    }
                }
            }
        }
        // 300×200 with cores of at most 50 and a margin of 76 for a stride of 4: cores of 40
        // or 44 (multiples of 4), runs of 196 = 44 + 2 · 76 (192 tall: rows of 40) rather than 202.
        let tiles = plan(300, 200, 50, 76, 4);
        assert!(
            tiles
                .iter()
                .all(|t| t.core.w.is_multiple_of(4) && t.core.w <= 48)
        );
        assert_eq!((tiles[0].run.w, tiles[0].run.h), (196, 192));
        assert_eq!(
            plan(7, 5, 0, 3, 4)[0].run,
            Rect {
                x: 0,
                y: 0,
                w: 8,
                h: 8
            }
        );
    }

    #[test]
    fn blend_tiles_cover_the_padded_image_with_the_overlap() {
        for a in [1, 2, 4] {
            for n in [1, 7, 40, 64, 65, 100, 257] {
                for run in [16, 24, 48, 64] {
                    for o in [0, 4, 8] {
                        let tiles = plan_blend(n, 9, run, o, a);
                        let pn = padded(n, a);
                        let xs: Vec<usize> = tiles
                            .iter()
                            .filter(|t| t.run.y == 0)
                            .map(|t| t.run.x)
                            .collect();
                        let r = tiles[0].run.w;
                        assert!(r <= pn && r.is_multiple_of(a) && r <= run.max(padded(o, a) + a));
                        assert_eq!(xs[0], 0);
                        assert_eq!(xs.last().map(|x| x + r), Some(pn), "{n} {run} {o} {a}");
                        for p in xs.windows(2) {
                            assert!(
                                p[0] < p[1] && p[0] + r >= p[1] + o.min(r - a),
                                "{xs:?} {r} {o}"
                            );
                        }
                        assert!(tiles.iter().all(|t| t.core == t.run && t.run.w == r));
                        for s in [1, 3] {
                            let w = feather(&xs, r, pn, padded(o, a), s);
                            let mut sum = vec![0f32; pn * s];
                            for (&x, w) in xs.iter().zip(&w) {
                                assert_eq!(w.len(), r * s);
                                for (q, v) in w.iter().enumerate() {
                                    assert!(*v >= 0.0 && *v <= 1.0);
                                    sum[x * s + q] += v;
                                }
                            }
                            assert!(sum.iter().all(|v| (v - 1.0).abs() < 1e-5), "{sum:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn feathered_weights_drop_the_overlaps_outer_band_and_ramp_across_the_middle() {
        // Two windows of 10 overlapping by 4 on an axis of 16: each drops the pixel at its
        // inner edge (3/8 of the overlap, rounded down) and the ramps are complementary.
        let w = feather(&[0, 6], 10, 16, 4, 1);
        assert_eq!(&w[0][..6], &[1.0; 6]);
        let ramp: Vec<f32> = w[0][6..].to_vec();
        assert_eq!(ramp, [1.0, 0.75, 0.25, 0.0]);
        assert_eq!(&w[1][..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&w[1][4..], &[1.0; 6]);
    }
}
