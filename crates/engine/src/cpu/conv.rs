//! Convolution: weight packing at `prepare`, the choice of algorithm, the fused epilogue and
//! the direct (implicit-GEMM) kernel used for every shape Winograd does not take.
//!
//! The direct kernel computes one output row at a time. The `kh` input rows it needs are
//! copied, zero-padded left and right, into a per-thread band (or read in place when no
//! padding is involved), so a kernel row of `kw · cin` floats is contiguous and becomes one
//! reduction run of the micro-kernel (see [`super::gemm`]). Weights are packed per group as
//! `[panel of 16 couts][ky][kx][ci][16]`, zero beyond `cout`; a block of
//! `mr` pixels × `np` panels accumulates in registers and goes through the epilogue straight
//! into the NHWC output row.

use rayon::prelude::*;
use superres_graph::Conv2d;

use super::epilogue::Epilogue;
use super::gemm::{self, ALayout, Block, Isa};
pub use super::kernel::Skip;
use super::kernel::{SendPtr, Shape, Spec, with_scratch};
use super::pixconv::PixelConv;
use super::winograd::{Tile, Winograd};

/// A convolution prepared for one instruction set.
pub struct ConvKernel {
    pub spec: Spec,
    pub algo: Algo,
}

/// A kernel is its [`Spec`] plus the algorithm's packed weights.
impl std::ops::Deref for ConvKernel {
    type Target = Spec;

    fn deref(&self) -> &Spec {
        &self.spec
    }
}

pub enum Algo {
    Direct(Direct),
    Pixel(PixelConv),
    Winograd(Winograd),
}

/// How the caller wants convolutions computed (tests force each path).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvAlgo {
    /// Winograd for 3×3 stride-1 convolutions with at least 16 input and output channels
    /// (F(6,3) from `winograd::F6_MIN_CHANNELS` channels up,
    /// F(4,3) below), the direct or pixel-vectorised kernel otherwise.
    #[default]
    Auto,
    /// The direct kernel for everything.
    Direct,
    /// Winograd wherever the shape allows it (3×3, stride 1, no dilation, one group), with
    /// the tile [`Auto`](ConvAlgo::Auto) would pick.
    Winograd,
    /// Winograd F(4,3) wherever the shape allows it.
    WinogradF4,
    /// Winograd F(6,3) wherever the shape allows it.
    WinogradF6,
}

impl ConvKernel {
    pub fn new(c: &Conv2d, isa: Isa, algo: ConvAlgo) -> Self {
        let shape = Shape {
            kh: c.kh,
            kw: c.kw,
            cin: c.cin,
            cout: c.cout,
            groups: c.groups,
            stride: c.stride.0,
            dilation: c.dilation,
            padding: c.padding,
        };
        let winograd_shape =
            c.kh == 3 && c.kw == 3 && c.stride == (1, 1) && c.dilation == (1, 1) && c.groups == 1;
        let auto_tile = Tile::for_channels(c.cin, c.cout);
        let tile = match algo {
            ConvAlgo::Auto if c.cin >= 16 && c.cout >= 16 => Some(auto_tile),
            ConvAlgo::Auto | ConvAlgo::Direct => None,
            ConvAlgo::Winograd => Some(auto_tile),
            ConvAlgo::WinogradF4 => Some(Tile::F4),
            ConvAlgo::WinogradF6 => Some(Tile::F6),
        }
        .filter(|_| winograd_shape);
        let algo = if let Some(tile) = tile {
            Algo::Winograd(Winograd::new(c, tile))
        } else if PixelConv::applies(c, isa) {
            Algo::Pixel(PixelConv::new(c))
        } else {
            Algo::Direct(Direct::new(c))
        };
        ConvKernel {
            spec: Spec {
                shape,
                epilogue: Epilogue::new(&c.epilogue, c.cout),
                isa,
            },
            algo,
        }
    }

