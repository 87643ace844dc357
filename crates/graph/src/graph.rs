//! The graph, its nodes and operators.

use crate::Tensor;

/// The value produced by the node at this index of [`Graph::nodes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// An activation function, either as its own node or fused into a convolution's epilogue.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    Relu,
    /// `x > 0 ? x : alpha * x`
    LeakyRelu(f32),
    /// Per-channel slopes: `x > 0 ? x : alpha[c] * x` (a single slope is broadcast).
    PRelu(Vec<f32>),
    Tanh,
    Sigmoid,
    Clip {
        min: f32,
        max: f32,
    },
}

impl Activation {
    /// Applies the activation to one value of channel `c`.
    #[inline]
    pub fn apply(&self, x: f32, c: usize) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu(a) => {
                if x > 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Activation::PRelu(a) => {
                if x > 0.0 {
                    x
                } else {
                    let slope = if a.len() == 1 { a[0] } else { a[c] };
                    slope * x
                }
            }
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Clip { min, max } => x.max(*min).min(*max),
        }
    }
}

/// Elementwise operators without parameters; they only survive in a graph until the
/// pattern passes turn them into activations (see [`crate::passes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Abs,
    Neg,
}

/// Elementwise binary operators with NumPy broadcasting of the second operand against the
/// first: same shape, per-channel `[C]`, or a scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }
}

/// Explicit zero padding of a convolution, in pixels of its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    /// TensorFlow's `SAME` padding for stride 1: the total `dilation*(k-1)` is split with the
    /// smaller half before (so a 4×4 kernel pads 1 before and 2 after, as TF and OpenCV do).
    pub fn same(kh: usize, kw: usize, dilation: (usize, usize)) -> Self {
        let th = dilation.0 * (kh - 1);
        let tw = dilation.1 * (kw - 1);
        Padding {
            top: th / 2,
            bottom: th - th / 2,
            left: tw / 2,
            right: tw - tw / 2,
        }
    }
}

/// Edge replication and cropping, per side, in pixels of its input: a positive side adds that
/// many copies of the edge row or column, a negative one removes that many rows or columns.
///
/// Networks of unpadded convolutions (waifu2x's) shrink the image as they go: they are run on
/// an input replicated at its edges by as much as they consume (waifu2x-ncnn-vulkan's
/// "prepadding"), and their skip connections crop the wider branch to the narrower one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Border {
    pub top: isize,
    pub bottom: isize,
    pub left: isize,
    pub right: isize,
}

impl Border {
    /// The same amount on every side.
    pub fn uniform(n: isize) -> Self {
        Border {
            top: n,
            bottom: n,
            left: n,
            right: n,
        }
    }

    /// Output size for an `h × w` input, or `None` if the crop leaves no pixel.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let side = |n: usize, a: isize, b: isize| {
            let n = (n as isize).checked_add(a)?.checked_add(b)?;
            (n > 0).then_some(n as usize)
        };
        Some((
            side(h, self.top, self.bottom)?,
            side(w, self.left, self.right)?,
        ))
    }

    /// The source row (or column) of output row `o`: `o - before`, clamped to `0..n`.
    #[inline]
    pub fn source(o: usize, before: isize, n: usize) -> usize {
        (o as isize - before).clamp(0, n as isize - 1) as usize
    }
}

/// One fully connected layer of a [`SqueezeExcite`] block: `act(W · v + b)` on a vector of
/// channel statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub cin: usize,
    pub cout: usize,
    /// `[cout, cin]`, row-major.
    pub weights: Vec<f32>,
    pub bias: Option<Vec<f32>>,
    pub activation: Option<Activation>,
}

/// Squeeze-and-excitation (the channel attention of waifu2x's CUNet, RCAN and their kin):
/// every channel of the image is multiplied by a gate computed from the channel means
/// through `layers` (typically reduce, ReLU, expand, sigmoid).
///
/// The means are over the run's whole input, so a tiled run averages over each tile (with
/// its margins), as waifu2x-ncnn-vulkan's tiles do: with this operator a tiled result is
/// close to, not equal to, the untiled one.
#[derive(Clone, Debug, PartialEq)]
pub struct SqueezeExcite {
    pub layers: Vec<Dense>,
}

