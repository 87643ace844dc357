//! `superres upscale INPUT... [-o OUT]`: batch upscaling with progress bars.
//!
//! One broken file does not stop a batch: it is reported by name and the command exits
//! non-zero at the end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use superres_engine::Precision;
use superres_imaging::decode::{Limits, decode};
use superres_imaging::encode::{EncodeOptions, OutputFormat, encode_to};
use superres_import::{Family, Overrides};
use superres_upscale::device::{self, DeviceSpec};
use superres_upscale::{Model, Options, registry, upscale};

#[derive(Parser)]
pub struct Args {
    /// Image files or folders of images.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output file (one input) or folder (several inputs or a folder; created if missing).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// A registry name or a path to a .pb / .onnx file.
    #[arg(short, long, default_value = registry::DEFAULT_MODEL, env = "SUPERRES_MODEL")]
    model: String,
    /// Folder of named models.
    #[arg(long, env = "SUPERRES_MODELS")]
    models: Option<PathBuf>,
    /// auto (a usable GPU, else the CPU), cpu, cuda (the first usable GPU), cuda:N,
    /// cuda:N,M or cuda:all. `superres devices` shows what this machine has.
    #[arg(long, default_value = "auto", env = "SUPERRES_DEVICE")]
    device: DeviceSpec,
    /// exact, tf32, fp16 or bf16 [default: fp16 on a GPU; the CPU is always exact].
    #[arg(long, env = "SUPERRES_PRECISION")]
    precision: Option<Precision>,
    /// Tile side in input pixels (0: whole image). Default: from --memory-budget-mb.
    #[arg(long)]
    tile: Option<usize>,
    /// Memory for one tile's activations, in MiB, when --tile is not given.
    #[arg(long, default_value_t = 256)]
    memory_budget_mb: usize,
    /// Output format: png, jpeg or webp. Default: from -o's extension, else png.
    #[arg(long)]
    format: Option<String>,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = 92)]
    quality: u8,
    /// Downscale inputs whose longest side exceeds N pixels first (Lanczos). Off by default.
    #[arg(long)]
    max_input_side: Option<usize>,
    /// Most pixels (width × height) a result may have; a larger one fails that file (before
    /// it is upscaled) and the batch goes on.
    #[arg(
        long,
        default_value_t = 200_000_000,
        env = "SUPERRES_MAX_OUTPUT_PIXELS"
    )]
    max_output_pixels: u64,
    /// Override the detected pre/post-processing family: edsr, y or rgb.
    #[arg(long)]
    family: Option<Family>,
    /// Override the detected scale (must agree with the graph).
    #[arg(long)]
    scale: Option<usize>,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"];

/// Expands folders into their image files (sorted, not recursive).
fn expand(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("cannot read folder {}", p.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    f.is_file()
                        && f.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                            IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                        })
                })
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