    /// Computes the convolution of `x` (`h × w × cin`) into `out` (`oh × ow × cout`).
    /// `skip`, with `out`'s shape, is the residual input; it may be `out` itself (`None`
    /// then, with `skip_in_out` set).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        oh: usize,
        ow: usize,
        skip: Skip,
    ) {
        match &self.algo {
            Algo::Direct(d) => d.run(&self.spec, x, h, w, out, oh, ow, skip),
            Algo::Pixel(d) => d.run(&self.spec, x, h, w, out, oh, ow, skip),
            Algo::Winograd(wg) => {
                wg.run(&self.spec, &[(x, self.shape.cin)], h, w, out, oh, ow, skip)
            }
        }
    }

    /// Whether [`ConvKernel::run_parts`] reads an input of parts with these channel counts
    /// where they are (Winograd, with every part but the last whole 16-channel groups);
    /// otherwise it makes the concatenated copy first.
    pub fn reads_parts(&self, channels: &[usize]) -> bool {
        match &self.algo {
            Algo::Winograd(wg) => wg.reads_parts(channels),
            Algo::Direct(_) | Algo::Pixel(_) => false,
        }
    }

    /// [`ConvKernel::run`] on the channel-wise concatenation of `parts` (`(values,
    /// channels)`, each `h × w`).
    #[allow(clippy::too_many_arguments)]
    pub fn run_parts(
        &self,
        parts: &[(&[f32], usize)],
        h: usize,
        w: usize,
        out: &mut [f32],
        oh: usize,
        ow: usize,
        skip: Skip,
    ) {
        let channels: Vec<usize> = parts.iter().map(|p| p.1).collect();
        match &self.algo {
            Algo::Winograd(wg) if wg.reads_parts(&channels) => {
                wg.run(&self.spec, parts, h, w, out, oh, ow, skip)
            }
            _ => {
                let mut x = vec![0.0; h * w * self.shape.cin];
                super::ops::concat(parts, w, &mut x);
                self.run(&x, h, w, out, oh, ow, skip)
            }
        }
    }
}

/// Packed weights of the direct kernel.
pub struct Direct {
    /// `[group][panel][ky][kx][ci][16]`.
    packed: Vec<f32>,
    panels: usize,
    k: usize,
}

