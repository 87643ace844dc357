//! One GPU and its lanes.
//!
//! - A [`Gpu`] per device: its primary context and the kernels compiled for its
//!   architecture, loaded as one module.
//! - [`Lane`]s, several per GPU: a non-blocking stream, a cuDNN handle bound to it, and the
//!   device memory of its runs. Runs queued on one lane execute in stream order, so they
//!   share that memory safely; the [`LanePool`] sends each submission to the lane with the
//!   fewest runs queued, on any GPU, and keeps page-locked host buffers for reuse.

use std::collections::HashMap;
use std::ffi::{CString, c_int, c_void};
use std::sync::{Arc, Mutex};

use cudarc::cudnn::sys as dnn;
use cudarc::driver::sys as cu;

use super::handles::{DeviceMem, Pinned, cu_check, dnn_check};
use super::{GpuInfo, Unavailable, kernels};
use crate::{EngineError, Precision};

// ---------------------------------------------------------------------------------------
// One GPU

pub(super) struct Gpu {
    pub(super) ordinal: usize,
    pub(super) name: String,
    pub(super) cc: (u32, u32),
    pub(super) ctx: cu::CUcontext,
    pub(super) module: cu::CUmodule,
    pub(super) functions: HashMap<String, cu::CUfunction>,
    pub(super) sm_count: u32,
}

// SAFETY: a CUDA context, module and functions are usable from any thread once the context
// is made current there (done before every use); they are never mutated after creation.
unsafe impl Send for Gpu {}
unsafe impl Sync for Gpu {}

