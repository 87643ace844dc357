//! Every fast CPU path against the reference interpreter, on random graphs and awkward sizes.
//!
//! Tolerances: the direct kernel sums in the reference's order but with fused multiply-adds,
//! Winograd re-associates through its transforms; the direct kernel and F(4,3) must stay within
//! `1e-5` of the largest output magnitude, F(6,3) (larger transform coefficients) within
//! `4e-5` (measured worst cases are printed with `--nocapture`).

mod common;

use std::sync::Arc;

use superres_engine::cpu::{ConvAlgo, CpuBackend, CpuOptions, Isa, reference};
use superres_engine::{Backend, EngineError, Executable};
use superres_graph::{
    Activation, BinaryOp, Conv2d, DepthToSpaceMode, Epilogue, Graph, Op, Padding, ResizeMode,
    Tensor, UnaryOp, ValueId,
};

/// A small deterministic generator (xorshift*), uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        v as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
    fn image(&mut self, h: usize, w: usize, c: usize) -> Tensor {
        Tensor::image(h, w, c, self.vec(h * w * c, 1.0))
    }
}

fn isas() -> Vec<Isa> {
    [Isa::Avx512, Isa::Avx2, Isa::Scalar]
        .into_iter()
        .filter(|i| i.is_supported())
        .collect()
}

fn backend(isa: Isa, conv: ConvAlgo) -> CpuBackend {
    CpuBackend::with_options(CpuOptions {
        threads: Some(2),
        isa: Some(isa),
        conv,
    })
    .expect("supported instruction set")
}

/// Largest difference relative to the largest reference magnitude (at least 1).
fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let scale = want.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = got
        .data()
        .iter()
        .zip(want.data())
        .fold(0.0f32, |m, (a, b)| {
            if a.is_nan() || b.is_nan() {
                f32::INFINITY
            } else {
                m.max((a - b).abs())
            }
        });
    diff / scale
}

fn check(g: &Graph, input: &Tensor, algos: &[ConvAlgo], tol: f32, what: &str) -> f32 {
    let want = reference::run(g, input).expect("reference runs");
    let mut worst = 0.0f32;
    for isa in isas() {
        for &algo in algos {
            let exe = backend(isa, algo).prepare(g).expect("prepares");
            let got = exe.run(input).expect("runs");
            assert_eq!(got.len(), want.len());
            for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                let e = rel_err(a, b);
                assert!(
                    e <= tol,
                    "{what}: output {k} on {isa:?}/{algo:?} differs from the reference by {e:e} (tolerance {tol:e})"
                );
                worst = worst.max(e);
            }
        }
    }
    worst
}

#[allow(clippy::too_many_arguments)]
fn conv(
    rng: &mut Rng,
    kh: usize,
    kw: usize,
    cin: usize,
    cout: usize,
    groups: usize,
    stride: usize,
    dilation: usize,
    epilogue: Epilogue,
) -> Conv2d {
    let fan_in = (kh * kw * cin / groups) as f32;
    Conv2d {
        kh,
        kw,
        cin,
        cout,
        groups,
        stride: (stride, stride),
        dilation: (dilation, dilation),
        padding: Padding::same(kh, kw, (dilation, dilation)),
        weights: rng.vec(kh * kw * (cin / groups) * cout, 1.0 / fan_in.sqrt()),
        epilogue,
    }
}

fn single_conv_graph(c: Conv2d) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", c.cin);
    let y = g.push("conv", Op::Conv2d(c), vec![x]).expect("valid conv");
    g.output("y", y);
    g
}

