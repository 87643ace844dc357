//! The layers waifu2x's ncnn packs add to the Real-ESRGAN ones: `Deconvolution`, `Crop`, and
//! CUNet's squeeze-and-excitation (`Pooling` → `InnerProduct`… → `Scale`); and the edge
//! replication ("prepadding") their unpadded convolutions need.
//!
//! - **Deconvolution** goes through the same lowering as ONNX's `ConvTranspose`
//!   ([`crate::transposed`]): one convolution of every output phase, a depth-to-space, and
//!   a crop where the layer gives fewer than `stride ×` its input's pixels (waifu2x's 4×4,
//!   stride 2, pad 3 gives `2n − 4`).
//! - **Crop** of one blob to another's size (CUNet's skip connections, `0=` `1=` offsets)
//!   becomes an [`Op::Border`] with negative sides, measured on the graph at the probe size.
//! - **Squeeze-and-excitation**: a global average `Pooling`, the `InnerProduct` layers after
//!   it (each with its fused activation) and the two-input `Scale` (`0=-233`) that multiplies
//!   the pooled blob's source by their result become one [`Op::SqueezeExcite`]. A pooled
//!   blob read any other way is refused.

use superres_graph::{Border, Dense, DepthToSpaceMode, Graph, Op, SqueezeExcite};

use super::param::Layer;
use super::{Blob, Builder, checked, node_err, unsupported};
use crate::ImportError;
use crate::transposed::Transposed;

/// The edge replication a side that makes `g` map `n` input pixels to `scale · n`: 0 for a
/// size-preserving network, `k` for one that gives `scale · (n − 2k)` (waifu2x's upconv_7:
/// 7, CUNet ×2: 18, ×1: 28).
pub(super) fn prepadding(
    g: &Graph,
    probe: (usize, usize),
    file: &str,
) -> Result<usize, ImportError> {
    let invalid = |message: String| ImportError::InvalidModel {
        file: file.to_string(),
        message,
    };
    let Some((_, out)) = g.outputs.first() else {
        return Ok(0);
    };
    let Some(scale) = g.scale_factor(*out) else {
        return Ok(0);
    };
    // A network that cannot be sized at the probe (one that wants another multiple) is taken
    // as size-preserving; its runs say so if it is not.
    let Ok(shapes) = g.shapes(probe.0, probe.1) else {
        return Ok(0);
    };
    let (oh, ow, _) = shapes[out.0];
    let (want_h, want_w) = (scale * probe.0, scale * probe.1);
    if (oh, ow) == (want_h, want_w) {
        return Ok(0);
    }
    let shrink = |want: usize, got: usize| want.checked_sub(got);
    match (shrink(want_h, oh), shrink(want_w, ow)) {
        (Some(a), Some(b))
            if a == b && a % (2 * scale) == 0 && 2 * (a / scale) + 16 <= probe.0.min(probe.1) =>
        {
            Ok(a / (2 * scale))
        }
        _ => Err(invalid(format!(
            "a {}×{} input gives {ow}×{oh}, not ×{scale} less an even border of whole input \
             pixels; superres cannot map tiles through it",
            probe.1, probe.0
        ))),
    }
}

/// That the prepadded graph maps the probe to `scale ×` itself.
pub(super) fn check_prepadded(
    g: &Graph,
    probe: (usize, usize),
    file: &str,
) -> Result<(), ImportError> {
    match prepadding(g, probe, file)? {
        0 => Ok(()),
        k => Err(ImportError::InvalidModel {
            file: file.to_string(),
            message: format!("after edge replication the network still loses {k} pixels a side"),
        }),
    }
}

