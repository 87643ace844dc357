//! Cutting an image into overlapping tiles and placing the upscaled tiles back.
//!
//! A network's output pixel depends on a neighbourhood of input pixels (its receptive
//! field). A tile is therefore run with a margin of that many extra input pixels on each
//! side, clamped to the image, and only the upscaled *core* is kept. With a margin at least
//! the receptive field, every kept pixel saw exactly what it would have seen in the whole
//! image, so tiling is seamless by construction rather than by blending.

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
/// (`tile == 0`: one tile) and `margin` pixels of context on each side.
///
/// Cores are spread evenly (sizes differ by at most one pixel), so no thin sliver is left at
/// the right or bottom edge.
pub fn plan(width: usize, height: usize, tile: usize, margin: usize) -> Vec<Tile> {
    if width == 0 || height == 0 {
        return Vec::new();
    }
    let split = |n: usize| -> Vec<(usize, usize)> {
        let t = if tile == 0 { n } else { tile.min(n) };
        let count = n.div_ceil(t);
        (0..count)
            .map(|i| {
                let start = i * n / count;
                let end = (i + 1) * n / count;
                (start, end - start)
            })
            .collect()
    };
    let cols = split(width);
    let rows = split(height);
    let mut tiles = Vec::with_capacity(cols.len() * rows.len());
    for &(y, h) in &rows {
        for &(x, w) in &cols {
            let x0 = x.saturating_sub(margin);
            let y0 = y.saturating_sub(margin);
            let x1 = (x + w + margin).min(width);
            let y1 = (y + h + margin).min(height);
            tiles.push(Tile {
                core: Rect { x, y, w, h },
                run: Rect {
                    x: x0,
                    y: y0,
                    w: x1 - x0,
                    h: y1 - y0,
                },
            });
        }
    }
    tiles
}

/// The largest square tile side whose run region (core plus margins), upscaled, fits a
/// budget of `budget_values` `f32` values per channel-pixel cost `values_per_pixel`
/// (the backend's peak activation values per *input* pixel of a tile). At least 1.
pub fn side_for_budget(budget_values: usize, values_per_pixel: usize, margin: usize) -> usize {
    let pixels = budget_values / values_per_pixel.max(1);
    let side = (pixels as f64).sqrt() as usize;
    side.saturating_sub(2 * margin).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_partition_the_image_exactly() {
        for (w, h, t, m) in [
            (10, 7, 3, 2),
            (1, 1, 5, 3),
            (100, 33, 32, 8),
            (64, 64, 0, 4),
            (5, 9, 1, 0),
        ] {
            let tiles = plan(w, h, t, m);
            let mut hits = vec![0u8; w * h];
            for tile in &tiles {
                let (c, r) = (tile.core, tile.run);
                assert!(
                    r.x <= c.x && r.y <= c.y && c.x + c.w <= r.x + r.w && c.y + c.h <= r.y + r.h
                );
                assert!(r.x + r.w <= w && r.y + r.h <= h);
                assert!(
                    t == 0 || (c.w <= t && c.h <= t),
                    "core {c:?} larger than {t}"
                );
                for y in c.y..c.y + c.h {
                    for x in c.x..c.x + c.w {
                        hits[y * w + x] += 1;
                    }
                }
            }
            assert!(
                hits.iter().all(|&n| n == 1),
                "{w}x{h} tile {t}: not a partition"
            );
        }
    }

    #[test]
    fn margins_are_clamped_to_the_image() {
        let tiles = plan(10, 10, 5, 3);
        assert_eq!(
            tiles[0].run,
            Rect {
                x: 0,
                y: 0,
                w: 8,
                h: 8
            }
        );
        assert_eq!(
            tiles[3].run,
            Rect {
                x: 2,
                y: 2,
                w: 8,
                h: 8
            }
        );
    }

    #[test]
    fn empty_image_has_no_tiles() {
        assert!(plan(0, 5, 4, 1).is_empty());
    }
}
