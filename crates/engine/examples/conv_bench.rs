//! Throughput of the CPU backend on EDSR-shaped work, with random weights (no model file).
//!
//! ```text
//! cargo run --release -p superres-engine --example conv_bench -- [--threads N] [--runs N]
//!     [--isa avx512|avx2|scalar] [--direct] [--edsr-sizes 64x48,160x120] [--conv-only]
//! ```
//! Prints the effective GFLOP/s (direct-convolution FLOPs: `2·9·256·256` per pixel for the
//! 256→256 3×3 layer, 76.8 MFLOP per input pixel for EDSR ×3) of the best of N runs: the
//! machine is shared, so the best run is the least disturbed one.

use std::time::Instant;

use superres_engine::Backend;
use superres_engine::cpu::{ConvAlgo, CpuBackend, CpuOptions, Isa};
use superres_graph::{Activation, Conv2d, DepthToSpaceMode, Epilogue, Graph, Op, Tensor};

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
}

fn conv3(rng: &mut Rng, cin: usize, cout: usize, epilogue: Epilogue) -> Conv2d {
    let mut c = Conv2d::same(
        3,
        3,
        cin,
        cout,
        rng.vec(9 * cin * cout, (1.0 / (9.0 * cin as f32)).sqrt()),
        None,
    );
    c.epilogue = epilogue;
    c
}

fn bias(rng: &mut Rng, n: usize) -> Option<Vec<f32>> {
    Some(rng.vec(n, 0.01))
}

/// EDSR ×`scale` with `blocks` residual blocks of `f` channels, as the importer and fusion
/// passes produce it.
fn edsr(rng: &mut Rng, blocks: usize, f: usize, scale: usize) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", 3);
    let ep = Epilogue {
        bias: bias(rng, f),
        ..Epilogue::default()
    };
    let head = g
        .push("head", Op::Conv2d(conv3(rng, 3, f, ep)), vec![x])
        .unwrap();
    let mut h = head;
    for b in 0..blocks {
        let ep = Epilogue {
            bias: bias(rng, f),
            activation: Some(Activation::Relu),
            residual: None,
        };
        let y = g
            .push(&format!("b{b}a"), Op::Conv2d(conv3(rng, f, f, ep)), vec![h])
            .unwrap();
        let ep = Epilogue {
            bias: bias(rng, f),
            activation: None,
            residual: Some(0.1),
        };
        h = g
            .push(
                &format!("b{b}b"),
                Op::Conv2d(conv3(rng, f, f, ep)),
                vec![y, h],
            )
            .unwrap();
    }
    let ep = Epilogue {
        bias: bias(rng, f),
        activation: None,
        residual: Some(1.0),
    };
    let t = g
        .push("trunk", Op::Conv2d(conv3(rng, f, f, ep)), vec![h, head])
        .unwrap();
    let c = 3 * scale * scale;
    let ep = Epilogue {
        bias: bias(rng, c),
        ..Epilogue::default()
    };
    let u = g
        .push("up", Op::Conv2d(conv3(rng, f, c, ep)), vec![t])
        .unwrap();
    let o = g
        .push(
            "shuffle",
            Op::DepthToSpace {
                block: scale,
                mode: DepthToSpaceMode::Dcr,
            },
            vec![u],
        )
        .unwrap();
    g.output("y", o);
    g
}

/// CPU time of every thread of this process, in seconds (Linux; `None` elsewhere).
fn cpu_time() -> Option<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

/// Best wall time of `runs` runs, and the best CPU time per thread (what an idle machine
/// would take when the threads are descheduled by other work).
/// A chain of same-padded convolutions `(k, cin, cout, activation)` ending in a depth-to-space,
/// shaped like OpenCV's small models (ESPCN, FSRCNN).
fn chain(
    rng: &mut Rng,
    layers: &[(usize, usize, usize, Option<Activation>)],
    scale: usize,
) -> Graph {
    let mut g = Graph::new();
    let mut x = g.input("x", layers[0].1);
    for (i, (k, cin, cout, act)) in layers.iter().enumerate() {
        let fan = (k * k * cin) as f32;
        let mut c = Conv2d::same(
            *k,
            *k,
            *cin,
            *cout,
            rng.vec(k * k * cin * cout, 1.0 / fan.sqrt()),
            bias(rng, *cout),
        );
        c.epilogue.activation = act.clone();
        x = g.push(&format!("c{i}"), Op::Conv2d(c), vec![x]).unwrap();
    }
    let o = g
        .push(
            "shuffle",
            Op::DepthToSpace {
                block: scale,
                mode: DepthToSpaceMode::Dcr,
            },
            vec![x],
        )
        .unwrap();
    g.output("y", o);
    g
}

