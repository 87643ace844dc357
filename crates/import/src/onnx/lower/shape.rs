//! Operators that move pixels: `DepthToSpace`, `Resize` / `Upsample`, `Concat`, and
//! `Reshape` / `Transpose` (the pixel shuffle of images, or folded on constants).

use superres_graph::{DepthToSpaceMode, Op, ResizeMode, ValueId};

use crate::onnx::consts::{Const, Sym};
use crate::onnx::proto::{NodeProto, attr_type as at};
use crate::onnx::{Importer, MAX_RESIZE, R, SHUFFLE_HINT, Shuffle, Val, to_usize};

impl Importer<'_> {
    pub(in crate::onnx) fn depth_to_space(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let x = self.image(n, 0)?;
        let b = self.attr_i(n, "blocksize")?.unwrap_or(0);
        let c = self.g.channels(x);
        let block = to_usize(b)
            .filter(|&b| b > 0 && b.checked_mul(b).is_some_and(|bb| bb <= c))
            .ok_or_else(|| self.invalid(n, format!("blocksize {b} for {c} channels")))?;
        let mode = match self.attr_s(n, "mode")?.as_deref().unwrap_or("DCR") {
            "DCR" => DepthToSpaceMode::Dcr,
            "CRD" => DepthToSpaceMode::Crd,
            other => return Err(self.invalid(n, format!("unknown mode '{other}'"))),
        };
        let y = self.push(n, name, Op::DepthToSpace { block, mode }, vec![x])?;
        self.set(n, Val::Image(y))
    }

    /// Height and width of an image value, in terms of the input's.
    pub(in crate::onnx) fn spatial(&self, n: &NodeProto, x: ValueId) -> R<(Sym, Sym)> {
        let s = self.g.node(x).scale.filter(|s| s.den == 1).ok_or_else(|| {
            self.unsupported(
                n,
                "the size of a downsampled image is not known at import".to_string(),
            )
        })?;
        let f = s.num as f64;
        Ok(match self.input_hw {
            Some((h, w)) => (Sym::k(h as f64 * f), Sym::k(w as f64 * f)),
            None => (
                Sym {
                    c: 0.0,
                    h: f,
                    w: 0.0,
                },
                Sym {
                    c: 0.0,
                    h: 0.0,
                    w: f,
                },
            ),
        })
    }

    pub(in crate::onnx) fn resize(&mut self, n: &NodeProto, name: &str, upsample: bool) -> R<()> {
        let x = self.image(n, 0)?;
        let channels = self.g.channels(x);
        let legacy = upsample || self.opset < 11;
        let mode = self.attr_s(n, "mode")?.unwrap_or_else(|| "nearest".into());
        // Scales or sizes, per NCHW axis.
        let axes: Vec<usize> = match self.attr_ints(n, "axes")? {
            None => vec![0, 1, 2, 3],
            Some(a) => a
                .iter()
                .map(|&v| to_usize(if v < 0 { v + 4 } else { v }).filter(|&v| v < 4))
                .collect::<Option<_>>()
                .ok_or_else(|| self.invalid(n, format!("axes {a:?}")))?,
        };
        let scales: Option<Vec<f32>> = if upsample && self.opset < 9 {
            Some(
                self.attr(n, "scales", at::FLOATS)?
                    .map(|a| a.floats.clone())
                    .ok_or_else(|| self.invalid(n, "missing scales"))?,
            )
        } else {
            let i = if legacy { 1 } else { 2 };
            match self.opt_konst(n, i)? {
                Some(k) if k.len() > 0 => Some(k.to_f32().ok_or_else(|| {
                    self.unsupported(n, "scales that depend on the input size".to_string())
                })?),
                _ => None,
            }
        };
        let factor = |f: f64| -> Option<usize> {
            (f >= 1.0 && f.fract() == 0.0 && f <= MAX_RESIZE as f64).then_some(f as usize)
        };
        let mut fh = None;
        let mut fw = None;
        if let Some(sc) = scales {
            if sc.len() != axes.len() {
                return Err(self.invalid(n, format!("{} scales for {} axes", sc.len(), axes.len())));
            }
            for (&ax, &f) in axes.iter().zip(&sc) {
                match ax {
                    0 | 1 if f != 1.0 => {
                        return Err(self.unsupported(n, format!("scale {f} on axis {ax}")));
                    }
                    2 => fh = factor(f as f64),
                    3 => fw = factor(f as f64),
                    _ => {}
                }
            }
        } else if !legacy {
            let sizes = self
                .opt_konst(n, 3)?
                .ok_or_else(|| self.invalid(n, "neither scales nor sizes are given"))?;
            let sizes = sizes
                .to_sym()
                .filter(|s| s.len() == axes.len())
                .ok_or_else(|| {
                    self.invalid(
                        n,
                        format!("sizes of shape {:?} for {} axes", sizes.shape, axes.len()),
                    )
                })?;
            let (h, w) = self.spatial(n, x)?;
            for (&ax, &d) in axes.iter().zip(&sizes) {
                match ax {
                    1 if d.konst().is_some_and(|c| c != channels as f64) => {
                        return Err(self.unsupported(n, "resizing the channel axis".to_string()));
                    }
                    2 => fh = ratio(d, h).and_then(factor),
                    3 => fw = ratio(d, w).and_then(factor),
                    _ => {}
                }
            }
        } else {
            return Err(self.invalid(n, "missing scales"));
        }
        let f = match (fh, fw) {
            (Some(a), Some(b)) if a == b => a,
            (None, None) if !axes.contains(&2) && !axes.contains(&3) => 1,
            _ => {
                return Err(self.unsupported(
                    n,
                    "only upsampling by the same integer factor in height and width".to_string(),
                ));
            }
        };
        let default_ctm = if legacy { "asymmetric" } else { "half_pixel" };
        let ctm = self
            .attr_s(n, "coordinate_transformation_mode")?
            .unwrap_or_else(|| default_ctm.into());
        let rmode = match mode.as_str() {
            "nearest" => {
                let nm = self.attr_s(n, "nearest_mode")?.unwrap_or_else(|| {
                    if legacy {
                        "floor"
                    } else {
                        "round_prefer_floor"
                    }
                    .into()
                });
                if f > 1 && !nearest_is_floor(f, &ctm, &nm) {
                    return Err(self.unsupported(
                        n,
                        format!(
                            "nearest resize with coordinate_transformation_mode '{ctm}' and \
                             nearest_mode '{nm}' does not repeat each pixel {f}×{f}"
                        ),
                    ));
                }
                ResizeMode::Nearest
            }
            "linear" | "bilinear"
                if matches!(
                    ctm.as_str(),
                    "half_pixel" | "pytorch_half_pixel" | "half_pixel_symmetric"
                ) =>
            {
                ResizeMode::Bilinear
            }
            _ => {
                return Err(self.unsupported(
                    n,
                    format!(
                        "mode '{mode}' with coordinate_transformation_mode '{ctm}' (supported: \
                         nearest, and linear with half-pixel centres)"
                    ),
                ));
            }
        };
        let y = if f == 1 {
            x
        } else {
            self.push(
                n,
                name,
                Op::Resize {
                    factor: f,
                    mode: rmode,
                },
                vec![x],
            )?
        };
        self.set(n, Val::Image(y))
    }

    pub(in crate::onnx) fn concat(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let axis = self.attr_i(n, "axis")?.unwrap_or(1);
        let vals: Vec<&Val> = (0..n.input.len())
            .map(|i| self.input(n, i))
            .collect::<R<_>>()?;
        if vals.is_empty() {
            return Err(self.invalid(n, "no inputs"));
        }
        if vals.iter().all(|v| matches!(v, Val::Image(_))) {
            if axis != 1 && axis != -3 {
                return Err(self.unsupported(
                    n,
                    format!("concatenation of images along axis {axis} (only channels, axis 1)"),
                ));
            }
            let ids: Vec<ValueId> = vals
                .iter()
                .filter_map(|v| match v {
                    Val::Image(i) => Some(*i),
                    _ => None,
                })
                .collect();
            let y = self.push(n, name, Op::Concat, ids)?;
            return self.set(n, Val::Image(y));
        }
        let ks: Vec<&Const> = vals
            .iter()
            .filter_map(|v| match v {
                Val::Const(k) => Some(k),
                _ => None,
            })
            .collect();
        if ks.len() != vals.len() {
            return Err(self.unsupported(n, "concatenating images with constants".to_string()));
        }
        if !ks.iter().all(|k| k.shape.len() == 1) || !(axis == 0 || axis == -1) {
            return Err(self.unsupported(
                n,
                "folding a concatenation of constants other than 1-D ones".to_string(),
            ));
        }
        let out = Const::concat(&ks)
            .ok_or_else(|| self.unsupported(n, "concatenating mixed constants".to_string()))?;
        self.set(n, Val::Const(out))
    }

    pub(in crate::onnx) fn reshape(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let allowzero = self.attr_i(n, "allowzero")?.unwrap_or(0) != 0;
        let target = self.konst(n, 1)?;
        let dims = target
            .to_sym()
            .filter(|_| target.shape.len() == 1)
            .ok_or_else(|| self.invalid(n, format!("shape input of shape {:?}", target.shape)))?;
        match self.input(n, 0)?.clone() {
            Val::Image(x) if dims.len() == 6 => self.set(
                n,
                Val::Shuffle(Shuffle {
                    src: x,
                    dims,
                    transposed: None,
                }),
            ),
            Val::Shuffle(Shuffle {
                src,
                transposed: Some((block, mode, c)),
                ..
            }) if dims.len() == 4 => {
                let (h, w) = self.spatial(n, src)?;
                let b = block as f64;
                let ok = dim_is(dims[0], &[1.0, -1.0, 0.0])
                    && dim_is(dims[1], &[c as f64, -1.0, 0.0])
                    && self.dim_matches(dims[2], h.scale_by(b))
                    && self.dim_matches(dims[3], w.scale_by(b));
                if !ok {
                    return Err(self.unsupported(n, SHUFFLE_HINT.to_string()));
                }
                let y = self.push(n, name, Op::DepthToSpace { block, mode }, vec![src])?;
                self.set(n, Val::Image(y))
            }
            Val::Const(k) => {
                let ints = target
                    .ints()
                    .ok_or_else(|| self.unsupported(n, "a symbolic target shape".to_string()))?;
                let shape = reshape_dims(&k.shape, &ints, allowzero).ok_or_else(|| {
                    self.invalid(n, format!("cannot reshape {:?} to {ints:?}", k.shape))
                })?;
                self.set(n, Val::Const(k.with_shape(shape)))
            }
            _ => Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        }
    }

    pub(in crate::onnx) fn dim_matches(&self, d: Sym, expect: Sym) -> bool {
        if d.konst() == Some(-1.0) || d == expect {
            return true;
        }
        // With a symbolic input size, a constant cannot be checked; ONNX Runtime would
        // reject a mismatch at run time, so accept it.
        self.input_hw.is_none() && d.konst().is_some_and(|v| v > 0.0)
    }

    pub(in crate::onnx) fn transpose(&mut self, n: &NodeProto) -> R<()> {
        let perm = self.attr_ints(n, "perm")?;
        match self.input(n, 0)?.clone() {
            Val::Shuffle(sh) if sh.transposed.is_none() => {
                let c = self.g.channels(sh.src);
                let (h, w) = self.spatial(n, sh.src)?;
                let d = &sh.dims;
                let as_block = |s: Sym| {
                    s.konst()
                        .filter(|v| *v >= 1.0 && v.fract() == 0.0 && *v < 1e6)
                        .map(|v| v as usize)
                };
                let found = match perm.as_deref() {
                    Some([0, 1, 4, 2, 5, 3]) => as_block(d[2])
                        .filter(|&r| Some(r) == as_block(d[3]) && c.is_multiple_of(r * r))
                        .filter(|&r| dim_is(d[1], &[(c / (r * r)) as f64, -1.0]))
                        .map(|r| (r, DepthToSpaceMode::Crd)),
                    Some([0, 3, 4, 1, 5, 2]) => as_block(d[1])
                        .filter(|&r| Some(r) == as_block(d[2]) && c.is_multiple_of(r * r))
                        .filter(|&r| dim_is(d[3], &[(c / (r * r)) as f64, -1.0]))
                        .map(|r| (r, DepthToSpaceMode::Dcr)),
                    _ => None,
                };
                let ok = dim_is(d[0], &[1.0, -1.0, 0.0])
                    && self.dim_matches(d[4], h)
                    && self.dim_matches(d[5], w);
                match found.filter(|_| ok) {
                    Some((r, mode)) => self.set(
                        n,
                        Val::Shuffle(Shuffle {
                            transposed: Some((r, mode, c / (r * r))),
                            ..sh
                        }),
                    ),
                    None => Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
                }
            }
            Val::Const(k) => {
                let rank = k.shape.len();
                let perm: Vec<usize> = match perm {
                    None => (0..rank).rev().collect(),
                    Some(p) => p
                        .iter()
                        .map(|&v| to_usize(v).filter(|&v| v < rank))
                        .collect::<Option<_>>()
                        .ok_or_else(|| self.invalid(n, format!("perm {p:?}")))?,
                };
                let mut seen = perm.clone();
                seen.sort_unstable();
                if seen != (0..rank).collect::<Vec<_>>() {
                    return Err(self.invalid(n, format!("perm {perm:?} for rank {rank}")));
                }
                self.set(n, Val::Const(k.transpose(&perm)))
            }
            _ => Err(self.unsupported(n, SHUFFLE_HINT.to_string())),
        }
    }
}