#[test]
fn direct_and_winograd_convolutions_match_the_reference_on_awkward_shapes() {
    let mut rng = Rng(0x5eed);
    let (mut worst, mut worst_f6) = (0.0f32, 0.0f32);
    // (kh, kw, cin, cout)
    let kernels = [
        (1, 1, 3, 17),
        (1, 1, 56, 12),
        (3, 3, 3, 16),
        (3, 3, 12, 12),
        (3, 3, 16, 33),
        (3, 3, 20, 4),
        (4, 4, 1, 4),
        (4, 4, 24, 4),
        (5, 5, 1, 64),
        (3, 3, 32, 27),
        (3, 3, 32, 9),
        (3, 3, 64, 4),
        (4, 4, 64, 4),
        (3, 3, 17, 3),
        (5, 5, 16, 7),
        (1, 1, 56, 9),
    ];
    let sizes = [(1, 1), (2, 3), (5, 17), (9, 8), (13, 21), (4, 37), (3, 50)];
    for (i, &(kh, kw, cin, cout)) in kernels.iter().enumerate() {
        let ep = Epilogue {
            bias: Some(rng.vec(cout, 0.5)),
            activation: match i % 5 {
                0 => Some(Activation::Relu),
                1 => Some(Activation::PRelu(rng.vec(cout, 0.3))),
                2 => Some(Activation::Tanh),
                3 => Some(Activation::Sigmoid),
                _ => None,
            },
            residual: None,
        };
        let g = single_conv_graph(conv(&mut rng, kh, kw, cin, cout, 1, 1, 1, ep));
        for &(h, w) in &sizes {
            let x = rng.image(h, w, cin);
            let what = format!("{kh}x{kw} {cin}->{cout} on {h}x{w}");
            worst = worst.max(check(
                &g,
                &x,
                &[ConvAlgo::Direct, ConvAlgo::WinogradF4, ConvAlgo::Auto],
                1e-5,
                &what,
            ));
            // F(6,3)'s larger transform coefficients cost about four times F(4,3)'s error
            // (see `winograd_error_is_of_the_order_of_f32_summation_error`).
            worst_f6 = worst_f6.max(check(&g, &x, &[ConvAlgo::WinogradF6], 4e-5, &what));
        }
    }
    println!("worst relative error, small convolutions: {worst:e}; F(6,3): {worst_f6:e}");
}

#[test]
fn strided_dilated_and_grouped_convolutions_match_the_reference() {
    let mut rng = Rng(7);
    for &(kh, cin, cout, groups, stride, dilation) in &[
        (3, 4, 6, 2, 1, 1),
        (3, 8, 8, 8, 1, 1),
        (3, 6, 20, 1, 2, 1),
        (3, 5, 7, 1, 1, 2),
        (5, 4, 4, 2, 2, 2),
        (2, 3, 5, 1, 2, 1),
    ] {
        let ep = Epilogue {
            bias: Some(rng.vec(cout, 0.5)),
            activation: Some(Activation::LeakyRelu(0.2)),
            residual: None,
        };
        let g = single_conv_graph(conv(
            &mut rng, kh, kh, cin, cout, groups, stride, dilation, ep,
        ));
        for &(h, w) in &[(7, 7), (10, 13), (4, 5)] {
            let x = rng.image(h, w, cin);
            let what =
                format!("{kh}x{kh} {cin}->{cout} g{groups} s{stride} d{dilation} on {h}x{w}");
            check(&g, &x, &[ConvAlgo::Auto], 1e-5, &what);
        }
    }
}

/// EDSR's residual block: `x + 0.1 * conv(relu(conv(x)))`, at 256 channels.
fn edsr_block_graph(rng: &mut Rng, f: usize, blocks: usize) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", 3);
    let ep = Epilogue {
        bias: Some(rng.vec(f, 0.1)),
        ..Epilogue::default()
    };
    let head = conv(rng, 3, 3, 3, f, 1, 1, 1, ep);
    let mut h = g.push("head", Op::Conv2d(head), vec![x]).unwrap();
    for b in 0..blocks {
        let ep = Epilogue {
            bias: Some(rng.vec(f, 0.1)),
            activation: Some(Activation::Relu),
            residual: None,
        };
        let c1 = conv(rng, 3, 3, f, f, 1, 1, 1, ep);
        let y = g.push(&format!("b{b}a"), Op::Conv2d(c1), vec![h]).unwrap();
        let ep = Epilogue {
            bias: Some(rng.vec(f, 0.1)),
            activation: None,
            residual: Some(0.1),
        };
        let c2 = conv(rng, 3, 3, f, f, 1, 1, 1, ep);
        h = g
            .push(&format!("b{b}b"), Op::Conv2d(c2), vec![y, h])
            .unwrap();
    }
    let ep = Epilogue {
        bias: Some(rng.vec(27, 0.1)),
        ..Epilogue::default()
    };
    let tail = conv(rng, 3, 3, f, 27, 1, 1, 1, ep);
    let t = g.push("tail", Op::Conv2d(tail), vec![h]).unwrap();
    let o = g
        .push(
            "shuffle",
            Op::DepthToSpace {
                block: 3,
                mode: DepthToSpaceMode::Dcr,
            },
            vec![t],
        )
        .unwrap();
    g.output("y", o);
    g
}

#[test]
fn winograd_at_256_channels_stays_within_1e_5_of_the_reference() {
    let mut rng = Rng(99);
    let g = edsr_block_graph(&mut rng, 256, 1);
    for &(h, w) in &[(1, 1), (7, 9), (24, 19)] {
        let x = rng.image(h, w, 3);
        let e = check(
            &g,
            &x,
            &[ConvAlgo::Auto],
            1e-5,
            &format!("EDSR block on {h}x{w}"),
        );
        println!("EDSR-256 block on {h}x{w}: relative error {e:e}");
    }
}

