//! The device plan: what a GPU executes for a graph, as plain data.
//!
//! Two stages, both pure functions, so that everything a device run depends on except the
//! arithmetic of cuDNN is testable on the host ([`super::twin`] executes this plan):
//!
//! - [`Lowered::new`] (once per model): each value's *stored* channel count — channels above
//!   4 are padded to a multiple of 8, which cuDNN's NHWC tensor-core kernels need, with zero
//!   weights, zero biases and zeros written into the padding by every kernel so a padded lane
//!   never carries anything into a product; convolution weights transposed to cuDNN's NHWC
//!   filter layout (`[cout][kh][kw][cin]`) over the padded channels; every convolution split
//!   into a cuDNN product and our fused epilogue (bias, activation, residual in the IR's
//!   order); the small vectors (biases, PReLU slopes, per-channel constants) in one table
//!   uploaded once.
//! - [`DevicePlan::new`] (once per batch size and tile shape): the shared planner
//!   ([`crate::plan`]) assigns buffers with the padded storage and the batch folded in, and
//!   the graph becomes a list of [`Step`]s over those buffers. Convolutions never run in
//!   place (cuDNN writes the raw products, then the epilogue reads the skip tensor), element-wise
//!   operators do. Asymmetric padding (TensorFlow's `SAME` for even kernels), which cuDNN
//!   cannot express, becomes an explicit zero-padding step into a scratch buffer.

use superres_graph::{Activation, BinaryOp, Border, DepthToSpaceMode, Graph, Op, ResizeMode};

use crate::plan::{self, InPlace, Loc};
use crate::{EngineError, Precision};

/// Stored channels of a value with `c` channels: above 4, a multiple of 8.
pub fn padded_channels(c: usize) -> usize {
    if c <= 4 { c } else { c.div_ceil(8) * 8 }
}

/// An index into [`Lowered::params`].
pub type ParamId = usize;

/// An activation as the `pointwise` kernel takes it (codes shared with `kernels.cu`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Act {
    /// 0 none, 1 relu, 2 leaky, 3 prelu, 4 tanh, 5 sigmoid, 6 clip, 7 abs, 8 neg.
    pub code: i32,
    /// PReLU slopes and their count (1: broadcast).
    pub alpha: Option<(ParamId, usize)>,
    pub p0: f32,
    pub p1: f32,
}

impl Act {
    pub const NONE: Act = Act {
        code: 0,
        alpha: None,
        p0: 0.0,
        p1: 0.0,
    };

    fn new(a: Option<&Activation>, params: &mut Vec<Vec<f32>>) -> Act {
        let simple = |code, p0, p1| Act {
            code,
            alpha: None,
            p0,
            p1,
        };
        match a {
            None => Act::NONE,
            Some(Activation::Relu) => simple(1, 0.0, 0.0),
            Some(Activation::LeakyRelu(s)) => simple(2, *s, 0.0),
            Some(Activation::PRelu(v)) => {
                params.push(v.clone());
                Act {
                    code: 3,
                    alpha: Some((params.len() - 1, v.len())),
                    p0: 0.0,
                    p1: 0.0,
                }
            }
            Some(Activation::Tanh) => simple(4, 0.0, 0.0),
            Some(Activation::Sigmoid) => simple(5, 0.0, 0.0),
            Some(Activation::Clip { min, max }) => simple(6, *min, *max),
        }
    }

    /// The host twin of the kernel's `activate`.
    pub fn apply(&self, x: f32, ch: usize, params: &[Vec<f32>]) -> f32 {
        match self.code {
            1 => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            2 => {
                if x > 0.0 {
                    x
                } else {
                    self.p0 * x
                }
            }
            3 => {
                if x > 0.0 {
                    x
                } else {
                    let (id, n) = self.alpha.unwrap_or((0, 1));
                    params[id][if n == 1 { 0 } else { ch }] * x
                }
            }
            4 => x.tanh(),
            5 => 1.0 / (1.0 + (-x).exp()),
            6 => x.max(self.p0).min(self.p1),
            7 => x.abs(),
            8 => -x,
            _ => x,
        }
    }
}

/// A convolution as cuDNN runs it, over stored (padded) channels.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvDesc {
    pub kh: usize,
    pub kw: usize,
    /// Stored input and output channels.
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    /// `(top, bottom, left, right)` zero padding of the IR.
    pub padding: [usize; 4],
    /// `[cout][kh][kw][cin / groups]`, `f32` (converted to the storage type at upload).
    pub weights: Vec<f32>,
    /// The epilogue: bias (padded with zeros), activation, residual scale.
    pub bias: Option<ParamId>,
    pub act: Act,
    pub residual: Option<f32>,
}