impl SqueezeExcite {
    /// The per-channel gates for channel means `means` (`f32` throughout, accumulated in
    /// input order, as ncnn's `InnerProduct`).
    pub fn gates(&self, means: &[f32]) -> Vec<f32> {
        let mut v = means.to_vec();
        for d in &self.layers {
            let mut out = Vec::with_capacity(d.cout);
            for o in 0..d.cout {
                let row = &d.weights[o * d.cin..(o + 1) * d.cin];
                let mut acc = d.bias.as_ref().map_or(0.0, |b| b[o]);
                for (w, x) in row.iter().zip(&v) {
                    acc += w * x;
                }
                out.push(d.activation.as_ref().map_or(acc, |a| a.apply(acc, o)));
            }
            v = out;
        }
        v
    }

    /// Weights and biases of the layers.
    pub fn parameter_count(&self) -> usize {
        self.layers
            .iter()
            .map(|d| d.weights.len() + d.bias.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// What a convolution does to its accumulator before storing it, in this order:
/// `y = act(acc + bias)`, then `out = skip + residual_scale * y` when `residual` is set.
/// The skip tensor is the convolution node's second input.
///
/// The order of the floating-point operations is the order of the unfused graph
/// (bias add, activation, scale, residual add, each rounded to `f32`), so fusion does not
/// change a single bit of the result.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Epilogue {
    pub bias: Option<Vec<f32>>,
    pub activation: Option<Activation>,
    pub residual: Option<f32>,
}

impl Epilogue {
    /// Applies the epilogue to the accumulator of output channel `c`; `skip` is the value of
    /// the residual input at the same position (ignored without a residual).
    #[inline]
    pub fn apply(&self, acc: f32, c: usize, skip: f32) -> f32 {
        let mut y = acc;
        if let Some(b) = &self.bias {
            y += b[c];
        }
        if let Some(a) = &self.activation {
            y = a.apply(y, c);
        }
        match self.residual {
            None => y,
            Some(1.0) => skip + y,
            Some(s) => skip + s * y,
        }
    }
}

/// A 2-D convolution over an `[H, W, cin]` image.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    pub kh: usize,
    pub kw: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub padding: Padding,
    /// `[kh, kw, cin/groups, cout]`, row-major.
    pub weights: Vec<f32>,
    pub epilogue: Epilogue,
}

impl Conv2d {
    /// Kernel weights laid out `[cout, cin/groups, kh, kw]` (ONNX, PyTorch, ncnn) in the
    /// IR's `[kh, kw, cin/groups, cout]` order.
    pub fn weights_from_oihw(
        oihw: &[f32],
        cout: usize,
        cin_per_group: usize,
        kh: usize,
        kw: usize,
    ) -> Vec<f32> {
        let mut weights = vec![0.0f32; oihw.len()];
        for o in 0..cout {
            for i in 0..cin_per_group {
                for y in 0..kh {
                    for x in 0..kw {
                        weights[((y * kw + x) * cin_per_group + i) * cout + o] =
                            oihw[((o * cin_per_group + i) * kh + y) * kw + x];
                    }
                }
            }
        }
        weights
    }

