//! Backends that execute a [`Graph`]: the compute half of superres.
//!
//! Where it sits in the data path: the pipeline (`superres-upscale`) hands a backend batches
//! of pre-processed, same-shape tiles and gets the network's outputs back. A backend never
//! sees a file format or a pixel format beyond the 8-bit maps of [`io`].
//!
//! The contract is shaped for accelerators as much as for the CPU:
//! - [`Backend::prepare`] takes the graph once, at model load: the CPU backend repacks weights
//!   for its kernels, the CUDA backend uploads them once per device and keeps them resident.
//! - [`Executable::submit`] starts one forward pass over a [`Batch`] of `n` same-shape images
//!   and returns a [`Pending`] run; [`Pending::wait`] gives the outputs. The CPU computes in
//!   `submit`; a device enqueues the upload, the whole graph and the download on one of its
//!   lanes (a stream with its own buffers) and returns at once, so the caller prepares the next
//!   batch while the device computes this one.
//! - [`Executable::peak_bytes`] is the memory a run of a given size and batch takes, from the
//!   same buffer plan ([`plan`]) the run uses: the pipeline sizes its tiles with it.
//!
//! [`cpu::reference`] is a plain scalar interpreter of the IR: the twin every fast kernel is
//! tested against. [`cuda::twin`] executes the CUDA backend's device plan with host
//! implementations of each device operation, so the plan is tested on machines without a GPU.

pub mod cpu;
pub mod cuda;
pub mod io;
pub mod plan;

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

/// Numeric precision of a run. The CPU always computes in `f32` ([`Precision::Exact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// `f32` storage and arithmetic with fused multiply-adds, no TF32: within one 8-bit level
    /// of the CPU backend.
    #[default]
    Exact,
    /// `f32` storage, convolutions on tensor cores with TF32 inputs (10-bit mantissa).
    Tf32,
    /// `f16` storage and tensor-core products, `f32` accumulation and epilogues.
    Fp16,
    /// `bf16` storage and tensor-core products, `f32` accumulation and epilogues.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 4] = [
        Precision::Exact,
        Precision::Tf32,
        Precision::Fp16,
        Precision::Bf16,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Precision::Exact => "exact",
            Precision::Tf32 => "tf32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Bytes of one stored activation value.
    pub fn storage_bytes(self) -> usize {
        match self {
            Precision::Exact | Precision::Tf32 => 4,
            Precision::Fp16 | Precision::Bf16 => 2,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown precision '{s}' (expected exact, tf32, fp16 or bf16)"))
    }
}

/// Host samples of a batch: network values, or 8-bit samples mapped by [`Io`].
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

impl HostData {
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `n` images of `h × w × c`, stacked image after image (NHWC).
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: HostData,
}

impl Batch {
    /// One `[H, W, C]` tensor as a batch of one.
    pub fn from_tensor(t: &Tensor) -> Option<Batch> {
        let (h, w, c) = t.hwc()?;
        Some(Batch {
            n: 1,
            h,
            w,
            c,
            data: HostData::F32(t.data().to_vec()),
        })
    }

    /// Values of one image.
    pub fn image_len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// The first image as a tensor, its samples moved when it is the only `f32` one.
    pub fn into_tensor(self) -> Tensor {
        match self.data {
            HostData::F32(v) if self.n == 1 => Tensor::image(self.h, self.w, self.c, v),
            _ => self.tensor(0),
        }
    }

    /// Image `i` as a tensor (8-bit samples are widened to `f32`).
    pub fn tensor(&self, i: usize) -> Tensor {
        let n = self.image_len();
        let data = match &self.data {
            HostData::F32(v) => v[i * n..][..n].to_vec(),
            HostData::U8(v) => v[i * n..][..n].iter().map(|&x| x as f32).collect(),
        };
        Tensor::image(self.h, self.w, self.c, data)
    }

    fn check(&self) -> Result<(), EngineError> {
        if self.n == 0 || self.h == 0 || self.w == 0 || self.data.len() != self.n * self.image_len()
        {
            return Err(EngineError::BadInput {
                got: vec![self.n, self.h, self.w, self.c, self.data.len()],
                channels: self.c,
            });
        }
        Ok(())
    }
}

/// How a submission's 8-bit host samples map to and from network values. With an output map,
/// only the graph's first output is returned, as [`HostData::U8`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Io {
    pub input: Option<io::InputMap>,
    pub output: Option<io::OutputMap>,
}

/// A run started by [`Executable::submit`]. Dropping it without waiting is allowed: the
/// backend finishes or abandons the run and frees what it holds.
pub struct Pending {
    wait: Box<dyn FnOnce() -> Result<Vec<Batch>, EngineError> + Send>,
    ready: bool,
}

