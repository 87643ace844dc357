//! A plain interpreter of the IR: every operator written in the most direct way.
//!
//! It is the scalar twin of the fast CPU kernels (tests compare them on random inputs) and
//! the definition of what each operator computes. Convolutions accumulate each output value
//! in `f32` in `(ky, kx, ci)` order; rows are spread over rayon's pool so that tests on real
//! models stay quick.

use rayon::prelude::*;
use superres_graph::{
    Activation, BinaryOp, Border, Conv2d, DepthToSpaceMode, Graph, Op, ResizeMode, Tensor, UnaryOp,
    cubic_taps,
};

use crate::{EngineError, check_input};

/// Runs `graph` on `input` (`[H, W, C]`) and returns its outputs.
pub fn run(graph: &Graph, input: &Tensor) -> Result<Vec<Tensor>, EngineError> {
    check_input(graph, input)?;
    let users = graph.users();
    let mut remaining: Vec<usize> = users.iter().map(Vec::len).collect();
    let mut values: Vec<Option<Tensor>> = vec![None; graph.nodes.len()];
    for (i, node) in graph.nodes.iter().enumerate() {
        let arg = |k: usize| -> &Tensor {
            values[node.inputs[k].0]
                .as_ref()
                .expect("inputs are computed before their users")
        };
        let out = match &node.op {
            Op::Input { .. } => input.clone(),
            Op::Const(t) => t.clone(),
            Op::Conv2d(c) => {
                let skip = (node.inputs.len() > 1).then(|| arg(1));
                conv2d(c, arg(0), skip).ok_or_else(|| {
                    let (h, w, _) = arg(0).hwc().unwrap_or_default();
                    EngineError::TooSmall {
                        h,
                        w,
                        node: node.name.clone(),
                    }
                })?
            }
            Op::Binary(op) => binary(*op, arg(0), arg(1)),
            Op::Unary(op) => map(arg(0), |x, _| match op {
                UnaryOp::Abs => x.abs(),
                UnaryOp::Neg => -x,
            }),
            Op::Activation(a) => map(arg(0), |x, c| a.apply(x, c)),
            Op::DepthToSpace { block, mode } => depth_to_space(arg(0), *block, *mode),
            Op::Resize { factor, mode } => resize(arg(0), *factor, *mode),
            Op::Concat => {
                let parts: Vec<&Tensor> = (0..node.inputs.len()).map(arg).collect();
                concat(&parts)
            }
            Op::Border(b) => border(arg(0), b).ok_or_else(|| {
                let (h, w, _) = arg(0).hwc().unwrap_or_default();
                EngineError::TooSmall {
                    h,
                    w,
                    node: node.name.clone(),
                }
            })?,
            Op::SqueezeExcite(se) => {
                let x = arg(0);
                let (h, w, c) = x.hwc().expect("image");
                let mut sums = vec![0.0f64; c];
                for (i, &v) in x.data().iter().enumerate() {
                    sums[i % c] += f64::from(v);
                }
                let means: Vec<f32> = sums.iter().map(|s| (s / (h * w) as f64) as f32).collect();
                let gates = se.gates(&means);
                map(x, |v, ch| v * gates[ch])
            }
        };
        values[i] = Some(out);
        // Free inputs nobody needs any more: keeps peak memory at the live set.
        for v in &node.inputs {
            remaining[v.0] -= 1;
            if remaining[v.0] == 0 {
                values[v.0] = None;
            }
        }
    }
    Ok(graph
        .outputs
        .iter()
        .map(|(_, v)| values[v.0].clone().expect("outputs are kept alive"))
        .collect())
}

fn map(x: &Tensor, f: impl Fn(f32, usize) -> f32 + Sync) -> Tensor {
    let (h, w, c) = x.hwc().expect("image");
    let data = x
        .data()
        .par_chunks(c.max(1))
        .flat_map_iter(|px| {
            px.iter()
                .enumerate()
                .map(|(ch, &v)| f(v, ch))
                .collect::<Vec<_>>()
        })
        .collect();
    Tensor::image(h, w, c, data)
}

/// `a op b` with `b` a scalar, a per-channel vector or a tensor of `a`'s shape.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Tensor {
    let (h, w, c) = a.hwc().expect("image");
    let bd = b.data();
    let data = if bd.len() == a.len() {
        a.data()
            .iter()
            .zip(bd)
            .map(|(&x, &y)| op.apply(x, y))
            .collect()
    } else if bd.len() == 1 {
        a.data().iter().map(|&x| op.apply(x, bd[0])).collect()
    } else {
        a.data()
            .iter()
            .enumerate()
            .map(|(i, &x)| op.apply(x, bd[i % c]))
            .collect()
    };
    Tensor::image(h, w, c, data)
}