    /// A stride-1, undilated, ungrouped convolution with TensorFlow `SAME` padding.
    pub fn same(
        kh: usize,
        kw: usize,
        cin: usize,
        cout: usize,
        weights: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Self {
        Conv2d {
            kh,
            kw,
            cin,
            cout,
            groups: 1,
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding::same(kh, kw, (1, 1)),
            weights,
            epilogue: Epilogue {
                bias,
                ..Epilogue::default()
            },
        }
    }

    /// Multiply-accumulates per output pixel.
    pub fn macs_per_pixel(&self) -> usize {
        self.kh * self.kw * (self.cin / self.groups) * self.cout
    }

    /// Output spatial size for an input of `h × w`, or `None` if the kernel does not fit.
    pub fn output_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let eh = self.dilation.0 * (self.kh - 1) + 1;
        let ew = self.dilation.1 * (self.kw - 1) + 1;
        let ph = h + self.padding.top + self.padding.bottom;
        let pw = w + self.padding.left + self.padding.right;
        if ph < eh || pw < ew {
            return None;
        }
        Some(((ph - eh) / self.stride.0 + 1, (pw - ew) / self.stride.1 + 1))
    }
}

/// Channel order of a depth-to-space (pixel shuffle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepthToSpaceMode {
    /// TensorFlow and ONNX `DCR`: `out[y*b+i, x*b+j, c] = in[y, x, (i*b + j)*C + c]`.
    Dcr,
    /// ONNX `CRD` and PyTorch `PixelShuffle`: `out[y*b+i, x*b+j, c] = in[y, x, c*b*b + i*b + j]`.
    Crd,
}

/// Interpolation of an integer-factor upsampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    /// Bilinear with half-pixel centres and edge clamping.
    Bilinear,
    /// Bicubic as ncnn's `Interp` computes it: Keys' cubic with `A = -0.75`, half-pixel
    /// centres, taps clamped to the edge, no antialiasing; rows first, then columns. It
    /// resamples by `factor / down`, so with `down > 1` it can shrink: realesr-animevideov3's
    /// ×2 and ×3 ncnn models end in a ×0.5 / ×0.75 bicubic of a ×4 network. The input size
    /// must be a multiple of `down`.
    Bicubic {
        down: usize,
    },
}

impl ResizeMode {
    /// The denominator of the resize factor (1 but for a shrinking bicubic).
    pub fn down(self) -> usize {
        match self {
            ResizeMode::Bicubic { down } => down,
            _ => 1,
        }
    }
}

/// The four weights of ncnn's bicubic interpolation at fraction `fx` (`A = -0.75`; the last
/// one is `1 -` the others, as ncnn computes it).
#[inline]
pub fn cubic_weights(fx: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let fx0 = fx + 1.0;
    let fx1 = fx;
    let fx2 = 1.0 - fx;
    let c0 = A * fx0 * fx0 * fx0 - 5.0 * A * fx0 * fx0 + 8.0 * A * fx0 - 4.0 * A;
    let c1 = (A + 2.0) * fx1 * fx1 * fx1 - (A + 3.0) * fx1 * fx1 + 1.0;
    let c2 = (A + 2.0) * fx2 * fx2 * fx2 - (A + 3.0) * fx2 * fx2 + 1.0;
    [c0, c1, c2, 1.0 - c0 - c1 - c2]
}

/// Source taps and weights of output coordinate `o` for a bicubic resize of `n` source
/// pixels by `factor / down`: `fx = (o + 0.5) · down / factor − 0.5` in `f32` of the `f64`
/// product (as ncnn), taps `floor(fx) − 1 ..= floor(fx) + 2` clamped to `0..n`.
#[inline]
pub fn cubic_taps(o: usize, n: usize, factor: usize, down: usize) -> ([usize; 4], [f32; 4]) {
    let scale = down as f64 / factor as f64;
    let fx = ((o as f64 + 0.5) * scale - 0.5) as f32;
    let sx = fx.floor();
    let w = cubic_weights(fx - sx);
    let sx = sx as i64;
    let last = n as i64 - 1;
    let tap = |k: i64| (sx + k).clamp(0, last) as usize;
    ([tap(-1), tap(0), tap(1), tap(2)], w)
}

