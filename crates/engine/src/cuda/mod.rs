//! The CUDA backend: cuDNN convolutions, our own NVRTC-compiled kernels for everything
//! else, weights resident on each device, several lanes per GPU.
//!
//! # Shape of the backend
//! - [`libs`]: the libraries are opened at run time (`dlopen`), never linked, so the default
//!   build runs everywhere and a machine without a GPU only hears why none is usable.
//! - [`kernels`]: the CUDA C source of every non-convolution operator (fused epilogue,
//!   activations, binary ops, depth-to-space, resize, concat, the 8-bit input and output
//!   maps), self-contained (no CUDA headers), compiled by NVRTC for the device's
//!   architecture when a model is prepared. `cargo test` compiles it for sm_75 to sm_90 on
//!   any machine that has `libnvrtc` (PyPI's `nvidia-cuda-nvrtc`), GPU or not.
//! - [`dplan`]: the device plan, a pure function of the graph, the precision and the run's
//!   size: channel counts padded for tensor cores, convolutions split into a cuDNN product and
//!   our epilogue kernel, every other operator lowered to a kernel, buffers assigned by the
//!   shared planner with padded storage and the batch folded in.
//! - [`twin`]: a host executor of that same plan (each device operation written for the CPU,
//!   `f16`/`bf16`/TF32 rounding emulated), so the plan is tested against
//!   [`crate::cpu::reference`] on every shared model without a GPU.
//! - `probing`: the driver, NVRTC, cuDNN and each GPU, found without opening anything.
//! - `gpu`: a context and the loaded kernels per GPU, and its lanes (a stream, a cuDNN
//!   handle and the buffers of its runs each); `handles`: the owned CUDA resources.
//! - `device`: the backend and its executables: weights uploaded once per model per GPU,
//!   cuDNN algorithms found with `cudnnFindConvolutionForwardAlgorithmEx` and cached per
//!   shape, submissions enqueued on the least busy lane and waited for separately.
//! - [`nvml`]: memory and utilisation for `/metrics` and the page.

mod device;
pub mod dplan;
mod gpu;
mod handles;
pub mod kernels;
pub mod libs;
pub mod nvml;
mod probing;
pub mod twin;

use std::sync::Arc;

use superres_graph::Graph;

use crate::{Backend, DeviceStatus, EngineError, Executable, Precision};

/// Which GPUs a backend uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Devices {
    All,
    List(Vec<usize>),
}

/// Options of [`CudaBackend::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct CudaOptions {
    pub devices: Devices,
    pub precision: Precision,
    /// Lanes (a stream, a cuDNN handle and an arena each) per GPU.
    pub lanes_per_device: usize,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            devices: Devices::List(vec![0]),
            precision: Precision::Fp16,
            lanes_per_device: 2,
        }
    }
}

/// The precision a GPU runs with unless told otherwise: the fastest whose loss is invisible
/// (PSNR against [`Precision::Exact`] at least 50 dB on every shared reference case; see the
/// README's table, measured by `tests/cuda_plan.rs` through the host twin and by
/// `bench/gpu.sh` on a GPU).
pub const DEFAULT_PRECISION: Precision = Precision::Fp16;

/// Why no GPU can be used, naming what is missing.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// One GPU as the driver reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (u32, u32),
    pub memory_total: u64,
    pub memory_free: u64,
    /// `Err` says why this GPU cannot run the backend (e.g. too old an architecture).
    pub usable: Result<(), String>,
}

/// What `superres devices` prints about CUDA.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Path of `libcuda`, and the CUDA version its driver supports (`13.0`), or why not.
    pub driver: Result<(String, String), String>,
    /// Path and version of `libnvrtc`, or why not.
    pub nvrtc: Result<(String, String), String>,
    /// Path and version of `libcudnn`, or why not.
    pub cudnn: Result<(String, String), String>,
    pub gpus: Vec<GpuInfo>,
}

impl Report {
    /// `Ok` when at least one GPU can run the backend, else the first thing that is missing.
    pub fn usable(&self) -> Result<(), Unavailable> {
        let missing = |what: &str, why: &String| Unavailable(format!("{what}: {why}"));
        self.driver
            .as_ref()
            .map_err(|e| missing("no NVIDIA driver", e))?;
        if self.gpus.is_empty() {
            return Err(Unavailable("the NVIDIA driver reports no GPU".into()));
        }
        if let Some(e) = self.gpus.iter().find_map(|g| g.usable.as_ref().err())
            && self.gpus.iter().all(|g| g.usable.is_err())
        {
            return Err(Unavailable(e.clone()));
        }
        self.nvrtc.as_ref().map_err(|e| missing("no NVRTC", e))?;
        self.cudnn.as_ref().map_err(|e| missing("no cuDNN", e))?;
        Ok(())
    }
}

/// The oldest architecture the kernels and cuDNN 9 support (Turing).
pub const MIN_COMPUTE_CAPABILITY: (u32, u32) = (7, 5);

/// Looks for the driver, NVRTC, cuDNN and every GPU. Never panics: a missing library, or one
/// that lacks an entry point, is reported as such.
pub fn probe() -> Report {
    libs::preload();
    std::panic::catch_unwind(probing::probe).unwrap_or_else(|_| Report {
        driver: Err("the CUDA driver library failed while being probed".into()),
        nvrtc: Err("not probed".into()),
        cudnn: Err("not probed".into()),
        gpus: Vec::new(),
    })
}

/// Runs graphs on NVIDIA GPUs.
pub struct CudaBackend {
    inner: Arc<device::Backend>,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl CudaBackend {
    /// Opens the GPUs of `options` (contexts, streams, cuDNN handles, kernels compiled for
    /// each architecture). Fails with what is missing on a machine that cannot run it.
    pub fn new(options: CudaOptions) -> Result<CudaBackend, Unavailable> {
        let report = probe();
        report.usable()?;
        let opened = std::panic::catch_unwind(|| device::Backend::open(&report, &options))
            .map_err(|_| Unavailable("a CUDA library failed while the GPU was opened".into()))??;
        Ok(CudaBackend {
            inner: Arc::new(opened),
        })
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn prepare(&self, graph: &Graph) -> Result<Arc<dyn Executable>, EngineError> {
        device::Backend::prepare(&self.inner, graph)
    }

    fn precision(&self) -> Precision {
        self.inner.precision()
    }

    fn status(&self) -> Vec<DeviceStatus> {
        self.inner.status()
    }
}
