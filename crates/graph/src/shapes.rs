//! Concrete sizes: the `(h, w, c)` of every value for one input size.

use crate::{Graph, Op};

/// Why a graph cannot run at an input size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    /// A kernel or crop leaves no pixel.
    #[error("an image of {h}×{w} is too small for node '{node}'")]
    TooSmall { h: usize, w: usize, node: String },
    /// Operands that must agree do not, or a size does not divide.
    #[error("node '{node}': {message}")]
    Mismatch { node: String, message: String },
}

impl Graph {
    /// The `(h, w, c)` of every value for an `h × w` input (zeros for constants), or why the
    /// graph cannot run at that size.
    pub fn shapes(&self, h: usize, w: usize) -> Result<Vec<(usize, usize, usize)>, ShapeError> {
        let mut shapes = vec![(0, 0, 0); self.nodes.len()];
        let mismatch = |name: &str| ShapeError::Mismatch {
            node: name.to_string(),
            message: format!("operand sizes differ for a {h}×{w} input"),
        };
        let too_small = |name: &str| ShapeError::TooSmall {
            h,
            w,
            node: name.to_string(),
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let c = node.channels.unwrap_or(0);
            let arg = |k: usize| shapes[node.inputs[k].0];
            shapes[i] = match &node.op {
                Op::Input { .. } => (h, w, c),
                Op::Const(_) => (0, 0, 0),
                Op::Conv2d(conv) => {
                    let (ih, iw, _) = arg(0);
                    let (oh, ow) = conv
                        .output_size(ih, iw)
                        .filter(|&(a, b)| a > 0 && b > 0)
                        .ok_or_else(|| too_small(&node.name))?;
                    if conv.epilogue.residual.is_some() && arg(1) != (oh, ow, c) {
                        return Err(mismatch(&node.name));
                    }
                    (oh, ow, c)
                }
                Op::Binary(_) => {
                    let (a, b) = (arg(0), arg(1));
                    if b != (0, 0, 0) && b != a {
                        return Err(mismatch(&node.name));
                    }
                    a
                }
                Op::Unary(_) | Op::Activation(_) | Op::SqueezeExcite(_) => arg(0),
                Op::DepthToSpace { block, .. } => {
                    let (ih, iw, _) = arg(0);
                    (ih * block, iw * block, c)
                }
                Op::Resize { factor, mode } => {
                    let (ih, iw, _) = arg(0);
                    let d = mode.down();
                    if (ih * factor) % d != 0 || (iw * factor) % d != 0 {
                        return Err(ShapeError::Mismatch {
                            node: node.name.clone(),
                            message: format!(
                                "a {ih}×{iw} value does not resize by {factor}/{d} to whole \
                                 pixels (the input size must be a multiple of {d})"
                            ),
                        });
                    }
                    (ih * factor / d, iw * factor / d, c)
                }
                Op::Concat => {
                    let (ih, iw, _) = arg(0);
                    if (1..node.inputs.len()).any(|k| (arg(k).0, arg(k).1) != (ih, iw)) {
                        return Err(mismatch(&node.name));
                    }
                    (ih, iw, c)
                }
                Op::Border(b) => {
                    let (ih, iw, _) = arg(0);
                    let (oh, ow) = b.output_size(ih, iw).ok_or_else(|| too_small(&node.name))?;
                    (oh, ow, c)
                }
            };
        }
        Ok(shapes)
    }
}
