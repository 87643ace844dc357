//! The header checks an upload goes through before it is queued: `probe` and `probe_header`
//! (the server's `check_header` is `probe_header` with the request's limits). Any bytes give
//! a header within the limits or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use superres_imaging::{probe, probe_header};

#[global_allocator]
static ALLOC: superres_fuzz::BoundedAlloc = superres_fuzz::BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let limits = superres_fuzz::image_limits();
    if let Ok((_, width, height)) = probe(data, &limits) {
        assert!(limits.check_dimensions(width, height).is_ok());
    }
    if let Ok(header) = probe_header(data, &limits) {
        assert!(limits.check_dimensions(header.width, header.height).is_ok());
        assert!(matches!(header.color_channels, 1 | 3));
        assert!(matches!(header.bytes_per_sample, 1 | 2));
    }
});
