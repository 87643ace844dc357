//! The CPU backend: NHWC `f32`, SIMD kernels chosen at run time, rayon.
//!
//! # Where the time goes, and why the kernels are written here
//! A super-resolution network is almost entirely 3×3 convolutions (EDSR ×3: 66 of its 68
//! convolutions are 256→256 3×3, 76.8 MFLOP per input pixel), followed by a handful of cheap
//! memory-bound operators. No crate offers what that needs: a Winograd convolution over NHWC
//! `f32` images with the bias, activation and residual fused into its output transform. A
//! general GEMM (the `gemm` crate reaches about 204 GFLOP/s on this machine's two Zen 4
//! cores, 87% of the 235 GFLOP/s peak) cannot beat OpenCV, whose Winograd F(6,3) does 5×
//! fewer multiplications than any direct convolution; and im2col would add 9× the activation
//! traffic. So the kernels are hand-written, in three layers:
//!
//! - `gemm`: register-blocked micro-kernels, `mr` rows × `np` panels of 16 output channels
//!   (AVX-512: 12×32 or 14×16 accumulators in `zmm` registers; AVX2+FMA: 6×16; a portable
//!   twin with the same blocking). Chosen once with `is_x86_feature_detected!`.
//! - `conv`: the direct convolution as an implicit GEMM over a zero-padded row band (every
//!   kernel row is one contiguous reduction run), for 1×1, 4×4, 5×5, strided, dilated,
//!   grouped and small-channel convolutions, with the epilogue applied as each register block
//!   is stored.
//! - `pixconv`: the direct convolution vectorised over 16 output pixels instead of 16
//!   output channels, for at most 12 output channels (ESPCN's 32→9, LapSRN's 64→4), where
//!   the channel-vectorised kernel would leave most lanes idle.
//! - `winograd`: F(6×6, 3×3) (from 32 channels) and F(4×4, 3×3) (16 to 31) for 3×3
//!   stride-1 convolutions: input transform into packed panels, 64 or 36 transform-domain
//!   products with the same micro-kernels, output transform fused with the epilogue, in tile
//!   blocks sized so the working set stays in cache whatever the image size.
//!
//! # Execution
//! [`Backend::prepare`] packs every convolution's weights once. The first `run` of an input
//! size plans it: the shape of every value, and a buffer ("slot") for each, assigned with a
//! free list in topological order so that a slot is reused as soon as its value's last user
//! has run; element-wise operators and residual convolutions run in place over an input that
//! dies there, so EDSR's residual trunk cycles through three buffers. Peak memory is the live
//! set, not the sum of all activations. Plans for the last few sizes are cached; each run
//! takes an arena (the slots' memory) from the plan's pool and gives it back, so concurrent
//! runs never share buffers and repeated runs allocate nothing.
//!
//! A channel concatenation that only Winograd convolutions read is never made: its readers
//! take it part by part where the parts are (`plan::Loc::Parts`; the input transform reads
//! each 16-channel group from its own part), and the planner keeps the parts live until the
//! last reader has run. RRDBNet's dense blocks, whose every convolution reads the block's
//! input and all earlier outputs, so copy nothing and hold no 96- to 192-channel copies.
//!
//! A network whose upsampling tail needs more memory than its body (RRDBNet ×4, EDSR) is
//! cut where the tail begins ([`superres_graph::Graph::tail_cuts`]): the body runs on the
//! whole input, the tail on bands of rows with margins of its own small receptive field
//! ([`Banded`]). A run's peak is then the body's, and `peak_bytes` says so, so the pipeline
//! sizes tiles several times larger for the same budget.
//!
//! [`reference`](mod@reference) stays the plain definition every kernel is tested against.

