//! How far an output pixel "sees" into the input: the overlap that tiling needs so that a
//! tiled result equals the untiled one.

use crate::{Graph, Op, ResizeMode};

/// The input pixels an output pixel depends on, beyond its own position, on each side
/// (in pixels of the network input, rounded up).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceptiveField {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl ReceptiveField {
    /// The largest of the four sides: the overlap a square tile needs.
    pub fn margin(&self) -> usize {
        self.top.max(self.bottom).max(self.left).max(self.right)
    }

    fn max(self, o: Self) -> Self {
        ReceptiveField {
            top: self.top.max(o.top),
            bottom: self.bottom.max(o.bottom),
            left: self.left.max(o.left),
            right: self.right.max(o.right),
        }
    }
}

impl Graph {
    /// The multiple every input side must be for the network's sizes to divide: the least
    /// common multiple of the denominators of every value's spatial scale relative to the
    /// input (a stride-2 convolution, such as a pixel-unshuffle of 2, makes 1/2: sides must
    /// be even; one of 4 makes 4). 1 for networks without strides.
    ///
    /// A value of scale `num/den` has `side · num/den` pixels, an integer for every side
    /// exactly when `den` divides the side (`num` and `den` are coprime), so this is also the
    /// step by which a window may move and keep the network's result the same: a window
    /// moved by a multiple of it sees every strided grid in the same phase.
    pub fn input_multiple(&self) -> usize {
        fn gcd(a: usize, b: usize) -> usize {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        self.nodes.iter().filter_map(|n| n.scale).fold(1, |m, s| {
            let d = s.den.max(1);
            m / gcd(m, d) * d
        })
    }

    /// The receptive field of the first output, accumulated along every path from the input.
    /// [`Op::SqueezeExcite`]'s channel means are taken as local to the run (they are over the
    /// tile, see its documentation), so they add nothing here.
    ///
    /// Extents are tracked in the pixels of each value and converted to input pixels with the
    /// value's scale, rounding up, so the result is never smaller than the true field.
    pub fn receptive_field(&self) -> ReceptiveField {
        // Per value: extent in *input* pixels, as exact fractions would be overkill; we keep
        // f64 and round up at the end (sizes are tiny integers over small scales).
        let mut ext: Vec<[f64; 4]> = vec![[0.0; 4]; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            // The widest of the image operands (a crop or an edge replication makes a side
            // negative, which must survive until later layers add to it).
            let mut images = n.inputs.iter().filter(|v| self.nodes[v.0].scale.is_some());
            let mut e = images.next().map_or([0.0f64; 4], |v| ext[v.0]);
            for v in images {
                for k in 0..4 {
                    e[k] = e[k].max(ext[v.0][k]);
                }
            }
            let scale = n
                .inputs
                .first()
                .and_then(|v| self.nodes[v.0].scale)
                .map_or(1.0, |s| s.num as f64 / s.den as f64);
            match &n.op {
                Op::Conv2d(c) => {
                    let ah = c.dilation.0 * (c.kh - 1);
                    let aw = c.dilation.1 * (c.kw - 1);
                    let before_h = c.padding.top as f64;
                    let before_w = c.padding.left as f64;
                    e[0] += before_h / scale;
                    e[1] += (ah as f64 - before_h).max(0.0) / scale;
                    e[2] += before_w / scale;
                    e[3] += (aw as f64 - before_w).max(0.0) / scale;
                }
                Op::Resize {
                    mode: ResizeMode::Bilinear,
                    ..
                } => {
                    for x in &mut e {
                        *x += 1.0 / scale;
                    }
                }
                // Taps reach two source pixels each way, plus the shift of a shrinking
                // resize's sample positions.
                Op::Resize {
                    mode: ResizeMode::Bicubic { down },
                    factor,
                } => {
                    let shift = (*down as f64 / *factor as f64).max(1.0);
                    for x in &mut e {
                        *x += (2.0 + shift) / scale;
                    }
                }
                // Output pixel `y` is input pixel `y - top`: what it sees moves up by `top`
                // (down, for a crop). Replicated edges add no dependence.
                Op::Border(b) => {
                    e[0] += b.top as f64 / scale;
                    e[1] -= b.top as f64 / scale;
                    e[2] += b.left as f64 / scale;
                    e[3] -= b.left as f64 / scale;
                }
                _ => {}
            }
            ext[i] = e;
        }
        let Some((_, out)) = self.outputs.first() else {
            return ReceptiveField::default();
        };
        let e = ext[out.0];
        let up = |x: f64| (x - 1e-9).ceil().max(0.0) as usize;
        ReceptiveField::default().max(ReceptiveField {
            top: up(e[0]),
            bottom: up(e[1]),
            left: up(e[2]),
            right: up(e[3]),
        })
    }
}
