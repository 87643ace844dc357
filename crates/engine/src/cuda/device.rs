//! The executor on a GPU.
//!
//! - A [`Gpu`] per device: its primary context, the kernels compiled for its architecture
//!   and loaded as one module, and the cuDNN algorithms found per convolution shape.
//! - [`Lane`]s, several per GPU: a non-blocking stream, a cuDNN handle bound to it, and the
//!   memory of one run (one allocation for every slot of the plan, the input, the padding
//!   scratch, the cuDNN workspace, the transfer buffers on the device, and pinned host
//!   buffers). A submission takes a free lane, enqueues the upload, every step and the
//!   download on its stream, records an event and returns; waiting syncs the event, copies
//!   the pinned outputs and gives the lane back. Lanes are how one GPU overlaps one batch's
//!   transfers with another's kernels, and how several GPUs share one queue.
//! - Weights are uploaded once per model per GPU (in the storage type) when a model is
//!   prepared.
//!
//! Every raw handle lives in a struct that owns it; the unsafe blocks are the FFI calls,
//! each with the invariant that makes it sound.

use std::collections::HashMap;
use std::ffi::{CString, c_int, c_void};
use std::sync::{Arc, Mutex};

use cudarc::cudnn::sys as dnn;
use cudarc::driver::sys as cu;
use superres_graph::Graph;

use super::dplan::{Buf, DevicePlan, Lowered, Operand, Step};
use super::kernels;
use super::{CudaOptions, Devices, GpuInfo, MIN_COMPUTE_CAPABILITY, Report, Unavailable, nvml};
use crate::{
    Batch, DeviceStatus, EngineError, Executable, HostData, Io, Pending, Precision, check_batch,
};

// ---------------------------------------------------------------------------------------
// Errors

fn cu_check(r: cu::CUresult, what: &str) -> Result<(), EngineError> {
    match r {
        cu::CUresult::CUDA_SUCCESS => Ok(()),
        cu::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Err(EngineError::OutOfMemory(format!(
            "{what}: the GPU is out of memory"
        ))),
        other => Err(EngineError::Device(format!("{what}: {other:?}"))),
    }
}

fn dnn_check(r: dnn::cudnnStatus_t, what: &str) -> Result<(), EngineError> {
    if r == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    let name = format!("{r:?}");
    if name.contains("ALLOC") {
        Err(EngineError::OutOfMemory(format!("{what}: {name}")))
    } else {
        Err(EngineError::Device(format!("cuDNN {what}: {name}")))
    }
}

// ---------------------------------------------------------------------------------------
// Probing

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
pub fn probe() -> Report {
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

// ---------------------------------------------------------------------------------------
// One GPU

/// A device pointer with its size.
struct DeviceMem {
    ptr: cu::CUdeviceptr,
    bytes: usize,
}

impl DeviceMem {
    fn alloc(bytes: usize, what: &str) -> Result<DeviceMem, EngineError> {
        let mut ptr: cu::CUdeviceptr = 0;
        // SAFETY: the owning GPU's context is current (every caller sets it); out-parameter.
        cu_check(unsafe { cu::cuMemAlloc_v2(&mut ptr, bytes.max(256)) }, what)?;
        Ok(DeviceMem { ptr, bytes })
    }
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from cuMemAlloc and is freed once; the memory is not in use:
        // lanes are synchronised before their memory is dropped.
        unsafe {
            let _ = cu::cuMemFree_v2(self.ptr);
        }
    }
}

/// Page-locked host memory (fast, asynchronous copies).
struct Pinned {
    ptr: *mut u8,
    bytes: usize,
}

// SAFETY: page-locked memory owned by this struct alone; any thread may read and write it
// (the owner synchronises with the copies through the submission's events).
unsafe impl Send for Pinned {}

impl Pinned {
    fn alloc(bytes: usize) -> Result<Pinned, EngineError> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: out-parameter; the context is current.
        cu_check(
            unsafe { cu::cuMemHostAlloc(&mut p, bytes.max(64), 0) },
            "pinned host memory",
        )?;
        Ok(Pinned {
            ptr: p as *mut u8,
            bytes,
        })
    }

    fn slice(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.bytes, "pinned buffer too small");
        // SAFETY: `ptr` points to `bytes` bytes owned by this struct; `len <= bytes`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemHostAlloc, freed once, no copy in flight (lanes are
        // synchronised before they are dropped).
        unsafe {
            let _ = cu::cuMemFreeHost(self.ptr as *mut c_void);
        }
    }
}

pub struct Gpu {
    ordinal: usize,
    name: String,
    cc: (u32, u32),
    ctx: cu::CUcontext,
    module: cu::CUmodule,
    functions: HashMap<String, cu::CUfunction>,
    sm_count: u32,
}

// SAFETY: a CUDA context, module and functions are usable from any thread once the context
// is made current there (done before every use); they are never mutated after creation.
unsafe impl Send for Gpu {}
unsafe impl Sync for Gpu {}

