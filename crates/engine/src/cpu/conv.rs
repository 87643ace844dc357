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

use std::cell::RefCell;

use rayon::prelude::*;
use superres_graph::{Activation, Conv2d, Padding};

use super::gemm::{self, ALayout, Block, Isa, VecAct};
use super::pixconv::PixelConv;
use super::winograd::{Tile, Winograd};

/// The epilogue of a convolution in the form the kernels apply it: per-channel vectors,
/// PReLU slopes broadcast, in the order of [`superres_graph::Epilogue::apply`].
#[derive(Clone, Debug)]
pub struct Epilogue {
    pub bias: Option<Vec<f32>>,
    pub activation: Option<Act>,
    pub residual: Option<f32>,
    /// The bias and PReLU slopes again, zero-padded by 32 values, for the micro-kernels
    /// (which read whole panels of 16 channels).
    bias_padded: Option<Vec<f32>>,
    slopes_padded: Option<Vec<f32>>,
}

/// An activation with its parameters expanded for vector code.
#[derive(Clone, Debug)]
pub enum Act {
    Relu,
    Leaky(f32),
    PRelu(Vec<f32>),
    /// [`tanh`]: branch-free, so a block of channels is computed with vector instructions.
    Tanh,
    Other(Activation),
}

/// `tanh(x)` as a rational function of degree 13/6 on `[-7.905, 7.905]`, clamped outside
/// (where `f32` `tanh` is 1 within half an ulp), `x` itself below `4e-4`. Eigen's
/// single-precision coefficients; the largest error against `f64` `tanh` is 3.0e-7 relative
/// (a few ulp, as accurate near 0 as near ±1; test `fast_tanh_matches_f64`), far below the
/// rounding error of the sums the convolutions feed it. Branch-free, so loops over it vectorise.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.90531110763549805;
    let c = x.clamp(-CLAMP, CLAMP);
    let x2 = c * c;
    // Plain multiply-adds: `mul_add` would call a library `fma` where FMA is not enabled.
    let mut p = -2.76076847742355e-16f32;
    p = p * x2 + 2.00018790482477e-13;
    p = p * x2 + -8.60467152213735e-11;
    p = p * x2 + 5.12229709037114e-08;
    p = p * x2 + 1.48572235717979e-05;
    p = p * x2 + 6.37261928875436e-04;
    p = p * x2 + 4.89352455891786e-03;
    p *= c;
    let mut q = 1.19825839466702e-06f32;
    q = q * x2 + 1.18534705686654e-04;
    q = q * x2 + 2.26843463243900e-03;
    q = q * x2 + 4.89352518554385e-03;
    if x.abs() < 4e-4 { x } else { p / q }
}

impl Act {
    pub fn new(a: &Activation, channels: usize) -> Act {
        match a {
            Activation::Relu => Act::Relu,
            Activation::LeakyRelu(s) => Act::Leaky(*s),
            Activation::PRelu(s) if s.len() == 1 => Act::Leaky(s[0]),
            Activation::PRelu(s) => Act::PRelu(s[..channels.min(s.len())].to_vec()),
            Activation::Tanh => Act::Tanh,
            other => Act::Other(other.clone()),
        }
    }

    /// Applies the activation to `y`, whose first value is channel `c0`.
    #[inline(always)]
    pub fn apply(&self, y: &mut [f32], c0: usize) {
        match self {
            Act::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Leaky(a) => y
                .iter_mut()
                .for_each(|v| *v = if *v > 0.0 { *v } else { a * *v }),
            Act::PRelu(a) => y
                .iter_mut()
                .zip(&a[c0..])
                .for_each(|(v, a)| *v = if *v > 0.0 { *v } else { a * *v }),
            Act::Tanh => y.iter_mut().for_each(|v| *v = tanh(*v)),
            Act::Other(a) => y
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = a.apply(*v, c0 + i)),
        }
    }
}

