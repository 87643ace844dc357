//! Optimisation passes over the IR, run once at load time.
//!
//! Where it sits: between an importer and a backend. Importers translate files op for op;
//! these passes turn the elementary spellings the files use into what the kernels execute
//! fast: per-channel constants folded into convolution biases, activations and residual adds
//! fused into the convolution's [`Epilogue`], activations spelled out with `Abs`/`Relu`/`Mul`
//! recognised as [`Activation::PRelu`] / [`Activation::LeakyRelu`], per-channel work after
//! a pixel shuffle moved in front of it, and an enlarged input added after a pixel shuffle
//! (Real-ESRGAN Compact's tail) moved in front of it as the last convolution's residual.
//!
//! Every pass preserves the result bit for bit: fusion keeps the unfused order of the
//! floating-point operations (see [`crate::Epilogue`]), and every pattern rewrite below carries
//! the argument why the rewritten form computes the same `f32` values. Tests compare the
//! optimised and unoptimised graphs of every shared model with the reference interpreter.
//!
//! A value is only fused away when nothing else reads it (graph outputs count as readers).

use crate::{
    Activation, BinaryOp, DepthToSpaceMode, Graph, GraphError, Node, Op, Tensor, UnaryOp, ValueId,
};

/// Runs every pass to a fixed point and returns the optimised graph (dead nodes removed,
/// topologically ordered, shapes re-validated).
pub fn optimize(g: &Graph) -> Result<Graph, GraphError> {
    g.validate()?;
    let mut w = Work::new(g);
    // Each rewrite removes at least one node, or (moving a skip before a shuffle) an
    // `Add` of a shuffle that no rule makes again, so this terminates; the bound is a
    // backstop.
    for _ in 0..=g.nodes.len() {
        let mut changed = false;
        changed |= w.rewrite_all(Work::prelu);
        changed |= w.rewrite_all(Work::leaky_relu);
        changed |= w.rewrite_all(Work::fold_bias);
        changed |= w.rewrite_all(Work::fuse_activation);
        changed |= w.rewrite_all(Work::fuse_residual);
        changed |= w.rewrite_all(Work::hoist_over_depth_to_space);
        changed |= w.rewrite_all(Work::skip_before_depth_to_space);
        if !changed {
            break;
        }
    }
    w.finish()
}

/// Removes the nodes no output depends on, keeping the topological order.
pub fn remove_dead(g: &Graph) -> Result<Graph, GraphError> {
    Work::new(g).finish()
}

/// A graph being rewritten: node indices stay stable, dead nodes are flagged, and inputs may
/// point forward until [`Work::finish`] re-sorts.
struct Work {
    nodes: Vec<Node>,
    dead: Vec<bool>,
    outputs: Vec<(String, ValueId)>,
    users: Vec<Vec<usize>>,
}

/// Marks a reader that is a graph output in [`Work::users`].
const OUTPUT: usize = usize::MAX;

impl Work {
    fn new(g: &Graph) -> Self {
        let mut w = Work {
            nodes: g.nodes.clone(),
            dead: vec![false; g.nodes.len()],
            outputs: g.outputs.clone(),
            users: Vec::new(),
        };
        w.recount();
        w
    }