/// A direct convolution; `None` if the kernel does not fit the padded input.
pub fn conv2d(c: &Conv2d, x: &Tensor, skip: Option<&Tensor>) -> Option<Tensor> {
    let (h, w, cin) = x.hwc()?;
    debug_assert_eq!(cin, c.cin);
    let (oh, ow) = c.output_size(h, w)?;
    let cout = c.cout;
    let gin = c.cin / c.groups;
    let gout = c.cout / c.groups;
    let xd = x.data();
    let mut out = vec![0.0f32; oh * ow * cout];
    out.par_chunks_mut(ow * cout)
        .enumerate()
        .for_each(|(oy, row)| {
            let mut acc = vec![0.0f32; cout];
            for ox in 0..ow {
                acc.iter_mut().for_each(|a| *a = 0.0);
                for ky in 0..c.kh {
                    let iy =
                        (oy * c.stride.0 + ky * c.dilation.0) as isize - c.padding.top as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..c.kw {
                        let ix = (ox * c.stride.1 + kx * c.dilation.1) as isize
                            - c.padding.left as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let px = &xd[(iy as usize * w + ix as usize) * cin..][..cin];
                        let wk = &c.weights[(ky * c.kw + kx) * gin * cout..][..gin * cout];
                        for g in 0..c.groups {
                            for ci in 0..gin {
                                let v = px[g * gin + ci];
                                let wrow = &wk[ci * cout + g * gout..][..gout];
                                for (a, &wv) in acc[g * gout..][..gout].iter_mut().zip(wrow) {
                                    *a += v * wv;
                                }
                            }
                        }
                    }
                }
                let o = &mut row[ox * cout..][..cout];
                let s = skip.map(|s| &s.data()[(oy * ow + ox) * cout..][..cout]);
                for co in 0..cout {
                    o[co] = c.epilogue.apply(acc[co], co, s.map_or(0.0, |s| s[co]));
                }
            }
        });
    Some(Tensor::image(oh, ow, cout, out))
}

pub fn depth_to_space(x: &Tensor, b: usize, mode: DepthToSpaceMode) -> Tensor {
    let (h, w, c) = x.hwc().expect("image");
    let oc = c / (b * b);
    let (oh, ow) = (h * b, w * b);
    let xd = x.data();
    let mut out = vec![0.0f32; oh * ow * oc];
    for y in 0..oh {
        for xx in 0..ow {
            let (sy, i, sx, j) = (y / b, y % b, xx / b, xx % b);
            let src = &xd[(sy * w + sx) * c..][..c];
            let dst = &mut out[(y * ow + xx) * oc..][..oc];
            for (ch, d) in dst.iter_mut().enumerate() {
                *d = match mode {
                    DepthToSpaceMode::Dcr => src[(i * b + j) * oc + ch],
                    DepthToSpaceMode::Crd => src[ch * b * b + i * b + j],
                };
            }
        }
    }
    Tensor::image(oh, ow, oc, out)
}

pub fn resize(x: &Tensor, f: usize, mode: ResizeMode) -> Tensor {
    let (h, w, c) = x.hwc().expect("image");
    let d = mode.down();
    let (oh, ow) = (h * f / d, w * f / d);
    let xd = x.data();
    let mut out = vec![0.0f32; oh * ow * c];
    // Source coordinate and weight with half-pixel centres, clamped at the edges.
    let coord = |o: usize, n: usize| -> (usize, usize, f32) {
        let s = (o as f32 + 0.5) / f as f32 - 0.5;
        let s = s.max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, s - i0 as f32)
    };
    for y in 0..oh {
        for xx in 0..ow {
            let dst = &mut out[(y * ow + xx) * c..][..c];
            match mode {
                ResizeMode::Nearest => {
                    dst.copy_from_slice(&xd[((y / f) * w + xx / f) * c..][..c]);
                }
                ResizeMode::Bicubic { down } => {
                    // Four rows resized along x, then those four combined along y.
                    let (ys, wy) = cubic_taps(y, h, f, down);
                    let (xs, wx) = cubic_taps(xx, w, f, down);
                    for (ch, d) in dst.iter_mut().enumerate() {
                        let p = |yy: usize, xq: usize| xd[(yy * w + xq) * c + ch];
                        let row = |yy: usize| {
                            p(yy, xs[0]) * wx[0]
                                + p(yy, xs[1]) * wx[1]
                                + p(yy, xs[2]) * wx[2]
                                + p(yy, xs[3]) * wx[3]
                        };
                        *d = row(ys[0]) * wy[0]
                            + row(ys[1]) * wy[1]
                            + row(ys[2]) * wy[2]
                            + row(ys[3]) * wy[3];
                    }
                }
                ResizeMode::Bilinear => {
                    let (y0, y1, fy) = coord(y, h);
                    let (x0, x1, fx) = coord(xx, w);
                    for (ch, d) in dst.iter_mut().enumerate() {
                        let p = |yy: usize, xq: usize| xd[(yy * w + xq) * c + ch];
                        let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * fx;
                        let bot = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * fx;
                        *d = top + (bot - top) * fy;
                    }
                }
            }
        }
    }
    Tensor::image(oh, ow, c, out)
}

pub fn concat(parts: &[&Tensor]) -> Tensor {
    let (h, w, _) = parts[0].hwc().expect("image");
    let total: usize = parts.iter().map(|p| p.hwc().map_or(0, |s| s.2)).sum();
    let mut out = Vec::with_capacity(h * w * total);
    for px in 0..h * w {
        for p in parts {
            let c = p.hwc().map_or(0, |s| s.2);
            out.extend_from_slice(&p.data()[px * c..][..c]);
        }
    }
    Tensor::image(h, w, total, out)
}

/// Applies an activation to every value of an image (exposed for kernel tests).
pub fn activation(x: &Tensor, a: &Activation) -> Tensor {
    map(x, |v, c| a.apply(v, c))
}

/// Edge replication and cropping; `None` when nothing is left.
fn border(x: &Tensor, b: &Border) -> Option<Tensor> {
    let (h, w, c) = x.hwc().expect("image");
    let (oh, ow) = b.output_size(h, w)?;
    let mut data = Vec::with_capacity(oh * ow * c);
    for y in 0..oh {
        let sy = Border::source(y, b.top, h);
        for xx in 0..ow {
            let sx = Border::source(xx, b.left, w);
            data.extend_from_slice(&x.data()[(sy * w + sx) * c..][..c]);
        }
    }
    Some(Tensor::image(oh, ow, c, data))
}
