//! Constant tensors seen during import: weights (`f32`) and small integer or float tensors
//! that describe shapes, which may depend symbolically on the input's height and width.

use super::proto::{TensorProto, data_type as dt};

/// A scalar of a shape computation: `c + h·H + w·W`, where `H` and `W` are the input
/// image's height and width (unknown when the model accepts any size).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sym {
    pub c: f64,
    pub h: f64,
    pub w: f64,
}

impl Sym {
    pub fn k(c: f64) -> Sym {
        Sym { c, h: 0.0, w: 0.0 }
    }

    /// The value, if it does not depend on the input size.
    pub fn konst(self) -> Option<f64> {
        (self.h == 0.0 && self.w == 0.0).then_some(self.c)
    }

    fn integral(self) -> bool {
        self.c.fract() == 0.0 && self.h.fract() == 0.0 && self.w.fract() == 0.0
    }

    /// Applies a rounding function: exact on constants; symbolic values must already be
    /// integral multiples of `H` and `W` (for which every rounding is the identity).
    pub fn round_with(self, f: fn(f64) -> f64) -> Option<Sym> {
        match self.konst() {
            Some(v) => Some(Sym::k(f(v))),
            None => self.integral().then_some(self),
        }
    }

    fn add(self, o: Sym) -> Sym {
        Sym {
            c: self.c + o.c,
            h: self.h + o.h,
            w: self.w + o.w,
        }
    }

    fn scale(self, f: f64) -> Sym {
        Sym {
            c: self.c * f,
            h: self.h * f,
            w: self.w * f,
        }
    }

