//! The host twin of the device plan: [`DevicePlan`] executed on the CPU.
//!
//! Every [`Step`] is written here as the CUDA kernel computes it — same indexing over stored
//! (padded) channels, same batch layout, same buffers from the same plan, the padding zeroed
//! the same way — and the storage precision is emulated: values are rounded to `f16`/`bf16`
//! whenever a step stores them, convolution operands are rounded to TF32 in
//! [`Precision::Tf32`]. Products use the CPU backend's convolution kernels on the padded
//! weights (`f32` accumulation, like cuDNN's). So, on a machine without a GPU:
//! - the lowering, padding, layouts, batching and buffer assignment are checked against
//!   [`crate::cpu::reference`] on every shared model (`tests/cuda_plan.rs`);
//! - each precision's loss is measured before any GPU runs it (the device run in
//!   `bench/gpu.sh` checks the same numbers on the real arithmetic).
//!
//! [`TwinBackend`] wraps it as a [`Backend`] with batching, so the pipeline's batched,
//! same-shape tiling runs through the device plan in tests.

use std::sync::Arc;

use superres_graph::{Conv2d, Epilogue, Graph, Padding, ResizeMode, cubic_taps};

use super::dplan::{Act, Buf, DevicePlan, Lowered, Operand, SE_SLICES, Step};
use crate::cpu::conv::{ConvKernel, Skip};
use crate::cpu::{ConvAlgo, Isa};
use crate::io::{InputMap, OutputMap};
use crate::{
    Backend, Batch, EngineError, Executable, HostData, Io, Pending, Precision, check_batch,
};

/// Rounds a value to the storage precision.
#[inline]
pub fn store(v: f32, p: Precision) -> f32 {
    match p {
        Precision::Exact | Precision::Tf32 => v,
        Precision::Fp16 => half::f16::from_f32(v).to_f32(),
        Precision::Bf16 => half::bf16::from_f32(v).to_f32(),
    }
}

/// Rounds to TF32 (10 explicit mantissa bits, nearest even), as tensor cores read `f32`.
#[inline]
pub fn tf32(v: f32) -> f32 {
    if !v.is_finite() {
        return v;
    }
    let u = v.to_bits();
    let r = u.wrapping_add(0xfff + ((u >> 13) & 1)) & !0x1fff;
    f32::from_bits(r)
}

/// Rounds a convolution operand as the precision's products see it.
fn operand(v: f32, p: Precision) -> f32 {
    match p {
        Precision::Tf32 => tf32(v),
        _ => store(v, p),
    }
}

/// A graph lowered for the device and prepared for host execution.
pub struct Twin {
    lowered: Lowered,
    kernels: Vec<Option<ConvKernel>>,
}

impl Twin {
    pub fn new(graph: &Graph, precision: Precision) -> Result<Twin, EngineError> {
        let lowered = Lowered::new(graph, precision)?;
        let kernels = lowered
            .convs
            .iter()
            .map(|c| {
                c.as_ref().map(|d| {
                    // cuDNN's filter [cout][kh][kw][cin/g] back to the IR's HWIO for the CPU
                    // kernels, with the weights rounded as the device stores them.
                    let sgin = d.cin / d.groups;
                    let mut w = vec![0.0f32; d.weights.len()];
                    for co in 0..d.cout {
                        for ky in 0..d.kh {
                            for kx in 0..d.kw {
                                for ci in 0..sgin {
                                    let src = ((co * d.kh + ky) * d.kw + kx) * sgin + ci;
                                    let dst = ((ky * d.kw + kx) * sgin + ci) * d.cout + co;
                                    w[dst] = operand(d.weights[src], precision);
                                }
                            }
                        }
                    }
                    let padding = match d.symmetric_padding() {
                        Some((ph, pw)) => Padding {
                            top: ph,
                            bottom: ph,
                            left: pw,
                            right: pw,
                        },
                        None => Padding::default(),
                    };
                    let conv = Conv2d {
                        kh: d.kh,
                        kw: d.kw,
                        cin: d.cin,
                        cout: d.cout,
                        groups: d.groups,
                        stride: d.stride,
                        dilation: d.dilation,
                        padding,
                        weights: w,
                        epilogue: Epilogue::default(),
                    };
                    ConvKernel::new(&conv, Isa::detect(), ConvAlgo::Direct)
                })
            })
            .collect();
        Ok(Twin { lowered, kernels })
    }