impl Builder<'_> {
    pub(super) fn deconv(&mut self, l: &Layer) -> Result<(), ImportError> {
        self.arity(l, 1..=1)?;
        let p = &l.params;
        let file = self.file;
        let pe = |e: String| node_err(file, l, e);
        let int = |k: i32, d: i32| p.int(k, d).map_err(pe);
        let cout = checked(int(0, 0)?, "num_output", 1, 1 << 16).map_err(pe)?;
        let kw0 = int(1, 0)?;
        let kw = checked(kw0, "kernel_w", 1, 32).map_err(pe)?;
        let kh = checked(int(11, kw0)?, "kernel_h", 1, 32).map_err(pe)?;
        let dw0 = int(2, 1)?;
        if dw0 != 1 || int(12, dw0)? != 1 {
            return Err(unsupported(
                self.file,
                l,
                "a dilated transposed convolution",
            ));
        }
        let sw0 = int(3, 1)?;
        let sw = checked(sw0, "stride_w", 1, 16).map_err(pe)?;
        let sh = checked(int(13, sw0)?, "stride_h", 1, 16).map_err(pe)?;
        if sh != sw {
            return Err(unsupported(self.file, l, "unequal strides"));
        }
        // The phase convolution holds at most ((⌈K/s⌉ + 1)·s)² taps per pair of channels, at
        // most 9 times the file's K² while s ≤ K; a larger stride leaves gaps between the
        // kernel's copies and would multiply the weights a file declares.
        if sw > kw || sh > kh {
            return Err(unsupported(
                self.file,
                l,
                format!("a stride ({sw}) larger than the kernel ({kw}×{kh})"),
            ));
        }
        let c = |v: i32, what: &str| checked(v, what, 0, 1024).map_err(pe);
        let pl = int(4, 0)?;
        let pad = [
            c(int(14, pl)?, "pad_top")?,
            c(int(16, int(14, pl)?)?, "pad_bottom")?,
            c(pl, "pad_left")?,
            c(int(15, pl)?, "pad_right")?,
        ];
        let out_pad = [
            c(int(19, 0)?, "output_pad_bottom")?,
            c(int(18, 0)?, "output_pad_right")?,
        ];
        if int(20, 0)? != 0 || int(21, 0)? != 0 {
            return Err(unsupported(self.file, l, "a fixed output size (20=/21=)"));
        }
        let bias_term = int(5, 0)? != 0;
        let wsize = checked(int(6, 0)?, "weight_data_size", 1, i32::MAX).map_err(pe)?;
        let activation = self.fused_activation(l)?;
        let x = self.value(l, 0)?;
        let cin = self.g.channels(x);
        let want = [cout, cin, kh, kw]
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b));
        if want != Some(wsize) {
            return Err(pe(format!(
                "weight_data_size {wsize} does not match {cout} outputs × {cin} inputs × {kh}×{kw}"
            )));
        }
        let raw = self
            .w
            .tagged(wsize, &format!("layer '{}' weights", l.name))?;
        let bias = if bias_term {
            Some(self.w.raw(cout, &format!("layer '{}' bias", l.name))?)
        } else {
            None
        };
        // ncnn: [cout][cin][kh][kw].
        let weight =
            |ci: usize, co: usize, ky: usize, kx: usize| raw[((co * cin + ci) * kh + ky) * kw + kx];
        let lowered = Transposed {
            cin,
            cout,
            kh,
            kw,
            stride: sw,
            pads: [pad[0], pad[2], pad[1], pad[3]],
            output_padding: (out_pad[0], out_pad[1]),
            weight: &weight,
            bias,
            activation,
        }
        .lower()
        .map_err(|m| unsupported(self.file, l, m))?;
        let v = self.push(
            l,
            &format!("{}/phases", l.name),
            Op::Conv2d(lowered.conv),
            vec![x],
        )?;
        let v = self.push(
            l,
            &format!("{}/shuffle", l.name),
            Op::DepthToSpace {
                block: sw,
                mode: DepthToSpaceMode::Crd,
            },
            vec![v],
        )?;
        let v = if lowered.crop == Border::default() {
            v
        } else {
            self.push(l, &l.name, Op::Border(lowered.crop), vec![v])?
        };
        self.define(l, 0, Blob::Value(v))
    }

    /// `Crop` of a blob to a second blob's size at offsets `0=` (x) and `1=` (y), or by its
    /// own offsets `0=`, `1=` and end offsets `6=`, `7=`.
    pub(super) fn crop(&mut self, l: &Layer) -> Result<(), ImportError> {
        self.arity(l, 1..=2)?;
        let p = &l.params;
        let file = self.file;
        let pe = |e: String| node_err(file, l, e);
        let int = |k: i32| p.int(k, 0).map_err(pe);
        for (k, what) in [
            (2, "a channel offset (2=)"),
            (5, "a channel count (5=)"),
            (13, "a depth offset (13=)"),
            (14, "a depth (14=)"),
        ] {
            if int(k)? != 0 {
                return Err(unsupported(self.file, l, what));
            }
        }
        if p.has(9) || p.has(10) || p.has(11) {
            return Err(unsupported(self.file, l, "starts/ends/axes (9=, 10=, 11=)"));
        }
        if int(3)? != 0 || int(4)? != 0 {
            return Err(unsupported(
                self.file,
                l,
                "a fixed output size (3=/4=): tiles need sizes that follow the input",
            ));
        }
        let c = |v: i32, what: &str| checked(v, what, 0, 1 << 16).map_err(pe);
        let (left, top) = (c(int(0)?, "woffset")?, c(int(1)?, "hoffset")?);
        let x = self.value(l, 0)?;
        let (bottom, right) = if l.bottoms.len() == 2 {
            let r = self.value(l, 1)?;
            let shapes = self.g.shapes(self.probe.0, self.probe.1).map_err(|e| {
                pe(format!(
                    "the blobs' sizes cannot be measured at {}×{}: {e}",
                    self.probe.1, self.probe.0
                ))
            })?;
            let ((h, w, _), (rh, rw, _)) = (shapes[x.0], shapes[r.0]);
            match (h.checked_sub(rh + top), w.checked_sub(rw + left)) {
                (Some(b), Some(rr)) => (b, rr),
                _ => {
                    return Err(pe(format!(
                        "a {w}×{h} blob does not hold a {rw}×{rh} one at offset ({left}, {top})"
                    )));
                }
            }
        } else {
            (c(int(7)?, "hoffset2")?, c(int(6)?, "woffset2")?)
        };
        let b = Border {
            top: -(top as isize),
            bottom: -(bottom as isize),
            left: -(left as isize),
            right: -(right as isize),
        };
        let v = if b == Border::default() {
            x
        } else {
            self.push(l, &l.name, Op::Border(b), vec![x])?
        };
        self.define(l, 0, Blob::Value(v))
    }

    /// A global average `Pooling`: the start of a squeeze-and-excitation.
    pub(super) fn pooling(&mut self, l: &Layer) -> Result<(), ImportError> {
        self.arity(l, 1..=1)?;
        let p = &l.params;
        let pe = |e: String| node_err(self.file, l, e);
        let (kind, global) = (p.int(0, 0).map_err(pe)?, p.int(4, 0).map_err(pe)?);
        if kind != 1 || global != 1 {
            return Err(unsupported(
                self.file,
                l,
                format!(
                    "pooling type {kind} with global_pooling={global}: only the global average \
                     (0=1 4=1) of a squeeze-and-excitation block is supported"
                ),
            ));
        }
        let x = self.value(l, 0)?;
        self.define(
            l,
            0,
            Blob::Pooled {
                of: x,
                layers: Vec::new(),
            },
        )
    }

    /// An `InnerProduct` of a pooled blob: a dense layer of the excitation.
    pub(super) fn inner_product(&mut self, l: &Layer) -> Result<(), ImportError> {
        self.arity(l, 1..=1)?;
        let p = &l.params;
        let file = self.file;
        let pe = |e: String| node_err(file, l, e);
        let Blob::Pooled { of, mut layers } = self.blob(l, 0)? else {
            return Err(unsupported(
                self.file,
                l,
                "an InnerProduct of an image: superres takes it only inside a \
                 squeeze-and-excitation block, after a global average Pooling",
            ));
        };
        let cout = checked(p.int(0, 0).map_err(pe)?, "num_output", 1, 1 << 16).map_err(pe)?;
        let bias_term = p.int(1, 0).map_err(pe)? != 0;
        let wsize =
            checked(p.int(2, 0).map_err(pe)?, "weight_data_size", 1, i32::MAX).map_err(pe)?;
        if p.int(8, 0).map_err(pe)? != 0 {
            return Err(unsupported(
                self.file,
                l,
                "int8 quantisation (int8_scale_term)",
            ));
        }
        let cin = layers
            .last()
            .map_or_else(|| self.g.channels(of), |d| d.cout);
        if cin.checked_mul(cout) != Some(wsize) {
            return Err(pe(format!(
                "weight_data_size {wsize} does not match {cout} outputs × {cin} inputs"
            )));
        }
        let activation = self.fused_activation(l)?;
        let weights = self
            .w
            .tagged(wsize, &format!("layer '{}' weights", l.name))?;
        let bias = if bias_term {
            Some(self.w.raw(cout, &format!("layer '{}' bias", l.name))?)
        } else {
            None
        };
        layers.push(Dense {
            cin,
            cout,
            weights,
            bias,
            activation,
        });
        self.define(l, 0, Blob::Pooled { of, layers })
    }

    /// `Scale` by a second blob (`0=-233`): the excitation applied to the pooled image.
    pub(super) fn scale(&mut self, l: &Layer) -> Result<(), ImportError> {
        let p = &l.params;
        let pe = |e: String| node_err(self.file, l, e);
        if l.bottoms.len() != 2 || p.int(0, 0).map_err(pe)? != -233 {
            return Err(unsupported(
                self.file,
                l,
                "a Scale by its own weights; superres takes Scale only as the gate of a \
                 squeeze-and-excitation block (two inputs, 0=-233)",
            ));
        }
        self.arity(l, 2..=2)?;
        if p.int(1, 0).map_err(pe)? != 0 {
            return Err(unsupported(self.file, l, "a Scale with a bias (1=1)"));
        }
        let x = self.value(l, 0)?;
        let Blob::Pooled { of, layers } = self.blob(l, 1)? else {
            return Err(unsupported(
                self.file,
                l,
                "a Scale by an image; its second input must be the excitation of the first",
            ));
        };
        if of != x || layers.is_empty() {
            return Err(unsupported(
                self.file,
                l,
                "a Scale whose gates come from another blob than the one it scales",
            ));
        }
        let v = self.push(
            l,
            &l.name,
            Op::SqueezeExcite(SqueezeExcite { layers }),
            vec![x],
        )?;
        self.define(l, 0, Blob::Value(v))
    }
}