// The kernels are private to the crate: they take raw pointers and run instruction sets
// that exist only where detection found them, so safe code outside could reach undefined
// behaviour through them. An `Isa` reaches them only through `CpuBackend`, which checks it.
pub(crate) mod conv;
mod epilogue;
pub(crate) mod gemm;
mod kernel;
mod math;
pub mod ops;
pub(crate) mod pixconv;
pub mod reference;
pub(crate) mod winograd;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use superres_graph::{
    Activation, BinaryOp, Border, DepthToSpaceMode, Graph, Op, ResizeMode, SqueezeExcite, Tensor,
    UnaryOp,
};

pub use conv::ConvAlgo;
pub use gemm::Isa;
pub use math::tanh;

use crate::plan::{self, InPlace, Loc};
use crate::{
    Backend, Batch, EngineError, Executable, HostData, Io, Pending, check_batch, check_input,
};
use conv::{ConvKernel, Skip};

/// Options of the CPU backend beyond the defaults of [`CpuBackend::new`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuOptions {
    /// Worker threads of a pool owned by the backend; `None` uses rayon's global pool.
    pub threads: Option<usize>,
    /// Force an instruction set (tests and benchmarks); `None` picks the widest available.
    pub isa: Option<Isa>,
    /// How convolutions are computed.
    pub conv: ConvAlgo,
}

/// Runs graphs on the CPU.
#[derive(Clone)]
pub struct CpuBackend {
    isa: Isa,
    conv: ConvAlgo,
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// The widest instruction set of this processor, on rayon's global pool.
    pub fn new() -> Self {
        CpuBackend {
            isa: Isa::detect(),
            conv: ConvAlgo::Auto,
            pool: None,
        }
    }

    /// Like [`CpuBackend::new`] with its own pool of `threads` workers (rayon's global pool
    /// if such a pool cannot be created).
    pub fn with_threads(threads: usize) -> Self {
        Self::with_options(CpuOptions {
            threads: Some(threads),
            ..CpuOptions::default()
        })
        .unwrap_or_else(|_| Self::new())
    }

    /// A backend with explicit options; fails if the instruction set is not supported here or
    /// the thread pool cannot be created.
    pub fn with_options(options: CpuOptions) -> Result<Self, EngineError> {
        let isa = options.isa.unwrap_or_else(Isa::detect);
        if !isa.is_supported() {
            return Err(EngineError::Unsupported {
                backend: "cpu",
                message: format!("this processor does not support {}", isa.name()),
            });
        }
        let pool = match options.threads {
            None => None,
            Some(n) => Some(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .thread_name(|i| format!("superres-cpu-{i}"))
                    .build()
                    .map_err(|e| EngineError::Unsupported {
                        backend: "cpu",
                        message: format!("cannot start {n} threads: {e}"),
                    })?,
            )),
        };
        Ok(CpuBackend {
            isa,
            conv: options.conv,
            pool,
        })
    }

    /// The instruction set the kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or_else(rayon::current_num_threads, |p| p.current_num_threads())
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({}, {} threads)", self.isa.name(), self.threads())
    }

    /// One device, `cpu`, named by its instruction set and threads; host memory and load
    /// are not a device's, so they are left unknown.
    fn status(&self) -> Vec<crate::DeviceStatus> {
        vec![crate::DeviceStatus {
            id: "cpu".into(),
            name: format!("{}, {} threads", self.isa.name(), self.threads()),
            ..crate::DeviceStatus::default()
        }]
    }

    fn prepare(&self, graph: &Graph) -> Result<Arc<dyn Executable>, EngineError> {
        let unsupported = |message: String| EngineError::Unsupported {
            backend: "cpu",
            message,
        };
        graph.validate().map_err(|e| unsupported(e.to_string()))?;
        if graph.input_id().is_none() {
            return Err(unsupported(
                "the graph needs exactly one image input".into(),
            ));
        }
        Ok(Arc::new(self.executable(graph)))
    }
}