    pub fn lowered(&self) -> &Lowered {
        &self.lowered
    }

    /// Runs a batch through the device plan.
    pub fn run(&self, batch: &Batch, io: &Io) -> Result<Vec<Batch>, EngineError> {
        self.run_with(batch, io, &mut |_, _, _| false)
    }

    /// [`Twin::run`], offering every step to `exec` first: a step it returns `true` for
    /// is taken as done (tests run the CUDA C kernels compiled for the host this way).
    pub fn run_with(
        &self,
        batch: &Batch,
        io: &Io,
        exec: &mut dyn FnMut(&DevicePlan, &Step, &mut HostArena) -> bool,
    ) -> Result<Vec<Batch>, EngineError> {
        check_batch(&self.lowered.graph, batch, io)?;
        let plan = DevicePlan::new(&self.lowered, batch.n, batch.h, batch.w)?;
        let p = self.lowered.precision;
        let bytes = p.storage_bytes();
        let mut arena = HostArena {
            slots: plan
                .slot_bytes
                .iter()
                .map(|b| vec![0.0; b / bytes])
                .collect(),
            input: vec![0.0; plan.input_bytes / bytes],
            pad: vec![0.0; plan.pad_bytes / bytes],
        };
        input(&plan, batch, io.input, p, &mut arena.input);
        for step in &plan.steps {
            if !exec(&plan, step, &mut arena) {
                self.step(&plan, step, &mut arena);
            }
        }
        Ok(plan
            .outputs
            .iter()
            .enumerate()
            .take(if io.output.is_some() { 1 } else { usize::MAX })
            .map(|(_, o)| {
                let src = arena.get(o.buf);
                let npix = batch.n * o.h * o.w;
                let data = match io.output {
                    Some(m) => HostData::U8(output_u8(src, o.cs, o.c, npix, &m)),
                    None => HostData::F32(
                        (0..npix * o.c)
                            .map(|i| src[(i / o.c) * o.cs + i % o.c])
                            .collect(),
                    ),
                };
                Batch {
                    n: batch.n,
                    h: o.h,
                    w: o.w,
                    c: o.c,
                    data,
                }
            })
            .collect())
    }

