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
//! - [`gemm`]: register-blocked micro-kernels, `mr` rows × `np` panels of 16 output channels
//!   (AVX-512: 12×32 or 14×16 accumulators in `zmm` registers; AVX2+FMA: 6×16; a portable
//!   twin with the same blocking). Chosen once with `is_x86_feature_detected!`.
//! - [`conv`]: the direct convolution as an implicit GEMM over a zero-padded row band (every
//!   kernel row is one contiguous reduction run), for 1×1, 4×4, 5×5, strided, dilated,
//!   grouped and small-channel convolutions, with the epilogue applied as each register block
//!   is stored.
//! - [`pixconv`]: the direct convolution vectorised over 16 output pixels instead of 16
//!   output channels, for at most 12 output channels (ESPCN's 32→9, LapSRN's 64→4), where
//!   the channel-vectorised kernel would leave most lanes idle.
//! - [`winograd`]: F(6×6, 3×3) (from 32 channels) and F(4×4, 3×3) (16 to 31) for 3×3
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
//! [`reference`](mod@reference) stays the plain definition every kernel is tested against.

pub mod conv;
pub mod gemm;
pub mod ops;
pub mod pixconv;
pub mod reference;
pub mod winograd;

use std::sync::{Arc, Mutex};

use superres_graph::{
    Activation, BinaryOp, DepthToSpaceMode, Graph, Op, ResizeMode, Tensor, UnaryOp,
};

pub use conv::ConvAlgo;
pub use gemm::Isa;

use crate::{Backend, EngineError, Executable, check_input};
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
        let steps = graph
            .nodes
            .iter()
            .map(|n| match &n.op {
                Op::Input { .. } => Step::Input,
                Op::Const(t) => Step::Const(t.clone()),
                Op::Conv2d(c) => Step::Conv(Box::new(ConvKernel::new(c, self.isa, self.conv))),
                Op::Binary(op) => Step::Binary(*op),
                Op::Unary(op) => Step::Unary(*op),
                Op::Activation(a) => Step::Activation(a.clone()),
                Op::DepthToSpace { block, mode } => Step::DepthToSpace(*block, *mode),
                Op::Resize { factor, mode } => Step::Resize(*factor, *mode),
                Op::Concat => Step::Concat,
            })
            .collect();
        Ok(Arc::new(CpuExecutable {
            graph: graph.without_weights(),
            steps,
            pool: self.pool.clone(),
            plans: Mutex::new(Vec::new()),
        }))
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
}

/// Where a value lives during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Input,
    Const,
    Slot(usize),
}

/// The buffers of one input size.
struct Plan {
    h: usize,
    w: usize,
    /// `(h, w, c)` of every value (zeros for constants).
    shapes: Vec<(usize, usize, usize)>,
    loc: Vec<Loc>,
    /// The node writes over its first input (element-wise) or its skip (convolution).
    in_place: Vec<bool>,
    slot_sizes: Vec<usize>,
    /// Arenas not in use by a run.
    arenas: Mutex<Vec<Vec<Vec<f32>>>>,
}

/// Sizes planned at most; older plans are dropped.
const PLAN_CACHE: usize = 4;

struct CpuExecutable {
    /// The topology (weights left out: `steps` holds them, packed).
    graph: Graph,
    steps: Vec<Step>,
    pool: Option<Arc<rayon::ThreadPool>>,
    /// Most recently used first.
    plans: Mutex<Vec<Arc<Plan>>>,
}

impl Executable for CpuExecutable {
    fn run(&self, input: &Tensor) -> Result<Vec<Tensor>, EngineError> {
        match &self.pool {
            Some(pool) => pool.install(|| self.run_here(input)),
            None => self.run_here(input),
        }
    }
}

