//! The ONNX reader, through the same entry point as `superres models` and the server's model
//! loading: any bytes give a model or an error, never a panic, a hang or an unbounded
//! allocation. The corpus is seeded with `.onnx` files; inputs the format detection sends to
//! the TensorFlow reader are exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use superres_import::{Overrides, load_bytes};

#[global_allocator]
static ALLOC: superres_fuzz::BoundedAlloc = superres_fuzz::BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let _ = load_bytes(data, "fuzz", Overrides::default());
});
