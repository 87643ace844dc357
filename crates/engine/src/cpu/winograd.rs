//! Winograd F(m×m, 3×3), m = 4 or 6, for 3×3 stride-1 convolutions.
//!
//! Each m×m block of outputs ("tile") is computed from the n×n input patch around it
//! (n = m + 2) as `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`, summed over input channels: n²
//! multiplications per tile and channel pair instead of 9m² for the direct form (36 for 144
//! with F(4,3), 64 for 324 with F(6,3)). The element-wise products summed over channels are
//! n² independent matrix products `M_ξ = V_ξ · U_ξ` (`tiles × cin` by `cin × cout`), computed
//! with the shared micro-kernels of [`super::gemm`].
//!
//! Which tile, and which points. The error of a Winograd transform grows with the magnitude
//! of its coefficients, and the outputs must stay close enough to the direct sum that the
//! 8-bit images round like OpenCV's. Measured on random 256→256 layers (max error / max
//! |output| against `f64`; test `winograd_error_is_of_the_order_of_f32_summation_error`):
//! the `f32` direct sum 2.3e-6; F(4,3) with the points 0, 1, −1, ½, −2, ∞ (Barabasz et al.,
//! "Error analysis and improving the accuracy of Winograd convolution for deep neural
//! networks", 2020) 3.7e-6; F(4,3) with the textbook 0, ±1, ±2, ∞ 1.3e-5; F(6,3) with
//! 0, ±1, ±2, ±½, ∞ (the points OpenCV's own Winograd uses) about 1.5e-5. Every coefficient
//! of `Bᵀ` and `Aᵀ` for these points is exact in binary; `G` is applied in `f64` at
//! `prepare`. F(6,3) does 1.27× fewer multiplications per output than F(4,3) and its
//! transforms cost about the same per output, so it is the default where the products
//! dominate (at least [`F6_MIN_CHANNELS`] input and output channels: EDSR, LapSRN, ESPCN's
//! 64→32, the default model). F(4,3), four times more accurate, stays for 16 to 31 channels:
//! F(6,3) measured 8–18% faster on such layers alone, but they are a small share of any
//! network's time, and with few channels the transform error is a larger share of the total.
//! Both keep every OpenCV parity case within one 8-bit level (the parity tests), and either
//! can be forced ([`super::ConvAlgo`]).
//!
//! The input may come in parts: the channel-wise concatenation of several tensors of the
//! same size, each read where it is ([`Winograd::reads_parts`]: every part but the last a
//! whole number of 16-channel groups, since the transform reads one group at a time).
//!
//! Scheduling, for the working set to stay in cache however large the image: the tiles are
//! cut into equal blocks (a multiple of the thread count, each ≤ 3 MiB of transformed input,
//! 48 tiles at 256 channels; ≤ 256 KiB when the transformed weights fit in 2 MiB, so that a
//! small layer's block stays in L2). One task transforms its block's input for every channel
//! into packed panels (`[ξ][row][ci/16][mr][16]`, written with whole-vector stores; the ξ
//! slices are one cache line longer than a multiple of 4 KiB so that a tile's n² stores do
//! not all land in one L1 set), then, per chunk of up to 256 output channels, runs the n²
//! products — for each ξ the panel of 12 tiles (12 KiB) stays in L1 while the ξ slice of
//! the weights (`[panel][cin][16]` for every panel, 256 KiB) streams from L2, so each weight fetched from
//! memory serves the whole block — and finally applies the output transform fused with the
//! epilogue (bias, activation, residual), gathering each tile in a small buffer so every
//! output pixel (and its skip) is written as one contiguous run. When there are fewer blocks
//! than threads (small images) the output channels are split between tasks as well.
//!
//! The cost of F(6,3): its transformed weights are 64/9 of the plain ones (1.07 GB for full
//! EDSR's 64 wide layers, against 0.6 GB with F(4,3)). So they are made when a run first
//! needs them, and kept only by runs of fewer than [`KEEP_BELOW_TILES`] tiles, for which
//! making them each time would cost a noticeable share; larger runs (the tiles of a big
//! photo) make them for themselves at an estimated 1% of their time at most (not measurable
//! on x4plus at 440×440, BENCHMARKS.md), and a model used only on such
//! runs holds its plain weights alone (RRDBNet ×4: 67 MB instead of 475); once a small run
//! keeps the transformed ones, the plain ones are dropped.

#![allow(clippy::needless_range_loop)] // index loops mirror the transform formulas

use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;
use superres_graph::Conv2d;

use super::gemm::{self, ALayout, Block};
use super::kernel::{SendPtr, Skip, Spec, with_scratch};

