//! 8-bit samples in and out of a network: the family arithmetic a backend applies so that a
//! tile crosses the bus as bytes, once each way.
//!
//! The maps are written so that no operation can be contracted into a fused multiply-add and
//! every backend computes the same bits: the CPU applies them on the host with these
//! functions, the CUDA backend in its conversion kernels (compiled with `--fmad=false`).
//! They express the arithmetic of OpenCV `dnn_superres` exactly (see `superres-upscale`'s
//! families): EDSR's `[B, G, R] − mean` and `out + mean`, the Y channel's `v · float32(1/255)`
//! and `v · 255`, round half to even, saturation.

/// 8-bit samples to a network value: `x[c] = ((src[perm[c]] as f32) + add[c]) * mul / div`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputMap {
    /// Source channel of each network channel.
    pub perm: [u8; 4],
    pub add: [f32; 4],
    pub mul: f32,
    pub div: f32,
}

/// A network value to 8-bit samples: `dst[c] = saturate(round_half_even((v[perm[c]] + add[c]) * mul))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputMap {
    /// Network channel of each output channel.
    pub perm: [u8; 4],
    pub add: [f32; 4],
    pub mul: f32,
}

impl InputMap {
    /// The identity on channels with `x = v * mul / div`.
    pub fn scaled(mul: f32, div: f32) -> Self {
        InputMap {
            perm: [0, 1, 2, 3],
            add: [0.0; 4],
            mul,
            div,
        }
    }

    #[inline]
    pub fn apply(&self, v: u8, c: usize) -> f32 {
        let _ = c;
        (v as f32 + self.add[c]) * self.mul / self.div
    }

    /// Converts `pixels` pixels of `channels` samples each.
    pub fn convert(&self, src: &[u8], channels: usize, out: &mut [f32]) {
        for (o, s) in out
            .chunks_exact_mut(channels)
            .zip(src.chunks_exact(channels))
        {
            for (c, v) in o.iter_mut().enumerate() {
                *v = self.apply(s[self.perm[c] as usize], c);
            }
        }
    }
}

/// OpenCV's `saturate_cast<uchar>(cvRound(v))`: round half to even, clamp, NaN to 0.
#[inline]
pub fn saturate_u8(v: f32) -> u8 {
    let r = v.round_ties_even();
    if r >= 255.0 {
        255
    } else if r > 0.0 {
        r as u8
    } else {
        0
    }
}

impl OutputMap {
    pub fn scaled(mul: f32) -> Self {
        OutputMap {
            perm: [0, 1, 2, 3],
            add: [0.0; 4],
            mul,
        }
    }

    #[inline]
    pub fn apply(&self, v: f32, c: usize) -> u8 {
        saturate_u8((v + self.add[c]) * self.mul)
    }

    /// Converts pixels of `channels` network values into as many samples.
    pub fn convert(&self, src: &[f32], channels: usize, out: &mut [u8]) {
        for (o, s) in out
            .chunks_exact_mut(channels)
            .zip(src.chunks_exact(channels))
        {
            for (c, v) in o.iter_mut().enumerate() {
                *v = self.apply(s[self.perm[c] as usize], c);
            }
        }
    }
}
