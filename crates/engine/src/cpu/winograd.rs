//! Winograd F(4×4, 3×3) for 3×3 stride-1 convolutions.
//!
//! Each 4×4 block of outputs ("tile") is computed from the 6×6 input patch around it as
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`, summed over input channels: 36 multiplications per
//! tile and channel pair instead of 144 for the direct form. The element-wise products summed
//! over channels are 36 independent matrix products `M_ξ = V_ξ · U_ξ`
//! (`tiles × cin` by `cin × cout`), computed with the shared micro-kernels of [`super::gemm`].
//!
//! Why F(4,3) and not F(6,3), and why these points: the error of a Winograd transform grows
//! with the magnitude of its coefficients, and the outputs must stay within about 1e-5 of the
//! direct sum so that the 8-bit images round like OpenCV's. F(6,3) needs coefficients of
//! 100 and more; F(4,3) with the textbook points 0, ±1, ±2, ∞ has a largest error of
//! 1.3e-5 of the largest output on random 256-channel layers (five times the error of an `f32`
//! direct sum); with the points 0, 1, −1, ½, −2, ∞ (Barabasz et al., "Error analysis and
//! improving the accuracy of Winograd convolution for deep neural networks", 2020) every
//! transform coefficient is still exact in binary and the error drops to 3.7e-6, against
//! 2.3e-6 for the direct sum (test `winograd_error_is_of_the_order_of_f32_summation_error`).
//! The weight transform is computed in `f64` at `prepare`.
//!
//! Scheduling, for the working set to stay in cache however large the image: the tiles are
//! cut into equal blocks (a multiple of the thread count, each ≤ 3 MiB of transformed input,
//! about 72 tiles at 256 channels; ≤ 256 KiB when the transformed weights fit in 2 MiB, so
//! that a small layer's block stays in L2). One task transforms its block's input for every channel
//! into packed panels (`[ξ][row][ci/16][mr][16]`, written with whole-vector stores), then, per
//! chunk of up to 256 output channels, runs the 36 products — for each ξ the panel of 12 tiles
//! (12 KiB) stays in L1 while the ξ slice of the weights (`[panel][cin][16]`, 256 KiB) streams
//! from L2, so each weight fetched from L3 serves the whole block — and finally applies the
//! output transform fused with the epilogue (bias, activation, residual), gathering each 4×4
//! tile in a small buffer so every output pixel (and its skip) is written as one contiguous
//! run. When there are fewer blocks than threads (small images) the output channels are split
//! between tasks as well.

#![allow(clippy::needless_range_loop)] // index loops mirror the transform formulas

use rayon::prelude::*;
use superres_graph::Conv2d;

use super::conv::{ConvKernel, SendPtr, Skip, with_scratch};
use super::gemm::{self, ALayout, Block, Isa};

/// Transformed weights.
pub struct Winograd {
    cinp: usize,
    panels: usize,
    /// `[36][panel][cinp][16]`, zero beyond `cin` and `cout`.
    u: Vec<f32>,
}

/// `G` of F(4,3) with the interpolation points 0, 1, −1, ½, −2 (and ∞), exact in `f64`.
const G: [[f64; 3]; 6] = [
    [1.0, 0.0, 0.0],
    [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
    [-1.0 / 3.0, 1.0 / 3.0, -1.0 / 3.0],
    [-16.0 / 15.0, -8.0 / 15.0, -4.0 / 15.0],
    [1.0 / 15.0, -2.0 / 15.0, 4.0 / 15.0],
    [0.0, 0.0, 1.0],
];

/// Output channels per `M` chunk.
const CO_CHUNK: usize = 256;
/// Target size of a block's transformed input, in bytes.
const V_BUDGET: usize = 3 << 20;
/// The same when the transformed weights are small (at most [`SMALL_U`] bytes, e.g. LapSRN's
/// and ESPCN's 64-channel layers): the weights stay in cache whatever the block, so the block
/// is sized for its transformed input and products to stay in L2 instead (about 30% faster
/// on 64→64 and 64→32 than the 3 MiB blocks).
const V_BUDGET_SMALL_U: usize = 256 << 10;
const SMALL_U: usize = 2 << 20;

impl Winograd {
    pub fn new(c: &Conv2d, _isa: Isa) -> Self {
        debug_assert!(c.kh == 3 && c.kw == 3 && c.groups == 1);
        let cinp = c.cin.div_ceil(16) * 16;
        let panels = c.cout.div_ceil(16);
        let mut u = vec![0.0f32; 36 * panels * cinp * 16];
        for ci in 0..c.cin {
            for co in 0..c.cout {
                let g = |ky: usize, kx: usize| {
                    c.weights[((ky * 3 + kx) * c.cin + ci) * c.cout + co] as f64
                };
                // t = G g (6×3), then U = t Gᵀ (6×6).
                let mut t = [[0.0f64; 3]; 6];
                for (i, ti) in t.iter_mut().enumerate() {
                    for (kx, v) in ti.iter_mut().enumerate() {
                        *v = (0..3).map(|ky| G[i][ky] * g(ky, kx)).sum();
                    }
                }
                for i in 0..6 {
                    for j in 0..6 {
                        let v: f64 = (0..3).map(|kx| t[i][kx] * G[j][kx]).sum();
                        let xi = i * 6 + j;
                        u[((xi * panels + co / 16) * cinp + ci) * 16 + co % 16] = v as f32;
                    }
                }
            }
        }
        Winograd { cinp, panels, u }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run(
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
        let isa = ck.isa;
        let np_max = isa.max_np();
        let mr = isa.mr(np_max);
        let budget = if self.u.len() * 4 <= SMALL_U {
            V_BUDGET_SMALL_U
        } else {
            V_BUDGET
        };
        let max_rows = (budget / (36 * mr * self.cinp * 4)).clamp(1, 32);
        let tiles_w = ow.div_ceil(4);
        let ntiles = oh.div_ceil(4) * tiles_w;
        let threads = rayon::current_num_threads();
        // Equal blocks, as many as a multiple of the thread count, each within the budget.
        let total_rows = ntiles.div_ceil(mr);
        let mut nblocks = total_rows.div_ceil(max_rows);
        if total_rows >= threads {
            nblocks = nblocks.div_ceil(threads) * threads;
        }
        let rows = total_rows.div_ceil(nblocks);
        let t = rows * mr;
        let nblocks = ntiles.div_ceil(t);
        let chunk_panels = (CO_CHUNK / 16).min(self.panels);
        let nchunks = self.panels.div_ceil(chunk_panels);
        let splits = if nblocks >= 2 * threads {
            1
        } else {
            (2 * threads).div_ceil(nblocks).min(nchunks)
        };
        let out_ptr = out.as_mut_ptr();
        let job = Job {
            wg: self,
            ck,
            x,
            h,
            w,
            out: SendPtr(out_ptr),
            oh,
            ow,
            skip: match skip {
                Skip::Tensor(s) => Some(s.as_ptr()),
                Skip::None => None,
                Skip::InOutput => Some(out_ptr as *const f32),
            },
            mr,
            rows,
            tiles_w,
            ntiles,
            chunk_panels,
        };
        (0..nblocks * splits).into_par_iter().for_each(|item| {
            let (b, s) = (item / splits, item % splits);
            let c0 = s * nchunks / splits;
            let c1 = (s + 1) * nchunks / splits;
            job.block(b, c0..c1);
        });
    }
}

/// Everything one block needs.
struct Job<'a> {
    wg: &'a Winograd,
    ck: &'a ConvKernel,
    x: &'a [f32],
    h: usize,
    w: usize,
    out: SendPtr,
    oh: usize,
    ow: usize,
    skip: Option<*const f32>,
    mr: usize,
    rows: usize,
    tiles_w: usize,
    ntiles: usize,
    chunk_panels: usize,
}

// SAFETY: the raw pointers are only read (skip) or written on ranges disjoint between tasks
// (see `Job::output_transform`).
unsafe impl Sync for Job<'_> {}

impl Job<'_> {
    fn block(&self, b: usize, chunks: std::ops::Range<usize>) {
        let t = self.rows * self.mr;
        let cinp = self.wg.cinp;
        let v_len = 36 * t * cinp;
        let m_len = 36 * t * self.chunk_panels * 16 + 16 * self.chunk_panels * 16;
        with_scratch(v_len + m_len, |scratch| {
            let (v, m) = scratch.split_at_mut(v_len);
            let tiles = b * t..((b + 1) * t).min(self.ntiles);
            match self.ck.isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the backend only selects AVX-512 when the processor has it.
                Isa::Avx512 => unsafe { self.block_avx512(tiles, chunks, v, m) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the backend only selects AVX2 when the processor has AVX2 and FMA.
                Isa::Avx2 => unsafe { self.block_avx2(tiles, chunks, v, m) },
                _ => self.block_body(tiles, chunks, v, m),
            }
        });
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_avx512(
        &self,
        tiles: std::ops::Range<usize>,
        chunks: std::ops::Range<usize>,
        v: &mut [f32],
        m: &mut [f32],
    ) {
        self.block_body(tiles, chunks, v, m)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2(
        &self,
        tiles: std::ops::Range<usize>,
        chunks: std::ops::Range<usize>,
        v: &mut [f32],
        m: &mut [f32],
    ) {
        self.block_body(tiles, chunks, v, m)
    }

    #[inline(always)]
    fn block_body(
        &self,
        tiles: std::ops::Range<usize>,
        chunks: std::ops::Range<usize>,
        v: &mut [f32],
        m: &mut [f32],
    ) {
        let wg = self.wg;
        let isa = self.ck.isa;
        let cinp = wg.cinp;
        let mr = self.mr;
        let rows = self.rows;
        let t = rows * mr;
        let nt = tiles.len();
        let used_rows = nt.div_ceil(mr);
        for (i, tile) in tiles.clone().enumerate() {
            self.input_transform(tile, i, v);
        }
        let runs = [0usize];
        let (m, ybuf) = m.split_at_mut(36 * t * self.chunk_panels * 16);
        for chunk in chunks {
            let p_lo = chunk * self.chunk_panels;
            let p_hi = (p_lo + self.chunk_panels).min(wg.panels);
            let cc = (p_hi - p_lo) * 16;
            for xi in 0..36 {
                // A panel of V (`cinp × mr`, ≤ 12 KiB) stays in L1 while the ξ slice of U
                // (≤ 256 KiB, in L2) streams past it.
                for r in 0..used_rows {
                    let mut p = p_lo;
                    while p < p_hi {
                        let np = isa.max_np().min(p_hi - p);
                        let blk = Block {
                            runs: &runs,
                            run_len: cinp,
                            a: v[((xi * rows + r) * cinp) * mr..].as_ptr(),
                            a_layout: ALayout::Packed(mr),
                            b: wg.u[((xi * wg.panels + p) * cinp) * 16..].as_ptr(),
                            b_ps: cinp * 16,
                            c: m[(xi * t + r * mr) * cc + (p - p_lo) * 16..].as_mut_ptr(),
                            c_rs: cc,
                            accumulate: false,
                        };
                        // SAFETY: the panel of V holds `cinp` steps of `mr` rows; `np` panels
                        // of U hold `cinp` rows each; M has `t ≥ (r+1)·mr` rows of `cc ≥
                        // (p-p_lo+np)·16` floats for this ξ. `mr ≤ isa.mr(np)`.
                        unsafe { gemm::block(isa, mr, np, &blk) };
                        p += np;
                    }
                }
            }
            for (i, tile) in tiles.clone().enumerate() {
                self.output_transform(tile, i, m, t, cc, p_lo * 16, ybuf);
            }
        }
    }

    /// Transforms the 6×6 input patch of `tile` for every input channel into row `i` of the
    /// block's packed panel.
    #[inline(always)]
    fn input_transform(&self, tile: usize, i: usize, v: &mut [f32]) {
        let cin = self.ck.shape.cin;
        let cinp = self.wg.cinp;
        let (mr, rows) = (self.mr, self.rows);
        let (r, p) = (i / mr, i % mr);
        let pad = self.ck.shape.padding;
        let (ty, tx) = (tile / self.tiles_w, tile % self.tiles_w);
        let iy0 = (ty * 4) as isize - pad.top as isize;
        let ix0 = (tx * 4) as isize - pad.left as isize;
        let (h, w) = (self.h as isize, self.w as isize);
        let inside = iy0 >= 0 && ix0 >= 0 && iy0 + 6 <= h && ix0 + 6 <= w;
        let x = self.x;
        let mut c0 = 0;
        while c0 < cinp {
            let nl = 16.min(cin.saturating_sub(c0));
            let mut d = [[[0.0f32; 16]; 6]; 6];
            if inside && nl == 16 {
                for (ky, dr) in d.iter_mut().enumerate() {
                    for (kx, dv) in dr.iter_mut().enumerate() {
                        let o = (((iy0 as usize) + ky) * self.w + ix0 as usize + kx) * cin + c0;
                        dv.copy_from_slice(&x[o..o + 16]);
                    }
                }
            } else {
                for (ky, dr) in d.iter_mut().enumerate() {
                    let iy = iy0 + ky as isize;
                    if iy < 0 || iy >= h {
                        continue;
                    }
                    for (kx, dv) in dr.iter_mut().enumerate() {
                        let ix = ix0 + kx as isize;
                        if ix < 0 || ix >= w {
                            continue;
                        }
                        let o = (iy as usize * self.w + ix as usize) * cin + c0;
                        dv[..nl].copy_from_slice(&x[o..o + nl]);
                    }
                }
            }
            // Bᵀ d B: columns first, then rows.
            let mut tcol = [[[0.0f32; 16]; 6]; 6];
            for j in 0..6 {
                let col = bt([&d[0][j], &d[1][j], &d[2][j], &d[3][j], &d[4][j], &d[5][j]]);
                for (ii, c) in col.into_iter().enumerate() {
                    tcol[ii][j] = c;
                }
            }
            for (ii, trow) in tcol.iter().enumerate() {
                let vr = bt([&trow[0], &trow[1], &trow[2], &trow[3], &trow[4], &trow[5]]);
                for (jj, vv) in vr.iter().enumerate() {
                    let xi = ii * 6 + jj;
                    let base = (((xi * rows + r) * cinp + c0) * mr) + p * 16;
                    v[base..base + 16].copy_from_slice(vv);
                }
            }
            c0 += 16;
        }
    }

    /// Applies `Aᵀ m A` and the epilogue to the channels `co0..co0+cc` of `tile` (row `i` of
    /// the block's `M`) and stores the valid pixels. The transformed tile is gathered in
    /// `ybuf` (`16 × cc`) first so that each pixel's channels are written (and its skip read)
    /// as one contiguous run.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn output_transform(
        &self,
        tile: usize,
        i: usize,
        m: &[f32],
        t: usize,
        cc: usize,
        co0: usize,
        ybuf: &mut [f32],
    ) {
        let cout = self.ck.shape.cout;
        let (ty, tx) = (tile / self.tiles_w, tile % self.tiles_w);
        let (oy0, ox0) = (ty * 4, tx * 4);
        let ny = 4.min(self.oh - oy0);
        let nx = 4.min(self.ow - ox0);
        let n = cc.min(cout - co0);
        let mut lc = 0;
        while lc < n {
            let mv = |xi: usize| -> &[f32; 16] {
                m[(xi * t + i) * cc + lc..][..16]
                    .try_into()
                    .expect("16 lanes")
            };
            let mut trow = [[[0.0f32; 16]; 6]; 4];
            for j in 0..6 {
                let col = at([
                    mv(j),
                    mv(6 + j),
                    mv(12 + j),
                    mv(18 + j),
                    mv(24 + j),
                    mv(30 + j),
                ]);
                for (ii, c) in col.into_iter().enumerate() {
                    trow[ii][j] = c;
                }
            }
            for (yy, tr) in trow.iter().enumerate().take(ny) {
                let y = at([&tr[0], &tr[1], &tr[2], &tr[3], &tr[4], &tr[5]]);
                for (xx, yv) in y.iter().enumerate().take(nx) {
                    ybuf[(yy * 4 + xx) * cc + lc..][..16].copy_from_slice(yv);
                }
            }
            lc += 16;
        }
        let mut skip_buf = [0.0f32; CO_CHUNK];
        for yy in 0..ny {
            for xx in 0..nx {
                let o = ((oy0 + yy) * self.ow + ox0 + xx) * cout + co0;
                // SAFETY: pixel (oy0+yy, ox0+xx) is inside the output and the channels
                // `co0..co0+n` belong to this task's chunk, so no other task touches `o..o+n`;
                // the skip (possibly the output itself) is copied out before the store.
                let (dst, sk) = unsafe {
                    let sk = self.skip.map(|s| {
                        skip_buf[..n].copy_from_slice(std::slice::from_raw_parts(s.add(o), n));
                        &skip_buf[..n]
                    });
                    (std::slice::from_raw_parts_mut(self.out.0.add(o), n), sk)
                };
                self.ck
                    .epilogue
                    .store(&ybuf[(yy * 4 + xx) * cc..], co0, dst, sk);
            }
        }
    }
}

