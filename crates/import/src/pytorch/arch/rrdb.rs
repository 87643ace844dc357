//! ESRGAN's RRDBNet in its three key layouts, renamed to the new (Real-ESRGAN) names:
//!
//! | new (Real-ESRGAN) | BSRGAN / RealSR | old (ESRGAN) |
//! |---|---|---|
//! | `conv_first` | `conv_first` | `model.0` |
//! | `body.N.rdbM.convK` | `RRDB_trunk.N.RDBM.convK` | `model.1.sub.N.RDBM.convK.0` |
//! | `conv_body` | `trunk_conv` | `model.1.sub.<num_block>` |
//! | `conv_upK` | `upconvK` | `model.<3K>` |
//! | `conv_hr` | `HRconv` | `model.<3U+2>` (U upsamplings) |
//! | `conv_last` | `conv_last` | `model.<3U+4>` |

use std::collections::BTreeMap;

use superres_graph::{Activation, BinaryOp, Graph, Op, ResizeMode, Tensor, ValueId};

use super::{Architecture, Net, R, Weights};
use crate::pytorch::{StateDict, invalid};

/// Which naming the file used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RrdbLayout {
    New,
    Bsrgan,
    Old,
}

fn rename<'a>(sd: &'a StateDict, layout: RrdbLayout) -> Weights<'a> {
    let mut map = BTreeMap::new();
    let old_top = sd
        .tensors
        .keys()
        .filter_map(|k| {
            k.strip_prefix("model.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let old_trunk = sd
        .tensors
        .keys()
        .filter_map(|k| {
            let rest = k.strip_prefix("model.1.sub.")?;
            let (n, tail) = rest.split_once('.')?;
            matches!(tail, "weight" | "bias").then(|| n.parse::<usize>().ok())?
        })
        .max();
    for (k, t) in &sd.tensors {
        let Some((stem, kind)) = k.rsplit_once('.') else {
            continue;
        };
        let canonical = match layout {
            RrdbLayout::New => Some(stem.to_string()),
            RrdbLayout::Bsrgan => {
                if let Some(rest) = stem.strip_prefix("RRDB_trunk.") {
                    // N.RDBm.convK
                    let p: Vec<&str> = rest.split('.').collect();
                    match p[..] {
                        [n, rdb, conv] => rdb
                            .strip_prefix("RDB")
                            .map(|m| format!("body.{n}.rdb{m}.{conv}")),
                        _ => None,
                    }
                } else if stem == "trunk_conv" {
                    Some("conv_body".into())
                } else if stem == "HRconv" {
                    Some("conv_hr".into())
                } else if let Some(n) = stem.strip_prefix("upconv") {
                    Some(format!("conv_up{n}"))
                } else {
                    Some(stem.to_string())
                }
            }
            RrdbLayout::Old => {
                let p: Vec<&str> = stem.split('.').collect();
                match p[..] {
                    ["model", "0"] => Some("conv_first".into()),
                    ["model", "1", "sub", n, rdb, conv, "0"] => rdb
                        .strip_prefix("RDB")
                        .map(|m| format!("body.{n}.rdb{m}.{conv}")),
                    ["model", "1", "sub", n] if n.parse().ok() == old_trunk => {
                        Some("conv_body".into())
                    }
                    ["model", i] => match i.parse::<usize>() {
                        Ok(i) if i == old_top && i >= 4 => Some("conv_last".into()),
                        Ok(i) if i + 2 == old_top => Some("conv_hr".into()),
                        Ok(i) if i >= 3 && i % 3 == 0 && i + 2 < old_top => {
                            Some(format!("conv_up{}", i / 3))
                        }
                        _ => None,
                    },
                    _ => None,
                }
            }
        };
        if let Some(c) = canonical {
            map.insert(format!("{c}.{kind}"), (k.as_str(), t));
        }
    }
    Weights { map }
}

fn layout_of(sd: &StateDict) -> Option<RrdbLayout> {
    let has = |k: &str| sd.tensors.contains_key(k);
    if has("conv_first.weight") && has("body.0.rdb1.conv1.weight") {
        Some(RrdbLayout::New)
    } else if has("conv_first.weight") && has("RRDB_trunk.0.RDB1.conv1.weight") {
        Some(RrdbLayout::Bsrgan)
    } else if has("model.0.weight") && has("model.1.sub.0.RDB1.conv1.0.weight") {
        Some(RrdbLayout::Old)
    } else {
        None
    }
}

pub fn detect(sd: &StateDict, file: &str) -> R<Option<Architecture>> {
    let Some(layout) = layout_of(sd) else {
        return Ok(None);
    };
    let w = rename(sd, layout);
    let bad = |m: String| invalid(file, format!("RRDBNet ({layout:?} layout): {m}"));
    let shape = |k: &str| -> R<Vec<usize>> {
        match w.get(k) {
            Some(t) if t.shape.len() == 4 => Ok(t.shape.clone()),
            Some(t) => Err(bad(format!(
                "'{}' has shape {:?}, expected a 4-D kernel",
                w.original(k),
                t.shape
            ))),
            None => Err(bad(format!("there is no tensor for '{k}.weight'"))),
        }
    };
    let first = shape("conv_first.weight")?;
    let last = shape("conv_last.weight")?;
    shape("conv_body.weight")?;
    shape("conv_hr.weight")?;
    let (num_feat, cin, channels) = (first[0], first[1], last[0]);
    let unshuffle = match cin {
        c if c == channels => 1,
        c if c == 4 * channels => 2,
        c if c == 16 * channels => 4,
        _ => {
            return Err(bad(format!(
                "conv_first takes {cin} channels and conv_last gives {channels}: expected \
                 {channels}, {} (×2, pixel-unshuffle 2) or {} (×1, pixel-unshuffle 4)",
                4 * channels,
                16 * channels
            )));
        }
    };
    let num_block = (0..)
        .take_while(|n| w.has(&format!("body.{n}.rdb1.conv1.weight")))
        .count();
    let upsamples = (1..)
        .take_while(|k| w.has(&format!("conv_up{k}.weight")))
        .count();
    let num_grow_ch = shape("body.0.rdb1.conv1.weight")?[0];
    if upsamples == 0 || upsamples > 4 || (1usize << upsamples) < unshuffle {
        return Err(bad(format!(
            "{upsamples} upsampling convolutions with a pixel-unshuffle of {unshuffle} is no integer upscale"
        )));
    }
    let scale = (1usize << upsamples) / unshuffle;
    Ok(Some(Architecture::Rrdb {
        layout,
        channels,
        num_feat,
        num_block,
        num_grow_ch,
        upsamples,
        unshuffle,
        scale,
    }))
}

const LRELU: Activation = Activation::LeakyRelu(0.2);

fn rdb(n: &mut Net<'_>, p: &str, x: ValueId) -> R<ValueId> {
    let mut feats = vec![x];
    for k in 1..=5 {
        let cat = if feats.len() == 1 {
            x
        } else {
            n.push(&format!("{p}.cat{k}"), Op::Concat, feats.clone())?
        };
        let conv = format!("{p}.conv{k}");
        let y = if k < 5 {
            n.conv(&conv, cat, Some(LRELU), None)?
        } else {
            // x5 * 0.2 + x
            n.conv(&conv, cat, None, Some((0.2, x)))?
        };
        feats.push(y);
    }
    Ok(feats[5])
}

pub fn build(a: &Architecture, sd: &StateDict, file: &str) -> R<Graph> {
    let Architecture::Rrdb {
        layout,
        channels,
        num_block,
        upsamples,
        unshuffle,
        ..
    } = *a
    else {
        return Err(invalid(file, "not an RRDBNet"));
    };
    let mut n = Net::new(rename(sd, layout), file);
    let x = n.g.input("input", channels);
    let feat = if unshuffle > 1 {
        n.pixel_unshuffle(x, unshuffle)?
    } else {
        x
    };
    let fea = n.conv("conv_first", feat, None, None)?;
    let mut t = fea;
    for b in 0..num_block {
        let inp = t;
        for m in 1..=3 {
            t = rdb(&mut n, &format!("body.{b}.rdb{m}"), t)?;
        }
        // out * 0.2 + x
        let c =
            n.g.constant(&format!("body.{b}.scale"), Tensor::scalar(0.2));
        t = n.push(
            &format!("body.{b}.mul"),
            Op::Binary(BinaryOp::Mul),
            vec![t, c],
        )?;
        t = n.push(
            &format!("body.{b}"),
            Op::Binary(BinaryOp::Add),
            vec![t, inp],
        )?;
    }
    let mut h = n.conv("conv_body", t, None, Some((1.0, fea)))?;
    for k in 1..=upsamples {
        let u = n.push(
            &format!("up{k}"),
            Op::Resize {
                factor: 2,
                mode: ResizeMode::Nearest,
            },
            vec![h],
        )?;
        h = n.conv(&format!("conv_up{k}"), u, Some(LRELU), None)?;
    }
    h = n.conv("conv_hr", h, Some(LRELU), None)?;
    let out = n.conv("conv_last", h, None, None)?;
    n.g.output("output", out);
    Ok(n.g)
}