/// An operator. Every operator has one output.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The image entering the network.
    Input {
        channels: usize,
    },
    /// A constant operand of a [`Op::Binary`]: a scalar or a per-channel `[C]` vector.
    Const(Tensor),
    /// Inputs: `[x]`, or `[x, skip]` when the epilogue has a residual.
    Conv2d(Conv2d),
    /// Inputs: `[a, b]`.
    Binary(BinaryOp),
    Unary(UnaryOp),
    Activation(Activation),
    DepthToSpace {
        block: usize,
        mode: DepthToSpaceMode,
    },
    /// Upsampling by an integer factor.
    Resize {
        factor: usize,
        mode: ResizeMode,
    },
    /// Concatenation along channels; any number of inputs of the same spatial size.
    Concat,
    /// Edge replication or cropping ([`Border`]).
    Border(Border),
    /// Channel attention ([`SqueezeExcite`]).
    SqueezeExcite(SqueezeExcite),
}

impl Op {
    /// A short name for listings (`models inspect`) and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input { .. } => "Input",
            Op::Const(_) => "Const",
            Op::Conv2d(_) => "Conv2d",
            Op::Binary(BinaryOp::Add) => "Add",
            Op::Binary(BinaryOp::Sub) => "Sub",
            Op::Binary(BinaryOp::Mul) => "Mul",
            Op::Binary(BinaryOp::Div) => "Div",
            Op::Unary(UnaryOp::Abs) => "Abs",
            Op::Unary(UnaryOp::Neg) => "Neg",
            Op::Activation(Activation::Relu) => "Relu",
            Op::Activation(Activation::LeakyRelu(_)) => "LeakyRelu",
            Op::Activation(Activation::PRelu(_)) => "PRelu",
            Op::Activation(Activation::Tanh) => "Tanh",
            Op::Activation(Activation::Sigmoid) => "Sigmoid",
            Op::Activation(Activation::Clip { .. }) => "Clip",
            Op::DepthToSpace { .. } => "DepthToSpace",
            Op::Resize { .. } => "Resize",
            Op::Concat => "Concat",
            Op::Border(_) => "Border",
            Op::SqueezeExcite(_) => "SqueezeExcite",
        }
    }
}

/// Spatial size of a value relative to the network input, as the fraction `num / den`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    pub num: usize,
    pub den: usize,
}

impl Scale {
    /// `num / den` in lowest terms, so that equal scales compare equal (a stride-2
    /// convolution followed by a ×2 upsampling is 1/1, not 2/2).
    pub fn reduced(num: usize, den: usize) -> Scale {
        let g = gcd(num, den).max(1);
        Scale {
            num: num / g,
            den: den / g,
        }
    }
}

/// A node of the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The name it had in the source file, for messages.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    /// Channels of the value this node produces (`None` for a constant).
    pub channels: Option<usize>,
    /// Spatial scale of this value relative to the input (`None` for a constant).
    pub scale: Option<Scale>,
}

/// A structural error: the graph cannot be what the operators say it is.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("node '{node}' ({op}): {message}")]
    Invalid {
        node: String,
        op: &'static str,
        message: String,
    },
}

