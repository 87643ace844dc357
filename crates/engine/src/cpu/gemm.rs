//! The register-blocked multiply-accumulate micro-kernels shared by the direct convolution
//! and the Winograd transform-domain products.
//!
//! Both callers reduce to the same product: an `MR × (NP·16)` block of outputs
//! `C[p][n] (+)= Σ_k A(p, k) · B[n][k]`, where the reduction index `k` walks a few contiguous
//! *runs* (a kernel row of a convolution: `kw · cin` consecutive floats of an NHWC image) and
//! `B` is packed in panels of 16 output channels, `[panel][k][16]`, so that one panel row is
//! one AVX-512 vector (two AVX2 vectors). `A` is read either straight from an NHWC image
//! (pixel `p` at `a + p·a_ps`, `k` contiguous) or from a packed panel (`[k][MR]`, the layout the
//! Winograd input transform writes).
//!
//! Each instruction set has one kernel body, generic over the block shape, and a dispatch that
//! picks the monomorphised instance for the (possibly partial) block; [`Isa::Scalar`] is the
//! portable twin with the same blocking, used on machines without AVX2 and on other
//! architectures.
//!
//! [`epilogue_block`] finishes a block of the direct convolution: bias, activation and
//! residual on whole vectors, masked stores for a partial panel. It is a separate pass over
//! the block's sums (still in L1) rather than part of the kernel, because folding it into the
//! kernel body made the compiler keep the accumulators in memory inside the reduction loop.

/// The instruction set the kernels use, chosen once at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Scalar,
}

impl Isa {
    /// The widest instruction set this processor supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Whether this processor can run kernels of this instruction set.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }

    /// Rows of a full block for a kernel of `np` panels.
    pub fn mr(self, np: usize) -> usize {
        match (self, np) {
            (Isa::Avx512, 1) => 14,
            (Isa::Avx512, _) => 12,
            (Isa::Avx2, _) => 6,
            (Isa::Scalar, _) => 4,
        }
    }

    /// The most 16-channel panels one block covers.
    pub fn max_np(self) -> usize {
        match self {
            Isa::Avx512 => 2,
            _ => 1,
        }
    }
}

/// How `A` is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ALayout {
    /// Row `p` at `a + p * stride`, the reduction index contiguous (an NHWC image).
    Strided(usize),
    /// `[k / 16][mr][16]`: 16 reduction steps of one row are contiguous, then the next row
    /// (the layout the Winograd input transform writes with whole-vector stores). The panel
    /// height `mr` is the full block height whatever the block's row count; the reduction
    /// length must be a multiple of 16. Run offsets are ignored: the panel is read in order.
    Packed(usize),
}

/// One block product. Pointers are raw because blocks of the same buffers are computed
/// concurrently; the caller's `SAFETY` notes say why every access is in bounds.
#[derive(Clone, Copy, Debug)]
pub struct Block<'a> {
    /// Offsets (in floats, from `a`) of the reduction runs, each `run_len` long.
    pub runs: &'a [usize],
    pub run_len: usize,
    pub a: *const f32,
    pub a_layout: ALayout,
    /// Panel `j` at `b + j * b_ps`, `[runs.len() * run_len][16]`.
    pub b: *const f32,
    pub b_ps: usize,
    /// Row `p` of the block at `c + p * c_rs`, `np * 16` floats wide.
    pub c: *mut f32,
    pub c_rs: usize,
}

/// A convolution's epilogue as [`epilogue_block`] applies it: `y = act(acc + bias)`, then
/// `y = skip + scale·y` (`skip + y` when the scale is 1), in that order and without fused
/// multiply-adds, so that it rounds exactly like [`super::epilogue::Epilogue::store`].
#[derive(Clone, Copy, Debug)]
pub struct Output {
    /// The block's biases (`np * 16` readable values, only the first `valid` used).
    pub bias: Option<*const f32>,
    pub act: VecAct,
    /// `(scale, skip, skip_rs)`: row `p`'s residual input at `skip + p * skip_rs`, read
    /// (only the `valid` channels) before row `p` of `C` is written, so it may be `C` itself.
    pub residual: Option<(f32, *const f32, usize)>,
    /// Channels of each row to store (≤ `np * 16`); the lanes beyond are neither read from
    /// `skip` nor written.
    pub valid: usize,
}

