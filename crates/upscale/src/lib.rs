//! The superres pipeline: a loaded [`Model`] and [`upscale`], which takes a decoded
//! [`Image`] to its upscaled twin.
//!
//! Where it sits in the data path:
//! ```text
//! Image ──family pre-processing──▶ tiles (overlap = receptive field) ──backend──▶
//!       ──crop cores──▶ family post-processing ──▶ Image (alpha upscaled separately)
//! ```
//! The family decides the arithmetic around the network, and it is OpenCV's arithmetic
//! (see [`superres_imaging::opencv`]) so that an OpenCV `dnn_superres` user gets the same
//! pixels from the same `.pb` file:
//! - [`Family::YChannel`] (ESPCN, FSRCNN, LapSRN): the network sees Y of YCrCb / 255; Cr and
//!   Cb are upscaled bilinearly and merged back.
//! - [`Family::Edsr`]: the network sees B, G, R minus the DIV2K mean.
//! - [`Family::Rgb`] (ONNX exports): R, G, B / 255, clamped back to `[0, 1]`.
//!
//! Tiling keeps memory bounded for any image size and keeps a device busy:
//! - Every tile is run with a margin of at least the network's receptive field and only its
//!   core is kept, so the result does not depend on the tiling (see `tests/tiling.rs`) —
//!   unless those margins would cost more than the tiles ([`TileMode`]): then tiles overlap
//!   by [`BLEND_OVERLAP`] pixels and are blended, which keeps any network in the budget.
//! - Networks with strides get the image reflect-padded to [`Model::input_multiple`] and the
//!   result cropped, so any image size runs.
//! - Tiles are sized from the backend's own plan ([`Model::peak_bytes`]): the largest run
//!   that fits [`Options::memory_budget`] and the device's free memory, unless
//!   [`Options::tile`] fixes the side.
//! - All tiles of an image have one run size (edge windows shift inward), so they are
//!   stacked into batches of the backend's preferred size, and up to `lanes + 1` batches are
//!   in flight while the host prepares the next and writes back the last.
//! - 8-bit images cross to the backend and back as bytes, with the family's arithmetic as
//!   the engine's 8-bit maps; a device that runs out of memory gets smaller batches, then
//!   smaller tiles. [`Model::tiling`] shows the plan an image starts with.

pub mod device;
mod family;
mod model;
mod pipeline;
pub mod registry;
mod size;
mod tta;

pub use family::Family;
pub use model::{Model, ModelInfo};
pub use pipeline::{BLEND_OVERLAP, MIN_CORE, Options, Progress, TileMode, Tiling, upscale};
pub use size::OutputSize;
pub use superres_imaging::{ColorKind, Image, Samples};
pub use tta::{Dihedral, upscale_tta};

/// The engine's side of a loaded model: what a caller holds to run models, report on the
/// devices and name the precision, without depending on `superres-engine` itself.
pub use superres_engine::{Backend, DeviceStatus, Precision};

/// The precision a GPU runs with unless told otherwise (see [`device`]).
pub use superres_engine::cuda::DEFAULT_PRECISION as DEFAULT_GPU_PRECISION;

use superres_engine::EngineError;
use superres_import::ImportError;

/// Why an upscale failed.
#[derive(Debug, thiserror::Error)]
pub enum UpscaleError {
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The image cannot be processed by this model (e.g. malformed sample buffer).
    #[error("{0}")]
    BadImage(String),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error("cancelled")]
    Cancelled,
}
