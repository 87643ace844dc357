//! Transposed convolutions (ONNX `ConvTranspose`, ncnn `Deconvolution`) as the engines'
//! fast operators: one stride-1 convolution that computes every output phase, a
//! depth-to-space (CRD), and a crop where the transposed convolution gives fewer than
//! `stride ×` the input's pixels.
//!
//! Why: no backend has a transposed-convolution kernel, and none needs one. Output phase `r`
//! of `y[q·s + r] = Σ x[q + offset] · w[tap]` is a plain correlation with the taps of that
//! phase ([`phase_taps`]), so the `s²` phases are the output channels of one convolution and
//! a pixel shuffle interleaves them: the same products, summed in another order, through the
//! convolution kernels every backend already makes fast.

use superres_graph::{Activation, Border, Conv2d, Epilogue, Padding};

/// A transposed convolution, group 1, undilated, equal strides.
pub(crate) struct Transposed<'a> {
    pub cin: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// `(height, width)` added at the bottom and right.
    pub output_padding: (usize, usize),
    /// The weight of input channel `ci`, output channel `co`, tap `(ky, kx)`.
    pub weight: &'a dyn Fn(usize, usize, usize, usize) -> f32,
    pub bias: Option<Vec<f32>>,
    pub activation: Option<Activation>,
}

/// What a [`Transposed`] becomes: the phase convolution (then a depth-to-space by `stride`,
/// CRD), and the crop of its `stride ×` output to the transposed convolution's size
/// ([`Border::default`] when they are equal).
pub(crate) struct Lowered {
    pub conv: Conv2d,
    pub crop: Border,
}

impl Transposed<'_> {
    /// The lowering, or why it cannot be expressed: a transposed convolution whose output is
    /// larger than `stride ×` its input (kernel + output padding > stride + pads).
    pub(crate) fn lower(&self) -> Result<Lowered, String> {
        let (s, [pt, pl, pb, pr], (oph, opw)) = (self.stride, self.pads, self.output_padding);
        // Output rows beyond `stride × input`: (n − 1)·s + k − pads + output padding − n·s.
        let extra =
            |k: usize, p0: usize, p1: usize, op: usize| (k + op) as isize - (s + p0 + p1) as isize;
        let (ey, ex) = (extra(self.kh, pt, pb, oph), extra(self.kw, pl, pr, opw));
        if ey > 0 || ex > 0 {
            return Err(format!(
                "a transposed convolution is supported when its output is at most stride × \
                 input (kernel − pads + output padding ≤ stride); got kernel {}×{}, stride {s}, \
                 pads [{pt}, {pl}, {pb}, {pr}], output padding [{oph}, {opw}]",
                self.kh, self.kw
            ));
        }
        let (taps_y, dy0, dy1) = phase_taps(self.kh, s, pt);
        let (taps_x, dx0, dx1) = phase_taps(self.kw, s, pl);
        let (kh2, kw2) = ((dy1 - dy0 + 1) as usize, (dx1 - dx0 + 1) as usize);
        let (cin, cout, ss) = (self.cin, self.cout, s * s);
        let cout2 = cout * ss;
        let mut weights = vec![0.0f32; kh2 * kw2 * cin * cout2];
        for (ry, ty) in taps_y.iter().enumerate() {
            for (rx, tx) in taps_x.iter().enumerate() {
                for &(dy, ky) in ty {
                    for &(dx, kx) in tx {
                        let (uy, ux) = ((dy - dy0) as usize, (dx - dx0) as usize);
                        for ci in 0..cin {
                            for co in 0..cout {
                                weights[((uy * kw2 + ux) * cin + ci) * cout2
                                    + co * ss
                                    + ry * s
                                    + rx] = (self.weight)(ci, co, ky, kx);
                            }
                        }
                    }
                }
            }
        }
        let conv = Conv2d {
            kh: kh2,
            kw: kw2,
            cin,
            cout: cout2,
            groups: 1,
            stride: (1, 1),
            dilation: (1, 1),
            padding: Padding {
                top: (-dy0) as usize,
                bottom: dy1 as usize,
                left: (-dx0) as usize,
                right: dx1 as usize,
            },
            weights,
            epilogue: Epilogue {
                bias: self
                    .bias
                    .as_ref()
                    .map(|b| b.iter().flat_map(|&v| std::iter::repeat_n(v, ss)).collect()),
                activation: self.activation.clone(),
                residual: None,
            },
        };
        Ok(Lowered {
            conv,
            crop: Border {
                bottom: ey,
                right: ex,
                ..Border::default()
            },
        })
    }
}

/// For a transposed convolution along one axis (kernel `k`, stride `s`, leading pad `p`):
/// for each output phase `r`, the `(input offset, tap)` pairs with
/// `y[q·s + r] = Σ x[q + offset] · w[tap]`, and the smallest and largest offset (0 included).
#[allow(clippy::type_complexity)]
fn phase_taps(k: usize, s: usize, p: usize) -> (Vec<Vec<(isize, usize)>>, isize, isize) {
    let (mut lo, mut hi) = (0isize, 0isize);
    let phases = (0..s)
        .map(|r| {
            let (a, b) = (((r + p) / s) as isize, (r + p) % s);
            (0..)
                .map(|m| (m, m * s + b))
                .take_while(|&(_, t)| t < k)
                .map(|(m, t)| {
                    let d = a - m as isize;
                    lo = lo.min(d);
                    hi = hi.max(d);
                    (d, t)
                })
                .collect()
        })
        .collect();
    (phases, lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_taps_of_a_k4_s2_p1_deconvolution() {
        // y[2q] = x[q]·w1 + x[q-1]·w3, y[2q+1] = x[q+1]·w0 + x[q]·w2
        let (taps, lo, hi) = phase_taps(4, 2, 1);
        assert_eq!(taps, vec![vec![(0, 1), (-1, 3)], vec![(1, 0), (0, 2)]]);
        assert_eq!((lo, hi), (-1, 1));
    }

    #[test]
    fn a_transposed_convolution_smaller_than_stride_times_its_input_is_cropped() {
        // waifu2x's 4×4, stride 2, pad 3: 2n − 4 rows, so the 2n phase rows lose 4 below.
        let w = |_: usize, _: usize, _: usize, _: usize| 1.0;
        let t = Transposed {
            cin: 2,
            cout: 3,
            kh: 4,
            kw: 4,
            stride: 2,
            pads: [3, 3, 3, 3],
            output_padding: (0, 0),
            weight: &w,
            bias: None,
            activation: None,
        };
        let l = t.lower().expect("lowers");
        assert_eq!((l.conv.cin, l.conv.cout), (2, 12));
        assert_eq!(
            l.crop,
            Border {
                top: 0,
                bottom: -4,
                left: 0,
                right: -4
            }
        );
        let bigger = Transposed {
            pads: [0, 0, 0, 0],
            ..t
        };
        assert!(bigger.lower().is_err());
    }
}
