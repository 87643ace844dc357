//! Cutting an image into overlapping tiles and placing the upscaled tiles back.
//!
//! A network's output pixel depends on a neighbourhood of input pixels (its receptive
//! field). A tile is therefore run with a margin of that many extra input pixels on each
//! side, and only the upscaled *core* is kept. With a margin at least the receptive field,
//! every kept pixel saw exactly what it would have seen in the whole image, so tiling is
//! seamless by construction rather than by blending.
//!
//! Every tile of a plan has a run region of the same size. Where a core touches the image's
//! edge, its run window is shifted inward instead of being clipped: the window still holds
//! only real image content, so the core gets *more* context than it needs and the result is
//! unchanged, while a backend sees one input shape per image (one buffer plan, one compiled
//! graph, and tiles that can be stacked into a batch).

/// One tile: the core it contributes and the larger region the network runs on, in input
/// pixels. `run` contains `core` and lies inside the image.
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

/// Tiles covering a `width × height` image with cores of at most `tile × tile` pixels
/// (`tile == 0`: one tile, the whole image) and at least `margin` pixels of context on each
/// side where the image has them.
///
/// Cores are spread evenly (sizes differ by at most one pixel), so no thin sliver is left at
/// the right or bottom edge. Every run region has the same size: the largest core plus
/// `2 × margin`, or the image's side where that is smaller.
pub fn plan(width: usize, height: usize, tile: usize, margin: usize) -> Vec<Tile> {
    let t = if tile == 0 { usize::MAX } else { tile };
    split_xy(&[whole(width, height)], width, height, (t, t), margin)
}

/// Tiles whose run regions are at most `run × run` pixels, with the largest cores that
/// leave `margin` pixels of context: a side of the image that fits in `run` is not cut at
/// all, a longer one gets cores of `run − 2 × margin` (at least 1). For sizing tiles from
/// what one run of a given size costs.
pub fn plan_within(width: usize, height: usize, run: usize, margin: usize) -> Vec<Tile> {
    let axis = |n: usize| {
        if n <= run {
            n
        } else {
            run.saturating_sub(2 * margin).max(1)
        }
    };
    split_xy(
        &[whole(width, height)],
        width,
        height,
        (axis(width), axis(height)),
        margin,
    )
}

/// Cuts each of `cores` (disjoint rectangles inside a `width × height` image, e.g. the cores
/// of tiles not yet run) into cores of at most `tile × tile` pixels (`tile == 0`: not cut),
/// and gives all of them run regions of one size, as [`plan`] does for a whole image.
pub fn split(cores: &[Rect], width: usize, height: usize, tile: usize, margin: usize) -> Vec<Tile> {
    let t = if tile == 0 { usize::MAX } else { tile };
    split_xy(cores, width, height, (t, t), margin)
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
/// one, as `(start, length)` pairs.
fn pieces(start: usize, len: usize, tile: usize) -> Vec<(usize, usize)> {
    if len == 0 {
        return Vec::new();
    }
    let count = len.div_ceil(tile.clamp(1, len));
    (0..count)
        .map(|i| {
            let a = i * len / count;
            let b = (i + 1) * len / count;
            (start + a, b - a)
        })
        .collect()
}

/// Where a run window of `run` pixels goes on an axis of `n` pixels for a core starting at
/// `start`: `margin` before the core, moved inward where that would leave the image.
fn window(start: usize, run: usize, n: usize, margin: usize) -> usize {
    start.saturating_sub(margin).min(n - run)
}

fn split_xy(
    cores: &[Rect],
    width: usize,
    height: usize,
    (tw, th): (usize, usize),
    margin: usize,
) -> Vec<Tile> {
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for c in cores {
        for (y, h) in pieces(c.y, c.h, th) {
            for (x, w) in pieces(c.x, c.w, tw) {
                out.push(Rect { x, y, w, h });
            }
        }
    }
    // One run size for all: a window of the largest core plus its margins contains every
    // core with its margins, once moved inside the image.
    let widest = out.iter().map(|c| c.w).max().unwrap_or(0);
    let tallest = out.iter().map(|c| c.h).max().unwrap_or(0);
    let rw = (widest + 2 * margin).min(width);
    let rh = (tallest + 2 * margin).min(height);
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
                        let tiles = plan(w, h, t, m);
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
        let tiles = plan(10, 10, 5, 3);
        assert_eq!(tiles.len(), 4);
        let run = |x, y| Rect { x, y, w: 10, h: 10 };
        // Cores of 5 plus 3 on each side need 11 pixels: the run is the whole image.
        assert!(tiles.iter().all(|t| t.run == run(0, 0)));

        let tiles = plan(20, 4, 5, 2);
        assert_eq!(tiles.len(), 4);
        let xs: Vec<_> = tiles.iter().map(|t| (t.core.x, t.run.x, t.run.w)).collect();
        assert_eq!(xs, [(0, 0, 9), (5, 3, 9), (10, 8, 9), (15, 11, 9)]);
        assert!(tiles.iter().all(|t| (t.run.y, t.run.h) == (0, 4)));
    }

    #[test]
    fn images_smaller_than_a_tile_are_one_tile() {
        for (w, h) in [(1, 1), (3, 2), (16, 9)] {
            for tiles in [
                plan(w, h, 16, 4),
                plan(w, h, 0, 4),
                plan_within(w, h, 16, 4),
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
                        let tiles = plan_within(w, h, run, m);
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
        let first = plan(w, h, 12, m);
        for skip in [0, 1, 4, first.len() - 1] {
            let rest: Vec<Rect> = first[skip..].iter().map(|t| t.core).collect();
            for t in [1, 5, 6, 12, 0] {
                let tiles = split(&rest, w, h, t, m);
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
        assert!(plan(0, 5, 4, 1).is_empty());
        assert!(plan_within(5, 0, 4, 1).is_empty());
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
}
