//! ONNX models (`.onnx`) into the superres IR.
//!
//! # Why hand-written
//!
//! The ONNX crates either link a C++ runtime (ort) or lack operators super-resolution
//! networks use (candle-onnx has no `DepthToSpace`; tract would be a second graph IR to
//! translate from). The importer only needs to *read* a file: [`proto`] declares the few
//! `onnx.proto` messages and fields we read as prost derives (no protoc, no build script),
//! and this module maps each node onto IR operators. Malformed bytes, inconsistent tensors and
//! unknown operators all end in an [`ImportError`] naming the file (and the node); nothing on
//! an input-dependent path panics.
//!
//! # Operators
//!
//! Default domain (`""` / `ai.onnx`), opsets 7 to 21 (tested on 9, 10 and 17):
//!
//! | ONNX | IR |
//! |---|---|
//! | `Conv` (`pads`, `strides`, `dilations`, `group`, `auto_pad`) | [`Op::Conv2d`] |
//! | `ConvTranspose` (group 1, output = input × stride) | [`Op::Conv2d`] + [`Op::DepthToSpace`] (CRD), see below |
//! | `Add`, `Sub`, `Mul`, `Div` | [`Op::Binary`], image ∘ image or image ∘ scalar/per-channel constant |
//! | `Relu`, `PRelu`, `LeakyRelu`, `Sigmoid`, `Tanh`, `Clip` | [`Op::Activation`] |
//! | `DepthToSpace` (`DCR`, `CRD`) | [`Op::DepthToSpace`] |
//! | `Resize`, `Upsample` (integer factor, nearest or half-pixel linear) | [`Op::Resize`] |
//! | `Concat` on axis 1 | [`Op::Concat`] |
//! | `Reshape` → `Transpose` → `Reshape` of a pixel shuffle | [`Op::DepthToSpace`] |
//! | `Constant`, `Identity`, `Dropout`, `Cast` (to a float type) | nothing (aliases) |
//! | `Shape`, `Gather`, `Cast`, `Unsqueeze`, `Squeeze`, `Slice`, `Concat`, `Floor`, `Ceil`, arithmetic on shape tensors | folded at import |
//!
//! A constant operand of a binary operator or a `PRelu` slope must broadcast per channel:
//! after right-aligning its shape to `[N, C, H, W]` every axis but `C` is 1 (so `[1, C, 1, 1]`,
//! `[C, 1, 1]` and `[1]` work, while `[C]` would broadcast along the width and is refused). A
//! constant first operand is accepted for `Add` and `Mul` (swapped) and `Sub` (`c - x` becomes
//! `Neg(x) + c`, which is bit-identical).
//!
//! Shape arithmetic (older PyTorch exports compute `Resize` sizes from `Shape`) is folded with
//! values of the form `c + a·H + b·W`, `H` and `W` being the input's height and width, so a
//! model with a dynamic input size still resolves to an integer resize factor.
//!
//! The pixel shuffle PyTorch writes at opset < 11 (`Reshape [N, C, r, r, H, W]` → `Transpose
//! [0, 1, 4, 2, 5, 3]` → `Reshape [N, C, H·r, W·r]`) becomes a `DepthToSpace` in `CRD` mode
//! (and `[N, r, r, C, H, W]` with `[0, 3, 4, 1, 5, 2]` one in `DCR` mode). Any other `Reshape`
//! or `Transpose` of an image is refused with an [`ImportError::UnsupportedOp`].
//!
//! A `ConvTranspose` with stride `s` whose output is exactly `s` times its input (kernel −
//! pads + output_padding = stride, which holds for the usual `k=2s, p=s/2` and FSRCNN's
//! `k=9, p=4, output_padding=s-1`) is lowered to a stride-1 convolution with `s²·C_out`
//! outputs, one per sub-pixel phase, followed by a `CRD` depth-to-space: output pixel
//! `o = q·s + r` only sees the taps `t ≡ r + pad (mod s)`, and those form an ordinary
//! correlation over the input around `q`.
//!
//! # Layout
//!
//! - The one graph input must be NCHW `[N, C, H, W]` with `N` 1 or symbolic, `C` fixed and
//!   `H`, `W` fixed or symbolic; it becomes an IR [`Op::Input`] with `C` channels (the IR is
//!   `[H, W, C]`, batch 1). Graph outputs are NCHW images and become IR outputs in order.
//! - `Conv` weights `[C_out, C_in/group, kh, kw]` are transposed to HWIO
//!   `[kh, kw, C_in/group, C_out]`; `ConvTranspose` weights are `[C_in, C_out, kh, kw]`.
//! - `pads` are `[top, left, bottom, right]`; `SAME_UPPER` puts the odd pixel at the end,
//!   `SAME_LOWER` at the start (stride 1 only: with a stride the padding depends on the size).
//! - Channel axis 1 of NCHW is the IR's channel axis; per-channel constants become `[C]`.
//! - Initializers are read from `float_data`/`int64_data`/… or `raw_data` (little-endian);
//!   `float16`, `bfloat16` and `double` are converted to `f32`. External data is refused.

mod consts;
pub mod proto;

use std::collections::HashMap;

use prost::Message;
use superres_graph::{
    Activation, BinaryOp, Conv2d, DepthToSpaceMode, Epilogue, Graph, Op, Padding, ResizeMode,
    Tensor, UnaryOp, ValueId,
};

use crate::ImportError;
use consts::{Const, Data, Sym, SymOp, TensorError};
use proto::{AttributeProto, GraphProto, ModelProto, NodeProto, attr_type as at, data_type as dt};

/// The oldest default-domain opset accepted.
pub const MIN_OPSET: i64 = 7;
/// The newest default-domain opset accepted.
pub const MAX_OPSET: i64 = 21;

/// Constant tensors computed at import time are capped at this many values.
const MAX_FOLDED: usize = 1 << 22;

/// Strides, dilations and pads beyond this are refused as implausible (and would overflow
/// size arithmetic downstream).
const MAX_GEOMETRY: usize = 1 << 16;

/// The largest `ConvTranspose` stride lowered to a depth-to-space.
const MAX_DECONV_STRIDE: usize = 64;

/// The largest resize factor.
const MAX_RESIZE: usize = 256;

/// Reads an ONNX model; `file` names it in errors.
pub fn import(bytes: &[u8], file: &str) -> Result<Graph, ImportError> {
    let model = ModelProto::decode(bytes).map_err(|e| ImportError::Corrupt {
        file: file.to_string(),
        format: "ONNX",
        reason: e.to_string(),
    })?;
    let invalid = |message: String| ImportError::InvalidModel {
        file: file.to_string(),
        message,
    };
    let opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .ok_or_else(|| invalid("the model imports no ai.onnx opset".into()))?;
    if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
        return Err(invalid(format!(
            "ai.onnx opset {opset} is outside the supported range {MIN_OPSET}..={MAX_OPSET}"
        )));
    }
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| invalid("the model has no graph".into()))?;
    Importer {
        file,
        opset,
        g: Graph::new(),
        vals: HashMap::new(),
        input_hw: None,
    }
    .run(graph)
}

/// What an ONNX value name stands for during import.
#[derive(Clone, Debug)]
enum Val {
    /// An image: a value of the IR graph.
    Image(ValueId),
    /// A constant, folded at import.
    Const(Const),
    /// The first steps of a pixel shuffle written as Reshape/Transpose/Reshape.
    Shuffle(Shuffle),
}

#[derive(Clone, Debug)]
struct Shuffle {
    src: ValueId,
    /// The 6-D shape of the first Reshape.
    dims: Vec<Sym>,
    /// After the Transpose: block size, mode and output channels.
    transposed: Option<(usize, DepthToSpaceMode, usize)>,
}

