//! The device kernels: CUDA C compiled at run time by NVRTC.
//!
//! Everything but the convolution products is ours ([`SOURCE`], `kernels.cu`): cuDNN has
//! no epilogue in the IR's order (bias, any activation, then EDSR's `x + 0.1·y`), no
//! depth-to-space and no 8-bit maps, and a handful of memory-bound kernels is easier to get
//! exactly right than a fused-graph API. The source needs no CUDA headers, so NVRTC compiles
//! it on any machine; it is compiled to a CUBIN for the exact architecture of each GPU
//! (not PTX, which a driver older than the NVRTC library could not JIT), except on a GPU
//! newer than the NVRTC library, which gets PTX for the newest architecture NVRTC knows and
//! lets the driver compile it ([`image_for`]).
//! `cargo test` compiles it for every supported architecture ([`TEST_ARCHS`]).

use std::ffi::{CString, c_char, c_int};

use cudarc::nvrtc::{result, sys};

/// The kernels' CUDA C source.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Architectures the kernels are checked to compile for: Turing to Hopper.
pub const TEST_ARCHS: [(u32, u32); 5] = [(7, 5), (8, 0), (8, 6), (8, 9), (9, 0)];

/// Storage type suffixes of the kernel names.
pub const TYPES: [&str; 3] = ["f32", "f16", "bf16"];

/// Kernel families; each exists once per storage type as `NAME_TYPE`.
pub const FAMILIES: [&str; 15] = [
    "pointwise",
    "binary",
    "depth_to_space",
    "resize",
    "concat",
    "pad",
    "border",
    "se_sum",
    "se_mean",
    "se_dense",
    "se_scale",
    "input_f32",
    "input_u8",
    "output_f32",
    "output_u8",
];

/// The name of a kernel for a storage type (`input_u8` + `f16` → `input_f16_u8`).
pub fn name(family: &str, ty: &str) -> String {
    match family.split_once('_') {
        Some((head @ ("input" | "output"), io)) => format!("{head}_{ty}_{io}"),
        _ => format!("{family}_{ty}"),
    }
}

/// Why the kernels did not compile.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("NVRTC is not available: {0}")]
    NoNvrtc(String),
    #[error("NVRTC failed for sm_{arch}: {log}")]
    Failed { arch: String, log: String },
}

/// Whether `libnvrtc` can be opened (never panics, unlike a first call into it).
pub fn nvrtc_present() -> bool {
    super::libs::preload();
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, e.g. `(13, 0)`.
pub fn nvrtc_version() -> Result<(i32, i32), CompileError> {
    if !nvrtc_present() {
        return Err(CompileError::NoNvrtc(
            "libnvrtc.so.13 or .12 not found (LD_LIBRARY_PATH, SUPERRES_CUDA_LIBS)".into(),
        ));
    }
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: out-pointers to locals.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CompileError::NoNvrtc(format!("{e:?}")))?;
    Ok((major, minor))
}

/// Compiles [`SOURCE`] to a CUBIN for compute capability `arch`.
pub fn compile(arch: (u32, u32)) -> Result<Vec<u8>, CompileError> {
    build(arch, false)
}

/// Compiles [`SOURCE`] to PTX for the virtual architecture `compute_XY` (NUL-terminated, as
/// `cuModuleLoadData` takes it): for a GPU newer than the NVRTC library knows, the driver
/// compiles this PTX for it.
pub fn compile_ptx(arch: (u32, u32)) -> Result<Vec<u8>, CompileError> {
    build(arch, true)
}

/// The architectures this NVRTC compiles for, as compute capabilities.
pub fn supported_archs() -> Result<Vec<(u32, u32)>, CompileError> {
    nvrtc_version()?;
    let mut n: c_int = 0;
    // SAFETY: out-parameter, then a buffer of the size NVRTC reported.
    unsafe {
        sys::nvrtcGetNumSupportedArchs(&mut n)
            .result()
            .map_err(|e| CompileError::NoNvrtc(format!("{e:?}")))?;
        let mut archs = vec![0 as c_int; n.max(0) as usize];
        sys::nvrtcGetSupportedArchs(archs.as_mut_ptr())
            .result()
            .map_err(|e| CompileError::NoNvrtc(format!("{e:?}")))?;
        Ok(archs
            .into_iter()
            .map(|a| (a as u32 / 10, a as u32 % 10))
            .collect())
    }
}