/// A graph with every operator kind, unfused epilogues, several outputs.
fn all_ops_graph(rng: &mut Rng) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", 3);
    let ep = Epilogue {
        bias: Some(rng.vec(8, 0.3)),
        ..Epilogue::default()
    };
    let c1 = conv(rng, 3, 3, 3, 8, 1, 1, 1, ep);
    let a = g.push("c1", Op::Conv2d(c1), vec![x]).unwrap();
    let p = g
        .push(
            "prelu",
            Op::Activation(Activation::PRelu(rng.vec(8, 0.3))),
            vec![a],
        )
        .unwrap();
    let k = g.constant("bias", Tensor::new(vec![8], rng.vec(8, 1.0)));
    let b = g
        .push("add", Op::Binary(BinaryOp::Add), vec![p, k])
        .unwrap();
    let s = g.constant("s", Tensor::scalar(0.5));
    let m = g
        .push("mul", Op::Binary(BinaryOp::Mul), vec![b, s])
        .unwrap();
    let d = g
        .push("sub", Op::Binary(BinaryOp::Sub), vec![m, a])
        .unwrap();
    let ab = g.push("abs", Op::Unary(UnaryOp::Abs), vec![d]).unwrap();
    let ng = g.push("neg", Op::Unary(UnaryOp::Neg), vec![ab]).unwrap();
    let two = g.constant("two", Tensor::scalar(2.0));
    let dv = g
        .push("div", Op::Binary(BinaryOp::Div), vec![ng, two])
        .unwrap();
    let th = g
        .push("tanh", Op::Activation(Activation::Tanh), vec![dv])
        .unwrap();
    let sg = g
        .push("sig", Op::Activation(Activation::Sigmoid), vec![b])
        .unwrap();
    let cl = g
        .push(
            "clip",
            Op::Activation(Activation::Clip {
                min: -0.3,
                max: 0.4,
            }),
            vec![m],
        )
        .unwrap();
    let cat = g.push("cat", Op::Concat, vec![th, sg, cl, th]).unwrap();
    let dcr = g
        .push(
            "d2s_dcr",
            Op::DepthToSpace {
                block: 2,
                mode: DepthToSpaceMode::Dcr,
            },
            vec![cat],
        )
        .unwrap();
    let crd = g
        .push(
            "d2s_crd",
            Op::DepthToSpace {
                block: 2,
                mode: DepthToSpaceMode::Crd,
            },
            vec![cat],
        )
        .unwrap();
    let rz_n = g
        .push(
            "nearest",
            Op::Resize {
                factor: 2,
                mode: ResizeMode::Nearest,
            },
            vec![x],
        )
        .unwrap();
    let rz_b = g
        .push(
            "bilinear",
            Op::Resize {
                factor: 3,
                mode: ResizeMode::Bilinear,
            },
            vec![a],
        )
        .unwrap();
    let both = g.push("cat2", Op::Concat, vec![dcr, crd, rz_n]).unwrap();
    let ep = Epilogue {
        bias: Some(rng.vec(8, 0.3)),
        activation: Some(Activation::Relu),
        residual: None,
    };
    let c2 = conv(rng, 3, 3, 19, 8, 1, 1, 1, ep);
    let e = g.push("c2", Op::Conv2d(c2), vec![both]).unwrap();
    let ep = Epilogue {
        bias: None,
        activation: Some(Activation::PRelu(rng.vec(8, 0.2))),
        residual: Some(1.0),
    };
    let c3 = conv(rng, 1, 1, 8, 8, 1, 1, 1, ep);
    let f = g.push("c3", Op::Conv2d(c3), vec![e, dcr]).unwrap();
    let lr = g
        .push("leaky", Op::Activation(Activation::LeakyRelu(0.2)), vec![f])
        .unwrap();
    g.output("main", lr);
    g.output("bilinear", rz_b);
    g.output("input", x);
    g
}

#[test]
fn every_operator_matches_the_reference_through_the_planner() {
    let mut rng = Rng(3);
    let g = all_ops_graph(&mut rng);
    for &(h, w) in &[(1, 1), (4, 7), (11, 6)] {
        let x = rng.image(h, w, 3);
        check(
            &g,
            &x,
            &[ConvAlgo::Auto],
            1e-5,
            &format!("all operators on {h}x{w}"),
        );
    }
}