impl Epilogue {
    pub fn new(e: &superres_graph::Epilogue, channels: usize) -> Self {
        let activation = e.activation.as_ref().map(|a| Act::new(a, channels));
        let pad = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(channels + 32, 0.0);
            p
        };
        Epilogue {
            bias_padded: e.bias.as_deref().map(pad),
            slopes_padded: match &activation {
                Some(Act::PRelu(a)) => Some(pad(a)),
                _ => None,
            },
            bias: e.bias.clone(),
            activation,
            residual: e.residual,
        }
    }

    /// This epilogue for a micro-kernel block whose first channel is `c0` and which stores
    /// `valid` channels per row; `skip` is the block's residual input (row stride `skip_rs`).
    /// `None` when the activation has no vector form (the caller then stores the raw sums
    /// and applies [`Epilogue::store`]).
    pub fn output(
        &self,
        c0: usize,
        valid: usize,
        skip: Option<(*const f32, usize)>,
    ) -> Option<gemm::Output> {
        let act = match &self.activation {
            None => VecAct::None,
            Some(Act::Relu) => VecAct::Relu,
            Some(Act::Leaky(a)) => VecAct::Leaky(*a),
            Some(Act::PRelu(_)) => VecAct::PRelu(self.slopes_padded.as_ref()?[c0..].as_ptr()),
            Some(Act::Tanh) => VecAct::Tanh,
            Some(Act::Other(_)) => return None,
        };
        Some(gemm::Output {
            bias: self.bias_padded.as_ref().map(|b| b[c0..].as_ptr()),
            act,
            residual: match (self.residual, skip) {
                (Some(s), Some((p, rs))) => Some((s, p, rs)),
                _ => None,
            },
            valid,
        })
    }

    /// `out = epilogue(acc)` for the channels `c0..c0 + out.len()` of one pixel; `skip` holds
    /// the residual input at the same channels (it may be a copy of `out`'s old contents).
    #[inline(always)]
    pub fn store(&self, acc: &[f32], c0: usize, out: &mut [f32], skip: Option<&[f32]>) {
        let n = out.len();
        let mut off = 0;
        while off < n {
            let m = 16.min(n - off);
            let sk = skip.map(|s| &s[off..off + m]);
            if m == 16 {
                // Whole vectors: computed in registers, stored once.
                let mut y: [f32; 16] = acc[off..off + 16].try_into().expect("16 lanes");
                self.apply(&mut y, c0 + off, sk);
                out[off..off + 16].copy_from_slice(&y);
            } else {
                let mut y = [0.0f32; 16];
                y[..m].copy_from_slice(&acc[off..off + m]);
                self.apply(&mut y[..m], c0 + off, sk);
                out[off..off + m].copy_from_slice(&y[..m]);
            }
            off += m;
        }
    }

    /// [`Epilogue::store`] compiled for `isa`, for callers outside the kernels' own
    /// `target_feature` functions (an activation such as `tanh` then runs 16 lanes wide).
    #[inline]
    pub fn store_isa(
        &self,
        isa: Isa,
        acc: &[f32],
        c0: usize,
        out: &mut [f32],
        skip: Option<&[f32]>,
    ) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the backend only selects AVX-512 when the processor has it.
            Isa::Avx512 => unsafe { self.store_avx512(acc, c0, out, skip) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the backend only selects AVX2 when the processor has AVX2 and FMA.
            Isa::Avx2 => unsafe { self.store_avx2(acc, c0, out, skip) },
            _ => self.store(acc, c0, out, skip),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_avx512(&self, acc: &[f32], c0: usize, out: &mut [f32], skip: Option<&[f32]>) {
        self.store(acc, c0, out, skip)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_avx2(&self, acc: &[f32], c0: usize, out: &mut [f32], skip: Option<&[f32]>) {
        self.store(acc, c0, out, skip)
    }

    /// Bias and activation of channel `c` applied to `y`, values of that one channel (the
    /// pixel-vectorised kernel's layout); no residual. Compiled for `isa`.
    #[inline]
    pub fn apply_channel_isa(&self, isa: Isa, y: &mut [f32], c: usize) {
        debug_assert!(self.residual.is_none());
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the backend only selects AVX-512 when the processor has it.
            Isa::Avx512 => unsafe { self.apply_channel_avx512(y, c) },
            _ => self.apply_channel(y, c),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn apply_channel_avx512(&self, y: &mut [f32], c: usize) {
        self.apply_channel(y, c)
    }

    #[inline(always)]
    fn apply_channel(&self, y: &mut [f32], c: usize) {
        if let Some(b) = &self.bias {
            let b = b[c];
            y.iter_mut().for_each(|v| *v += b);
        }
        match &self.activation {
            None => {}
            Some(Act::Relu) => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Some(Act::Leaky(a)) => y
                .iter_mut()
                .for_each(|v| *v = if *v > 0.0 { *v } else { a * *v }),
            Some(Act::PRelu(a)) => {
                let a = a[c];
                y.iter_mut()
                    .for_each(|v| *v = if *v > 0.0 { *v } else { a * *v })
            }
            Some(Act::Tanh) => y.iter_mut().for_each(|v| *v = tanh(*v)),
            Some(Act::Other(a)) => y.iter_mut().for_each(|v| *v = a.apply(*v, c)),
        }
    }

    #[inline(always)]
    fn apply(&self, y: &mut [f32], c0: usize, skip: Option<&[f32]>) {
        let n = y.len();
        if let Some(b) = &self.bias {
            y.iter_mut().zip(&b[c0..c0 + n]).for_each(|(y, b)| *y += b);
        }
        if let Some(a) = &self.activation {
            a.apply(y, c0);
        }
        if let (Some(s), Some(skip)) = (self.residual, skip) {
            if s == 1.0 {
                y.iter_mut().zip(skip).for_each(|(y, k)| *y += k);
            } else {
                y.iter_mut().zip(skip).for_each(|(y, k)| *y = k + s * *y);
            }
        }
    }
}

/// The geometry of a convolution, without weights.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub kh: usize,
    pub kw: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub stride: usize,
    pub dilation: (usize, usize),
    pub padding: Padding,
}

/// A convolution prepared for one instruction set.
pub struct ConvKernel {
    pub shape: Shape,
    pub epilogue: Epilogue,
    pub isa: Isa,
    pub algo: Algo,
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
            shape,
            epilogue: Epilogue::new(&c.epilogue, c.cout),
            isa,
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
            Algo::Direct(d) => d.run(self, x, h, w, out, oh, ow, skip),
            Algo::Pixel(d) => d.run(self, x, h, w, out, oh, ow, skip),
            Algo::Winograd(wg) => wg.run(self, x, h, w, out, oh, ow, skip),
        }
    }
}

/// Where the residual input of a convolution is.
#[derive(Clone, Copy)]
pub enum Skip<'a> {
    None,
    /// A separate tensor of the output's shape.
    Tensor(&'a [f32]),
    /// The output buffer already holds it (the convolution runs in place over its skip).
    InOutput,
}

/// A raw pointer that may cross threads; every user says why its accesses are disjoint.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: the pointer is only dereferenced on disjoint ranges (see each use).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

thread_local! {
    /// Per-thread scratch of the kernels (row bands, transform buffers).
    pub static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a per-thread zeroed-once scratch of at least `n` floats.
pub fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < n {
            s.resize(n, 0.0);
        }
        f(&mut s[..n])
    })
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
        ck: &ConvKernel,
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