    fn step(&self, plan: &DevicePlan, step: &Step, arena: &mut HostArena) {
        let p = self.lowered.precision;
        let params = &self.lowered.params;
        let n = plan.n;
        match step {
            Step::Conv {
                node,
                src,
                dst,
                ih,
                iw,
                oh,
                ow,
                pad,
            } => {
                let Some(k) = &self.kernels[*node] else {
                    return;
                };
                let desc = self.lowered.convs[*node].as_ref().expect("lowered conv");
                let (cin, cout) = (desc.cin, desc.cout);
                let (sh, sw, x) = match pad {
                    Some((ph, pw)) => {
                        let [t, _, l, _] = desc.padding;
                        let s = arena.get(*src);
                        let mut padded = vec![0.0f32; n * ph * pw * cin];
                        for img in 0..n {
                            for y in 0..*ih {
                                for xx in 0..*iw {
                                    let from = ((img * ih + y) * iw + xx) * cin;
                                    let to = ((img * ph + y + t) * pw + xx + l) * cin;
                                    padded[to..to + cin].copy_from_slice(&s[from..from + cin]);
                                }
                            }
                        }
                        arena.pad[..padded.len()].copy_from_slice(&padded);
                        (*ph, *pw, padded)
                    }
                    None => (*ih, *iw, arena.get(*src)[..n * ih * iw * cin].to_vec()),
                };
                let x: Vec<f32> = x.iter().map(|&v| operand(v, p)).collect();
                let mut out = arena.take(*dst);
                for img in 0..n {
                    let xi = &x[img * sh * sw * cin..][..sh * sw * cin];
                    let o = &mut out[img * oh * ow * cout..][..oh * ow * cout];
                    k.run(xi, sh, sw, o, *oh, *ow, Skip::None);
                    o.iter_mut().for_each(|v| *v = store(*v, p));
                }
                arena.put(*dst, out);
            }
            Step::Pointwise {
                dst,
                src,
                npix,
                c,
                cs,
                bias,
                act,
                skip,
                residual,
            } => {
                let mut out = arena.take(*dst);
                let source = (src != dst).then(|| arena.get(*src)[..npix * cs].to_vec());
                let skip = skip.map(|(b, scs)| (arena.get(b)[..npix * scs].to_vec(), scs));
                for i in 0..npix * cs {
                    let (px, ch) = (i / cs, i % cs);
                    if ch >= *c {
                        out[i] = 0.0;
                        continue;
                    }
                    let mut y = source.as_ref().map_or(out[i], |s| s[i]);
                    if let Some(b) = bias {
                        y += params[*b][ch];
                    }
                    y = act.apply(y, ch, params);
                    if let Some((s, scs)) = &skip {
                        let sv = s[px * scs + ch];
                        y = if *residual == 1.0 {
                            sv + y
                        } else {
                            sv + residual * y
                        };
                    }
                    out[i] = store(y, p);
                }
                arena.put(*dst, out);
            }
            Step::Binary {
                dst,
                a,
                npix,
                c,
                cs,
                b,
                op,
            } => {
                let mut out = arena.take(*dst);
                let av = (a != dst).then(|| arena.get(*a)[..npix * cs].to_vec());
                let bv = match b {
                    Operand::Tensor(buf, bcs) => Some((arena.get(*buf).to_vec(), *bcs)),
                    _ => None,
                };
                for i in 0..npix * cs {
                    let (px, ch) = (i / cs, i % cs);
                    if ch >= *c {
                        out[i] = 0.0;
                        continue;
                    }
                    let x = av.as_ref().map_or(out[i], |v| v[i]);
                    let y = match b {
                        Operand::Tensor(..) => {
                            let (v, bcs) = bv.as_ref().expect("tensor operand");
                            v[px * bcs + ch]
                        }
                        Operand::PerChannel(id) => params[*id][ch],
                        Operand::Scalar(s) => *s,
                    };
                    let r = match op {
                        0 => x + y,
                        1 => x - y,
                        2 => x * y,
                        _ => x / y,
                    };
                    out[i] = store(r, p);
                }
                arena.put(*dst, out);
            }
            Step::DepthToSpace {
                dst,
                dst_cs,
                src,
                src_cs,
                h,
                w,
                oc,
                block,
                crd,
            } => {
                let b = *block;
                let (oh, ow) = (h * b, w * b);
                let s = arena.get(*src).to_vec();
                let mut out = arena.take(*dst);
                for (i, o) in out[..n * oh * ow * dst_cs].iter_mut().enumerate() {
                    let (px, ch) = (i / dst_cs, i % dst_cs);
                    if ch >= *oc {
                        *o = 0.0;
                        continue;
                    }
                    let (img, rem) = (px / (oh * ow), px % (oh * ow));
                    let (y, x) = (rem / ow, rem % ow);
                    let (sy, sx, bi, bj) = (y / b, x / b, y % b, x % b);
                    let sc = if *crd {
                        ch * b * b + bi * b + bj
                    } else {
                        (bi * b + bj) * oc + ch
                    };
                    *o = s[((img * h + sy) * w + sx) * src_cs + sc];
                }
                arena.put(*dst, out);
            }
            Step::Resize {
                dst,
                dst_cs,
                src,
                src_cs,
                h,
                w,
                c,
                factor,
                mode,
            } => {
                let f = *factor;
                let (oh, ow) = (h * f / mode.down(), w * f / mode.down());
                let s = arena.get(*src).to_vec();
                let mut out = arena.take(*dst);
                let coord = |o: usize, len: usize| -> (usize, usize, f32) {
                    let v = ((o as f32 + 0.5) / f as f32 - 0.5).max(0.0);
                    let i0 = (v.floor() as usize).min(len - 1);
                    (i0, (i0 + 1).min(len - 1), v - i0 as f32)
                };
                for (i, o) in out[..n * oh * ow * dst_cs].iter_mut().enumerate() {
                    let (px, ch) = (i / dst_cs, i % dst_cs);
                    if ch >= *c {
                        *o = 0.0;
                        continue;
                    }
                    let (img, rem) = (px / (oh * ow), px % (oh * ow));
                    let (y, x) = (rem / ow, rem % ow);
                    let at = |yy: usize, xx: usize| s[((img * h + yy) * w + xx) * src_cs + ch];
                    *o = if let ResizeMode::Bicubic { down } = *mode {
                        let (ys, wy) = cubic_taps(y, *h, f, down);
                        let (xs, wx) = cubic_taps(x, *w, f, down);
                        let row = |yy: usize| {
                            at(yy, xs[0]) * wx[0]
                                + at(yy, xs[1]) * wx[1]
                                + at(yy, xs[2]) * wx[2]
                                + at(yy, xs[3]) * wx[3]
                        };
                        let v = row(ys[0]) * wy[0]
                            + row(ys[1]) * wy[1]
                            + row(ys[2]) * wy[2]
                            + row(ys[3]) * wy[3];
                        store(v, p)
                    } else if *mode == ResizeMode::Bilinear {
                        let (y0, y1, fy) = coord(y, *h);
                        let (x0, x1, fx) = coord(x, *w);
                        let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
                        let bot = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
                        store(top + (bot - top) * fy, p)
                    } else {
                        at(y / f, x / f)
                    };
                }
                arena.put(*dst, out);
            }
            Step::Concat {
                dst,
                dst_cs,
                npix,
                parts,
            } => {
                let sources: Vec<(Vec<f32>, usize, usize)> = parts
                    .iter()
                    .map(|(b, c, cs)| (arena.get(*b).to_vec(), *c, *cs))
                    .collect();
                let mut out = arena.take(*dst);
                let mut off = 0;
                for (k, (s, c, cs)) in sources.iter().enumerate() {
                    let last = k + 1 == sources.len();
                    let span = if last { dst_cs - off } else { *c };
                    for px in 0..*npix {
                        for ch in 0..span {
                            out[px * dst_cs + off + ch] =
                                if ch < *c { s[px * cs + ch] } else { 0.0 };
                        }
                    }
                    off += c;
                }
                arena.put(*dst, out);
            }
            Step::Border {
                dst,
                src,
                cs,
                h,
                w,
                oh,
                ow,
                top,
                left,
            } => {
                let s = arena.get(*src).to_vec();
                let mut out = arena.take(*dst);
                for (i, o) in out[..n * oh * ow * cs].iter_mut().enumerate() {
                    let (px, ch) = (i / cs, i % cs);
                    let (img, rem) = (px / (oh * ow), px % (oh * ow));
                    let y = superres_graph::Border::source(rem / ow, *top, *h);
                    let x = superres_graph::Border::source(rem % ow, *left, *w);
                    *o = s[((img * h + y) * w + x) * cs + ch];
                }
                arena.put(*dst, out);
            }
            Step::SqueezeExcite {
                node,
                dst,
                src,
                hw,
                c,
                cs,
            } => {
                let layers = self.lowered.ses[*node].as_deref().unwrap_or(&[]);
                let s = arena.get(*src)[..n * hw * cs].to_vec();
                // As se_sum and se_mean: per slice of pixels in f64, then the slices in order.
                let per = hw.div_ceil(SE_SLICES);
                let mut gates = Vec::with_capacity(n * c);
                for img in 0..n {
                    let mut v: Vec<f32> = (0..*c)
                        .map(|ch| {
                            let mut acc = 0.0f64;
                            for sl in 0..SE_SLICES {
                                let (p0, p1) = ((sl * per).min(*hw), ((sl + 1) * per).min(*hw));
                                let mut part = 0.0f64;
                                for q in p0..p1 {
                                    part += f64::from(s[(img * hw + q) * cs + ch]);
                                }
                                acc += part;
                            }
                            (acc / *hw as f64) as f32
                        })
                        .collect();
                    for d in layers {
                        let wt = &params[d.weights];
                        v = (0..d.cout)
                            .map(|o| {
                                let mut acc = d.bias.map_or(0.0, |b| params[b][o]);
                                for k in 0..d.cin {
                                    acc += wt[o * d.cin + k] * v[k];
                                }
                                d.act.apply(acc, o, params)
                            })
                            .collect();
                    }
                    gates.extend(v);
                }
                let mut out = arena.take(*dst);
                for (i, o) in out[..n * hw * cs].iter_mut().enumerate() {
                    let (px, ch) = (i / cs, i % cs);
                    *o = if ch < *c {
                        store(s[i] * gates[(px / hw) * c + ch], p)
                    } else {
                        0.0
                    };
                }
                arena.put(*dst, out);
            }
        }
    }
}

