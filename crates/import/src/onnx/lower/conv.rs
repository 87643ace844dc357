//! `Conv` and `ConvTranspose` (lowered to a stride-1 convolution of the sub-pixel phases
//! followed by a `CRD` depth-to-space).

use superres_graph::{Border, Conv2d, DepthToSpaceMode, Epilogue, Op, Padding, ValueId};

use crate::onnx::proto::{NodeProto, attr_type as at};
use crate::onnx::{Importer, MAX_DECONV_STRIDE, MAX_GEOMETRY, R, Val, to_usize};
use crate::transposed::Transposed;

impl Importer<'_> {
    /// The image input, its channels, and the 4-D weights of a `Conv` / `ConvTranspose`
    /// (their shape as stored, and their values as `f32`).
    pub(in crate::onnx) fn conv_operands(
        &mut self,
        n: &NodeProto,
    ) -> R<(ValueId, usize, [usize; 4], Vec<f32>)> {
        let x = self.image(n, 0)?;
        let cin = self.g.channels(x);
        let w = self.konst(n, 1)?;
        let [a, b, kh, kw] = w.shape[..] else {
            return Err(self.unsupported(
                n,
                format!(
                    "weights of shape {:?}: only 2-D convolutions are supported",
                    w.shape
                ),
            ));
        };
        let wv = w
            .to_f32()
            .ok_or_else(|| self.invalid(n, "weights are not numbers"))?;
        Ok((x, cin, [a, b, kh, kw], wv))
    }

    pub(in crate::onnx) fn conv(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let (x, cin, [cout, cig, kh, kw], wv) = self.conv_operands(n)?;
        let group = self.attr_i(n, "group")?.unwrap_or(1);
        let groups = to_usize(group)
            .filter(|&g| g > 0)
            .ok_or_else(|| self.invalid(n, format!("group {group}")))?;
        if cig.checked_mul(groups) != Some(cin) || cout % groups != 0 || kh == 0 || kw == 0 {
            return Err(self.invalid(
                n,
                format!(
                    "weights {:?} with {groups} group(s) do not fit an input of {cin} channels",
                    [cout, cig, kh, kw]
                ),
            ));
        }
        if let Some(ks) = self.attr_ints(n, "kernel_shape")?
            && ks != [kh as i64, kw as i64]
        {
            return Err(self.invalid(
                n,
                format!(
                    "kernel_shape {ks:?} disagrees with weights {:?}",
                    [cout, cig, kh, kw]
                ),
            ));
        }
        let bias = self.bias(n, 2, cout)?;
        let stride = self.attr_pair(n, "strides", 1, 1)?;
        let dilation = self.attr_pair(n, "dilations", 1, 1)?;
        let padding = self.conv_padding(n, (kh, kw), stride, dilation)?;
        let weights = Conv2d::weights_from_oihw(&wv, cout, cig, kh, kw);
        let conv = Conv2d {
            kh,
            kw,
            cin,
            cout,
            groups,
            stride,
            dilation,
            padding,
            weights,
            epilogue: Epilogue {
                bias,
                ..Epilogue::default()
            },
        };
        let y = self.push(n, name, Op::Conv2d(conv), vec![x])?;
        self.set(n, Val::Image(y))
    }

    pub(in crate::onnx) fn bias(
        &self,
        n: &NodeProto,
        i: usize,
        cout: usize,
    ) -> R<Option<Vec<f32>>> {
        let Some(b) = self.opt_konst(n, i)? else {
            return Ok(None);
        };
        match b.to_f32() {
            Some(v) if v.len() == cout => Ok(Some(v)),
            _ => Err(self.invalid(
                n,
                format!("bias of shape {:?} for {cout} output channels", b.shape),
            )),
        }
    }

    pub(in crate::onnx) fn pads4(&self, n: &NodeProto) -> R<[usize; 4]> {
        match self.attr_ints(n, "pads")? {
            None => Ok([0; 4]),
            Some(p) => match p[..] {
                [a, b, c, d]
                    if [a, b, c, d]
                        .iter()
                        .all(|&v| (0..=MAX_GEOMETRY as i64).contains(&v)) =>
                {
                    Ok([a as usize, b as usize, c as usize, d as usize])
                }
                _ => Err(self.unsupported(
                    n,
                    format!("pads {p:?}: expected four values in 0..={MAX_GEOMETRY} (2-D)"),
                )),
            },
        }
    }

    pub(in crate::onnx) fn conv_padding(
        &self,
        n: &NodeProto,
        (kh, kw): (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
    ) -> R<Padding> {
        let auto = self.attr_s(n, "auto_pad")?.unwrap_or_default();
        match auto.as_str() {
            "" | "NOTSET" => {
                let [top, left, bottom, right] = self.pads4(n)?;
                Ok(Padding {
                    top,
                    bottom,
                    left,
                    right,
                })
            }
            "VALID" => Ok(Padding::default()),
            "SAME_UPPER" | "SAME_LOWER" => {
                if stride != (1, 1) {
                    return Err(self.unsupported(
                        n,
                        format!(
                            "auto_pad {auto} with strides {stride:?}: the padding would depend \
                             on the input size"
                        ),
                    ));
                }
                let p = Padding::same(kh, kw, dilation);
                Ok(if auto == "SAME_UPPER" {
                    p
                } else {
                    Padding {
                        top: p.bottom,
                        bottom: p.top,
                        left: p.right,
                        right: p.left,
                    }
                })
            }
            other => Err(self.invalid(n, format!("unknown auto_pad '{other}'"))),
        }
    }

    pub(in crate::onnx) fn conv_transpose(&mut self, n: &NodeProto, name: &str) -> R<()> {
        let (x, cin, [wcin, cout, kh, kw], wv) = self.conv_operands(n)?;
        if self.attr_i(n, "group")?.unwrap_or(1) != 1 {
            return Err(self.unsupported(n, "grouped ConvTranspose".to_string()));
        }
        if wcin != cin || kh == 0 || kw == 0 {
            return Err(self.invalid(
                n,
                format!(
                    "weights {:?} do not fit an input of {cin} channels",
                    [wcin, cout, kh, kw]
                ),
            ));
        }
        if self.attr_pair(n, "dilations", 1, 1)? != (1, 1) {
            return Err(self.unsupported(n, "dilated ConvTranspose".to_string()));
        }
        if self.attr(n, "output_shape", at::INTS)?.is_some() {
            return Err(self.unsupported(
                n,
                "the output_shape attribute (give pads and output_padding instead)".to_string(),
            ));
        }
        let (sy, sx) = self.attr_pair(n, "strides", 1, 1)?;
        if sy != sx {
            return Err(self.unsupported(n, format!("unequal strides ({sy}, {sx})")));
        }
        let s = sy;
        if s > MAX_DECONV_STRIDE {
            return Err(self.unsupported(n, format!("stride {s} (at most {MAX_DECONV_STRIDE})")));
        }
        let (oph, opw) = self.attr_pair(n, "output_padding", 0, 0)?;
        let auto = self.attr_s(n, "auto_pad")?.unwrap_or_default();
        let [pt, pl, pb, pr] = match auto.as_str() {
            "" | "NOTSET" => self.pads4(n)?,
            "VALID" => [0; 4],
            "SAME_UPPER" | "SAME_LOWER" => {
                // Output = input × stride, so the total padding is k + output_padding - s.
                let th = (kh + oph) as i64 - s as i64;
                let tw = (kw + opw) as i64 - s as i64;
                if th < 0 || tw < 0 || th % 2 != 0 || tw % 2 != 0 {
                    return Err(self.unsupported(
                        n,
                        format!("auto_pad {auto} with an odd or negative total padding"),
                    ));
                }
                let (th, tw) = (th as usize / 2, tw as usize / 2);
                [th, tw, th, tw]
            }
            other => return Err(self.invalid(n, format!("unknown auto_pad '{other}'"))),
        };
        let bias = self.bias(n, 2, cout)?;
        let weight =
            |ci: usize, co: usize, ky: usize, kx: usize| wv[((ci * cout + co) * kh + ky) * kw + kx];
        let lowered = Transposed {
            cin,
            cout,
            kh,
            kw,
            stride: s,
            pads: [pt, pl, pb, pr],
            output_padding: (oph, opw),
            weight: &weight,
            bias,
            activation: None,
        }
        .lower()
        .map_err(|m| self.unsupported(n, m))?;
        let cropped = lowered.crop != Border::default();
        let last = |full: &str| {
            if cropped {
                format!("{full}/full")
            } else {
                full.to_string()
            }
        };
        let y = if s == 1 {
            self.push(n, &last(name), Op::Conv2d(lowered.conv), vec![x])?
        } else {
            let c = self.push(
                n,
                &format!("{name}/phases"),
                Op::Conv2d(lowered.conv),
                vec![x],
            )?;
            self.push(
                n,
                &last(name),
                Op::DepthToSpace {
                    block: s,
                    mode: DepthToSpaceMode::Crd,
                },
                vec![c],
            )?
        };
        let y = if cropped {
            self.push(n, name, Op::Border(lowered.crop), vec![y])?
        } else {
            y
        };
        self.set(n, Val::Image(y))
    }
}