#[test]
fn concurrent_runs_of_several_sizes_agree_with_sequential_runs() {
    let mut rng = Rng(11);
    let g = edsr_block_graph(&mut rng, 32, 2);
    let exe: Arc<dyn Executable> = CpuBackend::with_threads(2).prepare(&g).unwrap();
    let inputs: Vec<Tensor> = (0..6).map(|i| rng.image(5 + i, 9 - i, 3)).collect();
    let want: Vec<Vec<Tensor>> = inputs.iter().map(|x| exe.run(x).unwrap()).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (exe, inputs, want) = (&exe, &inputs, &want);
            s.spawn(move || {
                for r in 0..3 {
                    let i = (t + r) % inputs.len();
                    let got = exe.run(&inputs[i]).unwrap();
                    assert_eq!(got, want[i], "run {r} of thread {t} on input {i} differs");
                }
            });
        }
    });
}

#[test]
fn too_small_inputs_and_wrong_channels_are_errors_not_panics() {
    let mut rng = Rng(5);
    let mut c = conv(&mut rng, 5, 5, 1, 4, 1, 1, 1, Epilogue::default());
    c.padding = Padding::default();
    let g = single_conv_graph(c);
    let exe = CpuBackend::new().prepare(&g).unwrap();
    assert!(matches!(
        exe.run(&rng.image(3, 8, 1)),
        Err(EngineError::TooSmall { .. })
    ));
    assert!(matches!(
        exe.run(&rng.image(8, 8, 2)),
        Err(EngineError::BadInput { .. })
    ));
    assert_eq!(exe.run(&rng.image(5, 6, 1)).unwrap()[0].shape(), &[1, 2, 4]);
}

/// Runs that reuse a cached plan and a recycled arena (holding the previous run's values)
/// give what a freshly prepared executable gives, and do reuse it: repeated sizes make no
/// new plan, while a size evicted by more sizes than the cache holds is planned anew.
#[test]
fn repeated_runs_reuse_the_plan() {
    let mut rng = Rng(8);
    let g = all_ops_graph(&mut rng);
    let backend = CpuBackend::new();
    let exe = backend.prepare(&g).unwrap();
    assert_eq!(exe.plans_made(), Some(0));
    let a = rng.image(6, 5, 3);
    let b = rng.image(3, 9, 3);
    let fresh = |x: &Tensor| backend.prepare(&g).unwrap().run(x).unwrap();
    let first = fresh(&a);
    let first_b = fresh(&b);
    for _ in 0..3 {
        assert_eq!(exe.run(&b).unwrap(), first_b);
        assert_eq!(exe.run(&a).unwrap(), first);
    }
    assert_eq!(
        exe.plans_made(),
        Some(2),
        "one plan per size, reused by every later run"
    );
    // Sizing tiles asks for peaks without planning for runs (nor evicting a plan).
    exe.peak_bytes(40, 40, 1).unwrap();
    exe.run(&a).unwrap();
    assert_eq!(exe.plans_made(), Some(2));
    // More sizes than any small cache holds, then `a` again: planned anew.
    let sizes = [(4, 5), (5, 7), (7, 5), (3, 6), (8, 5), (4, 9)];
    for (h, w) in sizes {
        let x = rng.image(h, w, 3);
        assert_eq!(exe.run(&x).unwrap(), fresh(&x), "{h}×{w}");
    }
    assert_eq!(exe.plans_made(), Some(2 + sizes.len() as u64));
    assert_eq!(exe.run(&a).unwrap(), first);
    assert_eq!(
        exe.plans_made(),
        Some(3 + sizes.len() as u64),
        "evicted, so planned again"
    );
    let _: ValueId = g.outputs[0].1;
}