/// A super-resolution network: one image input, one or more image outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Named outputs; the first is the one an upscale returns.
    pub outputs: Vec<(String, ValueId)>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the image input.
    pub fn input(&mut self, name: &str, channels: usize) -> ValueId {
        self.nodes.push(Node {
            name: name.to_string(),
            op: Op::Input { channels },
            inputs: vec![],
            channels: Some(channels),
            scale: Some(Scale { num: 1, den: 1 }),
        });
        ValueId(self.nodes.len() - 1)
    }

    /// Adds a constant operand.
    pub fn constant(&mut self, name: &str, value: Tensor) -> ValueId {
        self.nodes.push(Node {
            name: name.to_string(),
            op: Op::Const(value),
            inputs: vec![],
            channels: None,
            scale: None,
        });
        ValueId(self.nodes.len() - 1)
    }

    /// Adds a node after checking its inputs' channels and sizes agree with the operator.
    pub fn push(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<ValueId>,
    ) -> Result<ValueId, GraphError> {
        let (channels, scale) = self.infer(name, &op, &inputs)?;
        self.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            channels,
            scale,
        });
        Ok(ValueId(self.nodes.len() - 1))
    }

    /// Names `value` as a graph output.
    pub fn output(&mut self, name: &str, value: ValueId) {
        self.outputs.push((name.to_string(), value));
    }

    pub fn node(&self, v: ValueId) -> &Node {
        &self.nodes[v.0]
    }

    /// The image input node, if the graph has exactly one.
    pub fn input_id(&self) -> Option<ValueId> {
        let mut it = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| matches!(n.op, Op::Input { .. }));
        let first = it.next()?;
        it.next().is_none().then_some(ValueId(first.0))
    }

    /// Channels of the image input.
    pub fn input_channels(&self) -> Option<usize> {
        self.input_id().and_then(|v| self.nodes[v.0].channels)
    }

    /// Channels of a value (0 for a constant).
    pub fn channels(&self, v: ValueId) -> usize {
        self.nodes[v.0].channels.unwrap_or(0)
    }

    /// The integer upscaling factor of a value relative to the input, if it is one.
    pub fn scale_factor(&self, v: ValueId) -> Option<usize> {
        let s = self.nodes[v.0].scale?;
        (s.den == 1).then_some(s.num)
    }

    /// A copy with every convolution's weights left out (empty): the topology, shapes and
    /// epilogues, for executors that keep their own packed copy of the weights and need the
    /// graph only to plan and walk it. Never holds two copies of the weights at once.
    pub fn without_weights(&self) -> Graph {
        let nodes = self
            .nodes
            .iter()
            .map(|n| Node {
                name: n.name.clone(),
                op: match &n.op {
                    Op::Conv2d(c) => Op::Conv2d(Conv2d {
                        weights: Vec::new(),
                        epilogue: c.epilogue.clone(),
                        ..*c
                    }),
                    op => op.clone(),
                },
                inputs: n.inputs.clone(),
                channels: n.channels,
                scale: n.scale,
            })
            .collect();
        Graph {
            nodes,
            outputs: self.outputs.clone(),
        }
    }

    /// Number of weights and biases.
    pub fn parameter_count(&self) -> usize {
        self.nodes
            .iter()
            .map(|n| match &n.op {
                Op::Conv2d(c) => {
                    c.weights.len()
                        + c.epilogue.bias.as_ref().map_or(0, Vec::len)
                        + act_params(&c.epilogue.activation)
                }
                Op::Const(t) => t.len(),
                Op::Activation(a) => act_params(&Some(a.clone())),
                Op::SqueezeExcite(se) => se.parameter_count(),
                _ => 0,
            })
            .sum()
    }

    /// Multiply-accumulates per input pixel (a convolution at scale `s` counts `s²` times).
    pub fn macs_per_input_pixel(&self) -> f64 {
        self.nodes
            .iter()
            .filter_map(|n| match (&n.op, n.scale) {
                (Op::Conv2d(c), Some(s)) => {
                    let f = s.num as f64 / s.den as f64;
                    Some(c.macs_per_pixel() as f64 * f * f)
                }
                _ => None,
            })
            .sum()
    }

    /// Counts of each operator kind, sorted by name.
    pub fn op_counts(&self) -> Vec<(&'static str, usize)> {
        let mut m = std::collections::BTreeMap::new();
        for n in &self.nodes {
            *m.entry(n.op.kind()).or_insert(0) += 1;
        }
        m.into_iter().collect()
    }

    /// Users of each value, by index.
    pub fn users(&self) -> Vec<Vec<ValueId>> {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            for v in &n.inputs {
                users[v.0].push(ValueId(i));
            }
        }
        for (_, v) in &self.outputs {
            // Outputs count as a user so that passes never fuse them away.
            users[v.0].push(ValueId(usize::MAX));
        }
        users
    }

    fn infer(
        &self,
        name: &str,
        op: &Op,
        inputs: &[ValueId],
    ) -> Result<(Option<usize>, Option<Scale>), GraphError> {
        let err = |message: String| GraphError::Invalid {
            node: name.to_string(),
            op: op.kind(),
            message,
        };
        for v in inputs {
            if v.0 >= self.nodes.len() {
                return Err(err(format!("input {} does not exist yet", v.0)));
            }
        }
        let arity = |n: usize| -> Result<(), GraphError> {
            if inputs.len() != n {
                return Err(err(format!("expects {n} input(s), got {}", inputs.len())));
            }
            Ok(())
        };
        let image = |i: usize| -> Result<(usize, Scale), GraphError> {
            let n = &self.nodes[inputs[i].0];
            match (n.channels, n.scale) {
                (Some(c), Some(s)) => Ok((c, s)),
                _ => Err(err(format!(
                    "input '{}' is a constant, expected an image",
                    n.name
                ))),
            }
        };
        match op {
            Op::Input { channels } => Ok((Some(*channels), Some(Scale { num: 1, den: 1 }))),
            Op::Const(_) => Ok((None, None)),
            Op::Conv2d(c) => {
                let want = if c.epilogue.residual.is_some() { 2 } else { 1 };
                arity(want)?;
                let (cin, s) = image(0)?;
                if cin != c.cin {
                    return Err(err(format!(
                        "kernel expects {} input channels, got {cin}",
                        c.cin
                    )));
                }
                if c.groups == 0 || c.cin % c.groups != 0 || c.cout % c.groups != 0 {
                    return Err(err(format!(
                        "{} groups do not divide {} → {} channels",
                        c.groups, c.cin, c.cout
                    )));
                }
                if c.weights.len() != c.kh * c.kw * (c.cin / c.groups) * c.cout {
                    return Err(err(format!(
                        "{} weights for a {}×{}×{}×{} kernel",
                        c.weights.len(),
                        c.kh,
                        c.kw,
                        c.cin / c.groups,
                        c.cout
                    )));
                }
                if let Some(b) = &c.epilogue.bias
                    && b.len() != c.cout
                {
                    return Err(err(format!("{} biases for {} channels", b.len(), c.cout)));
                }
                if c.stride.0 == 0 || c.stride.1 == 0 || c.dilation.0 == 0 || c.dilation.1 == 0 {
                    return Err(err("zero stride or dilation".into()));
                }
                if c.stride.0 != c.stride.1 {
                    return Err(err("unequal strides are not supported".into()));
                }
                let scale = Scale {
                    num: s.num,
                    den: s.den * c.stride.0,
                };
                let g = gcd(scale.num, scale.den);
                let scale = Scale {
                    num: scale.num / g,
                    den: scale.den / g,
                };
                if want == 2 {
                    let (sc, ss) = image(1)?;
                    if sc != c.cout || ss != scale {
                        return Err(err(
                            "residual input does not match the convolution's output".into(),
                        ));
                    }
                }
                Ok((Some(c.cout), Some(scale)))
            }
            Op::Binary(_) => {
                arity(2)?;
                let a = &self.nodes[inputs[0].0];
                let b = &self.nodes[inputs[1].0];
                match (a.channels, &b.op, b.channels) {
                    (Some(c), Op::Const(t), _) => {
                        if t.len() != 1 && t.len() != c {
                            return Err(err(format!(
                                "constant '{}' of shape {:?} does not broadcast to {c} channels",
                                b.name,
                                t.shape()
                            )));
                        }
                        Ok((Some(c), a.scale))
                    }
                    (None, _, Some(_)) => {
                        Err(err("a constant first operand is not supported".into()))
                    }
                    (Some(c), _, Some(cb)) => {
                        if c != cb || a.scale != b.scale {
                            return Err(err(format!(
                                "operands '{}' ({c} channels) and '{}' ({cb} channels) differ in shape",
                                a.name, b.name
                            )));
                        }
                        Ok((Some(c), a.scale))
                    }
                    _ => Err(err("both operands are constants".into())),
                }
            }
            Op::Unary(_) | Op::Activation(_) => {
                arity(1)?;
                let (c, s) = image(0)?;
                if let Op::Activation(Activation::PRelu(a)) = op
                    && a.len() != 1
                    && a.len() != c
                {
                    return Err(err(format!("{} slopes for {c} channels", a.len())));
                }
                Ok((Some(c), Some(s)))
            }
            Op::DepthToSpace { block, .. } => {
                arity(1)?;
                let (c, s) = image(0)?;
                let bb = block * block;
                if *block == 0 || c % bb != 0 {
                    return Err(err(format!(
                        "{c} channels are not divisible by block² = {bb}"
                    )));
                }
                Ok((Some(c / bb), Some(Scale::reduced(s.num * block, s.den))))
            }
            Op::Resize { factor, mode } => {
                arity(1)?;
                let (c, s) = image(0)?;
                if *factor == 0 || mode.down() == 0 {
                    return Err(err("zero resize factor".into()));
                }
                Ok((
                    Some(c),
                    Some(Scale::reduced(s.num * factor, s.den * mode.down())),
                ))
            }
            Op::Concat => {
                if inputs.is_empty() {
                    return Err(err("no inputs".into()));
                }
                let (mut total, s0) = image(0)?;
                for i in 1..inputs.len() {
                    let (c, s) = image(i)?;
                    if s != s0 {
                        return Err(err("inputs differ in spatial size".into()));
                    }
                    total += c;
                }
                Ok((Some(total), Some(s0)))
            }
            // Sizes shift by a constant, which the asymptotic scale does not see; the
            // concrete sizes are checked by [`Graph::shapes`].
            Op::Border(_) => {
                arity(1)?;
                let (c, s) = image(0)?;
                Ok((Some(c), Some(s)))
            }
            Op::SqueezeExcite(se) => {
                arity(1)?;
                let (c, s) = image(0)?;
                let mut width = c;
                for (k, d) in se.layers.iter().enumerate() {
                    if d.cin != width {
                        return Err(err(format!(
                            "layer {k} takes {} values, the one before gives {width}",
                            d.cin
                        )));
                    }
                    if d.weights.len() != d.cin * d.cout {
                        return Err(err(format!(
                            "layer {k}: {} weights for {} → {}",
                            d.weights.len(),
                            d.cin,
                            d.cout
                        )));
                    }
                    if d.bias.as_ref().is_some_and(|b| b.len() != d.cout) {
                        return Err(err(format!(
                            "layer {k}: biases for other than {} outputs",
                            d.cout
                        )));
                    }
                    width = d.cout;
                }
                if se.layers.is_empty() || width != c {
                    return Err(err(format!(
                        "the gates must be one per channel ({c}), the layers give {width}"
                    )));
                }
                Ok((Some(c), Some(s)))
            }
        }
    }

    /// Rebuilds the node metadata and checks the whole graph; passes call this after rewriting.
    pub fn validate(&self) -> Result<(), GraphError> {
        let mut g = Graph::new();
        for n in &self.nodes {
            let (channels, scale) = g.infer(&n.name, &n.op, &n.inputs)?;
            if channels != n.channels || scale != n.scale {
                return Err(GraphError::Invalid {
                    node: n.name.clone(),
                    op: n.op.kind(),
                    message: "stored shape metadata is stale".into(),
                });
            }
            for v in &n.inputs {
                if v.0 >= g.nodes.len() {
                    return Err(GraphError::Invalid {
                        node: n.name.clone(),
                        op: n.op.kind(),
                        message: "inputs are not in topological order".into(),
                    });
                }
            }
            g.nodes.push(n.clone());
        }
        if self.outputs.is_empty() {
            return Err(GraphError::Invalid {
                node: String::new(),
                op: "Graph",
                message: "the graph has no outputs".into(),
            });
        }
        Ok(())
    }
}

fn act_params(a: &Option<Activation>) -> usize {
    match a {
        Some(Activation::PRelu(v)) => v.len(),
        _ => 0,
    }
}