/// The activations [`epilogue_block`] applies to whole vectors.
#[derive(Clone, Copy, Debug)]
pub enum VecAct {
    None,
    Relu,
    /// `y > 0 ? y : a·y` with one slope.
    Leaky(f32),
    /// The same with a slope per channel (`np * 16` readable values, like the bias).
    PRelu(*const f32),
    /// [`super::math::tanh`], lane by lane.
    Tanh,
}

/// The epilogue of one 16-lane vector, on plain arrays: the portable kernel's, and the
/// reference the vector versions are written after. Lanes from `valid` on are left alone.
#[inline(always)]
fn epilogue_lanes(o: &Output, y: &mut [f32; 16], lane0: usize, skip: Option<&[f32; 16]>) {
    let n = o.valid.saturating_sub(lane0).min(16);
    for l in 0..n {
        let mut v = y[l];
        if let Some(b) = o.bias {
            // SAFETY: `lane0 + l < valid ≤ np·16`, readable by the contract of `Output`.
            v += unsafe { *b.add(lane0 + l) };
        }
        v = match o.act {
            VecAct::None => v,
            VecAct::Relu => v.max(0.0),
            VecAct::Leaky(a) => {
                if v > 0.0 {
                    v
                } else {
                    a * v
                }
            }
            // SAFETY: as for the bias.
            VecAct::PRelu(a) => {
                if v > 0.0 {
                    v
                } else {
                    unsafe { *a.add(lane0 + l) * v }
                }
            }
            VecAct::Tanh => super::math::tanh(v),
        };
        if let (Some((s, _, _)), Some(k)) = (o.residual, skip) {
            v = if s == 1.0 { v + k[l] } else { k[l] + s * v };
        }
        y[l] = v;
    }
}

/// Computes one block of `m ≤ isa.mr(np)` rows and `np ≤ isa.max_np()` panels.
///
/// # Safety
/// Every address the block description implies must be valid: `A` rows `0..m` over every run,
/// `np` panels of `B` of `runs.len() * run_len` rows, `m` rows of `C` of `np * 16` floats.
/// With [`ALayout::Packed`] the panel holds `isa.mr(np)` rows per step whatever `m` is.
/// The instruction set must be supported (see [`Isa::is_supported`]).
pub unsafe fn block(isa: Isa, m: usize, np: usize, blk: &Block) {
    debug_assert!(m >= 1 && m <= isa.mr(np) && np >= 1 && np <= isa.max_np());
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from the caller.
        Isa::Avx512 => unsafe { x86::block_avx512(m, np, blk) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from the caller.
        Isa::Avx2 => unsafe { x86::block_avx2(m, blk) },
        // SAFETY: forwarded from the caller.
        _ => unsafe { block_scalar(m, blk) },
    }
}

/// Selects the monomorphised kernel for a row count known only at run time.
macro_rules! dispatch_rows {
    ($m:expr, $f:ident, $np:literal, $blk:expr, [$($r:literal),*]) => {
        match $m {
            $($r => $f::<$r, $np>($blk),)*
            _ => unreachable!("block rows out of range"),
        }
    };
}

/// # Safety
/// See [`block`].
unsafe fn block_scalar(m: usize, blk: &Block) {
    // SAFETY: forwarded from the caller.
    unsafe { dispatch_rows!(m, kernel_scalar, 1, blk, [1, 2, 3, 4]) }
}