impl CpuBackend {
    /// The executable of `graph`: its tail in bands of rows when that takes less memory
    /// ([`Banded`]), else the whole graph in one plan.
    fn executable(&self, graph: &Graph) -> CpuExecutable {
        for cut in graph.tail_cuts().into_iter().take(4) {
            let Some((head, tail)) = graph.split_at(cut) else {
                continue;
            };
            // Topology only: every concatenation copied, so the head's arena is an upper
            // bound (RRDBNet's body holds a quarter less when its dense blocks read parts).
            let arena =
                |g: &Graph| cpu_plan(g, BAND_PROBE, BAND_PROBE, &[]).map(|p| p.arena_elements());
            let (Ok(ha), Ok(ta)) = (arena(&head), arena(&tail)) else {
                continue;
            };
            let factor = tail
                .outputs
                .first()
                .and_then(|(_, v)| tail.scale_factor(*v));
            // The cut value has the input's size, and bands of its rows map to `factor`
            // times as many output rows (no edge replication or crop in the tail).
            let size = |g: &Graph, h: usize, w: usize| {
                let s = g.shapes(h, w).ok()?;
                let (a, b, _) = s[g.outputs.first()?.1.0];
                Some((a, b))
            };
            let (p, q) = (BAND_PROBE, BAND_PROBE + 1);
            let exact = factor.is_some_and(|f| {
                size(&head, p, q) == Some((p, q))
                    && size(&tail, p, q) == Some((f * p, f * q))
                    && size(&tail, q, p) == Some((f * q, f * p))
            });
            if let (true, true, Some(factor)) = (exact, ta > ha, factor) {
                let margin = tail.receptive_field().margin();
                let mut exe = self.whole(graph, false);
                exe.banded = Some(Box::new(Banded {
                    head: self.whole(&head, true),
                    tail: self.whole(&tail, true),
                    margin,
                    factor,
                }));
                return exe;
            }
        }
        self.whole(graph, true)
    }

    /// One plan for the whole graph; without `kernels`, only its topology (for checks).
    fn whole(&self, graph: &Graph, kernels: bool) -> CpuExecutable {
        let steps: Vec<Step> = if kernels {
            graph.nodes.iter().map(|n| self.step(&n.op)).collect()
        } else {
            Vec::new()
        };
        CpuExecutable {
            gathered: gathered(graph, &steps),
            graph: graph.without_weights(),
            steps,
            pool: self.pool.clone(),
            plans: Mutex::new(Vec::new()),
            plans_made: AtomicU64::new(0),
            banded: None,
        }
    }

    fn step(&self, op: &Op) -> Step {
        match op {
            Op::Input { .. } => Step::Input,
            Op::Const(t) => Step::Const(t.clone()),
            Op::Conv2d(c) => Step::Conv(Box::new(ConvKernel::new(c, self.isa, self.conv))),
            Op::Binary(op) => Step::Binary(*op),
            Op::Unary(op) => Step::Unary(*op),
            Op::Activation(a) => Step::Activation(a.clone()),
            Op::DepthToSpace { block, mode } => Step::DepthToSpace(*block, *mode),
            Op::Resize { factor, mode } => Step::Resize(*factor, *mode),
            Op::Concat => Step::Concat,
            Op::Border(b) => Step::Border(*b),
            Op::SqueezeExcite(se) => Step::SqueezeExcite(se.clone()),
        }
    }
}

/// The buffer plan of the CPU backend for an `h × w` run: element-wise operators in place
/// over an input that dies there, residual convolutions over their skip tensor, whose
/// values the epilogue reads before it stores over them, and the concatenations `gathered`
/// flags read in parts.
fn cpu_plan(
    graph: &Graph,
    h: usize,
    w: usize,
    gathered: &[bool],
) -> Result<plan::Plan, EngineError> {
    plan::plan(
        graph,
        h,
        w,
        |_, node| match &node.op {
            Op::Conv2d(c) if c.epilogue.residual.is_some() => InPlace::Skip,
            _ => plan::elementwise_in_place(node),
        },
        |(a, b, c)| a * b * c,
        |i, _| gathered.get(i).copied().unwrap_or(false),
    )
}