/// The buffers of a host run: one `Vec` per plan buffer, values rounded to the storage
/// precision.
pub struct HostArena {
    slots: Vec<Vec<f32>>,
    input: Vec<f32>,
    pad: Vec<f32>,
}

impl HostArena {
    pub fn get(&self, b: Buf) -> &[f32] {
        match b {
            Buf::Input => &self.input,
            Buf::Slot(s) => &self.slots[s],
            Buf::Pad => &self.pad,
        }
    }

    /// Takes a buffer out (to write it while reading others); [`HostArena::put`] returns it.
    pub fn take(&mut self, b: Buf) -> Vec<f32> {
        match b {
            Buf::Input => std::mem::take(&mut self.input),
            Buf::Slot(s) => std::mem::take(&mut self.slots[s]),
            Buf::Pad => std::mem::take(&mut self.pad),
        }
    }

    pub fn put(&mut self, b: Buf, v: Vec<f32>) {
        match b {
            Buf::Input => self.input = v,
            Buf::Slot(s) => self.slots[s] = v,
            Buf::Pad => self.pad = v,
        }
    }
}

/// The `input_*` kernels: host samples to the stored, padded network input.
fn input(plan: &DevicePlan, batch: &Batch, map: Option<InputMap>, p: Precision, out: &mut [f32]) {
    let (c, cs) = (plan.input_c, plan.input_cs);
    let npix = batch.n * batch.h * batch.w;
    for (i, o) in out[..npix * cs].iter_mut().enumerate() {
        let (px, ch) = (i / cs, i % cs);
        let v = if ch >= c {
            0.0
        } else {
            match (&batch.data, map) {
                (HostData::F32(v), _) => v[px * c + ch],
                (HostData::U8(v), Some(m)) => m.apply(v[px * c + m.perm[ch] as usize], ch),
                (HostData::U8(v), None) => v[px * c + ch] as f32,
            }
        };
        *o = store(v, p);
    }
}