/// The portable kernel: the same blocking, 16-lane arrays the compiler may vectorise.
///
/// # Safety
/// See [`block`].
#[inline(always)]
unsafe fn kernel_scalar<const MR: usize, const NP: usize>(blk: &Block) {
    let mut acc = [[[0.0f32; 16]; NP]; MR];
    let mut bk = blk.b;
    let mr_full = match blk.a_layout {
        ALayout::Packed(mr) => mr,
        ALayout::Strided(_) => 0,
    };
    let mut kk = 0usize;
    for &off in blk.runs {
        for k in 0..blk.run_len {
            for (p, accp) in acc.iter_mut().enumerate() {
                // SAFETY: in bounds by the contract of `block`.
                let av = unsafe {
                    match blk.a_layout {
                        ALayout::Strided(ps) => *blk.a.add(off + p * ps + k),
                        ALayout::Packed(_) => {
                            let k = kk + k;
                            *blk.a.add(((k / 16) * mr_full + p) * 16 + k % 16)
                        }
                    }
                };
                for (j, accj) in accp.iter_mut().enumerate() {
                    // SAFETY: in bounds by the contract of `block`.
                    let bv = unsafe { std::slice::from_raw_parts(bk.add(j * blk.b_ps), 16) };
                    for l in 0..16 {
                        accj[l] += av * bv[l];
                    }
                }
            }
            // SAFETY: stays within the panel (or one past its end).
            bk = unsafe { bk.add(16) };
        }
        kk += blk.run_len;
    }
    for (p, accp) in acc.iter().enumerate() {
        for (j, accj) in accp.iter().enumerate() {
            // SAFETY: in bounds by the contract of `block`.
            unsafe {
                std::ptr::copy_nonoverlapping(accj.as_ptr(), blk.c.add(p * blk.c_rs + j * 16), 16)
            };
        }
    }
}

/// Applies `o` to a block of raw sums and stores it: row `p`, panel `j` of the sums at
/// `acc + (p·np + j)·16` (the layout [`block`] writes with `c_rs = np·16`), row `p` of the
/// result at `c + p·c_rs`, `o.valid` channels wide.
///
/// # Safety
/// `acc` must hold `m·np·16` floats; `c` and `o` as [`Block`] and [`Output`] describe them.
/// The instruction set must be supported.
pub unsafe fn epilogue_block(
    isa: Isa,
    o: &Output,
    acc: *const f32,
    m: usize,
    np: usize,
    c: *mut f32,
    c_rs: usize,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from the caller.
        Isa::Avx512 => unsafe { x86::epilogue_block_avx512(o, acc, m, np, c, c_rs) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: forwarded from the caller.
        Isa::Avx2 => unsafe { x86::epilogue_block_avx2(o, acc, m, np, c, c_rs) },
        // SAFETY: forwarded from the caller.
        _ => unsafe { epilogue_block_lanes(o, acc, m, np, c, c_rs) },
    }
}

