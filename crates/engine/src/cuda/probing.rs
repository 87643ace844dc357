//! Probing the driver, NVRTC, cuDNN and every GPU without opening anything: what
//! `superres devices` prints and what decides whether the backend can start.

use std::ffi::c_int;

use cudarc::cudnn::sys as dnn;
use cudarc::driver::sys as cu;

use super::{GpuInfo, MIN_COMPUTE_CAPABILITY, Report, kernels, nvml};

fn driver_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cu::is_culib_present() }
}

fn cudnn_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { dnn::is_culib_present() }
}

fn version_string(v: usize) -> String {
    // CUDA: 1000 * major + 10 * minor; cuDNN 9: 10000 * major + 100 * minor + patch.
    if v >= 10000 {
        format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
    } else {
        format!("{}.{}", v / 1000, (v % 1000) / 10)
    }
}

/// The report of [`super::probe`]; may panic inside `cudarc` (caught there).
pub(super) fn probe() -> Report {
    let driver = if driver_present() {
        let mut v: c_int = 0;
        // SAFETY: the library is present; cuInit and cuDriverGetVersion take no pointers but
        // the out-parameter.
        let r = unsafe {
            let r = cu::cuInit(0);
            if r == cu::CUresult::CUDA_SUCCESS {
                cu::cuDriverGetVersion(&mut v)
            } else {
                r
            }
        };
        match r {
            cu::CUresult::CUDA_SUCCESS => Ok((
                super::libs::locate("cuda").unwrap_or_else(|| "libcuda.so.1".into()),
                version_string(v as usize),
            )),
            other => Err(format!(
                "libcuda.so.1 was found but cuInit failed: {other:?}"
            )),
        }
    } else {
        Err(
            "libcuda.so.1 not found: no NVIDIA driver is installed (or it is not on the \
             loader's path)"
                .into(),
        )
    };
    let nvrtc = match kernels::nvrtc_version() {
        Ok((a, b)) => Ok((
            super::libs::locate("nvrtc").unwrap_or_else(|| "libnvrtc".into()),
            format!("{a}.{b}"),
        )),
        Err(e) => Err(e.to_string()),
    };
    let cudnn = if cudnn_present() {
        // SAFETY: the library is present; cudnnGetVersion takes no arguments.
        let v = unsafe { dnn::cudnnGetVersion() };
        if v < 8000 {
            Err(format!(
                "cuDNN {} is too old (8 or newer needed)",
                version_string(v)
            ))
        } else {
            Ok((
                super::libs::locate("cudnn").unwrap_or_else(|| "libcudnn".into()),
                version_string(v),
            ))
        }
    } else {
        Err(
            "libcudnn.so.9 not found (pip install nvidia-cudnn-cu13, or a system cuDNN 9; \
             SUPERRES_CUDA_LIBS names extra folders)"
                .into(),
        )
    };
    let gpus = if driver.is_ok() {
        list_gpus()
    } else {
        Vec::new()
    };
    Report {
        driver,
        nvrtc,
        cudnn,
        gpus,
    }
}

fn list_gpus() -> Vec<GpuInfo> {
    let mut count: c_int = 0;
    // SAFETY: cuInit succeeded in `probe`; out-parameter.
    if unsafe { cu::cuDeviceGetCount(&mut count) } != cu::CUresult::CUDA_SUCCESS {
        return Vec::new();
    }
    (0..count.max(0) as usize)
        .filter_map(|i| {
            let dev = cudarc::driver::result::device::get(i as c_int).ok()?;
            let name = cudarc::driver::result::device::get_name(dev).unwrap_or_default();
            // SAFETY: `dev` comes from cuDeviceGet.
            let (major, minor, total) = unsafe {
                (
                    cudarc::driver::result::device::get_attribute(
                        dev,
                        cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                    )
                    .unwrap_or(0),
                    cudarc::driver::result::device::get_attribute(
                        dev,
                        cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                    )
                    .unwrap_or(0),
                    cudarc::driver::result::device::total_mem(dev).unwrap_or(0),
                )
            };
            let cc = (major as u32, minor as u32);
            let free = nvml::usage(i).map_or(total as u64, |u| u.memory_total - u.memory_used);
            let usable = if cc < MIN_COMPUTE_CAPABILITY {
                Err(format!(
                    "GPU {i} ({name}) has compute capability {}.{}; {}.{} or newer is needed",
                    cc.0, cc.1, MIN_COMPUTE_CAPABILITY.0, MIN_COMPUTE_CAPABILITY.1
                ))
            } else {
                Ok(())
            };
            Some(GpuInfo {
                ordinal: i,
                name,
                compute_capability: cc,
                memory_total: total as u64,
                memory_free: free,
                usable,
            })
        })
        .collect()
}
