//! The backend and its executables on GPUs.
//!
//! A model is uploaded once per GPU (weights in the storage type, the parameter table in
//! `f32`); each run size gets its device plan ([`super::dplan`]) and, per GPU, its cuDNN
//! descriptors and the algorithms `cudnnFindConvolutionForwardAlgorithmEx` found for them.
//! A submission goes to the least busy lane ([`super::gpu`]) and owns its page-locked
//! transfer buffers and the two events that bracket it on the lane's stream: `submit`
//! enqueues the upload, every step and the download and returns; `wait` syncs the second
//! event, reads the outputs and the device time. Dropping a submission without waiting lets
//! it finish and frees what it holds.
//!
//! Every raw handle lives in a struct that owns it; the unsafe blocks are the FFI calls,
//! each with the invariant that makes it sound.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::cudnn::sys as dnn;
use cudarc::driver::sys as cu;
use superres_graph::{Graph, ResizeMode};

use super::dplan::{Buf, DevicePlan, Lowered, Operand, SE_SLICES, SeScratch, Step};
use super::gpu::{Arg, Gpu, InMapC, Lane, LanePool, LaneSlot, OutMapC, ty};
use super::handles::{DeviceMem, Event, Pinned, cu_check, dnn_check, elapsed_ms};
use super::kernels;
use super::{CudaOptions, Devices, GpuInfo, Report, Unavailable, nvml};
use crate::{
    Batch, DeviceStatus, EngineError, Executable, HostData, Io, Pending, Precision, check_batch,
};

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
            plans_made: AtomicU64::new(0),
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
    /// Plans made, cached or not.
    plans_made: AtomicU64,
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
        self.plans_made.fetch_add(1, Ordering::Relaxed);
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
        let in_len = match &batch.data {
            HostData::U8(v) => v.len(),
            HostData::F32(v) => v.len() * 4,
        };
        let pool = &self.backend.pool;
        let pinned = sub.pinned_in.insert(pool.pinned(in_len)?);
        // Straight into page-locked memory: one host copy.
        let dst = pinned.slice(in_len);
        match &batch.data {
            HostData::U8(v) => dst.copy_from_slice(v),
            HostData::F32(v) => {
                for (d, x) in dst.chunks_exact_mut(4).zip(v) {
                    d.copy_from_slice(&x.to_le_bytes());
                }
            }
        }
        let staging_in = base + layout.staging_in as u64;
        // SAFETY: the event belongs to this submission, the stream to the lane.
        cu_check(
            unsafe { cu::cuEventRecord(sub.start.0, lane.stream) },
            "cuEventRecord",
        )?;
        // SAFETY: the pinned buffer holds `in_len` bytes and stays untouched until
        // the lane is synchronised; the device range was sized by `Layout`.
        cu_check(
            unsafe {
                cu::cuMemcpyHtoDAsync_v2(
                    staging_in,
                    pinned.ptr as *const c_void,
                    in_len,
                    lane.stream,
                )
            },
            "upload",
        )?;
        let (c, cs) = (plan.input_c as i32, plan.input_cs as i32);
        // Both kernels take (dst, cs, src, c, npix); the 8-bit one also its map.
        let mut args = vec![
            Arg::Ptr(addr(Buf::Input)),
            Arg::I32(cs),
            Arg::Ptr(staging_in),
            Arg::I32(c),
            Arg::I64(npix_in as i64),
        ];
        let family = match io.input {
            Some(m) => {
                args.push(Arg::InMap(InMapC {
                    perm: m.perm.map(|p| p as i32),
                    add: m.add,
                    mul: m.mul,
                    div: m.div,
                }));
                "input_u8"
            }
            None => "input_f32",
        };
        lane.launch(&kernels::name(family, t), npix_in * plan.input_cs, &args)?;

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
            // Both kernels take (dst, src, cs, c, npix); the 8-bit one also its map.
            let mut args = vec![
                Arg::Ptr(dst),
                Arg::Ptr(addr(o.buf)),
                Arg::I32(o.cs as i32),
                Arg::I32(o.c as i32),
                Arg::I64(npix as i64),
            ];
            let family = match io.output {
                Some(m) => {
                    args.push(Arg::OutMap(OutMapC {
                        perm: m.perm.map(|p| p as i32),
                        add: m.add,
                        mul: m.mul,
                    }));
                    out_total += npix * o.c;
                    "output_u8"
                }
                None => {
                    out_total += npix * o.c * 4;
                    "output_f32"
                }
            };
            lane.launch(&kernels::name(family, t), npix * o.c, &args)?;
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

    /// Launches `depth_to_space`: `geometry` is `[dst_cs, src_cs, h, w, channels, block]`.
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
                mode,
            } => {
                let i = |v: usize| Arg::I32(v as i32);
                let d = mode.down();
                let kind = match mode {
                    ResizeMode::Nearest => 0,
                    ResizeMode::Bilinear => 1,
                    ResizeMode::Bicubic { .. } => 2,
                };
                lane.launch(
                    &kernels::name("resize", t),
                    n * (h * factor / d) * (w * factor / d) * dst_cs,
                    &[
                        Arg::Ptr(addr(*dst)),
                        i(*dst_cs),
                        Arg::Ptr(addr(*src)),
                        i(*src_cs),
                        i(n),
                        i(*h),
                        i(*w),
                        i(*c),
                        i(*factor),
                        i(d),
                        Arg::I32(kind),
                    ],
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
            Step::Border {
                dst,
                src,
                cs,
                h,
                w,
                oh,
                ow,
                top,
                left,
            } => {
                let i = |v: usize| Arg::I32(v as i32);
                lane.launch(
                    &kernels::name("border", t),
                    n * oh * ow * cs,
                    &[
                        Arg::Ptr(addr(*dst)),
                        Arg::Ptr(addr(*src)),
                        i(*cs),
                        i(n),
                        i(*h),
                        i(*w),
                        Arg::I32(*top as i32),
                        Arg::I32(*left as i32),
                        i(*oh),
                        i(*ow),
                    ],
                )
            }
            Step::SqueezeExcite {
                node,
                dst,
                src,
                hw,
                c,
                cs,
            } => {
                let layers = self.lowered.ses[*node]
                    .as_ref()
                    .ok_or_else(|| EngineError::Device("unlowered squeeze-excitation".into()))?;
                let i = |v: usize| Arg::I32(v as i32);
                let scratch = SeScratch::new(n, *cs, *c, layers);
                let part = addr(Buf::Pad);
                let means = part + scratch.means as u64;
                let ping = scratch.ping.map(|o| part + o as u64);
                lane.launch(
                    &kernels::name("se_sum", t),
                    n * SE_SLICES * cs,
                    &[
                        Arg::Ptr(part),
                        Arg::Ptr(addr(*src)),
                        i(*cs),
                        i(n),
                        Arg::I64(*hw as i64),
                        i(SE_SLICES),
                    ],
                )?;
                lane.launch(
                    &kernels::name("se_mean", t),
                    n * c,
                    &[
                        Arg::Ptr(means),
                        Arg::Ptr(part),
                        i(*c),
                        i(*cs),
                        i(n),
                        Arg::I64(*hw as i64),
                        i(SE_SLICES),
                    ],
                )?;
                let mut v = means;
                for (k, d) in layers.iter().enumerate() {
                    let out = ping[k % 2];
                    let (alpha, nalpha) =
                        d.act.alpha.map_or((0, 0), |(id, m)| (param(id), m as i32));
                    lane.launch(
                        &kernels::name("se_dense", t),
                        n * d.cout,
                        &[
                            Arg::Ptr(out),
                            Arg::Ptr(v),
                            i(n),
                            i(d.cin),
                            i(d.cout),
                            Arg::Ptr(param(d.weights)),
                            Arg::Ptr(d.bias.map_or(0, param)),
                            Arg::I32(d.act.code),
                            Arg::Ptr(alpha),
                            Arg::I32(nalpha),
                            Arg::F32(d.act.p0),
                            Arg::F32(d.act.p1),
                        ],
                    )?;
                    v = out;
                }
                lane.launch(
                    &kernels::name("se_scale", t),
                    n * hw * cs,
                    &[
                        Arg::Ptr(addr(*dst)),
                        Arg::Ptr(addr(*src)),
                        Arg::Ptr(v),
                        i(*c),
                        i(*cs),
                        i(n),
                        Arg::I64(*hw as i64),
                    ],
                )
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
                let src = &pinned.slice(at + bytes)[at..];
                at += bytes;
                let data = if u8_out {
                    HostData::U8(src.to_vec())
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

    fn plans_made(&self) -> Option<u64> {
        Some(self.plans_made.load(Ordering::Relaxed))
    }
}
