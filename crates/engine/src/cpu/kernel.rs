//! What every convolution kernel is handed: the geometry, the epilogue and the checked
//! instruction set of a convolution ([`Spec`]), where its residual input is ([`Skip`]), and
//! the per-thread scratch and pointer wrapper of the parallel loops. A leaf below the
//! kernels, so no kernel module imports another's.

use std::cell::RefCell;

use superres_graph::Padding;

use super::epilogue::Epilogue;
use super::gemm::Isa;

/// The geometry of a convolution, without weights.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub kh: usize,
    pub kw: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub stride: usize,
    pub dilation: (usize, usize),
    pub padding: Padding,
}

/// A convolution's geometry, epilogue and instruction set: what a kernel needs beside its
/// packed weights.
pub struct Spec {
    pub shape: Shape,
    pub epilogue: Epilogue,
    /// Checked by `CpuBackend` before any kernel is built.
    pub isa: Isa,
}

/// Where the residual input of a convolution is.
#[derive(Clone, Copy)]
pub enum Skip<'a> {
    None,
    /// A separate tensor of the output's shape.
    Tensor(&'a [f32]),
    /// The output buffer already holds it (the convolution runs in place over its skip).
    InOutput,
}

/// A raw pointer that may cross threads; every user says why its accesses are disjoint.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);
// SAFETY: the pointer is only dereferenced on disjoint ranges (see each use).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

thread_local! {
    /// Per-thread scratch of the kernels (row bands, transform buffers).
    pub static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a per-thread zeroed-once scratch of at least `n` floats.
pub fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < n {
            s.resize(n, 0.0);
        }
        f(&mut s[..n])
    })
}
