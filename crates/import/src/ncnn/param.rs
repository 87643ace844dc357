//! The `.param` text format: the magic `7767517`, `layer_count blob_count`, then one line per
//! layer: `Type name bottom_count top_count bottoms… tops… k=v…`.
//!
//! Values are ints (`0=64`), floats (`1=2.000000e+00`: a `.`, `e` or `E` makes a float),
//! strings, or arrays: the old style `-233NN=len,v1,v2,…` (key `NN`) or the new `NN=v1,v2,…`.
//! Keys are `0..32`, as ncnn's `NCNN_MAX_PARAM_COUNT`.

use std::collections::BTreeMap;

use super::corrupt;
use crate::ImportError;

/// ncnn's bound on parameter keys.
const MAX_PARAM_KEYS: i32 = 32;
/// Bigger than any real `.param` by far (RealESRGAN_x4plus's is 117 KB).
pub const MAX_PARAM_BYTES: usize = 64 << 20;

/// One value of a layer's parameter dictionary.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Int(i32),
    Float(f32),
    Ints(Vec<i32>),
    Floats(Vec<f32>),
    Str(String),
}

/// A layer's `k=v` parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamDict(pub BTreeMap<i32, Value>);

impl ParamDict {
    /// The int at `key`, or `default` when absent; a float or an array there is an error.
    pub fn int(&self, key: i32, default: i32) -> Result<i32, String> {
        match self.0.get(&key) {
            None => Ok(default),
            Some(Value::Int(v)) => Ok(*v),
            Some(v) => Err(format!("parameter {key} should be an integer, not {v:?}")),
        }
    }

    /// The float at `key` (an int literal is converted), or `default` when absent.
    pub fn float(&self, key: i32, default: f32) -> Result<f32, String> {
        match self.0.get(&key) {
            None => Ok(default),
            Some(Value::Float(v)) => Ok(*v),
            Some(Value::Int(v)) => Ok(*v as f32),
            Some(v) => Err(format!("parameter {key} should be a number, not {v:?}")),
        }
    }

    /// The float array at `key` (empty when absent; int elements are converted).
    pub fn floats(&self, key: i32) -> Result<Vec<f32>, String> {
        match self.0.get(&key) {
            None => Ok(Vec::new()),
            Some(Value::Floats(v)) => Ok(v.clone()),
            Some(Value::Ints(v)) => Ok(v.iter().map(|&x| x as f32).collect()),
            Some(Value::Float(v)) => Ok(vec![*v]),
            Some(Value::Int(v)) => Ok(vec![*v as f32]),
            Some(v) => Err(format!(
                "parameter {key} should be a number array, not {v:?}"
            )),
        }
    }

    pub fn has(&self, key: i32) -> bool {
        self.0.contains_key(&key)
    }
}

/// One layer line.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub kind: String,
    pub name: String,
    pub bottoms: Vec<String>,
    pub tops: Vec<String>,
    pub params: ParamDict,
    /// 1-based line number in the `.param`, for messages.
    pub line: usize,
}

/// A parsed `.param`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub layers: Vec<Layer>,
    pub blob_count: usize,
}

const FORMAT: &str = "ncnn .param";

/// True when `bytes` start as a `.param` does: the magic `7767517` on the first line.
pub fn is_param(bytes: &[u8]) -> bool {
    let head = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    head.starts_with(b"7767517") && head.get(7).is_none_or(|b| b.is_ascii_whitespace())
}

/// True for ncnn's binary `.param.bin` (the magic as a little-endian int).
pub fn is_param_bin(bytes: &[u8]) -> bool {
    bytes.starts_with(&7_767_517i32.to_le_bytes())
}