    fn recount(&mut self) {
        let mut users = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if self.dead[i] {
                continue;
            }
            for v in &n.inputs {
                users[v.0].push(i);
            }
        }
        for (_, v) in &self.outputs {
            users[v.0].push(OUTPUT);
        }
        self.users = users;
    }

    /// Applies `rule` at every live node; a rule returns whether it rewrote the graph.
    fn rewrite_all(&mut self, rule: fn(&mut Work, usize) -> bool) -> bool {
        let mut changed = false;
        for i in 0..self.nodes.len() {
            if !self.dead[i] && rule(self, i) {
                changed = true;
                self.recount();
            }
        }
        changed
    }

    /// The only reader of `v`, when it has exactly one and it is not a graph output.
    fn sole_user(&self, v: usize) -> Option<usize> {
        match self.users[v][..] {
            [u] if u != OUTPUT => Some(u),
            _ => None,
        }
    }

    fn kill(&mut self, v: usize) {
        self.dead[v] = true;
        self.nodes[v].inputs.clear();
    }

    /// Makes every reader of `old` (graph outputs included) read `new` instead.
    fn replace_uses(&mut self, old: usize, new: usize) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if self.dead[i] || i == new {
                continue;
            }
            for v in &mut n.inputs {
                if v.0 == old {
                    *v = ValueId(new);
                }
            }
        }
        for (_, v) in &mut self.outputs {
            if v.0 == old {
                *v = ValueId(new);
            }
        }
    }

    fn op(&self, v: usize) -> &Op {
        &self.nodes[v].op
    }

    fn input(&self, v: usize, k: usize) -> Option<usize> {
        self.nodes[v].inputs.get(k).map(|x| x.0)
    }

    fn constant(&self, v: usize) -> Option<&Tensor> {
        match self.op(v) {
            Op::Const(t) => Some(t),
            _ => None,
        }
    }

    fn scalar(&self, v: usize) -> Option<f32> {
        self.constant(v).and_then(Tensor::as_scalar)
    }

    /// `x` when `v` is `Binary(op)(x, const)`, with the constant.
    fn binary_const(&self, v: usize, op: BinaryOp) -> Option<(usize, &Tensor)> {
        match self.op(v) {
            Op::Binary(o) if *o == op => {
                let x = self.input(v, 0)?;
                let k = self.constant(self.input(v, 1)?)?;
                Some((x, k))
            }
            _ => None,
        }
    }

    fn is_relu_of(&self, v: usize) -> Option<usize> {
        match self.op(v) {
            Op::Activation(Activation::Relu) => self.input(v, 0),
            _ => None,
        }
    }

    /// Recognises FSRCNN's PReLU, spelled `Relu(x) + (alpha * (x - Abs(x))) * 0.5`:
    ///
    /// ```text
    /// Abs(x) -> Sub(x, Abs) -> Mul(Sub, alpha) -> Mul(_, 0.5) -> Add(Relu(x), _)
    /// ```
    ///
    /// Exactness, for finite `x` and `alpha`: when `x > 0`, `x - |x|` is `0`, so the sum is
    /// `x + (±0) = x`, which PReLU returns. When `x <= 0`, `x - |x| = 2x` exactly, `alpha * 2x`
    /// rounds to exactly twice the rounding of `alpha * x` (scaling by 2 is exact), and `* 0.5`
    /// undoes that exactly; `Relu(x) = 0` and `0 + y = y`. So the result is
    /// `round(alpha * x)`, PReLU's value. The spelled-out form differs only where it overflows
    /// (`|x| > f32::MAX / 2`, `x = +inf`) or where `alpha * x` is subnormal (double rounding),
    /// values no trained network produces.
    fn prelu(&mut self, a: usize) -> bool {
        let Op::Binary(BinaryOp::Add) = self.op(a) else {
            return false;
        };
        let (Some(p), Some(q)) = (self.input(a, 0), self.input(a, 1)) else {
            return false;
        };
        for (relu, half_mul) in [(p, q), (q, p)] {
            let Some(x) = self.is_relu_of(relu) else {
                continue;
            };
            let Some((scaled, half)) = self.binary_const(half_mul, BinaryOp::Mul) else {
                continue;
            };
            if half.as_scalar() != Some(0.5) {
                continue;
            }
            let Some((diff, alpha)) = self.binary_const(scaled, BinaryOp::Mul) else {
                continue;
            };
            let alpha = alpha.data().to_vec();
            if alpha.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let Op::Binary(BinaryOp::Sub) = self.op(diff) else {
                continue;
            };
            if self.input(diff, 0) != Some(x) {
                continue;
            }
            let Some(abs) = self.input(diff, 1) else {
                continue;
            };
            if !matches!(self.op(abs), Op::Unary(UnaryOp::Abs)) || self.input(abs, 0) != Some(x) {
                continue;
            }
            let single = [
                (relu, a),
                (half_mul, a),
                (scaled, half_mul),
                (diff, scaled),
                (abs, diff),
            ]
            .iter()
            .all(|&(v, u)| self.sole_user(v) == Some(u));
            if !single {
                continue;
            }
            self.nodes[a].op = Op::Activation(Activation::PRelu(alpha));
            self.nodes[a].inputs = vec![ValueId(x)];
            for v in [relu, half_mul, scaled, diff, abs] {
                self.kill(v);
            }
            return true;
        }
        false
    }

    /// Recognises LapSRN's leaky ReLU, spelled `Relu(x) - a * Relu(-1 * x)` (or with `Neg`):
    ///
    /// ```text
    /// Mul(x, -1) -> Relu -> Mul(_, a) -> Sub(Relu(x), _)
    /// ```
    ///
    /// Exactness, for every non-NaN `x` and finite `a`: when `x > 0`, `Relu(-x) = 0`,
    /// `a * 0 = ±0` and `x - (±0) = x`. When `x <= 0`, `-1 * x = -x` exactly,
    /// `Relu(-x) = -x`, and `a * (-x)` rounds to exactly `-round(a * x)` (rounding is symmetric
    /// in sign), so `0 - (-round(a * x)) = round(a * x)`: `LeakyRelu(a)`'s value. (For NaN
    /// both give NaN-dependent results of no interest.)
    fn leaky_relu(&mut self, d: usize) -> bool {
        let Op::Binary(BinaryOp::Sub) = self.op(d) else {
            return false;
        };
        let (Some(r1), Some(m)) = (self.input(d, 0), self.input(d, 1)) else {
            return false;
        };
        let Some(x) = self.is_relu_of(r1) else {
            return false;
        };
        let Some((r2, slope)) = self.binary_const(m, BinaryOp::Mul) else {
            return false;
        };
        let Some(slope) = slope.as_scalar().filter(|s| s.is_finite()) else {
            return false;
        };
        let Some(n) = self.is_relu_of(r2) else {
            return false;
        };
        let negates_x = match self.op(n) {
            Op::Unary(UnaryOp::Neg) => self.input(n, 0) == Some(x),
            Op::Binary(BinaryOp::Mul) => {
                self.input(n, 0) == Some(x)
                    && self.input(n, 1).and_then(|k| self.scalar(k)) == Some(-1.0)
            }
            _ => false,
        };
        if !negates_x {
            return false;
        }
        let single = [(r1, d), (m, d), (r2, m), (n, r2)]
            .iter()
            .all(|&(v, u)| self.sole_user(v) == Some(u));
        if !single {
            return false;
        }
        self.nodes[d].op = Op::Activation(Activation::LeakyRelu(slope));
        self.nodes[d].inputs = vec![ValueId(x)];
        for v in [r1, m, r2, n] {
            self.kill(v);
        }
        true
    }

    /// A per-channel vector of `len` values from a scalar or `[len]` constant.
    fn per_channel(t: &Tensor, len: usize) -> Option<Vec<f32>> {
        match t.len() {
            1 => Some(vec![t.data()[0]; len]),
            n if n == len => Some(t.data().to_vec()),
            _ => None,
        }
    }

    /// `Add(conv, c)` / `Sub(conv, c)` with a per-channel constant → the convolution's bias,
    /// when the convolution has an empty epilogue (so `acc + c` is computed exactly as before;
    /// `x - c` is by definition `x + (-c)`).
    fn fold_bias(&mut self, b: usize) -> bool {
        let (conv, k, negate) = match (
            self.binary_const(b, BinaryOp::Add),
            self.binary_const(b, BinaryOp::Sub),
        ) {
            (Some((c, k)), _) => (c, k.clone(), false),
            (_, Some((c, k))) => (c, k.clone(), true),
            _ => return false,
        };
        if self.sole_user(conv) != Some(b) {
            return false;
        }
        let Op::Conv2d(c) = self.op(conv) else {
            return false;
        };
        if c.epilogue != crate::Epilogue::default() {
            return false;
        }
        let Some(mut bias) = Self::per_channel(&k, c.cout) else {
            return false;
        };
        if negate {
            bias.iter_mut().for_each(|v| *v = -*v);
        }
        if let Op::Conv2d(c) = &mut self.nodes[conv].op {
            c.epilogue.bias = Some(bias);
        }
        self.replace_uses(b, conv);
        self.kill(b);
        true
    }

    /// `act(conv)` → the convolution's activation, applied after its bias as before.
    fn fuse_activation(&mut self, a: usize) -> bool {
        let Op::Activation(act) = self.op(a) else {
            return false;
        };
        let act = act.clone();
        let Some(conv) = self.input(a, 0) else {
            return false;
        };
        if self.sole_user(conv) != Some(a) {
            return false;
        }
        let Op::Conv2d(c) = &mut self.nodes[conv].op else {
            return false;
        };
        if c.epilogue.activation.is_some() || c.epilogue.residual.is_some() {
            return false;
        }
        c.epilogue.activation = Some(act);
        self.replace_uses(a, conv);
        self.kill(a);
        true
    }

    /// `Add(skip, Mul(conv, s))` (EDSR's scaled residual, either operand order) or
    /// `Add(conv, skip)` → the convolution's residual, computed as `skip + s * y` or
    /// `skip + y`: the same operations, and IEEE addition and multiplication are commutative.
    fn fuse_residual(&mut self, s: usize) -> bool {
        let Op::Binary(BinaryOp::Add) = self.op(s) else {
            return false;
        };
        let (Some(p), Some(q)) = (self.input(s, 0), self.input(s, 1)) else {
            return false;
        };
        if self.constant(p).is_some() || self.constant(q).is_some() {
            return false;
        }
        let fusable = |w: &Work, conv: usize| -> bool {
            matches!(w.op(conv), Op::Conv2d(c) if c.epilogue.residual.is_none())
        };
        // Scaled: one operand is Mul(conv, scalar) read only by this Add.
        for (skip, mul) in [(p, q), (q, p)] {
            let Some((conv, k)) = self.binary_const(mul, BinaryOp::Mul) else {
                continue;
            };
            let Some(scale) = k.as_scalar() else {
                continue;
            };
            if fusable(self, conv)
                && skip != conv
                && skip != mul
                && self.sole_user(mul) == Some(s)
                && self.sole_user(conv) == Some(mul)
            {
                self.attach_residual(conv, skip, scale);
                self.replace_uses(s, conv);
                self.kill(s);
                self.kill(mul);
                return true;
            }
        }
        for (skip, conv) in [(p, q), (q, p)] {
            if fusable(self, conv) && skip != conv && self.sole_user(conv) == Some(s) {
                self.attach_residual(conv, skip, 1.0);
                self.replace_uses(s, conv);
                self.kill(s);
                return true;
            }
        }
        false
    }

    fn attach_residual(&mut self, conv: usize, skip: usize, scale: f32) {
        if let Op::Conv2d(c) = &mut self.nodes[conv].op {
            c.epilogue.residual = Some(scale);
        }
        self.nodes[conv].inputs.push(ValueId(skip));
    }

    /// `f(DepthToSpace(conv))` → `DepthToSpace(conv with f in its epilogue)` for a per-channel
    /// or elementwise `f`: an activation (ESPCN's final Tanh, LapSRN's leaky ReLU) or the add
    /// of a per-channel constant (FSRCNN's final BiasAdd). A depth-to-space only moves values,
    /// so applying `f` before it computes the same numbers, provided each channel parameter
    /// follows its values: output channel `c` of a block-`b` DCR shuffle comes from input
    /// channels `(i*b + j)*C + c`, so a vector of `C` is repeated `b²` times (CRD: each entry
    /// repeated `b²` times in place). Only into an epilogue that does not yet have what is
    /// added, so the operation order stays that of the unfused graph.
    fn hoist_over_depth_to_space(&mut self, t: usize) -> bool {
        let Some(d) = self.input(t, 0) else {
            return false;
        };
        let Op::DepthToSpace { block, mode } = *self.op(d) else {
            return false;
        };
        let Some(conv) = self.input(d, 0) else {
            return false;
        };
        if self.sole_user(d) != Some(t) || self.sole_user(conv) != Some(d) {
            return false;
        }
        let Op::Conv2d(c) = self.op(conv) else {
            return false;
        };
        let (cout, epi) = (c.cout, c.epilogue.clone());
        let bb = block * block;
        let spread = |v: &[f32]| -> Vec<f32> {
            (0..cout)
                .map(|k| match mode {
                    DepthToSpaceMode::Dcr => v[k % v.len()],
                    DepthToSpaceMode::Crd => v[k / bb],
                })
                .collect()
        };
        let out_c = cout / bb;
        let mut new_epi = epi.clone();
        match self.op(t) {
            Op::Activation(a) => {
                if epi.activation.is_some() || epi.residual.is_some() {
                    return false;
                }
                new_epi.activation = Some(match a {
                    Activation::PRelu(s) if s.len() > 1 => {
                        if s.len() != out_c {
                            return false;
                        }
                        Activation::PRelu(spread(s))
                    }
                    other => other.clone(),
                });
            }
            Op::Binary(op @ (BinaryOp::Add | BinaryOp::Sub)) => {
                let negate = *op == BinaryOp::Sub;
                let Some(k) = self.input(t, 1).and_then(|k| self.constant(k)) else {
                    return false;
                };
                if epi != crate::Epilogue::default() {
                    return false;
                }
                let Some(mut v) = Self::per_channel(k, out_c) else {
                    return false;
                };
                if negate {
                    v.iter_mut().for_each(|x| *x = -*x);
                }
                new_epi.bias = Some(spread(&v));
            }
            _ => return false,
        }
        if let Op::Conv2d(c) = &mut self.nodes[conv].op {
            c.epilogue = new_epi;
        }
        // `t` becomes the shuffle (its shape is the shuffle's), the old shuffle dies.
        self.nodes[t].op = Op::DepthToSpace { block, mode };
        self.nodes[t].inputs = vec![ValueId(conv)];
        self.kill(d);
        true
    }

    /// `Add(DepthToSpace(conv), Resize(nearest, x))` with the same factor `b` (Real-ESRGAN
    /// Compact's and animevideov3's tail: the network's output plus its input enlarged) →
    /// `DepthToSpace(Add(conv, Spread(x)))`, where `Spread` is a 1×1 convolution with one-hot
    /// weights that copies each of `x`'s channels to the `b²` channels the shuffle sends to
    /// that channel of the output block (DCR: `(i·b + j)·C + c`, CRD: `c·b² + i·b + j`). The
    /// add then fuses into the convolution as its residual ([`Work::fuse_residual`]), at the
    /// input's resolution, and the full-resolution resize and add passes are gone.
    ///
    /// Exactness, for finite `x`: output pixel `(sy·b + i, sx·b + j)`, channel `c`, is
    /// `conv[sy, sx, k] + x[sy, sx, c]` both ways (nearest enlargement reads pixel
    /// `(⌊Y/b⌋, ⌊X/b⌋)`), and the one-hot sum `1·x_c + Σ 0·x_other` is exactly `x_c` (up to
    /// the sign of a zero, which no later addition or rounding to 8 or 16 bits can see).
    fn skip_before_depth_to_space(&mut self, a: usize) -> bool {
        let Op::Binary(BinaryOp::Add) = self.op(a) else {
            return false;
        };
        let (Some(p), Some(q)) = (self.input(a, 0), self.input(a, 1)) else {
            return false;
        };
        for (d, r) in [(p, q), (q, p)] {
            let Op::DepthToSpace { block, mode } = *self.op(d) else {
                continue;
            };
            let Op::Resize {
                factor,
                mode: crate::ResizeMode::Nearest,
            } = *self.op(r)
            else {
                continue;
            };
            let (Some(conv), Some(x)) = (self.input(d, 0), self.input(r, 0)) else {
                continue;
            };
            let Op::Conv2d(c) = self.op(conv) else {
                continue;
            };
            let (cout, bb) = (c.cout, block * block);
            let out_c = cout / bb;
            let single = [(conv, d), (d, a), (r, a)]
                .iter()
                .all(|&(v, u)| self.sole_user(v) == Some(u));
            if factor != block
                || d == r
                || !single
                || c.epilogue.residual.is_some()
                || self.nodes[x].channels != Some(out_c)
            {
                continue;
            }
            // `weights[ci][co]` (a 1×1 kernel): 1 where output channel `co` takes input `ci`.
            let mut weights = vec![0.0f32; out_c * cout];
            for co in 0..cout {
                let ci = match mode {
                    DepthToSpaceMode::Dcr => co % out_c,
                    DepthToSpaceMode::Crd => co / bb,
                };
                weights[ci * cout + co] = 1.0;
            }
            self.nodes[r].op = Op::Conv2d(crate::Conv2d {
                kh: 1,
                kw: 1,
                cin: out_c,
                cout,
                groups: 1,
                stride: (1, 1),
                dilation: (1, 1),
                padding: crate::Padding::default(),
                weights,
                epilogue: crate::Epilogue::default(),
            });
            self.nodes[r].channels = Some(cout);
            // `d` becomes the add (the shuffle's input's shape), `a` the shuffle.
            self.nodes[d].op = Op::Binary(BinaryOp::Add);
            // The spread input first: [`Work::fuse_residual`] then makes it the skip of
            // `conv` (rather than `conv` the skip of the 1×1 spread).
            self.nodes[d].inputs = vec![ValueId(r), ValueId(conv)];
            self.nodes[d].channels = Some(cout);
            self.nodes[a].op = Op::DepthToSpace { block, mode };
            self.nodes[a].inputs = vec![ValueId(d)];
            return true;
        }
        false
    }

    /// Drops dead nodes and those no output depends on, sorts topologically (keeping the
    /// original order where it is free) and rebuilds the graph through [`Graph::push`], which
    /// re-checks every shape.
    fn finish(self) -> Result<Graph, GraphError> {
        let n = self.nodes.len();
        let mut live = vec![false; n];
        let mut stack: Vec<usize> = self.outputs.iter().map(|(_, v)| v.0).collect();
        while let Some(v) = stack.pop() {
            if live[v] {
                continue;
            }
            live[v] = true;
            stack.extend(self.nodes[v].inputs.iter().map(|x| x.0));
        }
        // Kahn's algorithm, always taking the lowest ready index.
        let mut pending = vec![0usize; n];
        let mut readers = vec![Vec::new(); n];
        for v in (0..n).filter(|&v| live[v]) {
            for x in &self.nodes[v].inputs {
                pending[v] += 1;
                readers[x.0].push(v);
            }
        }
        let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
            .filter(|&v| live[v] && pending[v] == 0)
            .map(std::cmp::Reverse)
            .collect();
        let mut new_id = vec![usize::MAX; n];
        let mut g = Graph::new();
        while let Some(std::cmp::Reverse(v)) = ready.pop() {
            let node = &self.nodes[v];
            let id = match &node.op {
                Op::Input { channels } => g.input(&node.name, *channels),
                Op::Const(t) => g.constant(&node.name, t.clone()),
                op => {
                    let inputs = node.inputs.iter().map(|x| ValueId(new_id[x.0])).collect();
                    g.push(&node.name, op.clone(), inputs)?
                }
            };
            new_id[v] = id.0;
            for &r in &readers[v] {
                pending[r] -= 1;
                if pending[r] == 0 {
                    ready.push(std::cmp::Reverse(r));
                }
            }
        }
        for (name, v) in &self.outputs {
            if new_id[v.0] == usize::MAX {
                return Err(GraphError::Invalid {
                    node: self.nodes[v.0].name.clone(),
                    op: self.nodes[v.0].op.kind(),
                    message: "the optimised graph has a cycle".into(),
                });
            }
            g.output(name, ValueId(new_id[v.0]));
        }
        g.validate()?;
        Ok(g)
    }
}
