//! Choosing a backend from a `--device` argument: `auto`, `cpu`, `cuda` or `cuda:N`.

use std::sync::Arc;

use superres_engine::Backend;
use superres_engine::cpu::CpuBackend;

/// Why a device argument cannot be honoured.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device '{0}' (expected auto, cpu, cuda or cuda:N)")]
    Unknown(String),
    #[error("device '{0}' is not available: this build has no CUDA backend; use --device cpu")]
    Unavailable(String),
}

/// The backend for a device argument. `auto` takes a GPU when one is usable, else the CPU.
pub fn backend(spec: &str) -> Result<Arc<dyn Backend>, DeviceError> {
    match spec {
        "auto" | "cpu" => Ok(Arc::new(CpuBackend::new())),
        s if s == "cuda"
            || s.strip_prefix("cuda:")
                .is_some_and(|n| n.parse::<u32>().is_ok()) =>
        {
            Err(DeviceError::Unavailable(s.to_string()))
        }
        other => Err(DeviceError::Unknown(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_arguments() {
        assert!(backend("cpu").is_ok());
        assert!(backend("auto").is_ok());
        assert!(matches!(
            backend("cuda:0"),
            Err(DeviceError::Unavailable(_))
        ));
        assert!(matches!(backend("tpu"), Err(DeviceError::Unknown(_))));
        assert!(matches!(backend("cuda:x"), Err(DeviceError::Unknown(_))));
    }
}
