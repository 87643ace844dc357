//! `Add`, `Sub`, `Mul`, `Div`: image ∘ image, image ∘ per-channel constant, and folding of
//! constant ∘ constant (shape arithmetic included).

use superres_graph::{BinaryOp, Op, Tensor, UnaryOp};

use crate::onnx::consts::{self, Const, Data, SymOp};
use crate::onnx::proto::NodeProto;
use crate::onnx::{Importer, MAX_FOLDED, R, SHUFFLE_HINT, Val};

impl Importer<'_> {
    /// A constant operand as a scalar or `[C]` tensor, if it broadcasts per channel over an
    /// NCHW image with `c` channels.
    pub(in crate::onnx) fn per_channel(&self, n: &NodeProto, k: &Const, c: usize) -> R<Tensor> {
        let refuse = || {
            self.unsupported(
                n,
                format!(
                    "constant of shape {:?} does not broadcast per channel over an NCHW \
                     image of {c} channels",
                    k.shape
                ),
            )
        };
        if k.shape.len() > 4 {
            return Err(refuse());
        }
        let mut s = vec![1usize; 4 - k.shape.len()];
        s.extend(&k.shape);
        if s[0] != 1 || s[2] != 1 || s[3] != 1 || (s[1] != 1 && s[1] != c) {
            return Err(refuse());
        }
        let v = k
            .to_f32()
            .ok_or_else(|| self.unsupported(n, "constant depends on the input size".to_string()))?;
        Ok(if v.len() == 1 {
            Tensor::scalar(v[0])
        } else {
            Tensor::new(vec![c], v)
        })
    }

    pub(in crate::onnx) fn binary(&mut self, n: &NodeProto, name: &str, op: BinaryOp) -> R<()> {
        let a = self.input(n, 0)?;
        let b = self.input(n, 1)?;
        let out = match (a, b) {
            (Val::Image(x), Val::Image(y)) => {
                let (x, y) = (*x, *y);
                Val::Image(self.push(n, name, Op::Binary(op), vec![x, y])?)
            }
            (Val::Image(x), Val::Const(k)) => {
                let x = *x;
                let t = self.per_channel(n, k, self.g.channels(x))?;
                let kid = self.g.constant(&format!("{name}/operand"), t);
                Val::Image(self.push(n, name, Op::Binary(op), vec![x, kid])?)
            }
            (Val::Const(k), Val::Image(x)) => {
                let x = *x;
                let t = self.per_channel(n, k, self.g.channels(x))?;
                let kid = self.g.constant(&format!("{name}/operand"), t);
                let y = match op {
                    BinaryOp::Add | BinaryOp::Mul => {
                        self.push(n, name, Op::Binary(op), vec![x, kid])?
                    }
                    BinaryOp::Sub => {
                        let neg =
                            self.push(n, &format!("{name}/neg"), Op::Unary(UnaryOp::Neg), vec![x])?;
                        self.push(n, name, Op::Binary(BinaryOp::Add), vec![neg, kid])?
                    }
                    BinaryOp::Div => {
                        return Err(
                            self.unsupported(n, "dividing a constant by an image".to_string())
                        );
                    }
                };
                Val::Image(y)
            }
            (Val::Const(p), Val::Const(q)) => Val::Const(self.fold_binary(n, p, q, op)?),
            _ => return Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        };
        self.set(n, out)
    }

    pub(in crate::onnx) fn fold_binary(
        &self,
        n: &NodeProto,
        a: &Const,
        b: &Const,
        op: BinaryOp,
    ) -> R<Const> {
        let shape = consts::broadcast_shape(&a.shape, &b.shape).ok_or_else(|| {
            self.invalid(
                n,
                format!("shapes {:?} and {:?} do not broadcast", a.shape, b.shape),
            )
        })?;
        let total = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if total.is_none_or(|t| t > MAX_FOLDED) {
            return Err(self.unsupported(n, format!("a folded constant of shape {shape:?}")));
        }
        let ia = consts::broadcast_index(&a.shape, &shape);
        let ib = consts::broadcast_index(&b.shape, &shape);
        if let (Data::F32(x), Data::F32(y)) = (&a.data, &b.data) {
            let v = ia
                .iter()
                .zip(&ib)
                .map(|(&i, &j)| op.apply(x[i], y[j]))
                .collect();
            return Ok(Const::f32(shape, v));
        }
        let not_affine =
            || self.unsupported(n, "shape arithmetic beyond c + a·H + b·W".to_string());
        let (x, y) = (
            a.to_sym().ok_or_else(not_affine)?,
            b.to_sym().ok_or_else(not_affine)?,
        );
        let float = a.is_float() || b.is_float();
        let sop = match op {
            BinaryOp::Add => SymOp::Add,
            BinaryOp::Sub => SymOp::Sub,
            BinaryOp::Mul => SymOp::Mul,
            BinaryOp::Div => SymOp::Div,
        };
        let v = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| x[i].binary(sop, y[j], float))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(not_affine)?;
        Ok(Const::sym(shape, v, float))
    }
}
