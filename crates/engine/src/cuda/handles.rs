//! Owned CUDA handles and memory, and the translation of CUDA and cuDNN status codes into
//! engine errors: every raw resource of the backend lives in one of these structs, which
//! frees it exactly once.

use std::ffi::c_void;

use cudarc::cudnn::sys as dnn;
use cudarc::driver::sys as cu;

use crate::EngineError;

// ---------------------------------------------------------------------------------------
// Errors

pub(super) fn cu_check(r: cu::CUresult, what: &str) -> Result<(), EngineError> {
    match r {
        cu::CUresult::CUDA_SUCCESS => Ok(()),
        cu::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Err(EngineError::OutOfMemory(format!(
            "{what}: the GPU is out of memory"
        ))),
        other => Err(EngineError::Device(format!("{what}: {other:?}"))),
    }
}

pub(super) fn dnn_check(r: dnn::cudnnStatus_t, what: &str) -> Result<(), EngineError> {
    if r == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    let name = format!("{r:?}");
    if name.contains("ALLOC") {
        Err(EngineError::OutOfMemory(format!("{what}: {name}")))
    } else {
        Err(EngineError::Device(format!("cuDNN {what}: {name}")))
    }
}

// ---------------------------------------------------------------------------------------
// Memory

/// A device pointer with its size.
pub(super) struct DeviceMem {
    pub(super) ptr: cu::CUdeviceptr,
    pub(super) bytes: usize,
}

impl DeviceMem {
    pub(super) fn alloc(bytes: usize, what: &str) -> Result<DeviceMem, EngineError> {
        let mut ptr: cu::CUdeviceptr = 0;
        // SAFETY: the owning GPU's context is current (every caller sets it); out-parameter.
        cu_check(unsafe { cu::cuMemAlloc_v2(&mut ptr, bytes.max(256)) }, what)?;
        Ok(DeviceMem { ptr, bytes })
    }
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from cuMemAlloc and is freed once; the memory is not in use:
        // lanes are synchronised before their memory is dropped.
        unsafe {
            let _ = cu::cuMemFree_v2(self.ptr);
        }
    }
}

/// Page-locked host memory (fast, asynchronous copies).
pub(super) struct Pinned {
    pub(super) ptr: *mut u8,
    pub(super) bytes: usize,
}

// SAFETY: page-locked memory owned by this struct alone; any thread may read and write it
// (the owner synchronises with the copies through the submission's events).
unsafe impl Send for Pinned {}

impl Pinned {
    pub(super) fn alloc(bytes: usize) -> Result<Pinned, EngineError> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: out-parameter; the context is current.
        cu_check(
            unsafe { cu::cuMemHostAlloc(&mut p, bytes.max(64), 0) },
            "pinned host memory",
        )?;
        Ok(Pinned {
            ptr: p as *mut u8,
            bytes,
        })
    }

    pub(super) fn slice(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.bytes, "pinned buffer too small");
        // SAFETY: `ptr` points to `bytes` bytes owned by this struct; `len <= bytes`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        // SAFETY: allocated by cuMemHostAlloc, freed once, no copy in flight (lanes are
        // synchronised before they are dropped).
        unsafe {
            let _ = cu::cuMemFreeHost(self.ptr as *mut c_void);
        }
    }
}
/// A CUDA event (timing enabled), destroyed with its struct.
pub(super) struct Event(pub(super) cu::CUevent);

impl Event {
    pub(super) fn new() -> Result<Event, EngineError> {
        let mut e: cu::CUevent = std::ptr::null_mut();
        // SAFETY: out-parameter; the caller made the context current.
        cu_check(
            unsafe { cu::cuEventCreate(&mut e, cu::CUevent_flags::CU_EVENT_DEFAULT as u32) },
            "cuEventCreate",
        )?;
        Ok(Event(e))
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: created in `new`, destroyed once; a pending record completes first.
        unsafe {
            let _ = cu::cuEventDestroy_v2(self.0);
        }
    }
}

/// `cuEventElapsedTime`, looked up by hand: the 13.0 bindings name only its `_v2`, which
/// drivers before 12.8 lack (a missing symbol would panic inside `cudarc`).
pub(super) fn elapsed_ms(start: cu::CUevent, end: cu::CUevent, ms: &mut f32) -> bool {
    pub(super) type F = unsafe extern "C" fn(*mut f32, cu::CUevent, cu::CUevent) -> cu::CUresult;
    // SAFETY: the library is loaded (a lane exists); the symbol has this C signature in
    // every CUDA 12 and 13 driver; both events were recorded and have completed.
    unsafe {
        let lib = cu::culib();
        let f = lib
            .get::<F>(b"cuEventElapsedTime_v2\0")
            .or_else(|_| lib.get::<F>(b"cuEventElapsedTime\0"));
        match f {
            Ok(f) => f(ms, start, end) == cu::CUresult::CUDA_SUCCESS,
            Err(_) => false,
        }
    }
}