impl Gpu {
    pub(super) fn open(info: &GpuInfo) -> Result<Gpu, Unavailable> {
        let fail = |what: &str, e: String| {
            Unavailable(format!("GPU {} ({}): {what}: {e}", info.ordinal, info.name))
        };
        let dev = cudarc::driver::result::device::get(info.ordinal as c_int)
            .map_err(|e| fail("cuDeviceGet", format!("{e:?}")))?;
        // SAFETY: `dev` is a valid device. The primary context (the one the runtime API and
        // PyTorch share) stays retained for the life of the process: models and lanes
        // created on it may outlive any one backend value.
        let ctx = unsafe { cudarc::driver::result::primary_ctx::retain(dev) }
            .map_err(|e| fail("cannot create a context", format!("{e:?}")))?;
        // SAFETY: `ctx` was just retained.
        unsafe { cudarc::driver::result::ctx::set_current(ctx) }
            .map_err(|e| fail("cuCtxSetCurrent", format!("{e:?}")))?;
        let cubin = kernels::image_for(info.compute_capability)
            .map_err(|e| fail("compiling the kernels", e.to_string()))?;
        let mut module: cu::CUmodule = std::ptr::null_mut();
        // SAFETY: `cubin` is a complete CUBIN image produced by NVRTC for this architecture,
        // or NUL-terminated PTX for an older one.
        let r = unsafe { cu::cuModuleLoadData(&mut module, cubin.as_ptr() as *const c_void) };
        if r != cu::CUresult::CUDA_SUCCESS {
            return Err(fail("loading the kernels", format!("{r:?}")));
        }
        let mut functions = HashMap::new();
        for name in kernels::all_names() {
            let cname =
                CString::new(name.clone()).map_err(|e| fail("kernel name", e.to_string()))?;
            let mut f: cu::CUfunction = std::ptr::null_mut();
            // SAFETY: `module` is loaded; out-parameter.
            let r = unsafe { cu::cuModuleGetFunction(&mut f, module, cname.as_ptr()) };
            if r != cu::CUresult::CUDA_SUCCESS {
                return Err(fail(&format!("kernel {name}"), format!("{r:?}")));
            }
            functions.insert(name, f);
        }
        // SAFETY: `dev` is valid.
        let sm_count = unsafe {
            cudarc::driver::result::device::get_attribute(
                dev,
                cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
        }
        .unwrap_or(32)
        .max(1) as u32;
        Ok(Gpu {
            ordinal: info.ordinal,
            name: info.name.clone(),
            cc: info.compute_capability,
            ctx,
            module,
            functions,
            sm_count,
        })
    }

    pub(super) fn make_current(&self) -> Result<(), EngineError> {
        // SAFETY: `ctx` is retained for this struct's life.
        cu_check(unsafe { cu::cuCtxSetCurrent(self.ctx) }, "cuCtxSetCurrent")
    }

    pub(super) fn free_memory(&self) -> Option<u64> {
        self.make_current().ok()?;
        cudarc::driver::result::mem_get_info()
            .ok()
            .map(|(free, _)| free as u64)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: the module was loaded in `open` and is unloaded once; no lane of this GPU
        // is alive (lanes hold an `Arc<Gpu>`).
        unsafe {
            let _ = cu::cuCtxSetCurrent(self.ctx);
            let _ = cu::cuModuleUnload(self.module);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Kernel arguments

/// One kernel argument, by value, as the C signature declares it.
#[derive(Clone, Copy)]
pub(super) enum Arg {
    Ptr(cu::CUdeviceptr),
    I32(i32),
    I64(i64),
    F32(f32),
    InMap(InMapC),
    OutMap(OutMapC),
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct InMapC {
    pub(super) perm: [i32; 4],
    pub(super) add: [f32; 4],
    pub(super) mul: f32,
    pub(super) div: f32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct OutMapC {
    pub(super) perm: [i32; 4],
    pub(super) add: [f32; 4],
    pub(super) mul: f32,
}

pub(super) fn ty(p: Precision) -> &'static str {
    match p {
        Precision::Exact | Precision::Tf32 => "f32",
        Precision::Fp16 => "f16",
        Precision::Bf16 => "bf16",
    }
}

// ---------------------------------------------------------------------------------------
// Lanes

/// The device memory of a lane's runs, grown when a larger plan comes. Runs queued on one
/// lane share it safely: they execute in stream order.
#[derive(Default)]
pub(super) struct RunMemory {
    pub(super) device: Option<DeviceMem>,
}

pub(super) struct Lane {
    pub(super) gpu: Arc<Gpu>,
    pub(super) stream: cu::CUstream,
    pub(super) cudnn: dnn::cudnnHandle_t,
    pub(super) memory: RunMemory,
}

// SAFETY: a lane is used under its mutex, by one thread at a time; its stream and cuDNN
// handle are valid on any thread with the GPU's context current.
unsafe impl Send for Lane {}

impl Lane {
    pub(super) fn open(gpu: &Arc<Gpu>) -> Result<Lane, EngineError> {
        gpu.make_current()?;
        let mut stream: cu::CUstream = std::ptr::null_mut();
        let mut handle: dnn::cudnnHandle_t = std::ptr::null_mut();
        // SAFETY: out-parameters; the context is current.
        unsafe {
            cu_check(
                cu::cuStreamCreate(
                    &mut stream,
                    cu::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
                ),
                "cuStreamCreate",
            )?;
            dnn_check(dnn::cudnnCreate(&mut handle), "cudnnCreate")?;
            dnn_check(
                dnn::cudnnSetStream(handle, stream as dnn::cudaStream_t),
                "cudnnSetStream",
            )?;
        }
        Ok(Lane {
            gpu: gpu.clone(),
            stream,
            cudnn: handle,
            memory: RunMemory::default(),
        })
    }

    pub(super) fn sync(&self) -> Result<(), EngineError> {
        // SAFETY: the stream belongs to this lane.
        cu_check(
            unsafe { cu::cuStreamSynchronize(self.stream) },
            "cuStreamSynchronize",
        )
    }

    pub(super) fn launch(&self, name: &str, total: usize, args: &[Arg]) -> Result<(), EngineError> {
        if total == 0 {
            return Ok(());
        }
        let f = *self
            .gpu
            .functions
            .get(name)
            .ok_or_else(|| EngineError::Device(format!("no kernel {name}")))?;
        let block = 256usize;
        let grid = total
            .div_ceil(block)
            .min(self.gpu.sm_count as usize * 16)
            .max(1);
        let mut vals: Vec<Arg> = args.to_vec();
        let mut ptrs: Vec<*mut c_void> = vals
            .iter_mut()
            .map(|a| match a {
                Arg::Ptr(v) => v as *mut u64 as *mut c_void,
                Arg::I32(v) => v as *mut i32 as *mut c_void,
                Arg::I64(v) => v as *mut i64 as *mut c_void,
                Arg::F32(v) => v as *mut f32 as *mut c_void,
                Arg::InMap(v) => v as *mut InMapC as *mut c_void,
                Arg::OutMap(v) => v as *mut OutMapC as *mut c_void,
            })
            .collect();
        // SAFETY: `f` is a kernel of the loaded module whose C signature the call site
        // matches argument by argument (kernels.cu); every pointer argument points into
        // memory of this lane or of the model, live until the stream is synchronised. The
        // argument values are copied at launch.
        cu_check(
            unsafe {
                cu::cuLaunchKernel(
                    f,
                    grid as u32,
                    1,
                    1,
                    block as u32,
                    1,
                    1,
                    0,
                    self.stream,
                    ptrs.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
            },
            name,
        )
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        // SAFETY: the handles were created in `open` and are destroyed once, after the
        // stream has drained.
        unsafe {
            let _ = cu::cuCtxSetCurrent(self.gpu.ctx);
            let _ = cu::cuStreamSynchronize(self.stream);
            let _ = dnn::cudnnDestroy(self.cudnn);
            let _ = cu::cuStreamDestroy_v2(self.stream);
        }
    }
}

/// A lane with the count of submissions queued on it.
pub(super) struct LaneSlot {
    pub(super) lane: Mutex<Lane>,
    pub(super) queued: std::sync::atomic::AtomicUsize,
}

/// Every lane of the backend, and page-locked buffers of finished submissions for reuse.
///
/// A submission never waits for a lane: it goes to the lane with the fewest runs queued
/// (its stream orders them), so a caller may hold any number of pending runs without
/// deadlocking other callers, and a GPU always has the next run enqueued behind the current
/// one.
pub(super) struct LanePool {
    pub(super) lanes: Vec<LaneSlot>,
    pub(super) pinned: Mutex<Vec<Pinned>>,
}

impl LanePool {
    pub(super) fn pick(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        (0..self.lanes.len())
            .min_by_key(|&i| self.lanes[i].queued.load(Relaxed))
            .unwrap_or(0)
    }

    /// A pinned buffer of at least `bytes` (the smallest that fits, else a new one).
    pub(super) fn pinned(&self, bytes: usize) -> Result<Pinned, EngineError> {
        let mut free = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        let fit = (0..free.len())
            .filter(|&i| free[i].bytes >= bytes)
            .min_by_key(|&i| free[i].bytes);
        match fit {
            Some(i) => Ok(free.swap_remove(i)),
            None => {
                drop(free);
                Pinned::alloc(bytes)
            }
        }
    }

    pub(super) fn give_pinned(&self, p: Pinned) {
        let mut free = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        free.push(p);
        // Keep the few largest.
        if free.len() > 4 * self.lanes.len() {
            free.sort_by_key(|p| std::cmp::Reverse(p.bytes));
            free.truncate(4 * self.lanes.len());
        }
    }
}