impl Direct {
    fn new(c: &Conv2d) -> Self {
        let gin = c.cin / c.groups;
        let gout = c.cout / c.groups;
        let panels = gout.div_ceil(16);
        let k = c.kh * c.kw * gin;
        let mut packed = vec![0.0f32; c.groups * panels * k * 16];
        for g in 0..c.groups {
            for co in 0..gout {
                let (p, l) = (co / 16, co % 16);
                for kk in 0..k {
                    // HWIO: kk = (ky * kw + kx) * gin + ci.
                    packed[((g * panels + p) * k + kk) * 16 + l] =
                        c.weights[kk * c.cout + g * gout + co];
                }
            }
        }
        Direct { packed, panels, k }
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        ck: &Spec,
        x: &[f32],
        h: usize,
        w: usize,
        out: &mut [f32],
        oh: usize,
        ow: usize,
        skip: Skip,
    ) {
        let s = &ck.shape;
        let cin = s.cin;
        let cout = s.cout;
        let (dh, dw) = s.dilation;
        let pad = s.padding;
        let wp = w + pad.left + pad.right;
        let band_len = s.kh * wp * cin;
        let isa = ck.isa;
        let gin = cin / s.groups;
        let gout = cout / s.groups;
        let contiguous_rows = s.groups == 1 && dw == 1;
        let skip_ptr = match skip {
            Skip::Tensor(t) => Some(SendPtr(t.as_ptr() as *mut f32)),
            _ => None,
        };
        let in_place = matches!(skip, Skip::InOutput);
        let row = |oy: usize, orow: &mut [f32]| {
            let iy0 = (oy * s.stride) as isize - pad.top as isize;
            let rows_inside = iy0 >= 0 && iy0 as usize + (s.kh - 1) * dh < h;
            let direct = rows_inside && pad.left == 0 && pad.right == 0;
            with_scratch(if direct { 0 } else { band_len }, |band| {
                let (a, row_step) = if direct {
                    (x[iy0 as usize * w * cin..].as_ptr(), dh * w * cin)
                } else {
                    for ky in 0..s.kh {
                        let dst = &mut band[ky * wp * cin..][..wp * cin];
                        let iy = iy0 + (ky * dh) as isize;
                        if iy < 0 || iy >= h as isize {
                            dst.fill(0.0);
                        } else {
                            dst[..pad.left * cin].fill(0.0);
                            dst[(pad.left + w) * cin..].fill(0.0);
                            dst[pad.left * cin..][..w * cin]
                                .copy_from_slice(&x[iy as usize * w * cin..][..w * cin]);
                        }
                    }
                    (band.as_ptr(), wp * cin)
                };
                let mut runs = Vec::with_capacity(s.kh * s.kw);
                let run_len = if contiguous_rows {
                    runs.extend((0..s.kh).map(|ky| ky * row_step));
                    s.kw * gin
                } else {
                    for ky in 0..s.kh {
                        runs.extend((0..s.kw).map(|kx| ky * row_step + kx * dw * cin));
                    }
                    gin
                };
                let runs = &runs[..];
                let skip_row = skip_ptr.map(|p| {
                    // SAFETY: the skip tensor has the output's shape; this is row `oy`.
                    unsafe { std::slice::from_raw_parts(p.0.add(oy * ow * cout), ow * cout) }
                });
                let np_max = isa.max_np();
                let mut tmp = [0.0f32; 14 * 32];
                for g in 0..s.groups {
                    let mut p0 = 0;
                    while p0 < self.panels {
                        let np = np_max.min(self.panels - p0);
                        let mr = isa.mr(np);
                        let mut ox = 0;
                        let c_lo = p0 * 16;
                        let c_hi = ((p0 + np) * 16).min(gout);
                        let c0 = g * gout + c_lo;
                        while ox < ow {
                            let m = mr.min(ow - ox);
                            let dst = orow[ox * cout + c0..].as_mut_ptr();
                            let skip = if in_place {
                                Some((dst as *const f32, cout))
                            } else {
                                skip_row.map(|r| (r[ox * cout + c0..].as_ptr(), cout))
                            };
                            let out = ck.epilogue.output(c0, c_hi - c_lo, skip);
                            let blk = Block {
                                runs,
                                run_len,
                                // SAFETY: pixel `ox` of the band/input row, group `g`.
                                a: unsafe { a.add(ox * s.stride * cin + g * gin) },
                                a_layout: ALayout::Strided(s.stride * cin),
                                // SAFETY: panel `p0` of group `g` lies inside `packed`.
                                b: unsafe {
                                    self.packed
                                        .as_ptr()
                                        .add((g * self.panels + p0) * self.k * 16)
                                },
                                b_ps: self.k * 16,
                                c: tmp.as_mut_ptr(),
                                c_rs: np * 16,
                            };
                            // SAFETY: rows `ox..ox+m` read pixels up to
                            // `(ow-1)*stride + (kw-1)*dw` of a row of `wp` (band) or `w`
                            // (in place, no padding) pixels, which the output size
                            // guarantees; `np` panels of `k` rows exist; `tmp` holds
                            // `m * np * 16` floats.
                            unsafe { gemm::block(isa, m, np, &blk) };
                            if let Some(o) = &out {
                                // SAFETY: `tmp` holds the block's `m × np × 16` sums; pixels
                                // `ox..ox+m` of the output row (and of the skip) hold
                                // channels `c0..c0 + c_hi - c_lo` at a stride of `cout`.
                                unsafe {
                                    gemm::epilogue_block(isa, o, tmp.as_ptr(), m, np, dst, cout)
                                };
                            } else {
                                for i in 0..m {
                                    let base = (ox + i) * cout + g * gout;
                                    let o = &mut orow[base + c_lo..base + c_hi];
                                    let acc = &tmp[i * np * 16..];
                                    if in_place {
                                        let mut sk = [0.0f32; 32];
                                        sk[..o.len()].copy_from_slice(o);
                                        ck.epilogue.store_isa(isa, acc, c0, o, Some(&sk[..]));
                                    } else {
                                        let sk = skip_row.map(|r| &r[base + c_lo..base + c_hi]);
                                        ck.epilogue.store_isa(isa, acc, c0, o, sk);
                                    }
                                }
                            }
                            ox += m;
                        }
                        p0 += np;
                    }
                }
            });
        };
        out[..oh * ow * cout]
            .par_chunks_mut(ow * cout)
            .enumerate()
            .for_each(|(oy, orow)| row(oy, orow));
    }
}