fn best_of(runs: usize, threads: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    let mut best = (f64::INFINITY, f64::INFINITY);
    for _ in 0..runs {
        let c = cpu_time();
        let t = Instant::now();
        f();
        let wall = t.elapsed().as_secs_f64();
        let cpu = match (c, cpu_time()) {
            (Some(a), Some(b)) => ((b - a) / threads as f64).min(wall),
            _ => wall,
        };
        best = (best.0.min(wall), best.1.min(cpu));
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let flag = |name: &str| args.iter().any(|a| a == name);
    let threads: usize = opt("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(5);
    let isa = opt("--isa").map(|s| match s.as_str() {
        "avx512" => Isa::Avx512,
        "avx2" => Isa::Avx2,
        _ => Isa::Scalar,
    });
    let conv = if flag("--direct") {
        ConvAlgo::Direct
    } else {
        ConvAlgo::Auto
    };
    let backend = CpuBackend::with_options(CpuOptions {
        threads: Some(threads),
        isa,
        conv,
    })
    .expect("backend");
    println!("backend: {}", backend.name());
    let mut rng = Rng(42);

    // One 256→256 3×3 layer with EDSR's residual epilogue.
    let mut g = Graph::new();
    let x = g.input("x", 256);
    let ep = Epilogue {
        bias: bias(&mut rng, 256),
        activation: None,
        residual: Some(0.1),
    };
    let y = g
        .push(
            "conv",
            Op::Conv2d(conv3(&mut rng, 256, 256, ep)),
            vec![x, x],
        )
        .unwrap();
    g.output("y", y);
    let exe = backend.prepare(&g).unwrap();
    for &(w, h) in &[(32, 32), (64, 48), (96, 96), (160, 120), (256, 256)] {
        let input = Tensor::image(h, w, 256, rng.vec(h * w * 256, 1.0));
        let (t, c) = best_of(runs, threads, || {
            exe.run(&input).unwrap();
        });
        let flops = 2.0 * 9.0 * 256.0 * 256.0 * (h * w) as f64;
        println!(
            "conv 256->256 3x3 {w:>3}x{h:<3}: {:>7.2} ms  {:>6.1} GFLOP/s effective (wall), {:>6.1} (cpu time)",
            t * 1e3,
            flops / t / 1e9,
            flops / c / 1e9
        );
    }
    if flag("--conv-only") {
        return;
    }

    let prelu = |c: usize| Some(Activation::PRelu(vec![0.1; c]));
    let relu = Some(Activation::Relu);
    let small = [
        (
            "ESPCN x3",
            chain(
                &mut rng,
                &[
                    (5, 1, 64, relu.clone()),
                    (3, 64, 32, relu.clone()),
                    (3, 32, 9, None),
                ],
                3,
            ),
        ),
        (
            "FSRCNN x3",
            chain(
                &mut rng,
                &[
                    (5, 1, 56, prelu(56)),
                    (1, 56, 12, prelu(12)),
                    (3, 12, 12, prelu(12)),
                    (3, 12, 12, prelu(12)),
                    (3, 12, 12, prelu(12)),
                    (3, 12, 12, prelu(12)),
                    (1, 12, 56, prelu(56)),
                    (1, 56, 9, None),
                ],
                3,
            ),
        ),
    ];
    for (name, g) in &small {
        let exe = backend.prepare(g).unwrap();
        let input = Tensor::image(256, 256, 1, rng.vec(256 * 256, 1.0));
        let (t, c) = best_of(runs * 2, threads, || {
            exe.run(&input).unwrap();
        });
        let flops = 2.0 * g.macs_per_input_pixel() * 65536.0;
        println!(
            "{name:<9} 256x256: {:>7.2} ms (wall), {:>7.2} ms (cpu time); {:>6.1} / {:>6.1} GFLOP/s",
            t * 1e3,
            c * 1e3,
            flops / t / 1e9,
            flops / c / 1e9
        );
    }

    let g = edsr(&mut rng, 32, 256, 3);
    let per_pixel = 2.0 * g.macs_per_input_pixel();
    let exe = backend.prepare(&g).unwrap();
    let sizes = opt("--edsr-sizes").unwrap_or_else(|| "64x48,160x120".into());
    for s in sizes.split(',') {
        let (w, h) = s.split_once('x').expect("WxH");
        let (w, h): (usize, usize) = (w.parse().unwrap(), h.parse().unwrap());
        let input = Tensor::image(h, w, 3, rng.vec(h * w * 3, 1.0));
        let (t, c) = best_of(runs.min(3), threads, || {
            exe.run(&input).unwrap();
        });
        let flops = per_pixel * (h * w) as f64;
        println!(
            "EDSR x3 (B32 F256) {w:>3}x{h:<3}: {:>8.1} ms  {:>6.1} GFLOP/s effective (wall), {:>6.1} (cpu time); {:.1} MFLOP/px",
            t * 1e3,
            flops / t / 1e9,
            flops / c / 1e9,
            per_pixel / 1e6
        );
    }
}