/// Where each input's result goes, following the naming contract: one file input and `-o`
/// names the file; otherwise `-o` is a folder and outputs keep their input's stem.
fn output_paths(
    args: &Args,
    files: &[PathBuf],
    scale: usize,
    format: Option<OutputFormat>,
) -> anyhow::Result<Vec<(PathBuf, OutputFormat)>> {
    let single = files.len() == 1 && !args.inputs[0].is_dir();
    let stem = |f: &Path| {
        f.file_stem()
            .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned())
    };
    match (&args.output, single) {
        (Some(out), true) if !out.is_dir() => {
            let fmt = format
                .or_else(|| OutputFormat::from_path(out))
                .unwrap_or(OutputFormat::Png);
            Ok(vec![(out.clone(), fmt)])
        }
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let fmt = format.unwrap_or(OutputFormat::Png);
            Ok(files
                .iter()
                .map(|f| (dir.join(format!("{}.{}", stem(f), fmt.extension())), fmt))
                .collect())
        }
        (None, _) => {
            let fmt = format.unwrap_or(OutputFormat::Png);
            Ok(files
                .iter()
                .map(|f| {
                    let dir = f.parent().unwrap_or(Path::new("."));
                    (
                        dir.join(format!("{}_x{scale}.{}", stem(f), fmt.extension())),
                        fmt,
                    )
                })
                .collect())
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let files = expand(&args.inputs)?;
    if files.is_empty() {
        bail!("no images found in {:?}", args.inputs);
    }
    let format = args
        .format
        .as_deref()
        .map(|f| f.parse::<OutputFormat>().map_err(anyhow::Error::msg))
        .transpose()?;
    let choice = device::select(&args.device, args.precision)?;
    eprintln!("device: {choice}");
    if let Some(note) = &choice.note {
        eprintln!("note: {note}");
    }
    let backend = choice.backend;
    let entry = registry::resolve(&args.model, args.models.as_deref())?;
    let overrides = Overrides {
        family: args.family,
        scale: args.scale,
    };
    let model: Model = entry
        .source
        .load(&entry.name, backend.as_ref(), overrides)?;
    let outputs = output_paths(&args, &files, model.scale(), format)?;
    let options = Options {
        tile: args.tile,
        memory_budget: args.memory_budget_mb << 20,
    };
    let encode_options = EncodeOptions {
        jpeg_quality: args.quality,
        ..EncodeOptions::default()
    };

    let bars = MultiProgress::new();
    if args.quiet {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let overall = bars.add(ProgressBar::new(files.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} images {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    overall.set_prefix("total");
    let tile_style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} tiles {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");

    let mut failed = Vec::new();
    for (file, (out, fmt)) in files.iter().zip(&outputs) {
        let bar = bars.insert_before(&overall, ProgressBar::new(1));
        bar.set_style(tile_style.clone());
        bar.set_prefix("image");
        bar.set_message(file.display().to_string());
        let started = Instant::now();
        let result = process(
            file,
            out,
            *fmt,
            &model,
            &options,
            &encode_options,
            args.max_input_side,
            args.max_output_pixels,
            &bar,
        );
        bar.finish_and_clear();
        match result {
            // Printed above the bars, and also when they are hidden (quiet, or not a terminal).
            Ok((w, h)) => bars.suspend(|| {
                println!(
                    "{} → {} ({w}×{h}, {:.2} s)",
                    file.display(),
                    out.display(),
                    started.elapsed().as_secs_f64()
                )
            }),
            Err(e) => {
                bars.suspend(|| eprintln!("FAILED {}: {e:#}", file.display()));
                failed.push(file.clone());
            }
        }
        overall.inc(1);
    }
    overall.finish_and_clear();
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} of {} images failed", failed.len(), files.len());
        Ok(ExitCode::FAILURE)
    }
}

#[allow(clippy::too_many_arguments)]
fn process(
    file: &Path,
    out: &Path,
    format: OutputFormat,
    model: &Model,
    options: &Options,
    encode_options: &EncodeOptions,
    max_input_side: Option<usize>,
    max_output_pixels: u64,
    bar: &ProgressBar,
) -> anyhow::Result<(usize, usize)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut image = decode(&bytes, &Limits::default())?;
    if let Some(side) = max_input_side {
        image = superres_imaging::resample::downscale_lanczos(&image, side)?;
    }
    check_output_size(image.width, image.height, model.scale(), max_output_pixels)?;
    let result = upscale(model, &image, options, &mut |p| {
        bar.set_length(p.tiles_total as u64);
        bar.set_position(p.tiles_done as u64);
        true
    })?;
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    encode_to(&result, format, encode_options, &mut writer)?;
    std::io::Write::flush(&mut writer)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok((result.width, result.height))
}

/// Fails when a `width × height` image upscaled `scale` times would have more than `limit`
/// pixels, naming both sizes.
fn check_output_size(width: usize, height: usize, scale: usize, limit: u64) -> anyhow::Result<()> {
    let side = |n: usize| (n as u64).saturating_mul(scale as u64);
    let (ow, oh) = (side(width), side(height));
    let pixels = ow.saturating_mul(oh);
    if pixels > limit {
        bail!(
            "the result would be {ow}x{oh} = {pixels} pixels ({width}x{height} upscaled x{scale}), \
             more than the limit of {limit} output pixels (--max-output-pixels)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_limit_counts_both_sides_times_the_scale() {
        assert!(check_output_size(10, 5, 2, 200).is_ok());
        let e = check_output_size(10, 5, 2, 199).unwrap_err().to_string();
        assert!(
            e.contains("20x10 = 200 pixels") && e.contains("limit of 199"),
            "{e}"
        );
        assert!(check_output_size(usize::MAX, usize::MAX, 8, u64::MAX - 1).is_err());
    }
}