/// Parses a `.param` file. Every count is checked against the tokens actually present, so a
/// hostile count never sizes an allocation.
pub fn parse(bytes: &[u8], file: &str) -> Result<Param, ImportError> {
    let bad = |reason: String| corrupt(file, FORMAT, reason);
    if bytes.len() > MAX_PARAM_BYTES {
        return Err(bad(format!(
            "{} bytes is larger than any model description ({} MiB at most)",
            bytes.len(),
            MAX_PARAM_BYTES >> 20
        )));
    }
    if is_param_bin(bytes) {
        return Err(bad(
            "this is ncnn's binary .param.bin; convert it to the text .param (ncnn's ncnn2mem \
             or pnnx) and pass that"
                .into(),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty());
    match lines.next() {
        Some((_, "7767517")) => {}
        Some((n, l)) => {
            return Err(bad(format!(
                "line {n}: expected the magic number 7767517, found '{}'",
                clip(l)
            )));
        }
        None => return Err(bad("the file is empty".into())),
    }
    let (n, counts) = lines
        .next()
        .ok_or_else(|| bad("truncated after the magic number: no layer and blob counts".into()))?;
    let mut it = counts.split_whitespace();
    let mut count = |what: &str| -> Result<usize, ImportError> {
        it.next()
            .and_then(|t| t.parse::<usize>().ok())
            .ok_or_else(|| {
                bad(format!(
                    "line {n}: expected the {what} count, found '{counts}'"
                ))
            })
    };
    let layer_count = count("layer")?;
    let blob_count = count("blob")?;
    let mut layers = Vec::new();
    for (n, l) in lines {
        if layers.len() == layer_count {
            return Err(bad(format!(
                "line {n}: more layer lines than the {layer_count} declared"
            )));
        }
        layers.push(parse_layer(l, n).map_err(|e| bad(format!("line {n}: {e}")))?);
    }
    if layers.len() < layer_count {
        return Err(bad(format!(
            "truncated: {layer_count} layers declared, {} present",
            layers.len()
        )));
    }
    Ok(Param { layers, blob_count })
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

fn parse_layer(l: &str, line: usize) -> Result<Layer, String> {
    let mut t = l.split_whitespace();
    let mut field = |what: &str| t.next().ok_or_else(|| format!("no {what}"));
    let kind = field("layer type")?.to_string();
    let name = field("layer name")?.to_string();
    let bc: usize = field("bottom count")?
        .parse()
        .map_err(|_| "the bottom count is not a number".to_string())?;
    let tc: usize = field("top count")?
        .parse()
        .map_err(|_| "the top count is not a number".to_string())?;
    let rest: Vec<&str> = t.collect();
    let blobs = bc
        .checked_add(tc)
        .filter(|&n| n <= rest.len())
        .ok_or_else(|| {
            format!(
                "layer '{name}' declares {bc} bottom and {tc} top blobs, but the line has {} names",
                rest.len()
            )
        })?;
    let bottoms = rest[..bc].iter().map(|s| s.to_string()).collect();
    let tops = rest[bc..blobs].iter().map(|s| s.to_string()).collect();
    let mut params = ParamDict::default();
    for kv in &rest[blobs..] {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            format!(
                "layer '{name}': '{}' is not a key=value parameter",
                clip(kv)
            )
        })?;
        let k: i32 = k.parse().map_err(|_| {
            format!(
                "layer '{name}': parameter key '{}' is not a number",
                clip(k)
            )
        })?;
        let (key, value) = if k <= -23300 {
            let key = -k - 23300;
            (
                key,
                old_array(v).map_err(|e| format!("layer '{name}': key {k}: {e}"))?,
            )
        } else {
            (
                k,
                value(v).map_err(|e| format!("layer '{name}': key {k}: {e}"))?,
            )
        };
        if !(0..MAX_PARAM_KEYS).contains(&key) {
            return Err(format!(
                "layer '{name}': parameter key {k} is out of range (0..{MAX_PARAM_KEYS})"
            ));
        }
        params.0.insert(key, value);
    }
    Ok(Layer {
        kind,
        name,
        bottoms,
        tops,
        params,
        line,
    })
}

fn is_float(s: &str) -> bool {
    s.contains(['.', 'e', 'E']) || s.eq_ignore_ascii_case("nan") || s.contains("inf")
}

fn number(s: &str) -> Result<Value, String> {
    if is_float(s) {
        s.parse::<f32>()
            .map(Value::Float)
            .map_err(|_| format!("'{}' is not a number", clip(s)))
    } else {
        s.parse::<i32>()
            .map(Value::Int)
            .map_err(|_| format!("'{}' is not an integer", clip(s)))
    }
}

fn collect(items: Vec<Value>) -> Result<Value, String> {
    if items.iter().any(|v| matches!(v, Value::Float(_))) {
        Ok(Value::Floats(
            items
                .into_iter()
                .map(|v| match v {
                    Value::Float(f) => f,
                    Value::Int(i) => i as f32,
                    _ => 0.0,
                })
                .collect(),
        ))
    } else {
        Ok(Value::Ints(
            items
                .into_iter()
                .map(|v| match v {
                    Value::Int(i) => i,
                    _ => 0,
                })
                .collect(),
        ))
    }
}

fn value(v: &str) -> Result<Value, String> {
    let first = v.chars().next().ok_or("empty value")?;
    if first == '"' || (first.is_ascii_alphabetic() && !is_float(v) && v.parse::<f32>().is_err()) {
        return Ok(Value::Str(v.trim_matches('"').to_string()));
    }
    if v.contains(',') {
        return collect(v.split(',').map(number).collect::<Result<_, _>>()?);
    }
    number(v)
}

fn old_array(v: &str) -> Result<Value, String> {
    let mut parts = v.split(',');
    let len: usize = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("the array length is not a number")?;
    let items: Vec<Value> = parts.map(number).collect::<Result<_, _>>()?;
    if items.len() != len {
        return Err(format!(
            "the array declares {len} elements but has {}",
            items.len()
        ));
    }
    collect(items)
}
