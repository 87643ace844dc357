//! SPAN (Swift Parameter-free Attention Network), with spandrel's key names:
//!
//! - `conv_1`, `block_{1..6}.c{1,2,3}_r`, `conv_2`: re-parameterisable 3×3 convolutions
//!   ("Conv3XC"). At inference each is the single 3×3 `P.eval_conv` (padding 1); the
//!   train-time branches `P.sk` (1×1) and `P.conv.{0,1,2}` (1×1 → 3×3 valid on the
//!   zero-padded input → 1×1) are what `update_params` folds into it. A dict holding
//!   `P.eval_conv.weight` is used as it is; one with the branches only is folded here (in
//!   `f64`, stored as `f32`), as `update_params` does.
//! - a block (SPAB) is `o1 = c1(x)`, `o3 = c3(silu(c2(silu(o1))))`,
//!   `out = (o3 + x) · (sigmoid(o3) − 0.5)`; SiLU is `v · sigmoid(v)`.
//! - `conv_cat` (1×1) over `[conv_1 out, conv_2(block 6 out), block 1 out, block 6's o1]`,
//!   then `upsampler.0` (3×3 to `out·s²`) and a pixel shuffle (CRD order).
//! - without a `no_norm` buffer the input is `(x − rgb_mean) · img_range` with spandrel's
//!   defaults (the DIV2K mean, 255), which the dict cannot hold; the output is not
//!   de-normalised (SPAN returns the upsampler's output as it is).

use superres_graph::{Activation, BinaryOp, DepthToSpaceMode, Graph, Op, Tensor, ValueId};

use super::{Architecture, Net, R, Weights};
use crate::pytorch::{StateDict, StateTensor, invalid};

/// spandrel's defaults, which a state dict cannot carry.
const RGB_MEAN: [f32; 3] = [0.4488, 0.4371, 0.4040];
const IMG_RANGE: f32 = 255.0;
const BLOCKS: usize = 6;

fn is_span(sd: &StateDict) -> bool {
    sd.tensors.keys().any(|k| {
        k.starts_with("conv_1.sk.")
            || k.starts_with("conv_1.eval_conv.")
            || k.starts_with("block_1.c1_r.")
    })
}

fn bad(file: &str, m: String) -> crate::ImportError {
    invalid(file, format!("SPAN: {m}"))
}

pub fn detect(sd: &StateDict, file: &str) -> R<Option<Architecture>> {
    if !is_span(sd) {
        return Ok(None);
    }
    let first = ["conv_1.eval_conv.weight", "conv_1.sk.weight"]
        .iter()
        .find_map(|k| sd.tensors.get(*k).map(|t| (*k, t)));
    let Some((key, first)) = first else {
        return Err(bad(
            file,
            "the state dict has neither conv_1.eval_conv.weight nor conv_1.sk.weight".into(),
        ));
    };
    let [feature_channels, channels, _, _] = first.shape[..] else {
        return Err(bad(
            file,
            format!("'{key}' has shape {:?}, expected 4-D", first.shape),
        ));
    };
    if feature_channels == 0 || channels == 0 {
        return Err(bad(file, format!("'{key}' has shape {:?}", first.shape)));
    }
    let up = sd.tensors.get("upsampler.0.weight").ok_or_else(|| {
        bad(
            file,
            "the state dict has no tensor 'upsampler.0.weight'".into(),
        )
    })?;
    let outs = up.shape.first().copied().unwrap_or(0);
    // As spandrel: the output channels are the input's if that makes a square, else 3 or 1.
    let (scale, out_channels) = [channels, 3, 1]
        .iter()
        .find_map(|&c| {
            if !outs.is_multiple_of(c) {
                return None;
            }
            (1..=16).find(|s| s * s * c == outs).map(|s| (s, c))
        })
        .ok_or_else(|| {
            bad(
                file,
                format!("'upsampler.0.weight' has {outs} outputs, not output channels · scale²"),
            )
        })?;
    let norm = !sd.tensors.contains_key("no_norm");
    if norm && channels != 3 {
        return Err(bad(
            file,
            format!(
                "{channels} input channels with the RGB mean normalisation (no 'no_norm' buffer)"
            ),
        ));
    }
    Ok(Some(Architecture::Span {
        channels,
        out_channels,
        feature_channels,
        scale,
        norm,
        eval_conv: sd.tensors.contains_key("conv_1.eval_conv.weight"),
    }))
}