/// The module image for a GPU of compute capability `cc`: a CUBIN for it when NVRTC knows
/// the architecture, else PTX for the newest architecture NVRTC knows below it.
pub fn image_for(cc: (u32, u32)) -> Result<Vec<u8>, CompileError> {
    let archs = supported_archs()?;
    if archs.contains(&cc) {
        return compile_cached(cc);
    }
    match archs.into_iter().filter(|&a| a <= cc).max() {
        Some(a) => compile_ptx(a),
        None => Err(CompileError::Failed {
            arch: format!("{}{}", cc.0, cc.1),
            log: "this NVRTC knows no architecture at or below the GPU's".into(),
        }),
    }
}

fn build(arch: (u32, u32), ptx: bool) -> Result<Vec<u8>, CompileError> {
    nvrtc_version()?;
    let tag = format!("{}{}", arch.0, arch.1);
    let failed = |log: String| CompileError::Failed {
        arch: tag.clone(),
        log,
    };
    let src = CString::new(SOURCE).map_err(|e| failed(e.to_string()))?;
    let prog = result::create_program(&src, Some(c"superres_kernels.cu"))
        .map_err(|e| failed(format!("{e:?}")))?;
    let options = [
        format!(
            "--gpu-architecture={}_{tag}",
            if ptx { "compute" } else { "sm" }
        ),
        "--fmad=false".to_string(),
        "--std=c++17".to_string(),
    ];
    // SAFETY: `prog` was created above and is destroyed once, below.
    unsafe {
        let compiled = result::compile_program(prog, &options);
        let out = match compiled {
            Ok(()) if ptx => result::get_ptx(prog)
                .map(|p| {
                    let mut bytes: Vec<u8> = p.iter().map(|&c| c as u8).collect();
                    if bytes.last() != Some(&0) {
                        bytes.push(0);
                    }
                    bytes
                })
                .map_err(|e| failed(format!("{e:?}"))),
            Ok(()) => cubin(prog).map_err(|e| failed(format!("{e:?}"))),
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| {
                        let bytes: Vec<u8> = l.iter().map(|&c| c as u8).collect();
                        String::from_utf8_lossy(&bytes)
                            .trim_end_matches('\0')
                            .to_string()
                    })
                    .unwrap_or_default();
                Err(failed(format!("{e:?}: {log}")))
            }
        };
        let _ = result::destroy_program(prog);
        out
    }
}

/// [`compile`] through a cache of CUBINs on disk (`$SUPERRES_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/superres`, else `~/.cache/superres`), keyed by a hash of the source, the
/// NVRTC version and the architecture: a process starts in milliseconds instead of the
/// second NVRTC takes. Any cache error falls back to compiling.
pub fn compile_cached(arch: (u32, u32)) -> Result<Vec<u8>, CompileError> {
    let dir = std::env::var_os("SUPERRES_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| std::path::Path::new(&d).join("superres"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| std::path::Path::new(&d).join(".cache/superres"))
        });
    compile_cached_in(dir.as_deref(), arch)
}

/// [`compile_cached`] with the cache in `dir` (`None`: no cache).
pub fn compile_cached_in(
    dir: Option<&std::path::Path>,
    arch: (u32, u32),
) -> Result<Vec<u8>, CompileError> {
    let version = nvrtc_version()?;
    let key = fnv1a(format!("{SOURCE}\0{version:?}\0{arch:?}").as_bytes());
    let path = dir.map(|d| d.join(format!("kernels-{key:016x}-sm{}{}.cubin", arch.0, arch.1)));
    if let Some(p) = &path
        && let Ok(bytes) = std::fs::read(p)
        && bytes.starts_with(b"\x7fELF")
    {
        return Ok(bytes);
    }
    let cubin = compile(arch)?;
    if let Some(p) = &path
        && let Some(d) = p.parent()
        && std::fs::create_dir_all(d).is_ok()
    {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &cubin).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
    }
    Ok(cubin)
}

/// 64-bit FNV-1a: a stable hash for cache keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// # Safety
/// `prog` must be a compiled, live NVRTC program.
unsafe fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>, sys::nvrtcResult> {
    let mut size = 0usize;
    // SAFETY: as the function's contract says.
    unsafe {
        let r = sys::nvrtcGetCUBINSize(prog, &mut size);
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(r);
        }
        let mut buf = vec![0u8; size];
        let r = sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char);
        if r != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(r);
        }
        Ok(buf)
    }
}

/// Every kernel name the backend launches.
pub fn all_names() -> Vec<String> {
    TYPES
        .iter()
        .flat_map(|ty| FAMILIES.iter().map(move |f| name(f, ty)))
        .collect()
}
