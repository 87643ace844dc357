//! `superres bench`: times a model's forward pass on a synthetic input.
//!
//! Only the network is timed (no decoding, colour conversion or encoding), after one
//! warm-up run, so the numbers compare directly with other engines running the same graph.
//! `--pipeline` times the whole tiled pipeline instead (an 8-bit image of `--size` through
//! `upscale` with `--tile`, `--memory-budget-mb` and `--tile-mode`, no warm-up), and prints
//! the tiling it chose. Both print the process's peak resident memory (`VmHWM`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::bail;
use clap::Parser;
use superres_engine::Precision;
use superres_graph::Tensor;
use superres_import::Overrides;
use superres_upscale::device::{self, DeviceSpec};
use superres_upscale::{ColorKind, Image, Options, TileMode, registry, upscale};

#[derive(Parser)]
pub struct Args {
    /// A registry name or a path to a .pb / .onnx file.
    #[arg(short, long, default_value = registry::DEFAULT_MODEL)]
    model: String,
    #[arg(long, env = "SUPERRES_MODELS")]
    models: Option<PathBuf>,
    /// Input size, WxH.
    #[arg(long, default_value = "256x256")]
    size: String,
    /// Timed runs (after one warm-up); with --pipeline, 0 prints the tiling without running.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// auto, cpu, cuda, cuda:N, cuda:N,M or cuda:all.
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
    /// exact, tf32, fp16 or bf16 [default: fp16 on a GPU; the CPU is always exact].
    #[arg(long)]
    precision: Option<Precision>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Time the whole tiled pipeline on an 8-bit RGB image of --size (no warm-up) instead of
    /// the network alone on one input.
    #[arg(long)]
    pipeline: bool,
    /// With --pipeline: tile side in input pixels (0: whole image) [default: from the budget].
    #[arg(long)]
    tile: Option<usize>,
    /// With --pipeline: memory for one tile's run, in MiB.
    #[arg(long, default_value_t = superres_upscale::Options::default().memory_budget >> 20)]
    memory_budget_mb: usize,
    /// With --pipeline: exact, blend or auto (see `superres upscale --help`).
    #[arg(long, default_value = "auto", env = "SUPERRES_TILE_MODE")]
    tile_mode: TileMode,
}

/// The process's peak resident set (`VmHWM` of /proc/self/status), where the system says.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| anyhow::anyhow!("--size must look like 256x256, got '{s}'"))?;
    let (w, h) = (w.trim().parse::<usize>()?, h.trim().parse::<usize>()?);
    if w == 0 || h == 0 {
        bail!("--size must be at least 1x1");
    }
    Ok((w, h))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (w, h) = parse_size(&args.size)?;
    if args.runs == 0 && !args.pipeline {
        bail!("--runs must be at least 1 (0 only with --pipeline: the tiling, without running)");
    }
    let choice = device::select(&args.device, args.precision)?;
    eprintln!("device: {choice}");
    if let Some(note) = &choice.note {
        eprintln!("note: {note}");
    }
    let backend = choice.backend;
    let precision = backend.precision();
    let entry = registry::resolve(&args.model, args.models.as_deref())?;
    let model = entry
        .source
        .load(&entry.name, backend.as_ref(), Overrides::default())?;
    let c = model.input_channels();
    // A deterministic pseudo-random input in the range the family feeds the network.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut times = Vec::with_capacity(args.runs);
    let mut device_times = Vec::with_capacity(args.runs);
    let mut tiling = None;
    if args.pipeline {
        let data = (0..w * h * 3).map(|_| (next() * 255.0) as u8).collect();
        let image = Image::from_u8(w, h, ColorKind::Rgb, data);
        let options = Options {
            tile: args.tile,
            memory_budget: args.memory_budget_mb << 20,
            tile_mode: args.tile_mode,
        };
        let plan = model.tiling(w, h, &options);
        let (rw, rh) = plan.run_size();
        tiling = Some(serde_json::json!({
            "mode": plan.mode.name(),
            "tiles": plan.tiles.len(),
            "run": format!("{rw}x{rh}"),
            "batch": plan.batch,
            "overlap": plan.overlap,
            "run_peak_bytes": model.peak_bytes(rh, rw, plan.batch).ok(),
            // Pixels the runs compute over the image's: the compute tiling adds.
            "redundancy": (plan.tiles.iter().map(|t| t.run.area()).sum::<usize>() as f64
                / (w * h).max(1) as f64 * 1000.0).round() / 1000.0,
            "budget_bytes": options.memory_budget,
        }));
        for _ in 0..args.runs {
            let t = Instant::now();
            upscale(&model, &image, &options, &mut |_| true)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    } else {
        let data: Vec<f32> = (0..w * h * c).map(|_| next()).collect();
        let input = Tensor::image(h, w, c, data);
        model.forward(&input)?;
        for _ in 0..args.runs {
            let t = Instant::now();
            model.forward(&input)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            device_times.extend(model.last_device_ms());
        }
    }
    if times.is_empty() {
        // `--pipeline --runs 0`: the plan only.
        let t = tiling.unwrap_or_default();
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "model": model.name(), "size": format!("{w}x{h}"), "pipeline": t })
            );
        } else {
            println!("pipeline tiling: {t}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let peak_rss = peak_rss_bytes();
    times.sort_by(f64::total_cmp);
    device_times.sort_by(f64::total_cmp);
    // On a GPU: the device's own time for the same runs (CUDA events around upload,
    // network and download), without the host's submission and copies.
    let device_median = (!device_times.is_empty()).then(|| device_times[device_times.len() / 2]);
    let median = times[times.len() / 2];
    let min = times[0];
    let mp_per_s = (w * h) as f64 / 1e6 / (median / 1e3);
    let gflops = 2.0 * model.macs_per_input_pixel() * (w * h) as f64 / 1e9 / (median / 1e3);
    if args.json {
        let v = serde_json::json!({
            "model": model.name(),
            "device": backend.name(),
            "precision": precision.name(),
            "size": format!("{w}x{h}"),
            "runs": args.runs,
            "median_ms": median,
            "min_ms": min,
            "megapixels_per_s": mp_per_s,
            "gflops": gflops,
            "device_median_ms": device_median,
            "peak_rss_bytes": peak_rss,
            "pipeline": tiling,
        });
        println!("{v}");
    } else {
        if let Some(d) = device_median {
            println!("device time (CUDA events): median {d:.2} ms");
        }
        if let Some(t) = &tiling {
            println!("pipeline tiling: {t}");
        }
        println!(
            "{} on {} in {precision} precision at {w}x{h}: median {median:.2} ms, min {min:.2} ms over {} runs; {mp_per_s:.3} MP/s, {gflops:.1} GFLOP/s effective",
            model.name(),
            backend.name(),
            args.runs
        );
        if let Some(b) = peak_rss {
            println!(
                "peak RSS (VmHWM): {:.1} MiB",
                b as f64 / (1u64 << 20) as f64
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