trait ScaleBy {
    fn scale_by(self, f: f64) -> Sym;
}

impl ScaleBy for Sym {
    fn scale_by(self, f: f64) -> Sym {
        Sym {
            c: self.c * f,
            h: self.h * f,
            w: self.w * f,
        }
    }
}

/// Whether `d` is one of the constants in `vals`.
fn dim_is(d: Sym, vals: &[f64]) -> bool {
    d.konst().is_some_and(|v| vals.contains(&v))
}

/// `d / base` if `d` is a constant multiple of `base`.
fn ratio(d: Sym, base: Sym) -> Option<f64> {
    let r = match base.konst() {
        Some(b) if b != 0.0 => d.konst()? / b,
        Some(_) => return None,
        None if base.h != 0.0 => d.h / base.h,
        None => d.w / base.w,
    };
    (base.scale_by(r) == d).then_some(r)
}

/// Whether ONNX's nearest resize with these modes repeats each pixel `f×f` times (what the
/// IR's nearest resize does), checked on every output of rows of 1 to 9 pixels.
/// `align_corners` depends on the size and is never the same.
fn nearest_is_floor(f: usize, ctm: &str, nm: &str) -> bool {
    let ff = f as f64;
    (1..10usize).all(|n| {
        (0..n * f).all(|o| {
            let o_f = o as f64;
            let x = match ctm {
                "half_pixel" | "half_pixel_symmetric" => (o_f + 0.5) / ff - 0.5,
                "pytorch_half_pixel" if n * f > 1 => (o_f + 0.5) / ff - 0.5,
                "pytorch_half_pixel" => 0.0,
                "asymmetric" => o_f / ff,
                "tf_half_pixel_for_nn" => (o_f + 0.5) / ff,
                _ => return false,
            };
            let fl = x.floor();
            let i = match nm {
                "round_prefer_floor" if x - fl == 0.5 => fl,
                "round_prefer_ceil" if x - fl == 0.5 => fl + 1.0,
                "round_prefer_floor" | "round_prefer_ceil" => x.round(),
                "floor" => fl,
                "ceil" => x.ceil(),
                _ => return false,
            };
            i.clamp(0.0, n as f64 - 1.0) as usize == o / f
        })
    })
}

