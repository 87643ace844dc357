//! Helpers shared by the TensorFlow import tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use superres_graph::{Graph, Tensor};

/// Every GraphDef under the shared model folders.
pub fn tf_models(shared: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in [
        "models/opencv",
        "models/opencv/opencv_contrib_2019",
        "models/synthetic",
    ] {
        let Ok(rd) = std::fs::read_dir(shared.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) == Some("pb") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// A small deterministic generator (xorshift64*), so inputs are reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn image(&mut self, h: usize, w: usize, c: usize, lo: f32, hi: f32) -> Tensor {
        Tensor::image(
            h,
            w,
            c,
            (0..h * w * c).map(|_| self.uniform(lo, hi)).collect(),
        )
    }
}

pub fn run(g: &Graph, x: &Tensor) -> Vec<Tensor> {
    superres_engine::cpu::reference::run(g, x)
        .unwrap_or_else(|e| panic!("the reference interpreter failed: {e}"))
}

/// `Ok` when both tensors have the same shape and the same values bit for bit (any NaN
/// equals any NaN; +0 and -0 are told apart).
pub fn same_bits(a: &Tensor, b: &Tensor) -> Result<(), String> {
    if a.shape() != b.shape() {
        return Err(format!("shapes differ: {:?} vs {:?}", a.shape(), b.shape()));
    }
    let diff: Vec<usize> = a
        .data()
        .iter()
        .zip(b.data())
        .enumerate()
        .filter(|(_, (x, y))| x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()))
        .map(|(i, _)| i)
        .collect();
    match diff.first() {
        None => Ok(()),
        Some(&i) => Err(format!(
            "{} of {} values differ; first at index {i}: {} vs {}",
            diff.len(),
            a.len(),
            a.data()[i],
            b.data()[i]
        )),
    }
}

/// Checks `got` against `want` with `|got - want| <= atol + rtol * |want|` and reports the
/// worst value otherwise.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0.0f32, 0usize);
    let mut bad = 0usize;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        // NaN counts as outside.
        if err.is_nan() || err > atol + rtol * w.abs() {
            bad += 1;
        }
        if err.is_nan() || err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        bad == 0,
        "{what}: {bad} of {} values outside rtol {rtol} / atol {atol}; worst |diff| {} at index {} (got {}, want {})",
        got.len(),
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

/// The float32 arrays of a `.npz` (a zip of `.npy` files, stored or deflated), by name
/// without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u32_at = |o: usize| {
        u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
    };
    let eocd = (0..bytes.len().saturating_sub(21))
        .rev()
        .find(|&o| bytes[o..o + 4] == *b"PK\x05\x06")
        .unwrap_or_else(|| panic!("{}: no zip end record", path.display()));
    let count = u16_at(eocd + 10);
    let mut at = u32_at(eocd + 16);
    let mut out = Vec::new();
    for _ in 0..count {
        assert_eq!(&bytes[at..at + 4], b"PK\x01\x02", "central directory entry");
        let method = u16_at(at + 10);
        let csize = u32_at(at + 20);
        let nlen = u16_at(at + 28);
        let elen = u16_at(at + 30);
        let clen = u16_at(at + 32);
        let local = u32_at(at + 42);
        let name = String::from_utf8_lossy(&bytes[at + 46..at + 46 + nlen]).into_owned();
        at += 46 + nlen + elen + clen;
        let lnlen = u16_at(local + 26);
        let lelen = u16_at(local + 28);
        let start = local + 30 + lnlen + lelen;
        let raw = &bytes[start..start + csize];
        let npy = match method {
            0 => raw.to_vec(),
            8 => miniz_oxide::inflate::decompress_to_vec(raw)
                .unwrap_or_else(|e| panic!("{name}: inflate failed: {e:?}")),
            m => panic!("{name}: zip method {m}"),
        };
        let (shape, data) = parse_npy(&npy, &name);
        out.push((name.trim_end_matches(".npy").to_string(), shape, data));
    }
    out
}

fn parse_npy(b: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    assert_eq!(&b[..6], b"\x93NUMPY", "{name}: not a .npy");
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).expect("ascii header");
    assert!(header.contains("'<f4'"), "{name}: not float32: {header}");
    let shape: Vec<usize> = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("dimension"))
        .collect();
    let data = b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}
