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
//! the raw products first), how many elements a value takes in its storage (a device pads
//! channel counts for tensor cores), and which channel concatenations its kernels read part
//! by part where the parts already are ([`Loc::Parts`]: the CPU's Winograd convolutions, so
//! RRDBNet's dense blocks never copy their growing inputs). A concatenation read in parts
//! has no buffer; its parts stay live until its last reader has run. Each backend's memory estimate
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
    /// A channel concatenation with no buffer of its own: its readers take its parts
    /// ([`Plan::parts`]) where they are.
    Parts,
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
    /// For each [`Loc::Parts`] value, the values it concatenates, in order (nested
    /// concatenations read in parts flattened); empty for every other value.
    pub parts: Vec<Vec<usize>>,
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

/// Plans the buffers of an `h × w` run. `allow` says which input a node may overwrite
/// (by node index); `storage` gives the elements a value of shape `(h, w, c)` takes; `gather`
/// says which concatenations are read in parts ([`Loc::Parts`]: asked only of concatenations
/// that are not graph outputs, and the backend answers for all of their readers).
pub fn plan(
    graph: &Graph,
    h: usize,
    w: usize,
    allow: impl Fn(usize, &Node) -> InPlace,
    storage: impl Fn((usize, usize, usize)) -> usize,
    gather: impl Fn(usize, &Node) -> bool,
) -> Result<Plan, EngineError> {
    let shapes = infer_shapes(graph, h, w)?;
    let n = graph.nodes.len();
    let is_output: Vec<bool> = (0..n)
        .map(|i| graph.outputs.iter().any(|(_, v)| v.0 == i))
        .collect();
    // What each node reads: a concatenation read in parts stands for its parts.
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut reads: Vec<Vec<usize>> = Vec::with_capacity(n);
    for (i, node) in graph.nodes.iter().enumerate() {
        let mut r = Vec::with_capacity(node.inputs.len());
        for v in &node.inputs {
            if parts[v.0].is_empty() {
                r.push(v.0);
            } else {
                r.extend_from_slice(&parts[v.0]);
            }
        }
        if matches!(node.op, Op::Concat) && !is_output[i] && gather(i, node) {
            parts[i] = r;
            reads.push(Vec::new());
        } else {
            reads.push(r);
        }
    }
    let mut remaining = vec![0usize; n];
    for r in &reads {
        for &v in r {
            remaining[v] += 1;
        }
    }
    for (_, v) in &graph.outputs {
        remaining[v.0] += 1;
    }
    let mut loc = vec![Loc::Const; n];
    let mut in_place = vec![false; n];
    let mut slot_sizes: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let size = storage(shapes[i]);
        let reads = &reads[i];
        let dies_here = |v: usize| remaining[v] == reads.iter().filter(|&&u| u == v).count();
        // What input `k` stands for: itself, or a concatenation's parts.
        let operand = |k: usize| -> &[usize] {
            let v = node.inputs[k].0;
            if parts[v].is_empty() {
                std::slice::from_ref(&node.inputs[k].0)
            } else {
                &parts[v]
            }
        };
        match node.op {
            Op::Input { .. } => loc[i] = Loc::Input,
            Op::Const(_) => loc[i] = Loc::Const,
            _ if !parts[i].is_empty() => loc[i] = Loc::Parts,
            _ => {
                // The input it may overwrite, if it dies here and is not also read as (part
                // of) its other operand.
                let target = match allow(i, node) {
                    InPlace::No => None,
                    InPlace::FirstInput => {
                        let a = node.inputs[0].0;
                        let distinct = node.inputs.len() < 2 || !operand(1).contains(&a);
                        distinct.then_some(a)
                    }
                    InPlace::Skip => node
                        .inputs
                        .get(1)
                        .map(|s| s.0)
                        .filter(|s| !operand(0).contains(s)),
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
        for &v in reads {
            remaining[v] -= 1;
            if remaining[v] == 0
                && let Loc::Slot(s) = loc[v]
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
        parts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use superres_graph::{Conv2d, Epilogue, Padding, ValueId};

    fn conv(cin: usize, cout: usize, residual: bool) -> Op {
        Op::Conv2d(Conv2d {
            kh: 3,
            kw: 3,
            cin,
            cout,
            groups: 1,
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding::same(3, 3, (1, 1)),
            weights: vec![0.0; 9 * cin * cout],
            epilogue: Epilogue {
                residual: residual.then_some(1.0),
                ..Epilogue::default()
            },
        })
    }

    /// A dense block: `a = conv(x)`, `b = conv(cat(x, a))`, `y = conv(cat(x, a, b)) + a`,
    /// and a concatenation that is an output.
    fn dense() -> (Graph, [ValueId; 5]) {
        let mut g = Graph::new();
        let x = g.input("x", 16);
        let x1 = g.push("x1", conv(16, 16, false), vec![x]).unwrap();
        let a = g.push("a", conv(16, 16, false), vec![x1]).unwrap();
        let c1 = g.push("c1", Op::Concat, vec![x1, a]).unwrap();
        let b = g.push("b", conv(32, 16, false), vec![c1]).unwrap();
        let c2 = g.push("c2", Op::Concat, vec![x1, a, b]).unwrap();
        let y = g.push("y", conv(48, 16, true), vec![c2, a]).unwrap();
        let out = g.push("out", Op::Concat, vec![y, x1]).unwrap();
        g.output("out", out);
        (g, [x1, a, c1, c2, out])
    }

    fn cpu_rules(g: &Graph, gather: bool) -> Plan {
        plan(
            g,
            5,
            7,
            |_, node| match &node.op {
                Op::Conv2d(c) if c.epilogue.residual.is_some() => InPlace::Skip,
                _ => elementwise_in_place(node),
            },
            |(a, b, c)| a * b * c,
            |_, _| gather,
        )
        .unwrap()
    }

    /// No node writes a slot that holds a value read later (by it, unless it runs in place
    /// over that value, or by a later node).
    fn assert_live_values_never_overwritten(g: &Graph, p: &Plan) {
        let reads = |j: usize| -> Vec<usize> {
            g.nodes[j]
                .inputs
                .iter()
                .flat_map(|v| {
                    if p.loc[v.0] == Loc::Parts {
                        p.parts[v.0].clone()
                    } else {
                        vec![v.0]
                    }
                })
                .collect()
        };
        let outputs: Vec<usize> = g.outputs.iter().map(|(_, v)| v.0).collect();
        for (i, &l) in p.loc.iter().enumerate() {
            let Loc::Slot(s) = l else { continue };
            for v in (0..i).filter(|&v| p.loc[v] == Loc::Slot(s)) {
                let later = (i + 1..g.nodes.len()).any(|j| reads(j).contains(&v));
                let here = reads(i).contains(&v) && !p.in_place[i];
                assert!(
                    !later && !here && !outputs.contains(&v),
                    "node {i} overwrites value {v} in slot {s}"
                );
            }
        }
    }

    #[test]
    fn concatenations_read_in_parts_have_no_buffer_and_keep_their_parts_live() {
        let (g, [x1, a, c1, c2, out]) = dense();
        let gathered = cpu_rules(&g, true);
        let copied = cpu_rules(&g, false);
        assert_eq!(gathered.loc[c1.0], Loc::Parts);
        assert_eq!(gathered.loc[c2.0], Loc::Parts);
        assert_eq!(gathered.parts[c2.0], vec![x1.0, a.0, c2.0 - 1]);
        assert!(
            matches!(gathered.loc[out.0], Loc::Slot(_)),
            "outputs keep a buffer"
        );
        assert!(copied.parts.iter().all(Vec::is_empty));
        // The skip `a` is also read as part of the convolution's input: not in place.
        assert!(!gathered.in_place[c2.0 + 1]);
        assert_live_values_never_overwritten(&g, &gathered);
        assert_live_values_never_overwritten(&g, &copied);
        // The 48-channel copy was the largest value; without it the arena is smaller even
        // though `y` cannot run in place.
        assert!(
            gathered.arena_elements() < copied.arena_elements(),
            "gathered {} elements, copied {}",
            gathered.arena_elements(),
            copied.arena_elements()
        );
    }
}