/// The `output_*_u8` kernel.
fn output_u8(src: &[f32], cs: usize, c: usize, npix: usize, m: &OutputMap) -> Vec<u8> {
    (0..npix * c)
        .map(|i| {
            let (px, ch) = (i / c, i % c);
            m.apply(src[px * cs + m.perm[ch] as usize], ch)
        })
        .collect()
}

/// The twin as a backend: the device plan on the host, with batches of
/// [`TwinBackend::batch`] images, so the pipeline's device path runs in tests.
#[derive(Clone, Debug)]
pub struct TwinBackend {
    pub precision: Precision,
    pub batch: usize,
}

impl Backend for TwinBackend {
    fn name(&self) -> String {
        format!("cuda twin (host, {})", self.precision)
    }

    fn prepare(&self, graph: &Graph) -> Result<Arc<dyn Executable>, EngineError> {
        Ok(Arc::new(TwinExecutable {
            twin: Twin::new(graph, self.precision)?,
            batch: self.batch.max(1),
        }))
    }

    fn precision(&self) -> Precision {
        self.precision
    }
}

struct TwinExecutable {
    twin: Twin,
    batch: usize,
}

impl Executable for TwinExecutable {
    fn submit(&self, batch: Batch, io: &Io) -> Result<Pending, EngineError> {
        let result = self.twin.run(&batch, io);
        Ok(Pending::ready(result))
    }

    fn peak_bytes(&self, h: usize, w: usize, batch: usize) -> Result<u64, EngineError> {
        let plan = DevicePlan::new(&self.twin.lowered, batch.max(1), h, w)?;
        Ok(super::device::run_bytes(&plan) as u64)
    }

    fn preferred_batch(&self, _h: usize, _w: usize) -> usize {
        self.batch
    }
}

/// The activation of a pointwise step, for tests that compare it with the IR's.
pub fn activation(act: &Act, x: f32, ch: usize, lowered: &Lowered) -> f32 {
    act.apply(x, ch, &lowered.params)
}
