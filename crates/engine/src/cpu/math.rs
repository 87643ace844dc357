//! Scalar math shared by the kernels and the element-wise operators.

/// `tanh(x)` as a rational function of degree 13/6 on `[-7.905, 7.905]`, clamped outside
/// (where `f32` `tanh` is 1 within half an ulp), `x` itself below `4e-4`. Eigen's
/// single-precision coefficients; the largest error against `f64` `tanh` is 3.0e-7 relative
/// (a few ulp, as accurate near 0 as near ±1; test `fast_tanh_matches_f64`), far below the
/// rounding error of the sums the convolutions feed it. Branch-free, so loops over it vectorise.
#[inline(always)]
#[allow(clippy::excessive_precision)]
pub fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.90531110763549805;
    let c = x.clamp(-CLAMP, CLAMP);
    let x2 = c * c;
    // Plain multiply-adds: `mul_add` would call a library `fma` where FMA is not enabled.
    let mut p = -2.76076847742355e-16f32;
    p = p * x2 + 2.00018790482477e-13;
    p = p * x2 + -8.60467152213735e-11;
    p = p * x2 + 5.12229709037114e-08;
    p = p * x2 + 1.48572235717979e-05;
    p = p * x2 + 6.37261928875436e-04;
    p = p * x2 + 4.89352455891786e-03;
    p *= c;
    let mut q = 1.19825839466702e-06f32;
    q = q * x2 + 1.18534705686654e-04;
    q = q * x2 + 2.26843463243900e-03;
    q = q * x2 + 4.89352518554385e-03;
    if x.abs() < 4e-4 { x } else { p / q }
}
