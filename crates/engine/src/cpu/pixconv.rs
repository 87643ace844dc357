//! The direct convolution for few output channels (ESPCN's 32→9, LapSRN's 64→4, FSRCNN's
//! 12→12), vectorised over pixels instead of output channels.
//!
//! The channel-vectorised kernel of [`super::conv`] fills a 16-lane vector with output
//! channels, so with 4 or 9 of them most lanes compute zeros. Here a vector holds 16
//! consecutive output pixels of one channel: each task walks a stripe of output rows and keeps
//! the `kh` input rows it needs transposed to `[ci][x]` (zero-padded left and right) in a small
//! ring, so each new output row transposes one input row. For every reduction step
//! `(ky, kx, ci)` a block of `PV` pixel vectors is loaded once (shifted by `kx`, unaligned)
//! and multiplied by `C` broadcast weights into `C × PV` accumulators. The block is then
//! transposed back to NHWC through a small buffer and goes through the epilogue.
//!
//! Worth it when the lanes saved outweigh the transposition: a kernel of at least 3×3, at
//! most 12 output channels and at least 16 input channels (see [`PixelConv::applies`]; with
//! fewer inputs, e.g. LapSRN's 1→4 or FSRCNN's 12→12, it measured no faster).

#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;
use superres_graph::Conv2d;

use super::gemm::Isa;
use super::kernel::{SendPtr, Skip, Spec, with_scratch};

/// Most output channels.
pub const MAX_C: usize = 12;
/// Most pixel vectors per block.
const MAX_PV: usize = 6;

/// Pixel vectors per full block for `c` output channels: at most 24 accumulators.
fn pv(c: usize) -> usize {
    (24 / c).min(MAX_PV)
}

/// Weights as `[ky][ci][kx][co]`, the broadcast order of the kernel: the `kx` loop innermost
/// re-reads the same transposed row shifted by one, from L1.
pub struct PixelConv {
    w: Vec<f32>,
}

impl PixelConv {
    pub fn applies(c: &Conv2d, isa: Isa) -> bool {
        isa != Isa::Avx2
            && c.groups == 1
            && c.stride == (1, 1)
            && c.dilation == (1, 1)
            && c.cout <= MAX_C
            && c.cin >= 16
            && c.kh * c.kw >= 9
    }

