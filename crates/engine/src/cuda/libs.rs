//! Finding and loading the CUDA libraries at run time.
//!
//! Nothing CUDA is linked at build time: `cudarc` opens `libcuda`, `libnvrtc` and `libcudnn`
//! with `dlopen` when they are first used, by their sonames (`libnvrtc.so.13` or `.12`,
//! `libcudnn.so.9`, `libcuda.so.1`), so one build runs with the CUDA 12 and 13 library lines.
//! The loader finds them on `LD_LIBRARY_PATH` and in the `ldconfig` cache. Python
//! installations keep them in `site-packages/nvidia/*/lib` (PyTorch's wheels, or
//! `pip install nvidia-cuda-nvrtc nvidia-cudnn-cu13`), where the loader does not look: the
//! folders named by `SUPERRES_CUDA_LIBS` (separated by `:`), then those of the active
//! virtual environment, are searched first and a library found there is opened by its full
//! path. A later `dlopen` of the same soname returns that library.
//!
//! `cudarc` panics when a library is missing, so every entry point here checks presence
//! first (`is_culib_present`) and reports what is missing instead.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Folders searched before the system loader's.
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(v) = std::env::var_os("SUPERRES_CUDA_LIBS") {
        dirs.extend(std::env::split_paths(&v));
    }
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(root) = std::env::var_os(var) {
            dirs.extend(nvidia_wheel_dirs(Path::new(&root)));
        }
    }
    dirs
}

/// `lib/python3.*/site-packages/nvidia/*/lib` under a Python prefix.
fn nvidia_wheel_dirs(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(libdir) = std::fs::read_dir(prefix.join("lib")) else {
        return out;
    };
    for py in libdir.flatten() {
        let nvidia = py.path().join("site-packages").join("nvidia");
        let Ok(pkgs) = std::fs::read_dir(&nvidia) else {
            continue;
        };
        for pkg in pkgs.flatten() {
            let lib = pkg.path().join("lib");
            if lib.is_dir() {
                out.push(lib);
            }
        }
    }
    out.sort();
    out
}

/// Library file names tried, newest line first.
const NAMES: &[(&str, &[&str])] = &[
    ("cuda", &["libcuda.so.1", "libcuda.so"]),
    (
        "nvrtc",
        &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
    ),
    ("cudnn", &["libcudnn.so.9", "libcudnn.so"]),
    ("nvml", &["libnvidia-ml.so.1", "libnvidia-ml.so"]),
];

/// Opens every library that the search folders hold by its full path, once per process, so
/// that `cudarc`'s later `dlopen` by soname finds it. The handles stay open for the
/// process's life (a `dlclose` would unload code that may still run).
pub fn preload() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dirs = search_dirs();
        for (_, names) in NAMES {
            'names: for name in *names {
                for dir in &dirs {
                    let path = dir.join(name);
                    if path.is_file() {
                        // SAFETY: loading a shared library runs its initialisers; these are
                        // NVIDIA's own CUDA libraries, found under the names they ship as.
                        if let Ok(lib) = unsafe { libloading::Library::new(&path) } {
                            std::mem::forget(lib);
                            break 'names;
                        }
                    }
                }
            }
        }
    });
}

/// Where a library was found, for `superres devices`: the path the loader resolved, or
/// `None` when it cannot be opened.
pub fn locate(lib: &str) -> Option<String> {
    preload();
    let names = NAMES.iter().find(|(l, _)| *l == lib)?.1;
    for name in names {
        // SAFETY: as in `preload`.
        if let Ok(lib) = unsafe { libloading::Library::new(*name) } {
            let path = loaded_path(name).unwrap_or_else(|| (*name).to_string());
            drop(lib);
            return Some(path);
        }
    }
    None
}

/// The file a loaded soname maps to, read from `/proc/self/maps`.
fn loaded_path(soname: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let stem = soname.split(".so").next()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&format!("{stem}.so")))
        })
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_wheel_folders_under_a_prefix() {
        let root = std::env::temp_dir().join(format!("superres-libs-{}", std::process::id()));
        let lib = root.join("lib/python3.12/site-packages/nvidia/cu13/lib");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(root.join("lib/python3.12/site-packages/nvidia/cudnn/lib"))
            .unwrap();
        let dirs = nvidia_wheel_dirs(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(dirs.len(), 2, "{dirs:?}");
        assert!(dirs[0].ends_with("nvidia/cu13/lib"), "{dirs:?}");
        assert!(dirs[1].ends_with("nvidia/cudnn/lib"), "{dirs:?}");
    }

    #[test]
    fn an_absent_library_is_not_located() {
        assert_eq!(
            NAMES.iter().find(|(l, _)| *l == "nosuchlib"),
            None,
            "unknown names are not searched"
        );
        assert_eq!(locate("nosuchlib"), None);
    }
}