/// The exact (f64) convolution, to tell the error of Winograd from that of `f32` summation.
fn conv_f64(c: &Conv2d, x: &Tensor) -> Vec<f64> {
    let (h, w, cin) = x.hwc().unwrap();
    let (oh, ow) = c.output_size(h, w).unwrap();
    let mut out = vec![0.0f64; oh * ow * c.cout];
    for oy in 0..oh {
        for ox in 0..ow {
            for ky in 0..c.kh {
                for kx in 0..c.kw {
                    let iy = (oy + ky) as isize - c.padding.top as isize;
                    let ix = (ox + kx) as isize - c.padding.left as isize;
                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                        continue;
                    }
                    for ci in 0..cin {
                        let v = x.data()[(iy as usize * w + ix as usize) * cin + ci] as f64;
                        for co in 0..c.cout {
                            out[(oy * ow + ox) * c.cout + co] +=
                                v * c.weights[((ky * c.kw + kx) * cin + ci) * c.cout + co] as f64;
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn winograd_error_is_of_the_order_of_f32_summation_error() {
    let mut rng = Rng(1234);
    let c = conv(&mut rng, 3, 3, 256, 256, 1, 1, 1, Epilogue::default());
    let g = single_conv_graph(c.clone());
    let x = rng.image(13, 11, 256);
    let exact = conv_f64(&c, &x);
    let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = |t: &Tensor| {
        t.data()
            .iter()
            .zip(&exact)
            .fold(0.0f64, |m, (a, b)| m.max((*a as f64 - b).abs()))
            / scale
    };
    let reference = reference::run(&g, &x).unwrap();
    let direct = backend(Isa::detect(), ConvAlgo::Direct)
        .prepare(&g)
        .unwrap()
        .run(&x)
        .unwrap();
    let run = |algo| {
        backend(Isa::detect(), algo)
            .prepare(&g)
            .unwrap()
            .run(&x)
            .unwrap()
    };
    let (f4, f6) = (run(ConvAlgo::WinogradF4), run(ConvAlgo::WinogradF6));
    let (e_ref, e_dir) = (err(&reference[0]), err(&direct[0]));
    let (e_f4, e_f6) = (err(&f4[0]), err(&f6[0]));
    println!(
        "256->256 3x3, max error / max |output| vs f64: reference {e_ref:.2e}, direct {e_dir:.2e}, \
         winograd F(4,3) {e_f4:.2e}, F(6,3) {e_f6:.2e}"
    );
    assert!(
        e_dir < 5e-6,
        "direct error {e_dir:e} is larger than expected"
    );
    assert!(e_f4 < 6e-6, "F(4,3) error {e_f4:e} is larger than expected");
    assert!(e_f6 < 3e-5, "F(6,3) error {e_f6:e} is larger than expected");
}

#[test]
fn fast_tanh_matches_f64() {
    let mut worst = 0.0f64;
    let mut x = -12.0f32;
    while x <= 12.0 {
        for v in [x, x * 1e-3, x * 1e-5] {
            let want = (v as f64).tanh();
            let got = superres_engine::cpu::tanh(v) as f64;
            let e = (got - want).abs();
            // A few ulp, relative: as accurate near 0 as near ±1.
            assert!(e <= 5e-7 * want.abs(), "tanh({v}) = {got}, want {want}");
            worst = worst.max(e / want.abs().max(f64::MIN_POSITIVE));
        }
        x += 1.0 / 1024.0;
    }
    println!("fast tanh: largest relative error {worst:e}");
}

#[test]
fn convolutions_with_a_residual_match_the_reference() {
    // The residual input is another convolution's output that dies here, so the planner runs
    // the convolution in place over it. Shapes for the pixel-vectorised kernel (≥ 16 inputs,
    // ≤ 12 outputs) and for Winograd, with vector activations and ones without a vector form
    // (sigmoid, clip: the per-pixel fallback of the epilogue).
    let mut rng = Rng(0x9e11);
    let clip = Activation::Clip {
        min: -0.25,
        max: 0.5,
    };
    for (cin, cout, act) in [
        (32, 9, Activation::Tanh),
        (17, 4, Activation::Tanh),
        (16, 12, Activation::Tanh),
        (16, 20, clip.clone()),
        (32, 40, Activation::Sigmoid),
        (32, 33, Activation::Relu),
        (5, 7, clip),
    ] {
        let mut g = Graph::new();
        let x = g.input("x", cin);
        let side = conv(&mut rng, 1, 1, cin, cout, 1, 1, 1, Epilogue::default());
        let s = g
            .push("side", Op::Conv2d(side), vec![x])
            .expect("valid conv");
        let ep = Epilogue {
            bias: Some(rng.vec(cout, 0.5)),
            activation: Some(act.clone()),
            residual: Some(0.5),
        };
        let main = conv(&mut rng, 3, 3, cin, cout, 1, 1, 1, ep);
        let y = g
            .push("main", Op::Conv2d(main), vec![x, s])
            .expect("valid conv");
        g.output("y", y);
        for &(h, w) in &[(3, 5), (7, 37), (2, 16), (13, 14)] {
            let input = rng.image(h, w, cin);
            let what = format!("3x3 {cin}->{cout} {act:?} + residual on {h}x{w}");
            let algos = [ConvAlgo::Direct, ConvAlgo::WinogradF4, ConvAlgo::Auto];
            check(&g, &input, &algos, 1e-5, &what);
            check(&g, &input, &[ConvAlgo::WinogradF6], 4e-5, &what);
        }
    }
}

/// ncnn's bicubic written out the textbook way, in `f64`: Keys' kernel with `A = -0.75` at
/// distance `|t|`, sample positions `(o + 0.5) · down / factor − 0.5`, taps clamped to the
/// edge.
fn bicubic_f64(x: &Tensor, factor: usize, down: usize) -> Vec<f64> {
    let (h, w, c) = x.hwc().expect("image");
    let (oh, ow) = (h * factor / down, w * factor / down);
    let keys = |t: f64| {
        let a = -0.75;
        let t = t.abs();
        if t <= 1.0 {
            (a + 2.0) * t * t * t - (a + 3.0) * t * t + 1.0
        } else if t < 2.0 {
            a * t * t * t - 5.0 * a * t * t + 8.0 * a * t - 4.0 * a
        } else {
            0.0
        }
    };
    let taps = |o: usize, n: usize| -> Vec<(usize, f64)> {
        let s = (o as f64 + 0.5) * down as f64 / factor as f64 - 0.5;
        let i = s.floor();
        (-1..=2)
            .map(|k| {
                let j = (i as i64 + k).clamp(0, n as i64 - 1) as usize;
                (j, keys(s - (i + k as f64)))
            })
            .collect()
    };
    let mut out = Vec::with_capacity(oh * ow * c);
    for y in 0..oh {
        for xx in 0..ow {
            for ch in 0..c {
                let mut v = 0.0;
                for (yy, wy) in taps(y, h) {
                    for (xq, wx) in taps(xx, w) {
                        v += wy * wx * f64::from(x.data()[(yy * w + xq) * c + ch]);
                    }
                }
                out.push(v);
            }
        }
    }
    out
}

#[test]
fn bicubic_resize_matches_a_textbook_reference_and_the_interpreter() {
    let mut rng = Rng(11);
    for &(h, w, factor, down) in &[
        (1, 1, 2, 1),
        (2, 3, 2, 1),
        (5, 7, 3, 1),
        (8, 12, 3, 4),
        (12, 8, 1, 2),
        (16, 20, 3, 4),
    ] {
        let x = rng.image(h, w, 3);
        let mut g = Graph::new();
        let i = g.input("x", 3);
        let r = g
            .push(
                "bicubic",
                Op::Resize {
                    factor,
                    mode: ResizeMode::Bicubic { down },
                },
                vec![i],
            )
            .expect("resize");
        g.output("y", r);
        let want = reference::resize(&x, factor, ResizeMode::Bicubic { down });
        assert_eq!(
            want.hwc(),
            Some((h * factor / down, w * factor / down, 3)),
            "output size"
        );
        let exact = bicubic_f64(&x, factor, down);
        let worst = want
            .data()
            .iter()
            .zip(&exact)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-5,
            "{h}x{w} ×{factor}/{down}: reference vs f64 textbook bicubic differ by {worst}"
        );
        // The planned CPU kernel computes the same operations in the same order.
        for isa in isas() {
            let exe = backend(isa, ConvAlgo::Auto).prepare(&g).expect("prepare");
            let got = exe.run(&x).expect("run");
            assert_eq!(
                got[0].data(),
                want.data(),
                "{h}x{w} ×{factor}/{down} on {isa:?}"
            );
        }
    }
}

#[test]
fn every_operator_matches_the_reference_on_one_and_two_threads() {
    // Edge replication, crops, squeeze-and-excitation and everything else the IR has.
    let g = common::every_op_graph();
    let (h, w) = (10, 14);
    let x = Tensor::image(h, w, 3, common::values(h * w * 3, 5, 1.0));
    let want = reference::run(&g, &x).expect("reference");
    for threads in [1, 2] {
        let backend = CpuBackend::with_options(CpuOptions {
            threads: Some(threads),
            isa: None,
            conv: ConvAlgo::Direct,
        })
        .expect("backend");
        let got = backend.prepare(&g).expect("prepare").run(&x).expect("run");
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.shape(), b.shape());
            let scale = b.data().iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = a
                .data()
                .iter()
                .zip(b.data())
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "{threads} thread(s): {worst} (scale {scale})"
            );
        }
    }
}

/// RRDBNet's shape in miniature: a 32-channel body, then two nearest ×2 upsamplings with
/// convolutions at ×2 and ×4 (the tail holds 32 channels at 16 times the pixels).
fn deep_tail_graph(rng: &mut Rng) -> Graph {
    let act = || Epilogue {
        bias: None,
        activation: Some(Activation::LeakyRelu(0.2)),
        residual: None,
    };
    let mut g = Graph::new();
    let x = g.input("x", 3);
    let mut v = g
        .push(
            "first",
            Op::Conv2d(conv(rng, 3, 3, 3, 32, 1, 1, 1, act())),
            vec![x],
        )
        .expect("conv");
    for k in 0..3 {
        v = g
            .push(
                &format!("body{k}"),
                Op::Conv2d(conv(rng, 3, 3, 32, 32, 1, 1, 1, act())),
                vec![v],
            )
            .expect("conv");
    }
    for k in 0..2 {
        let up = Op::Resize {
            factor: 2,
            mode: ResizeMode::Nearest,
        };
        v = g.push(&format!("up{k}"), up, vec![v]).expect("resize");
        v = g
            .push(
                &format!("conv_up{k}"),
                Op::Conv2d(conv(rng, 3, 3, 32, 32, 1, 1, 1, act())),
                vec![v],
            )
            .expect("conv");
    }
    let last = conv(rng, 3, 3, 32, 3, 1, 1, 1, Epilogue::default());
    let y = g.push("last", Op::Conv2d(last), vec![v]).expect("conv");
    g.output("y", y);
    g
}

#[test]
fn a_tail_run_in_bands_of_rows_gives_the_whole_result_at_a_fraction_of_the_memory() {
    let mut rng = Rng(41);
    let banded = deep_tail_graph(&mut rng);
    // The same network with a second output (the body's last value) cannot be cut, so it
    // runs in one plan.
    let mut whole = banded.clone();
    let body = ValueId(4);
    whole.output("body", body);
    let (h, w) = (100, 64);
    let x = Tensor::image(h, w, 3, rng.vec(h * w * 3, 1.0));
    for algo in [ConvAlgo::Auto, ConvAlgo::Direct] {
        let b = backend(Isa::detect(), algo);
        let eb = b.prepare(&banded).expect("prepare");
        let ew = b.prepare(&whole).expect("prepare");
        let got = eb.run(&x).expect("banded");
        let want = ew.run(&x).expect("whole");
        assert_eq!(got[0].shape(), &[4 * h, 4 * w, 3]);
        // The kernels group tiles into panels by position in the run, so sums may round
        // differently; nothing else changes.
        let worst = rel_err(&got[0], &want[0]);
        eprintln!("{algo:?}: banded against whole: {worst:e} of the largest output");
        assert!(
            worst < 1e-6,
            "{algo:?}: banded differs from the whole run by {worst:e}"
        );
        let (pb, pw) = (
            eb.peak_bytes(h, w, 1).expect("peak"),
            ew.peak_bytes(h, w, 1).expect("peak"),
        );
        assert!(pb * 2 < pw, "{algo:?}: banded peak {pb} B, whole {pw} B");
    }
    // And both against the reference interpreter.
    let r = reference::run(&banded, &x).expect("reference");
    let got = backend(Isa::detect(), ConvAlgo::Auto)
        .prepare(&banded)
        .expect("prepare")
        .run(&x)
        .expect("run");
    assert!(rel_err(&got[0], &r[0]) < 1e-5);
}

/// A large and a small image through one model at once: the large run transforms the
/// Winograd weights for itself while the small one makes and keeps them, on one pool of
/// two threads (a waiting worker may run the other image's layers). Both give what they
/// give alone, bit for bit.
#[test]
fn a_large_and_a_small_run_at_once_give_what_they_give_alone() {
    let mut rng = Rng(7);
    let body = |rng: &mut Rng| Epilogue {
        bias: Some(rng.vec(16, 0.1)),
        activation: Some(Activation::Relu),
        residual: None,
    };
    let mut g = Graph::new();
    let x = g.input("x", 3);
    let mut v = g
        .push(
            "in",
            Op::Conv2d({
                let e = body(&mut rng);
                conv(&mut rng, 3, 3, 3, 16, 1, 1, 1, e)
            }),
            vec![x],
        )
        .expect("conv");
    for k in 0..3 {
        let e = body(&mut rng);
        let c = conv(&mut rng, 3, 3, 16, 16, 1, 1, 1, e);
        v = g
            .push(&format!("body{k}"), Op::Conv2d(c), vec![v])
            .expect("conv");
    }
    g.output("y", v);
    // 256×256 is 4096 tiles of F(4,3), where runs stop keeping the weights; 40×40 keeps them.
    let (big, small) = (rng.image(256, 256, 3), rng.image(40, 40, 3));
    let b = backend(Isa::detect(), ConvAlgo::Auto);
    let alone = b.prepare(&g).expect("prepare");
    let want_big = alone.run(&big).expect("big");
    let want_small = alone.run(&small).expect("small");
    let shared = b.prepare(&g).expect("prepare");
    let start = Arc::new(std::sync::Barrier::new(2));
    let runs = [big, small].map(|input| {
        let (exe, start) = (Arc::clone(&shared), Arc::clone(&start));
        std::thread::spawn(move || {
            start.wait();
            (0..3)
                .map(|_| exe.run(&input).expect("run").swap_remove(0))
                .collect::<Vec<_>>()
        })
    });
    let [got_big, got_small] = runs.map(|r| r.join().expect("a run thread"));
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (got, want) in [(got_big, &want_big[0]), (got_small, &want_small[0])] {
        for t in got {
            assert_eq!(bits(&t), bits(want));
        }
    }
}

/// A dense block as RRDBNet's: every convolution reads the concatenation of the block's
/// input and all earlier outputs, and the last adds 0.2 of its sum to the block's input
/// (which is also the first part of what it reads). Parts of 32, 16, 16 and 24 channels;
/// one more concatenation whose first part is not a whole number of 16-channel groups, and
/// one that is also read by an element-wise operator.
fn dense_block_graph(rng: &mut Rng) -> Graph {
    let lrelu = |rng: &mut Rng, c: usize| Epilogue {
        bias: Some(rng.vec(c, 0.1)),
        activation: Some(Activation::LeakyRelu(0.2)),
        residual: None,
    };
    let mut g = Graph::new();
    let x0 = g.input("x", 32);
    let mut parts = vec![x0];
    let mut cin = 32;
    for (k, cout) in [16, 16, 24].into_iter().enumerate() {
        let input = if parts.len() == 1 {
            x0
        } else {
            g.push(&format!("cat{k}"), Op::Concat, parts.clone())
                .expect("valid concat")
        };
        let ep = lrelu(rng, cout);
        let c = conv(rng, 3, 3, cin, cout, 1, 1, 1, ep);
        let y = g
            .push(&format!("conv{k}"), Op::Conv2d(c), vec![input])
            .expect("valid conv");
        parts.push(y);
        cin += cout;
    }
    let all = g
        .push("cat", Op::Concat, parts.clone())
        .expect("valid concat");
    let ep = Epilogue {
        bias: Some(rng.vec(32, 0.1)),
        activation: None,
        residual: Some(0.2),
    };
    let last = conv(rng, 3, 3, cin, 32, 1, 1, 1, ep);
    let out = g
        .push("conv_last", Op::Conv2d(last), vec![all, x0])
        .expect("valid conv");
    // 24 + 16 channels: the first part is not whole groups, so this one is copied.
    let odd = g
        .push("cat_odd", Op::Concat, vec![parts[3], parts[1]])
        .expect("valid concat");
    let c = conv(rng, 3, 3, 40, 16, 1, 1, 1, Epilogue::default());
    let odd = g.push("conv_odd", Op::Conv2d(c), vec![odd]).expect("conv");
    // Read by a convolution and by an add: copied too.
    let shared = g
        .push("cat_shared", Op::Concat, vec![odd, parts[2]])
        .expect("valid concat");
    let c = conv(rng, 3, 3, 32, 32, 1, 1, 1, Epilogue::default());
    let sc = g
        .push("conv_shared", Op::Conv2d(c), vec![shared])
        .expect("conv");
    let sum = g
        .push("sum", Op::Binary(BinaryOp::Add), vec![sc, shared])
        .expect("valid add");
    g.output("y", out);
    g.output("z", sum);
    g
}

#[test]
fn dense_blocks_read_their_concatenations_in_parts_as_the_reference_computes_them() {
    let mut rng = Rng(0xde45e);
    let g = dense_block_graph(&mut rng);
    for &(h, w) in &[(1, 1), (7, 5), (13, 29), (40, 24)] {
        let x = rng.image(h, w, 32);
        let what = format!("dense block on {h}x{w}");
        let algos = [ConvAlgo::Direct, ConvAlgo::WinogradF4, ConvAlgo::Auto];
        check(&g, &x, &algos, 1e-5, &what);
        check(&g, &x, &[ConvAlgo::WinogradF6], 4e-5, &what);
    }
    // The concatenations read in parts take no memory. The direct kernel copies every one;
    // with the same plan, Winograd's peak would be the direct kernel's plus its largest
    // layer's transformed weights. It is less.
    let (h, w) = (96, 96);
    let peak = |algo| {
        backend(Isa::detect(), algo)
            .prepare(&g)
            .expect("prepares")
            .peak_bytes(h, w, 1)
            .expect("plans")
    };
    let (direct, winograd) = (peak(ConvAlgo::Direct), peak(ConvAlgo::WinogradF4));
    assert!(
        winograd < direct,
        "Winograd's peak {winograd} B, direct {direct} B"
    );
}