const SHUFFLE_HINT: &str = "Reshape and Transpose of an image are supported only as a pixel \
    shuffle: Reshape [N,C,r,r,H,W] -> Transpose [0,1,4,2,5,3] -> Reshape [N,C,H*r,W*r] \
    (or Reshape [N,r,r,C,H,W] -> Transpose [0,3,4,1,5,2] -> Reshape)";

struct Importer<'f> {
    file: &'f str,
    opset: i64,
    g: Graph,
    vals: HashMap<String, Val>,
    /// The input's height and width when the model fixes them.
    input_hw: Option<(usize, usize)>,
}

type R<T> = Result<T, ImportError>;

/// A node name for messages: its own, or its op type and first output.
fn display_name(n: &NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        format!(
            "{} -> '{}'",
            n.op_type,
            n.output.first().map(String::as_str).unwrap_or("")
        )
    }
}

fn to_usize(v: i64) -> Option<usize> {
    usize::try_from(v).ok()
}

impl<'f> Importer<'f> {
    // ----- errors -------------------------------------------------------------------------

    fn unsupported(&self, n: &NodeProto, detail: impl Into<Option<String>>) -> ImportError {
        ImportError::UnsupportedOp {
            file: self.file.to_string(),
            node: display_name(n),
            op: n.op_type.clone(),
            detail: detail.into(),
        }
    }

    fn invalid(&self, n: &NodeProto, message: impl Into<String>) -> ImportError {
        ImportError::InvalidNode {
            file: self.file.to_string(),
            node: display_name(n),
            message: message.into(),
        }
    }

    fn model_error(&self, message: impl Into<String>) -> ImportError {
        ImportError::InvalidModel {
            file: self.file.to_string(),
            message: message.into(),
        }
    }

    // ----- the graph ----------------------------------------------------------------------

    fn run(mut self, graph: &GraphProto) -> R<Graph> {
        for t in &graph.initializer {
            let c = consts::from_proto(t).map_err(|e| match e {
                TensorError::External => self.model_error(format!(
                    "initializer '{}' keeps its data in an external file, which is not \
                     supported (save the model with all tensors inline)",
                    t.name
                )),
                TensorError::Invalid(m) => ImportError::Corrupt {
                    file: self.file.to_string(),
                    format: "ONNX",
                    reason: format!("initializer '{}': {m}", t.name),
                },
            })?;
            self.vals.insert(t.name.clone(), Val::Const(c));
        }
        self.graph_input(graph)?;
        for n in &graph.node {
            self.node(n)?;
        }
        if graph.output.is_empty() {
            return Err(self.model_error("the graph has no outputs"));
        }
        for o in &graph.output {
            match self.vals.get(&o.name) {
                Some(Val::Image(v)) => {
                    let v = *v;
                    self.g.output(&o.name, v)
                }
                Some(Val::Const(_)) => {
                    return Err(self
                        .model_error(format!("output '{}' is a constant, not an image", o.name)));
                }
                Some(Val::Shuffle(_)) => {
                    return Err(self.model_error(format!(
                        "output '{}' is an unfinished pixel shuffle ({SHUFFLE_HINT})",
                        o.name
                    )));
                }
                None => {
                    return Err(self
                        .model_error(format!("output '{}' is not produced by any node", o.name)));
                }
            }
        }
        Ok(prune(self.g))
    }