impl Pending {
    /// A run that has already finished (the CPU computes in `submit`).
    pub fn ready(result: Result<Vec<Batch>, EngineError>) -> Self {
        Pending {
            wait: Box::new(move || result),
            ready: true,
        }
    }

    /// A run that finishes when `wait` is called.
    pub fn later(f: impl FnOnce() -> Result<Vec<Batch>, EngineError> + Send + 'static) -> Self {
        Pending {
            wait: Box::new(f),
            ready: false,
        }
    }

    /// Whether the result is already there (`wait` returns at once): a caller need not
    /// submit ahead of a backend that computes in `submit`.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Waits for the run and returns every graph output (one batch each, in the order of
    /// [`Graph::outputs`]), or only the first, mapped to 8 bits, when [`Io::output`] was set.
    pub fn wait(self) -> Result<Vec<Batch>, EngineError> {
        (self.wait)()
    }
}

/// What a backend's device is doing, for `/v1/models`, `/metrics` and the page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceStatus {
    /// `cpu` or `cuda:N`.
    pub id: String,
    /// e.g. `NVIDIA H200`, or the CPU's instruction set and threads.
    pub name: String,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    /// Percent of the last sampling period the device was busy (NVML).
    pub utilisation_percent: Option<f64>,
}

/// Something that can execute graphs: the CPU, or a GPU.
pub trait Backend: Send + Sync {
    /// For logs, `/v1/models` and `bench` (e.g. `cpu (avx512, 2 threads)`).
    fn name(&self) -> String;

    /// Compiles the graph for this backend (weight repacking, upload, kernel choice).
    fn prepare(&self, graph: &Graph) -> Result<Arc<dyn Executable>, EngineError>;

    /// The precision runs use.
    fn precision(&self) -> Precision {
        Precision::Exact
    }

    /// The devices this backend runs on, with their memory and load where known.
    fn status(&self) -> Vec<DeviceStatus> {
        Vec::new()
    }
}

/// A graph prepared for one backend. Shareable across threads; `submit` may be called
/// concurrently.
pub trait Executable: Send + Sync {
    /// Starts a forward pass over `batch`.
    fn submit(&self, batch: Batch, io: &Io) -> Result<Pending, EngineError>;

    /// Bytes a run of `batch` images of `h × w` takes at its peak: the plan's buffers, the
    /// host or device copies of input and outputs, and the convolution workspaces.
    fn peak_bytes(&self, h: usize, w: usize, batch: usize) -> Result<u64, EngineError>;

    /// Bytes one run of this executable may take now, if the backend knows (a device's free
    /// memory, already shared among its lanes); `None` on the host, where the caller's
    /// budget rules.
    fn memory_available(&self) -> Option<u64> {
        None
    }

    /// Images per submission that keep this backend busy at this size: 1 on the CPU (one
    /// image already uses every core), more on a device with small tiles.
    fn preferred_batch(&self, h: usize, w: usize) -> usize {
        let _ = (h, w);
        1
    }

    /// Submissions that may be in flight at once to keep every lane busy.
    fn lanes(&self) -> usize {
        1
    }

    /// Device time of the most recently finished run, from upload to download, in
    /// milliseconds (CUDA events); `None` on the host.
    fn last_device_ms(&self) -> Option<f64> {
        None
    }

    /// Size plans (shapes, buffer assignment, arena) made since this executable was
    /// prepared: one per input size not in its plan cache. Repeated runs at a cached size
    /// make none, which is how reuse is checked. `None` where a backend keeps no count.
    fn plans_made(&self) -> Option<u64> {
        None
    }

    /// Runs the network on one `[H, W, C]` input and returns every graph output, in the order
    /// of [`Graph::outputs`], as `[H', W', C']` tensors in host memory.
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, EngineError> {
        let batch = Batch::from_tensor(input).ok_or_else(|| EngineError::BadInput {
            got: input.shape().to_vec(),
            channels: 0,
        })?;
        let outputs = self.submit(batch, &Io::default())?.wait()?;
        Ok(outputs.into_iter().map(Batch::into_tensor).collect())
    }
}

/// Checks a batch against the graph's input channels and the maps it comes with.
pub fn check_batch(graph: &Graph, batch: &Batch, io: &Io) -> Result<(), EngineError> {
    let channels = graph.input_channels().unwrap_or(0);
    batch.check()?;
    let ok = batch.c == channels
        && match (&batch.data, io.input) {
            (HostData::F32(_), None) => true,
            (HostData::U8(_), Some(m)) => {
                m.perm[..channels].iter().all(|&p| (p as usize) < channels)
            }
            _ => false,
        };
    if !ok {
        return Err(EngineError::BadInput {
            got: vec![batch.n, batch.h, batch.w, batch.c],
            channels,
        });
    }
    Ok(())
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
