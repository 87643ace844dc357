//! The memory-bound operators: element-wise maps, depth-to-space, resize, concat, edge
//! replication and cropping, and squeeze-and-excitation.
//!
//! Each writes into a buffer of the plan's arena and spreads rows (or chunks of pixels) over
//! rayon's pool. Element-wise operators may run in place (`src == None`): the planner gives
//! them their input's buffer when the input dies there.

use rayon::prelude::*;
use superres_graph::{
    Activation, BinaryOp, Border, DepthToSpaceMode, ResizeMode, SqueezeExcite, UnaryOp, cubic_taps,
};

/// Pixels per parallel chunk of an element-wise operator.
const CHUNK_PIXELS: usize = 4096;

/// `out[i] = f(src[i], channel of i)` over `out.len()` values; in place when `src` is `None`.
fn map(out: &mut [f32], src: Option<&[f32]>, c: usize, f: impl Fn(f32, usize) -> f32 + Sync) {
    let c = c.max(1);
    let chunk = CHUNK_PIXELS * c;
    out.par_chunks_mut(chunk).enumerate().for_each(|(k, o)| {
        let s = src.map(|s| &s[k * chunk..][..o.len()]);
        for (px, op) in o.chunks_mut(c).enumerate() {
            let sp = s.map(|s| &s[px * c..][..op.len()]);
            for (ch, v) in op.iter_mut().enumerate() {
                let x = sp.map_or(*v, |sp| sp[ch]);
                *v = f(x, ch);
            }
        }
    });
}

pub fn unary(op: UnaryOp, out: &mut [f32], src: Option<&[f32]>, c: usize) {
    match op {
        UnaryOp::Abs => map(out, src, c, |x, _| x.abs()),
        UnaryOp::Neg => map(out, src, c, |x, _| -x),
    }
}

pub fn activation(a: &Activation, out: &mut [f32], src: Option<&[f32]>, c: usize) {
    match a {
        Activation::Relu => map(out, src, c, |x, _| x.max(0.0)),
        Activation::Tanh => map(out, src, c, |x, _| super::math::tanh(x)),
        other => map(out, src, c, |x, ch| other.apply(x, ch)),
    }
}

/// The second operand of a binary operator.
#[derive(Clone, Copy)]
pub enum Operand<'a> {
    Scalar(f32),
    PerChannel(&'a [f32]),
    Tensor(&'a [f32]),
}

/// `out = a op b`; `a` is `out` itself when `a` is `None`.
pub fn binary(op: BinaryOp, out: &mut [f32], a: Option<&[f32]>, b: Operand, c: usize) {
    let c = c.max(1);
    let chunk = CHUNK_PIXELS * c;
    out.par_chunks_mut(chunk).enumerate().for_each(|(k, o)| {
        let base = k * chunk;
        let a = a.map(|a| &a[base..][..o.len()]);
        let get_a = |i: usize, o: &[f32]| a.map_or(o[i], |a| a[i]);
        match b {
            Operand::Scalar(s) => {
                for i in 0..o.len() {
                    o[i] = op.apply(get_a(i, o), s);
                }
            }
            Operand::PerChannel(v) => {
                for i in 0..o.len() {
                    o[i] = op.apply(get_a(i, o), v[i % c]);
                }
            }
            Operand::Tensor(t) => {
                let t = &t[base..][..o.len()];
                for i in 0..o.len() {
                    o[i] = op.apply(get_a(i, o), t[i]);
                }
            }
        }
    });
}

pub fn depth_to_space(
    x: &[f32],
    h: usize,
    w: usize,
    c: usize,
    b: usize,
    mode: DepthToSpaceMode,
    out: &mut [f32],
) {
    let _ = h;
    let oc = c / (b * b);
    let ow = w * b;
    out.par_chunks_mut(ow * oc)
        .enumerate()
        .for_each(|(y, orow)| {
            let (sy, i) = (y / b, y % b);
            let srow = &x[sy * w * c..][..w * c];
            match mode {
                // Output pixel (y, sx·b + j) is the run of `oc` channels at (i·b + j)·oc of
                // source pixel sx: one source pixel fills `b` consecutive output pixels.
                DepthToSpaceMode::Dcr => {
                    for (dst, src) in orow.chunks_exact_mut(b * oc).zip(srow.chunks_exact(c)) {
                        dst.copy_from_slice(&src[i * b * oc..][..b * oc]);
                    }
                }
                DepthToSpaceMode::Crd => {
                    for (dst, src) in orow.chunks_exact_mut(b * oc).zip(srow.chunks_exact(c)) {
                        for j in 0..b {
                            for ch in 0..oc {
                                dst[j * oc + ch] = src[ch * b * b + i * b + j];
                            }
                        }
                    }
                }
            }
        });
}

pub fn resize(
    x: &[f32],
    h: usize,
    w: usize,
    c: usize,
    f: usize,
    mode: ResizeMode,
    out: &mut [f32],
) {
    let ow = w * f / mode.down();
    // Source coordinate and weight with half-pixel centres, clamped at the edges (the same
    // arithmetic as the reference, so results are identical).
    let coord = |o: usize, n: usize| -> (usize, usize, f32) {
        let s = (o as f32 + 0.5) / f as f32 - 0.5;
        let s = s.max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, s - i0 as f32)
    };
    // The column coordinates are the same for every row: computed once.
    let cols: Vec<(usize, usize, f32)> = match mode {
        ResizeMode::Bilinear => (0..ow).map(|xx| coord(xx, w)).collect(),
        _ => Vec::new(),
    };
    let cubic_cols: Vec<([usize; 4], [f32; 4])> = match mode {
        ResizeMode::Bicubic { down } => (0..ow).map(|xx| cubic_taps(xx, w, f, down)).collect(),
        _ => Vec::new(),
    };
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(y, orow)| match mode {
            ResizeMode::Nearest => {
                let srow = &x[(y / f) * w * c..][..w * c];
                for (xx, dst) in orow.chunks_exact_mut(c).enumerate() {
                    dst.copy_from_slice(&srow[(xx / f) * c..][..c]);
                }
            }
            ResizeMode::Bicubic { down } => {
                // The same arithmetic as the reference: four rows along x, then along y.
                let (ys, wy) = cubic_taps(y, h, f, down);
                let rows = ys.map(|yy| &x[yy * w * c..][..w * c]);
                for (dst, (xs, wx)) in orow.chunks_exact_mut(c).zip(&cubic_cols) {
                    for (ch, d) in dst.iter_mut().enumerate() {
                        let row = |r: &[f32]| {
                            r[xs[0] * c + ch] * wx[0]
                                + r[xs[1] * c + ch] * wx[1]
                                + r[xs[2] * c + ch] * wx[2]
                                + r[xs[3] * c + ch] * wx[3]
                        };
                        *d = row(rows[0]) * wy[0]
                            + row(rows[1]) * wy[1]
                            + row(rows[2]) * wy[2]
                            + row(rows[3]) * wy[3];
                    }
                }
            }
            ResizeMode::Bilinear => {
                let (y0, y1, fy) = coord(y, h);
                let r0 = &x[y0 * w * c..][..w * c];
                let r1 = &x[y1 * w * c..][..w * c];
                for (dst, &(x0, x1, fx)) in orow.chunks_exact_mut(c).zip(&cols) {
                    let (a, b) = (&r0[x0 * c..][..c], &r0[x1 * c..][..c]);
                    let (cc, d) = (&r1[x0 * c..][..c], &r1[x1 * c..][..c]);
                    for ch in 0..c {
                        let top = a[ch] + (b[ch] - a[ch]) * fx;
                        let bot = cc[ch] + (d[ch] - cc[ch]) * fx;
                        dst[ch] = top + (bot - top) * fy;
                    }
                }
            }
        });
}