/// ONNX `Reshape` of a constant: `0` copies the input dimension (unless `allowzero`), one
/// `-1` is inferred.
fn reshape_dims(from: &[usize], to: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let total: usize = from.iter().product();
    let mut out = Vec::with_capacity(to.len());
    let mut infer = None;
    for (i, &d) in to.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(*from.get(i)?),
            d if d >= 0 => out.push(usize::try_from(d).ok()?),
            _ => return None,
        }
    }
    let known = out.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return None;
        }
        out[i] = total / known;
    }
    let size = out.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    (size == total).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_modes() {
        for f in 2..6 {
            assert!(
                nearest_is_floor(f, "half_pixel", "round_prefer_floor"),
                "f={f}"
            );
            assert!(nearest_is_floor(f, "asymmetric", "floor"), "f={f}");
            assert!(!nearest_is_floor(f, "half_pixel", "floor"), "f={f}");
            assert!(
                !nearest_is_floor(f, "align_corners", "round_prefer_floor"),
                "f={f}"
            );
        }
        assert!(nearest_is_floor(2, "asymmetric", "round_prefer_floor"));
        assert!(!nearest_is_floor(3, "asymmetric", "round_prefer_floor"));
    }

    #[test]
    fn reshape_of_constants() {
        assert_eq!(reshape_dims(&[1, 4, 1, 1], &[-1], false), Some(vec![4]));
        assert_eq!(reshape_dims(&[2, 3], &[0, -1], false), Some(vec![2, 3]));
        assert_eq!(reshape_dims(&[2, 3], &[4, -1], false), None);
        assert_eq!(reshape_dims(&[2, 3], &[-1, -1], false), None);
    }
}