    pub fn new(c: &Conv2d) -> Self {
        let (kh, kw, cin, cout) = (c.kh, c.kw, c.cin, c.cout);
        let mut w = vec![0.0f32; kh * kw * cin * cout];
        for ky in 0..kh {
            for kx in 0..kw {
                for ci in 0..cin {
                    for co in 0..cout {
                        w[((ky * cin + ci) * kw + kx) * cout + co] =
                            c.weights[((ky * kw + kx) * cin + ci) * cout + co];
                    }
                }
            }
        }
        PixelConv { w }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run(
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
        let (cin, cout, kh, kw) = (s.cin, s.cout, s.kh, s.kw);
        let pad = s.padding;
        let owr = ow.div_ceil(16) * 16;
        // Row stride of a transposed channel: every block reads up to `owr + kw - 1`.
        let wt = owr + kw - 1;
        let slot = cin * wt;
        let threads = rayon::current_num_threads();
        let stripe = oh.div_ceil(4 * threads).max(1);
        let skip_ptr = match skip {
            Skip::Tensor(t) => Some(SendPtr(t.as_ptr() as *mut f32)),
            _ => None,
        };
        let in_place = matches!(skip, Skip::InOutput);
        let isa = ck.isa;
        let full_pv = pv(cout);
        out[..oh * ow * cout]
            .par_chunks_mut(stripe * ow * cout)
            .enumerate()
            .for_each(|(si, ostripe)| {
                let oy0 = si * stripe;
                let nrows = ostripe.len() / (ow * cout);
                with_scratch(kh * slot, |ring| {
                    // Input row held by each ring slot.
                    let mut held = vec![isize::MIN; kh];
                    let mut acc = [0.0f32; MAX_C * MAX_PV * 16];
                    let mut rows = vec![std::ptr::null::<f32>(); kh];
                    for r in 0..nrows {
                        let oy = oy0 + r;
                        for ky in 0..kh {
                            let iy = oy as isize + ky as isize - pad.top as isize;
                            let k = iy.rem_euclid(kh as isize) as usize;
                            let t = &mut ring[k * slot..][..slot];
                            if held[k] != iy {
                                held[k] = iy;
                                transpose_row(isa, x, h, w, cin, iy, pad.left, wt, t);
                            }
                            rows[ky] = t.as_ptr();
                        }
                        let orow = &mut ostripe[r * ow * cout..][..ow * cout];
                        let skip_row = skip_ptr.map(|p| {
                            // SAFETY: the skip tensor has the output's shape; this is row `oy`.
                            unsafe {
                                std::slice::from_raw_parts(p.0.add(oy * ow * cout), ow * cout)
                            }
                        });
                        let mut x0 = 0;
                        while x0 < ow {
                            let nv = if ow - x0 >= 16 * full_pv { full_pv } else { 1 };
                            let args = Args {
                                rows: &rows,
                                wt,
                                kw,
                                cin,
                                x0,
                                w: self.w.as_ptr(),
                                acc: acc.as_mut_ptr(),
                            };
                            // SAFETY: every row pointer is a ring slot of `cin` channels of
                            // `wt` floats; the block reads columns up to
                            // `x0 + 16·nv - 1 + kw - 1 < owr + kw - 1 = wt`; the weights hold
                            // `kh·kw·cin·cout` floats; `acc` holds `cout·nv·16` floats.
                            unsafe { block(isa, cout, nv, &args) };
                            let np = (16 * nv).min(ow - x0);
                            if ck.epilogue.residual.is_none() {
                                // Bias and activation per channel on whole vectors, then a
                                // strided store of each channel into the NHWC row.
                                for co in 0..cout {
                                    let yc = &mut acc[co * nv * 16..][..np];
                                    ck.epilogue.apply_channel_isa(isa, yc, co);
                                    for (p, &v) in yc.iter().enumerate() {
                                        orow[(x0 + p) * cout + co] = v;
                                    }
                                }
                                x0 += 16 * nv;
                                continue;
                            }
                            for p in 0..np {
                                let mut y = [0.0f32; MAX_C];
                                for co in 0..cout {
                                    y[co] = acc[co * nv * 16 + p];
                                }
                                let o = &mut orow[(x0 + p) * cout..][..cout];
                                if in_place {
                                    let mut sk = [0.0f32; MAX_C];
                                    sk[..cout].copy_from_slice(o);
                                    ck.epilogue.store_isa(isa, &y, 0, o, Some(&sk[..cout]));
                                } else {
                                    let sk = skip_row.map(|s| &s[(x0 + p) * cout..][..cout]);
                                    ck.epilogue.store_isa(isa, &y, 0, o, sk);
                                }
                            }
                            x0 += 16 * nv;
                        }
                    }
                });
            });
    }
}

/// Input row `iy` (zero outside the image) transposed into `t`: channel `ci` at
/// `t[ci·wt + pad_left + x]`, zero in the padding columns.
#[allow(clippy::too_many_arguments)]
pub fn transpose_row(
    isa: Isa,
    x: &[f32],
    h: usize,
    w: usize,
    cin: usize,
    iy: isize,
    pad_left: usize,
    wt: usize,
    t: &mut [f32],
) {
    if iy < 0 || iy >= h as isize {
        t.fill(0.0);
        return;
    }
    let src = &x[iy as usize * w * cin..][..w * cin];
    for ci in 0..cin {
        let d = &mut t[ci * wt..][..wt];
        d[..pad_left].fill(0.0);
        d[pad_left + w..].fill(0.0);
    }
    if cin == 1 {
        t[pad_left..pad_left + w].copy_from_slice(src);
        return;
    }
    let mut xx = 0;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && cin.is_multiple_of(16) {
        while xx + 16 <= w {
            for c0 in (0..cin).step_by(16) {
                // SAFETY: pixels `xx..xx+16`, channels `c0..c0+16` lie in `src`; the 16
                // destination runs `t[(c0+j)·wt + pad_left + xx..][..16]` lie in `t`
                // (`pad_left + w ≤ wt`, `c0 + 16 ≤ cin`).
                unsafe {
                    x86::transpose16(
                        src.as_ptr().add(xx * cin + c0),
                        cin,
                        t.as_mut_ptr().add(c0 * wt + pad_left + xx),
                        wt,
                    )
                };
            }
            xx += 16;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    // Eight pixels at a time: one contiguous read of `8·cin`, eight strided writes per channel.
    while xx + 8 <= w {
        let s = &src[xx * cin..][..8 * cin];
        for ci in 0..cin {
            let d = &mut t[ci * wt + pad_left + xx..][..8];
            for j in 0..8 {
                d[j] = s[j * cin + ci];
            }
        }
        xx += 8;
    }
    for xr in xx..w {
        for ci in 0..cin {
            t[ci * wt + pad_left + xr] = src[xr * cin + ci];
        }
    }
}

/// One block: `C` output channels × `nv` vectors of 16 pixels from `x0`.
struct Args<'a> {
    rows: &'a [*const f32],
    wt: usize,
    kw: usize,
    cin: usize,
    x0: usize,
    w: *const f32,
    /// `[C][nv·16]`.
    acc: *mut f32,
}

/// # Safety
/// See the call in [`PixelConv::run`]; the instruction set must be supported.
unsafe fn block(isa: Isa, c: usize, nv: usize, a: &Args) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from the caller.
        Isa::Avx512 => unsafe { x86::block_avx512(c, nv, a) },
        // SAFETY: forwarded from the caller.
        _ => unsafe { block_scalar(c, nv, a) },
    }
}

