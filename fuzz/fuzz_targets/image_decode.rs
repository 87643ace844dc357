//! Full decoding of an upload, as a worker does it: any bytes give a consistent image within
//! the limits or an error, never a panic, a hang or an allocation beyond the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use superres_imaging::decode;

#[global_allocator]
static ALLOC: superres_fuzz::BoundedAlloc = superres_fuzz::BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let limits = superres_fuzz::image_limits();
    if let Ok(image) = decode(data, &limits) {
        image
            .validate()
            .expect("decode returned an inconsistent image");
        assert!((image.width as u64) * (image.height as u64) <= limits.max_pixels);
    }
});
