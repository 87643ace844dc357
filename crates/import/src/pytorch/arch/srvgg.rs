//! SRVGGNetCompact (Real-ESRGAN Compact): `body` is conv, act, (conv, act) × num_conv, conv
//! to `3·s²` channels; then a pixel shuffle plus the nearest-upsampled input.
//! Keys: `body.{2i}.weight/bias` (convolutions), `body.{2i+1}.weight` (PReLU slopes, absent
//! for ReLU / LeakyReLU).

use superres_graph::{Activation, BinaryOp, DepthToSpaceMode, Op, ResizeMode};

use super::{Architecture, Net, R, SrvggActivation, Weights};
use crate::pytorch::{Options, StateDict, invalid};

fn conv_indices(sd: &StateDict) -> Vec<usize> {
    let mut v: Vec<usize> = sd
        .tensors
        .iter()
        .filter(|(_, t)| t.shape.len() == 4)
        .filter_map(|(k, _)| {
            k.strip_prefix("body.")?
                .strip_suffix(".weight")?
                .parse()
                .ok()
        })
        .collect();
    v.sort_unstable();
    v
}

pub fn detect(sd: &StateDict, file: &str, options: Options) -> R<Option<Architecture>> {
    let Some(first) = sd.tensors.get("body.0.weight") else {
        return Ok(None);
    };
    // RRDBNet has `body.0.rdb1…` keys, never `body.0.weight`.
    if first.shape.len() != 4 || sd.tensors.keys().any(|k| k.starts_with("conv_first.")) {
        return Ok(None);
    }
    let bad = |m: String| invalid(file, format!("SRVGGNetCompact: {m}"));
    let convs = conv_indices(sd);
    if convs.len() < 2 || convs.iter().enumerate().any(|(i, &k)| k != 2 * i) {
        return Err(bad(format!(
            "the convolutions are body.{convs:?}, expected body.0, body.2, body.4, … with at least two"
        )));
    }
    let last = *convs.last().unwrap_or(&0);
    let (num_feat, channels) = (first.shape[0], first.shape[1]);
    let num_conv = convs.len() - 2;
    let out = sd
        .tensors
        .get(&format!("body.{last}.weight"))
        .map_or(0, |t| t.shape[0]);
    let s2 = if channels > 0 && out.is_multiple_of(channels) {
        out / channels
    } else {
        0
    };
    let scale = (1..=16).find(|s| s * s == s2).ok_or_else(|| {
        bad(format!(
            "the last convolution body.{last} has {out} outputs, not {channels}·scale²"
        ))
    })?;
    let prelu = sd.tensors.contains_key("body.1.weight");
    let activation = match (options.srvgg_activation, prelu) {
        (Some(a), _) => a,
        (None, true) => SrvggActivation::PRelu,
        (None, false) => match sd.metadata.get("act_type") {
            Some(s) => s.parse().map_err(bad)?,
            None => {
                return Err(bad(
                    "there are no PReLU weights (body.1.weight), so the activation is ReLU or \
                     LeakyReLU, which the weights cannot tell apart; name it in the \
                     safetensors metadata as act_type = relu or leakyrelu"
                        .into(),
                ));
            }
        },
    };
    if activation == SrvggActivation::PRelu && !prelu {
        return Err(bad("act_type prelu, but there is no body.1.weight".into()));
    }
    Ok(Some(Architecture::SrvggCompact {
        channels,
        num_feat,
        num_conv,
        scale,
        activation,
    }))
}

pub fn build(a: &Architecture, sd: &StateDict, file: &str) -> R<superres_graph::Graph> {
    let Architecture::SrvggCompact {
        channels,
        num_conv,
        scale,
        activation,
        ..
    } = *a
    else {
        return Err(invalid(file, "not an SRVGGNetCompact"));
    };
    let mut n = Net::new(Weights::identity(sd), file);
    let x = n.g.input("input", channels);
    let mut h = x;
    for i in 0..num_conv + 2 {
        let act = if i == num_conv + 1 {
            None
        } else {
            Some(match activation {
                SrvggActivation::Relu => Activation::Relu,
                SrvggActivation::LeakyRelu => Activation::LeakyRelu(0.1),
                SrvggActivation::PRelu => {
                    let key = format!("body.{}.weight", 2 * i + 1);
                    let t = n.tensor(&key)?;
                    if t.shape.len() != 1 || (t.data.len() != 1 && t.data.len() != n_feat(sd)) {
                        return Err(invalid(
                            file,
                            format!("'{key}' has shape {:?}, expected PReLU slopes", t.shape),
                        ));
                    }
                    Activation::PRelu(t.data.clone())
                }
            })
        };
        h = n.conv(&format!("body.{}", 2 * i), h, act, None)?;
    }
    if scale > 1 {
        h = n.push(
            "upsampler",
            Op::DepthToSpace {
                block: scale,
                mode: DepthToSpaceMode::Crd,
            },
            vec![h],
        )?;
        let base = n.push(
            "base",
            Op::Resize {
                factor: scale,
                mode: ResizeMode::Nearest,
            },
            vec![x],
        )?;
        h = n.push("output", Op::Binary(BinaryOp::Add), vec![h, base])?;
    } else {
        h = n.push("output", Op::Binary(BinaryOp::Add), vec![h, x])?;
    }
    n.g.output("output", h);
    Ok(n.g)
}

fn n_feat(sd: &StateDict) -> usize {
    sd.tensors.get("body.0.weight").map_or(0, |t| t.shape[0])
}