/// The concatenations whose readers all take them in parts where they are
/// ([`ConvKernel::reads_parts`]: RRDBNet's dense blocks, whose every convolution reads the
/// block's input and all earlier outputs): they get no buffer and are never copied, which
/// saves a copy of up to 192 channels per convolution (9% of RRDBNet's time at 64×64) and
/// the largest value of each block. Concatenations of concatenations keep their buffers.
fn gathered(graph: &Graph, steps: &[Step]) -> Vec<bool> {
    let users = graph.users();
    graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let flat = node
                .inputs
                .iter()
                .all(|v| !matches!(graph.node(*v).op, Op::Concat));
            let channels: Vec<usize> = node.inputs.iter().map(|v| graph.channels(*v)).collect();
            matches!(node.op, Op::Concat)
                && flat
                && !users[i].is_empty()
                && users[i].iter().all(|u| {
                    let reader = graph.nodes.get(u.0);
                    match (steps.get(u.0), reader) {
                        (Some(Step::Conv(k)), Some(r)) => {
                            r.inputs[0].0 == i
                                && r.inputs[1..].iter().all(|v| v.0 != i)
                                && k.reads_parts(&channels)
                        }
                        _ => false,
                    }
                })
        })
        .collect()
}

/// The side of the run at which [`CpuBackend::executable`] compares a head's and a tail's
/// memory per pixel.
const BAND_PROBE: usize = 64;

/// Rows a band's run starts on: a multiple of both Winograd tiles (4 and 6 rows), so every
/// band's transforms fall where the whole run's do. The result is the whole run's to `f32`
/// rounding (about 3e-8 of the largest output: the product kernels group tiles into panels
/// by their position in the run, and a band's panels are not the whole run's).
const BAND_ALIGN: usize = 12;

/// A network whose upsampling tail takes more memory than its body (RRDBNet ×4: 64 channels
/// at 16 times the pixels; EDSR: a 576-channel convolution before its pixel shuffle): the
/// body runs on the whole input, and the tail on bands of the cut value's rows with margins
/// of its receptive field, so a run's peak is the body's and tiles can be that much larger.
struct Banded {
    head: CpuExecutable,
    tail: CpuExecutable,
    /// The tail's receptive field, in rows of the cut value.
    margin: usize,
    /// The tail's upscaling factor.
    factor: usize,
}

/// One band: rows `run.0..run.1` of the cut value go through the tail, and the tail's rows
/// for `keep.0..keep.1` are kept.
struct Band {
    run: (usize, usize),
    keep: (usize, usize),
}