    /// Elementwise arithmetic; `None` when the result is not affine in `H` and `W`.
    pub fn binary(self, op: SymOp, o: Sym, float: bool) -> Option<Sym> {
        match op {
            SymOp::Add => Some(self.add(o)),
            SymOp::Sub => Some(self.add(o.scale(-1.0))),
            SymOp::Mul => match (self.konst(), o.konst()) {
                (Some(a), _) => Some(o.scale(a)),
                (_, Some(b)) => Some(self.scale(b)),
                _ => None,
            },
            SymOp::Div => {
                let d = o.konst().filter(|d| *d != 0.0)?;
                if float {
                    return Some(self.scale(1.0 / d));
                }
                match self.konst() {
                    Some(a) => Some(Sym::k((a / d).trunc())),
                    None => {
                        let q = self.scale(1.0 / d);
                        q.integral().then_some(q)
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// The values of a constant.
#[derive(Clone, Debug)]
pub enum Data {
    /// Floating-point data (weights), converted to `f32`.
    F32(Vec<f32>),
    /// Integer or floating-point shape arithmetic.
    Sym { v: Vec<Sym>, float: bool },
}

/// A constant tensor with its ONNX shape.
#[derive(Clone, Debug)]
pub struct Const {
    pub shape: Vec<usize>,
    pub data: Data,
}

/// Float constants with at most this many values can take part in shape arithmetic.
const SMALL: usize = 64;

impl Const {
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Const {
        Const {
            shape,
            data: Data::F32(v),
        }
    }

    pub fn sym(shape: Vec<usize>, v: Vec<Sym>, float: bool) -> Const {
        Const {
            shape,
            data: Data::Sym { v, float },
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::Sym { v, .. } => v.len(),
        }
    }

    pub fn is_float(&self) -> bool {
        match &self.data {
            Data::F32(_) => true,
            Data::Sym { float, .. } => *float,
        }
    }

    /// The values as `f32`, if none depends on the input size.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        match &self.data {
            Data::F32(v) => Some(v.clone()),
            Data::Sym { v, .. } => v.iter().map(|s| s.konst().map(|x| x as f32)).collect(),
        }
    }

    /// The values as symbolic scalars (`None` for large float tensors).
    pub fn to_sym(&self) -> Option<Vec<Sym>> {
        match &self.data {
            Data::F32(v) if v.len() <= SMALL => Some(v.iter().map(|&x| Sym::k(x as f64)).collect()),
            Data::F32(_) => None,
            Data::Sym { v, .. } => Some(v.clone()),
        }
    }

    /// The values as integers, if all are known and integral.
    pub fn ints(&self) -> Option<Vec<i64>> {
        self.to_sym()?
            .iter()
            .map(|s| {
                s.konst()
                    .filter(|v| v.fract() == 0.0 && v.abs() < 9.0e15)
                    .map(|v| v as i64)
            })
            .collect()
    }

    /// The single value of a one-element constant.
    pub fn scalar_f32(&self) -> Option<f32> {
        let v = self.to_f32()?;
        (v.len() == 1).then(|| v[0])
    }

    /// The same values under another shape (sizes already checked by the caller).
    pub fn with_shape(mut self, shape: Vec<usize>) -> Const {
        self.shape = shape;
        self
    }

    /// Selects elements of a rank-0 or rank-1 constant by flat index.
    pub fn select(&self, idx: &[usize]) -> Const {
        match &self.data {
            Data::F32(v) => Const::f32(vec![idx.len()], idx.iter().map(|&i| v[i]).collect()),
            Data::Sym { v, float } => {
                Const::sym(vec![idx.len()], idx.iter().map(|&i| v[i]).collect(), *float)
            }
        }
    }

    /// Concatenates rank-1 constants.
    pub fn concat(parts: &[&Const]) -> Option<Const> {
        if parts.iter().all(|p| matches!(p.data, Data::F32(_))) {
            let mut v = Vec::new();
            for p in parts {
                v.extend(p.to_f32()?);
            }
            return Some(Const::f32(vec![v.len()], v));
        }
        let mut v = Vec::new();
        for p in parts {
            v.extend(p.to_sym()?);
        }
        let float = parts.iter().any(|p| p.is_float());
        Some(Const::sym(vec![v.len()], v, float))
    }

    /// Permutes the axes (`perm` already checked to be a permutation of the rank).
    pub fn transpose(&self, perm: &[usize]) -> Const {
        let rank = self.shape.len();
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let in_strides = strides(&self.shape);
        let n = self.len();
        let mut src = Vec::with_capacity(n);
        let mut idx = vec![0usize; rank];
        for _ in 0..n {
            src.push(
                (0..rank)
                    .map(|d| idx[d] * in_strides[perm[d]])
                    .sum::<usize>(),
            );
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < out_shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let mut out = self.select(&src);
        out.shape = out_shape;
        out
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        // Wrapping: a shape with a zero dimension has no elements to address.
        s[d] = s[d + 1].wrapping_mul(shape[d + 1]);
    }
    s
}

/// NumPy broadcasting of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let at = |s: &[usize], d: usize| -> usize {
        let off = rank - s.len();
        if d < off { 1 } else { s[d - off] }
    };
    (0..rank)
        .map(|d| match (at(a, d), at(b, d)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// For each flat index of `out`, the flat index into a tensor of shape `s` broadcast to it.
pub fn broadcast_index(s: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let off = rank - s.len();
    let st = strides(s);
    let n: usize = out.iter().product();
    let mut res = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let mut k = 0;
        for d in off..rank {
            if s[d - off] != 1 {
                k += idx[d].wrapping_mul(st[d - off]);
            }
        }
        res.push(k);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < out[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    res
}

/// Converts an IEEE half-precision value.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e: i32 = -14;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (((e + 127) as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Why a tensor could not be read.
pub enum TensorError {
    External,
    Invalid(String),
}

/// Reads a `TensorProto`: floating types become [`Data::F32`], integer types [`Data::Sym`].
pub fn from_proto(t: &TensorProto) -> Result<Const, TensorError> {
    if t.data_location == 1 || !t.external_data.is_empty() {
        return Err(TensorError::External);
    }
    let bad = |m: String| TensorError::Invalid(m);
    let mut shape = Vec::with_capacity(t.dims.len());
    let mut n: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| bad(format!("dimensions {:?} overflow", t.dims)))?;
        shape.push(d);
    }
    let raw = &t.raw_data;
    let use_raw = !raw.is_empty() || n == 0;
    let elem = match t.data_type {
        dt::FLOAT | dt::INT32 | dt::UINT32 => 4,
        dt::DOUBLE | dt::INT64 | dt::UINT64 => 8,
        dt::FLOAT16 | dt::BFLOAT16 | dt::INT16 | dt::UINT16 => 2,
        dt::INT8 | dt::UINT8 | dt::BOOL => 1,
        other => return Err(bad(format!("unsupported data type {other}"))),
    };
    if use_raw && raw.len() != n.saturating_mul(elem) {
        return Err(bad(format!(
            "raw_data holds {} bytes, shape {:?} of {}-byte values needs {}",
            raw.len(),
            t.dims,
            elem,
            n.saturating_mul(elem)
        )));
    }
    let check = |len: usize, field: &str| -> Result<(), TensorError> {
        if len == n {
            Ok(())
        } else {
            Err(bad(format!(
                "{field} holds {len} values, shape {:?} needs {n}",
                t.dims
            )))
        }
    };
    let le4 = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let le8 = |c: &[u8]| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
    let floats: Option<Vec<f32>> = match t.data_type {
        dt::FLOAT if use_raw => Some(
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(le4(c)))
                .collect(),
        ),
        dt::FLOAT => {
            check(t.float_data.len(), "float_data")?;
            Some(t.float_data.clone())
        }
        dt::DOUBLE if use_raw => Some(
            raw.chunks_exact(8)
                .map(|c| f64::from_le_bytes(le8(c)) as f32)
                .collect(),
        ),
        dt::DOUBLE => {
            check(t.double_data.len(), "double_data")?;
            Some(t.double_data.iter().map(|&x| x as f32).collect())
        }
        dt::FLOAT16 | dt::BFLOAT16 => {
            let bits: Vec<u16> = if use_raw {
                raw.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect()
            } else {
                check(t.int32_data.len(), "int32_data")?;
                t.int32_data.iter().map(|&x| x as u16).collect()
            };
            Some(if t.data_type == dt::FLOAT16 {
                bits.into_iter().map(f16_to_f32).collect()
            } else {
                bits.into_iter()
                    .map(|b| f32::from_bits((b as u32) << 16))
                    .collect()
            })
        }
        _ => None,
    };
    if let Some(v) = floats {
        return Ok(Const::f32(shape, v));
    }
    let ints: Vec<i64> = match t.data_type {
        dt::INT64 if use_raw => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(le8(c)))
            .collect(),
        dt::INT64 => {
            check(t.int64_data.len(), "int64_data")?;
            t.int64_data.clone()
        }
        dt::UINT64 if use_raw => raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(le8(c)) as i64)
            .collect(),
        dt::UINT64 => {
            check(t.uint64_data.len(), "uint64_data")?;
            t.uint64_data.iter().map(|&x| x as i64).collect()
        }
        dt::INT32 if use_raw => raw
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(le4(c)) as i64)
            .collect(),
        dt::UINT32 if use_raw => raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(le4(c)) as i64)
            .collect(),
        dt::UINT32 => {
            check(t.uint64_data.len(), "uint64_data")?;
            t.uint64_data.iter().map(|&x| x as i64).collect()
        }
        dt::INT16 if use_raw => raw
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        dt::UINT16 if use_raw => raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        dt::INT8 if use_raw => raw.iter().map(|&b| b as i8 as i64).collect(),
        dt::UINT8 | dt::BOOL if use_raw => raw.iter().map(|&b| b as i64).collect(),
        _ => {
            check(t.int32_data.len(), "int32_data")?;
            t.int32_data.iter().map(|&x| x as i64).collect()
        }
    };
    Ok(Const::sym(
        shape,
        ints.into_iter().map(|x| Sym::k(x as f64)).collect(),
        false,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2.0f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn transpose_and_broadcast() {
        let c = Const::f32(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let t = c.transpose(&[1, 0]);
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.to_f32(), Some(vec![0., 3., 1., 4., 2., 5.]));
        assert_eq!(broadcast_shape(&[2, 1, 3], &[4, 1]), Some(vec![2, 4, 3]));
        assert_eq!(broadcast_index(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast_index(&[2, 1], &[2, 3]), vec![0, 0, 0, 1, 1, 1]);
    }
}
