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

pub mod onnx;
pub mod tf;

use std::path::Path;

use superres_graph::Graph;

/// The pre- and post-processing a network expects around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// OpenCV's EDSR convention: 3 channels, BGR order, `value - DIV2K mean`, output likewise.
    Edsr,
    /// OpenCV's ESPCN/FSRCNN/LapSRN convention: the Y of YCrCb divided by 255; chroma is
    /// upscaled bilinearly outside the network.
    YChannel,
    /// The common ONNX convention (Real-ESRGAN and most PyTorch exports): RGB in `[0, 1]`.
    Rgb,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Edsr => "edsr",
            Family::YChannel => "y",
            Family::Rgb => "rgb",
        }
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "edsr" | "bgr" => Ok(Family::Edsr),
            "y" | "ychannel" | "y-channel" | "espcn" | "fsrcnn" | "lapsrn" => Ok(Family::YChannel),
            "rgb" => Ok(Family::Rgb),
            other => Err(format!(
                "unknown model family '{other}' (expected edsr, y or rgb)"
            )),
        }
    }
}

/// The file format a model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    TensorFlow,
    Onnx,
}

/// A model read from a file, ready to be prepared on a backend.
#[derive(Clone, Debug)]
pub struct ImportedModel {
    pub graph: Graph,
    pub family: Family,
    pub scale: usize,
    pub format: Format,
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
    #[error("{file}: not a TensorFlow GraphDef or ONNX model ({reason})")]
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

/// Reads a `.pb` or `.onnx` model from disk; the format is recognised by content.
pub fn load(path: &Path, overrides: Overrides) -> Result<ImportedModel, ImportError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        file: file.clone(),
        source,
    })?;
    load_bytes(&bytes, &file, overrides)
}

/// Reads a model from memory; `file` names it in errors.
pub fn load_bytes(
    bytes: &[u8],
    file: &str,
    overrides: Overrides,
) -> Result<ImportedModel, ImportError> {
    let _ = (bytes, file, overrides);
    todo!("content sniffing between tf::import and onnx::import")
}
