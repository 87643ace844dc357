//! A model loaded once and prepared on a backend.

use std::path::Path;
use std::sync::Arc;

use superres_engine::{Backend, Executable};
use superres_graph::{ReceptiveField, Tensor};
use superres_import::{Format, ImportedModel, Overrides};

use crate::{Family, Options, Tiling, UpscaleError};

/// A network ready to upscale: its graph prepared on a backend, with the family and scale
/// that decide the arithmetic around it. Cheap to share (`Arc` inside); `upscale` may run
/// on it from several threads at once. The imported graph itself is not kept: the prepared
/// executable holds the weights in the form its kernels read, and a second copy (150 MB for
/// full EDSR) would only cost memory.
#[derive(Clone)]
pub struct Model {
    info: ModelInfo,
    executable: Arc<dyn Executable>,
    input_channels: usize,
    macs_per_input_pixel: f64,
    receptive_field: ReceptiveField,
    input_multiple: usize,
}

/// What a model is, for listings and headers.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub family: Family,
    pub scale: usize,
    pub format: Format,
    /// Where it came from: a file path, or `builtin`.
    pub source: String,
    /// The backend it runs on, e.g. `cpu (2 threads)`.
    pub device: String,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Reads a `.pb` or `.onnx` file and prepares it on `backend`. The name is the file stem.
    pub fn load(
        path: &Path,
        backend: &dyn Backend,
        overrides: Overrides,
    ) -> Result<Model, UpscaleError> {
        let imported = superres_import::load(path, overrides)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Model::prepare(&name, &path.display().to_string(), imported, backend)
    }

    /// Prepares an imported model on `backend`.
    pub fn prepare(
        name: &str,
        source: &str,
        imported: ImportedModel,
        backend: &dyn Backend,
    ) -> Result<Model, UpscaleError> {
        let executable = backend.prepare(&imported.graph)?;
        let receptive_field = imported.graph.receptive_field();
        let input_multiple = imported.graph.input_multiple();
        Ok(Model {
            info: ModelInfo {
                name: name.to_string(),
                family: imported.family,
                scale: imported.scale,
                format: imported.format,
                source: source.to_string(),
                device: backend.name(),
            },
            input_channels: imported.graph.input_channels().unwrap_or(1),
            macs_per_input_pixel: imported.graph.macs_per_input_pixel(),
            executable,
            receptive_field,
            input_multiple,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn scale(&self) -> usize {
        self.info.scale
    }

    pub fn family(&self) -> Family {
        self.info.family
    }

    /// Channels of the network's input (1 for Y-channel models, 3 for RGB ones).
    pub fn input_channels(&self) -> usize {
        self.input_channels
    }

    /// Multiply-accumulates per input pixel of one forward pass.
    pub fn macs_per_input_pixel(&self) -> f64 {
        self.macs_per_input_pixel
    }

    /// Runs the network alone on a prepared input (`h × w × input_channels`, the values the
    /// family's preprocessing would produce): no colour conversion, tiling or rounding. For
    /// benchmarks and tests of the engine.
    pub fn forward(&self, input: &Tensor) -> Result<Vec<Tensor>, UpscaleError> {
        Ok(self.executable.run(input)?)
    }

    /// Device time of the last finished run (upload, network, download; CUDA events), in
    /// milliseconds; `None` on the CPU.
    pub fn last_device_ms(&self) -> Option<f64> {
        self.executable.last_device_ms()
    }

    pub fn receptive_field(&self) -> ReceptiveField {
        self.receptive_field
    }

    /// The multiple every side of the network's input must be (2 or 4 for Real-ESRGAN's
    /// pixel-unshuffling ×2 and ×1 RRDBNets, 1 for most networks; see
    /// [`Graph::input_multiple`](superres_graph::Graph::input_multiple)). [`upscale`](crate::upscale)
    /// takes any size: it pads what it runs to this multiple and crops the result.
    pub fn input_multiple(&self) -> usize {
        self.input_multiple
    }

    pub(crate) fn executable(&self) -> &dyn Executable {
        self.executable.as_ref()
    }

    /// Bytes one run of `batch` prepared inputs of `h × w` takes at its peak on the model's
    /// backend, from the buffer plan the run uses (see [`Executable::peak_bytes`]).
    pub fn peak_bytes(&self, h: usize, w: usize, batch: usize) -> Result<u64, UpscaleError> {
        Ok(self.executable.peak_bytes(h, w, batch)?)
    }

    /// Bytes the backend's device has free for runs now, where it knows (`None` on the CPU).
    pub fn memory_available(&self) -> Option<u64> {
        self.executable.memory_available()
    }

    /// How a `width × height` image would be tiled and batched with `options`: what
    /// [`upscale`](crate::upscale) starts with (it only cuts tiles smaller if the device runs
    /// out of memory).
    pub fn tiling(&self, width: usize, height: usize, options: &Options) -> Tiling {
        crate::pipeline::tiling(self, width, height, options)
    }
}