/// `Bᵀ x` for one column of six 16-lane vectors (every coefficient is exact in binary).
#[inline(always)]
fn bt(d: [&[f32; 16]; 6]) -> [[f32; 16]; 6] {
    let mut r = [[0.0f32; 16]; 6];
    for l in 0..16 {
        let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        r[0][l] = (d0 + d4) + 1.5 * (d3 - d1) - 2.0 * d2;
        r[1][l] = (d4 - d1) + 0.5 * d2 + 2.5 * d3;
        r[2][l] = (d1 + d4) - 2.5 * d2 + 0.5 * d3;
        r[3][l] = (d4 - d2) + 2.0 * (d3 - d1);
        r[4][l] = (d4 - d2) + 0.5 * (d1 - d3);
        r[5][l] = (d1 + d5) - 1.5 * d2 - 2.0 * d3 + 1.5 * d4;
    }
    r
}

/// `Aᵀ x` for one column of six 16-lane vectors.
#[inline(always)]
fn at(m: [&[f32; 16]; 6]) -> [[f32; 16]; 4] {
    let mut r = [[0.0f32; 16]; 4];
    for l in 0..16 {
        let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
        let (s12, d12) = (m1 + m2, m1 - m2);
        r[0][l] = m0 + s12 + (m3 + m4);
        r[1][l] = d12 + 0.5 * m3 - 2.0 * m4;
        r[2][l] = s12 + 0.25 * m3 + 4.0 * m4;
        r[3][l] = d12 + 0.125 * m3 - 8.0 * m4 + m5;
    }
    r
}
