//! Backends that execute a [`Graph`]: the compute half of superres.
//!
//! Where it sits in the data path: the pipeline (`superres-upscale`) hands a backend one
//! pre-processed tile at a time as an `[H, W, C]` tensor and gets the network's outputs
//! back. A backend never sees a file format or a pixel format.
//!
//! The contract is two steps, shaped for accelerators as much as for the CPU:
//! - [`Backend::prepare`] takes the graph once, at model load: a CPU backend repacks weights
//!   for its kernels, a CUDA backend uploads them and keeps them device-resident.
//! - [`Executable::run`] executes one forward pass. Buffers are planned per input size and
//!   reused across calls of the same size; a device backend submits the whole pass to its own
//!   stream and only synchronises when it copies the outputs back, so several worker threads
//!   calling `run` concurrently keep an accelerator busy.
//!
//! [`cpu::reference`] is a plain scalar interpreter of the IR: the twin every fast kernel is
//! tested against.

pub mod cpu;

use std::sync::Arc;

use superres_graph::{Graph, Tensor};

/// Why a backend could not prepare or run a graph.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the graph cannot run on the {backend} backend: {message}")]
    Unsupported {
        backend: &'static str,
        message: String,
    },
    #[error("input has shape {got:?}, the network expects [H, W, {channels}]")]
    BadInput { got: Vec<usize>, channels: usize },
    #[error("an image of {h}×{w} is too small for node '{node}'")]
    TooSmall { h: usize, w: usize, node: String },
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    #[error("device error: {0}")]
    Device(String),
    #[error("cancelled")]
    Cancelled,
}

/// Something that can execute graphs: the CPU, or a GPU.
pub trait Backend: Send + Sync {
    /// For logs, `/v1/models` and `bench` (e.g. `cpu (avx512, 2 threads)`).
    fn name(&self) -> String;

    /// Compiles the graph for this backend (weight repacking, upload, kernel choice).
    fn prepare(&self, graph: &Graph) -> Result<Arc<dyn Executable>, EngineError>;
}

/// A graph prepared for one backend. Shareable across threads; `run` may be called
/// concurrently.
pub trait Executable: Send + Sync {
    /// Runs the network on one `[H, W, C]` input and returns every graph output, in the order
    /// of [`Graph::outputs`], as `[H', W', C']` tensors in host memory.
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, EngineError>;
}

/// Checks that `input` is an image with the graph's input channel count.
pub fn check_input(graph: &Graph, input: &Tensor) -> Result<(usize, usize), EngineError> {
    let channels = graph.input_channels().unwrap_or(0);
    match input.hwc() {
        Some((h, w, c)) if c == channels && h > 0 && w > 0 => Ok((h, w)),
        _ => Err(EngineError::BadInput {
            got: input.shape().to_vec(),
            channels,
        }),
    }
}