    fn graph_input(&mut self, graph: &GraphProto) -> R<()> {
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !self.vals.contains_key(&i.name))
            .collect();
        let input = match inputs[..] {
            [one] => one,
            [] => return Err(self.model_error("the graph has no image input")),
            _ => {
                let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(self.model_error(format!(
                    "the graph has {} inputs ({}); only one image input is supported",
                    names.len(),
                    names.join(", ")
                )));
            }
        };
        let tt = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        let dims = tt
            .and_then(|t| t.shape.as_ref())
            .map(|s| s.dim.as_slice())
            .unwrap_or(&[]);
        let elem = tt.map_or(0, |t| t.elem_type);
        if ![dt::FLOAT, dt::FLOAT16, dt::DOUBLE, dt::BFLOAT16].contains(&elem) {
            return Err(self.model_error(format!(
                "input '{}' has element type {elem}, expected a floating-point image",
                input.name
            )));
        }
        if dims.len() != 4 {
            return Err(self.model_error(format!(
                "input '{}' has {} dimensions, expected an NCHW image [N, C, H, W]",
                input.name,
                dims.len()
            )));
        }
        if let Some(nb) = dims[0].dim_value.filter(|&v| v != 1) {
            return Err(self.model_error(format!(
                "input '{}' has batch {nb}; only batch 1 (or a symbolic batch) is supported",
                input.name
            )));
        }
        let channels = dims[1]
            .dim_value
            .and_then(to_usize)
            .filter(|&c| c > 0)
            .ok_or_else(|| {
                self.model_error(format!(
                    "input '{}' does not fix its channel count (NCHW axis 1)",
                    input.name
                ))
            })?;
        let fixed = |d: &proto::Dimension| d.dim_value.and_then(to_usize).filter(|&v| v > 0);
        self.input_hw = fixed(&dims[2]).zip(fixed(&dims[3]));
        let id = self.g.input(&input.name, channels);
        self.vals.insert(input.name.clone(), Val::Image(id));
        Ok(())
    }

    // ----- inputs, outputs, attributes --------------------------------------------------

    fn input(&self, n: &NodeProto, i: usize) -> R<&Val> {
        self.opt_input(n, i)?
            .ok_or_else(|| self.invalid(n, format!("missing input #{i}")))
    }

    fn opt_input(&self, n: &NodeProto, i: usize) -> R<Option<&Val>> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => self.vals.get(name).map(Some).ok_or_else(|| {
                self.invalid(
                    n,
                    format!("input '{name}' is not produced by any earlier node"),
                )
            }),
        }
    }

    fn image(&self, n: &NodeProto, i: usize) -> R<ValueId> {
        match self.input(n, i)? {
            Val::Image(v) => Ok(*v),
            Val::Const(_) => Err(self.unsupported(
                n,
                format!(
                    "input '{}' is a constant where an image is expected",
                    n.input[i]
                ),
            )),
            Val::Shuffle(_) => Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        }
    }

    fn konst(&self, n: &NodeProto, i: usize) -> R<&Const> {
        match self.input(n, i)? {
            Val::Const(c) => Ok(c),
            _ => Err(self.unsupported(
                n,
                format!(
                    "input '{}' must be a constant (an initializer or a foldable expression)",
                    n.input[i]
                ),
            )),
        }
    }

    fn opt_konst(&self, n: &NodeProto, i: usize) -> R<Option<&Const>> {
        match self.opt_input(n, i)? {
            None => Ok(None),
            Some(_) => self.konst(n, i).map(Some),
        }
    }

    fn ints_of(&self, n: &NodeProto, i: usize) -> R<Vec<i64>> {
        self.konst(n, i)?.ints().ok_or_else(|| {
            self.unsupported(
                n,
                format!(
                    "input '{}' must be constant integers known at import",
                    n.input[i]
                ),
            )
        })
    }

    fn set(&mut self, n: &NodeProto, v: Val) -> R<()> {
        let out = n
            .output
            .first()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.invalid(n, "the node has no output"))?;
        self.vals.insert(out.clone(), v);
        Ok(())
    }

    fn push(&mut self, n: &NodeProto, name: &str, op: Op, inputs: Vec<ValueId>) -> R<ValueId> {
        self.g
            .push(name, op, inputs)
            .map_err(|e| self.invalid(n, e.to_string()))
    }

    fn attr<'n>(&self, n: &'n NodeProto, name: &str, ty: i32) -> R<Option<&'n AttributeProto>> {
        let Some(a) = n.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        if !a.ref_attr_name.is_empty() {
            return Err(self.unsupported(
                n,
                format!("attribute '{name}' refers to a function attribute"),
            ));
        }
        if a.r#type != at::UNDEFINED && a.r#type != ty {
            return Err(self.invalid(
                n,
                format!("attribute '{name}' has type {}, expected {ty}", a.r#type),
            ));
        }
        Ok(Some(a))
    }

    fn attr_i(&self, n: &NodeProto, name: &str) -> R<Option<i64>> {
        Ok(self.attr(n, name, at::INT)?.map(|a| a.i))
    }

    fn attr_f(&self, n: &NodeProto, name: &str) -> R<Option<f32>> {
        Ok(self.attr(n, name, at::FLOAT)?.map(|a| a.f))
    }

    fn attr_ints(&self, n: &NodeProto, name: &str) -> R<Option<Vec<i64>>> {
        Ok(self.attr(n, name, at::INTS)?.map(|a| a.ints.clone()))
    }

    fn attr_s(&self, n: &NodeProto, name: &str) -> R<Option<String>> {
        Ok(self
            .attr(n, name, at::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    /// A pair of integers in `min..=MAX_GEOMETRY` (`strides`, `dilations`,
    /// `output_padding`), `default` when absent.
    fn attr_pair(&self, n: &NodeProto, name: &str, default: usize, min: i64) -> R<(usize, usize)> {
        let ok = |v: i64| (min..=MAX_GEOMETRY as i64).contains(&v);
        match self.attr_ints(n, name)? {
            None => Ok((default, default)),
            Some(v) => match v[..] {
                [a, b] if ok(a) && ok(b) => Ok((a as usize, b as usize)),
                _ => Err(self.unsupported(
                    n,
                    format!("{name} {v:?}: expected two values in {min}..={MAX_GEOMETRY} (2-D)"),
                )),
            },
        }
    }

    // ----- nodes --------------------------------------------------------------------------

    fn node(&mut self, n: &NodeProto) -> R<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(self.unsupported(n, format!("operator domain '{}'", n.domain)));
        }
        let name = display_name(n);
        match n.op_type.as_str() {
            "Conv" => self.conv(n, &name),
            "ConvTranspose" => self.conv_transpose(n, &name),
            "Add" => self.binary(n, &name, BinaryOp::Add),
            "Sub" => self.binary(n, &name, BinaryOp::Sub),
            "Mul" => self.binary(n, &name, BinaryOp::Mul),
            "Div" => self.binary(n, &name, BinaryOp::Div),
            "Relu" => self.activation(n, &name, Activation::Relu),
            "Sigmoid" => self.activation(n, &name, Activation::Sigmoid),
            "Tanh" => self.activation(n, &name, Activation::Tanh),
            "LeakyRelu" => {
                let alpha = self.attr_f(n, "alpha")?.unwrap_or(0.01);
                self.activation(n, &name, Activation::LeakyRelu(alpha))
            }
            "PRelu" => {
                let x = self.image(n, 0)?;
                let c = self.g.channels(x);
                let slope = self.konst(n, 1)?;
                let slope = self.per_channel(n, slope, c)?;
                self.activation(n, &name, Activation::PRelu(slope.into_data()))
            }
            "Clip" => self.clip(n, &name),
            "DepthToSpace" => self.depth_to_space(n, &name),
            "Resize" => self.resize(n, &name, false),
            "Upsample" => self.resize(n, &name, true),
            "Concat" => self.concat(n, &name),
            "Reshape" => self.reshape(n, &name),
            "Transpose" => self.transpose(n),
            "Constant" => self.constant(n),
            "Identity" | "Dropout" => {
                let v = self.input(n, 0)?.clone();
                self.set(n, v)
            }
            "Cast" => self.cast(n),
            "Shape" => self.shape(n),
            "Gather" => self.gather(n),
            "Unsqueeze" | "Squeeze" => self.squeeze(n, n.op_type == "Unsqueeze"),
            "Slice" => self.slice(n),
            "Floor" | "Ceil" => {
                let c = self.konst(n, 0)?.clone();
                let f: fn(f64) -> f64 = if n.op_type == "Floor" {
                    f64::floor
                } else {
                    f64::ceil
                };
                let out = match &c.data {
                    Data::F32(v) => Const::f32(
                        c.shape.clone(),
                        v.iter().map(|&x| f(x as f64) as f32).collect(),
                    ),
                    Data::Sym { v, float } => Const::sym(
                        c.shape.clone(),
                        v.iter()
                            .map(|s| s.round_with(f))
                            .collect::<Option<_>>()
                            .ok_or_else(|| {
                                self.unsupported(n, "rounding a non-integral size".to_string())
                            })?,
                        *float,
                    ),
                };
                self.set(n, Val::Const(out))
            }
            _ => Err(self.unsupported(n, None)),
        }
    }

    /// The image input, its channels, and the 4-D weights of a `Conv` / `ConvTranspose`
    /// (their shape as stored, and their values as `f32`).
    fn conv_operands(&mut self, n: &NodeProto) -> R<(ValueId, usize, [usize; 4], Vec<f32>)> {
        let x = self.image(n, 0)?;
        let cin = self.g.channels(x);
        let w = self.konst(n, 1)?;
        let [a, b, kh, kw] = w.shape[..] else {
            return Err(self.unsupported(
                n,
                format!(
                    "weights of shape {:?}: only 2-D convolutions are supported",
                    w.shape
                ),
            ));
        };
        let wv = w
            .to_f32()
            .ok_or_else(|| self.invalid(n, "weights are not numbers"))?;
        Ok((x, cin, [a, b, kh, kw], wv))
    }

    fn conv(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let (x, cin, [cout, cig, kh, kw], wv) = self.conv_operands(n)?;
        let group = self.attr_i(n, "group")?.unwrap_or(1);
        let groups = to_usize(group)
            .filter(|&g| g > 0)
            .ok_or_else(|| self.invalid(n, format!("group {group}")))?;
        if cig.checked_mul(groups) != Some(cin) || cout % groups != 0 || kh == 0 || kw == 0 {
            return Err(self.invalid(
                n,
                format!(
                    "weights {:?} with {groups} group(s) do not fit an input of {cin} channels",
                    [cout, cig, kh, kw]
                ),
            ));
        }
        if let Some(ks) = self.attr_ints(n, "kernel_shape")?
            && ks != [kh as i64, kw as i64]
        {
            return Err(self.invalid(
                n,
                format!(
                    "kernel_shape {ks:?} disagrees with weights {:?}",
                    [cout, cig, kh, kw]
                ),
            ));
        }
        let bias = self.bias(n, 2, cout)?;
        let stride = self.attr_pair(n, "strides", 1, 1)?;
        let dilation = self.attr_pair(n, "dilations", 1, 1)?;
        let padding = self.conv_padding(n, (kh, kw), stride, dilation)?;
        let mut weights = vec![0.0f32; wv.len()];
        for co in 0..cout {
            for ci in 0..cig {
                for ky in 0..kh {
                    for kx in 0..kw {
                        weights[((ky * kw + kx) * cig + ci) * cout + co] =
                            wv[((co * cig + ci) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        let conv = Conv2d {
            kh,
            kw,
            cin,
            cout,
            groups,
            stride,
            dilation,
            padding,
            weights,
            epilogue: Epilogue {
                bias,
                ..Epilogue::default()
            },
        };
        let y = self.push(n, name, Op::Conv2d(conv), vec![x])?;
        self.set(n, Val::Image(y))
    }

    fn bias(&self, n: &NodeProto, i: usize, cout: usize) -> R<Option<Vec<f32>>> {
        let Some(b) = self.opt_konst(n, i)? else {
            return Ok(None);
        };
        match b.to_f32() {
            Some(v) if v.len() == cout => Ok(Some(v)),
            _ => Err(self.invalid(
                n,
                format!("bias of shape {:?} for {cout} output channels", b.shape),
            )),
        }
    }

    fn pads4(&self, n: &NodeProto) -> R<[usize; 4]> {
        match self.attr_ints(n, "pads")? {
            None => Ok([0; 4]),
            Some(p) => match p[..] {
                [a, b, c, d]
                    if [a, b, c, d]
                        .iter()
                        .all(|&v| (0..=MAX_GEOMETRY as i64).contains(&v)) =>
                {
                    Ok([a as usize, b as usize, c as usize, d as usize])
                }
                _ => Err(self.unsupported(
                    n,
                    format!("pads {p:?}: expected four values in 0..={MAX_GEOMETRY} (2-D)"),
                )),
            },
        }
    }

    fn conv_padding(
        &self,
        n: &NodeProto,
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
    ) -> R<Padding> {
        let auto = self.attr_s(n, "auto_pad")?.unwrap_or_default();
        match auto.as_str() {
            "" | "NOTSET" => {
                let [top, left, bottom, right] = self.pads4(n)?;
                Ok(Padding {
                    top,
                    bottom,
                    left,
                    right,
                })
            }
            "VALID" => Ok(Padding::default()),
            "SAME_UPPER" | "SAME_LOWER" => {
                if stride != (1, 1) {
                    return Err(self.unsupported(
                        n,
                        format!(
                            "auto_pad {auto} with strides {stride:?}: the padding would depend \
                             on the input size"
                        ),
                    ));
                }
                let p = Padding::same(kh, kw, dilation);
                Ok(if auto == "SAME_UPPER" {
                    p
                } else {
                    Padding {
                        top: p.bottom,
                        bottom: p.top,
                        left: p.right,
                        right: p.left,
                    }
                })
            }
            other => Err(self.invalid(n, format!("unknown auto_pad '{other}'"))),
        }
    }

    fn conv_transpose(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let (x, cin, [wcin, cout, kh, kw], wv) = self.conv_operands(n)?;
        if self.attr_i(n, "group")?.unwrap_or(1) != 1 {
            return Err(self.unsupported(n, "grouped ConvTranspose".to_string()));
        }
        if wcin != cin || kh == 0 || kw == 0 {
            return Err(self.invalid(
                n,
                format!(
                    "weights {:?} do not fit an input of {cin} channels",
                    [wcin, cout, kh, kw]
                ),
            ));
        }
        if self.attr_pair(n, "dilations", 1, 1)? != (1, 1) {
            return Err(self.unsupported(n, "dilated ConvTranspose".to_string()));
        }
        if self.attr(n, "output_shape", at::INTS)?.is_some() {
            return Err(self.unsupported(
                n,
                "the output_shape attribute (give pads and output_padding instead)".to_string(),
            ));
        }
        let (sy, sx) = self.attr_pair(n, "strides", 1, 1)?;
        if sy != sx {
            return Err(self.unsupported(n, format!("unequal strides ({sy}, {sx})")));
        }
        let s = sy;
        if s > MAX_DECONV_STRIDE {
            return Err(self.unsupported(n, format!("stride {s} (at most {MAX_DECONV_STRIDE})")));
        }
        let (oph, opw) = self.attr_pair(n, "output_padding", 0, 0)?;
        let auto = self.attr_s(n, "auto_pad")?.unwrap_or_default();
        let [pt, pl, pb, pr] = match auto.as_str() {
            "" | "NOTSET" => self.pads4(n)?,
            "VALID" => [0; 4],
            "SAME_UPPER" | "SAME_LOWER" => {
                // Output = input × stride, so the total padding is k + output_padding - s.
                let th = (kh + oph) as i64 - s as i64;
                let tw = (kw + opw) as i64 - s as i64;
                if th < 0 || tw < 0 || th % 2 != 0 || tw % 2 != 0 {
                    return Err(self.unsupported(
                        n,
                        format!("auto_pad {auto} with an odd or negative total padding"),
                    ));
                }
                let (th, tw) = (th as usize / 2, tw as usize / 2);
                [th, tw, th, tw]
            }
            other => return Err(self.invalid(n, format!("unknown auto_pad '{other}'"))),
        };
        let fits = |k: usize, p0: usize, p1: usize, op: usize| k + op == s + p0 + p1;
        if !fits(kh, pt, pb, oph) || !fits(kw, pl, pr, opw) {
            return Err(self.unsupported(
                n,
                format!(
                    "ConvTranspose is supported when its output is exactly stride × input \
                     (kernel - pads + output_padding = stride); got kernel {kh}×{kw}, stride \
                     {s}, pads [{pt}, {pl}, {pb}, {pr}], output_padding [{oph}, {opw}]"
                ),
            ));
        }
        let bias = self.bias(n, 2, cout)?;
        let (taps_y, dy0, dy1) = phase_taps(kh, s, pt);
        let (taps_x, dx0, dx1) = phase_taps(kw, s, pl);
        let (kh2, kw2) = ((dy1 - dy0 + 1) as usize, (dx1 - dx0 + 1) as usize);
        let ss = s * s;
        let cout2 = cout * ss;
        let mut weights = vec![0.0f32; kh2 * kw2 * cin * cout2];
        for (ry, ty) in taps_y.iter().enumerate() {
            for (rx, tx) in taps_x.iter().enumerate() {
                for &(dy, ky) in ty {
                    for &(dx, kx) in tx {
                        let (uy, ux) = ((dy - dy0) as usize, (dx - dx0) as usize);
                        for ci in 0..cin {
                            for co in 0..cout {
                                weights[((uy * kw2 + ux) * cin + ci) * cout2
                                    + co * ss
                                    + ry * s
                                    + rx] = wv[((ci * cout + co) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
            }
        }
        let conv = Conv2d {
            kh: kh2,
            kw: kw2,
            cin,
            cout: cout2,
            groups: 1,
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding {
                top: (-dy0) as usize,
                bottom: dy1 as usize,
                left: (-dx0) as usize,
                right: dx1 as usize,
            },
            weights,
            epilogue: Epilogue {
                bias: bias.map(|b| b.iter().flat_map(|&v| std::iter::repeat_n(v, ss)).collect()),
                ..Epilogue::default()
            },
        };
        let y = if s == 1 {
            self.push(n, name, Op::Conv2d(conv), vec![x])?
        } else {
            let c = self.push(n, &format!("{name}/phases"), Op::Conv2d(conv), vec![x])?;
            self.push(
                n,
                name,
                Op::DepthToSpace {
                    block: s,
                    mode: DepthToSpaceMode::Crd,
                },
                vec![c],
            )?
        };
        self.set(n, Val::Image(y))
    }

    /// A constant operand as a scalar or `[C]` tensor, if it broadcasts per channel over an
    /// NCHW image with `c` channels.
    fn per_channel(&self, n: &NodeProto, k: &Const, c: usize) -> R<Tensor> {
        let refuse = || {
            self.unsupported(
                n,
                format!(
                    "constant of shape {:?} does not broadcast per channel over an NCHW \
                     image of {c} channels",
                    k.shape
                ),
            )
        };
        if k.shape.len() > 4 {
            return Err(refuse());
        }
        let mut s = vec![1usize; 4 - k.shape.len()];
        s.extend(&k.shape);
        if s[0] != 1 || s[2] != 1 || s[3] != 1 || (s[1] != 1 && s[1] != c) {
            return Err(refuse());
        }
        let v = k
            .to_f32()
            .ok_or_else(|| self.unsupported(n, "constant depends on the input size".to_string()))?;
        Ok(if v.len() == 1 {
            Tensor::scalar(v[0])
        } else {
            Tensor::new(vec![c], v)
        })
    }

    fn binary(&mut self, n: &NodeProto, name: &str, op: BinaryOp) -> R<()> {
        let a = self.input(n, 0)?;
        let b = self.input(n, 1)?;
        let out = match (a, b) {
            (Val::Image(x), Val::Image(y)) => {
                let (x, y) = (*x, *y);
                Val::Image(self.push(n, name, Op::Binary(op), vec![x, y])?)
            }
            (Val::Image(x), Val::Const(k)) => {
                let x = *x;
                let t = self.per_channel(n, k, self.g.channels(x))?;
                let kid = self.g.constant(&format!("{name}/operand"), t);
                Val::Image(self.push(n, name, Op::Binary(op), vec![x, kid])?)
            }
            (Val::Const(k), Val::Image(x)) => {
                let x = *x;
                let t = self.per_channel(n, k, self.g.channels(x))?;
                let kid = self.g.constant(&format!("{name}/operand"), t);
                let y = match op {
                    BinaryOp::Add | BinaryOp::Mul => {
                        self.push(n, name, Op::Binary(op), vec![x, kid])?
                    }
                    BinaryOp::Sub => {
                        let neg =
                            self.push(n, &format!("{name}/neg"), Op::Unary(UnaryOp::Neg), vec![x])?;
                        self.push(n, name, Op::Binary(BinaryOp::Add), vec![neg, kid])?
                    }
                    BinaryOp::Div => {
                        return Err(
                            self.unsupported(n, "dividing a constant by an image".to_string())
                        );
                    }
                };
                Val::Image(y)
            }
            (Val::Const(p), Val::Const(q)) => Val::Const(self.fold_binary(n, p, q, op)?),
            _ => return Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        };
        self.set(n, out)
    }

    fn fold_binary(&self, n: &NodeProto, a: &Const, b: &Const, op: BinaryOp) -> R<Const> {
        let shape = consts::broadcast_shape(&a.shape, &b.shape).ok_or_else(|| {
            self.invalid(
                n,
                format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape),
            )
        })?;
        let total = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if total.is_none_or(|t| t > MAX_FOLDED) {
            return Err(self.unsupported(n, format!("a folded constant of shape {shape:?}")));
        }
        let ia = consts::broadcast_index(&a.shape, &shape);
        let ib = consts::broadcast_index(&b.shape, &shape);
        if let (Data::F32(x), Data::F32(y)) = (&a.data, &b.data) {
            let v = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| op.apply(x[i], y[j]))
                .collect();
            return Ok(Const::f32(shape, v));
        }
        let not_affine =
            || self.unsupported(n, "shape arithmetic beyond c + a·H + b·W".to_string());
        let (x, y) = (
            a.to_sym().ok_or_else(not_affine)?,
            b.to_sym().ok_or_else(not_affine)?,
        );
        let float = a.is_float() || b.is_float();
        let sop = match op {
            BinaryOp::Add => SymOp::Add,
            BinaryOp::Sub => SymOp::Sub,
            BinaryOp::Mul => SymOp::Mul,
            BinaryOp::Div => SymOp::Div,
        };
        let v = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| x[i].binary(sop, y[j], float))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(not_affine)?;
        Ok(Const::sym(shape, v, float))
    }

    fn activation(&mut self, n: &NodeProto, name: &str, a: Activation) -> R<()> {
        let x = self.image(n, 0)?;
        let y = self.push(n, name, Op::Activation(a), vec![x])?;
        self.set(n, Val::Image(y))
    }

    fn clip(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let mut min = self.attr_f(n, "min")?.unwrap_or(f32::NEG_INFINITY);
        let mut max = self.attr_f(n, "max")?.unwrap_or(f32::INFINITY);
        for (i, slot) in [(1, &mut min), (2, &mut max)] {
            if let Some(k) = self.opt_konst(n, i)? {
                *slot = k.scalar_f32().ok_or_else(|| {
                    self.invalid(n, format!("bound '{}' is not a scalar", n.input[i]))
                })?;
            }
        }
        self.activation(n, name, Activation::Clip { min, max })
    }

    fn depth_to_space(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let x = self.image(n, 0)?;
        let b = self.attr_i(n, "blocksize")?.unwrap_or(0);
        let c = self.g.channels(x);
        let block = to_usize(b)
            .filter(|&b| b > 0 && b.checked_mul(b).is_some_and(|bb| bb <= c))
            .ok_or_else(|| self.invalid(n, format!("blocksize {b} for {c} channels")))?;
        let mode = match self.attr_s(n, "mode")?.as_deref().unwrap_or("DCR") {
            "DCR" => DepthToSpaceMode::Dcr,
            "CRD" => DepthToSpaceMode::Crd,
            other => return Err(self.invalid(n, format!("unknown mode '{other}'"))),
        };
        let y = self.push(n, name, Op::DepthToSpace { block, mode }, vec![x])?;
        self.set(n, Val::Image(y))
    }

    /// Height and width of an image value, in terms of the input's.
    fn spatial(&self, n: &NodeProto, x: ValueId) -> R<(Sym, Sym)> {
        let s = self.g.node(x).scale.filter(|s| s.den == 1).ok_or_else(|| {
            self.unsupported(
                n,
                "the size of a downsampled image is not known at import".to_string(),
            )
        })?;
        let f = s.num as f64;
        Ok(match self.input_hw {
            Some((h, w)) => (Sym::k(h as f64 * f), Sym::k(w as f64 * f)),
            None => (
                Sym {
                    c: 0.0,
                    h: f,
                    w: 0.0,
                },
                Sym {
                    c: 0.0,
                    h: 0.0,
                    w: f,
                },
            ),
        })
    }

    fn resize(&mut self, n: &NodeProto, name: &str, upsample: bool) -> R<()> {
        let x = self.image(n, 0)?;
        let channels = self.g.channels(x);
        let legacy = upsample || self.opset < 11;
        let mode = self.attr_s(n, "mode")?.unwrap_or_else(|| "nearest".into());
        // Scales or sizes, per NCHW axis.
        let axes: Vec<usize> = match self.attr_ints(n, "axes")? {
            None => vec![0, 1, 2, 3],
            Some(a) => a
                .iter()
                .map(|&v| to_usize(if v < 0 { v + 4 } else { v }).filter(|&v| v < 4))
                .collect::<Option<_>>()
                .ok_or_else(|| self.invalid(n, format!("axes {a:?}")))?,
        };
        let scales: Option<Vec<f32>> = if upsample && self.opset < 9 {
            Some(
                self.attr(n, "scales", at::FLOATS)?
                    .map(|a| a.floats.clone())
                    .ok_or_else(|| self.invalid(n, "missing scales"))?,
            )
        } else {
            let i = if legacy { 1 } else { 2 };
            match self.opt_konst(n, i)? {
                Some(k) if k.len() > 0 => Some(k.to_f32().ok_or_else(|| {
                    self.unsupported(n, "scales that depend on the input size".to_string())
                })?),
                _ => None,
            }
        };
        let factor = |f: f64| -> Option<usize> {
            (f >= 1.0 && f.fract() == 0.0 && f <= MAX_RESIZE as f64).then_some(f as usize)
        };
        let mut fh = None;
        let mut fw = None;
        if let Some(sc) = scales {
            if sc.len() != axes.len() {
                return Err(self.invalid(n, format!("{} scales for {} axes", sc.len(), axes.len())));
            }
            for (&ax, &f) in axes.iter().zip(&sc) {
                match ax {
                    0 | 1 if f != 1.0 => {
                        return Err(self.unsupported(n, format!("scale {f} on axis {ax}")));
                    }
                    2 => fh = factor(f as f64),
                    3 => fw = factor(f as f64),
                    _ => {}
                }
            }
        } else if !legacy {
            let sizes = self
                .opt_konst(n, 3)?
                .ok_or_else(|| self.invalid(n, "neither scales nor sizes are given"))?;
            let sizes = sizes
                .to_sym()
                .filter(|s| s.len() == axes.len())
                .ok_or_else(|| {
                    self.invalid(
                        n,
                        format!("sizes of shape {:?} for {} axes", sizes.shape, axes.len()),
                    )
                })?;
            let (h, w) = self.spatial(n, x)?;
            for (&ax, &d) in axes.iter().zip(&sizes) {
                match ax {
                    1 if d.konst().is_some_and(|c| c != channels as f64) => {
                        return Err(self.unsupported(n, "resizing the channel axis".to_string()));
                    }
                    2 => fh = ratio(d, h).and_then(factor),
                    3 => fw = ratio(d, w).and_then(factor),
                    _ => {}
                }
            }
        } else {
            return Err(self.invalid(n, "missing scales"));
        }
        let f = match (fh, fw) {
            (Some(a), Some(b)) if a == b => a,
            (None, None) if !axes.contains(&2) && !axes.contains(&3) => 1,
            _ => {
                return Err(self.unsupported(
                    n,
                    "only upsampling by the same integer factor in height and width".to_string(),
                ));
            }
        };
        let default_ctm = if legacy { "asymmetric" } else { "half_pixel" };
        let ctm = self
            .attr_s(n, "coordinate_transformation_mode")?
            .unwrap_or_else(|| default_ctm.into());
        let rmode = match mode.as_str() {
            "nearest" => {
                let nm = self.attr_s(n, "nearest_mode")?.unwrap_or_else(|| {
                    if legacy {
                        "floor"
                    } else {
                        "round_prefer_floor"
                    }
                    .into()
                });
                if f > 1 && !nearest_is_floor(f, &ctm, &nm) {
                    return Err(self.unsupported(
                        n,
                        format!(
                            "nearest resize with coordinate_transformation_mode '{ctm}' and \
                             nearest_mode '{nm}' does not repeat each pixel {f}×{f}"
                        ),
                    ));
                }
                ResizeMode::Nearest
            }
            "linear" | "bilinear"
                if matches!(
                    ctm.as_str(),
                    "half_pixel" | "pytorch_half_pixel" | "half_pixel_symmetric"
                ) =>
            {
                ResizeMode::Bilinear
            }
            _ => {
                return Err(self.unsupported(
                    n,
                    format!(
                        "mode '{mode}' with coordinate_transformation_mode '{ctm}' (supported: \
                         nearest, and linear with half-pixel centres)"
                    ),
                ));
            }
        };
        let y = if f == 1 {
            x
        } else {
            self.push(
                n,
                name,
                Op::Resize {
                    factor: f,
                    mode: rmode,
                },
                vec![x],
            )?
        };
        self.set(n, Val::Image(y))
    }

    fn concat(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let axis = self.attr_i(n, "axis")?.unwrap_or(1);
        let vals: Vec<&Val> = (0..n.input.len())
            .map(|i| self.input(n, i))
            .collect::<R<_>>()?;
        if vals.is_empty() {
            return Err(self.invalid(n, "no inputs"));
        }
        if vals.iter().all(|v| matches!(v, Val::Image(_))) {
            if axis != 1 && axis != -3 {
                return Err(self.unsupported(
                    n,
                    format!("concatenation of images along axis {axis} (only channels, axis 1)"),
                ));
            }
            let ids: Vec<ValueId> = vals
                .iter()
                .filter_map(|v| match v {
                    Val::Image(i) => Some(*i),
                    _ => None,
                })
                .collect();
            let y = self.push(n, name, Op::Concat, ids)?;
            return self.set(n, Val::Image(y));
        }
        let ks: Vec<&Const> = vals
            .iter()
            .filter_map(|v| match v {
                Val::Const(k) => Some(k),
                _ => None,
            })
            .collect();
        if ks.len() != vals.len() {
            return Err(self.unsupported(n, "concatenating images with constants".to_string()));
        }
        if !ks.iter().all(|k| k.shape.len() == 1) || !(axis == 0 || axis == -1) {
            return Err(self.unsupported(
                n,
                "folding a concatenation of constants other than 1-D ones".to_string(),
            ));
        }
        let out = Const::concat(&ks)
            .ok_or_else(|| self.unsupported(n, "concatenating mixed constants".to_string()))?;
        self.set(n, Val::Const(out))
    }

    fn reshape(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let allowzero = self.attr_i(n, "allowzero")?.unwrap_or(0) != 0;
        let target = self.konst(n, 1)?;
        let dims = target
            .to_sym()
            .filter(|_| target.shape.len() == 1)
            .ok_or_else(|| self.invalid(n, format!("shape input of shape {:?}", target.shape)))?;
        match self.input(n, 0)?.clone() {
            Val::Image(x) if dims.len() == 6 => self.set(
                n,
                Val::Shuffle(Shuffle {
                    src: x,
                    dims,
                    transposed: None,
                }),
            ),
            Val::Shuffle(Shuffle {
                src,
                transposed: Some((block, mode, c)),
                ..
            }) if dims.len() == 4 => {
                let (h, w) = self.spatial(n, src)?;
                let b = block as f64;
                let ok = dim_is(dims[0], &[1.0, -1.0, 0.0])
                    && dim_is(dims[1], &[c as f64, -1.0, 0.0])
                    && self.dim_matches(dims[2], h.scale_by(b))
                    && self.dim_matches(dims[3], w.scale_by(b));
                if !ok {
                    return Err(self.unsupported(n, SHUFFLE_HINT.to_string()));
                }
                let y = self.push(n, name, Op::DepthToSpace { block, mode }, vec![src])?;
                self.set(n, Val::Image(y))
            }
            Val::Const(k) => {
                let ints = target
                    .ints()
                    .ok_or_else(|| self.unsupported(n, "a symbolic target shape".to_string()))?;
                let shape = reshape_dims(&k.shape, &ints, allowzero).ok_or_else(|| {
                    self.invalid(n, format!("cannot reshape {:?} to {ints:?}", k.shape))
                })?;
                self.set(n, Val::Const(k.with_shape(shape)))
            }
            _ => Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        }
    }

    fn dim_matches(&self, d: Sym, expect: Sym) -> bool {
        if d.konst() == Some(-1.0) || d == expect {
            return true;
        }
        // With a symbolic input size, a constant cannot be checked; ONNX Runtime would
        // reject a mismatch at run time, so accept it.
        self.input_hw.is_none() && d.konst().is_some_and(|v| v > 0.0)
    }

    fn transpose(&mut self, n: &NodeProto) -> R<()> {
        let perm = self.attr_ints(n, "perm")?;
        match self.input(n, 0)?.clone() {
            Val::Shuffle(sh) if sh.transposed.is_none() => {
                let c = self.g.channels(sh.src);
                let (h, w) = self.spatial(n, sh.src)?;
                let d = &sh.dims;
                let as_block = |s: Sym| {
                    s.konst()
                        .filter(|v| *v >= 1.0 && v.fract() == 0.0 && *v < 1e6)
                        .map(|v| v as usize)
                };
                let found = match perm.as_deref() {
                    Some([0, 1, 4, 2, 5, 3]) => as_block(d[2])
                        .filter(|&r| Some(r) == as_block(d[3]) && c.is_multiple_of(r * r))
                        .filter(|&r| dim_is(d[1], &[(c / (r * r)) as f64, -1.0]))
                        .map(|r| (r, DepthToSpaceMode::Crd)),
                    Some([0, 3, 4, 1, 5, 2]) => as_block(d[1])
                        .filter(|&r| Some(r) == as_block(d[2]) && c.is_multiple_of(r * r))
                        .filter(|&r| dim_is(d[3], &[(c / (r * r)) as f64, -1.0]))
                        .map(|r| (r, DepthToSpaceMode::Dcr)),
                    _ => None,
                };
                let ok = dim_is(d[0], &[1.0, -1.0, 0.0])
                    && self.dim_matches(d[4], h)
                    && self.dim_matches(d[5], w);
                match found.filter(|_| ok) {
                    Some((r, mode)) => self.set(
                        n,
                        Val::Shuffle(Shuffle {
                            transposed: Some((r, mode, c / (r * r))),
                            ..sh
                        }),
                    ),
                    None => Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
                }
            }
            Val::Const(k) => {
                let rank = k.shape.len();
                let perm: Vec<usize> = match perm {
                    None => (0..rank).rev().collect(),
                    Some(p) => p
                        .iter()
                        .map(|&v| to_usize(v).filter(|&v| v < rank))
                        .collect::<Option<_>>()
                        .ok_or_else(|| self.invalid(n, format!("perm {p:?}")))?,
                };
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..rank).collect::<Vec<_>>() {
                    return Err(self.invalid(n, format!("perm {perm:?} for rank {rank}")));
                }
                self.set(n, Val::Const(k.transpose(&perm)))
            }
            _ => Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        }
    }

    fn constant(&mut self, n: &NodeProto) -> R<()> {
        let c = if let Some(a) = self.attr(n, "value", at::TENSOR)? {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| self.invalid(n, "attribute 'value' holds no tensor"))?;
            consts::from_proto(t).map_err(|e| match e {
                TensorError::External => {
                    self.unsupported(n, "a constant stored in an external file".to_string())
                }
                TensorError::Invalid(m) => self.invalid(n, m),
            })?
        } else if let Some(f) = self.attr_f(n, "value_float")? {
            Const::f32(vec![], vec![f])
        } else if let Some(a) = self.attr(n, "value_floats", at::FLOATS)? {
            Const::f32(vec![a.floats.len()], a.floats.clone())
        } else if let Some(i) = self.attr_i(n, "value_int")? {
            Const::sym(vec![], vec![Sym::k(i as f64)], false)
        } else if let Some(v) = self.attr_ints(n, "value_ints")? {
            Const::sym(
                vec![v.len()],
                v.iter().map(|&i| Sym::k(i as f64)).collect(),
                false,
            )
        } else {
            return Err(self.unsupported(
                n,
                "a Constant without a value, value_float(s) or value_int(s)".to_string(),
            ));
        };
        self.set(n, Val::Const(c))
    }

    fn cast(&mut self, n: &NodeProto) -> R<()> {
        let to = self.attr_i(n, "to")?.unwrap_or(0) as i32;
        let to_float = [dt::FLOAT, dt::FLOAT16, dt::DOUBLE, dt::BFLOAT16].contains(&to);
        let out = match self.input(n, 0)? {
            Val::Image(x) if to_float => Val::Image(*x),
            Val::Const(k) => {
                let k = k.clone();
                match (k.data, to_float) {
                    (Data::F32(v), true) => Val::Const(Const::f32(k.shape, v)),
                    (Data::Sym { v, .. }, true) => Val::Const(Const::sym(k.shape, v, true)),
                    (data, false) => {
                        let v = Const {
                            shape: vec![],
                            data,
                        }
                        .to_sym()
                        .and_then(|v| {
                            v.iter()
                                .map(|s| s.round_with(f64::trunc))
                                .collect::<Option<Vec<_>>>()
                        })
                        .ok_or_else(|| {
                            self.unsupported(
                                n,
                                "casting a non-integral size to integers".to_string(),
                            )
                        })?;
                        Val::Const(Const::sym(k.shape, v, false))
                    }
                }
            }
            _ => {
                return Err(self.unsupported(n, format!("casting an image to data type {to}")));
            }
        };
        self.set(n, out)
    }

    fn shape(&mut self, n: &NodeProto) -> R<()> {
        let full: Vec<Sym> = match self.input(n, 0)? {
            Val::Image(x) => {
                let x = *x;
                let (h, w) = self.spatial(n, x)?;
                vec![Sym::k(1.0), Sym::k(self.g.channels(x) as f64), h, w]
            }
            Val::Const(k) => k.shape.iter().map(|&d| Sym::k(d as f64)).collect(),
            Val::Shuffle(_) => return Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        };
        let r = full.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(self.attr_i(n, "start")?.unwrap_or(0));
        let end = clamp(self.attr_i(n, "end")?.unwrap_or(r));
        let v: Vec<Sym> = full[start..end.max(start)].to_vec();
        self.set(n, Val::Const(Const::sym(vec![v.len()], v, false)))
    }

    fn gather(&mut self, n: &NodeProto) -> R<()> {
        let data = self.konst(n, 0)?;
        let idx = self.konst(n, 1)?;
        let axis = self.attr_i(n, "axis")?.unwrap_or(0);
        if data.shape.len() != 1 || !(axis == 0 || axis == -1) || idx.shape.len() > 1 {
            return Err(self.unsupported(
                n,
                "folding a Gather other than of 1-D constants with 0-D or 1-D indices".to_string(),
            ));
        }
        let len = data.len() as i64;
        let ints = self.ints_of(n, 1)?;
        let flat: Vec<usize> = ints
            .iter()
            .map(|&i| to_usize(if i < 0 { i + len } else { i }).filter(|&i| i < data.len()))
            .collect::<Option<_>>()
            .ok_or_else(|| self.invalid(n, format!("indices {ints:?} out of range {len}")))?;
        let out = data.select(&flat).with_shape(idx.shape.clone());
        self.set(n, Val::Const(out))
    }

    fn squeeze(&mut self, n: &NodeProto, unsqueeze: bool) -> R<()> {
        let k = self.konst(n, 0)?.clone();
        let axes = match self.attr_ints(n, "axes")? {
            Some(a) => Some(a),
            None if n.input.len() > 1 && !n.input[1].is_empty() => Some(self.ints_of(n, 1)?),
            None => None,
        };
        let rank = k.shape.len() as i64;
        let shape = if unsqueeze {
            let axes = axes.ok_or_else(|| self.invalid(n, "missing axes"))?;
            let out_rank = rank + axes.len() as i64;
            let mut norm: Vec<i64> = axes
                .iter()
                .map(|&a| if a < 0 { a + out_rank } else { a })
                .collect();
            norm.sort_unstable();
            norm.dedup();
            if norm.len() != axes.len() || norm.iter().any(|&a| a < 0 || a >= out_rank) {
                return Err(self.invalid(n, format!("axes {axes:?} for rank {rank}")));
            }
            let mut src = k.shape.iter();
            (0..out_rank)
                .map(|d| {
                    if norm.contains(&d) {
                        Some(1)
                    } else {
                        src.next().copied()
                    }
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.invalid(n, format!("axes {axes:?}")))?
        } else {
            let norm: Vec<i64> = axes
                .unwrap_or_else(|| (0..rank).filter(|&d| k.shape[d as usize] == 1).collect())
                .iter()
                .map(|&a| if a < 0 { a + rank } else { a })
                .collect();
            if norm
                .iter()
                .any(|&a| a < 0 || a >= rank || k.shape[a as usize] != 1)
            {
                return Err(self.invalid(n, format!("axes {norm:?} for shape {:?}", k.shape)));
            }
            (0..rank)
                .filter(|d| !norm.contains(d))
                .map(|d| k.shape[d as usize])
                .collect()
        };
        self.set(n, Val::Const(k.with_shape(shape)))
    }

    fn slice(&mut self, n: &NodeProto) -> R<()> {
        let k = self.konst(n, 0)?;
        let (starts, ends, axes, steps) = if self.opset < 10 {
            (
                self.attr_ints(n, "starts")?.unwrap_or_default(),
                self.attr_ints(n, "ends")?.unwrap_or_default(),
                self.attr_ints(n, "axes")?,
                None,
            )
        } else {
            let opt = |i: usize| -> R<Option<Vec<i64>>> {
                match n.input.get(i).filter(|s| !s.is_empty()) {
                    Some(_) => self.ints_of(n, i).map(Some),
                    None => Ok(None),
                }
            };
            (self.ints_of(n, 1)?, self.ints_of(n, 2)?, opt(3)?, opt(4)?)
        };
        if k.shape.len() != 1
            || starts.len() != 1
            || ends.len() != 1
            || axes.as_ref().is_some_and(|a| a[..] != [0] && a[..] != [-1])
        {
            return Err(self.unsupported(
                n,
                "folding a Slice other than along the one axis of a 1-D constant".to_string(),
            ));
        }
        let step = steps.map_or(Some(1), |s| (s.len() == 1).then(|| s[0]));
        let step = step
            .filter(|&s| s != 0)
            .ok_or_else(|| self.invalid(n, "steps"))?;
        let len = k.len() as i64;
        if len == 0 {
            let out = k.clone();
            return self.set(n, Val::Const(out));
        }
        let norm = |v: i64, lo: i64, hi: i64| {
            let v = if v < 0 { v.saturating_add(len) } else { v };
            v.clamp(lo, hi)
        };
        let mut idx = Vec::new();
        if step > 0 {
            let (mut i, e) = (norm(starts[0], 0, len), norm(ends[0], 0, len));
            while i < e {
                idx.push(i as usize);
                i = i.saturating_add(step);
            }
        } else {
            let (mut i, e) = (norm(starts[0], 0, len - 1), norm(ends[0], -1, len - 1));
            while i > e {
                idx.push(i as usize);
                i = i.saturating_add(step);
            }
        }
        let out = k.select(&idx);
        self.set(n, Val::Const(out))
    }
}

trait ScaleBy {
    fn scale_by(self, f: f64) -> Sym;
}

impl ScaleBy for Sym {
    fn scale_by(self, f: f64) -> Sym {
        Sym {
            c: self.c * f,
            h: self.h * f,
            w: self.w * f,
        }
    }
}

/// Whether `d` is one of the constants in `vals`.
fn dim_is(d: Sym, vals: &[f64]) -> bool {
    d.konst().is_some_and(|v| vals.contains(&v))
}

/// `d / base` if `d` is a constant multiple of `base`.
fn ratio(d: Sym, base: Sym) -> Option<f64> {
    let r = match base.konst() {
        Some(b) if b != 0.0 => d.konst()? / b,
        Some(_) => return None,
        None if base.h != 0.0 => d.h / base.h,
        None => d.w / base.w,
    };
    (base.scale_by(r) == d).then_some(r)
}

/// Whether ONNX's nearest resize with these modes repeats each pixel `f×f` times (what the
/// IR's nearest resize does), checked on every output of rows of 1 to 9 pixels.
/// `align_corners` depends on the size and is never the same.
fn nearest_is_floor(f: usize, ctm: &str, nm: &str) -> bool {
    let ff = f as f64;
    (1..10usize).all(|n| {
        (0..n * f).all(|o| {
            let o_f = o as f64;
            let x = match ctm {
                "half_pixel" | "half_pixel_symmetric" => (o_f + 0.5) / ff - 0.5,
                "pytorch_half_pixel" if n * f > 1 => (o_f + 0.5) / ff - 0.5,
                "pytorch_half_pixel" => 0.0,
                "asymmetric" => o_f / ff,
                "tf_half_pixel_for_nn" => (o_f + 0.5) / ff,
                _ => return false,
            };
            let fl = x.floor();
            let i = match nm {
                "round_prefer_floor" if x - fl == 0.5 => fl,
                "round_prefer_ceil" if x - fl == 0.5 => fl + 1.0,
                "round_prefer_floor" | "round_prefer_ceil" => x.round(),
                "floor" => fl,
                "ceil" => x.ceil(),
                _ => return false,
            };
            i.clamp(0.0, n as f64 - 1.0) as usize == o / f
        })
    })
}

/// For a transposed convolution along one axis (kernel `k`, stride `s`, leading pad `p`):
/// for each output phase `r`, the `(input offset, tap)` pairs with
/// `y[q·s + r] = Σ x[q + offset] · w[tap]`, and the smallest and largest offset (0 included).
#[allow(clippy::type_complexity)]
fn phase_taps(k: usize, s: usize, p: usize) -> (Vec<Vec<(isize, usize)>>, isize, isize) {
    let (mut lo, mut hi) = (0isize, 0isize);
    let phases = (0..s)
        .map(|r| {
            let (a, b) = (((r + p) / s) as isize, (r + p) % s);
            (0..)
                .map(|m| (m, m * s + b))
                .take_while(|&(_, t)| t < k)
                .map(|(m, t)| {
                    let d = a - m as isize;
                    lo = lo.min(d);
                    hi = hi.max(d);
                    (d, t)
                })
                .collect()
        })
        .collect();
    (phases, lo, hi)
}

/// ONNX `Reshape` of a constant: `0` copies the input dimension (unless `allowzero`), one
/// `-1` is inferred.
fn reshape_dims(from: &[usize], to: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let total: usize = from.iter().product();
    let mut out = Vec::with_capacity(to.len());
    let mut infer = None;
    for (i, &d) in to.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*from.get(i)?),
            d if d >= 0 => out.push(usize::try_from(d).ok()?),
            _ => return None,
        }
    }
    let known = out.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return None;
        }
        out[i] = total / known;
    }
    let size = out.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    (size == total).then_some(out)
}

/// Drops image nodes no output depends on (the input always stays).
fn prune(g: Graph) -> Graph {
    let mut live = vec![false; g.nodes.len()];
    for (_, v) in &g.outputs {
        live[v.0] = true;
    }
    for i in (0..g.nodes.len()).rev() {
        if live[i] || matches!(g.nodes[i].op, Op::Input { .. }) {
            live[i] = true;
            for v in &g.nodes[i].inputs {
                live[v.0] = true;
            }
        }
    }
    let mut remap = vec![usize::MAX; g.nodes.len()];
    let mut out = Graph::new();
    for (i, mut node) in g.nodes.into_iter().enumerate() {
        if live[i] {
            for v in &mut node.inputs {
                *v = ValueId(remap[v.0]);
            }
            remap[i] = out.nodes.len();
            out.nodes.push(node);
        }
    }
    out.outputs = g
        .outputs
        .into_iter()
        .map(|(name, v)| (name, ValueId(remap[v.0])))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_modes() {
        for f in 2..6 {
            assert!(
                nearest_is_floor(f, "half_pixel", "round_prefer_floor"),
                "f={f}"
            );
            assert!(nearest_is_floor(f, "asymmetric", "floor"), "f={f}");
            assert!(!nearest_is_floor(f, "half_pixel", "floor"), "f={f}");
            assert!(
                !nearest_is_floor(f, "align_corners", "round_prefer_floor"),
                "f={f}"
            );
        }
        assert!(nearest_is_floor(2, "asymmetric", "round_prefer_floor"));
        assert!(!nearest_is_floor(3, "asymmetric", "round_prefer_floor"));
    }

    #[test]
    fn phase_taps_of_a_k4_s2_p1_deconvolution() {
        // y[2q] = x[q]·w1 + x[q-1]·w3, y[2q+1] = x[q+1]·w0 + x[q]·w2
        let (taps, lo, hi) = phase_taps(4, 2, 1);
        assert_eq!(taps, vec![vec![(0, 1), (-1, 3)], vec![(1, 0), (0, 2)]]);
        assert_eq!((lo, hi), (-1, 1));
    }

    #[test]
    fn reshape_of_constants() {
        assert_eq!(reshape_dims(&[1, 4, 1, 1], &[-1], false), Some(vec![4]));
        assert_eq!(reshape_dims(&[2, 3], &[0, -1], false), Some(vec![2, 3]));
        assert_eq!(reshape_dims(&[2, 3], &[4, -1], false), None);
        assert_eq!(reshape_dims(&[2, 3], &[-1, -1], false), None);
    }
}