impl Banded {
    /// Core rows per band for an `h × w` cut value: the largest multiple of [`BAND_ALIGN`]
    /// whose tail run takes at most a quarter of the head's arena (at least 2 MiB), and more
    /// than the margin.
    fn band_rows(&self, h: usize, w: usize, head_arena: usize) -> usize {
        let target = (head_arena / 4).max(1 << 19);
        let floor = (self.margin + 1).div_ceil(BAND_ALIGN).max(1);
        let top = h.div_ceil(BAND_ALIGN).max(floor);
        let fits = |k: usize| {
            let rows = (k * BAND_ALIGN + 2 * self.margin).min(h);
            self.tail
                .make_plan(rows, w)
                .is_ok_and(|p| p.arena_elements() <= target)
        };
        let (mut lo, mut hi) = (floor, top);
        if !fits(lo) {
            return lo * BAND_ALIGN;
        }
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid) { lo = mid } else { hi = mid - 1 }
        }
        lo * BAND_ALIGN
    }

    /// The bands of `h` rows with `b` core rows each: runs start at multiples of `b` (so of
    /// [`BAND_ALIGN`]) and carry the margin above and below their cores.
    fn bands(&self, h: usize, b: usize) -> Vec<Band> {
        let m = self.margin;
        let mut out = Vec::new();
        let mut j = 0;
        loop {
            let start = j * b;
            let core0 = if j == 0 { 0 } else { start + m };
            if core0 >= h {
                break;
            }
            let core1 = ((j + 1) * b + m).min(h);
            out.push(Band {
                run: (start, (core1 + m).min(h)),
                keep: (core0, core1),
            });
            j += 1;
        }
        out
    }

    /// Elements of one run at its peak: the head's arena, the cut value, and the largest
    /// band's input, arena and output.
    fn peak_elements(&self, h: usize, w: usize) -> Result<usize, EngineError> {
        let head = self.head.make_plan(h, w)?;
        let cut = head.len(self.head.graph.outputs[0].1.0);
        let c = cut / (h * w).max(1);
        let b = self.band_rows(h, w, head.arena_elements());
        let rows = self
            .bands(h, b)
            .iter()
            .map(|x| x.run.1 - x.run.0)
            .max()
            .unwrap_or(0);
        let tail = self.tail.make_plan(rows, w)?;
        let out: usize = self
            .tail
            .graph
            .outputs
            .iter()
            .map(|(_, v)| tail.len(v.0))
            .sum();
        Ok(head.arena_elements() + cut + rows * w * c + tail.arena_elements() + out)
    }

    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, EngineError> {
        let cut = self.head.run_here(input)?.swap_remove(0);
        let (h, w, c) = cut.hwc().unwrap_or((0, 0, 0));
        let head_arena = self.head.plan(h, w)?.arena_elements();
        let f = self.factor;
        let mut out: Option<(Vec<f32>, usize)> = None;
        for band in self.bands(h, self.band_rows(h, w, head_arena)) {
            let (r0, r1) = band.run;
            let rows = Tensor::image(r1 - r0, w, c, cut.data()[r0 * w * c..r1 * w * c].to_vec());
            let got = self.tail.run_here(&rows)?.swap_remove(0);
            let (_, gw, gc) = got.hwc().unwrap_or((0, 0, 0));
            let (data, _) = out.get_or_insert_with(|| (vec![0.0; h * f * gw * gc], gc));
            let row = gw * gc;
            let (k0, k1) = ((band.keep.0 - r0) * f, (band.keep.1 - r0) * f);
            data[band.keep.0 * f * row..band.keep.1 * f * row]
                .copy_from_slice(&got.data()[k0 * row..k1 * row]);
        }
        let (data, gc) = out.unwrap_or_default();
        Ok(vec![Tensor::image(h * f, w * f, gc, data)])
    }
}

/// A node prepared for execution.
enum Step {
    Input,
    Const(Tensor),
    Conv(Box<ConvKernel>),
    Binary(BinaryOp),
    Unary(UnaryOp),
    Activation(Activation),
    DepthToSpace(usize, DepthToSpaceMode),
    Resize(usize, ResizeMode),
    Concat,
    Border(Border),
    SqueezeExcite(SqueezeExcite),
}

/// The shared buffer plan of one input size, with the arenas of finished runs.
struct Plan {
    plan: plan::Plan,
    /// Arenas not in use by a run.
    arenas: Mutex<Vec<Vec<Vec<f32>>>>,
}

impl std::ops::Deref for Plan {
    type Target = plan::Plan;

    fn deref(&self) -> &plan::Plan {
        &self.plan
    }
}

/// Sizes planned at most; older plans are dropped.
const PLAN_CACHE: usize = 4;

struct CpuExecutable {
    /// The topology (weights left out: `steps` holds them, packed).
    graph: Graph,
    steps: Vec<Step>,
    /// The concatenations read in parts ([`gathered`]); empty without kernels.
    gathered: Vec<bool>,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Most recently used first.
    plans: Mutex<Vec<Arc<Plan>>>,
    /// Plans made for runs (not for `peak_bytes`), cached or not.
    plans_made: AtomicU64,
    /// Set when the tail runs in bands: then the steps above are empty and this runs.
    banded: Option<Box<Banded>>,
}

