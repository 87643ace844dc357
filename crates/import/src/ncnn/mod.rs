//! ncnn models (`NAME.param` + `NAME.bin`, as Upscayl, chaiNNer and the `*-ncnn-vulkan`
//! tools ship them) into the superres IR.
//!
//! The `.param` ([`param`]) describes the layers and the blobs between them; the `.bin`
//! ([`bin`]) holds their weights, back to back, in layer order. The layers read:
//!
//! | layer | becomes |
//! |---|---|
//! | `Input` | the image input (channels from `2=`, else from the first convolution's weights) |
//! | `Split`, `Noop`, `Dropout` (scale 1) | aliases of their input |
//! | `Convolution`, `ConvolutionDepthWise` | `Conv2d` with its bias and fused activation (`9=` 0–4: none, ReLU, leaky ReLU, clip, sigmoid), stride, dilation, groups and padding (`-233`/`-234` SAME at stride 1) |
//! | `Padding` (zeros) | folded into the convolution that reads it |
//! | `Eltwise` | sum (with `1=` coefficients) or product |
//! | `BinaryOp` | add, sub, mul, div of two blobs, or of a blob and the scalar `2=` (also reverse sub) |
//! | `Concat` (axis 0) | `Concat` |
//! | `Interp` | `Resize`: nearest and bilinear by an integer factor; bicubic by a rational one (`0.75` after a ×4 network makes realesr-animevideov3's ×3) |
//! | `PixelShuffle` | `DepthToSpace` (mode 0 = PyTorch's CRD, 1 = DCR) |
//! | `PReLU`, `ReLU` (slope → leaky ReLU), `Sigmoid`, `TanH`, `Clip` | activations |
//! | `Deconvolution` | a phase convolution, `DepthToSpace` and a crop ([`waifu2x`]) |
//! | `Crop` (to a second blob's size, or by offsets) | `Border` with negative sides |
//! | `Pooling` (global average) → `InnerProduct`… → `Scale` (`0=-233`) | `SqueezeExcite` |
//!
//! Anything else is an [`ImportError::UnsupportedOp`] naming the layer and its type, and so
//! is any of the last three used otherwise than as waifu2x's packs use them. A network of
//! unpadded convolutions (waifu2x's upconv_7 and CUNet) runs behind replicated edges, as
//! waifu2x-ncnn-vulkan runs it, so that the model keeps the `scale ×` mapping tiles need
//! ([`import`]).
//!
//! ncnn has no declared outputs: the output is the blob no layer reads (`output` if several).
//! A blob read before it is written (undefined, or a cycle) is an error, as is a `.bin` with
//! bytes left over after the last layer's weights (it belongs to another `.param`).

pub mod bin;
pub mod param;
mod waifu2x;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use superres_graph::{
    Activation, BinaryOp, Border, Conv2d, Dense, DepthToSpaceMode, Epilogue, Graph, Op, Padding,
    ResizeMode, Tensor, UnaryOp, ValueId,
};

use crate::ImportError;
use bin::Weights;
use param::{Layer, Param};

pub use param::{is_param, is_param_bin};

pub(crate) fn corrupt(file: &str, format: &'static str, reason: impl Into<String>) -> ImportError {
    ImportError::Corrupt {
        file: file.to_string(),
        format,
        reason: reason.into(),
    }
}

/// The weights file beside a `.param`: `NAME.param` → `NAME.bin`.
pub fn bin_path(param: &Path) -> PathBuf {
    param.with_extension("bin")
}

/// Reads `NAME.param` and the `NAME.bin` beside it.
pub fn read_files(path: &Path) -> Result<(Vec<u8>, Vec<u8>), ImportError> {
    let file = path.display().to_string();
    let param = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    let bin = bin_path(path);
    let weights = match std::fs::read(&bin) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImportError::InvalidModel {
                file,
                message: format!(
                    "an ncnn .param needs its weights beside it, and {} does not exist",
                    bin.display()
                ),
            });
        }
        Err(source) => {
            return Err(ImportError::Io {
                file: bin.display().to_string(),
                source,
            });
        }
    };
    Ok((param, weights))
}

