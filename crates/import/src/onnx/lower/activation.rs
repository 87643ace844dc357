//! `Relu`, `Sigmoid`, `Tanh`, `LeakyRelu`, `PRelu`, `Clip`.

use superres_graph::{Activation, Op};

use crate::onnx::proto::NodeProto;
use crate::onnx::{Importer, R, Val};

impl Importer<'_> {
    pub(in crate::onnx) fn leaky_relu(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let alpha = self.attr_f(n, "alpha")?.unwrap_or(0.01);
        self.activation(n, name, Activation::LeakyRelu(alpha))
    }

    pub(in crate::onnx) fn prelu(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let x = self.image(n, 0)?;
        let c = self.g.channels(x);
        let slope = self.konst(n, 1)?;
        let slope = self.per_channel(n, slope, c)?;
        self.activation(n, name, Activation::PRelu(slope.into_data()))
    }

    pub(in crate::onnx) fn activation(
        &mut self,
        n: &NodeProto,
        name: &str,
        a: Activation,
    ) -> R<()> {
        let x = self.image(n, 0)?;
        let y = self.push(n, name, Op::Activation(a), vec![x])?;
        self.set(n, Val::Image(y))
    }

    pub(in crate::onnx) fn clip(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let mut min = self.attr_f(n, "min")?.unwrap_or(f32::NEG_INFINITY);
        let mut max = self.attr_f(n, "max")?.unwrap_or(f32::INFINITY);
        for (i, slot) in [(1, &mut min), (2, &mut max)] {
            if let Some(k) = self.opt_konst(n, i)? {
                *slot = k.scalar_f32().ok_or_else(|| {
                    self.invalid(n, format!("bound '{}' is not a scalar", n.input[i]))
                })?;
            }
        }
        self.activation(n, name, Activation::Clip { min, max })
    }
}
