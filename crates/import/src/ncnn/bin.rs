//! The `.bin` weights: the blobs of every layer, one after the other, in the order the layers
//! appear in the `.param` and, within a layer, the order its `load_model` reads them.
//!
//! A blob is read in one of two ways (ncnn's `ModelBin::load(w, type)`):
//! - type 0 (convolution weights): a 4-byte storage tag, then the data: `0x00000000` raw
//!   `f32`; `0x01306B47` `f16`, padded to 4 bytes; `0x0002C056` raw `f32` (ncnn's
//!   "with extra scaling" tag, the same bytes); `0x000D4B38` `i8` (ncnn2int8 output, refused:
//!   it needs the layer's scale tables); any other non-zero tag: the quantised table form, 256
//!   `f32` values then one `u8` index per weight, padded to 4 bytes.
//! - type 1 (biases, slopes): raw little-endian `f32`, no tag.
//!
//! Every size is checked against the bytes left before anything is allocated.

use half::f16;

use super::corrupt;
use crate::ImportError;

const FORMAT: &str = "ncnn .bin";

pub const TAG_F16: u32 = 0x0130_6B47;
pub const TAG_I8: u32 = 0x000D_4B38;
pub const TAG_F32_SCALED: u32 = 0x0002_C056;

/// A cursor over the `.bin`.
pub struct Weights<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: String,
}

fn align4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

impl<'a> Weights<'a> {
    pub fn new(bytes: &'a [u8], file: &str) -> Self {
        Weights {
            bytes,
            pos: 0,
            file: file.to_string(),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ImportError> {
        if n > self.remaining() {
            return Err(corrupt(
                &self.file,
                FORMAT,
                format!(
                    "{what}: needs {n} bytes at offset {}, but only {} are left (truncated, or \
                     the .bin does not belong to this .param)",
                    self.pos,
                    self.remaining()
                ),
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>, ImportError> {
        let n = count
            .checked_mul(4)
            .ok_or_else(|| corrupt(&self.file, FORMAT, format!("{what}: {count} values")))?;
        let b = self.take(n, what)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// A type-1 blob: `count` raw `f32`.
    pub fn raw(&mut self, count: usize, what: &str) -> Result<Vec<f32>, ImportError> {
        self.f32s(count, what)
    }

    /// A type-0 blob: a storage tag, then `count` values in that storage.
    pub fn tagged(&mut self, count: usize, what: &str) -> Result<Vec<f32>, ImportError> {
        let t = self.take(4, what)?;
        let tag = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        match tag {
            0 | TAG_F32_SCALED => self.f32s(count, what),
            TAG_F16 => {
                let n = count.checked_mul(2).map(align4).ok_or_else(|| {
                    corrupt(&self.file, FORMAT, format!("{what}: {count} values"))
                })?;
                let b = self.take(n, what)?;
                Ok(b.chunks_exact(2)
                    .take(count)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect())
            }
            TAG_I8 => Err(corrupt(
                &self.file,
                FORMAT,
                format!(
                    "{what}: int8-quantised weights (ncnn2int8) are not supported; use the \
                     fp32 or fp16 model"
                ),
            )),
            _ => {
                let table = self.f32s(256, what)?;
                let b = self.take(align4(count), what)?;
                Ok(b[..count].iter().map(|&i| table[usize::from(i)]).collect())
            }
        }
    }
}
