//! GPU memory and utilisation from NVML (`libnvidia-ml`, part of the driver), loaded at run
//! time like the other CUDA libraries. No crate loads NVML dynamically without also linking
//! it, and four entry points are all the backend reads, so they are declared here.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::OnceLock;

#[repr(C)]
#[derive(Default)]
struct Memory {
    total: u64,
    free: u64,
    used: u64,
}

#[repr(C)]
#[derive(Default)]
struct Utilization {
    gpu: c_uint,
    memory: c_uint,
}

type Device = *mut c_void;

struct Nvml {
    _lib: libloading::Library,
    by_index: unsafe extern "C" fn(c_uint, *mut Device) -> c_int,
    memory: unsafe extern "C" fn(Device, *mut Memory) -> c_int,
    utilization: unsafe extern "C" fn(Device, *mut Utilization) -> c_int,
    driver_version: unsafe extern "C" fn(*mut c_char, c_uint) -> c_int,
}

// SAFETY: NVML is thread-safe (documented); the struct only holds function pointers and the
// library handle that keeps them valid.
unsafe impl Send for Nvml {}
unsafe impl Sync for Nvml {}

fn nvml() -> Option<&'static Nvml> {
    static NVML: OnceLock<Option<Nvml>> = OnceLock::new();
    NVML.get_or_init(|| {
        super::libs::preload();
        // SAFETY: libnvidia-ml is the driver's own library; each symbol is declared with its
        // documented C signature.
        unsafe {
            let lib = ["libnvidia-ml.so.1", "libnvidia-ml.so"]
                .iter()
                .find_map(|n| libloading::Library::new(*n).ok())?;
            let init: unsafe extern "C" fn() -> c_int = *lib.get(b"nvmlInit_v2").ok()?;
            if init() != 0 {
                return None;
            }
            Some(Nvml {
                by_index: *lib.get(b"nvmlDeviceGetHandleByIndex_v2").ok()?,
                memory: *lib.get(b"nvmlDeviceGetMemoryInfo").ok()?,
                utilization: *lib.get(b"nvmlDeviceGetUtilizationRates").ok()?,
                driver_version: *lib.get(b"nvmlSystemGetDriverVersion").ok()?,
                _lib: lib,
            })
        }
    })
    .as_ref()
}

/// Memory and load of one GPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub memory_total: u64,
    pub memory_used: u64,
    /// Percent of the last sample period (1/6 s to 1 s, by product) a kernel was running.
    pub gpu_percent: u32,
}

/// The usage of GPU `index` (NVML's enumeration, the same as CUDA's unless
/// `CUDA_VISIBLE_DEVICES` reorders them), or `None` without NVML.
pub fn usage(index: usize) -> Option<Usage> {
    let n = nvml()?;
    let mut dev: Device = std::ptr::null_mut();
    let mut mem = Memory::default();
    let mut util = Utilization::default();
    // SAFETY: out-pointers to live locals; `dev` comes from NVML itself.
    unsafe {
        if (n.by_index)(index as c_uint, &mut dev) != 0 || (n.memory)(dev, &mut mem) != 0 {
            return None;
        }
        let gpu = if (n.utilization)(dev, &mut util) == 0 {
            util.gpu
        } else {
            0
        };
        Some(Usage {
            memory_total: mem.total,
            memory_used: mem.used,
            gpu_percent: gpu,
        })
    }
}

/// The driver's version string (e.g. `580.159.03`).
pub fn driver_version() -> Option<String> {
    let n = nvml()?;
    let mut buf = [0 as c_char; 96];
    // SAFETY: NVML writes at most `len` bytes, NUL-terminated.
    unsafe {
        if (n.driver_version)(buf.as_mut_ptr(), buf.len() as c_uint) != 0 {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .into_owned(),
        )
    }
}
