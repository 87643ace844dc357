//! Where tests find the shared assets: OpenCV's model files, test photographs and OpenCV's
//! own outputs (the parity oracle). They are not part of the repository.
//!
//! One setting: the environment variable `SUPERRES_SHARED`, defaulting to `../shared` next to
//! the workspace root. A test that needs the assets calls [`shared_dir`] and returns early
//! when it is `None`; the skip is printed so it is never silent.

use std::path::{Path, PathBuf};

/// The environment variable that overrides the location of the shared assets.
pub const ENV: &str = "SUPERRES_SHARED";

/// The shared asset folder, or `None` (with a visible message) when it is absent.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os(ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    if dir.join("reference").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: shared test assets not found at {} (set {ENV} to their folder)",
            dir.display()
        );
        None
    }
}

/// Expands to the shared folder, or returns from the calling test after printing why.
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
