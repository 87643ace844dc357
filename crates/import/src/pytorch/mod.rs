//! PyTorch state dicts (`.pth`, `.safetensors`) into the superres IR.
//!
//! A state dict holds only weights: names like `body.0.weight` and their tensors. The network
//! is recognised from those names and shapes (the way the Python library spandrel does) and
//! rebuilt here as IR operators:
//!
//! | architecture | recognised by | detected |
//! |---|---|---|
//! | SRVGGNetCompact (Real-ESRGAN Compact, `realesr-general-x4v3`, `realesr-animevideov3`) | `body.0.weight`, `body.N.weight` | `num_feat`, `num_conv`, scale; PReLU from its weights, ReLU / LeakyReLU(0.1) from the safetensors metadata `act_type` or [`Options`] |
//! | ESRGAN / RRDBNet (new `conv_first`/`body.N.rdbM.convK` layout, the BSRGAN `RRDB_trunk` one, and the old `model.0`/`model.1.sub.N.RDBM.convK.0` one) | `conv_first.weight` + `body.0.rdb1.conv1.weight`, or `model.0.weight` + `model.1.sub.0.RDB1.conv1.0.weight` | `num_feat`, `num_block`, `num_grow_ch`, scale 8/4 (×2 nearest upsamplings), 2/1 (pixel-unshuffle of the input) |
//! | SPAN (spandrel's `SPAN`) | `conv_1.sk.weight` / `conv_1.eval_conv.weight` / `block_1.c1_r.*` | `feature_channels`, input/output channels, scale (from `upsampler.0.weight`), the RGB-mean normalisation (absent with a `no_norm` buffer); `eval_conv` weights used when present, else the train-time branches folded at import |
//!
//! Real-ESRGAN's ×2 and ×1 RRDBNets start with `F.pixel_unshuffle`; the IR has no such
//! operator, so it becomes a stride-`b`, `b×b` convolution with one-hot weights, which is
//! exact in `f32` (each output is one input times 1.0 plus zeros).
//!
//! # Files
//!
//! - `.safetensors` is read with the `safetensors` crate (which checks the header and the
//!   offsets); `F32`, `F16` and `BF16` tensors are converted to `f32`.
//! - `.pth` is the zip `torch.save` writes (PyTorch ≥ 1.6): `<name>/data.pkl`, a pickle, and
//!   `<name>/data/<key>` raw storages. The pickle is read by the restricted unpickler of
//!   [`pickle`] (see there for why it is hand-written and what it refuses); nothing in the
//!   file is executed. Compressed entries are refused (torch.save stores them), so no entry
//!   expands beyond the file.
//! - The dict may be wrapped as Real-ESRGAN/BasicSR do (`params_ema`, preferred, or `params`)
//!   or as training checkpoints do (`state_dict`, `model`); a `module.` prefix on every key
//!   (`DataParallel`) is dropped.
//!
//! A dict no architecture fits is an [`ImportError::InvalidModel`] listing how many tensors
//! it holds and its first keys with their shapes.

mod arch;
pub mod pickle;
mod safetensors_file;

use std::collections::BTreeMap;
use std::io::Read;

use superres_graph::Graph;

use crate::ImportError;
use pickle::{Obj, Pickled};

pub use arch::{Architecture, RrdbLayout, SrvggActivation};

/// One tensor of a state dict, converted to `f32`, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct StateTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A state dict: tensors by name, plus the safetensors `__metadata__` strings (empty for
/// `.pth`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    pub tensors: BTreeMap<String, StateTensor>,
    pub metadata: BTreeMap<String, String>,
}

/// What detection cannot decide from the weights alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// The activation of an SRVGGNetCompact without PReLU weights (ReLU and LeakyReLU have
    /// no parameters, so the state dict cannot tell them apart). Overrides the safetensors
    /// metadata key `act_type`.
    pub srvgg_activation: Option<SrvggActivation>,
}