impl ConvDesc {
    /// The padding cuDNN applies itself, when it is symmetric.
    pub fn symmetric_padding(&self) -> Option<(usize, usize)> {
        let [t, b, l, r] = self.padding;
        (t == b && l == r).then_some((t, l))
    }
}

/// One dense layer of a squeeze-and-excitation block, its weights and bias in
/// [`Lowered::params`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenseDesc {
    pub cin: usize,
    pub cout: usize,
    /// `[cout][cin]`.
    pub weights: ParamId,
    pub bias: Option<ParamId>,
    pub act: Act,
}

/// Slices of an image's pixels summed separately by `se_sum` (then in order by `se_mean`),
/// so the channel sums spread over the device and do not depend on its size.
pub const SE_SLICES: usize = 64;

/// Where a squeeze-and-excitation step of `n` images keeps its scratch, in bytes from the
/// start of [`Buf::Pad`]: the partial sums (`f64`) at 0, then the means and two vectors for
/// the dense layers (`f32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeScratch {
    pub means: usize,
    pub ping: [usize; 2],
    pub bytes: usize,
}

impl SeScratch {
    pub fn new(n: usize, cs: usize, c: usize, layers: &[DenseDesc]) -> SeScratch {
        let widest = layers.iter().map(|d| d.cout).max().unwrap_or(0).max(c);
        let means = n * SE_SLICES * cs * 8;
        let first = means + 4 * n * c;
        let second = first + 4 * n * widest;
        SeScratch {
            means,
            ping: [first, second],
            bytes: second + 4 * n * widest,
        }
    }
}

/// A binary operator's second operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Tensor(Buf, usize),
    PerChannel(ParamId),
    Scalar(f32),
}

/// Binary operator codes of `kernels.cu`.
pub fn binary_code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
    }
}

/// A graph lowered for a device, independent of the input size.
#[derive(Clone, Debug)]
pub struct Lowered {
    pub precision: Precision,
    /// The topology (weights left out: `convs` holds them).
    pub graph: Graph,
    /// Stored channels of every value (0 for constants).
    pub cs: Vec<usize>,
    /// The convolution of each node that is one.
    pub convs: Vec<Option<ConvDesc>>,
    /// The activation of each `Activation` node.
    pub acts: Vec<Option<Act>>,
    /// Small vectors uploaded once: biases, slopes, per-channel constants.
    pub params: Vec<Vec<f32>>,
    /// The constant operand of each `Const` node: scalar or per-channel parameter.
    pub consts: Vec<Option<Operand>>,
    /// The dense layers of each `SqueezeExcite` node.
    pub ses: Vec<Option<Vec<DenseDesc>>>,
}

