//! The model IR of superres: a small dataflow graph of image operators.
//!
//! Where it sits in the data path: importers (`superres-import`) translate TensorFlow
//! GraphDef and ONNX files *into* this IR; backends (`superres-engine`) plan and execute it.
//! Neither side knows about the other, so a new file format never touches a kernel and a new
//! kernel never touches a file format.
//!
//! Conventions, chosen for super-resolution networks:
//! - Every activation is one image: a `[H, W, C]` tensor (NHWC with the batch of 1 implied),
//!   `f32`, channels innermost. H and W are only known when an image arrives, so the IR stores
//!   channel counts and lets spatial sizes follow from the operators.
//! - Convolution weights are stored once, in `[kh, kw, cin/groups, cout]` (TensorFlow's HWIO)
//!   layout, already dequantised (see [`passes`]).
//! - Nodes are stored in topological order; a [`ValueId`] is the index of the node that
//!   produces the value (every node has exactly one output).
//!
//! ```
//! use superres_graph::{Graph, Op, Conv2d, Activation};
//! let mut g = Graph::new();
//! let x = g.input("image", 1);
//! let conv = Conv2d::same(3, 3, 1, 4, vec![0.0; 3 * 3 * 4], Some(vec![0.5; 4]));
//! let y = g.push("conv", Op::Conv2d(conv), vec![x]).unwrap();
//! let y = g.push("shuffle", Op::DepthToSpace { block: 2, mode: superres_graph::DepthToSpaceMode::Dcr }, vec![y]).unwrap();
//! g.output("out", y);
//! assert_eq!(g.channels(y), 1);
//! assert_eq!(g.scale_factor(y), Some(2));
//! ```

mod graph;
pub mod passes;
mod receptive;
mod shapes;
mod split;
mod tensor;

pub use graph::{
    Activation, BinaryOp, Border, Conv2d, Dense, DepthToSpaceMode, Epilogue, Graph, GraphError,
    Node, Op, Padding, ResizeMode, SqueezeExcite, UnaryOp, ValueId, cubic_taps, cubic_weights,
};
pub use receptive::ReceptiveField;
pub use shapes::ShapeError;
pub use tensor::Tensor;
