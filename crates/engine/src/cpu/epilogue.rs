//! The epilogue of a convolution as the kernels apply it (bias, activation, residual on
//! whole register blocks), shared by the direct, pixel-vectorised and Winograd kernels.

use superres_graph::Activation;

use super::gemm::{self, Isa, VecAct};
use super::math::tanh;

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