impl Executable for CpuExecutable {
    fn submit(&self, batch: Batch, io: &Io) -> Result<Pending, EngineError> {
        check_batch(&self.graph, &batch, io)?;
        let result = match &self.pool {
            Some(pool) => pool.install(|| self.run_batch(&batch, io)),
            None => self.run_batch(&batch, io),
        };
        Ok(Pending::ready(result))
    }

    /// The arena of one image (images of a batch run one after another, each on every
    /// core), the batch's input and outputs, and the largest layer's transformed Winograd
    /// weights (which a large run makes for itself). The kernels' per-thread scratch (Winograd's
    /// transformed tiles, packed row bands) is sized to stay in cache, a few MiB per thread
    /// whatever the tile, so it is not a tile's cost and is left out. Planned without
    /// caching: a tile-size search must not evict the plans (and arenas) in use.
    fn peak_bytes(&self, h: usize, w: usize, batch: usize) -> Result<u64, EngineError> {
        if let Some(b) = &self.banded {
            let input = (h * w * self.graph.input_channels().unwrap_or(0)) as u64;
            let output = self.graph.shapes(h, w).map_or(0, |s| {
                let (a, bb, c) = s[self.graph.outputs[0].1.0];
                (a * bb * c) as u64
            });
            let values = b.peak_elements(h, w)? as u64 + batch.max(1) as u64 * (input + output);
            let weights = b.head.transient_weights().max(b.tail.transient_weights());
            return Ok(4 * (values + weights as u64));
        }
        let plan = self.make_plan(h, w)?;
        let input = plan.len(self.graph.input_id().map_or(0, |v| v.0)) as u64;
        let outputs: u64 = self
            .graph
            .outputs
            .iter()
            .map(|(_, v)| plan.len(v.0) as u64)
            .sum();
        let values = plan.arena_elements() as u64 + batch.max(1) as u64 * (input + outputs);
        Ok(4 * (values + self.transient_weights() as u64))
    }

    fn plans_made(&self) -> Option<u64> {
        let own = self.plans_made.load(Ordering::Relaxed);
        Some(self.banded.as_ref().map_or(own, |b| {
            own + b.head.plans_made.load(Ordering::Relaxed)
                + b.tail.plans_made.load(Ordering::Relaxed)
        }))
    }
}