/// The output tile of a Winograd convolution: F(4×4, 3×3) or F(6×6, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F4,
    F6,
}

/// Layers with at least this many input and output channels use F(6,3) by default.
pub const F6_MIN_CHANNELS: usize = 32;

impl Tile {
    /// The default tile for a layer of `cin → cout` channels (see the module docs).
    pub fn for_channels(cin: usize, cout: usize) -> Tile {
        if cin >= F6_MIN_CHANNELS && cout >= F6_MIN_CHANNELS {
            Tile::F6
        } else {
            Tile::F4
        }
    }

    /// Outputs per tile side.
    pub fn m(self) -> usize {
        match self {
            Tile::F4 => 4,
            Tile::F6 => 6,
        }
    }

    /// `G` (n × 3): F(4,3) with the points 0, 1, −1, ½, −2, ∞; F(6,3) with 0, 1, −1, 2, −2,
    /// ½, −½, ∞ (row 0 negated, as is row 0 of its `Bᵀ`, so the product is unchanged).
    fn g(self) -> &'static [[f64; 3]] {
        match self {
            Tile::F4 => &G4,
            Tile::F6 => &G6,
        }
    }
}

const G4: [[f64; 3]; 6] = [
    [1.0, 0.0, 0.0],
    [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
    [-1.0 / 3.0, 1.0 / 3.0, -1.0 / 3.0],
    [-16.0 / 15.0, -8.0 / 15.0, -4.0 / 15.0],
    [1.0 / 15.0, -2.0 / 15.0, 4.0 / 15.0],
    [0.0, 0.0, 1.0],
];

const G6: [[f64; 3]; 8] = [
    [1.0, 0.0, 0.0],
    [-2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0],
    [-2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0],
    [1.0 / 90.0, 1.0 / 45.0, 2.0 / 45.0],
    [1.0 / 90.0, -1.0 / 45.0, 2.0 / 45.0],
    [32.0 / 45.0, 16.0 / 45.0, 8.0 / 45.0],
    [32.0 / 45.0, -16.0 / 45.0, 8.0 / 45.0],
    [0.0, 0.0, 1.0],
];

/// A layer's weights, plain, and transformed once a run small enough to need them keeps
/// them.
pub struct Winograd {
    tile: Tile,
    cin: usize,
    cout: usize,
    cinp: usize,
    panels: usize,
    /// The plain weights, until a small run keeps the transformed ones in their place.
    weights: Mutex<Weights>,
}

/// A layer's weights as it holds them. Runs take a reference-counted copy under the lock
/// and compute outside it: no lock is held across parallel work, where a waiting rayon
/// worker may run another image's layers.
enum Weights {
    /// `[ky][kx][cin][cout]`, as the graph holds them.
    Plain(Arc<Vec<f32>>),
    /// `[panel][n²][cinp][16]`, zero beyond `cin` and `cout`, kept by the first run with
    /// fewer than [`KEEP_BELOW_TILES`] tiles.
    Transformed(Arc<Vec<f32>>),
}

/// Runs with fewer tiles than this keep the transformed weights; larger ones transform them
/// each time. Transforming a layer's weights costs about what its products cost for a few
/// dozen tiles (writing `n²·cin·cout` floats once against reading them once per row of 12
/// tiles), so from this many tiles on (a 384×384 run with F(6,3)) it is under 1% of the
/// layer's time, while keeping them costs 64/9 of the plain weights for as long as the
/// model is loaded (475 MB for RRDBNet ×4, 1.07 GB for full EDSR): a model used only on
/// large runs (the tiles of a big photo) never holds them.
pub const KEEP_BELOW_TILES: usize = 4096;

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
    pub fn new(c: &Conv2d, tile: Tile) -> Self {
        debug_assert!(c.kh == 3 && c.kw == 3 && c.groups == 1);
        Winograd {
            tile,
            cin: c.cin,
            cout: c.cout,
            cinp: c.cin.div_ceil(16) * 16,
            panels: c.cout.div_ceil(16),
            weights: Mutex::new(Weights::Plain(Arc::new(c.weights.clone()))),
        }
    }

    /// Floats of the transformed weights.
    pub fn transformed_len(&self) -> usize {
        let n = self.tile.m() + 2;
        self.panels * n * n * self.cinp * 16
    }

    /// Whether the transformed weights are kept in place of the plain ones (tests).
    #[cfg(test)]
    fn keeps_transformed(&self) -> bool {
        let weights = self.weights.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(*weights, Weights::Transformed(_))
    }

    /// The transformed weights for a run of `ntiles` tiles: the kept ones, else made, and
    /// kept in place of the plain ones when the run is small. The same arithmetic either
    /// way, so a run's result does not depend on which. (Two small runs that race both
    /// transform them and keep the same values.)
    fn transformed(&self, ntiles: usize) -> Arc<Vec<f32>> {
        let plain = match &*self.weights.lock().unwrap_or_else(PoisonError::into_inner) {
            Weights::Transformed(u) => return Arc::clone(u),
            Weights::Plain(p) => Arc::clone(p),
        };
        let u = Arc::new(self.transform(&plain));
        if ntiles < KEEP_BELOW_TILES {
            *self.weights.lock().unwrap_or_else(PoisonError::into_inner) =
                Weights::Transformed(Arc::clone(&u));
        }
        u
    }

    /// `G g Gᵀ` for every channel pair of `plain`, in `f64`.
    fn transform(&self, plain: &[f32]) -> Vec<f32> {
        let g_t = self.tile.g();
        let n = g_t.len();
        let nn = n * n;
        let (cin, cout, cinp) = (self.cin, self.cout, self.cinp);
        let mut u = vec![0.0f32; self.transformed_len()];
        // One panel of 16 output channels per task (a full EDSR's weights transform in a
        // fraction of the time they take on one thread).
        u.par_chunks_mut(nn * cinp * 16)
            .enumerate()
            .for_each(|(panel, u)| {
                // Sixteen output channels at a time, in `f64` lanes.
                let co0 = panel * 16;
                let nl = 16.min(cout - co0);
                let mut g = [[[0.0f64; 16]; 3]; 3];
                let mut t = [[[0.0f64; 16]; 3]; 8];
                for ci in 0..cin {
                    for (ky, gr) in g.iter_mut().enumerate() {
                        for (kx, gv) in gr.iter_mut().enumerate() {
                            let o = ((ky * 3 + kx) * cin + ci) * cout + co0;
                            for (v, w) in gv.iter_mut().zip(&plain[o..o + nl]) {
                                *v = *w as f64;
                            }
                        }
                    }
                    // t = G g (n×3), then U = t Gᵀ (n×n).
                    for i in 0..n {
                        for kx in 0..3 {
                            for l in 0..16 {
                                t[i][kx][l] = g_t[i][0] * g[0][kx][l]
                                    + g_t[i][1] * g[1][kx][l]
                                    + g_t[i][2] * g[2][kx][l];
                            }
                        }
                    }
                    for i in 0..n {
                        for j in 0..n {
                            let o = ((i * n + j) * cinp + ci) * 16;
                            for (l, uv) in u[o..o + 16].iter_mut().enumerate() {
                                *uv = (t[i][0][l] * g_t[j][0]
                                    + t[i][1][l] * g_t[j][1]
                                    + t[i][2][l] * g_t[j][2])
                                    as f32;
                            }
                        }
                    }
                }
            });
        u
    }

    pub fn tile(&self) -> Tile {
        self.tile
    }

    /// Whether an input of parts with these channel counts is read in place
    /// ([`Winograd::run`]): every part but the last a whole number of 16-channel groups, as
    /// the transform reads them.
    pub fn reads_parts(&self, channels: &[usize]) -> bool {
        let (last, rest) = channels.split_last().unwrap_or((&0, &[]));
        *last > 0 && rest.iter().all(|c| c % 16 == 0) && channels.iter().sum::<usize>() == self.cin
    }

    /// The convolution of the channel-wise concatenation of `x`'s parts (`(values,
    /// channels)`, each `h × w`; [`Winograd::reads_parts`] of their channels holds) into
    /// `out`. The input transform reads each 16-channel group from its part, so no
    /// concatenated copy is ever made.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        ck: &Spec,
        x: &[(&[f32], usize)],
        h: usize,
        w: usize,
        out: &mut [f32],
        oh: usize,
        ow: usize,
        skip: Skip,
    ) {
        let channels: Vec<usize> = x.iter().map(|p| p.1).collect();
        assert!(
            self.reads_parts(&channels) && x.iter().all(|(v, c)| v.len() >= h * w * c),
            "winograd input parts {channels:?} for {} channels of {h}×{w}",
            self.cin
        );
        let mut groups = Vec::with_capacity(self.cinp / 16);
        for &(values, c) in x {
            for off in (0..c).step_by(16) {
                groups.push(Group {
                    x: values,
                    stride: c,
                    off,
                    lanes: 16.min(c - off),
                });
            }
        }
        let m = self.tile.m();
        let nn = (m + 2) * (m + 2);
        let isa = ck.isa;
        let np_max = isa.max_np();
        let mr = isa.mr(np_max);
        let budget = if self.transformed_len() * 4 <= SMALL_U {
            V_BUDGET_SMALL_U
        } else {
            V_BUDGET
        };
        let max_rows = (budget / (nn * mr * self.cinp * 4)).clamp(1, 32);
        let tiles_w = ow.div_ceil(m);
        let ntiles = oh.div_ceil(m) * tiles_w;
        let u = self.transformed(ntiles);
        let threads = rayon::current_num_threads();
        // Equal blocks, as many as a multiple of the thread count, each within the budget.
        let total_rows = ntiles.div_ceil(mr);
        let mut nblocks = total_rows.div_ceil(max_rows);
        if total_rows >= threads {
            nblocks = nblocks.div_ceil(threads) * threads;
        }
        // The tiles are shared out evenly (the last row of a block may be partial: the
        // products are computed for the tiles that exist only).
        let per_block = ntiles.div_ceil(nblocks);
        let rows = per_block.div_ceil(mr);
        let nblocks = ntiles.div_ceil(per_block);
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
            u: &u,
            ck,
            groups,
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
            per_block,
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
    /// The transformed weights.
    u: &'a [f32],
    ck: &'a Spec,
    /// The input's 16-channel groups, in channel order.
    groups: Vec<Group<'a>>,
    h: usize,
    w: usize,
    out: SendPtr,
    oh: usize,
    ow: usize,
    skip: Option<*const f32>,
    mr: usize,
    /// Rows of `mr` tiles in a block's panels (the last may be partial).
    rows: usize,
    /// Tiles per block (the last block may have fewer).
    per_block: usize,
    tiles_w: usize,
    ntiles: usize,
    chunk_panels: usize,
}