/// Imports an ncnn model from its `.param` text and `.bin` weights; `file` names it in errors.
///
/// A network of unpadded convolutions (waifu2x's) gives `scale · (n − 2k)` pixels for `n`:
/// it is imported behind an edge replication of `k` pixels a side, so that the model maps
/// `n` to `scale · n` as every other and tiles stay whole, which is what waifu2x-ncnn-vulkan
/// does to every tile (its "prepadding"). `k` is measured on the graph at the Input layer's
/// declared size (or 256), and must be a whole number of input pixels.
pub fn import(param: &[u8], weights: &[u8], file: &str) -> Result<Graph, ImportError> {
    let p = param::parse(param, file)?;
    let probe = probe_size(&p);
    let g = Builder::new(weights, file, probe, 0).build(&p)?;
    let prepad = waifu2x::prepadding(&g, probe, file)?;
    if prepad == 0 {
        return Ok(g);
    }
    let inner = (probe.0 - 2 * prepad, probe.1 - 2 * prepad);
    let g = Builder::new(weights, file, inner, prepad).build(&p)?;
    waifu2x::check_prepadded(&g, inner, file)?;
    Ok(g)
}

/// The size at which crops are measured: the Input layer's declared `h × w` (the size the
/// model was exported at, so its strides and crops fit), or 256 × 256.
fn probe_size(p: &Param) -> (usize, usize) {
    let declared = p.layers.iter().find(|l| l.kind == "Input").and_then(|l| {
        let w = l.params.int(0, 0).ok()?;
        let h = l.params.int(1, 0).ok()?;
        ((16..=4096).contains(&w) && (16..=4096).contains(&h)).then_some((h as usize, w as usize))
    });
    declared.unwrap_or((256, 256))
}

/// A blob: a value, a value waiting for the convolution that absorbs its zero padding, or
/// the channel statistics of a value on their way to a squeeze-and-excitation
/// ([`waifu2x`]).
#[derive(Clone)]
enum Blob {
    Value(ValueId),
    Padded(ValueId, Padding),
    /// The global average of `of`, through the dense layers so far.
    Pooled {
        of: ValueId,
        layers: Vec<Dense>,
    },
}

struct Builder<'a> {
    g: Graph,
    blobs: HashMap<String, Blob>,
    /// Blobs in the order they were produced, and whether a layer read them.
    produced: Vec<(String, bool)>,
    index: HashMap<String, usize>,
    w: Weights<'a>,
    file: &'a str,
    input_channels: usize,
    /// The graph input's size at which crops are measured.
    probe: (usize, usize),
    /// Edge replication in front of the network (see [`import`]).
    prepad: usize,
}

fn node_err(file: &str, l: &Layer, message: impl std::fmt::Display) -> ImportError {
    ImportError::InvalidNode {
        file: file.to_string(),
        node: l.name.clone(),
        message: format!("{} (line {}): {message}", l.kind, l.line),
    }
}

fn unsupported(file: &str, l: &Layer, detail: impl Into<String>) -> ImportError {
    ImportError::UnsupportedOp {
        file: file.to_string(),
        node: l.name.clone(),
        op: l.kind.clone(),
        detail: Some(detail.into()),
    }
}

fn checked(v: i32, what: &str, min: i32, max: i32) -> Result<usize, String> {
    if v < min || v > max {
        return Err(format!("{what} {v} is out of range ({min}..={max})"));
    }
    Ok(v as usize)
}

/// A small fraction `num / den` (`den <= 16`) equal to `x`, as ncnn's float scales are.
fn fraction(x: f32) -> Option<(usize, usize)> {
    if !(x.is_finite() && x > 0.0 && x <= 64.0) {
        return None;
    }
    (1..=16usize).find_map(|den| {
        let n = f64::from(x) * den as f64;
        let r = n.round();
        ((n - r).abs() < 1e-4 && r >= 1.0).then_some((r as usize, den))
    })
}

impl<'a> Builder<'a> {
    fn new(weights: &'a [u8], file: &'a str, probe: (usize, usize), prepad: usize) -> Self {
        Builder {
            g: Graph::new(),
            blobs: HashMap::new(),
            produced: Vec::new(),
            index: HashMap::new(),
            w: Weights::new(weights, file),
            file,
            input_channels: 3,
            probe,
            prepad,
        }
    }