/// The portable twin: the same loop order over 16-lane arrays.
///
/// # Safety
/// See [`block`].
unsafe fn block_scalar(c: usize, nv: usize, a: &Args) {
    let mut acc = [[[0.0f32; 16]; MAX_PV]; MAX_C];
    let mut wp = a.w;
    // SAFETY (whole body): in bounds by the contract of `block`.
    unsafe {
        for &r in a.rows {
            for ci in 0..a.cin {
                for kx in 0..a.kw {
                    let xp = r.add(ci * a.wt + a.x0 + kx);
                    for v in 0..nv {
                        let xv = std::slice::from_raw_parts(xp.add(16 * v), 16);
                        for co in 0..c {
                            let wv = *wp.add(co);
                            for l in 0..16 {
                                acc[co][v][l] += wv * xv[l];
                            }
                        }
                    }
                    wp = wp.add(c);
                }
            }
        }
        for co in 0..c {
            for v in 0..nv {
                std::ptr::copy_nonoverlapping(
                    acc[co][v].as_ptr(),
                    a.acc.add((co * nv + v) * 16),
                    16,
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Args, pv};
    use std::arch::x86_64::*;

    /// # Safety
    /// See [`super::block`]; AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_avx512(c: usize, nv: usize, a: &Args) {
        macro_rules! by_c {
            ($($c:literal),*) => {
                match c {
                    $($c => {
                        if nv == 1 {
                            kernel::<$c, 1>(a)
                        } else {
                            debug_assert_eq!(nv, pv($c));
                            kernel::<$c, { 24 / $c }>(a)
                        }
                    })*
                    _ => unreachable!("output channels out of range"),
                }
            };
        }
        // SAFETY: forwarded from the caller.
        unsafe {
            if c <= 3 {
                match c {
                    1 => kernel_nv::<1>(nv, a),
                    2 => kernel_nv::<2>(nv, a),
                    _ => kernel_nv::<3>(nv, a),
                }
            } else {
                by_c!(4, 5, 6, 7, 8, 9, 10, 11, 12)
            }
        }
    }

    /// Transposes a 16×16 block: row `j` of `src` (stride `ss`) becomes column `j` of `dst`
    /// (stride `ds`).
    ///
    /// # Safety
    /// 16 rows of 16 floats must be readable at `src` and writable at `dst`; AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose16(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
        // SAFETY: in bounds by the caller's contract.
        unsafe {
            let mut r = [_mm512_setzero_ps(); 16];
            for (j, r) in r.iter_mut().enumerate() {
                *r = _mm512_loadu_ps(src.add(j * ss));
            }
            let mut t = [_mm512_setzero_ps(); 16];
            for i in 0..8 {
                t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
            }
            let pd = _mm512_castps_pd;
            let ps = _mm512_castpd_ps;
            for q in 0..4 {
                let b = 4 * q;
                r[b] = ps(_mm512_unpacklo_pd(pd(t[b]), pd(t[b + 2])));
                r[b + 1] = ps(_mm512_unpackhi_pd(pd(t[b]), pd(t[b + 2])));
                r[b + 2] = ps(_mm512_unpacklo_pd(pd(t[b + 1]), pd(t[b + 3])));
                r[b + 3] = ps(_mm512_unpackhi_pd(pd(t[b + 1]), pd(t[b + 3])));
            }
            for h in 0..2 {
                let b = 8 * h;
                for i in 0..4 {
                    t[b + i] = _mm512_shuffle_f32x4::<0x88>(r[b + i], r[b + 4 + i]);
                    t[b + 4 + i] = _mm512_shuffle_f32x4::<0xdd>(r[b + i], r[b + 4 + i]);
                }
            }
            for i in 0..8 {
                r[i] = _mm512_shuffle_f32x4::<0x88>(t[i], t[8 + i]);
                r[8 + i] = _mm512_shuffle_f32x4::<0xdd>(t[i], t[8 + i]);
            }
            for (j, r) in r.iter().enumerate() {
                _mm512_storeu_ps(dst.add(j * ds), *r);
            }
        }
    }

    /// `C ≤ 3`: six pixel vectors (the register budget is not the limit).
    ///
    /// # Safety
    /// See [`super::block`]; AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel_nv<const C: usize>(nv: usize, a: &Args) {
        // SAFETY: forwarded from the caller.
        unsafe {
            if nv == 1 {
                kernel::<C, 1>(a)
            } else {
                kernel::<C, 6>(a)
            }
        }
    }

    /// # Safety
    /// See [`super::block`]; AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn kernel<const C: usize, const PV: usize>(a: &Args) {
        let mut acc = [[_mm512_setzero_ps(); PV]; C];
        let mut wp = a.w;
        // SAFETY (whole body): in bounds by the contract of `block`.
        unsafe {
            for &r in a.rows {
                for ci in 0..a.cin {
                    for kx in 0..a.kw {
                        let xp = r.add(ci * a.wt + a.x0 + kx);
                        let mut xv = [_mm512_setzero_ps(); PV];
                        for (v, xv) in xv.iter_mut().enumerate() {
                            *xv = _mm512_loadu_ps(xp.add(16 * v));
                        }
                        for (co, accc) in acc.iter_mut().enumerate() {
                            let wv = _mm512_set1_ps(*wp.add(co));
                            for v in 0..PV {
                                accc[v] = _mm512_fmadd_ps(wv, xv[v], accc[v]);
                            }
                        }
                        wp = wp.add(C);
                    }
                }
            }
            for (co, accc) in acc.iter().enumerate() {
                for (v, &y) in accc.iter().enumerate() {
                    _mm512_storeu_ps(a.acc.add((co * PV + v) * 16), y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_transpose_matches_the_scalar_one() {
        for isa in [Isa::Avx512, Isa::Scalar] {
            if !isa.is_supported() {
                continue;
            }
            for (w, cin, pad) in [(37, 32, 1), (16, 16, 0), (50, 64, 2), (5, 12, 1)] {
                let x: Vec<f32> = (0..3 * w * cin).map(|v| v as f32).collect();
                let wt = w + 2 * pad + 20;
                let mut t = vec![f32::NAN; cin * wt];
                transpose_row(isa, &x, 3, w, cin, 1, pad, wt, &mut t);
                for ci in 0..cin {
                    for c in 0..wt {
                        let want = if c >= pad && c < pad + w {
                            x[(w + c - pad) * cin + ci]
                        } else {
                            0.0
                        };
                        assert_eq!(
                            t[ci * wt + c],
                            want,
                            "{isa:?} w {w} cin {cin} ci {ci} col {c}"
                        );
                    }
                }
            }
        }
    }
}