impl Lowered {
    pub fn new(graph: &Graph, precision: Precision) -> Result<Lowered, EngineError> {
        let unsupported = |message: String| EngineError::Unsupported {
            backend: "cuda",
            message,
        };
        graph.validate().map_err(|e| unsupported(e.to_string()))?;
        if graph.input_id().is_none() {
            return Err(unsupported(
                "the graph needs exactly one image input".into(),
            ));
        }
        let grouped = graph
            .nodes
            .iter()
            .any(|n| matches!(&n.op, Op::Conv2d(c) if c.groups != 1));
        let pad = |c: usize| if grouped { c } else { padded_channels(c) };
        let n = graph.nodes.len();
        let mut cs = vec![0usize; n];
        let mut convs = vec![None; n];
        let mut acts = vec![None; n];
        let mut consts = vec![None; n];
        let mut ses = vec![None; n];
        let mut params: Vec<Vec<f32>> = Vec::new();
        for (i, node) in graph.nodes.iter().enumerate() {
            let c = node.channels.unwrap_or(0);
            cs[i] = match &node.op {
                Op::Const(t) => {
                    consts[i] = Some(match t.as_scalar() {
                        Some(s) => Operand::Scalar(s),
                        None => {
                            params.push(t.data().to_vec());
                            Operand::PerChannel(params.len() - 1)
                        }
                    });
                    0
                }
                // Element-wise results keep their first operand's layout (they may run in
                // place over it).
                Op::Unary(_)
                | Op::Activation(_)
                | Op::Binary(_)
                | Op::SqueezeExcite(_)
                | Op::Border(_) => cs[node.inputs[0].0],
                _ => pad(c),
            };
            match &node.op {
                Op::Conv2d(conv) => {
                    let cin = cs[node.inputs[0].0];
                    let cout = cs[i];
                    let g = conv.groups;
                    let (gin, gout) = (conv.cin / g, conv.cout / g);
                    let sgin = cin / g;
                    let mut w = vec![0.0f32; cout * conv.kh * conv.kw * sgin];
                    for ky in 0..conv.kh {
                        for kx in 0..conv.kw {
                            for ci in 0..gin {
                                for co in 0..conv.cout {
                                    let src = ((ky * conv.kw + kx) * gin + ci) * conv.cout + co;
                                    let dst = ((co * conv.kh + ky) * conv.kw + kx) * sgin + ci;
                                    w[dst] = conv.weights[src];
                                }
                            }
                        }
                    }
                    let _ = gout;
                    let bias = conv.epilogue.bias.as_ref().map(|b| {
                        let mut v = b.clone();
                        v.resize(cout, 0.0);
                        params.push(v);
                        params.len() - 1
                    });
                    let act = Act::new(conv.epilogue.activation.as_ref(), &mut params);
                    let p = conv.padding;
                    convs[i] = Some(ConvDesc {
                        kh: conv.kh,
                        kw: conv.kw,
                        cin,
                        cout,
                        groups: g,
                        stride: conv.stride,
                        dilation: conv.dilation,
                        padding: [p.top, p.bottom, p.left, p.right],
                        weights: w,
                        bias,
                        act,
                        residual: conv.epilogue.residual,
                    });
                }
                Op::Activation(a) => acts[i] = Some(Act::new(Some(a), &mut params)),
                Op::SqueezeExcite(se) => {
                    let layers = se
                        .layers
                        .iter()
                        .map(|d| {
                            params.push(d.weights.clone());
                            let weights = params.len() - 1;
                            let bias = d.bias.as_ref().map(|b| {
                                params.push(b.clone());
                                params.len() - 1
                            });
                            let act = Act::new(d.activation.as_ref(), &mut params);
                            DenseDesc {
                                cin: d.cin,
                                cout: d.cout,
                                weights,
                                bias,
                                act,
                            }
                        })
                        .collect();
                    ses[i] = Some(layers);
                }
                Op::Unary(u) => {
                    acts[i] = Some(Act {
                        code: match u {
                            superres_graph::UnaryOp::Abs => 7,
                            superres_graph::UnaryOp::Neg => 8,
                        },
                        ..Act::NONE
                    })
                }
                _ => {}
            }
        }
        Ok(Lowered {
            precision,
            graph: graph.without_weights(),
            cs,
            convs,
            acts,
            params,
            consts,
            ses,
        })
    }

    /// Bytes of the weights and parameters on the device.
    pub fn weight_bytes(&self) -> usize {
        let w: usize = self
            .convs
            .iter()
            .flatten()
            .map(|c| c.weights.len() * self.precision.storage_bytes())
            .sum();
        w + self.params.iter().map(|p| p.len() * 4).sum::<usize>()
    }
}

/// A device buffer of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// The network input, converted from the host's batch.
    Input,
    Slot(usize),
    /// Scratch for explicitly padded convolution inputs.
    Pad,
}

/// One device operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// `dst = conv(src)` (raw products; the epilogue is the next step). With `pad`, `src`
    /// is first copied with zero borders into [`Buf::Pad`] of `(ph, pw)` pixels.
    Conv {
        node: usize,
        src: Buf,
        dst: Buf,
        ih: usize,
        iw: usize,
        oh: usize,
        ow: usize,
        pad: Option<(usize, usize)>,
    },
    /// `dst = skip + residual · act(src + bias)` over `npix` pixels.
    Pointwise {
        dst: Buf,
        src: Buf,
        npix: usize,
        c: usize,
        cs: usize,
        bias: Option<ParamId>,
        act: Act,
        skip: Option<(Buf, usize)>,
        residual: f32,
    },
    Binary {
        dst: Buf,
        a: Buf,
        npix: usize,
        c: usize,
        cs: usize,
        b: Operand,
        op: i32,
    },
    DepthToSpace {
        dst: Buf,
        dst_cs: usize,
        src: Buf,
        src_cs: usize,
        h: usize,
        w: usize,
        oc: usize,
        block: usize,
        crd: bool,
    },
    Resize {
        dst: Buf,
        dst_cs: usize,
        src: Buf,
        src_cs: usize,
        h: usize,
        w: usize,
        c: usize,
        factor: usize,
        mode: ResizeMode,
    },
    /// Parts `(buffer, channels, stored channels)` side by side along channels.
    Concat {
        dst: Buf,
        dst_cs: usize,
        npix: usize,
        parts: Vec<(Buf, usize, usize)>,
    },
    /// Edge replication or cropping of `n` images of `h × w` into `oh × ow` (same `cs`).
    Border {
        dst: Buf,
        src: Buf,
        cs: usize,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        top: isize,
        left: isize,
    },
    /// `dst = src · gates(means(src))` per image and channel, through [`Buf::Pad`] as the
    /// scratch of the sums and vectors ([`SeScratch`]).
    SqueezeExcite {
        node: usize,
        dst: Buf,
        src: Buf,
        hw: usize,
        c: usize,
        cs: usize,
    },
}