    fn build(mut self, p: &Param) -> Result<Graph, ImportError> {
        let inputs: Vec<&Layer> = p.layers.iter().filter(|l| l.kind == "Input").collect();
        match inputs.as_slice() {
            [one] => self.input_channels = input_channels(&p.layers, one),
            [] => {
                return Err(ImportError::InvalidModel {
                    file: self.file.to_string(),
                    message: "the .param has no Input layer".into(),
                });
            }
            _ => {
                return Err(ImportError::InvalidModel {
                    file: self.file.to_string(),
                    message: format!(
                        "the .param has {} Input layers; superres models take one image",
                        inputs.len()
                    ),
                });
            }
        }
        for l in &p.layers {
            self.layer(l)?;
            if self.produced.len() > p.blob_count {
                return Err(corrupt(
                    self.file,
                    "ncnn .param",
                    format!(
                        "line {}: more blobs than the {} declared",
                        l.line, p.blob_count
                    ),
                ));
            }
        }
        if self.w.remaining() != 0 {
            return Err(corrupt(
                self.file,
                "ncnn .bin",
                format!(
                    "{} bytes are left after the last layer's weights: the .bin does not \
                     belong to this .param",
                    self.w.remaining()
                ),
            ));
        }
        let open: Vec<&String> = self
            .produced
            .iter()
            .filter(|(_, used)| !used)
            .map(|(n, _)| n)
            .collect();
        let out = match open.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(ImportError::InvalidModel {
                    file: self.file.to_string(),
                    message: "every blob is read by a layer, so none is the output".into(),
                });
            }
            many => match many.iter().find(|n| n.as_str() == "output") {
                Some(n) => (*n).clone(),
                None => {
                    let names: Vec<&str> = many.iter().take(8).map(|s| s.as_str()).collect();
                    return Err(ImportError::InvalidModel {
                        file: self.file.to_string(),
                        message: format!(
                            "{} blobs are read by no layer ({}), so the output is ambiguous",
                            many.len(),
                            names.join(", ")
                        ),
                    });
                }
            },
        };
        match self.blobs.get(&out) {
            Some(&Blob::Value(v)) => {
                self.g.output(&out, v);
            }
            _ => {
                return Err(ImportError::InvalidModel {
                    file: self.file.to_string(),
                    message: format!("the output '{out}' is a Padding no convolution reads"),
                });
            }
        }
        Ok(self.g)
    }

    /// Reads bottom `i` of `l`, which must exist.
    fn blob(&mut self, l: &Layer, i: usize) -> Result<Blob, ImportError> {
        let name = &l.bottoms[i];
        let b = self.blobs.get(name).cloned().ok_or_else(|| {
            node_err(
                self.file,
                l,
                format!("blob '{name}' is read before any layer writes it (undefined, or a cycle)"),
            )
        })?;
        if let Some(&k) = self.index.get(name) {
            self.produced[k].1 = true;
        }
        Ok(b)
    }

    fn value(&mut self, l: &Layer, i: usize) -> Result<ValueId, ImportError> {
        match self.blob(l, i)? {
            Blob::Value(v) => Ok(v),
            Blob::Padded(..) => Err(unsupported(
                self.file,
                l,
                "reads a zero Padding; only a convolution can absorb one",
            )),
            Blob::Pooled { .. } => Err(unsupported(
                self.file,
                l,
                "reads a global pooling; superres takes one only as the squeeze of a \
                 squeeze-and-excitation block (Pooling, InnerProduct…, Scale)",
            )),
        }
    }

    fn define(&mut self, l: &Layer, top: usize, b: Blob) -> Result<(), ImportError> {
        let name = &l.tops[top];
        if self.blobs.contains_key(name) {
            return Err(node_err(
                self.file,
                l,
                format!("blob '{name}' is written a second time"),
            ));
        }
        self.blobs.insert(name.clone(), b);
        self.index.insert(name.clone(), self.produced.len());
        self.produced.push((name.clone(), false));
        Ok(())
    }

    fn arity(
        &self,
        l: &Layer,
        bottoms: std::ops::RangeInclusive<usize>,
    ) -> Result<(), ImportError> {
        if !bottoms.contains(&l.bottoms.len()) {
            return Err(node_err(
                self.file,
                l,
                format!(
                    "takes {}..={} input blob(s), the line names {}",
                    bottoms.start(),
                    bottoms.end(),
                    l.bottoms.len()
                ),
            ));
        }
        let tops = if l.kind == "Split" {
            l.tops.len().max(1)
        } else {
            1
        };
        if l.tops.len() != tops {
            return Err(node_err(
                self.file,
                l,
                format!("writes one blob, the line names {}", l.tops.len()),
            ));
        }
        Ok(())
    }

    fn push(
        &mut self,
        l: &Layer,
        name: &str,
        op: Op,
        inputs: Vec<ValueId>,
    ) -> Result<ValueId, ImportError> {
        self.g
            .push(name, op, inputs)
            .map_err(|e| crate::graph_error(self.file, e))
            .map_err(|e| match e {
                ImportError::InvalidNode { message, .. } => node_err(self.file, l, message),
                e => e,
            })
    }

    fn constant(&mut self, name: &str, v: f32) -> ValueId {
        self.g.constant(name, Tensor::scalar(v))
    }

    fn layer(&mut self, l: &Layer) -> Result<(), ImportError> {
        let p = &l.params;
        let file = self.file;
        let pe = |e: String| node_err(file, l, e);
        match l.kind.as_str() {
            "Input" => {
                self.arity(l, 0..=0)?;
                let mut v = self.g.input(&l.name, self.input_channels);
                if self.prepad > 0 {
                    let k = self.prepad as isize;
                    let name = format!("{}/prepadding", l.name);
                    v = self.push(l, &name, Op::Border(Border::uniform(k)), vec![v])?;
                }
                self.define(l, 0, Blob::Value(v))
            }
            "Split" | "Noop" => {
                self.arity(l, 1..=1)?;
                let b = self.blob(l, 0)?;
                for t in 0..l.tops.len() {
                    self.define(l, t, b.clone())?;
                }
                Ok(())
            }
            "Dropout" => {
                self.arity(l, 1..=1)?;
                let scale = p.float(0, 1.0).map_err(pe)?;
                let x = self.value(l, 0)?;
                let v = if scale == 1.0 {
                    x
                } else {
                    let k = self.constant(&format!("{}/scale", l.name), scale);
                    self.push(l, &l.name, Op::Binary(BinaryOp::Mul), vec![x, k])?
                };
                self.define(l, 0, Blob::Value(v))
            }
            "Convolution" => self.conv(l, false),
            "ConvolutionDepthWise" => self.conv(l, true),
            "Deconvolution" => self.deconv(l),
            "DeconvolutionDepthWise" => Err(unsupported(
                self.file,
                l,
                "a grouped transposed convolution",
            )),
            "Crop" => self.crop(l),
            "Pooling" => self.pooling(l),
            "InnerProduct" => self.inner_product(l),
            "Scale" => self.scale(l),
            "Padding" => {
                self.arity(l, 1..=1)?;
                let get = |k: i32| p.int(k, 0);
                let (top, bottom, left, right) = (
                    get(0).map_err(pe)?,
                    get(1).map_err(pe)?,
                    get(2).map_err(pe)?,
                    get(3).map_err(pe)?,
                );
                let (kind, value) = (get(4).map_err(pe)?, p.float(5, 0.0).map_err(pe)?);
                if kind != 0 || value != 0.0 || get(6).map_err(pe)? != 0 {
                    return Err(unsupported(
                        self.file,
                        l,
                        "only zero padding (type 0, value 0) is supported, folded into the \
                         next convolution",
                    ));
                }
                if get(7).map_err(pe)? != 0 || get(8).map_err(pe)? != 0 {
                    return Err(unsupported(self.file, l, "channel padding (front/behind)"));
                }
                let c = |v: i32, what: &str| checked(v, what, 0, 1024).map_err(pe);
                let pad = Padding {
                    top: c(top, "top")?,
                    bottom: c(bottom, "bottom")?,
                    left: c(left, "left")?,
                    right: c(right, "right")?,
                };
                let b = match self.blob(l, 0)? {
                    Blob::Pooled { .. } => {
                        return Err(unsupported(self.file, l, "padding a pooled vector"));
                    }
                    Blob::Value(v) => Blob::Padded(v, pad),
                    Blob::Padded(v, q) => Blob::Padded(
                        v,
                        Padding {
                            top: q.top + pad.top,
                            bottom: q.bottom + pad.bottom,
                            left: q.left + pad.left,
                            right: q.right + pad.right,
                        },
                    ),
                };
                self.define(l, 0, b)
            }
            "ReLU" => {
                self.arity(l, 1..=1)?;
                let slope = p.float(0, 0.0).map_err(pe)?;
                let a = if slope == 0.0 {
                    Activation::Relu
                } else {
                    Activation::LeakyRelu(slope)
                };
                self.unary(l, Op::Activation(a))
            }
            "Sigmoid" => {
                self.arity(l, 1..=1)?;
                self.unary(l, Op::Activation(Activation::Sigmoid))
            }
            "TanH" => {
                self.arity(l, 1..=1)?;
                self.unary(l, Op::Activation(Activation::Tanh))
            }
            "Clip" => {
                self.arity(l, 1..=1)?;
                let min = p.float(0, -f32::MAX).map_err(pe)?;
                let max = p.float(1, f32::MAX).map_err(pe)?;
                self.unary(l, Op::Activation(Activation::Clip { min, max }))
            }
            "PReLU" => {
                self.arity(l, 1..=1)?;
                let n = checked(p.int(0, 0).map_err(pe)?, "num_slope", 1, 1 << 16).map_err(pe)?;
                let slopes = self.w.raw(n, &format!("layer '{}' slopes", l.name))?;
                self.unary(l, Op::Activation(Activation::PRelu(slopes)))
            }
            "PixelShuffle" => {
                self.arity(l, 1..=1)?;
                let block =
                    checked(p.int(0, 1).map_err(pe)?, "upscale_factor", 1, 16).map_err(pe)?;
                let mode = match p.int(1, 0).map_err(pe)? {
                    0 => DepthToSpaceMode::Crd,
                    1 => DepthToSpaceMode::Dcr,
                    m => return Err(unsupported(self.file, l, format!("mode {m}"))),
                };
                self.unary(l, Op::DepthToSpace { block, mode })
            }
            "Interp" => self.interp(l),
            "Concat" => {
                self.arity(l, 1..=usize::MAX)?;
                let axis = p.int(0, 0).map_err(pe)?;
                if axis != 0 && axis != -3 {
                    return Err(unsupported(
                        self.file,
                        l,
                        format!("axis {axis} (only 0, the channels, is supported)"),
                    ));
                }
                let xs = (0..l.bottoms.len())
                    .map(|i| self.value(l, i))
                    .collect::<Result<Vec<_>, _>>()?;
                let v = self.push(l, &l.name, Op::Concat, xs)?;
                self.define(l, 0, Blob::Value(v))
            }
            "Eltwise" => self.eltwise(l),
            "BinaryOp" => self.binary(l),
            other => Err(unsupported(
                self.file,
                l,
                format!("the ncnn layer type '{other}' is not supported"),
            )),
        }
    }

    fn unary(&mut self, l: &Layer, op: Op) -> Result<(), ImportError> {
        let x = self.value(l, 0)?;
        let v = self.push(l, &l.name, op, vec![x])?;
        self.define(l, 0, Blob::Value(v))
    }

    fn conv(&mut self, l: &Layer, depthwise: bool) -> Result<(), ImportError> {
        self.arity(l, 1..=1)?;
        let p = &l.params;
        let file = self.file;
        let pe = |e: String| node_err(file, l, e);
        let int = |k: i32, d: i32| p.int(k, d).map_err(pe);
        let cout = checked(int(0, 0)?, "num_output", 1, 1 << 16).map_err(pe)?;
        let kw0 = int(1, 0)?;
        let kw = checked(kw0, "kernel_w", 1, 64).map_err(pe)?;
        let kh = checked(int(11, kw0)?, "kernel_h", 1, 64).map_err(pe)?;
        let dw0 = int(2, 1)?;
        let dw = checked(dw0, "dilation_w", 1, 64).map_err(pe)?;
        let dh = checked(int(12, dw0)?, "dilation_h", 1, 64).map_err(pe)?;
        let sw0 = int(3, 1)?;
        let sw = checked(sw0, "stride_w", 1, 64).map_err(pe)?;
        let sh = checked(int(13, sw0)?, "stride_h", 1, 64).map_err(pe)?;
        let pl = int(4, 0)?;
        let pr = int(15, pl)?;
        let pt = int(14, pl)?;
        let pb = int(16, pt)?;
        let pad_value = p.float(18, 0.0).map_err(pe)?;
        let bias_term = int(5, 0)? != 0;
        let wsize = checked(int(6, 0)?, "weight_data_size", 1, i32::MAX).map_err(pe)?;
        let groups = if depthwise {
            checked(int(7, 1)?, "group", 1, 1 << 16).map_err(pe)?
        } else {
            1
        };
        if int(8, 0)? != 0 {
            return Err(unsupported(
                self.file,
                l,
                "int8 quantisation (int8_scale_term)",
            ));
        }
        if int(19, 0)? != 0 {
            return Err(unsupported(
                self.file,
                l,
                "dynamic weights (a second input blob)",
            ));
        }
        let activation = self.fused_activation(l)?;
        if pad_value != 0.0 {
            return Err(unsupported(
                self.file,
                l,
                format!("padding with the value {pad_value}"),
            ));
        }
        let (x, extra) = match self.blob(l, 0)? {
            Blob::Value(v) => (v, Padding::default()),
            Blob::Padded(v, q) => (v, q),
            Blob::Pooled { .. } => {
                return Err(unsupported(
                    self.file,
                    l,
                    "a convolution of a pooled vector (InnerProduct is the dense layer)",
                ));
            }
        };
        let cin = self.g.channels(x);
        let (eh, ew) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
        let same = |v: i32| v == -233 || v == -234;
        let mut padding = if [pl, pr, pt, pb].iter().all(|&v| v == -233 || v == -234) {
            if !(same(pl) && pl == pr && pl == pt && pl == pb) {
                return Err(pe("mixed SAME padding markers".into()));
            }
            if sh != 1 || sw != 1 {
                return Err(unsupported(
                    self.file,
                    l,
                    "SAME padding with a stride above 1 (it depends on the image size)",
                ));
            }
            let (th, tw) = (eh - 1, ew - 1);
            if pl == -233 {
                Padding {
                    top: th / 2,
                    bottom: th - th / 2,
                    left: tw / 2,
                    right: tw - tw / 2,
                }
            } else {
                Padding {
                    top: th - th / 2,
                    bottom: th / 2,
                    left: tw - tw / 2,
                    right: tw / 2,
                }
            }
        } else {
            let c = |v: i32, what: &str| checked(v, what, 0, 1024).map_err(pe);
            Padding {
                top: c(pt, "pad_top")?,
                bottom: c(pb, "pad_bottom")?,
                left: c(pl, "pad_left")?,
                right: c(pr, "pad_right")?,
            }
        };
        padding.top += extra.top;
        padding.bottom += extra.bottom;
        padding.left += extra.left;
        padding.right += extra.right;
        if !cin.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
            return Err(pe(format!(
                "{groups} groups do not divide {cin} → {cout} channels"
            )));
        }
        let cing = cin / groups;
        let want = [kh, kw, cing, cout]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b));
        if want != Some(wsize) {
            return Err(pe(format!(
                "weight_data_size {wsize} does not match {cout} outputs × {cing} inputs × \
                 {kh}×{kw} (the input blob has {cin} channels)"
            )));
        }
        let raw = self
            .w
            .tagged(wsize, &format!("layer '{}' weights", l.name))?;
        let bias = if bias_term {
            Some(self.w.raw(cout, &format!("layer '{}' bias", l.name))?)
        } else {
            None
        };
        // ncnn: [cout][cin/g][kh][kw]; the IR: [kh][kw][cin/g][cout].
        let weights = Conv2d::weights_from_oihw(&raw, cout, cing, kh, kw);
        let conv = Conv2d {
            kh,
            kw,
            cin,
            cout,
            groups,
            stride: (sh, sw),
            dilation: (dh, dw),
            padding,
            weights,
            epilogue: Epilogue {
                bias,
                activation,
                residual: None,
            },
        };
        let v = self.push(l, &l.name, Op::Conv2d(conv), vec![x])?;
        self.define(l, 0, Blob::Value(v))
    }

    /// The activation a layer fuses (`9=` type, `10=` parameters), as ncnn's
    /// `Convolution`, `Deconvolution` and `InnerProduct` apply it.
    fn fused_activation(&self, l: &Layer) -> Result<Option<Activation>, ImportError> {
        let p = &l.params;
        let pe = |e: String| node_err(self.file, l, e);
        let act_params = p.floats(10).map_err(pe)?;
        let arg = |i: usize| act_params.get(i).copied();
        Ok(match p.int(9, 0).map_err(pe)? {
            0 => None,
            1 => Some(Activation::Relu),
            2 => Some(Activation::LeakyRelu(arg(0).unwrap_or(0.0))),
            3 => match (arg(0), arg(1)) {
                (Some(min), Some(max)) => Some(Activation::Clip { min, max }),
                _ => return Err(pe("a clip activation needs two activation_params".into())),
            },
            4 => Some(Activation::Sigmoid),
            5 => return Err(unsupported(self.file, l, "the fused Mish activation (9=5)")),
            6 => {
                return Err(unsupported(
                    self.file,
                    l,
                    "the fused HardSwish activation (9=6)",
                ));
            }
            t => return Err(unsupported(self.file, l, format!("activation_type {t}"))),
        })
    }

    fn interp(&mut self, l: &Layer) -> Result<(), ImportError> {
        self.arity(l, 1..=1)?;
        let p = &l.params;
        let file = self.file;
        let pe = |e: String| node_err(file, l, e);
        let kind = p.int(0, 0).map_err(pe)?;
        let hs = p.float(1, 1.0).map_err(pe)?;
        let ws = p.float(2, 1.0).map_err(pe)?;
        if p.int(3, 0).map_err(pe)? != 0 || p.int(4, 0).map_err(pe)? != 0 {
            return Err(unsupported(self.file, l, "a fixed output size (3=/4=)"));
        }
        if p.int(5, 0).map_err(pe)? != 0 || p.has(9) {
            return Err(unsupported(self.file, l, "a dynamic output size"));
        }
        if p.int(6, 0).map_err(pe)? != 0 && kind != 1 {
            return Err(unsupported(
                self.file,
                l,
                "align_corner=1 (its coordinates depend on the image size)",
            ));
        }
        if hs != ws {
            return Err(unsupported(
                self.file,
                l,
                format!("different height and width scales ({hs}, {ws})"),
            ));
        }
        let frac = fraction(ws);
        let op = match (kind, frac) {
            (1 | 2, Some((f, 1))) => Op::Resize {
                factor: f,
                mode: if kind == 1 {
                    ResizeMode::Nearest
                } else {
                    ResizeMode::Bilinear
                },
            },
            (3, Some((f, down))) => Op::Resize {
                factor: f,
                mode: ResizeMode::Bicubic { down },
            },
            (1..=3, _) => {
                return Err(unsupported(
                    self.file,
                    l,
                    format!(
                        "scale {ws} (nearest and bilinear by integer factors, bicubic by \
                         small fractions)"
                    ),
                ));
            }
            (k, _) => return Err(unsupported(self.file, l, format!("resize_type {k}"))),
        };
        self.unary(l, op)
    }

    fn eltwise(&mut self, l: &Layer) -> Result<(), ImportError> {
        self.arity(l, 1..=usize::MAX)?;
        let p = &l.params;
        let file = self.file;
        let pe = |e: String| node_err(file, l, e);
        let op = p.int(0, 0).map_err(pe)?;
        let coeffs = p.floats(1).map_err(pe)?;
        let xs = (0..l.bottoms.len())
            .map(|i| self.value(l, i))
            .collect::<Result<Vec<_>, _>>()?;
        let n = xs.len();
        let v = match op {
            0 => {
                let mut acc = xs[0];
                for (i, &x) in xs.iter().enumerate().skip(1) {
                    let name = if i + 1 == n {
                        l.name.clone()
                    } else {
                        format!("{}/{i}", l.name)
                    };
                    acc = self.push(l, &name, Op::Binary(BinaryOp::Mul), vec![acc, x])?;
                }
                acc
            }
            1 => {
                if !coeffs.is_empty() && coeffs.len() != n {
                    return Err(pe(format!("{} coefficients for {n} inputs", coeffs.len())));
                }
                let mut terms = Vec::with_capacity(n);
                for (i, &x) in xs.iter().enumerate() {
                    let c = coeffs.get(i).copied().unwrap_or(1.0);
                    terms.push(if c == 1.0 {
                        x
                    } else {
                        let k = self.constant(&format!("{}/coeff{i}", l.name), c);
                        self.push(
                            l,
                            &format!("{}/term{i}", l.name),
                            Op::Binary(BinaryOp::Mul),
                            vec![x, k],
                        )?
                    });
                }
                let mut acc = terms[0];
                for (i, &t) in terms.iter().enumerate().skip(1) {
                    let name = if i + 1 == n {
                        l.name.clone()
                    } else {
                        format!("{}/{i}", l.name)
                    };
                    acc = self.push(l, &name, Op::Binary(BinaryOp::Add), vec![acc, t])?;
                }
                acc
            }
            2 => return Err(unsupported(self.file, l, "the elementwise maximum (0=2)")),
            o => return Err(unsupported(self.file, l, format!("operation {o}"))),
        };
        self.define(l, 0, Blob::Value(v))
    }

    fn binary(&mut self, l: &Layer) -> Result<(), ImportError> {
        let p = &l.params;
        let file = self.file;
        let pe = |e: String| node_err(file, l, e);
        let op = p.int(0, 0).map_err(pe)?;
        let with_scalar = p.int(1, 0).map_err(pe)? != 0;
        let b = p.float(2, 0.0).map_err(pe)?;
        let names = [
            "add", "sub", "mul", "div", "max", "min", "pow", "rsub", "rdiv",
        ];
        let what = names.get(op as usize).map_or_else(
            || format!("operation {op}"),
            |n| format!("operation {op} ({n})"),
        );
        let ir = |o: i32| match o {
            0 => Some(BinaryOp::Add),
            1 => Some(BinaryOp::Sub),
            2 => Some(BinaryOp::Mul),
            3 => Some(BinaryOp::Div),
            _ => None,
        };
        let v = if with_scalar {
            self.arity(l, 1..=1)?;
            let x = self.value(l, 0)?;
            let k = self.constant(&format!("{}/b", l.name), b);
            match (ir(op), op) {
                (Some(o), _) => self.push(l, &l.name, Op::Binary(o), vec![x, k])?,
                (None, 7) => {
                    let neg = self.push(
                        l,
                        &format!("{}/neg", l.name),
                        Op::Unary(UnaryOp::Neg),
                        vec![x],
                    )?;
                    self.push(l, &l.name, Op::Binary(BinaryOp::Add), vec![neg, k])?
                }
                _ => return Err(unsupported(self.file, l, format!("{what} with a scalar"))),
            }
        } else {
            self.arity(l, 2..=2)?;
            let x = self.value(l, 0)?;
            let y = self.value(l, 1)?;
            match (ir(op), op) {
                (Some(o), _) => self.push(l, &l.name, Op::Binary(o), vec![x, y])?,
                (None, 7) => self.push(l, &l.name, Op::Binary(BinaryOp::Sub), vec![y, x])?,
                (None, 8) => self.push(l, &l.name, Op::Binary(BinaryOp::Div), vec![y, x])?,
                _ => return Err(unsupported(self.file, l, what)),
            }
        };
        self.define(l, 0, Blob::Value(v))
    }
}

