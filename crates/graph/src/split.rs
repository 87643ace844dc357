//! Cutting a network in two where its high-resolution tail begins.
//!
//! Super-resolution networks spend most of their compute at the input's resolution and most
//! of their memory after the upsampling: RRDBNet ×4's last three convolutions hold 64
//! channels at 16 times the input's pixels, about four times what its 23-block body needs.
//! A backend that runs the tail in bands of rows ([`Graph::tail_cut`]) needs only the body's
//! memory for a tile, so the pipeline's tiles grow by that factor for the same budget.

use std::collections::HashMap;

use crate::graph::Scale;
use crate::passes::remove_dead;
use crate::{Graph, Op, ValueId};

impl Graph {
    /// The graph cut at `v`: the head computes `v` (its one output); the tail takes `v` as
    /// its image input and computes the graph's outputs. `None` unless everything after `v`
    /// reads only `v`, later values and constants, and every output comes after `v`.
    pub fn split_at(&self, v: ValueId) -> Option<(Graph, Graph)> {
        let cut = self.nodes.get(v.0)?;
        let channels = cut.channels?;
        cut.scale?;
        if self.outputs.iter().any(|(_, o)| o.0 <= v.0) {
            return None;
        }
        let mut tail = Graph::new();
        let mut id: HashMap<usize, ValueId> = HashMap::new();
        id.insert(v.0, tail.input(&cut.name, channels));
        for (j, node) in self.nodes.iter().enumerate().skip(v.0 + 1) {
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for x in &node.inputs {
                let mapped = match id.get(&x.0) {
                    Some(&m) => m,
                    None => match &self.nodes[x.0].op {
                        Op::Const(t) => {
                            let m = tail.constant(&self.nodes[x.0].name, t.clone());
                            id.insert(x.0, m);
                            m
                        }
                        _ => return None,
                    },
                };
                inputs.push(mapped);
            }
            let new = match &node.op {
                Op::Input { .. } => return None,
                Op::Const(t) => tail.constant(&node.name, t.clone()),
                op => tail.push(&node.name, op.clone(), inputs).ok()?,
            };
            id.insert(j, new);
        }
        for (name, o) in &self.outputs {
            tail.output(name, *id.get(&o.0)?);
        }
        let mut head = Graph {
            nodes: self.nodes[..=v.0].to_vec(),
            outputs: vec![(cut.name.clone(), v)],
        };
        head = remove_dead(&head).ok()?;
        let tail = remove_dead(&tail).ok()?;
        Some((head, tail))
    }

    /// Where a backend may cut the network to run its tail in bands of rows: the latest value
    /// at the input's resolution after which the network only reads that value and
    /// upsamples by an integer factor of at least 2, with no strides in the tail (so a band
    /// of rows maps to whole rows). Candidates latest first; the caller weighs their memory.
    pub fn tail_cuts(&self) -> Vec<ValueId> {
        if self.outputs.len() != 1 {
            return Vec::new();
        }
        let one = Scale { num: 1, den: 1 };
        let out = self.outputs[0].1;
        let Some(out_scale) = self.nodes[out.0].scale else {
            return Vec::new();
        };
        if out_scale.den != 1 || out_scale.num < 2 {
            return Vec::new();
        }
        // A cut at `j` is valid when no node after `j` reads a non-constant value before it:
        // scanning from the end, `earliest` is the earliest value read by a node after `j`.
        let n = self.nodes.len();
        let mut earliest = usize::MAX;
        let mut strided_after = false;
        let mut cuts = Vec::new();
        for j in (0..n).rev() {
            let node = &self.nodes[j];
            if j < out.0
                && earliest >= j
                && !strided_after
                && node.scale == Some(one)
                && !matches!(node.op, Op::Input { .. } | Op::Const(_))
            {
                cuts.push(ValueId(j));
            }
            for x in &node.inputs {
                if !matches!(self.nodes[x.0].op, Op::Const(_)) {
                    earliest = earliest.min(x.0);
                }
            }
            strided_after |= node.scale.is_some_and(|s| s.den != 1);
        }
        cuts
    }
}