/// True when `bytes` look like a `.safetensors` file: a little-endian `u64` header length
/// (below 100 MB, as the format requires) followed by a JSON object.
pub fn is_safetensors(bytes: &[u8]) -> bool {
    if bytes.len() < 10 {
        return false;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(n);
    (2..100_000_000).contains(&n) && bytes[8] == b'{'
}

/// True when `bytes` are a zip archive holding a `*/data.pkl` entry (a torch.save file), or
/// a pickle starting the way the legacy (pre-1.6) torch.save format does.
pub fn is_pytorch_zip(bytes: &[u8]) -> bool {
    if !bytes.starts_with(b"PK\x03\x04") {
        return false;
    }
    // Local file headers: the first entry is `<name>/data.pkl` in torch.save's output; the
    // central directory (searched as a fallback) lists every name.
    find_sub(bytes, b"/data.pkl").is_some()
}

/// The legacy torch.save format (a pickle of the magic number `0x1950a86a20f9469cfc6c`).
pub fn is_legacy_pth(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")
}

fn find_sub(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn corrupt(file: &str, format: &'static str, reason: impl Into<String>) -> ImportError {
    ImportError::Corrupt {
        file: file.to_string(),
        format,
        reason: reason.into(),
    }
}

fn invalid(file: &str, message: impl Into<String>) -> ImportError {
    ImportError::InvalidModel {
        file: file.to_string(),
        message: message.into(),
    }
}

/// Reads the state dict of a `.pth` or `.safetensors` file (recognised by content), unwrapped
/// from `params_ema`/`params`/`state_dict`/`model` and without a common `module.` prefix.
pub fn read_state_dict(bytes: &[u8], file: &str) -> Result<StateDict, ImportError> {
    let sd = if is_safetensors(bytes) {
        safetensors_file::read(bytes, file)?
    } else if is_legacy_pth(bytes) {
        return Err(corrupt(
            file,
            "PyTorch",
            "this is the legacy (pre-1.6) torch.save format, which is not supported; \
             re-save it with a current PyTorch (torch.save(torch.load(f), f)) or convert it \
             to .safetensors",
        ));
    } else if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        read_pth(bytes, file)?
    } else {
        return Err(ImportError::UnknownFormat {
            file: file.to_string(),
            reason: "neither a torch.save zip nor a safetensors file".into(),
        });
    };
    Ok(strip_module_prefix(sd))
}

/// Imports a `.pth` / `.safetensors` model: reads its state dict, detects the architecture
/// and builds the graph.
pub fn import(bytes: &[u8], file: &str) -> Result<Graph, ImportError> {
    import_with(bytes, file, Options::default())
}

/// [`import`] with options for what the weights cannot tell.
pub fn import_with(bytes: &[u8], file: &str, options: Options) -> Result<Graph, ImportError> {
    let sd = read_state_dict(bytes, file)?;
    build(&sd, file, options)
}

/// Detects the architecture of a state dict and builds its graph.
pub fn build(sd: &StateDict, file: &str, options: Options) -> Result<Graph, ImportError> {
    let a = detect(sd, file, options)?;
    arch::build(&a, sd, file)
}

/// Detects the architecture of a state dict and its hyperparameters.
pub fn detect(sd: &StateDict, file: &str, options: Options) -> Result<Architecture, ImportError> {
    arch::detect(sd, file, options)
}

fn strip_module_prefix(mut sd: StateDict) -> StateDict {
    if !sd.tensors.is_empty() && sd.tensors.keys().all(|k| k.starts_with("module.")) {
        sd.tensors = std::mem::take(&mut sd.tensors)
            .into_iter()
            .map(|(k, v)| (k["module.".len()..].to_string(), v))
            .collect();
    }
    sd
}

type Zip<'a> = zip::ZipArchive<std::io::Cursor<&'a [u8]>>;

fn read_entry(
    z: &mut Zip<'_>,
    name: &str,
    expect: Option<u64>,
    file: &str,
) -> Result<Vec<u8>, ImportError> {
    let bad = |r: String| corrupt(file, "PyTorch", r);
    let entry = z
        .by_name(name)
        .map_err(|e| bad(format!("the archive has no readable entry '{name}': {e}")))?;
    if entry.compression() != zip::CompressionMethod::Stored {
        return Err(bad(format!(
            "entry '{name}' is compressed ({}); torch.save stores entries uncompressed",
            entry.compression()
        )));
    }
    let size = entry.size();
    if let Some(want) = expect
        && size != want
    {
        return Err(bad(format!(
            "storage '{name}' holds {size} bytes, but its tensors declare {want}"
        )));
    }
    let mut buf = Vec::new();
    entry
        .take(size)
        .read_to_end(&mut buf)
        .map_err(|e| bad(format!("entry '{name}': {e}")))?;
    if buf.len() as u64 != size {
        return Err(bad(format!(
            "entry '{name}' is truncated ({} of {size} bytes)",
            buf.len()
        )));
    }
    Ok(buf)
}

fn read_pth(bytes: &[u8], file: &str) -> Result<StateDict, ImportError> {
    let bad = |r: String| corrupt(file, "PyTorch", r);
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("not a readable zip archive: {e}")))?;
    let pkl = z
        .file_names()
        .find(|n| {
            n.strip_suffix("/data.pkl")
                .is_some_and(|p| !p.is_empty() && !p.contains('/'))
        })
        .map(str::to_string)
        .ok_or_else(|| {
            bad(
                "the zip archive has no '<name>/data.pkl' entry, so it is no torch.save file"
                    .into(),
            )
        })?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    if z.file_names().any(|n| n == format!("{prefix}byteorder")) {
        let order = read_entry(&mut z, &format!("{prefix}byteorder"), None, file)?;
        if order.trim_ascii() != b"little" {
            return Err(bad(format!(
                "the storages are {} (only little-endian is read)",
                String::from_utf8_lossy(&order)
            )));
        }
    }
    let pickle_bytes = read_entry(&mut z, &pkl, None, file)?;
    let p = pickle::unpickle(&pickle_bytes).map_err(|r| bad(format!("{pkl}: {r}")))?;
    let root = unwrap_root(&p);
    let Obj::Dict(items) = p.get(root) else {
        return Err(invalid(
            file,
            "the pickle holds no dict of tensors (a state dict)",
        ));
    };
    let mut storages: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut tensors = BTreeMap::new();
    for &(k, v) in items {
        let (Obj::Str(name), Obj::Tensor(t)) = (p.get(k), p.get(v)) else {
            continue;
        };
        let elem = t.dtype.size() as u64;
        let nbytes = t
            .numel
            .checked_mul(elem)
            .ok_or_else(|| bad(format!("tensor '{name}': storage size overflows")))?;
        if !storages.contains_key(&t.key) {
            let data = read_entry(
                &mut z,
                &format!("{prefix}data/{}", t.key),
                Some(nbytes),
                file,
            )?;
            storages.insert(t.key.clone(), data);
        }
        let storage = storages
            .get(&t.key)
            .ok_or_else(|| bad(format!("tensor '{name}': storage missing")))?;
        if storage.len() as u64 != nbytes {
            return Err(bad(format!(
                "tensor '{name}': storage '{}' is declared with two different sizes",
                t.key
            )));
        }
        let st = materialize(t, storage).map_err(|r| bad(format!("tensor '{name}': {r}")))?;
        tensors.insert(name.clone(), st);
    }
    if tensors.is_empty() {
        return Err(invalid(
            file,
            format!(
                "the pickle's dict holds no tensors (keys: {})",
                first_keys(&p, items)
            ),
        ));
    }
    Ok(StateDict {
        tensors,
        metadata: BTreeMap::new(),
    })
}

