//! Shape inference and buffer-lifetime planning, shared by every backend.
//!
//! A backend asks for a [`Plan`] once per input size: the `(h, w, c)` of every value, and a
//! buffer ("slot") for each value that the run computes. Slots are assigned with a free list
//! in topological order, so a slot is reused as soon as its value's last user has run, and a
//! node may write over one of its inputs when that input dies there ([`InPlace`]). Peak
//! memory is the live set, not the sum of all activations: EDSR's residual trunk cycles
//! through three buffers.
//!
//! The planner knows nothing about memory: a backend says which nodes may run in place (the
//! CPU's convolutions write over their residual input; a device's cannot, since cuDNN writes
//! the raw products first) and how many elements a value takes in its storage (a device pads
//! channel counts for tensor cores). Each backend's memory estimate
//! ([`crate::Executable::peak_bytes`]) is computed from the same plan it executes, so the
//! pipeline's tile sizes follow the real allocation, whatever the network's depth.

use superres_graph::{Graph, Node, Op, ShapeError};

use crate::EngineError;

/// Where a value lives during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// The caller's input tensor.
    Input,
    /// A constant of the graph (scalars and per-channel vectors of binary operators).
    Const,
    /// A buffer of the run's arena.
    Slot(usize),
}

/// Which input, if any, a node may overwrite with its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InPlace {
    No,
    /// Element-wise operators: the output takes the first input's buffer.
    FirstInput,
    /// A convolution with a residual epilogue: the output takes the skip tensor's buffer.
    Skip,
}

/// The buffers of one input size.
#[derive(Clone, Debug)]
pub struct Plan {
    pub h: usize,
    pub w: usize,
    /// `(h, w, c)` of every value (zeros for constants).
    pub shapes: Vec<(usize, usize, usize)>,
    pub loc: Vec<Loc>,
    /// The node writes over an input (see [`InPlace`]).
    pub in_place: Vec<bool>,
    /// Elements of each slot, as the backend's `storage` measured them.
    pub slot_sizes: Vec<usize>,
}

impl Plan {
    /// Elements of all slots together: one run's arena.
    pub fn arena_elements(&self) -> usize {
        self.slot_sizes.iter().sum()
    }

    /// Elements of a value's `(h, w, c)`.
    pub fn len(&self, v: usize) -> usize {
        let (a, b, c) = self.shapes[v];
        a * b * c
    }
}

/// The `(h, w, c)` of every value for an `h × w` input (zeros for constants), or why the
/// graph cannot run at that size.
pub fn infer_shapes(
    graph: &Graph,
    h: usize,
    w: usize,
) -> Result<Vec<(usize, usize, usize)>, EngineError> {
    graph.shapes(h, w).map_err(|e| match e {
        ShapeError::TooSmall { h, w, node } => EngineError::TooSmall { h, w, node },
        e @ ShapeError::Mismatch { .. } => EngineError::Unsupported {
            backend: "plan",
            message: e.to_string(),
        },
    })
}

/// The in-place rule every backend can use for element-wise operators: their output may take
/// the first input's buffer.
pub fn elementwise_in_place(node: &Node) -> InPlace {
    match node.op {
        Op::Unary(_) | Op::Activation(_) | Op::Binary(_) | Op::SqueezeExcite(_) => {
            InPlace::FirstInput
        }
        _ => InPlace::No,
    }
}

/// Plans the buffers of an `h × w` run. `allow` says which input a node may overwrite;
/// (by node index); `storage` gives the elements a value of shape `(h, w, c)` takes.
pub fn plan(
    graph: &Graph,
    h: usize,
    w: usize,
    allow: impl Fn(usize, &Node) -> InPlace,
    storage: impl Fn((usize, usize, usize)) -> usize,
) -> Result<Plan, EngineError> {
    let shapes = infer_shapes(graph, h, w)?;
    let n = graph.nodes.len();
    let users = graph.users();
    let mut remaining: Vec<usize> = users.iter().map(Vec::len).collect();
    let mut loc = vec![Loc::Const; n];
    let mut in_place = vec![false; n];
    let mut slot_sizes: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let size = storage(shapes[i]);
        let dies_here = |v: usize| {
            let uses = node.inputs.iter().filter(|u| u.0 == v).count();
            remaining[v] == uses
        };
        match node.op {
            Op::Input { .. } => loc[i] = Loc::Input,
            Op::Const(_) => loc[i] = Loc::Const,
            _ => {
                // The input it may overwrite, if it dies here and is not also its other operand.
                let target = match allow(i, node) {
                    InPlace::No => None,
                    InPlace::FirstInput => {
                        let a = node.inputs[0].0;
                        let distinct = node.inputs.len() < 2 || node.inputs[1].0 != a;
                        distinct.then_some(a)
                    }
                    InPlace::Skip => node
                        .inputs
                        .get(1)
                        .map(|s| s.0)
                        .filter(|&s| node.inputs[0].0 != s),
                };
                let reuse = target.and_then(|v| match loc[v] {
                    Loc::Slot(s) if dies_here(v) => Some(s),
                    _ => None,
                });
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
            && !free.contains(&s)
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
    })
}
