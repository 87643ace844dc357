//! The lowering of ONNX nodes onto IR operators, one file per operator family. Each file adds
//! methods to `Importer`; `Importer::node` dispatches to them.

mod activation;
mod conv;
mod elementwise;
mod fold;
mod shape;
