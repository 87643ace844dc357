//! Where tests find the shared assets: OpenCV's model files, test photographs and OpenCV's
//! own outputs (the parity oracle). They are not part of the repository.
//!
//! Two settings:
//! - `SUPERRES_SHARED`: the folder, defaulting to `../shared` next to the workspace root.
//! - `SUPERRES_REQUIRE_SHARED`: when set (to anything but `0` or nothing), a missing folder
//!   fails the test that asked for it instead of skipping it. CI sets it, so a run without
//!   the assets cannot pass.
//!
//! A test that needs the assets calls [`shared_dir`] (or [`shared_or_skip!`]) and returns
//! early when it is `None`; the skip is printed so it is never silent. [`video`] makes test
//! clips with ffmpeg, under the same rule.

pub mod video;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// The environment variable that overrides the location of the shared assets.
pub const ENV: &str = "SUPERRES_SHARED";

/// The environment variable that turns a missing shared folder into a test failure.
pub const REQUIRE_ENV: &str = "SUPERRES_REQUIRE_SHARED";

/// What a test does about the shared assets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The assets are there.
    Found(PathBuf),
    /// They are missing and not required: the test skips, printing this message.
    Skip(String),
    /// They are missing and required: the test fails with this message.
    Fail(String),
}

/// Whether a value of [`REQUIRE_ENV`] asks for the assets: set, non-empty and not `0`.
pub fn required(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// Decides what to do about the shared folder `dir`, given the value of [`REQUIRE_ENV`]
/// (`None` when unset). Reads the file system only: the environment is the caller's.
pub fn lookup(require: Option<&OsStr>, dir: &Path) -> Lookup {
    if dir.join("reference").is_dir() {
        return Lookup::Found(dir.to_path_buf());
    }
    if required(require) {
        Lookup::Fail(format!(
            "{REQUIRE_ENV} is set but the shared test assets are not at {} (set {ENV} to \
             their folder)",
            dir.display()
        ))
    } else {
        Lookup::Skip(format!(
            "SKIPPED: shared test assets not found at {} (set {ENV} to their folder)",
            dir.display()
        ))
    }
}

/// The shared folder this process is configured to use: `$SUPERRES_SHARED`, else
/// `../shared` beside the workspace.
pub fn configured_dir() -> PathBuf {
    std::env::var_os(ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

/// The shared asset folder, or `None` (with a visible message) when it is absent.
///
/// # Panics
/// When the folder is absent and [`REQUIRE_ENV`] is set.
pub fn shared_dir() -> Option<PathBuf> {
    match lookup(std::env::var_os(REQUIRE_ENV).as_deref(), &configured_dir()) {
        Lookup::Found(dir) => Some(dir),
        Lookup::Skip(message) => {
            eprintln!("{message}");
            None
        }
        Lookup::Fail(message) => panic!("{message}"),
    }
}

/// Expands to the shared folder, or returns from the calling test after printing why.
/// Fails the test instead when [`REQUIRE_ENV`] is set (see [`shared_dir`]).
#[macro_export]
macro_rules! shared_or_skip {
    () => {
        match $crate::shared_dir() {
            Some(d) => d,
            None => return,
        }
    };
}

/// A float32 array read from a `.npy` file: shape and row-major values.
#[derive(Debug, Clone)]
pub struct Npy {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads a little-endian `<f4` C-order `.npy` file (what numpy writes for float32).
pub fn read_npy(path: &Path) -> Result<Npy, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(format!("{}: not a .npy file", path.display()));
    }
    let major = bytes[6];
    let (hlen, start) = if major == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + hlen]).map_err(|e| e.to_string())?;
    if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
        return Err(format!(
            "{}: unsupported npy header {header}",
            path.display()
        ));
    }
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("{}: no shape in header", path.display()))?;
    let shape: Vec<usize> = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let payload = &bytes[start + hlen..];
    let n: usize = shape.iter().product();
    if payload.len() != n * 4 {
        return Err(format!(
            "{}: payload is {} bytes, expected {}",
            path.display(),
            payload.len(),
            n * 4
        ));
    }
    let data = payload
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Npy { shape, data })
}

/// Converts an NCHW `[1, C, H, W]` array to `[H, W, C]` row-major data.
pub fn nchw_to_hwc(npy: &Npy) -> (usize, usize, usize, Vec<f32>) {
    let (c, h, w) = match npy.shape[..] {
        [1, c, h, w] => (c, h, w),
        [c, h, w] => (c, h, w),
        _ => panic!("expected an NCHW array, got shape {:?}", npy.shape),
    };
    let mut out = vec![0.0; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                out[(y * w + x) * c + ch] = npy.data[(ch * h + y) * w + x];
            }
        }
    }
    (h, w, c, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("superres-testdata-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary folder");
        dir
    }

    #[test]
    fn the_require_variable_counts_when_set_to_anything_but_0_or_empty() {
        assert!(!required(None));
        assert!(!required(Some(OsStr::new(""))));
        assert!(!required(Some(OsStr::new("0"))));
        assert!(required(Some(OsStr::new("1"))));
        assert!(required(Some(OsStr::new("yes"))));
    }

    #[test]
    fn a_missing_folder_skips_unless_required_then_fails() {
        let dir = temp("missing").join("nowhere");
        match lookup(None, &dir) {
            Lookup::Skip(m) => assert!(m.starts_with("SKIPPED") && m.contains(ENV), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            lookup(Some(OsStr::new("0")), &dir),
            Lookup::Skip(_)
        ));
        match lookup(Some(OsStr::new("1")), &dir) {
            Lookup::Fail(m) => {
                assert!(m.contains(REQUIRE_ENV), "{m}");
                assert!(m.contains(&dir.display().to_string()), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_folder_without_the_references_is_missing() {
        let dir = temp("empty");
        assert!(matches!(
            lookup(Some(OsStr::new("1")), &dir),
            Lookup::Fail(_)
        ));
        std::fs::create_dir(dir.join("reference")).expect("reference folder");
        assert_eq!(
            lookup(Some(OsStr::new("1")), &dir),
            Lookup::Found(dir.clone())
        );
        assert_eq!(lookup(None, &dir), Lookup::Found(dir.clone()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