/// One graph output: where it ends and its shape.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutputDesc {
    pub buf: Buf,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub cs: usize,
}

/// The plan of one run: `n` images of `h × w`.
#[derive(Clone, Debug)]
pub struct DevicePlan {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub input_c: usize,
    pub input_cs: usize,
    /// Bytes of each arena slot, for the whole batch.
    pub slot_bytes: Vec<usize>,
    pub input_bytes: usize,
    pub pad_bytes: usize,
    /// Bytes of one stored value.
    pub elem_bytes: usize,
    pub steps: Vec<Step>,
    pub outputs: Vec<OutputDesc>,
}

impl DevicePlan {
    pub fn new(lowered: &Lowered, n: usize, h: usize, w: usize) -> Result<DevicePlan, EngineError> {
        let g = &lowered.graph;
        let bytes = lowered.precision.storage_bytes();
        let p = plan::plan(
            g,
            h,
            w,
            |_, node| match node.op {
                Op::Conv2d(_) => InPlace::No,
                _ => plan::elementwise_in_place(node),
            },
            |(a, b, c)| a * b * padded_channels(c),
            // cuDNN reads one tensor per convolution: concatenations get buffers.
            |_, _| false,
        )?;
        // Stored sizes with the real stored channel counts (the planner's `storage` above
        // sized slots by value shape; recompute per value with `cs` and take maxima).
        let mut slot_bytes = vec![0usize; p.slot_sizes.len()];
        for (i, l) in p.loc.iter().enumerate() {
            if let Loc::Slot(s) = *l {
                let (a, b, _) = p.shapes[i];
                slot_bytes[s] = slot_bytes[s].max(n * a * b * lowered.cs[i] * bytes);
            }
        }
        let buf = |v: usize| match p.loc[v] {
            Loc::Input => Buf::Input,
            Loc::Slot(s) => Buf::Slot(s),
            // Never planned here (no concatenation is read in parts above).
            Loc::Const | Loc::Parts => Buf::Pad,
        };
        let input = g.input_id().map_or(0, |v| v.0);
        let mut steps = Vec::new();
        let mut pad_bytes = 0usize;
        for (i, node) in g.nodes.iter().enumerate() {
            let (oh, ow, c) = p.shapes[i];
            let cs = lowered.cs[i];
            let npix = n * oh * ow;
            let arg = |k: usize| node.inputs[k].0;
            match &node.op {
                Op::Input { .. } | Op::Const(_) => {}
                Op::Conv2d(_) => {
                    let conv = lowered.convs[i].as_ref().ok_or_else(|| {
                        EngineError::Device(format!("node '{}' was not lowered", node.name))
                    })?;
                    let (ih, iw, _) = p.shapes[arg(0)];
                    let pad = match conv.symmetric_padding() {
                        Some(_) => None,
                        None => {
                            let [t, b, l, r] = conv.padding;
                            let (ph, pw) = (ih + t + b, iw + l + r);
                            pad_bytes = pad_bytes.max(n * ph * pw * conv.cin * bytes);
                            Some((ph, pw))
                        }
                    };
                    steps.push(Step::Conv {
                        node: i,
                        src: buf(arg(0)),
                        dst: buf(i),
                        ih,
                        iw,
                        oh,
                        ow,
                        pad,
                    });
                    steps.push(Step::Pointwise {
                        dst: buf(i),
                        src: buf(i),
                        npix,
                        c,
                        cs,
                        bias: conv.bias,
                        act: conv.act,
                        skip: conv.residual.map(|_| (buf(arg(1)), lowered.cs[arg(1)])),
                        residual: conv.residual.unwrap_or(1.0),
                    });
                }
                Op::Activation(_) | Op::Unary(_) => steps.push(Step::Pointwise {
                    dst: buf(i),
                    src: buf(arg(0)),
                    npix,
                    c,
                    cs,
                    bias: None,
                    act: lowered.acts[i].unwrap_or(Act::NONE),
                    skip: None,
                    residual: 1.0,
                }),
                Op::Binary(op) => {
                    let b = arg(1);
                    let operand = match lowered.consts[b] {
                        Some(o) => o,
                        None => Operand::Tensor(buf(b), lowered.cs[b]),
                    };
                    steps.push(Step::Binary {
                        dst: buf(i),
                        a: buf(arg(0)),
                        npix,
                        c,
                        cs,
                        b: operand,
                        op: binary_code(*op),
                    });
                }
                Op::DepthToSpace { block, mode } => {
                    let (ih, iw, _) = p.shapes[arg(0)];
                    steps.push(Step::DepthToSpace {
                        dst: buf(i),
                        dst_cs: cs,
                        src: buf(arg(0)),
                        src_cs: lowered.cs[arg(0)],
                        h: ih,
                        w: iw,
                        oc: c,
                        block: *block,
                        crd: *mode == DepthToSpaceMode::Crd,
                    });
                }
                Op::Resize { factor, mode } => {
                    let (ih, iw, _) = p.shapes[arg(0)];
                    steps.push(Step::Resize {
                        dst: buf(i),
                        dst_cs: cs,
                        src: buf(arg(0)),
                        src_cs: lowered.cs[arg(0)],
                        h: ih,
                        w: iw,
                        c,
                        factor: *factor,
                        mode: *mode,
                    });
                }
                Op::Border(Border { top, left, .. }) => {
                    let (ih, iw, _) = p.shapes[arg(0)];
                    steps.push(Step::Border {
                        dst: buf(i),
                        src: buf(arg(0)),
                        cs,
                        h: ih,
                        w: iw,
                        oh,
                        ow,
                        top: *top,
                        left: *left,
                    });
                }
                Op::SqueezeExcite(_) => {
                    let layers = lowered.ses[i].as_deref().unwrap_or(&[]);
                    pad_bytes = pad_bytes.max(SeScratch::new(n, cs, c, layers).bytes);
                    steps.push(Step::SqueezeExcite {
                        node: i,
                        dst: buf(i),
                        src: buf(arg(0)),
                        hw: oh * ow,
                        c,
                        cs,
                    });
                }
                Op::Concat => steps.push(Step::Concat {
                    dst: buf(i),
                    dst_cs: cs,
                    npix,
                    parts: node
                        .inputs
                        .iter()
                        .map(|v| (buf(v.0), p.shapes[v.0].2, lowered.cs[v.0]))
                        .collect(),
                }),
            }
        }
        let outputs = g
            .outputs
            .iter()
            .map(|(_, v)| {
                let (a, b, c) = p.shapes[v.0];
                OutputDesc {
                    buf: buf(v.0),
                    h: a,
                    w: b,
                    c,
                    cs: lowered.cs[v.0],
                }
            })
            .collect();
        Ok(DevicePlan {
            n,
            h,
            w,
            input_c: p.shapes[input].2,
            input_cs: lowered.cs[input],
            slot_bytes,
            input_bytes: n * h * w * lowered.cs[input] * bytes,
            pad_bytes,
            elem_bytes: bytes,
            steps,
            outputs,
        })
    }

    /// Device bytes of the run's buffers (the arena, the input, the padding scratch).
    pub fn arena_bytes(&self) -> usize {
        self.slot_bytes.iter().sum::<usize>() + self.input_bytes + self.pad_bytes
    }

    /// Values of the largest buffer: cuDNN's tensor descriptors count elements in 32 bits.
    pub fn max_buffer_elements(&self) -> usize {
        let largest = self.slot_bytes.iter().copied().max().unwrap_or(0);
        largest.max(self.input_bytes).max(self.pad_bytes) / self.elem_bytes.max(1)
    }

    /// Host-visible transfer buffers: the batch's input and every output, at `f32`.
    pub fn transfer_bytes(&self) -> usize {
        let outs: usize = self.outputs.iter().map(|o| o.h * o.w * o.c * 4).sum();
        self.n * (self.h * self.w * self.input_c * 4 + outs)
    }
}
