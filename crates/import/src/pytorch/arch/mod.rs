//! Architecture detection from a state dict's keys and shapes, and the graph builders.

mod rrdb;
mod span;
mod srvgg;

use std::collections::BTreeMap;

use superres_graph::{Activation, Conv2d, Epilogue, Graph, Op, Padding, ValueId};

use super::{Options, StateDict, StateTensor, invalid};
use crate::ImportError;

pub use rrdb::RrdbLayout;

type R<T> = Result<T, ImportError>;

/// The activation of an SRVGGNetCompact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SrvggActivation {
    /// `nn.PReLU(num_feat)`, read from the weights.
    PRelu,
    Relu,
    /// `nn.LeakyReLU(0.1)`.
    LeakyRelu,
}

impl std::str::FromStr for SrvggActivation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "prelu" => Ok(SrvggActivation::PRelu),
            "relu" => Ok(SrvggActivation::Relu),
            "leakyrelu" | "lrelu" | "leaky_relu" => Ok(SrvggActivation::LeakyRelu),
            other => Err(format!(
                "unknown act_type '{other}' (expected prelu, relu or leakyrelu)"
            )),
        }
    }
}

/// A recognised architecture with the hyperparameters read from the shapes.
#[derive(Clone, Debug, PartialEq)]
pub enum Architecture {
    SrvggCompact {
        channels: usize,
        num_feat: usize,
        num_conv: usize,
        scale: usize,
        activation: SrvggActivation,
    },
    Rrdb {
        layout: RrdbLayout,
        /// Image channels (the input before any pixel-unshuffle).
        channels: usize,
        num_feat: usize,
        num_block: usize,
        num_grow_ch: usize,
        /// Nearest ×2 upsamplings.
        upsamples: usize,
        /// Pixel-unshuffle block of the input (1: none).
        unshuffle: usize,
        scale: usize,
    },
    /// SPAN (spandrel's `SPAN`): six SPAB blocks of re-parameterisable convolutions.
    Span {
        /// Input channels.
        channels: usize,
        out_channels: usize,
        feature_channels: usize,
        scale: usize,
        /// `(x - rgb_mean) * img_range` on the input (no `no_norm` buffer in the dict).
        norm: bool,
        /// Whether the dict holds the folded `eval_conv` weights (else the train-time
        /// branches are folded at import).
        eval_conv: bool,
    },
}

impl Architecture {
    /// A short description, e.g. for `models inspect`.
    pub fn describe(&self) -> String {
        match self {
            Architecture::SrvggCompact {
                num_feat,
                num_conv,
                scale,
                activation,
                ..
            } => format!(
                "SRVGGNetCompact ×{scale}, num_feat {num_feat}, num_conv {num_conv}, {activation:?}"
            ),
            Architecture::Rrdb {
                layout,
                num_feat,
                num_block,
                num_grow_ch,
                scale,
                ..
            } => format!(
                "RRDBNet ({layout:?} layout) ×{scale}, num_feat {num_feat}, num_block {num_block}, num_grow_ch {num_grow_ch}"
            ),
            Architecture::Span {
                feature_channels,
                scale,
                norm,
                eval_conv,
                ..
            } => format!(
                "SPAN ×{scale}, feature_channels {feature_channels}{}{}",
                if *norm {
                    ", RGB mean normalisation"
                } else {
                    ""
                },
                if *eval_conv {
                    ""
                } else {
                    ", train-time branches folded"
                }
            ),
        }
    }
}

/// Named tensors under canonical names, each remembering the name it has in the file.
pub(super) struct Weights<'a> {
    map: BTreeMap<String, (&'a str, &'a StateTensor)>,
}

impl<'a> Weights<'a> {
    fn identity(sd: &'a StateDict) -> Self {
        Weights {
            map: sd
                .tensors
                .iter()
                .map(|(k, v)| (k.clone(), (k.as_str(), v)))
                .collect(),
        }
    }
    fn get(&self, k: &str) -> Option<&'a StateTensor> {
        self.map.get(k).map(|(_, t)| *t)
    }
    fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }
    fn original(&self, k: &str) -> String {
        self.map
            .get(k)
            .map_or_else(|| k.to_string(), |(o, _)| o.to_string())
    }
}

pub fn detect(sd: &StateDict, file: &str, options: Options) -> R<Architecture> {
    if let Some(a) = srvgg::detect(sd, file, options)? {
        return Ok(a);
    }
    if let Some(a) = rrdb::detect(sd, file)? {
        return Ok(a);
    }
    if let Some(a) = span::detect(sd, file)? {
        return Ok(a);
    }
    Err(invalid(
        file,
        format!(
            "no supported architecture fits this state dict ({} tensors; first keys: {}); \
             recognised: SRVGGNetCompact (body.0.weight, body.N.weight …), ESRGAN/RRDBNet \
             (conv_first.weight + body.0.rdb1.conv1.weight, or model.0.weight + \
             model.1.sub.0.RDB1.conv1.0.weight), SPAN (conv_1.sk.weight, \
             block_1.c1_r.…, conv_cat.weight, upsampler.0.weight)",
            sd.tensors.len(),
            first_keys(sd)
        ),
    ))
}

pub fn build(a: &Architecture, sd: &StateDict, file: &str) -> R<Graph> {
    match a {
        Architecture::SrvggCompact { .. } => srvgg::build(a, sd, file),
        Architecture::Rrdb { .. } => rrdb::build(a, sd, file),
        Architecture::Span { .. } => span::build(a, sd, file),
    }
}