impl CpuExecutable {
    /// Floats of the largest layer's transformed Winograd weights: what a large run that
    /// transforms them for itself holds at once (see `winograd`'s module docs).
    fn transient_weights(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Conv(k) => match &k.algo {
                    conv::Algo::Winograd(w) => w.transformed_len(),
                    _ => 0,
                },
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    fn plan(&self, h: usize, w: usize) -> Result<Arc<Plan>, EngineError> {
        {
            let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = plans.iter().position(|p| p.h == h && p.w == w) {
                let p = plans.remove(i);
                plans.insert(0, p.clone());
                return Ok(p);
            }
        }
        let plan = Arc::new(self.make_plan(h, w)?);
        self.plans_made.fetch_add(1, Ordering::Relaxed);
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        plans.insert(0, plan.clone());
        plans.truncate(PLAN_CACHE);
        Ok(plan)
    }

    /// The buffer plan ([`cpu_plan`]) of an `h × w` run, with its pool of arenas.
    fn make_plan(&self, h: usize, w: usize) -> Result<Plan, EngineError> {
        let plan = cpu_plan(&self.graph, h, w, &self.gathered)?;
        Ok(Plan {
            plan,
            arenas: Mutex::new(Vec::new()),
        })
    }

    fn run_batch(&self, batch: &Batch, io: &Io) -> Result<Vec<Batch>, EngineError> {
        let n = batch.image_len();
        let mut outputs: Vec<Option<Batch>> = vec![None; self.graph.outputs.len()];
        let mut input = vec![0.0f32; n];
        for i in 0..batch.n {
            match (&batch.data, io.input) {
                (HostData::F32(v), _) => input.copy_from_slice(&v[i * n..][..n]),
                (HostData::U8(v), Some(map)) => map.convert(&v[i * n..][..n], batch.c, &mut input),
                (HostData::U8(_), None) => unreachable!("checked by check_batch"),
            }
            let tensor = Tensor::image(batch.h, batch.w, batch.c, std::mem::take(&mut input));
            let outs = self.run_here(&tensor)?;
            input = tensor.into_data();
            for (k, t) in outs.into_iter().enumerate() {
                if io.output.is_some() && k > 0 {
                    break;
                }
                let (h, w, c) = t.hwc().unwrap_or((0, 0, 0));
                if batch.n == 1 && io.output.is_none() {
                    // The only image's values: moved, not copied.
                    outputs[k] = Some(Batch {
                        n: 1,
                        h,
                        w,
                        c,
                        data: HostData::F32(t.into_data()),
                    });
                    continue;
                }
                let slot = outputs[k].get_or_insert_with(|| Batch {
                    n: batch.n,
                    h,
                    w,
                    c,
                    data: match io.output {
                        Some(_) => HostData::U8(Vec::with_capacity(batch.n * h * w * c)),
                        None => HostData::F32(Vec::with_capacity(batch.n * h * w * c)),
                    },
                });
                match (&mut slot.data, io.output) {
                    (HostData::U8(o), Some(map)) => {
                        let start = o.len();
                        o.resize(start + t.len(), 0);
                        map.convert(t.data(), c, &mut o[start..]);
                    }
                    (HostData::F32(o), _) => o.extend_from_slice(t.data()),
                    _ => unreachable!("allocated for the output map"),
                }
            }
        }
        Ok(outputs.into_iter().flatten().collect())
    }

    fn run_here(&self, input: &Tensor) -> Result<Vec<Tensor>, EngineError> {
        let (h, w) = check_input(&self.graph, input)?;
        if let Some(b) = &self.banded {
            return b.run(input);
        }
        let plan = self.plan(h, w)?;
        let mut arena = plan
            .arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| plan.slot_sizes.iter().map(|&n| vec![0.0f32; n]).collect());
        let outputs = self.execute(&plan, input, &mut arena);
        plan.arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(arena);
        Ok(outputs)
    }