/// The input's channels: `2=` of the Input layer, else what the first convolution reading
/// it (through Splits) expects, else 3.
fn input_channels(layers: &[Layer], input: &Layer) -> usize {
    if let Ok(c) = input.params.int(2, 0)
        && (1..=64).contains(&c)
    {
        return c as usize;
    }
    let mut aliases: BTreeMap<&str, ()> = input.tops.iter().map(|t| (t.as_str(), ())).collect();
    for l in layers {
        let reads = l
            .bottoms
            .first()
            .is_some_and(|b| aliases.contains_key(b.as_str()));
        if !reads {
            continue;
        }
        match l.kind.as_str() {
            "Split" | "Noop" => {
                for t in &l.tops {
                    aliases.insert(t.as_str(), ());
                }
            }
            "Convolution" | "ConvolutionDepthWise" => {
                let p = &l.params;
                let get = |k: i32, d: i32| p.int(k, d).unwrap_or(0).max(0) as usize;
                let cout = get(0, 0);
                let kw = get(1, 0);
                let kh = get(11, kw as i32);
                let g = if l.kind == "Convolution" {
                    1
                } else {
                    get(7, 1)
                };
                let ws = get(6, 0);
                let per = cout * kh * kw;
                if per > 0 && g > 0 && ws % per == 0 {
                    let c = ws / per * g;
                    if (1..=64).contains(&c) {
                        return c;
                    }
                }
                return 3;
            }
            _ => return 3,
        }
    }
    3
}
