//! Readers of model files into the superres IR ([`superres_graph::Graph`]).
//!
//! Where it sits in the data path: first, at model load. An importer parses a file,
//! folds what can be folded (8-bit weight dequantisation), recognises the family of
//! pre/post-processing the network expects and its scale, and hands a [`ImportedModel`] to the
//! pipeline. It never executes anything.
//!
//! Why hand-written: no crate reads these files into something we can run. tract-tensorflow
//! lacks `DepthToSpace`, `Dequantize` and `Conv2DBackpropInput`; candle-onnx lacks
//! `DepthToSpace`; ort links a C++ runtime. The protobuf schemas are our own minimal subsets
//! (prost derives, no protoc at build time), holding only the fields we read.

pub mod family;
pub mod ncnn;
pub mod onnx;
pub mod pytorch;
pub mod tf;
mod transposed;

use std::path::Path;

use superres_graph::Graph;

pub use family::Family;

/// The file format a model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    TensorFlow,
    Onnx,
    /// A PyTorch state dict: a torch.save `.pth` zip or a `.safetensors` file.
    PyTorch,
    /// An ncnn `NAME.param` (text) with its `NAME.bin` weights beside it.
    Ncnn,
}

/// A model read from a file, ready to be prepared on a backend.
#[derive(Clone, Debug)]
pub struct ImportedModel {
    pub graph: Graph,
    pub family: Family,
    pub scale: usize,
    pub format: Format,
}

impl ImportedModel {
    /// The architecture the network is recognised as (`SRVGGNetCompact`, `RRDBNet`, `SPAN`,
    /// `EDSR`, `ESPCN`, `FSRCNN`, `LapSRN`), `None` when no known pattern fits; see
    /// [`family::architecture`].
    pub fn architecture(&self) -> Option<&'static str> {
        family::architecture(self.format, &self.graph)
    }
}

/// Overrides for what detection would otherwise decide (`--family`, `--scale`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    pub family: Option<Family>,
    pub scale: Option<usize>,
}

/// Why a model file could not be imported. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a TensorFlow GraphDef, ONNX, PyTorch or ncnn model ({reason})")]
    UnknownFormat { file: String, reason: String },
    #[error("{file}: corrupt {format} file: {reason}")]
    Corrupt {
        file: String,
        format: &'static str,
        reason: String,
    },
    #[error("{file}: node '{node}': unsupported op '{op}'{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    UnsupportedOp {
        file: String,
        node: String,
        op: String,
        detail: Option<String>,
    },
    #[error("{file}: node '{node}': {message}")]
    InvalidNode {
        file: String,
        node: String,
        message: String,
    },
    #[error("{file}: {message}")]
    InvalidModel { file: String, message: String },
}

/// Reads a `.pb`, `.onnx`, `.pth`, `.safetensors` or ncnn `.param` model from disk; the
/// format is recognised by content. An ncnn `NAME.param` (recognised by its extension or its
/// magic `7767517`) reads its weights from the `NAME.bin` beside it.
pub fn load(path: &Path, overrides: Overrides) -> Result<ImportedModel, ImportError> {
    let file = path.display().to_string();
    let is_param_ext = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("param"));
    if is_param_ext {
        let (param, bin) = ncnn::read_files(path)?;
        return load_ncnn(&param, &bin, &file, overrides);
    }
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    if ncnn::is_param(&bytes) {
        let (param, bin) = ncnn::read_files(path)?;
        return load_ncnn(&param, &bin, &file, overrides);
    }
    load_bytes(&bytes, &file, overrides)
}

/// Reads an ncnn model from its `.param` text and `.bin` weights; `file` names it in errors.
pub fn load_ncnn(
    param: &[u8],
    bin: &[u8],
    file: &str,
    overrides: Overrides,
) -> Result<ImportedModel, ImportError> {
    let raw = ncnn::import(param, bin, file)?;
    let graph = superres_graph::passes::optimize(&raw).map_err(|e| graph_error(file, e))?;
    describe(graph, Format::Ncnn, file, overrides)
}

/// Reads a model from memory; `file` names it in errors.
///
/// The format is recognised by content ([`detect_format`]), the graph is imported and
/// optimised ([`superres_graph::passes::optimize`]), then the family and scale are detected
/// and checked against `overrides`.
pub fn load_bytes(
    bytes: &[u8],
    file: &str,
    overrides: Overrides,
) -> Result<ImportedModel, ImportError> {
    let (format, raw) = import_unoptimized(bytes, file)?;
    let graph = superres_graph::passes::optimize(&raw).map_err(|e| graph_error(file, e))?;
    describe(graph, format, file, overrides)
}

/// Imports a model without running the optimisation passes: the graph op for op as the file
/// spells it (weight dequantisation already folded). For tests and `models inspect`.
pub fn import_unoptimized(bytes: &[u8], file: &str) -> Result<(Format, Graph), ImportError> {
    match detect_format(bytes) {
        Ok(Format::TensorFlow) => Ok((Format::TensorFlow, tf::import(bytes, file)?)),
        Ok(Format::Onnx) => Ok((Format::Onnx, onnx::import(bytes, file)?)),
        Ok(Format::PyTorch) => Ok((Format::PyTorch, pytorch::import(bytes, file)?)),
        Ok(Format::Ncnn) => Err(ImportError::InvalidModel {
            file: file.to_string(),
            message: "an ncnn .param holds no weights: load it from a path, with its .bin \
                      beside it (or use superres_import::ncnn::import with both)"
                .into(),
        }),
        Err(reason) => Err(ImportError::UnknownFormat {
            file: file.to_string(),
            reason,
        }),
    }
}