    fn execute(&self, plan: &Plan, input: &Tensor, arena: &mut [Vec<f32>]) -> Vec<Tensor> {
        let g = &self.graph;
        let len = |v: usize| {
            let (a, b, c) = plan.shapes[v];
            a * b * c
        };
        let profile = std::env::var_os("SUPERRES_CPU_PROFILE").is_some();
        for (i, node) in g.nodes.iter().enumerate() {
            let Loc::Slot(slot) = plan.loc[i] else {
                continue;
            };
            let t0 = profile.then(std::time::Instant::now);
            let mut buf = std::mem::take(&mut arena[slot]);
            {
                let arena = &*arena;
                let val = |v: usize| -> &[f32] {
                    match plan.loc[v] {
                        Loc::Input => input.data(),
                        Loc::Const => match &self.steps[v] {
                            Step::Const(t) => t.data(),
                            _ => &[],
                        },
                        Loc::Slot(s) => &arena[s][..len(v)],
                        // Read through `plan.parts` by its readers, never as one value.
                        Loc::Parts => &[],
                    }
                };
                let arg = |k: usize| val(node.inputs[k].0);
                let out = &mut buf[..len(i)];
                let (oh, ow, oc) = plan.shapes[i];
                let (ih, iw, ic) = plan.shapes[node.inputs.first().map_or(i, |v| v.0)];
                let src = |k: usize| (!plan.in_place[i]).then(|| arg(k));
                match &self.steps[i] {
                    Step::Input | Step::Const(_) => {}
                    Step::Conv(k) => {
                        let skip = if k.epilogue.residual.is_none() {
                            Skip::None
                        } else if plan.in_place[i] {
                            Skip::InOutput
                        } else {
                            Skip::Tensor(arg(1))
                        };
                        let x = node.inputs[0].0;
                        if plan.loc[x] == Loc::Parts {
                            let parts: Vec<(&[f32], usize)> = plan.parts[x]
                                .iter()
                                .map(|&p| (val(p), plan.shapes[p].2))
                                .collect();
                            k.run_parts(&parts, ih, iw, out, oh, ow, skip);
                        } else {
                            k.run(arg(0), ih, iw, out, oh, ow, skip);
                        }
                    }
                    Step::Unary(op) => ops::unary(*op, out, src(0), oc),
                    Step::Activation(a) => ops::activation(a, out, src(0), oc),
                    Step::Binary(op) => {
                        let b = node.inputs[1].0;
                        let operand = match (&self.steps[b], plan.loc[b]) {
                            (Step::Const(t), _) if t.len() == 1 => {
                                ops::Operand::Scalar(t.data()[0])
                            }
                            (Step::Const(t), _) => ops::Operand::PerChannel(t.data()),
                            _ => ops::Operand::Tensor(arg(1)),
                        };
                        ops::binary(*op, out, src(0), operand, oc);
                    }
                    Step::DepthToSpace(b, mode) => {
                        ops::depth_to_space(arg(0), ih, iw, ic, *b, *mode, out)
                    }
                    Step::Resize(f, mode) => ops::resize(arg(0), ih, iw, ic, *f, *mode, out),
                    Step::Concat => {
                        let parts: Vec<(&[f32], usize)> = node
                            .inputs
                            .iter()
                            .map(|v| (val(v.0), plan.shapes[v.0].2))
                            .collect();
                        ops::concat(&parts, ow, out);
                    }
                    Step::Border(b) => ops::border(arg(0), ih, iw, ic, b, out, ow),
                    Step::SqueezeExcite(se) => ops::squeeze_excite(se, out, src(0), ow, oc),
                }
            }
            arena[slot] = buf;
            if let Some(t0) = t0 {
                let (oh, ow, oc) = plan.shapes[i];
                let what = match &self.steps[i] {
                    Step::Conv(k) => format!(
                        "conv {}x{} {}->{} {}",
                        k.shape.kh,
                        k.shape.kw,
                        k.shape.cin,
                        k.shape.cout,
                        match k.algo {
                            conv::Algo::Winograd(ref w) => match w.tile() {
                                winograd::Tile::F4 => "winograd F(4,3)",
                                winograd::Tile::F6 => "winograd F(6,3)",
                            },
                            conv::Algo::Pixel(_) => "direct, pixel-vectorised",
                            conv::Algo::Direct(_) => "direct",
                        }
                    ),
                    _ => g.nodes[i].op.kind().to_string(),
                };
                eprintln!(
                    "profile {:>4} {:>9.3} ms  {oh}x{ow}x{oc}  {what}",
                    i,
                    t0.elapsed().as_secs_f64() * 1e3
                );
            }
        }
        g.outputs
            .iter()
            .map(|(_, v)| {
                let (a, b, c) = plan.shapes[v.0];
                match plan.loc[v.0] {
                    Loc::Input => input.clone(),
                    Loc::Const => match &self.steps[v.0] {
                        Step::Const(t) => t.clone(),
                        _ => Tensor::zeros(vec![0]),
                    },
                    Loc::Slot(s) => Tensor::image(a, b, c, arena[s][..a * b * c].to_vec()),
                    // Outputs are never planned as parts.
                    Loc::Parts => Tensor::zeros(vec![0]),
                }
            })
            .collect()
    }
}
