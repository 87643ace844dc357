//! The executor on a GPU (in progress).

use std::sync::Arc;

use superres_graph::Graph;

use super::{CudaOptions, Report, Unavailable};
use crate::{DeviceStatus, EngineError, Executable, Precision};

pub fn probe() -> Report {
    Report {
        driver: Err("not yet probed".into()),
        nvrtc: Err("not yet probed".into()),
        cudnn: Err("not yet probed".into()),
        gpus: Vec::new(),
    }
}

pub struct Backend {
    precision: Precision,
}

impl Backend {
    pub fn open(_report: &Report, options: &CudaOptions) -> Result<Backend, Unavailable> {
        let _ = options.precision;
        Err(Unavailable("the CUDA executor is not built yet".into()))
    }

    pub fn name(&self) -> String {
        "cuda".into()
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn status(&self) -> Vec<DeviceStatus> {
        Vec::new()
    }

    pub fn prepare(
        _this: &Arc<Backend>,
        _graph: &Graph,
    ) -> Result<Arc<dyn Executable>, EngineError> {
        Err(EngineError::Device("not built yet".into()))
    }
}
