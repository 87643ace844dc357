//! `.safetensors` files through the `safetensors` crate, which validates the header (its
//! size, the JSON, every tensor's offsets against the data) before we see a byte.

use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};

use super::{StateDict, StateTensor, corrupt, invalid};
use crate::ImportError;

pub fn read(bytes: &[u8], file: &str) -> Result<StateDict, ImportError> {
    let bad = |r: String| corrupt(file, "safetensors", r);
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let metadata: BTreeMap<String, String> = meta
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.iter() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(invalid(
                    file,
                    format!("tensor '{name}' is {other:?}; only F32, F16 and BF16 are read"),
                ));
            }
        };
        let shape = view.shape().to_vec();
        if shape.iter().product::<usize>() != data.len() {
            return Err(bad(format!(
                "tensor '{name}' of shape {shape:?} holds {} values",
                data.len()
            )));
        }
        tensors.insert(name.to_string(), StateTensor { shape, data });
    }
    if tensors.is_empty() {
        return Err(invalid(file, "the safetensors file holds no tensors"));
    }
    Ok(StateDict { tensors, metadata })
}