// SAFETY: the raw pointers are only read (skip) or written on ranges disjoint between tasks
// (see `Job::output_transform`).
unsafe impl Sync for Job<'_> {}

/// Sixteen channels of one value.
type V16 = [f32; 16];

/// `[f(0), …, f(7)]`, always inlined: `std::array::from_fn` was not, in the kernels' target
/// feature contexts (`core::array::try_from_fn`, 3.4 % of a Compact model's time).
#[inline(always)]
fn eight<T>(f: impl Fn(usize) -> T) -> [T; 8] {
    [f(0), f(1), f(2), f(3), f(4), f(5), f(6), f(7)]
}

/// Up to 16 channels of the input, as one of its parts holds them.
struct Group<'a> {
    /// The part: `h × w` pixels of `stride` channels.
    x: &'a [f32],
    stride: usize,
    /// The group's first channel within the part.
    off: usize,
    /// Channels in the group: 16, fewer only in the last part's last group.
    lanes: usize,
}

impl Job<'_> {
    fn block(&self, b: usize, chunks: std::ops::Range<usize>) {
        let t = self.rows * self.mr;
        let nn = (self.wg.tile.m() + 2).pow(2);
        let v_len = nn * v_stride(self.rows, self.wg.cinp, self.mr);
        let m_len = nn * m_stride(t, self.chunk_panels * 16);
        let y_len = 36 * self.chunk_panels * 16;
        with_scratch(v_len + m_len + y_len, |scratch| {
            let (v, m) = scratch.split_at_mut(v_len);
            let tiles = b * self.per_block..((b + 1) * self.per_block).min(self.ntiles);
            match (self.ck.isa, self.wg.tile) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the backend only selects AVX-512 when the processor has it.
                (gemm::Isa::Avx512, Tile::F4) => unsafe {
                    self.block_avx512::<4>(tiles, chunks, v, m)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (gemm::Isa::Avx512, Tile::F6) => unsafe {
                    self.block_avx512::<6>(tiles, chunks, v, m)
                },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the backend only selects AVX2 when the processor has AVX2 and FMA.
                (gemm::Isa::Avx2, Tile::F4) => unsafe { self.block_avx2::<4>(tiles, chunks, v, m) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (gemm::Isa::Avx2, Tile::F6) => unsafe { self.block_avx2::<6>(tiles, chunks, v, m) },
                (_, Tile::F4) => self.block_body::<4>(tiles, chunks, v, m),
                (_, Tile::F6) => self.block_body::<6>(tiles, chunks, v, m),
            }
        });
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_avx512<const M: usize>(
        &self,
        tiles: std::ops::Range<usize>,
        chunks: std::ops::Range<usize>,
        v: &mut [f32],
        m: &mut [f32],
    ) {
        self.block_body::<M>(tiles, chunks, v, m)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2<const M: usize>(
        &self,
        tiles: std::ops::Range<usize>,
        chunks: std::ops::Range<usize>,
        v: &mut [f32],
        m: &mut [f32],
    ) {
        self.block_body::<M>(tiles, chunks, v, m)
    }

    #[inline(always)]
    fn block_body<const M: usize>(
        &self,
        tiles: std::ops::Range<usize>,
        chunks: std::ops::Range<usize>,
        v: &mut [f32],
        m: &mut [f32],
    ) {
        let nn = (M + 2) * (M + 2);
        let wg = self.wg;
        let isa = self.ck.isa;
        let cinp = wg.cinp;
        let mr = self.mr;
        let rows = self.rows;
        let t = rows * mr;
        let nt = tiles.len();
        let used_rows = nt.div_ceil(mr);
        // Scratch of the transforms, zeroed once per block: every entry a transform reads is
        // written first, for every tile and channel group (zeroing them per tile and group
        // was 5% of a 64-channel network's time).
        let mut patch = [[[0.0f32; 16]; 8]; 8];
        let mut tcol = [[[0.0f32; 16]; 8]; 8];
        let mut trow = [[[0.0f32; 16]; 8]; 6];
        for (i, tile) in tiles.clone().enumerate() {
            self.input_transform::<M>(tile, i, v, &mut patch, &mut tcol);
        }
        let runs = [0usize];
        let (m, ybuf) = m.split_at_mut(nn * m_stride(t, self.chunk_panels * 16));
        let vs = v_stride(rows, cinp, mr);
        for chunk in chunks {
            let p_lo = chunk * self.chunk_panels;
            let p_hi = (p_lo + self.chunk_panels).min(wg.panels);
            let cc = (p_hi - p_lo) * 16;
            let ms = m_stride(t, cc);
            for xi in 0..nn {
                // A panel of V (`cinp × mr`, ≤ 12 KiB) stays in L1 while the ξ slice of U
                // (≤ 256 KiB, in L2) streams past it.
                for r in 0..used_rows {
                    let rm = mr.min(nt - r * mr);
                    let mut p = p_lo;
                    while p < p_hi {
                        let np = isa.max_np().min(p_hi - p);
                        let blk = Block {
                            runs: &runs,
                            run_len: cinp,
                            a: v[xi * vs + r * cinp * mr..].as_ptr(),
                            a_layout: ALayout::Packed(mr),
                            b: self.u[((p * nn + xi) * cinp) * 16..].as_ptr(),
                            b_ps: nn * cinp * 16,
                            c: m[xi * ms + r * mr * cc + (p - p_lo) * 16..].as_mut_ptr(),
                            c_rs: cc,
                        };
                        // SAFETY: the panel of V holds `cinp` steps of `mr` rows (the first
                        // `rm` of them tiles of this block); `np` panels of U hold `cinp`
                        // rows each; M has `t ≥ (r+1)·mr` rows of `cc ≥ (p-p_lo+np)·16`
                        // floats for this ξ. `rm ≤ mr ≤ isa.mr(np)`.
                        unsafe { gemm::block(isa, rm, np, &blk) };
                        p += np;
                    }
                }
            }
            for (i, tile) in tiles.clone().enumerate() {
                self.output_transform::<M>(tile, i, m, t, cc, p_lo * 16, ybuf, &mut trow);
            }
        }
    }

    /// Transforms the n×n input patch of `tile` for every input channel into row `i` of the
    /// block's packed panel. `d` is scratch for one patch of 16 channels.
    #[inline(always)]
    fn input_transform<const M: usize>(
        &self,
        tile: usize,
        i: usize,
        v: &mut [f32],
        d: &mut [[V16; 8]; 8],
        tcol: &mut [[V16; 8]; 8],
    ) {
        let n = M + 2;
        let cinp = self.wg.cinp;
        let (mr, rows) = (self.mr, self.rows);
        let vs = v_stride(rows, cinp, mr);
        let (r, p) = (i / mr, i % mr);
        let pad = self.ck.shape.padding;
        let (ty, tx) = (tile / self.tiles_w, tile % self.tiles_w);
        let iy0 = (ty * M) as isize - pad.top as isize;
        let ix0 = (tx * M) as isize - pad.left as isize;
        let (h, w) = (self.h as isize, self.w as isize);
        let inside = iy0 >= 0 && ix0 >= 0 && iy0 + n as isize <= h && ix0 + n as isize <= w;
        for (gi, g) in self.groups.iter().enumerate() {
            let c0 = gi * 16;
            let (x, cin, nl) = (g.x, g.stride, g.lanes);
            // Bᵀ d B: columns first (read straight from the image when the patch is inside
            // it), then rows.
            if inside && nl == 16 {
                let o0 = ((iy0 as usize) * self.w + ix0 as usize) * cin + g.off;
                let row = self.w * cin;
                for j in 0..n {
                    let col = bt::<M>(eight(|k| {
                        let o = o0 + k.min(n - 1) * row + j * cin;
                        <&V16>::try_from(&x[o..o + 16]).expect("16 lanes")
                    }));
                    for ii in 0..n {
                        tcol[ii][j] = col[ii];
                    }
                }
            } else {
                for (ky, dr) in d.iter_mut().enumerate().take(n) {
                    let iy = iy0 + ky as isize;
                    for (kx, dv) in dr.iter_mut().enumerate().take(n) {
                        let ix = ix0 + kx as isize;
                        *dv = [0.0; 16];
                        if iy < 0 || iy >= h || ix < 0 || ix >= w {
                            continue;
                        }
                        let o = (iy as usize * self.w + ix as usize) * cin + g.off;
                        if nl == 16 {
                            // A whole vector: a fixed-size copy, inlined (a variable-length
                            // one is a `memcpy` call per pixel, 5% of RRDBNet at 64×64).
                            *dv = *<&V16>::try_from(&x[o..o + 16]).expect("16 lanes");
                        } else {
                            dv[..nl].copy_from_slice(&x[o..o + nl]);
                        }
                    }
                }
                for j in 0..n {
                    let col = bt::<M>(eight(|k| &d[k.min(n - 1)][j]));
                    for ii in 0..n {
                        tcol[ii][j] = col[ii];
                    }
                }
            }
            for ii in 0..n {
                let vr = bt::<M>(eight(|k| &tcol[ii][k.min(n - 1)]));
                for jj in 0..n {
                    let xi = ii * n + jj;
                    let base = xi * vs + (r * cinp + c0) * mr + p * 16;
                    v[base..base + 16].copy_from_slice(&vr[jj]);
                }
            }
        }
    }

    /// Applies `Aᵀ m A` and the epilogue to the channels `co0..co0+cc` of `tile` (row `i` of
    /// the block's `M`) and stores the valid pixels. The transformed tile is gathered in
    /// `ybuf` (`m² × cc`) first so that each pixel's channels are written (and its skip read)
    /// as one contiguous run, which the hardware prefetchers follow.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn output_transform<const M: usize>(
        &self,
        tile: usize,
        i: usize,
        m: &[f32],
        t: usize,
        cc: usize,
        co0: usize,
        ybuf: &mut [f32],
        trow: &mut [[V16; 8]; 6],
    ) {
        let n = M + 2;
        let cout = self.ck.shape.cout;
        let (ty, tx) = (tile / self.tiles_w, tile % self.tiles_w);
        let (oy0, ox0) = (ty * M, tx * M);
        let ny = M.min(self.oh - oy0);
        let nx = M.min(self.ow - ox0);
        let nc = cc.min(cout - co0);
        let ms = m_stride(t, cc);
        let mut lc = 0;
        while lc < nc {
            let mv = |xi: usize| -> &V16 {
                m[xi * ms + i * cc + lc..][..16]
                    .try_into()
                    .expect("16 lanes")
            };
            for j in 0..n {
                let col = at::<M>(eight(|k| mv(k.min(n - 1) * n + j)));
                for ii in 0..M {
                    trow[ii][j] = col[ii];
                }
            }
            for (yy, tr) in trow.iter().enumerate().take(ny) {
                let y = at::<M>(eight(|k| &tr[k.min(n - 1)]));
                for (xx, yv) in y.iter().enumerate().take(nx) {
                    ybuf[(yy * M + xx) * cc + lc..][..16].copy_from_slice(yv);
                }
            }
            lc += 16;
        }
        for yy in 0..ny {
            // One row of the tile: `nx` pixels at a stride of `cout`, their sums at a stride
            // of `cc` in `ybuf`, through the same block epilogue as the direct kernel.
            let o = ((oy0 + yy) * self.ow + ox0) * cout + co0;
            // SAFETY: pixels (oy0+yy, ox0..ox0+nx) are inside the output and the channels
            // `co0..co0+nc` belong to this task's chunk, so no other task touches them; the
            // skip, if any, has the output's shape.
            let (dst, skip) = unsafe { (self.out.0.add(o), self.skip.map(|s| s.add(o))) };
            let acc = &ybuf[yy * M * cc..][..nx * cc];
            match self.ck.epilogue.output(co0, nc, skip.map(|s| (s, cout))) {
                // SAFETY: `acc` holds `nx` rows of `cc / 16` panels; see above for `dst`.
                Some(out) => unsafe {
                    gemm::epilogue_block(self.ck.isa, &out, acc.as_ptr(), nx, cc / 16, dst, cout)
                },
                // An activation without a vector form: pixel by pixel, the skip copied out
                // first (it may be the output itself).
                None => {
                    let mut sk = [0.0f32; CO_CHUNK];
                    for xx in 0..nx {
                        // SAFETY: as above, for pixel xx of the row.
                        let (d, k) = unsafe {
                            let d = std::slice::from_raw_parts_mut(dst.add(xx * cout), nc);
                            let k = skip.map(|s| {
                                sk[..nc].copy_from_slice(std::slice::from_raw_parts(
                                    s.add(xx * cout),
                                    nc,
                                ));
                                &sk[..nc]
                            });
                            (d, k)
                        };
                        self.ck.epilogue.store(&acc[xx * cc..], co0, d, k);
                    }
                }
            }
        }
    }
}

/// Floats between the ξ slices of a block's transformed input: one cache line more than the
/// slice, so that the n² slices a tile's transform writes (and the products read) fall in
/// different L1 sets instead of all in one (the slices are multiples of 4 KiB).
fn v_stride(rows: usize, cinp: usize, mr: usize) -> usize {
    rows * cinp * mr + 16
}

/// The same for the products `M` (`t` tiles × `cc` channels per ξ).
fn m_stride(t: usize, cc: usize) -> usize {
    t * cc + 16
}

/// `Bᵀ x` for one column of n = M + 2 vectors of 16 lanes (entries beyond n are ignored; every
/// coefficient is exact in binary).
#[inline(always)]
fn bt<const M: usize>(d: [&V16; 8]) -> [V16; 8] {
    let mut r = [[0.0f32; 16]; 8];
    if M == 4 {
        for l in 0..16 {
            let (d0, d1, d2, d3, d4, d5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
            r[0][l] = (d0 + d4) + 1.5 * (d3 - d1) - 2.0 * d2;
            r[1][l] = (d4 - d1) + 0.5 * d2 + 2.5 * d3;
            r[2][l] = (d1 + d4) - 2.5 * d2 + 0.5 * d3;
            r[3][l] = (d4 - d2) + 2.0 * (d3 - d1);
            r[4][l] = (d4 - d2) + 0.5 * (d1 - d3);
            r[5][l] = (d1 + d5) - 1.5 * d2 - 2.0 * d3 + 1.5 * d4;
        }
    } else {
        for l in 0..16 {
            let (d0, d1, d2, d3) = (d[0][l], d[1][l], d[2][l], d[3][l]);
            let (d4, d5, d6, d7) = (d[4][l], d[5][l], d[6][l], d[7][l]);
            r[0][l] = (d0 - d6) + 5.25 * (d4 - d2);
            r[7][l] = (d7 - d1) + 5.25 * (d3 - d5);
            let (a, b) = ((d2 + d6) - 4.25 * d4, (d1 + d5) - 4.25 * d3);
            r[1][l] = a + b;
            r[2][l] = a - b;
            let (a, b) = (
                (0.25 * d2 + d6) - 1.25 * d4,
                (0.5 * d1 + 2.0 * d5) - 2.5 * d3,
            );
            r[3][l] = a + b;
            r[4][l] = a - b;
            let (a, b) = ((4.0 * d2 + d6) - 5.0 * d4, (2.0 * d1 + 0.5 * d5) - 2.5 * d3);
            r[5][l] = a + b;
            r[6][l] = a - b;
        }
    }
    r
}

/// `Aᵀ x` for one column of n = M + 2 vectors of 16 lanes (M outputs).
#[inline(always)]
fn at<const M: usize>(m: [&V16; 8]) -> [V16; 6] {
    let mut r = [[0.0f32; 16]; 6];
    if M == 4 {
        for l in 0..16 {
            let (m0, m1, m2, m3, m4, m5) = (m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]);
            let (s12, d12) = (m1 + m2, m1 - m2);
            r[0][l] = m0 + s12 + (m3 + m4);
            r[1][l] = d12 + 0.5 * m3 - 2.0 * m4;
            r[2][l] = s12 + 0.25 * m3 + 4.0 * m4;
            r[3][l] = d12 + 0.125 * m3 - 8.0 * m4 + m5;
        }
    } else {
        for l in 0..16 {
            let (m0, m1, m2, m3) = (m[0][l], m[1][l], m[2][l], m[3][l]);
            let (m4, m5, m6, m7) = (m[4][l], m[5][l], m[6][l], m[7][l]);
            let (s12, d12) = (m1 + m2, m1 - m2);
            let (s34, d34) = (m3 + m4, m3 - m4);
            let (s56, d56) = (m5 + m6, m5 - m6);
            r[0][l] = m0 + s12 + s34 + s56;
            r[1][l] = d12 + 2.0 * d34 + 0.5 * d56;
            r[2][l] = s12 + 4.0 * s34 + 0.25 * s56;
            r[3][l] = d12 + 8.0 * d34 + 0.125 * d56;
            r[4][l] = s12 + 16.0 * s34 + 0.0625 * s56;
            r[5][l] = d12 + 32.0 * d34 + 0.03125 * d56 + m7;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use superres_graph::{Epilogue, Padding};

    use super::super::conv::{Algo, ConvAlgo, ConvKernel};
    use super::*;

    /// A 16→24 layer (F(4,3): 4×4 outputs per tile) with weights from a simple generator.
    fn layer() -> Conv2d {
        layer_of(16)
    }

    /// The same with `cin` input channels.
    fn layer_of(cin: usize) -> Conv2d {
        let cout = 24;
        let mut state = 0x2545_f491_u32;
        let weights = (0..9 * cin * cout)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as f32 / u32::MAX as f32 - 0.5
            })
            .collect();
        Conv2d {
            kh: 3,
            kw: 3,
            cin,
            cout,
            groups: 1,
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding::same(3, 3, (1, 1)),
            weights,
            epilogue: Epilogue {
                bias: Some((0..cout).map(|c| c as f32 * 0.01).collect()),
                ..Epilogue::default()
            },
        }
    }

    fn run(k: &ConvKernel, side: usize) -> Vec<f32> {
        let x: Vec<f32> = (0..side * side * 16)
            .map(|i| ((i * 37) % 101) as f32 / 101.0 - 0.5)
            .collect();
        let mut out = vec![0.0; side * side * 24];
        k.run(&x, side, side, &mut out, side, side, Skip::None);
        out
    }

    fn winograd(k: &ConvKernel) -> &Winograd {
        match &k.algo {
            Algo::Winograd(w) => w,
            _ => panic!("a 16-channel 3×3 layer runs Winograd"),
        }
    }

    #[test]
    fn large_runs_transform_the_weights_for_themselves_and_small_ones_keep_them() {
        let k = ConvKernel::new(&layer(), gemm::Isa::detect(), ConvAlgo::WinogradF4);
        // 256×256 with 4×4 tiles: 4096 tiles, at the limit.
        let big = 256;
        assert!((big / 4) * (big / 4) >= KEEP_BELOW_TILES);
        let first = run(&k, big);
        assert!(
            !winograd(&k).keeps_transformed(),
            "a large run keeps nothing"
        );
        run(&k, 40);
        assert!(winograd(&k).keeps_transformed(), "a small run keeps them");
        let again = run(&k, big);
        // The same arithmetic whichever way the weights came.
        assert!(first.iter().any(|&v| v != 0.0));
        assert!(
            first
                .iter()
                .zip(&again)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn an_input_in_parts_gives_what_its_concatenation_gives() {
        let (h, w) = (13, 10);
        let image = |c: usize, seed: usize| -> Vec<f32> {
            (0..h * w * c)
                .map(|i| (((i + seed) * 37) % 101) as f32 / 101.0 - 0.5)
                .collect()
        };
        let (a, b) = (image(16, 1), image(13, 2));
        let mut whole = vec![0.0; h * w * 29];
        super::super::ops::concat(&[(&a, 16), (&b, 13)], w, &mut whole);
        for algo in [ConvAlgo::WinogradF4, ConvAlgo::WinogradF6] {
            let k = ConvKernel::new(&layer_of(29), gemm::Isa::detect(), algo);
            let mut want = vec![0.0; h * w * 24];
            k.run(&whole, h, w, &mut want, h, w, Skip::None);
            // Read in place: 16 channels, then 13.
            assert!(k.reads_parts(&[16, 13]));
            let mut got = vec![0.0; h * w * 24];
            k.run_parts(&[(&a, 16), (&b, 13)], h, w, &mut got, h, w, Skip::None);
            assert_eq!(got, want, "{algo:?}: parts of 16 and 13 channels");
            // 13, then 16: not whole groups, so copied first, with the same result.
            assert!(!k.reads_parts(&[13, 16]));
            let mut swapped = vec![0.0; h * w * 29];
            super::super::ops::concat(&[(&b, 13), (&a, 16)], w, &mut swapped);
            k.run(&swapped, h, w, &mut want, h, w, Skip::None);
            k.run_parts(&[(&b, 13), (&a, 16)], h, w, &mut got, h, w, Skip::None);
            assert_eq!(got, want, "{algo:?}: parts of 13 and 16 channels");
        }
    }
}
