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
//! | `ConvTranspose` (group 1, output at most input × stride) | [`Op::Conv2d`] + [`Op::DepthToSpace`] (CRD), see below |
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
//! A `ConvTranspose` with stride `s` whose output is at most `s` times its input (kernel −
//! pads + output_padding ≤ stride; equal for the usual `k=2s, p=s/2` and FSRCNN's
//! `k=9, p=4, output_padding=s-1`) is lowered to a stride-1 convolution with `s²·C_out`
//! outputs, one per sub-pixel phase, followed by a `CRD` depth-to-space and, when smaller,
//! a crop (`crate::transposed`, shared with ncnn's `Deconvolution`): output pixel
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
//!
//! # Files
//!
//! This file walks the model (opset, initializers, the graph input and outputs) and
//! dispatches each node (`Importer::node`); the lowering of each operator family is in
//! `lower/`: `conv.rs` (`Conv`, `ConvTranspose`), `elementwise.rs` (`Add`/`Sub`/`Mul`/`Div`
//! and their folding), `activation.rs`, `shape.rs` (`DepthToSpace`, `Resize`/`Upsample`,
//! `Concat`, `Reshape`, `Transpose`) and `fold.rs` (the nodes folded at import: `Constant`,
//! `Cast`, `Shape`, `Gather`, `Squeeze`/`Unsqueeze`, `Slice`, `Floor`/`Ceil`). Unreachable
//! nodes are dropped by [`superres_graph::passes::remove_dead`].

mod consts;
mod lower;
pub mod proto;

use std::collections::HashMap;

use prost::Message;
use superres_graph::{Activation, BinaryOp, DepthToSpaceMode, Graph, Op, ValueId};

use crate::ImportError;
use consts::{Const, Sym, TensorError};
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
        // Image nodes no output depends on are dropped; every image derives from the input,
        // so the input stays.
        superres_graph::passes::remove_dead(&self.g).map_err(|e| crate::graph_error(self.file, e))
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
            "LeakyRelu" => self.leaky_relu(n, &name),
            "PRelu" => self.prelu(n, &name),
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
            "Floor" | "Ceil" => self.round(n),
            _ => Err(self.unsupported(n, None)),
        }
    }
}