pub(crate) fn graph_error(file: &str, e: superres_graph::GraphError) -> ImportError {
    let superres_graph::GraphError::Invalid { node, op, message } = e;
    ImportError::InvalidNode {
        file: file.to_string(),
        node,
        message: format!("{op}: {message}"),
    }
}

/// Detects family and scale of an imported graph and applies the overrides.
pub fn describe(
    graph: Graph,
    format: Format,
    file: &str,
    overrides: Overrides,
) -> Result<ImportedModel, ImportError> {
    let invalid = |message: String| ImportError::InvalidModel {
        file: file.to_string(),
        message,
    };
    let channels = graph
        .input_channels()
        .ok_or_else(|| invalid("the graph must have exactly one image input".into()))?;
    let Some((out_name, out)) = graph.outputs.first() else {
        return Err(invalid("the graph has no output".into()));
    };
    let out_channels = graph.channels(*out);
    if out_channels != channels {
        return Err(invalid(format!(
            "the input has {channels} channel(s) but output '{out_name}' has {out_channels}"
        )));
    }
    let detected = family::detect(format, channels);
    let family = match overrides.family {
        Some(f) => {
            let want = f.channels();
            if want != channels {
                return Err(invalid(format!(
                    "family '{}' needs a {want}-channel network, this one takes {channels} channel(s)",
                    f.as_str()
                )));
            }
            f
        }
        None => detected.ok_or_else(|| {
            invalid(format!(
                "no known family takes {channels} input channels (expected 1 or 3)"
            ))
        })?,
    };
    let scale = graph
        .scale_factor(*out)
        .filter(|&s| s >= 1)
        .ok_or_else(|| {
            invalid(format!(
                "output '{out_name}' is not an integer upscale of the input"
            ))
        })?;
    if let Some(s) = overrides.scale
        && s != scale
    {
        return Err(invalid(format!(
            "scale {s} was requested, but the network upscales by {scale}"
        )));
    }
    Ok(ImportedModel {
        graph,
        family,
        scale,
        format,
    })
}

/// Recognises a model file by content. Both formats are protobuf messages without a magic
/// number, so this walks the top-level fields and checks which schema they fit:
/// a GraphDef is `node` records (field 1, length-delimited) plus `library`/`versions`;
/// an ONNX ModelProto starts with `ir_version` (field 1, a varint) and holds `graph` (7) and
/// `opset_import` (8). A truncated file is still recognised by its first fields, so that the
/// importer can report it as corrupt rather than foreign.
///
/// PyTorch files are recognised first: a zip archive with a `*/data.pkl` entry (torch.save),
/// the legacy torch.save pickle (refused by the importer with its reason), or a safetensors
/// file (a little-endian `u64` header length, then a JSON object starting with `{`); an ncnn
/// `.param` by its first line, the magic `7767517`.
pub fn detect_format(bytes: &[u8]) -> Result<Format, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if ncnn::is_param(bytes) {
        return Ok(Format::Ncnn);
    }
    if pytorch::is_pytorch_zip(bytes)
        || pytorch::is_safetensors(bytes)
        || pytorch::is_legacy_pth(bytes)
    {
        return Ok(Format::PyTorch);
    }
    for (magic, what) in [
        (&b"\x89PNG"[..], "a PNG image"),
        (&b"\xff\xd8\xff"[..], "a JPEG image"),
        (
            &b"PK\x03\x04"[..],
            "a zip archive without a '*/data.pkl' entry (so no PyTorch checkpoint; e.g. .npz)",
        ),
        (&b"GIF8"[..], "a GIF image"),
    ] {
        if bytes.starts_with(magic) {
            return Err(format!("it is {what}"));
        }
    }
    const VARINT: u64 = 0;
    const LEN: u64 = 2;
    let (mut tf, mut onnx) = (0usize, 0usize);
    let mut pos = 0;
    while pos < bytes.len() {
        let Some(tag) = read_varint(bytes, &mut pos) else {
            break;
        };
        let (field, wire) = (tag >> 3, tag & 7);
        let tf_field = matches!((field, wire), (1, LEN) | (2, LEN) | (3, VARINT) | (4, LEN));
        let onnx_field = matches!(
            (field, wire),
            (1, VARINT)
                | (2..=4, LEN)
                | (5, VARINT)
                | (6..=8, LEN)
                | (14, LEN)
                | (20, LEN)
                | (25, LEN)
        );
        if !tf_field && !onnx_field {
            break;
        }
        tf += usize::from(tf_field && !onnx_field);
        onnx += usize::from(onnx_field && !tf_field);
        let skipped = match wire {
            VARINT => read_varint(bytes, &mut pos).is_some(),
            LEN => match read_varint(bytes, &mut pos) {
                Some(n) => {
                    let end = usize::try_from(n).ok().and_then(|n| pos.checked_add(n));
                    match end {
                        Some(end) if end <= bytes.len() => {
                            pos = end;
                            true
                        }
                        _ => false,
                    }
                }
                None => false,
            },
            _ => false,
        };
        if !skipped {
            break;
        }
    }
    match (tf, onnx) {
        (t, 0) if t > 0 => Ok(Format::TensorFlow),
        (0, o) if o > 0 => Ok(Format::Onnx),
        (0, 0) => Err(if bytes.iter().take(512).all(|b| b.is_ascii()) {
            "it is text, not a binary protobuf model".into()
        } else {
            "the bytes are not a protobuf message of either format".into()
        }),
        _ => Err("its fields fit neither a TensorFlow GraphDef nor an ONNX ModelProto".into()),
    }
}

fn read_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}
