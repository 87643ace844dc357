//! The CPU backend.

pub mod reference;

use std::sync::Arc;

use superres_graph::{Graph, Tensor};

use crate::{Backend, EngineError, Executable};

/// Runs graphs on the CPU.
#[derive(Clone, Debug, Default)]
pub struct CpuBackend {}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend {}
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn prepare(&self, graph: &Graph) -> Result<Arc<dyn Executable>, EngineError> {
        Ok(Arc::new(CpuExecutable {
            graph: graph.clone(),
        }))
    }
}

struct CpuExecutable {
    graph: Graph,
}

impl Executable for CpuExecutable {
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, EngineError> {
        reference::run(&self.graph, input)
    }
}