impl Gpu {
    fn open(info: &GpuInfo) -> Result<Gpu, Unavailable> {
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

    fn make_current(&self) -> Result<(), EngineError> {
        // SAFETY: `ctx` is retained for this struct's life.
        cu_check(unsafe { cu::cuCtxSetCurrent(self.ctx) }, "cuCtxSetCurrent")
    }

    fn free_memory(&self) -> Option<u64> {
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
enum Arg {
    Ptr(cu::CUdeviceptr),
    I32(i32),
    I64(i64),
    F32(f32),
    InMap(InMapC),
    OutMap(OutMapC),
}

#[repr(C)]
#[derive(Clone, Copy)]
struct InMapC {
    perm: [i32; 4],
    add: [f32; 4],
    mul: f32,
    div: f32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct OutMapC {
    perm: [i32; 4],
    add: [f32; 4],
    mul: f32,
}

fn ty(p: Precision) -> &'static str {
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
struct RunMemory {
    device: Option<DeviceMem>,
}

pub struct Lane {
    gpu: Arc<Gpu>,
    stream: cu::CUstream,
    cudnn: dnn::cudnnHandle_t,
    memory: RunMemory,
}

// SAFETY: a lane is used under its mutex, by one thread at a time; its stream and cuDNN
// handle are valid on any thread with the GPU's context current.
unsafe impl Send for Lane {}

/// A CUDA event (timing enabled), destroyed with its struct.
struct Event(cu::CUevent);

impl Event {
    fn new() -> Result<Event, EngineError> {
        let mut e: cu::CUevent = std::ptr::null_mut();
        // SAFETY: out-parameter; the caller made the context current.
        cu_check(
            unsafe { cu::cuEventCreate(&mut e, cu::CUevent_flags::CU_EVENT_DEFAULT as u32) },
            "cuEventCreate",
        )?;
        Ok(Event(e))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: created in `new`, destroyed once; a pending record completes first.
        unsafe {
            let _ = cu::cuEventDestroy_v2(self.0);
        }
    }
}

impl Lane {
    fn open(gpu: &Arc<Gpu>) -> Result<Lane, EngineError> {
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

    fn sync(&self) -> Result<(), EngineError> {
        // SAFETY: the stream belongs to this lane.
        cu_check(
            unsafe { cu::cuStreamSynchronize(self.stream) },
            "cuStreamSynchronize",
        )
    }

    fn launch(&self, name: &str, total: usize, args: &[Arg]) -> Result<(), EngineError> {
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
struct LaneSlot {
    lane: Mutex<Lane>,
    queued: std::sync::atomic::AtomicUsize,
}

/// Every lane of the backend, and page-locked buffers of finished submissions for reuse.
///
/// A submission never waits for a lane: it goes to the lane with the fewest runs queued
/// (its stream orders them), so a caller may hold any number of pending runs without
/// deadlocking other callers, and a GPU always has the next run enqueued behind the current
/// one.
struct LanePool {
    lanes: Vec<LaneSlot>,
    pinned: Mutex<Vec<Pinned>>,
}

impl LanePool {
    fn pick(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        (0..self.lanes.len())
            .min_by_key(|&i| self.lanes[i].queued.load(Relaxed))
            .unwrap_or(0)
    }

    /// A pinned buffer of at least `bytes` (the smallest that fits, else a new one).
    fn pinned(&self, bytes: usize) -> Result<Pinned, EngineError> {
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

    fn give_pinned(&self, p: Pinned) {
        let mut free = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        free.push(p);
        // Keep the few largest.
        if free.len() > 4 * self.lanes.len() {
            free.sort_by_key(|p| std::cmp::Reverse(p.bytes));
            free.truncate(4 * self.lanes.len());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The backend

pub struct Backend {
    gpus: Vec<Arc<Gpu>>,
    precision: Precision,
    lanes_per_device: usize,
    pool: Arc<LanePool>,
}

impl Backend {
    pub fn open(report: &Report, options: &CudaOptions) -> Result<Backend, Unavailable> {
        let wanted: Vec<&GpuInfo> = match &options.devices {
            Devices::All => report.gpus.iter().filter(|g| g.usable.is_ok()).collect(),
            Devices::List(list) => list
                .iter()
                .map(|&i| {
                    let g = report.gpus.iter().find(|g| g.ordinal == i).ok_or_else(|| {
                        Unavailable(format!(
                            "there is no GPU cuda:{i} ({} GPU(s) found)",
                            report.gpus.len()
                        ))
                    })?;
                    g.usable.clone().map_err(Unavailable)?;
                    Ok(g)
                })
                .collect::<Result<_, Unavailable>>()?,
        };
        if wanted.is_empty() {
            return Err(Unavailable("no usable GPU".into()));
        }
        for g in &wanted {
            if matches!(options.precision, Precision::Bf16) && g.compute_capability < (8, 0) {
                return Err(Unavailable(format!(
                    "GPU {} ({}) has no bf16 tensor cores (compute capability {}.{}); use \
                     --precision fp16",
                    g.ordinal, g.name, g.compute_capability.0, g.compute_capability.1
                )));
            }
        }
        let gpus: Vec<Arc<Gpu>> = wanted
            .iter()
            .map(|g| Gpu::open(g).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let lanes_per_device = options.lanes_per_device.max(1);
        let mut lanes = Vec::new();
        for gpu in &gpus {
            for _ in 0..lanes_per_device {
                lanes.push(Lane::open(gpu).map_err(|e| Unavailable(e.to_string()))?);
            }
        }
        Ok(Backend {
            gpus,
            precision: options.precision,
            lanes_per_device,
            pool: Arc::new(LanePool {
                lanes: lanes
                    .into_iter()
                    .map(|l| LaneSlot {
                        lane: Mutex::new(l),
                        queued: std::sync::atomic::AtomicUsize::new(0),
                    })
                    .collect(),
                pinned: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn name(&self) -> String {
        let names: Vec<String> = self
            .gpus
            .iter()
            .map(|g| format!("cuda:{} {} (sm_{}{})", g.ordinal, g.name, g.cc.0, g.cc.1))
            .collect();
        format!(
            "{}, {}, {} lanes each",
            names.join(" + "),
            self.precision,
            self.lanes_per_device
        )
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn status(&self) -> Vec<DeviceStatus> {
        self.gpus
            .iter()
            .map(|g| {
                let usage = nvml::usage(g.ordinal);
                DeviceStatus {
                    id: format!("cuda:{}", g.ordinal),
                    name: g.name.clone(),
                    memory_total_bytes: usage.map(|u| u.memory_total),
                    memory_used_bytes: usage.map(|u| u.memory_used),
                    utilisation_percent: usage.map(|u| u.gpu_percent as f64),
                }
            })
            .collect()
    }

    pub fn prepare(this: &Arc<Backend>, graph: &Graph) -> Result<Arc<dyn Executable>, EngineError> {
        let lowered = Lowered::new(graph, this.precision)?;
        let models = this
            .gpus
            .iter()
            .map(|g| GpuModel::upload(g, &lowered))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(DeviceExecutable {
            backend: this.clone(),
            lowered,
            models,
            plans: Mutex::new(HashMap::new()),
            last_ms: Arc::new(Mutex::new(None)),
        }))
    }
}

// ---------------------------------------------------------------------------------------
// A model on one GPU

/// A cuDNN convolution of one shape: descriptors and the algorithm found for it.
struct ConvRun {
    x: dnn::cudnnTensorDescriptor_t,
    y: dnn::cudnnTensorDescriptor_t,
    w: dnn::cudnnFilterDescriptor_t,
    conv: dnn::cudnnConvolutionDescriptor_t,
    algo: dnn::cudnnConvolutionFwdAlgo_t,
    workspace: usize,
}

impl Drop for ConvRun {
    fn drop(&mut self) {
        // SAFETY: descriptors created for this struct and destroyed once.
        unsafe {
            let _ = dnn::cudnnDestroyTensorDescriptor(self.x);
            let _ = dnn::cudnnDestroyTensorDescriptor(self.y);
            let _ = dnn::cudnnDestroyFilterDescriptor(self.w);
            let _ = dnn::cudnnDestroyConvolutionDescriptor(self.conv);
        }
    }
}

/// The cuDNN side of one plan on one GPU.
struct PlanRuns {
    convs: HashMap<usize, ConvRun>,
    workspace: usize,
}

// SAFETY: descriptors are host-side structures, only read after creation.
unsafe impl Send for PlanRuns {}
unsafe impl Sync for PlanRuns {}

struct GpuModel {
    gpu: Arc<Gpu>,
    /// Weights of each convolution node, in the storage type.
    weights: Vec<Option<DeviceMem>>,
    /// The parameter table, `f32`.
    params: Vec<DeviceMem>,
    runs: Mutex<HashMap<(usize, usize, usize), Arc<PlanRuns>>>,
}

// SAFETY: device pointers are plain integers; the memory is only read by kernels.
unsafe impl Send for GpuModel {}
unsafe impl Sync for GpuModel {}

fn to_storage(v: &[f32], p: Precision) -> Vec<u8> {
    match p {
        Precision::Exact | Precision::Tf32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Precision::Fp16 => v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        Precision::Bf16 => v
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
    }
}

fn upload(bytes: &[u8], what: &str) -> Result<DeviceMem, EngineError> {
    let mem = DeviceMem::alloc(bytes.len(), what)?;
    // SAFETY: `mem` holds at least `bytes.len()` bytes; a synchronous copy.
    cu_check(
        unsafe { cu::cuMemcpyHtoD_v2(mem.ptr, bytes.as_ptr() as *const c_void, bytes.len()) },
        what,
    )?;
    Ok(mem)
}

impl GpuModel {
    fn upload(gpu: &Arc<Gpu>, lowered: &Lowered) -> Result<GpuModel, EngineError> {
        gpu.make_current()?;
        let p = lowered.precision;
        let weights = lowered
            .convs
            .iter()
            .map(|c| {
                c.as_ref()
                    .map(|d| upload(&to_storage(&d.weights, p), "weights"))
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        let params = lowered
            .params
            .iter()
            .map(|v| upload(&to_storage(v, Precision::Exact), "parameters"))
            .collect::<Result<_, _>>()?;
        Ok(GpuModel {
            gpu: gpu.clone(),
            weights,
            params,
            runs: Mutex::new(HashMap::new()),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The executable

struct DeviceExecutable {
    backend: Arc<Backend>,
    lowered: Lowered,
    models: Vec<GpuModel>,
    plans: Mutex<HashMap<(usize, usize, usize), Arc<DevicePlan>>>,
    /// Device milliseconds of the last finished run.
    last_ms: Arc<Mutex<Option<f64>>>,
}

/// Bytes of the cuDNN workspace a run may use at most.
const WORKSPACE_LIMIT: usize = 512 << 20;

/// Device bytes of one run of `plan`: the arena, the device transfer buffers and the cuDNN
/// workspace (at most [`WORKSPACE_LIMIT`]; the real one is usually far smaller, so this is
/// an upper bound the pipeline can size tiles with).
///
/// A plan with a buffer cuDNN cannot describe (2³¹ values or more) takes "all memory", so
/// the pipeline's tile search never picks it.
pub fn run_bytes(plan: &DevicePlan) -> usize {
    if plan.max_buffer_elements() > i32::MAX as usize {
        return usize::MAX;
    }
    let ws = WORKSPACE_LIMIT.min(plan.arena_bytes() / 2 + (16 << 20));
    plan.arena_bytes() + plan.transfer_bytes() + ws
}

fn align(n: usize) -> usize {
    n.div_ceil(256) * 256
}

/// Offsets of a plan's buffers in a lane's one device allocation.
struct Layout {
    slots: Vec<usize>,
    input: usize,
    pad: usize,
    staging_in: usize,
    staging_out: Vec<usize>,
    workspace: usize,
    total: usize,
}

impl Layout {
    fn new(plan: &DevicePlan, workspace: usize, io: &Io) -> Layout {
        let mut at = 0usize;
        let mut take = |n: usize| {
            let o = at;
            at += align(n.max(1));
            o
        };
        let slots = plan.slot_bytes.iter().map(|&b| take(b)).collect();
        let input = take(plan.input_bytes);
        let pad = take(plan.pad_bytes);
        let in_elem = if io.input.is_some() { 1 } else { 4 };
        let out_elem = if io.output.is_some() { 1 } else { 4 };
        let staging_in = take(plan.n * plan.h * plan.w * plan.input_c * in_elem);
        let staging_out = plan
            .outputs
            .iter()
            .map(|o| take(plan.n * o.h * o.w * o.c * out_elem))
            .collect();
        let ws = take(workspace);
        Layout {
            slots,
            input,
            pad,
            staging_in,
            staging_out,
            workspace: ws,
            total: at,
        }
    }
}

impl DeviceExecutable {
    fn plan(&self, n: usize, h: usize, w: usize) -> Result<Arc<DevicePlan>, EngineError> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = plans.get(&(n, h, w)) {
            return Ok(p.clone());
        }
        let p = Arc::new(DevicePlan::new(&self.lowered, n, h, w)?);
        if plans.len() >= 16 {
            plans.clear();
        }
        plans.insert((n, h, w), p.clone());
        Ok(p)
    }

    fn data_type(&self) -> dnn::cudnnDataType_t {
        match self.lowered.precision {
            Precision::Exact | Precision::Tf32 => dnn::cudnnDataType_t::CUDNN_DATA_FLOAT,
            Precision::Fp16 => dnn::cudnnDataType_t::CUDNN_DATA_HALF,
            Precision::Bf16 => dnn::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
        }
    }

    /// Descriptors and algorithms of a plan on the lane's GPU, found once per shape:
    /// `cudnnFindConvolutionForwardAlgorithmEx` times the candidates on the lane's own
    /// buffers.
    fn runs(
        &self,
        model: &GpuModel,
        plan: &DevicePlan,
        lane: &mut Lane,
    ) -> Result<Arc<PlanRuns>, EngineError> {
        let key = (plan.n, plan.h, plan.w);
        if let Some(r) = model
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        // Memory to search in: the plan's buffers and the largest workspace allowed.
        let free = lane.gpu.free_memory().unwrap_or(0) as usize;
        let ws_limit = WORKSPACE_LIMIT.min(free / 4);
        let layout = Layout::new(plan, ws_limit, &Io::default());
        // The search writes the lane's buffers: runs queued before it finish first.
        lane.sync()?;
        ensure_device(lane, layout.total)?;
        let base = lane.memory.device.as_ref().map_or(0, |m| m.ptr);
        let addr = |b: Buf| -> cu::CUdeviceptr {
            base + match b {
                Buf::Input => layout.input,
                Buf::Slot(s) => layout.slots[s],
                Buf::Pad => layout.pad,
            } as u64
        };
        let dt = self.data_type();
        let math = match self.lowered.precision {
            Precision::Exact => dnn::cudnnMathType_t::CUDNN_FMA_MATH,
            _ => dnn::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        };
        let mut convs = HashMap::new();
        let mut workspace = 0usize;
        for step in &plan.steps {
            let Step::Conv {
                node,
                src,
                dst,
                ih,
                iw,
                oh,
                ow,
                pad,
            } = step
            else {
                continue;
            };
            let d = self.lowered.convs[*node]
                .as_ref()
                .ok_or_else(|| EngineError::Device("unlowered convolution".into()))?;
            let (sh, sw, x) = match pad {
                Some((ph, pw)) => (*ph, *pw, Buf::Pad),
                None => (*ih, *iw, *src),
            };
            let (padh, padw) = d.symmetric_padding().unwrap_or((0, 0));
            let i32c = |v: usize| v as c_int;
            // SAFETY: descriptor calls with out-parameters and plain values; the Find call
            // reads and writes the lane's own buffers, sized by the plan (x, y) and by
            // `ws_limit` (workspace), and the model's weights.
            let run = unsafe {
                let mut xd = std::ptr::null_mut();
                let mut yd = std::ptr::null_mut();
                let mut wd = std::ptr::null_mut();
                let mut cd = std::ptr::null_mut();
                dnn_check(
                    dnn::cudnnCreateTensorDescriptor(&mut xd),
                    "tensor descriptor",
                )?;
                dnn_check(
                    dnn::cudnnCreateTensorDescriptor(&mut yd),
                    "tensor descriptor",
                )?;
                dnn_check(
                    dnn::cudnnCreateFilterDescriptor(&mut wd),
                    "filter descriptor",
                )?;
                dnn_check(
                    dnn::cudnnCreateConvolutionDescriptor(&mut cd),
                    "conv descriptor",
                )?;
                let mut run = ConvRun {
                    x: xd,
                    y: yd,
                    w: wd,
                    conv: cd,
                    algo: dnn::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                    workspace: 0,
                };
                let nhwc = dnn::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC;
                dnn_check(
                    dnn::cudnnSetTensor4dDescriptor(
                        xd,
                        nhwc,
                        dt,
                        i32c(plan.n),
                        i32c(d.cin),
                        i32c(sh),
                        i32c(sw),
                    ),
                    "input descriptor",
                )?;
                dnn_check(
                    dnn::cudnnSetTensor4dDescriptor(
                        yd,
                        nhwc,
                        dt,
                        i32c(plan.n),
                        i32c(d.cout),
                        i32c(*oh),
                        i32c(*ow),
                    ),
                    "output descriptor",
                )?;
                dnn_check(
                    dnn::cudnnSetFilter4dDescriptor(
                        wd,
                        dt,
                        nhwc,
                        i32c(d.cout),
                        i32c(d.cin / d.groups),
                        i32c(d.kh),
                        i32c(d.kw),
                    ),
                    "filter descriptor",
                )?;
                dnn_check(
                    dnn::cudnnSetConvolution2dDescriptor(
                        cd,
                        i32c(padh),
                        i32c(padw),
                        i32c(d.stride.0),
                        i32c(d.stride.1),
                        i32c(d.dilation.0),
                        i32c(d.dilation.1),
                        dnn::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                        dnn::cudnnDataType_t::CUDNN_DATA_FLOAT,
                    ),
                    "convolution descriptor",
                )?;
                dnn_check(
                    dnn::cudnnSetConvolutionGroupCount(cd, i32c(d.groups)),
                    "groups",
                )?;
                dnn_check(dnn::cudnnSetConvolutionMathType(cd, math), "math type")?;
                let wptr = model.weights[*node].as_ref().map_or(0, |m| m.ptr);
                let mut perf = [std::mem::zeroed::<dnn::cudnnConvolutionFwdAlgoPerf_t>(); 8];
                let mut returned: c_int = 0;
                dnn_check(
                    dnn::cudnnFindConvolutionForwardAlgorithmEx(
                        lane.cudnn,
                        xd,
                        addr(x) as *const c_void,
                        wd,
                        wptr as *const c_void,
                        cd,
                        yd,
                        addr(*dst) as *mut c_void,
                        perf.len() as c_int,
                        &mut returned,
                        perf.as_mut_ptr(),
                        (base + layout.workspace as u64) as *mut c_void,
                        ws_limit,
                    ),
                    "finding a convolution algorithm",
                )?;
                let best = perf[..returned.max(0) as usize]
                    .iter()
                    .filter(|p| {
                        use dnn::cudnnMathType_t as M;
                        // Never a down-conversion of f32 data to f16; in exact precision
                        // nothing but FMA products (the descriptor stays at FMA math).
                        let math_ok = match (self.lowered.precision, p.mathType) {
                            (_, M::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) => false,
                            (Precision::Exact, m) => {
                                m == M::CUDNN_FMA_MATH || m == M::CUDNN_DEFAULT_MATH
                            }
                            _ => true,
                        };
                        p.status == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                            && p.memory <= ws_limit
                            && math_ok
                    })
                    .min_by(|a, b| a.time.total_cmp(&b.time))
                    .copied()
                    .ok_or_else(|| {
                        EngineError::Device(format!(
                            "cuDNN has no algorithm for a {}x{} {}→{} convolution at {}×{}×{} in {}",
                            d.kh, d.kw, d.cin, d.cout, plan.n, sh, sw, self.lowered.precision
                        ))
                    })?;
                if self.lowered.precision != Precision::Exact {
                    dnn_check(
                        dnn::cudnnSetConvolutionMathType(cd, best.mathType),
                        "math type",
                    )?;
                }
                run.algo = best.algo;
                run.workspace = best.memory;
                run
            };
            workspace = workspace.max(run.workspace);
            convs.insert(*node, run);
        }
        lane.sync()?;
        let runs = Arc::new(PlanRuns { convs, workspace });
        model
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, runs.clone());
        Ok(runs)
    }

    /// Enqueues the whole run on `lane`; returns the layout the outputs are in.
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &self,
        model: &GpuModel,
        plan: &DevicePlan,
        runs: &PlanRuns,
        lane: &mut Lane,
        sub: &mut Submission,
        batch: &Batch,
        io: &Io,
    ) -> Result<(), EngineError> {
        let layout = Layout::new(plan, runs.workspace, io);
        ensure_device(lane, layout.total)?;
        let base = lane.memory.device.as_ref().map_or(0, |m| m.ptr);
        let addr = |b: Buf| -> cu::CUdeviceptr {
            base + match b {
                Buf::Input => layout.input,
                Buf::Slot(s) => layout.slots[s],
                Buf::Pad => layout.pad,
            } as u64
        };
        let param = |id: usize| model.params[id].ptr;
        let t = ty(self.lowered.precision);
        let npix_in = plan.n * plan.h * plan.w;

        // Host → device: into pinned memory, one asynchronous copy, one conversion kernel.
        let in_bytes: Vec<u8> = match &batch.data {
            HostData::U8(v) => v.clone(),
            HostData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let pool = &self.backend.pool;
        let pinned = sub.pinned_in.insert(pool.pinned(in_bytes.len())?);
        pinned.slice(in_bytes.len()).copy_from_slice(&in_bytes);
        let staging_in = base + layout.staging_in as u64;
        // SAFETY: the event belongs to this submission, the stream to the lane.
        cu_check(
            unsafe { cu::cuEventRecord(sub.start.0, lane.stream) },
            "cuEventRecord",
        )?;
        // SAFETY: the pinned buffer holds `in_bytes.len()` bytes and stays untouched until
        // the lane is synchronised; the device range was sized by `Layout`.
        cu_check(
            unsafe {
                cu::cuMemcpyHtoDAsync_v2(
                    staging_in,
                    pinned.ptr as *const c_void,
                    in_bytes.len(),
                    lane.stream,
                )
            },
            "upload",
        )?;
        let (c, cs) = (plan.input_c as i32, plan.input_cs as i32);
        match io.input {
            Some(m) => {
                let map = InMapC {
                    perm: m.perm.map(|p| p as i32),
                    add: m.add,
                    mul: m.mul,
                    div: m.div,
                };
                lane.launch(
                    &kernels::name("input_u8", t),
                    npix_in * plan.input_cs,
                    &[
                        Arg::Ptr(addr(Buf::Input)),
                        Arg::I32(cs),
                        Arg::Ptr(staging_in),
                        Arg::I32(c),
                        Arg::I64(npix_in as i64),
                        Arg::InMap(map),
                    ],
                )?;
            }
            None => lane.launch(
                &kernels::name("input_f32", t),
                npix_in * plan.input_cs,
                &[
                    Arg::Ptr(addr(Buf::Input)),
                    Arg::I32(cs),
                    Arg::Ptr(staging_in),
                    Arg::I32(c),
                    Arg::I64(npix_in as i64),
                ],
            )?,
        }

        for step in &plan.steps {
            self.enqueue_step(
                model, plan, runs, lane, &layout, base, step, &addr, &param, t,
            )?;
        }

        // Device → host.
        let mut out_total = 0usize;
        for (k, o) in plan.outputs.iter().enumerate() {
            if io.output.is_some() && k > 0 {
                break;
            }
            let npix = plan.n * o.h * o.w;
            let dst = base + layout.staging_out[k] as u64;
            match io.output {
                Some(m) => {
                    let map = OutMapC {
                        perm: m.perm.map(|p| p as i32),
                        add: m.add,
                        mul: m.mul,
                    };
                    lane.launch(
                        &kernels::name("output_u8", t),
                        npix * o.c,
                        &[
                            Arg::Ptr(dst),
                            Arg::Ptr(addr(o.buf)),
                            Arg::I32(o.cs as i32),
                            Arg::I32(o.c as i32),
                            Arg::I64(npix as i64),
                            Arg::OutMap(map),
                        ],
                    )?;
                    out_total += npix * o.c;
                }
                None => {
                    lane.launch(
                        &kernels::name("output_f32", t),
                        npix * o.c,
                        &[
                            Arg::Ptr(dst),
                            Arg::Ptr(addr(o.buf)),
                            Arg::I32(o.cs as i32),
                            Arg::I32(o.c as i32),
                            Arg::I64(npix as i64),
                        ],
                    )?;
                    out_total += npix * o.c * 4;
                }
            }
        }
        let pinned = sub.pinned_out.insert(pool.pinned(out_total)?);
        let mut at = 0usize;
        for (k, o) in plan.outputs.iter().enumerate() {
            if io.output.is_some() && k > 0 {
                break;
            }
            let len = plan.n * o.h * o.w * o.c * if io.output.is_some() { 1 } else { 4 };
            // SAFETY: the pinned buffer holds `out_total` bytes; the device range was sized
            // by `Layout`; nothing reads the pinned memory before the event completes.
            cu_check(
                unsafe {
                    cu::cuMemcpyDtoHAsync_v2(
                        pinned.ptr.add(at) as *mut c_void,
                        base + layout.staging_out[k] as u64,
                        len,
                        lane.stream,
                    )
                },
                "download",
            )?;
            at += len;
        }
        // SAFETY: the event belongs to this submission, the stream to the lane.
        cu_check(
            unsafe { cu::cuEventRecord(sub.done.0, lane.stream) },
            "cuEventRecord",
        )?;
        sub.recorded = true;
        Ok(())
    }

    /// Launches `depth_to_space` or `resize`: `geometry` is `[dst_cs, src_cs, h, w,
    /// channels, factor]`.
    #[allow(clippy::too_many_arguments)]
    fn upsample(
        &self,
        lane: &Lane,
        family: &str,
        t: &str,
        n: usize,
        (dst, src): (Buf, Buf),
        geometry: [usize; 6],
        flag: bool,
        addr: &dyn Fn(Buf) -> cu::CUdeviceptr,
    ) -> Result<(), EngineError> {
        let [dst_cs, src_cs, h, w, c, k] = geometry;
        let i = |v: usize| Arg::I32(v as i32);
        lane.launch(
            &kernels::name(family, t),
            n * h * k * w * k * dst_cs,
            &[
                Arg::Ptr(addr(dst)),
                i(dst_cs),
                Arg::Ptr(addr(src)),
                i(src_cs),
                i(n),
                i(h),
                i(w),
                i(c),
                i(k),
                Arg::I32(flag as i32),
            ],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn enqueue_step(
        &self,
        model: &GpuModel,
        plan: &DevicePlan,
        runs: &PlanRuns,
        lane: &Lane,
        layout: &Layout,
        base: cu::CUdeviceptr,
        step: &Step,
        addr: &dyn Fn(Buf) -> cu::CUdeviceptr,
        param: &dyn Fn(usize) -> cu::CUdeviceptr,
        t: &str,
    ) -> Result<(), EngineError> {
        let n = plan.n;
        match step {
            Step::Conv {
                node,
                src,
                dst,
                ih,
                iw,
                pad,
                ..
            } => {
                let d = self.lowered.convs[*node]
                    .as_ref()
                    .ok_or_else(|| EngineError::Device("unlowered convolution".into()))?;
                let x = match pad {
                    Some((ph, pw)) => {
                        let [top, _, left, _] = d.padding;
                        lane.launch(
                            &kernels::name("pad", t),
                            n * ph * pw * d.cin,
                            &[
                                Arg::Ptr(addr(Buf::Pad)),
                                Arg::Ptr(addr(*src)),
                                Arg::I32(d.cin as i32),
                                Arg::I32(n as i32),
                                Arg::I32(*ih as i32),
                                Arg::I32(*iw as i32),
                                Arg::I32(top as i32),
                                Arg::I32(left as i32),
                                Arg::I32(*ph as i32),
                                Arg::I32(*pw as i32),
                            ],
                        )?;
                        addr(Buf::Pad)
                    }
                    None => addr(*src),
                };
                let run = runs
                    .convs
                    .get(node)
                    .ok_or_else(|| EngineError::Device("convolution not planned".into()))?;
                let (one, zero) = (1.0f32, 0.0f32);
                let wptr = model.weights[*node].as_ref().map_or(0, |m| m.ptr);
                // SAFETY: descriptors match the buffers' shapes (same plan); the buffers and
                // workspace lie in the lane's allocation; alpha/beta are host floats, as
                // cuDNN takes for every data type with float compute.
                dnn_check(
                    unsafe {
                        dnn::cudnnConvolutionForward(
                            lane.cudnn,
                            &one as *const f32 as *const c_void,
                            run.x,
                            x as *const c_void,
                            run.w,
                            wptr as *const c_void,
                            run.conv,
                            run.algo,
                            (base + layout.workspace as u64) as *mut c_void,
                            run.workspace,
                            &zero as *const f32 as *const c_void,
                            run.y,
                            addr(*dst) as *mut c_void,
                        )
                    },
                    "convolution",
                )
            }
            Step::Pointwise {
                dst,
                src,
                npix,
                c,
                cs,
                bias,
                act,
                skip,
                residual,
            } => {
                let (alpha, nalpha) = act.alpha.map_or((0, 0), |(id, k)| (param(id), k as i32));
                let (skip_ptr, skip_cs) = skip.map_or((0, 0), |(b, scs)| (addr(b), scs as i32));
                lane.launch(
                    &kernels::name("pointwise", t),
                    npix * cs,
                    &[
                        Arg::Ptr(addr(*dst)),
                        Arg::Ptr(addr(*src)),
                        Arg::I64(*npix as i64),
                        Arg::I32(*c as i32),
                        Arg::I32(*cs as i32),
                        Arg::Ptr(bias.map_or(0, param)),
                        Arg::I32(act.code),
                        Arg::Ptr(alpha),
                        Arg::I32(nalpha),
                        Arg::F32(act.p0),
                        Arg::F32(act.p1),
                        Arg::Ptr(skip_ptr),
                        Arg::I32(skip_cs),
                        Arg::I32(skip.is_some() as i32),
                        Arg::F32(*residual),
                    ],
                )
            }
            Step::Binary {
                dst,
                a,
                npix,
                c,
                cs,
                b,
                op,
            } => {
                let (bptr, bcs, mode, bconst, scalar) = match *b {
                    Operand::Tensor(buf, bcs) => (addr(buf), bcs as i32, 0, 0, 0.0),
                    Operand::PerChannel(id) => (0, 0, 1, param(id), 0.0),
                    Operand::Scalar(s) => (0, 0, 2, 0, s),
                };
                lane.launch(
                    &kernels::name("binary", t),
                    npix * cs,
                    &[
                        Arg::Ptr(addr(*dst)),
                        Arg::Ptr(addr(*a)),
                        Arg::I64(*npix as i64),
                        Arg::I32(*c as i32),
                        Arg::I32(*cs as i32),
                        Arg::Ptr(bptr),
                        Arg::I32(bcs),
                        Arg::I32(mode),
                        Arg::Ptr(bconst),
                        Arg::F32(scalar),
                        Arg::I32(*op),
                    ],
                )
            }
            // Both take (dst, dst_cs, src, src_cs, n, h, w, channels, factor, flag) and write
            // `n · h·k · w·k` pixels.
            Step::DepthToSpace {
                dst,
                dst_cs,
                src,
                src_cs,
                h,
                w,
                oc,
                block,
                crd,
            } => {
                let geometry = [*dst_cs, *src_cs, *h, *w, *oc, *block];
                self.upsample(
                    lane,
                    "depth_to_space",
                    t,
                    n,
                    (*dst, *src),
                    geometry,
                    *crd,
                    addr,
                )
            }
            Step::Resize {
                dst,
                dst_cs,
                src,
                src_cs,
                h,
                w,
                c,
                factor,
                bilinear,
            } => {
                let geometry = [*dst_cs, *src_cs, *h, *w, *c, *factor];
                self.upsample(
                    lane,
                    "resize",
                    t,
                    n,
                    (*dst, *src),
                    geometry,
                    *bilinear,
                    addr,
                )
            }
            Step::Concat {
                dst,
                dst_cs,
                npix,
                parts,
            } => {
                let total: usize = parts.iter().map(|p| p.1).sum();
                let mut off = 0usize;
                for (k, (buf, c, cs)) in parts.iter().enumerate() {
                    let last = k + 1 == parts.len();
                    let span = if last { dst_cs - off } else { *c };
                    lane.launch(
                        &kernels::name("concat", t),
                        npix * span,
                        &[
                            Arg::Ptr(addr(*dst)),
                            Arg::I32(*dst_cs as i32),
                            Arg::I32(off as i32),
                            Arg::I32(total as i32),
                            Arg::Ptr(addr(*buf)),
                            Arg::I32(*cs as i32),
                            Arg::I32(*c as i32),
                            Arg::I64(*npix as i64),
                            Arg::I32(last as i32),
                        ],
                    )?;
                    off += c;
                }
                Ok(())
            }
        }
    }
}

fn ensure_device(lane: &mut Lane, bytes: usize) -> Result<(), EngineError> {
    if lane
        .memory
        .device
        .as_ref()
        .is_some_and(|m| m.bytes >= bytes)
    {
        return Ok(());
    }
    lane.sync()?;
    lane.memory.device = None;
    lane.memory.device = Some(DeviceMem::alloc(bytes, "run buffers")?);
    Ok(())
}

/// `cuEventElapsedTime`, looked up by hand: the 13.0 bindings name only its `_v2`, which
/// drivers before 12.8 lack (a missing symbol would panic inside `cudarc`).
fn elapsed_ms(start: cu::CUevent, end: cu::CUevent, ms: &mut f32) -> bool {
    type F = unsafe extern "C" fn(*mut f32, cu::CUevent, cu::CUevent) -> cu::CUresult;
    // SAFETY: the library is loaded (a lane exists); the symbol has this C signature in
    // every CUDA 12 and 13 driver; both events were recorded and have completed.
    unsafe {
        let lib = cu::culib();
        let f = lib
            .get::<F>(b"cuEventElapsedTime_v2\0")
            .or_else(|_| lib.get::<F>(b"cuEventElapsedTime\0"));
        match f {
            Ok(f) => f(ms, start, end) == cu::CUresult::CUDA_SUCCESS,
            Err(_) => false,
        }
    }
}

/// One submission's own resources: its page-locked transfer buffers and the events that
/// bracket it on the lane's stream. Dropped (waited for or not), it lets the copies
/// finish, returns the buffers to the pool and takes itself off the lane's queue.
struct Submission {
    gpu: Arc<Gpu>,
    pool: Arc<LanePool>,
    lane: usize,
    start: Event,
    done: Event,
    recorded: bool,
    pinned_in: Option<Pinned>,
    pinned_out: Option<Pinned>,
}

// SAFETY: events and pinned buffers are usable from any thread with the context current
// (set before each use); the submission is owned by one `Pending` at a time.
unsafe impl Send for Submission {}

impl Submission {
    fn wait(&self) -> Result<(), EngineError> {
        self.gpu.make_current()?;
        if !self.recorded {
            return Err(EngineError::Device("the run was not enqueued".into()));
        }
        // SAFETY: the event was recorded on the lane's stream.
        cu_check(unsafe { cu::cuEventSynchronize(self.done.0) }, "run")
    }
}

impl Drop for Submission {
    fn drop(&mut self) {
        let _ = self.gpu.make_current();
        // A submission that failed midway was drained by `submit` (the lane's stream
        // synchronised) before it is dropped.
        if self.recorded {
            // SAFETY: as in `wait`; the copies from and into the pinned buffers end here.
            unsafe {
                let _ = cu::cuEventSynchronize(self.done.0);
            }
        }
        for p in [self.pinned_in.take(), self.pinned_out.take()]
            .into_iter()
            .flatten()
        {
            self.pool.give_pinned(p);
        }
        if let Some(slot) = self.pool.lanes.get(self.lane) {
            slot.queued
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Executable for DeviceExecutable {
    fn submit(&self, batch: Batch, io: &Io) -> Result<Pending, EngineError> {
        check_batch(&self.lowered.graph, &batch, io)?;
        let plan = self.plan(batch.n, batch.h, batch.w)?;
        let pool = &self.backend.pool;
        let index = pool.pick();
        let slot = pool
            .lanes
            .get(index)
            .ok_or_else(|| EngineError::Device("no lane".into()))?;
        slot.queued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut lane = slot.lane.lock().unwrap_or_else(|e| e.into_inner());
        let gpu = lane.gpu.clone();
        // From here on the submission's drop takes it off the lane's queue.
        let mut sub = Submission {
            gpu: gpu.clone(),
            pool: pool.clone(),
            lane: index,
            start: Event(std::ptr::null_mut()),
            done: Event(std::ptr::null_mut()),
            recorded: false,
            pinned_in: None,
            pinned_out: None,
        };
        let enqueued = (|| {
            gpu.make_current()?;
            sub.start = Event::new()?;
            sub.done = Event::new()?;
            let model = self
                .models
                .iter()
                .find(|m| Arc::ptr_eq(&m.gpu, &gpu))
                .ok_or_else(|| EngineError::Device("model not on this GPU".into()))?;
            let runs = self.runs(model, &plan, &mut lane)?;
            self.enqueue(model, &plan, &runs, &mut lane, &mut sub, &batch, io)
        })();
        if enqueued.is_err() {
            // Whatever was enqueued finishes before its buffers go back to the pool.
            let _ = lane.sync();
        }
        drop(lane);
        enqueued?;
        let u8_out = io.output.is_some();
        let last_ms = self.last_ms.clone();
        Ok(Pending::later(move || {
            sub.wait()?;
            let mut ms = 0.0f32;
            if elapsed_ms(sub.start.0, sub.done.0, &mut ms) {
                *last_ms.lock().unwrap_or_else(|e| e.into_inner()) = Some(ms as f64);
            }
            let pinned = sub
                .pinned_out
                .as_mut()
                .ok_or_else(|| EngineError::Device("no output buffer".into()))?;
            let mut at = 0usize;
            let mut outs = Vec::new();
            for o in plan
                .outputs
                .iter()
                .take(if u8_out { 1 } else { usize::MAX })
            {
                let count = plan.n * o.h * o.w * o.c;
                let bytes = if u8_out { count } else { count * 4 };
                let src = pinned.slice(at + bytes)[at..].to_vec();
                at += bytes;
                let data = if u8_out {
                    HostData::U8(src)
                } else {
                    HostData::F32(
                        src.chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    )
                };
                outs.push(Batch {
                    n: plan.n,
                    h: o.h,
                    w: o.w,
                    c: o.c,
                    data,
                });
            }
            Ok(outs)
        }))
    }

    fn peak_bytes(&self, h: usize, w: usize, batch: usize) -> Result<u64, EngineError> {
        let plan = DevicePlan::new(&self.lowered, batch.max(1), h, w)?;
        Ok(run_bytes(&plan) as u64)
    }

    fn memory_available(&self) -> Option<u64> {
        // Per GPU: free memory plus what its lanes already hold for runs (theirs to reuse),
        // with a tenth kept back for cuDNN and the driver, shared among its lanes; the
        // tightest GPU decides, since a run may go to any.
        self.models
            .iter()
            .filter_map(|m| {
                let free = m.gpu.free_memory()?;
                let held: u64 = self
                    .backend
                    .pool
                    .lanes
                    .iter()
                    .filter_map(|slot| {
                        let lane = slot.lane.lock().unwrap_or_else(|e| e.into_inner());
                        Arc::ptr_eq(&lane.gpu, &m.gpu)
                            .then(|| lane.memory.device.as_ref().map_or(0, |d| d.bytes as u64))
                    })
                    .sum();
                Some((free + held) / 10 * 9 / self.backend.lanes_per_device.max(1) as u64)
            })
            .min()
    }

    fn preferred_batch(&self, h: usize, w: usize) -> usize {
        // Enough pixels per submission to fill the GPU: about a megapixel of input for
        // light networks; deep ones fill it at any size, so one image each.
        let pixels = (h * w).max(1);
        ((1 << 20) / pixels).clamp(1, 32)
    }

    fn lanes(&self) -> usize {
        // Two runs per lane keep each stream fed: one computing, the next enqueued.
        2 * self.backend.pool.lanes.len()
    }

    fn last_device_ms(&self) -> Option<f64> {
        *self.last_ms.lock().unwrap_or_else(|e| e.into_inner())
    }
}
