//! TensorFlow GraphDef (`.pb`) reader: OpenCV's dnn_superres models (ESPCN, FSRCNN,
//! FSRCNN-small, LapSRN, EDSR) into the IR.
//!
//! Where it sits: first thing at model load, before [`superres_graph::passes::optimize`].
//! It translates op for op and folds only what OpenCV's own TensorFlow importer folds at load
//! time (8-bit `Dequantize` of weights), so that the unoptimised IR is a faithful picture of
//! the file and the passes can be checked against it.
//!
//! What the files look like (see `OPS.md` of the shared model inventory): one flat graph, one
//! `Placeholder` without a shape (its channel count is read from the first convolution that
//! consumes it), NHWC throughout, and `Transpose` nodes named `NCHW_output*` that only turn the
//! result into OpenCV's NCHW blob. Those transposes mark the outputs; the IR stays NHWC.
//!
//! Why hand-written: no Rust crate reads GraphDefs with these ops (see the crate docs); the
//! protobuf subset in [`proto`] is all we need.

pub mod proto;

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use prost::Message;
use superres_graph::{
    Activation, BinaryOp, Conv2d, DepthToSpaceMode, Epilogue, Graph, GraphError, Op, Padding,
    Tensor, UnaryOp, ValueId,
};

use crate::ImportError;
use proto::{AttrValue, DT_FLOAT, DT_INT32, DT_QUINT8, DT_UINT8, GraphDef, NodeDef, TensorProto};

const FORMAT: &str = "TensorFlow GraphDef";

/// Largest constant (in elements) we materialise from a broadcast `float_val`/`int_val`:
/// a hostile shape must not make us allocate gigabytes from a few bytes of file.
const MAX_FILLED_ELEMENTS: usize = 1 << 28;

/// Reads a serialized `GraphDef` into an unoptimised IR graph; `file` names it in errors.
pub fn import(bytes: &[u8], file: &str) -> Result<Graph, ImportError> {
    let def = GraphDef::decode(bytes).map_err(|e| ImportError::Corrupt {
        file: file.to_string(),
        format: FORMAT,
        reason: e.to_string(),
    })?;
    import_def(&def, file)
}

/// Translates an already decoded `GraphDef` (tests build these in code).
pub fn import_def(def: &GraphDef, file: &str) -> Result<Graph, ImportError> {
    Importer::new(def, file)?.run()
}

/// OpenCV's folding of `Dequantize(q, min, max)` with `mode = MIN_FIRST` over quint8 weights,
/// reproduced operation for operation in `f32` so the weights match OpenCV's bit for bit:
/// `scale = (max - min) / 255`, `offset = scale * cvRound(min / scale)` (round half to even),
/// `w = f32(q) * scale + offset` (a rounded product, then a rounded sum).
pub fn dequantize_min_first(q: &[u8], min: f32, max: f32) -> Vec<f32> {
    let scale = (max - min) / 255.0f32;
    if scale == 0.0 {
        // Every weight equals min (= max); OpenCV would divide by zero here.
        return vec![min; q.len()];
    }
    let offset = scale * (min / scale).round_ties_even();
    q.iter().map(|&v| f32::from(v) * scale + offset).collect()
}

const CONTROL_FLOW: &str = "TensorFlow control flow (tf.cond/tf.case) cannot be imported; export a graph for one fixed scale";

fn is_control_flow(op: &str) -> bool {
    matches!(
        op,
        "Switch" | "Merge" | "Enter" | "Exit" | "NextIteration" | "LoopCond" | "Assert"
    )
}

/// A constant value while importing.
#[derive(Debug)]
struct ConstVal {
    shape: Vec<usize>,
    data: ConstData,
}

#[derive(Debug)]
enum ConstData {
    F32(Vec<f32>),
    I32(Vec<i32>),
    U8(Vec<u8>),
}

impl ConstData {
    fn type_name(&self) -> &'static str {
        match self {
            ConstData::F32(_) => "float32",
            ConstData::I32(_) => "int32",
            ConstData::U8(_) => "uint8",
        }
    }
}

/// What a TensorFlow node evaluates to: an image of the IR or a constant.
#[derive(Clone, Debug)]
enum Val {
    Image(ValueId),
    Const(Rc<ConstVal>),
}