fn first_keys(sd: &StateDict) -> String {
    let mut s: Vec<String> = sd
        .tensors
        .iter()
        .take(8)
        .map(|(k, t)| format!("{k} {:?}", t.shape))
        .collect();
    if sd.tensors.len() > 8 {
        s.push("…".into());
    }
    s.join(", ")
}

/// Builds a graph from convolutions named by state-dict prefixes.
pub(super) struct Net<'a> {
    pub g: Graph,
    w: Weights<'a>,
    file: &'a str,
}

impl<'a> Net<'a> {
    fn new(w: Weights<'a>, file: &'a str) -> Self {
        Net {
            g: Graph::new(),
            w,
            file,
        }
    }

    fn err(&self, m: String) -> ImportError {
        invalid(self.file, m)
    }

    fn tensor(&self, key: &str) -> R<&'a StateTensor> {
        self.w.get(key).ok_or_else(|| {
            self.err(format!(
                "the state dict has no tensor '{}'",
                self.w.original(key)
            ))
        })
    }

    fn push(&mut self, name: &str, op: Op, inputs: Vec<ValueId>) -> R<ValueId> {
        self.g
            .push(name, op, inputs)
            .map_err(|e| crate::graph_error(self.file, e))
    }

    /// `prefix.weight` `[cout, cin, kh, kw]` (and `prefix.bias`) as a stride-1 convolution
    /// with PyTorch's `padding = k / 2`, the activation and residual fused.
    fn conv(
        &mut self,
        prefix: &str,
        x: ValueId,
        activation: Option<Activation>,
        residual: Option<(f32, ValueId)>,
    ) -> R<ValueId> {
        let wk = format!("{prefix}.weight");
        let w = self.tensor(&wk)?;
        let [cout, cin, kh, kw] = w.shape[..] else {
            return Err(self.err(format!(
                "'{}' has shape {:?}, expected a 4-D convolution kernel",
                self.w.original(&wk),
                w.shape
            )));
        };
        let have = self.g.channels(x);
        if cin != have || kh % 2 == 0 || kw % 2 == 0 || cout == 0 {
            return Err(self.err(format!(
                "'{}' has shape {:?}, but its input has {have} channels (expected \
                 [C_out, {have}, k, k] with an odd k)",
                self.w.original(&wk),
                w.shape
            )));
        }
        let bk = format!("{prefix}.bias");
        let bias = match self.w.get(&bk) {
            Some(b) if b.shape == [cout] => Some(b.data.clone()),
            Some(b) => {
                return Err(self.err(format!(
                    "'{}' has shape {:?}, expected [{cout}]",
                    self.w.original(&bk),
                    b.shape
                )));
            }
            None => None,
        };
        self.conv_oihw(
            prefix,
            x,
            &w.data,
            [cout, cin, kh, kw],
            bias,
            activation,
            residual,
        )
    }

    /// A stride-1 convolution with `padding = k / 2` from a PyTorch `[cout, cin, kh, kw]`
    /// kernel (row-major), the activation and residual fused.
    #[allow(clippy::too_many_arguments)]
    fn conv_oihw(
        &mut self,
        name: &str,
        x: ValueId,
        w: &[f32],
        [cout, cin, kh, kw]: [usize; 4],
        bias: Option<Vec<f32>>,
        activation: Option<Activation>,
        residual: Option<(f32, ValueId)>,
    ) -> R<ValueId> {
        if w.len() != cout * cin * kh * kw {
            return Err(self.err(format!(
                "'{name}': {} kernel values for shape [{cout}, {cin}, {kh}, {kw}]",
                w.len()
            )));
        }
        let weights = Conv2d::weights_from_oihw(w, cout, cin, kh, kw);
        let conv = Conv2d {
            kh,
            kw,
            cin,
            cout,
            groups: 1,
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding {
                top: kh / 2,
                bottom: kh / 2,
                left: kw / 2,
                right: kw / 2,
            },
            weights,
            epilogue: Epilogue {
                bias,
                activation,
                residual: residual.map(|(s, _)| s),
            },
        };
        let mut inputs = vec![x];
        inputs.extend(residual.map(|(_, v)| v));
        self.push(name, Op::Conv2d(conv), inputs)
    }

    /// `F.pixel_unshuffle(x, b)` as a stride-`b`, `b×b` convolution with one-hot weights:
    /// output channel `c·b² + i·b + j` takes input channel `c` at offset `(i, j)`.
    fn pixel_unshuffle(&mut self, x: ValueId, b: usize) -> R<ValueId> {
        let c = self.g.channels(x);
        let cout = c * b * b;
        let mut weights = vec![0f32; b * b * c * cout];
        for ch in 0..c {
            for i in 0..b {
                for j in 0..b {
                    let co = ch * b * b + i * b + j;
                    weights[((i * b + j) * c + ch) * cout + co] = 1.0;
                }
            }
        }
        let conv = Conv2d {
            kh: b,
            kw: b,
            cin: c,
            cout,
            groups: 1,
            stride: (b, b),
            dilation: (1, 1),
            padding: Padding::default(),
            weights,
            epilogue: Epilogue::default(),
        };
        self.push("pixel_unshuffle", Op::Conv2d(conv), vec![x])
    }
}
