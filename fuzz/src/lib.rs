//! What the fuzz targets share: an allocator that turns an unbounded allocation into a
//! crash, and the image limits the targets decode under.
//!
//! libFuzzer's `-malloc_limit_mb` needs a sanitizer's allocator hooks, which a stable
//! toolchain does not build; [`BoundedAlloc`] checks the same thing itself. Every target
//! installs it as the global allocator, so any input that makes a reader ask for more than
//! [`MAX_ALLOCATION`] bytes at once, or hold more than [`MAX_LIVE`] bytes in all, aborts and
//! is saved by libFuzzer as a crash.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Largest single allocation a target may make: well above what a 64 KiB input can
/// legitimately need under [`image_limits`].
pub const MAX_ALLOCATION: usize = 512 << 20;
/// Most bytes a target may hold at once.
pub const MAX_LIVE: usize = 1536 << 20;

/// The system allocator, aborting on an allocation beyond [`MAX_ALLOCATION`] or
/// [`MAX_LIVE`].
pub struct BoundedAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);

fn over_limit(size: usize) -> ! {
    // No allocation here: the message is a static string written straight to stderr.
    let msg: &[u8] = if size > MAX_ALLOCATION {
        b"==fuzz== allocation over the per-allocation limit\n"
    } else {
        b"==fuzz== live allocations over the total limit\n"
    };
    unsafe extern "C" {
        fn write(fd: i32, buf: *const u8, count: usize) -> isize;
    }
    unsafe {
        write(2, msg.as_ptr(), msg.len());
    }
    std::process::abort();
}

/// Counts `grow` more live bytes for an allocation that will be `size` bytes.
fn reserve(size: usize, grow: usize) {
    if size > MAX_ALLOCATION || LIVE.fetch_add(grow, Ordering::Relaxed) + grow > MAX_LIVE {
        over_limit(size);
    }
}

unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size(), layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        reserve(layout.size(), layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            reserve(new_size, new_size - layout.size());
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The limits the image targets decode under: the service's defaults scaled down, so that
/// an input that respects them stays far inside [`MAX_ALLOCATION`].
pub fn image_limits() -> superres_imaging::Limits {
    superres_imaging::Limits {
        max_width: 8192,
        max_height: 8192,
        max_pixels: 16_000_000,
        max_alloc_bytes: 256 << 20,
    }
}