fn first_keys(p: &Pickled, items: &[(usize, usize)]) -> String {
    let names: Vec<String> = items
        .iter()
        .take(8)
        .map(|&(k, _)| match p.get(k) {
            Obj::Str(s) => format!("'{s}'"),
            o => format!("{o:?}"),
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Follows the wrappers (`params_ema`, `params`, `state_dict`, `model`) down to the dict of
/// tensors, at most a few levels deep (the pickle may be cyclic).
fn unwrap_root(p: &Pickled) -> usize {
    let mut cur = p.root;
    for _ in 0..4 {
        let Obj::Dict(items) = p.get(cur) else {
            return cur;
        };
        let find = |want: &str| {
            items.iter().find_map(|&(k, v)| match (p.get(k), p.get(v)) {
                (Obj::Str(s), Obj::Dict(_)) if s == want => Some(v),
                _ => None,
            })
        };
        match ["params_ema", "params", "state_dict", "model"]
            .iter()
            .find_map(|w| find(w))
        {
            Some(next) => cur = next,
            None => return cur,
        }
    }
    cur
}

/// Copies a tensor view out of its storage, after checking it stays inside it.
fn materialize(t: &pickle::TensorRef, storage: &[u8]) -> Result<StateTensor, String> {
    let mut numel: u64 = 1;
    for &s in &t.size {
        numel = numel.checked_mul(s).ok_or("its element count overflows")?;
    }
    if numel > t.numel {
        return Err(format!(
            "it has {numel} elements but its storage only {}",
            t.numel
        ));
    }
    if numel > 0 {
        let mut last = t.offset;
        for (&s, &st) in t.size.iter().zip(&t.stride) {
            last = (s - 1)
                .checked_mul(st)
                .and_then(|d| last.checked_add(d))
                .ok_or("its strides overflow")?;
        }
        if last >= t.numel {
            return Err(format!(
                "shape {:?}, strides {:?} and offset {} reach element {last} of a {}-element storage",
                t.size, t.stride, t.offset, t.numel
            ));
        }
    }
    let shape: Vec<usize> = t
        .size
        .iter()
        .map(|&s| usize::try_from(s).map_err(|_| "too large".to_string()))
        .collect::<Result<_, _>>()?;
    let stride: Vec<usize> = t
        .stride
        .iter()
        .map(|&s| usize::try_from(s).map_err(|_| "too large".to_string()))
        .collect::<Result<_, _>>()?;
    let offset = usize::try_from(t.offset).map_err(|_| "too large")?;
    let n = usize::try_from(numel).map_err(|_| "too large")?;
    let mut data = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let at = offset + idx.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
        data.push(t.dtype.read(storage, at));
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(StateTensor { shape, data })
}
