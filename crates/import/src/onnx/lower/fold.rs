//! Nodes folded at import: `Constant`, `Cast`, `Shape`, `Gather`, `Squeeze` / `Unsqueeze`,
//! `Slice`, `Floor` / `Ceil` (and `Identity` / `Dropout`, aliases).

use crate::onnx::consts::{self, Const, Data, Sym, TensorError};
use crate::onnx::proto::{NodeProto, attr_type as at, data_type as dt};
use crate::onnx::{Importer, R, SHUFFLE_HINT, Val, to_usize};

impl Importer<'_> {
    pub(in crate::onnx) fn constant(&mut self, n: &NodeProto) -> R<()> {
        let c = if let Some(a) = self.attr(n, "value", at::TENSOR)? {
            let t =
                a.t.as_ref()
                    .ok_or_else(|| self.invalid(n, "attribute 'value' holds no tensor"))?;
            consts::from_proto(t).map_err(|e| match e {
                TensorError::External => {
                    self.unsupported(n, "a constant stored in an external file".to_string())
                }
                TensorError::Invalid(m) => self.invalid(n, m),
            })?
        } else if let Some(f) = self.attr_f(n, "value_float")? {
            Const::f32(vec![], vec![f])
        } else if let Some(a) = self.attr(n, "value_floats", at::FLOATS)? {
            Const::f32(vec![a.floats.len()], a.floats.clone())
        } else if let Some(i) = self.attr_i(n, "value_int")? {
            Const::sym(vec![], vec![Sym::k(i as f64)], false)
        } else if let Some(v) = self.attr_ints(n, "value_ints")? {
            Const::sym(
                vec![v.len()],
                v.iter().map(|&i| Sym::k(i as f64)).collect(),
                false,
            )
        } else {
            return Err(self.unsupported(
                n,
                "a Constant without a value, value_float(s) or value_int(s)".to_string(),
            ));
        };
        self.set(n, Val::Const(c))
    }

    pub(in crate::onnx) fn cast(&mut self, n: &NodeProto) -> R<()> {
        let to = self.attr_i(n, "to")?.unwrap_or(0) as i32;
        let to_float = [dt::FLOAT, dt::FLOAT16, dt::DOUBLE, dt::BFLOAT16].contains(&to);
        let out = match self.input(n, 0)? {
            Val::Image(x) if to_float => Val::Image(*x),
            Val::Const(k) => {
                let k = k.clone();
                match (k.data, to_float) {
                    (Data::F32(v), true) => Val::Const(Const::f32(k.shape, v)),
                    (Data::Sym { v, .. }, true) => Val::Const(Const::sym(k.shape, v, true)),
                    (data, false) => {
                        let v = Const {
                            shape: vec![],
                            data,
                        }
                        .to_sym()
                        .and_then(|v| {
                            v.iter()
                                .map(|s| s.round_with(f64::trunc))
                                .collect::<Option<Vec<_>>>()
                        })
                        .ok_or_else(|| {
                            self.unsupported(
                                n,
                                "casting a non-integral size to integers".to_string(),
                            )
                        })?;
                        Val::Const(Const::sym(k.shape, v, false))
                    }
                }
            }
            _ => {
                return Err(self.unsupported(n, format!("casting an image to data type {to}")));
            }
        };
        self.set(n, out)
    }

    pub(in crate::onnx) fn shape(&mut self, n: &NodeProto) -> R<()> {
        let full: Vec<Sym> = match self.input(n, 0)? {
            Val::Image(x) => {
                let x = *x;
                let (h, w) = self.spatial(n, x)?;
                vec![Sym::k(1.0), Sym::k(self.g.channels(x) as f64), h, w]
            }
            Val::Const(k) => k.shape.iter().map(|&d| Sym::k(d as f64)).collect(),
            Val::Shuffle(_) => return Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        };
        let r = full.len() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let start = clamp(self.attr_i(n, "start")?.unwrap_or(0));
        let end = clamp(self.attr_i(n, "end")?.unwrap_or(r));
        let v: Vec<Sym> = full[start..end.max(start)].to_vec();
        self.set(n, Val::Const(Const::sym(vec![v.len()], v, false)))
    }

    pub(in crate::onnx) fn gather(&mut self, n: &NodeProto) -> R<()> {
        let data = self.konst(n, 0)?;
        let idx = self.konst(n, 1)?;
        let axis = self.attr_i(n, "axis")?.unwrap_or(0);
        if data.shape.len() != 1 || !(axis == 0 || axis == -1) || idx.shape.len() > 1 {
            return Err(self.unsupported(
                n,
                "folding a Gather other than of 1-D constants with 0-D or 1-D indices".to_string(),
            ));
        }
        let len = data.len() as i64;
        let ints = self.ints_of(n, 1)?;
        let flat: Vec<usize> = ints
            .iter()
            .map(|&i| to_usize(if i < 0 { i + len } else { i }).filter(|&i| i < data.len()))
            .collect::<Option<_>>()
            .ok_or_else(|| self.invalid(n, format!("indices {ints:?} out of range {len}")))?;
        let out = data.select(&flat).with_shape(idx.shape.clone());
        self.set(n, Val::Const(out))
    }

    pub(in crate::onnx) fn squeeze(&mut self, n: &NodeProto, unsqueeze: bool) -> R<()> {
        let k = self.konst(n, 0)?.clone();
        let axes = match self.attr_ints(n, "axes")? {
            Some(a) => Some(a),
            None if n.input.len() > 1 && !n.input[1].is_empty() => Some(self.ints_of(n, 1)?),
            None => None,
        };
        let rank = k.shape.len() as i64;
        let shape = if unsqueeze {
            let axes = axes.ok_or_else(|| self.invalid(n, "missing axes"))?;
            let out_rank = rank + axes.len() as i64;
            let mut norm: Vec<i64> = axes
                .iter()
                .map(|&a| if a < 0 { a + out_rank } else { a })
                .collect();
            norm.sort_unstable();
            norm.dedup();
            if norm.len() != axes.len() || norm.iter().any(|&a| a < 0 || a >= out_rank) {
                return Err(self.invalid(n, format!("axes {axes:?} for rank {rank}")));
            }
            let mut src = k.shape.iter();
            (0..out_rank)
                .map(|d| {
                    if norm.contains(&d) {
                        Some(1)
                    } else {
                        src.next().copied()
                    }
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.invalid(n, format!("axes {axes:?}")))?
        } else {
            let norm: Vec<i64> = axes
                .unwrap_or_else(|| (0..rank).filter(|&d| k.shape[d as usize] == 1).collect())
                .iter()
                .map(|&a| if a < 0 { a + rank } else { a })
                .collect();
            if norm
                .iter()
                .any(|&a| a < 0 || a >= rank || k.shape[a as usize] != 1)
            {
                return Err(self.invalid(n, format!("axes {norm:?} for shape {:?}", k.shape)));
            }
            (0..rank)
                .filter(|d| !norm.contains(d))
                .map(|d| k.shape[d as usize])
                .collect()
        };
        self.set(n, Val::Const(k.with_shape(shape)))
    }

    pub(in crate::onnx) fn slice(&mut self, n: &NodeProto) -> R<()> {
        let k = self.konst(n, 0)?;
        let (starts, ends, axes, steps) = if self.opset < 10 {
            (
                self.attr_ints(n, "starts")?.unwrap_or_default(),
                self.attr_ints(n, "ends")?.unwrap_or_default(),
                self.attr_ints(n, "axes")?,
                None,
            )
        } else {
            let opt = |i: usize| -> R<Option<Vec<i64>>> {
                match n.input.get(i).filter(|s| !s.is_empty()) {
                    Some(_) => self.ints_of(n, i).map(Some),
                    None => Ok(None),
                }
            };
            (self.ints_of(n, 1)?, self.ints_of(n, 2)?, opt(3)?, opt(4)?)
        };
        if k.shape.len() != 1
            || starts.len() != 1
            || ends.len() != 1
            || axes.as_ref().is_some_and(|a| a[..] != [0] && a[..] != [-1])
        {
            return Err(self.unsupported(
                n,
                "folding a Slice other than along the one axis of a 1-D constant".to_string(),
            ));
        }
        let step = steps.map_or(Some(1), |s| (s.len() == 1).then(|| s[0]));
        let step = step
            .filter(|&s| s != 0)
            .ok_or_else(|| self.invalid(n, "steps"))?;
        let len = k.len() as i64;
        if len == 0 {
            let out = k.clone();
            return self.set(n, Val::Const(out));
        }
        let norm = |v: i64, lo: i64, hi: i64| {
            let v = if v < 0 { v.saturating_add(len) } else { v };
            v.clamp(lo, hi)
        };
        let mut idx = Vec::new();
        if step > 0 {
            let (mut i, e) = (norm(starts[0], 0, len), norm(ends[0], 0, len));
            while i < e {
                idx.push(i as usize);
                i = i.saturating_add(step);
            }
        } else {
            let (mut i, e) = (norm(starts[0], 0, len - 1), norm(ends[0], -1, len - 1));
            while i > e {
                idx.push(i as usize);
                i = i.saturating_add(step);
            }
        }
        let out = k.select(&idx);
        self.set(n, Val::Const(out))
    }

    /// `Floor` / `Ceil` of a constant.
    pub(in crate::onnx) fn round(&mut self, n: &NodeProto) -> R<()> {
        let c = self.konst(n, 0)?.clone();
        let f: fn(f64) -> f64 = if n.op_type == "Floor" {
            f64::floor
        } else {
            f64::ceil
        };
        let out = match &c.data {
            Data::F32(v) => Const::f32(
                c.shape.clone(),
                v.iter().map(|&x| f(x as f64) as f32).collect(),
            ),
            Data::Sym { v, float } => Const::sym(
                c.shape.clone(),
                v.iter()
                    .map(|s| s.round_with(f))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        self.unsupported(n, "rounding a non-integral size".to_string())
                    })?,
                *float,
            ),
        };
        self.set(n, Val::Const(out))
    }
}