impl CpuExecutable {
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
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        plans.insert(0, plan.clone());
        plans.truncate(PLAN_CACHE);
        Ok(plan)
    }

    fn make_plan(&self, h: usize, w: usize) -> Result<Plan, EngineError> {
        let g = &self.graph;
        let n = g.nodes.len();
        let mut shapes = vec![(0, 0, 0); n];
        let mismatch = |name: &str| EngineError::Unsupported {
            backend: "cpu",
            message: format!("node '{name}': operand sizes differ for a {h}×{w} input"),
        };
        for (i, node) in g.nodes.iter().enumerate() {
            let c = node.channels.unwrap_or(0);
            let arg = |k: usize| shapes[node.inputs[k].0];
            shapes[i] = match &self.steps[i] {
                Step::Input => (h, w, c),
                Step::Const(_) => (0, 0, 0),
                Step::Conv(k) => {
                    let (ih, iw, _) = arg(0);
                    let Op::Conv2d(conv) = &node.op else {
                        unreachable!("steps mirror nodes")
                    };
                    let (oh, ow) = conv
                        .output_size(ih, iw)
                        .filter(|&(a, b)| a > 0 && b > 0)
                        .ok_or_else(|| EngineError::TooSmall {
                            h,
                            w,
                            node: node.name.clone(),
                        })?;
                    if k.epilogue.residual.is_some() && arg(1) != (oh, ow, c) {
                        return Err(mismatch(&node.name));
                    }
                    (oh, ow, c)
                }
                Step::Binary(_) => {
                    let a = arg(0);
                    let b = arg(1);
                    if b != (0, 0, 0) && b != a {
                        return Err(mismatch(&node.name));
                    }
                    a
                }
                Step::Unary(_) | Step::Activation(_) => arg(0),
                Step::DepthToSpace(b, _) => {
                    let (ih, iw, _) = arg(0);
                    (ih * b, iw * b, c)
                }
                Step::Resize(f, _) => {
                    let (ih, iw, _) = arg(0);
                    (ih * f, iw * f, c)
                }
                Step::Concat => {
                    let (ih, iw, _) = arg(0);
                    if (1..node.inputs.len()).any(|k| (arg(k).0, arg(k).1) != (ih, iw)) {
                        return Err(mismatch(&node.name));
                    }
                    (ih, iw, c)
                }
            };
        }

        // Buffers: a free list in topological order, in place where the input dies here.
        let users = g.users();
        let mut remaining: Vec<usize> = users.iter().map(Vec::len).collect();
        let mut loc = vec![Loc::Const; n];
        let mut in_place = vec![false; n];
        let mut slot_sizes: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        for (i, node) in g.nodes.iter().enumerate() {
            let size = {
                let (a, b, c) = shapes[i];
                a * b * c
            };
            let dies_here = |v: usize| {
                let uses = node.inputs.iter().filter(|u| u.0 == v).count();
                remaining[v] == uses
            };
            let reuse = match &self.steps[i] {
                Step::Input | Step::Const(_) => {
                    loc[i] = if matches!(self.steps[i], Step::Input) {
                        Loc::Input
                    } else {
                        Loc::Const
                    };
                    None
                }
                Step::Unary(_) | Step::Activation(_) | Step::Binary(_) => {
                    let a = node.inputs[0].0;
                    let distinct = node.inputs.len() < 2 || node.inputs[1].0 != a;
                    match loc[a] {
                        Loc::Slot(s) if distinct && dies_here(a) => Some(s),
                        _ => None,
                    }
                }
                Step::Conv(k) if k.epilogue.residual.is_some() => {
                    let skip = node.inputs[1].0;
                    match loc[skip] {
                        Loc::Slot(s) if node.inputs[0].0 != skip && dies_here(skip) => Some(s),
                        _ => None,
                    }
                }
                _ => None,
            };
            if !matches!(self.steps[i], Step::Input | Step::Const(_)) {
                let slot = match reuse {
                    Some(s) => {
                        in_place[i] = true;
                        s
                    }
                    None => {
                        // Best fit among free slots, else grow the largest, else a new one.
                        let fit = free
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| slot_sizes[**s] >= size)
                            .min_by_key(|(_, s)| slot_sizes[**s])
                            .or_else(|| {
                                free.iter().enumerate().max_by_key(|(_, s)| slot_sizes[**s])
                            })
                            .map(|(k, _)| k);
                        match fit {
                            Some(k) => free.swap_remove(k),
                            None => {
                                slot_sizes.push(0);
                                slot_sizes.len() - 1
                            }
                        }
                    }
                };
                slot_sizes[slot] = slot_sizes[slot].max(size);
                loc[i] = Loc::Slot(slot);
            }
            for v in &node.inputs {
                remaining[v.0] -= 1;
                if remaining[v.0] == 0
                    && let Loc::Slot(s) = loc[v.0]
                    && loc[i] != Loc::Slot(s)
                    && !free.contains(&s)
                {
                    free.push(s);
                }
            }
            if remaining[i] == 0
                && let Loc::Slot(s) = loc[i]
            {
                free.push(s);
            }
        }
        Ok(Plan {
            h,
            w,
            shapes,
            loc,
            in_place,
            slot_sizes,
            arenas: Mutex::new(Vec::new()),
        })
    }

    fn run_here(&self, input: &Tensor) -> Result<Vec<Tensor>, EngineError> {
        let (h, w) = check_input(&self.graph, input)?;
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
                        k.run(arg(0), ih, iw, out, oh, ow, skip);
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
                    _ => "op".to_string(),
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
                }
            })
            .collect()
    }
}