struct Importer<'a> {
    file: &'a str,
    nodes: &'a [NodeDef],
    /// Data inputs of each node, as node indices (control inputs dropped).
    inputs: Vec<Vec<usize>>,
    consumers: Vec<Vec<usize>>,
    outputs: Vec<usize>,
    is_output: Vec<bool>,
    graph: Graph,
    values: Vec<Option<Val>>,
    /// DFS state: 0 not seen, 1 in progress, 2 done.
    state: Vec<u8>,
    const_ids: HashMap<usize, ValueId>,
}

fn dtype_name(t: i32) -> String {
    match t {
        1 => "DT_FLOAT".into(),
        2 => "DT_DOUBLE".into(),
        3 => "DT_INT32".into(),
        4 => "DT_UINT8".into(),
        9 => "DT_INT64".into(),
        12 => "DT_QUINT8".into(),
        19 => "DT_HALF".into(),
        other => format!("DataType {other}"),
    }
}

impl<'a> Importer<'a> {
    fn new(def: &'a GraphDef, file: &'a str) -> Result<Self, ImportError> {
        let nodes = &def.node[..];
        if nodes.is_empty() {
            return Err(ImportError::InvalidModel {
                file: file.to_string(),
                message: "the GraphDef has no nodes".into(),
            });
        }
        let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            if by_name.insert(n.name.as_str(), i).is_some() {
                return Err(ImportError::InvalidNode {
                    file: file.to_string(),
                    node: n.name.clone(),
                    message: "two nodes have this name".into(),
                });
            }
        }
        let mut inputs = Vec::with_capacity(nodes.len());
        let mut consumers = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            let mut ins = Vec::with_capacity(n.input.len());
            for s in &n.input {
                if s.starts_with('^') {
                    continue; // control dependency: ordering only
                }
                let (name, index) = match s.rsplit_once(':') {
                    Some((a, b)) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
                        (a, b)
                    }
                    _ => (s.as_str(), "0"),
                };
                let &j = by_name.get(name).ok_or_else(|| ImportError::InvalidNode {
                    file: file.to_string(),
                    node: n.name.clone(),
                    message: format!("input '{name}' is not a node of the graph"),
                })?;
                if index != "0" {
                    let src = &nodes[j];
                    let detail = if is_control_flow(&src.op) {
                        CONTROL_FLOW.to_string()
                    } else {
                        format!(
                            "node '{}' reads its output {index}; only single-output operators are supported",
                            n.name
                        )
                    };
                    return Err(ImportError::UnsupportedOp {
                        file: file.to_string(),
                        node: src.name.clone(),
                        op: src.op.clone(),
                        detail: Some(detail),
                    });
                }
                ins.push(j);
                consumers[j].push(i);
            }
            inputs.push(ins);
        }

        // Outputs: the NCHW_output transposes (full scale first), else every unconsumed node.
        let mut outputs: Vec<usize> = (0..nodes.len())
            .filter(|&i| {
                let name = nodes[i].name.as_str();
                nodes[i].op != "Const"
                    && (name == "NCHW_output"
                        || (name.starts_with("NCHW_output_") && !name.contains('/')))
            })
            .collect();
        outputs.sort_by(|&a, &b| {
            let key = |i: usize| (nodes[i].name != "NCHW_output", nodes[i].name.clone());
            key(a).cmp(&key(b))
        });
        if outputs.is_empty() {
            outputs = (0..nodes.len())
                .filter(|&i| {
                    consumers[i].is_empty()
                        && !matches!(nodes[i].op.as_str(), "Const" | "Placeholder" | "NoOp")
                })
                .collect();
        }
        if outputs.is_empty() {
            return Err(ImportError::InvalidModel {
                file: file.to_string(),
                message: "no output: no node named NCHW_output and no unconsumed operator".into(),
            });
        }
        let mut is_output = vec![false; nodes.len()];
        for &o in &outputs {
            is_output[o] = true;
        }
        Ok(Importer {
            file,
            nodes,
            inputs,
            consumers,
            outputs,
            is_output,
            graph: Graph::new(),
            values: vec![None; nodes.len()],
            state: vec![0; nodes.len()],
            const_ids: HashMap::new(),
        })
    }

    fn run(mut self) -> Result<Graph, ImportError> {
        let outputs = self.outputs.clone();
        for &o in &outputs {
            match self.eval(o)? {
                Val::Image(v) => self.graph.output(&self.nodes[o].name, v),
                Val::Const(_) => {
                    return Err(self.invalid(o, "a graph output is a constant, not an image"));
                }
            }
        }
        self.graph.validate().map_err(|e| self.graph_error(e))?;
        Ok(self.graph)
    }

    fn name(&self, i: usize) -> String {
        self.nodes[i].name.clone()
    }

    fn invalid(&self, i: usize, message: impl Into<String>) -> ImportError {
        ImportError::InvalidNode {
            file: self.file.to_string(),
            node: self.name(i),
            message: message.into(),
        }
    }

    fn unsupported(&self, i: usize, detail: Option<String>) -> ImportError {
        ImportError::UnsupportedOp {
            file: self.file.to_string(),
            node: self.name(i),
            op: self.nodes[i].op.clone(),
            detail,
        }
    }

    fn graph_error(&self, e: GraphError) -> ImportError {
        let GraphError::Invalid { node, op, message } = e;
        ImportError::InvalidNode {
            file: self.file.to_string(),
            node,
            message: format!("{op}: {message}"),
        }
    }

    /// Evaluates node `root` and everything it depends on (iterative post-order, so a
    /// long chain in a hostile file cannot overflow the stack).
    fn eval(&mut self, root: usize) -> Result<Val, ImportError> {
        let mut stack = vec![(root, false)];
        while let Some((i, expanded)) = stack.pop() {
            if self.values[i].is_some() {
                continue;
            }
            if expanded {
                let v = self.convert(i)?;
                self.values[i] = Some(v);
                self.state[i] = 2;
                continue;
            }
            if self.state[i] == 1 {
                return Err(self.invalid(i, "the graph has a cycle through this node"));
            }
            self.state[i] = 1;
            stack.push((i, true));
            for k in (0..self.inputs[i].len()).rev() {
                let j = self.inputs[i][k];
                if self.values[j].is_none() {
                    if self.state[j] == 1 {
                        return Err(self.invalid(j, "the graph has a cycle through this node"));
                    }
                    stack.push((j, false));
                }
            }
        }
        self.values[root]
            .clone()
            .ok_or_else(|| self.invalid(root, "could not be evaluated"))
    }

    fn arity(&self, i: usize, n: usize) -> Result<(), ImportError> {
        let got = self.inputs[i].len();
        if got != n {
            return Err(self.invalid(
                i,
                format!("{} expects {n} input(s), got {got}", self.nodes[i].op),
            ));
        }
        Ok(())
    }

    fn input(&self, i: usize, k: usize) -> Result<Val, ImportError> {
        let j = self.inputs[i][k];
        self.values[j]
            .clone()
            .ok_or_else(|| self.invalid(i, format!("input '{}' was not evaluated", self.name(j))))
    }

    fn image_input(&self, i: usize, k: usize) -> Result<ValueId, ImportError> {
        match self.input(i, k)? {
            Val::Image(v) => Ok(v),
            Val::Const(_) => Err(self.invalid(
                i,
                format!(
                    "input {k} ('{}') is a constant; expected an image",
                    self.name(self.inputs[i][k])
                ),
            )),
        }
    }

    fn const_input(&self, i: usize, k: usize) -> Result<Rc<ConstVal>, ImportError> {
        match self.input(i, k)? {
            Val::Const(c) => Ok(c),
            Val::Image(_) => Err(self.invalid(
                i,
                format!(
                    "input {k} ('{}') must be a constant",
                    self.name(self.inputs[i][k])
                ),
            )),
        }
    }

    fn attr(&self, i: usize, key: &str) -> Option<&'a AttrValue> {
        self.nodes[i].attr.get(key)
    }

    fn attr_str(&self, i: usize, key: &str) -> Result<Option<String>, ImportError> {
        use proto::attr_value::Value;
        match self.attr(i, key).and_then(|a| a.value.as_ref()) {
            None => Ok(None),
            Some(Value::S(s)) => Ok(Some(String::from_utf8_lossy(s).into_owned())),
            Some(_) => Err(self.invalid(i, format!("attribute '{key}' is not a string"))),
        }
    }

    fn attr_int(&self, i: usize, key: &str) -> Result<Option<i64>, ImportError> {
        use proto::attr_value::Value;
        match self.attr(i, key).and_then(|a| a.value.as_ref()) {
            None => Ok(None),
            Some(Value::I(v)) => Ok(Some(*v)),
            Some(_) => Err(self.invalid(i, format!("attribute '{key}' is not an integer"))),
        }
    }

    fn attr_ints(&self, i: usize, key: &str) -> Result<Option<Vec<i64>>, ImportError> {
        use proto::attr_value::Value;
        match self.attr(i, key).and_then(|a| a.value.as_ref()) {
            None => Ok(None),
            Some(Value::List(l)) => Ok(Some(l.i.clone())),
            Some(_) => Err(self.invalid(i, format!("attribute '{key}' is not a list"))),
        }
    }

    fn attr_type(&self, i: usize, key: &str) -> Result<Option<i32>, ImportError> {
        use proto::attr_value::Value;
        match self.attr(i, key).and_then(|a| a.value.as_ref()) {
            None => Ok(None),
            Some(Value::Type(t)) => Ok(Some(*t)),
            Some(_) => Err(self.invalid(i, format!("attribute '{key}' is not a type"))),
        }
    }

    /// Refuses `data_format = NCHW` (the IR and every supported file are NHWC).
    fn require_nhwc(&self, i: usize) -> Result<(), ImportError> {
        match self.attr_str(i, "data_format")?.as_deref() {
            None | Some("NHWC") => Ok(()),
            Some(other) => Err(self.unsupported(
                i,
                Some(format!("data_format '{other}' (only NHWC is supported)")),
            )),
        }
    }

    fn push(&mut self, i: usize, op: Op, inputs: Vec<ValueId>) -> Result<Val, ImportError> {
        let name = self.name(i);
        self.graph
            .push(&name, op, inputs)
            .map(Val::Image)
            .map_err(|e| self.graph_error(e))
    }

    fn convert(&mut self, i: usize) -> Result<Val, ImportError> {
        let op = self.nodes[i].op.clone();
        match op.as_str() {
            "Const" => {
                self.arity(i, 0)?;
                let t = match self.attr(i, "value").and_then(|a| a.value.as_ref()) {
                    Some(proto::attr_value::Value::Tensor(t)) => t,
                    _ => return Err(self.invalid(i, "Const without a tensor 'value' attribute")),
                };
                Ok(Val::Const(Rc::new(self.tensor(i, t)?)))
            }
            "Placeholder" => self.placeholder(i),
            "Identity" | "StopGradient" | "Snapshot" => {
                self.arity(i, 1)?;
                self.input(i, 0)
            }
            "Dequantize" => self.dequantize(i),
            "Conv2D" => self.conv2d(i),
            "BiasAdd" => {
                self.arity(i, 2)?;
                self.require_nhwc(i)?;
                let x = self.image_input(i, 0)?;
                let b = self.const_input(i, 1)?;
                if b.shape.len() != 1 {
                    return Err(
                        self.invalid(i, format!("bias of shape {:?}; expected a vector", b.shape))
                    );
                }
                let k = self.const_operand(i, self.inputs[i][1], &b)?;
                self.push(i, Op::Binary(BinaryOp::Add), vec![x, k])
            }
            "Add" | "AddV2" => self.binary(i, BinaryOp::Add),
            "Sub" => self.binary(i, BinaryOp::Sub),
            "Mul" => self.binary(i, BinaryOp::Mul),
            "RealDiv" => self.binary(i, BinaryOp::Div),
            "Abs" => self.unary(i, Op::Unary(UnaryOp::Abs)),
            "Neg" => self.unary(i, Op::Unary(UnaryOp::Neg)),
            "Relu" => self.unary(i, Op::Activation(Activation::Relu)),
            "Relu6" => self.unary(i, Op::Activation(Activation::Clip { min: 0.0, max: 6.0 })),
            "Tanh" => self.unary(i, Op::Activation(Activation::Tanh)),
            "Sigmoid" => self.unary(i, Op::Activation(Activation::Sigmoid)),
            "DepthToSpace" => {
                self.arity(i, 1)?;
                self.require_nhwc(i)?;
                let x = self.image_input(i, 0)?;
                let block = self
                    .attr_int(i, "block_size")?
                    .ok_or_else(|| self.invalid(i, "DepthToSpace without block_size"))?;
                if !(1..=64).contains(&block) {
                    return Err(self.invalid(i, format!("block_size {block} is out of range")));
                }
                self.push(
                    i,
                    Op::DepthToSpace {
                        block: block as usize,
                        mode: DepthToSpaceMode::Dcr,
                    },
                    vec![x],
                )
            }
            "Transpose" => self.transpose(i),
            op if is_control_flow(op) => Err(self.unsupported(i, Some(CONTROL_FLOW.into()))),
            _ => Err(self.unsupported(i, None)),
        }
    }

    fn unary(&mut self, i: usize, op: Op) -> Result<Val, ImportError> {
        self.arity(i, 1)?;
        let x = self.image_input(i, 0)?;
        self.push(i, op, vec![x])
    }

    /// An IR constant node for a TF constant used as an elementwise operand: a scalar or one
    /// value per channel (any shape whose only non-1 dimension is the last).
    fn const_operand(
        &mut self,
        i: usize,
        tf_const: usize,
        c: &ConstVal,
    ) -> Result<ValueId, ImportError> {
        if let Some(&v) = self.const_ids.get(&tf_const) {
            return Ok(v);
        }
        let ConstData::F32(data) = &c.data else {
            return Err(self.invalid(
                i,
                format!(
                    "constant '{}' is {}; expected float32",
                    self.name(tf_const),
                    c.data.type_name()
                ),
            ));
        };
        let leading_ones =
            c.shape.len() < 2 || c.shape[..c.shape.len() - 1].iter().all(|&d| d == 1);
        if !leading_ones {
            return Err(self.invalid(
                i,
                format!(
                    "constant '{}' of shape {:?} is neither a scalar nor per-channel",
                    self.name(tf_const),
                    c.shape
                ),
            ));
        }
        let t = if c.shape.is_empty() {
            Tensor::scalar(data.first().copied().unwrap_or(0.0))
        } else {
            Tensor::new(vec![data.len()], data.clone())
        };
        let v = self.graph.constant(&self.name(tf_const), t);
        self.const_ids.insert(tf_const, v);
        Ok(v)
    }

    fn binary(&mut self, i: usize, op: BinaryOp) -> Result<Val, ImportError> {
        self.arity(i, 2)?;
        let a = self.input(i, 0)?;
        let b = self.input(i, 1)?;
        let (ia, ib) = (self.inputs[i][0], self.inputs[i][1]);
        match (a, b) {
            (Val::Image(x), Val::Image(y)) => self.push(i, Op::Binary(op), vec![x, y]),
            (Val::Image(x), Val::Const(c)) => {
                let k = self.const_operand(i, ib, &c)?;
                self.push(i, Op::Binary(op), vec![x, k])
            }
            (Val::Const(c), Val::Image(y)) => {
                let k = self.const_operand(i, ia, &c)?;
                match op {
                    // Commutative in IEEE arithmetic: swapping the operands changes no bit.
                    BinaryOp::Add | BinaryOp::Mul => self.push(i, Op::Binary(op), vec![y, k]),
                    // c - y is defined as c + (-y): the same value, bit for bit.
                    BinaryOp::Sub => {
                        let name = format!("{}/neg", self.name(i));
                        let neg = self
                            .graph
                            .push(&name, Op::Unary(UnaryOp::Neg), vec![y])
                            .map_err(|e| self.graph_error(e))?;
                        self.push(i, Op::Binary(BinaryOp::Add), vec![neg, k])
                    }
                    BinaryOp::Div => {
                        Err(self.unsupported(i, Some("division of a constant by an image".into())))
                    }
                }
            }
            (Val::Const(ca), Val::Const(cb)) => {
                let (ConstData::F32(x), ConstData::F32(y)) = (&ca.data, &cb.data) else {
                    return Err(self.invalid(i, "arithmetic on non-float constants"));
                };
                let (shape, data) = if x.len() == y.len() {
                    (
                        ca.shape.clone(),
                        x.iter().zip(y).map(|(&p, &q)| op.apply(p, q)).collect(),
                    )
                } else if y.len() == 1 {
                    (
                        ca.shape.clone(),
                        x.iter().map(|&p| op.apply(p, y[0])).collect(),
                    )
                } else if x.len() == 1 {
                    (
                        cb.shape.clone(),
                        y.iter().map(|&q| op.apply(x[0], q)).collect(),
                    )
                } else {
                    return Err(self.invalid(
                        i,
                        format!(
                            "constants of shapes {:?} and {:?} do not broadcast",
                            ca.shape, cb.shape
                        ),
                    ));
                };
                Ok(Val::Const(Rc::new(ConstVal {
                    shape,
                    data: ConstData::F32(data),
                })))
            }
        }
    }

    fn placeholder(&mut self, i: usize) -> Result<Val, ImportError> {
        if let Some(t) = self.attr_type(i, "dtype")?
            && t != DT_FLOAT
        {
            return Err(self.unsupported(
                i,
                Some(format!(
                    "an input of type {} (only a float32 image input is supported)",
                    dtype_name(t)
                )),
            ));
        }
        if self.graph.input_id().is_some() {
            return Err(self.unsupported(
                i,
                Some("a second input (only one image input is supported)".into()),
            ));
        }
        let channels = self.input_channels(i)?;
        let v = self.graph.input(&self.name(i), channels);
        Ok(Val::Image(v))
    }

    /// The channel count of a Placeholder: from its `shape` attribute when it has one,
    /// otherwise the input depth of the first convolution that reads it (through
    /// channel-preserving operators).
    fn input_channels(&mut self, p: usize) -> Result<usize, ImportError> {
        if let Some(proto::attr_value::Value::Shape(s)) =
            self.attr(p, "shape").and_then(|a| a.value.as_ref())
            && s.dim.len() == 4
            && s.dim[3].size > 0
        {
            return usize::try_from(s.dim[3].size)
                .map_err(|_| self.invalid(p, "channel count out of range"));
        }
        let mut queue = VecDeque::from([p]);
        let mut seen = vec![false; self.nodes.len()];
        seen[p] = true;
        while let Some(v) = queue.pop_front() {
            let users = self.consumers[v].clone();
            for u in users {
                let op = self.nodes[u].op.as_str();
                if op == "Conv2D" && self.inputs[u].first() == Some(&v) {
                    let Some(&f) = self.inputs[u].get(1) else {
                        continue;
                    };
                    let filter = self.eval(f)?;
                    if let Val::Const(c) = filter
                        && c.shape.len() == 4
                        && c.shape[2] > 0
                    {
                        return Ok(c.shape[2]);
                    }
                    return Err(self.invalid(
                        u,
                        "the filter of the first convolution is not a 4-D constant",
                    ));
                }
                let preserving = matches!(
                    op,
                    "Identity"
                        | "StopGradient"
                        | "Snapshot"
                        | "Relu"
                        | "Relu6"
                        | "Tanh"
                        | "Sigmoid"
                        | "Abs"
                        | "Neg"
                        | "Add"
                        | "AddV2"
                        | "Sub"
                        | "Mul"
                        | "RealDiv"
                        | "BiasAdd"
                );
                if preserving && !seen[u] {
                    seen[u] = true;
                    queue.push_back(u);
                }
            }
        }
        Err(self.invalid(
            p,
            "cannot tell the number of input channels: the Placeholder has no shape and no \
             convolution reads it",
        ))
    }

    fn dequantize(&mut self, i: usize) -> Result<Val, ImportError> {
        self.arity(i, 3)?;
        match self.attr_str(i, "mode")?.as_deref() {
            Some("MIN_FIRST") => {}
            other => {
                return Err(self.unsupported(
                    i,
                    Some(format!(
                        "mode {} (only MIN_FIRST is supported)",
                        other.unwrap_or("MIN_COMBINED (the default)")
                    )),
                ));
            }
        }
        if let Some(t) = self.attr_type(i, "T")?
            && t != DT_QUINT8
        {
            return Err(self.unsupported(
                i,
                Some(format!(
                    "T = {} (only DT_QUINT8 is supported)",
                    dtype_name(t)
                )),
            ));
        }
        let q = self.const_input(i, 0)?;
        let min = self.const_input(i, 1)?;
        let max = self.const_input(i, 2)?;
        let ConstData::U8(qd) = &q.data else {
            return Err(self.invalid(
                i,
                format!("quantized input is {}; expected quint8", q.data.type_name()),
            ));
        };
        let scalar = |c: &ConstVal, what: &str| -> Result<f32, ImportError> {
            match &c.data {
                ConstData::F32(v) if v.len() == 1 => Ok(v[0]),
                _ => Err(self.invalid(i, format!("{what} is not a float32 scalar"))),
            }
        };
        let (lo, hi) = (scalar(&min, "min")?, scalar(&max, "max")?);
        if !lo.is_finite() || !hi.is_finite() || hi < lo {
            return Err(self.invalid(i, format!("invalid quantization range [{lo}, {hi}]")));
        }
        Ok(Val::Const(Rc::new(ConstVal {
            shape: q.shape.clone(),
            data: ConstData::F32(dequantize_min_first(qd, lo, hi)),
        })))
    }

    fn conv2d(&mut self, i: usize) -> Result<Val, ImportError> {
        self.arity(i, 2)?;
        self.require_nhwc(i)?;
        let x = self.image_input(i, 0)?;
        let f = self.const_input(i, 1)?;
        let ConstData::F32(w) = &f.data else {
            return Err(self.invalid(
                i,
                format!("filter is {}; expected float32", f.data.type_name()),
            ));
        };
        let [kh, kw, fcin, cout] = f.shape[..] else {
            return Err(self.invalid(
                i,
                format!(
                    "filter of shape {:?}; expected [kh, kw, cin, cout]",
                    f.shape
                ),
            ));
        };
        if kh == 0 || kw == 0 || fcin == 0 || cout == 0 {
            return Err(self.invalid(i, format!("empty filter of shape {:?}", f.shape)));
        }
        let xc = self.graph.channels(x);
        if !xc.is_multiple_of(fcin) {
            return Err(self.invalid(
                i,
                format!("filter expects {fcin} input channels, the input has {xc}"),
            ));
        }
        let pair = |key: &str| -> Result<(usize, usize), ImportError> {
            match self.attr_ints(i, key)? {
                None => Ok((1, 1)),
                Some(v) if v.len() == 4 && v[0] == 1 && v[3] == 1 && v[1] >= 1 && v[2] >= 1 => {
                    Ok((v[1] as usize, v[2] as usize))
                }
                Some(v) => Err(self.unsupported(
                    i,
                    Some(format!("{key} {v:?} (expected [1, h, w, 1] in NHWC)")),
                )),
            }
        };
        let stride = pair("strides")?;
        let dilation = pair("dilations")?;
        let padding = match self.attr_str(i, "padding")?.as_deref() {
            Some("SAME") => {
                if stride != (1, 1) {
                    return Err(self.unsupported(
                        i,
                        Some(
                            "SAME padding with a stride above 1 (its padding depends on the image size)"
                                .into(),
                        ),
                    ));
                }
                Padding::same(kh, kw, dilation)
            }
            Some("VALID") => Padding::default(),
            Some("EXPLICIT") => {
                let p = self.attr_ints(i, "explicit_paddings")?.unwrap_or_default();
                let ok = p.len() == 8
                    && p.iter().all(|&v| v >= 0)
                    && p[..2] == [0, 0]
                    && p[6..] == [0, 0];
                if !ok {
                    return Err(self.invalid(
                        i,
                        format!("explicit_paddings {p:?}; expected [0, 0, top, bottom, left, right, 0, 0]"),
                    ));
                }
                Padding {
                    top: p[2] as usize,
                    bottom: p[3] as usize,
                    left: p[4] as usize,
                    right: p[5] as usize,
                }
            }
            other => {
                return Err(self.unsupported(i, Some(format!("padding {other:?}"))));
            }
        };
        let conv = Conv2d {
            kh,
            kw,
            cin: xc,
            cout,
            groups: xc / fcin,
            stride,
            dilation,
            padding,
            weights: w.clone(),
            epilogue: Epilogue::default(),
        };
        self.push(i, Op::Conv2d(conv), vec![x])
    }

    fn transpose(&mut self, i: usize) -> Result<Val, ImportError> {
        self.arity(i, 2)?;
        let perm = self.const_input(i, 1)?;
        let is_nchw = matches!(&perm.data, ConstData::I32(p) if p[..] == [0, 3, 1, 2]);
        if !is_nchw {
            return Err(self.unsupported(
                i,
                Some(format!(
                    "permutation {:?} (only the final NHWC→NCHW [0, 3, 1, 2] output transpose is supported)",
                    perm.data
                )),
            ));
        }
        if !self.is_output[i] || !self.consumers[i].is_empty() {
            return Err(self.unsupported(
                i,
                Some(
                    "a transpose inside the network (only the final NHWC→NCHW output transpose is supported)"
                        .into(),
                ),
            ));
        }
        let x = self.image_input(i, 0)?;
        Ok(Val::Image(x))
    }

    fn tensor(&self, i: usize, t: &TensorProto) -> Result<ConstVal, ImportError> {
        let mut shape = Vec::new();
        let mut n: usize = 1;
        if let Some(s) = &t.tensor_shape {
            if s.unknown_rank {
                return Err(self.invalid(i, "constant of unknown rank"));
            }
            for d in &s.dim {
                let d = usize::try_from(d.size)
                    .map_err(|_| self.invalid(i, format!("constant dimension {}", d.size)))?;
                n = n
                    .checked_mul(d)
                    .ok_or_else(|| self.invalid(i, "constant too large"))?;
                shape.push(d);
            }
        }
        let content = &t.tensor_content;
        let fill = |vals_len: usize, what: &str| -> Result<(), ImportError> {
            if vals_len > n {
                return Err(self.invalid(
                    i,
                    format!("{vals_len} {what} values for {n} elements of shape {shape:?}"),
                ));
            }
            if vals_len < n && n > MAX_FILLED_ELEMENTS {
                return Err(self.invalid(i, "constant too large"));
            }
            Ok(())
        };
        let check_content = |elem: usize| -> Result<(), ImportError> {
            if Some(content.len()) != n.checked_mul(elem) {
                return Err(self.invalid(
                    i,
                    format!(
                        "tensor_content has {} bytes; shape {shape:?} needs {}",
                        content.len(),
                        n.saturating_mul(elem)
                    ),
                ));
            }
            Ok(())
        };
        // TensorFlow's rule for the repeated fields: missing trailing values repeat the last
        // one (zero when there is none).
        fn padded<T: Copy + Default>(v: &[T], n: usize) -> Vec<T> {
            let mut out = v.to_vec();
            let last = v.last().copied().unwrap_or_default();
            out.resize(n, last);
            out
        }
        let data = match t.dtype {
            DT_FLOAT => {
                if !content.is_empty() {
                    check_content(4)?;
                    ConstData::F32(
                        content
                            .chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    )
                } else {
                    fill(t.float_val.len(), "float")?;
                    ConstData::F32(padded(&t.float_val, n))
                }
            }
            DT_INT32 => {
                if !content.is_empty() {
                    check_content(4)?;
                    ConstData::I32(
                        content
                            .chunks_exact(4)
                            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    )
                } else {
                    fill(t.int_val.len(), "int")?;
                    ConstData::I32(padded(&t.int_val, n))
                }
            }
            DT_QUINT8 | DT_UINT8 => {
                if !content.is_empty() {
                    check_content(1)?;
                    ConstData::U8(content.clone())
                } else {
                    fill(t.int_val.len(), "int")?;
                    let mut v = Vec::with_capacity(t.int_val.len());
                    for &x in &t.int_val {
                        v.push(u8::try_from(x).map_err(|_| {
                            self.invalid(i, format!("value {x} out of range for an 8-bit tensor"))
                        })?);
                    }
                    ConstData::U8(padded(&v, n))
                }
            }
            other => {
                return Err(
                    self.unsupported(i, Some(format!("a constant of type {}", dtype_name(other))))
                );
            }
        };
        Ok(ConstVal { shape, data })
    }
}