/// `t`'s shape must be `want`.
fn shaped<'a>(sd: &'a StateDict, key: &str, want: &[usize], file: &str) -> R<&'a StateTensor> {
    let t = sd
        .tensors
        .get(key)
        .ok_or_else(|| bad(file, format!("the state dict has no tensor '{key}'")))?;
    if t.shape != want {
        return Err(bad(
            file,
            format!("'{key}' has shape {:?}, expected {want:?}", t.shape),
        ));
    }
    Ok(t)
}

/// An optional bias of `n` values (zeros when absent).
fn bias(sd: &StateDict, key: &str, n: usize, file: &str) -> R<Vec<f64>> {
    match sd.tensors.get(key) {
        None => Ok(vec![0.0; n]),
        Some(_) => Ok(shaped(sd, key, &[n], file)?
            .data
            .iter()
            .map(|&v| f64::from(v))
            .collect()),
    }
}

/// Folds the train-time branches of the Conv3XC `p` (input `cin` channels) into one 3×3
/// kernel `[cout, cin, 3, 3]` and bias, as `update_params` does:
/// `W = W3 · W2 · W1` per tap plus the 1×1 skip at the centre, `b = W3 (ΣW2 b1 + b2) + b3 +
/// b_sk`.
#[allow(clippy::needless_range_loop)] // the index arithmetic is the fold's formula
pub fn fold(sd: &StateDict, p: &str, cin: usize, file: &str) -> R<(Vec<f32>, Vec<f32>)> {
    let sk = sd.tensors.get(&format!("{p}.sk.weight")).ok_or_else(|| {
        bad(
            file,
            format!(
                "'{p}' has neither eval_conv.weight nor its train-time branches (no '{p}.sk.weight')"
            ),
        )
    })?;
    let cout = match sk.shape[..] {
        [c, i, 1, 1] if i == cin && c > 0 => c,
        _ => {
            return Err(bad(
                file,
                format!(
                    "'{p}.sk.weight' has shape {:?}, expected [C_out, {cin}, 1, 1]",
                    sk.shape
                ),
            ));
        }
    };
    let w1t = sd.tensors.get(&format!("{p}.conv.0.weight"));
    let m = w1t.map_or(0, |t| t.shape.first().copied().unwrap_or(0));
    let w1 = shaped(sd, &format!("{p}.conv.0.weight"), &[m, cin, 1, 1], file)?;
    let w2t = sd.tensors.get(&format!("{p}.conv.1.weight"));
    let n = w2t.map_or(0, |t| t.shape.first().copied().unwrap_or(0));
    let w2 = shaped(sd, &format!("{p}.conv.1.weight"), &[n, m, 3, 3], file)?;
    let w3 = shaped(sd, &format!("{p}.conv.2.weight"), &[cout, n, 1, 1], file)?;
    if m == 0 || n == 0 {
        return Err(bad(file, format!("'{p}' has empty train-time branches")));
    }
    let b1 = bias(sd, &format!("{p}.conv.0.bias"), m, file)?;
    let b2 = bias(sd, &format!("{p}.conv.1.bias"), n, file)?;
    let b3 = bias(sd, &format!("{p}.conv.2.bias"), cout, file)?;
    let bsk = bias(sd, &format!("{p}.sk.bias"), cout, file)?;
    let f = |t: &StateTensor, i: usize| f64::from(t.data[i]);

    // W2·W1: [n, cin, 3, 3]; its bias ΣW2·b1 + b2: [n].
    let mut w21 = vec![0f64; n * cin * 9];
    let mut b21 = b2;
    for o in 0..n {
        for j in 0..m {
            for t in 0..9 {
                let w = f(w2, (o * m + j) * 9 + t);
                b21[o] += w * b1[j];
                for i in 0..cin {
                    w21[(o * cin + i) * 9 + t] += w * f(w1, j * cin + i);
                }
            }
        }
    }
    let mut weights = vec![0f64; cout * cin * 9];
    let mut b = b3;
    for o in 0..cout {
        b[o] += bsk[o];
        for k in 0..n {
            let w = f(w3, o * n + k);
            b[o] += w * b21[k];
            for it in 0..cin * 9 {
                weights[o * cin * 9 + it] += w * w21[k * cin * 9 + it];
            }
        }
        for i in 0..cin {
            weights[(o * cin + i) * 9 + 4] += f(sk, o * cin + i);
        }
    }
    Ok((
        weights.into_iter().map(|v| v as f32).collect(),
        b.into_iter().map(|v| v as f32).collect(),
    ))
}