/// The portable [`epilogue_block`], 16-lane arrays the compiler may vectorise.
///
/// # Safety
/// See [`epilogue_block`].
#[inline(always)]
unsafe fn epilogue_block_lanes(
    o: &Output,
    acc: *const f32,
    m: usize,
    np: usize,
    c: *mut f32,
    c_rs: usize,
) {
    // SAFETY (whole body): in bounds by the contract of `epilogue_block` and `Output`.
    unsafe {
        for p in 0..m {
            for j in 0..np {
                let n = o.valid.saturating_sub(j * 16).min(16);
                let mut y =
                    std::ptr::read_unaligned(acc.add((p * np + j) * 16) as *const [f32; 16]);
                let mut k = [0.0f32; 16];
                if let Some((_, s, rs)) = o.residual {
                    std::ptr::copy_nonoverlapping(s.add(p * rs + j * 16), k.as_mut_ptr(), n);
                }
                epilogue_lanes(o, &mut y, j * 16, o.residual.map(|_| &k));
                std::ptr::copy_nonoverlapping(y.as_ptr(), c.add(p * c_rs + j * 16), n);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ALayout, Block, Output, VecAct};

    use std::arch::x86_64::*;

    /// # Safety
    /// See [`super::block`]; AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_avx512(m: usize, np: usize, blk: &Block) {
        // SAFETY: forwarded from the caller.
        unsafe {
            if np == 2 {
                dispatch_rows!(
                    m,
                    kernel_avx512,
                    2,
                    blk,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
                )
            } else {
                dispatch_rows!(
                    m,
                    kernel_avx512,
                    1,
                    blk,
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
                )
            }
        }
    }

    /// # Safety
    /// See [`super::block`]; AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn kernel_avx512<const MR: usize, const NP: usize>(blk: &Block) {
        let mut acc = [[_mm512_setzero_ps(); NP]; MR];
        let mut bk = blk.b;
        // SAFETY (whole body): every address is in bounds by the contract of `block`.
        unsafe {
            match blk.a_layout {
                ALayout::Strided(ps) => {
                    for &off in blk.runs {
                        let a0 = blk.a.add(off);
                        for k in 0..blk.run_len {
                            let mut bv = [_mm512_setzero_ps(); NP];
                            for (j, b) in bv.iter_mut().enumerate() {
                                *b = _mm512_loadu_ps(bk.add(j * blk.b_ps));
                            }
                            for (p, accp) in acc.iter_mut().enumerate() {
                                let av = _mm512_set1_ps(*a0.add(p * ps + k));
                                for j in 0..NP {
                                    accp[j] = _mm512_fmadd_ps(av, bv[j], accp[j]);
                                }
                            }
                            bk = bk.add(16);
                        }
                    }
                }
                ALayout::Packed(mr) => {
                    let steps = blk.runs.len() * blk.run_len;
                    let mut ag = blk.a;
                    for _ in 0..steps / 16 {
                        for kk in 0..16 {
                            let mut bv = [_mm512_setzero_ps(); NP];
                            for (j, b) in bv.iter_mut().enumerate() {
                                *b = _mm512_loadu_ps(bk.add(j * blk.b_ps));
                            }
                            for (p, accp) in acc.iter_mut().enumerate() {
                                let av = _mm512_set1_ps(*ag.add(p * 16 + kk));
                                for j in 0..NP {
                                    accp[j] = _mm512_fmadd_ps(av, bv[j], accp[j]);
                                }
                            }
                            bk = bk.add(16);
                        }
                        ag = ag.add(mr * 16);
                    }
                }
            }
            for (p, accp) in acc.iter().enumerate() {
                for (j, &v) in accp.iter().enumerate() {
                    _mm512_storeu_ps(blk.c.add(p * blk.c_rs + j * 16), v);
                }
            }
        }
    }

    /// [`super::epilogue_block`] with AVX-512.
    ///
    /// # Safety
    /// See [`super::epilogue_block`]; AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn epilogue_block_avx512(
        o: &Output,
        acc: *const f32,
        m: usize,
        np: usize,
        c: *mut f32,
        c_rs: usize,
    ) {
        for p in 0..m {
            for j in 0..np {
                // SAFETY: forwarded from the caller.
                unsafe {
                    let v = _mm512_loadu_ps(acc.add((p * np + j) * 16));
                    store_avx512(o, p, j, v, c.add(p * c_rs + j * 16));
                }
            }
        }
    }

    /// The epilogue of vector `j` of row `p`, in a register, and its (masked) store.
    ///
    /// # Safety
    /// See [`super::block`]; AVX-512F must be available. Always inlined into the kernel
    /// (whose `target_feature` context then covers the intrinsics), so that the accumulators
    /// stay in registers.
    #[inline(always)]
    unsafe fn store_avx512(o: &Output, p: usize, j: usize, mut v: __m512, cp: *mut f32) {
        let n = o.valid.saturating_sub(j * 16).min(16);
        if n == 0 {
            return;
        }
        let mask: __mmask16 = if n == 16 { 0xffff } else { (1u16 << n) - 1 };
        // SAFETY (whole body): in bounds by the contract of `block` and `Output`; masked
        // lanes are neither read nor written.
        unsafe {
            if let Some(b) = o.bias {
                v = _mm512_add_ps(v, _mm512_loadu_ps(b.add(j * 16)));
            }
            let zero = _mm512_setzero_ps();
            match o.act {
                VecAct::None => {}
                VecAct::Relu => v = _mm512_max_ps(v, zero),
                VecAct::Leaky(a) => {
                    let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, zero);
                    v = _mm512_mask_blend_ps(pos, _mm512_mul_ps(_mm512_set1_ps(a), v), v);
                }
                VecAct::PRelu(a) => {
                    let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, zero);
                    let a = _mm512_loadu_ps(a.add(j * 16));
                    v = _mm512_mask_blend_ps(pos, _mm512_mul_ps(a, v), v);
                }
                VecAct::Tanh => {
                    let mut y: [f32; 16] = std::mem::transmute(v);
                    y.iter_mut().for_each(|y| *y = crate::cpu::math::tanh(*y));
                    v = std::mem::transmute::<[f32; 16], __m512>(y);
                }
            }
            if let Some((s, skip, rs)) = o.residual {
                let sp = skip.add(p * rs + j * 16);
                let k = if n == 16 {
                    _mm512_loadu_ps(sp)
                } else {
                    _mm512_maskz_loadu_ps(mask, sp)
                };
                v = if s == 1.0 {
                    _mm512_add_ps(v, k)
                } else {
                    _mm512_add_ps(k, _mm512_mul_ps(_mm512_set1_ps(s), v))
                };
            }
            // Whole vectors load and store unmasked: masked accesses cost more on some
            // cores (Zen 4), and most vectors are whole.
            if n == 16 {
                _mm512_storeu_ps(cp, v);
            } else {
                _mm512_mask_storeu_ps(cp, mask, v);
            }
        }
    }

    /// [`super::epilogue_block`] with AVX2: the portable code compiled for it.
    ///
    /// # Safety
    /// See [`super::epilogue_block`]; AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn epilogue_block_avx2(
        o: &Output,
        acc: *const f32,
        m: usize,
        np: usize,
        c: *mut f32,
        c_rs: usize,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe { super::epilogue_block_lanes(o, acc, m, np, c, c_rs) }
    }

    /// # Safety
    /// See [`super::block`]; AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block_avx2(m: usize, blk: &Block) {
        // SAFETY: forwarded from the caller.
        unsafe { dispatch_rows!(m, kernel_avx2, 1, blk, [1, 2, 3, 4, 5, 6]) }
    }

    /// One 16-channel panel as two 8-lane vectors.
    ///
    /// # Safety
    /// See [`super::block`]; AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn kernel_avx2<const MR: usize, const NP: usize>(blk: &Block) {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let mut bk = blk.b;
        let (ps, mr, packed) = match blk.a_layout {
            ALayout::Strided(ps) => (ps, 0, false),
            ALayout::Packed(mr) => (0, mr, true),
        };
        let mut kk = 0usize;
        // SAFETY (whole body): every address is in bounds by the contract of `block`.
        unsafe {
            for &off in blk.runs {
                let a0 = if packed { blk.a } else { blk.a.add(off) };
                for k in 0..blk.run_len {
                    let b0 = _mm256_loadu_ps(bk);
                    let b1 = _mm256_loadu_ps(bk.add(8));
                    for (p, accp) in acc.iter_mut().enumerate() {
                        let idx = if packed {
                            let k = kk + k;
                            ((k / 16) * mr + p) * 16 + k % 16
                        } else {
                            p * ps + k
                        };
                        let av = _mm256_set1_ps(*a0.add(idx));
                        accp[0] = _mm256_fmadd_ps(av, b0, accp[0]);
                        accp[1] = _mm256_fmadd_ps(av, b1, accp[1]);
                    }
                    bk = bk.add(16);
                }
                kk += blk.run_len;
            }
            for (p, accp) in acc.iter().enumerate() {
                for (j, &v) in accp.iter().enumerate() {
                    _mm256_storeu_ps(blk.c.add(p * blk.c_rs + j * 8), v);
                }
            }
        }
    }
}
