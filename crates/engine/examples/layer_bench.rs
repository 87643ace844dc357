//! Time single convolution layers of the small models, with random weights.
//!
//! ```text
//! cargo run --release -p superres-engine --example layer_bench -- [--threads N] [--runs N]
//!     [--size WxH] [--isa avx512|avx2|scalar] [--direct|--f4|--f6] [K:CIN:COUT[:tanh|relu] ...]
//! ```
//! Prints, per layer, the best wall time of N runs, its effective GFLOP/s (direct FLOPs) and
//! the rate per thread of CPU time actually received (what an unloaded machine would reach).

use std::time::Instant;

use superres_engine::Backend;
use superres_engine::cpu::{ConvAlgo, CpuBackend, CpuOptions, Isa};
use superres_graph::{Activation, Conv2d, Graph, Op, Tensor};

fn cpu_time() -> Option<f64> {
    let mut ns = 0u64;
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        ns += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 * 1e-9)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 2usize;
    let mut runs = 10usize;
    let (mut w, mut h) = (256usize, 256usize);
    let mut isa = None;
    let mut conv = ConvAlgo::Auto;
    let mut layers = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let next = args.get(i + 1).cloned().unwrap_or_default();
        match a {
            "--threads" => threads = next.parse().expect("threads"),
            "--runs" => runs = next.parse().expect("runs"),
            "--size" => {
                let v: Vec<usize> = next.split('x').map(|v| v.parse().expect("size")).collect();
                (w, h) = (v[0], v[1]);
            }
            "--isa" => {
                isa = Some(match next.as_str() {
                    "avx512" => Isa::Avx512,
                    "avx2" => Isa::Avx2,
                    _ => Isa::Scalar,
                })
            }
            "--direct" | "--f4" | "--f6" => {
                conv = match a {
                    "--direct" => ConvAlgo::Direct,
                    "--f4" => ConvAlgo::WinogradF4,
                    _ => ConvAlgo::WinogradF6,
                };
                i += 1;
                continue;
            }
            _ => {
                layers.push(a.to_string());
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if layers.is_empty() {
        layers = [
            "5:1:64:tanh",
            "3:64:32:tanh",
            "3:32:9",
            "3:64:64",
            "4:64:4",
            "3:12:12",
        ]
        .map(String::from)
        .to_vec();
    }
    let backend = CpuBackend::with_options(CpuOptions {
        threads: Some(threads),
        isa,
        conv,
    })
    .expect("backend");
    println!("backend: {}, {w}x{h}", backend.name());
    let mut seed = 1u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for l in &layers {
        let p: Vec<&str> = l.split(':').collect();
        let (k, cin, cout): (usize, usize, usize) = (
            p[0].parse().expect("k"),
            p[1].parse().expect("cin"),
            p[2].parse().expect("cout"),
        );
        let mut c = Conv2d::same(
            k,
            k,
            cin,
            cout,
            (0..k * k * cin * cout).map(|_| rnd()).collect(),
            Some((0..cout).map(|_| rnd()).collect()),
        );
        c.epilogue.activation = match p.get(3) {
            Some(&"tanh") => Some(Activation::Tanh),
            Some(&"relu") => Some(Activation::Relu),
            _ => None,
        };
        let mut g = Graph::new();
        let x = g.input("x", cin);
        let y = g.push("conv", Op::Conv2d(c), vec![x]).expect("conv");
        g.output("y", y);
        let exe = backend.prepare(&g).expect("prepare");
        let input = Tensor::image(h, w, cin, (0..h * w * cin).map(|_| rnd()).collect());
        exe.run(&input).expect("run");
        let (mut best, mut best_cpu) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..runs {
            let c0 = cpu_time();
            let t = Instant::now();
            exe.run(&input).expect("run");
            let wall = t.elapsed().as_secs_f64();
            let cpu = match (c0, cpu_time()) {
                (Some(a), Some(b)) => ((b - a) / threads as f64).min(wall),
                _ => wall,
            };
            best = best.min(wall);
            best_cpu = best_cpu.min(cpu);
        }
        let flops = 2.0 * (k * k * cin * cout * w * h) as f64;
        println!(
            "{l:>14}: {:>8.3} ms  {:>6.1} GFLOP/s (wall)  {:>6.1} (cpu time)",
            best * 1e3,
            flops / best / 1e9,
            flops / best_cpu / 1e9
        );
    }
}