/// The Conv3XC `p` on `x`: its `eval_conv` when the dict holds one, else its folded branches.
fn conv3xc(n: &mut Net<'_>, sd: &StateDict, p: &str, x: ValueId, file: &str) -> R<ValueId> {
    if sd.tensors.contains_key(&format!("{p}.eval_conv.weight")) {
        return n.conv(&format!("{p}.eval_conv"), x, None, None);
    }
    let cin = n.g.channels(x);
    let (w, b) = fold(sd, p, cin, file)?;
    let cout = b.len();
    n.conv_oihw(p, x, &w, [cout, cin, 3, 3], Some(b), None, None)
}

fn sigmoid(n: &mut Net<'_>, name: &str, x: ValueId) -> R<ValueId> {
    n.push(name, Op::Activation(Activation::Sigmoid), vec![x])
}

fn silu(n: &mut Net<'_>, name: &str, x: ValueId) -> R<ValueId> {
    let s = sigmoid(n, &format!("{name}.sigmoid"), x)?;
    n.push(name, Op::Binary(BinaryOp::Mul), vec![x, s])
}

/// One SPAB: returns `(out, o1)`.
fn spab(
    n: &mut Net<'_>,
    sd: &StateDict,
    p: &str,
    x: ValueId,
    half: ValueId,
    file: &str,
) -> R<(ValueId, ValueId)> {
    let o1 = conv3xc(n, sd, &format!("{p}.c1_r"), x, file)?;
    let a1 = silu(n, &format!("{p}.act1"), o1)?;
    let o2 = conv3xc(n, sd, &format!("{p}.c2_r"), a1, file)?;
    let a2 = silu(n, &format!("{p}.act2"), o2)?;
    let o3 = conv3xc(n, sd, &format!("{p}.c3_r"), a2, file)?;
    let s = sigmoid(n, &format!("{p}.sigmoid"), o3)?;
    let att = n.push(
        &format!("{p}.sim_att"),
        Op::Binary(BinaryOp::Sub),
        vec![s, half],
    )?;
    let sum = n.push(&format!("{p}.add"), Op::Binary(BinaryOp::Add), vec![o3, x])?;
    let out = n.push(p, Op::Binary(BinaryOp::Mul), vec![sum, att])?;
    Ok((out, o1))
}

pub fn build(a: &Architecture, sd: &StateDict, file: &str) -> R<Graph> {
    let Architecture::Span {
        channels,
        out_channels,
        feature_channels,
        scale,
        norm,
        ..
    } = *a
    else {
        return Err(invalid(file, "not a SPAN"));
    };
    let mut n = Net::new(Weights::identity(sd), file);
    let mut x = n.g.input("input", channels);
    if norm {
        let mean =
            n.g.constant("rgb_mean", Tensor::new(vec![3], RGB_MEAN.to_vec()));
        let range = n.g.constant("img_range", Tensor::scalar(IMG_RANGE));
        x = n.push("sub_mean", Op::Binary(BinaryOp::Sub), vec![x, mean])?;
        x = n.push("mul_range", Op::Binary(BinaryOp::Mul), vec![x, range])?;
    }
    let feat = conv3xc(&mut n, sd, "conv_1", x, file)?;
    if n.g.channels(feat) != feature_channels {
        return Err(bad(
            file,
            format!(
                "conv_1 gives {} channels, its skip {feature_channels}",
                n.g.channels(feat)
            ),
        ));
    }
    let half = n.g.constant("half", Tensor::scalar(0.5));
    let mut h = feat;
    let mut first = None;
    let mut last_o1 = feat;
    for b in 1..=BLOCKS {
        let (out, o1) = spab(&mut n, sd, &format!("block_{b}"), h, half, file)?;
        h = out;
        first.get_or_insert(out);
        last_o1 = o1;
    }
    let b1 = first.unwrap_or(feat);
    let c2 = conv3xc(&mut n, sd, "conv_2", h, file)?;
    let cat = n.push("cat", Op::Concat, vec![feat, c2, b1, last_o1])?;
    let c = n.conv("conv_cat", cat, None, None)?;
    let mut y = n.conv("upsampler.0", c, None, None)?;
    if n.g.channels(y) != out_channels * scale * scale {
        return Err(bad(
            file,
            "upsampler.0 does not give output channels · scale²".into(),
        ));
    }
    if scale > 1 {
        y = n.push(
            "upsampler.1",
            Op::DepthToSpace {
                block: scale,
                mode: DepthToSpaceMode::Crd,
            },
            vec![y],
        )?;
    }
    n.g.output("output", y);
    Ok(n.g)
}