/// Concatenates `parts` (each `(data, channels)`) along channels for `w`-pixel rows.
pub fn concat(parts: &[(&[f32], usize)], w: usize, out: &mut [f32]) {
    let total: usize = parts.iter().map(|p| p.1).sum();
    if total == 0 {
        return;
    }
    out.par_chunks_mut(w * total)
        .enumerate()
        .for_each(|(y, orow)| {
            for px in 0..w {
                let mut o = px * total;
                for (data, c) in parts {
                    orow[o..o + c].copy_from_slice(&data[(y * w + px) * c..][..*c]);
                    o += c;
                }
            }
        });
}

/// Replicates the edges of (or crops) an `h × w × c` image into the `oh × ow × c` `out`.
pub fn border(x: &[f32], h: usize, w: usize, c: usize, b: &Border, out: &mut [f32], ow: usize) {
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(y, orow)| {
            let srow = &x[Border::source(y, b.top, h) * w * c..][..w * c];
            for (xx, dst) in orow.chunks_exact_mut(c).enumerate() {
                dst.copy_from_slice(&srow[Border::source(xx, b.left, w) * c..][..c]);
            }
        });
}

/// Rows per partial sum of [`channel_means`]: fixed, so the sums do not depend on the
/// number of threads.
const MEAN_ROWS: usize = 16;

/// The mean of each channel of an `h × w × c` image, summed in `f64`.
pub fn channel_means(x: &[f32], w: usize, c: usize) -> Vec<f32> {
    let pixels = x.len() / c.max(1);
    let partial: Vec<Vec<f64>> = x
        .par_chunks(MEAN_ROWS * w * c)
        .map(|rows| {
            let mut s = vec![0.0f64; c];
            for px in rows.chunks_exact(c) {
                for (a, &v) in s.iter_mut().zip(px) {
                    *a += f64::from(v);
                }
            }
            s
        })
        .collect();
    (0..c)
        .map(|ch| (partial.iter().map(|s| s[ch]).sum::<f64>() / pixels.max(1) as f64) as f32)
        .collect()
}

/// `out = x · gates(means(x))` per channel; in place when `src` is `None`.
pub fn squeeze_excite(
    se: &SqueezeExcite,
    out: &mut [f32],
    src: Option<&[f32]>,
    w: usize,
    c: usize,
) {
    let gates = se.gates(&channel_means(src.unwrap_or(&*out), w, c));
    binary(BinaryOp::Mul, out, src, Operand::PerChannel(&gates), c);
}
