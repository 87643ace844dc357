//! `superres upscale INPUT... [-o OUT]`: batch upscaling with progress bars.
//!
//! Folders are expanded into their images (`-r`: their whole tree, whose structure the
//! outputs keep under `-o`). One broken file does not stop a batch: it is reported by name,
//! the batch goes on, a summary ends it (done, skipped, failed, time) and the command exits
//! non-zero when any file failed. `--skip-existing` leaves files whose output is already
//! there, so an interrupted batch resumes where it stopped.

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
use superres_upscale::{Model, Options, OutputSize, TileMode, registry, upscale, upscale_tta};

#[derive(Parser)]
pub struct Args {
    /// Image files or folders of images.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Also the images in the folders' subfolders; their structure is kept under -o.
    #[arg(short, long)]
    recursive: bool,
    /// Leave an input whose output file already exists (so a batch resumes).
    #[arg(long)]
    skip_existing: bool,
    /// Video: ffmpeg's encoder [default: libx264, libvpx-vp9 for .webm].
    #[arg(long)]
    codec: Option<String>,
    /// Video: the encoder's constant rate factor, lower is better [default: 18 for x264,
    /// 24 for VP9].
    #[arg(long)]
    crf: Option<u8>,
    /// Video: go on from the segments an interrupted run finished (kept in OUTPUT.parts).
    #[arg(long)]
    resume: bool,
    /// Video: frames per segment, the unit --resume goes on from.
    #[arg(long, default_value_t = 240, value_parser = clap::value_parser!(u32).range(1..))]
    segment_frames: u32,
    /// Test-time augmentation: run the model on the 8 flips and quarter turns of each image
    /// and average the results (8 times the work; the README gives the gain).
    #[arg(long)]
    tta: bool,
    /// Resample the model's result to this factor of the input (≥ 1, e.g. 2 with a ×4
    /// model), with Lanczos-3.
    #[arg(long, conflicts_with_all = ["width", "height"])]
    outscale: Option<f64>,
    /// Resample the result to this width (the height keeps the aspect ratio, unless
    /// --height is given too).
    #[arg(long)]
    width: Option<usize>,
    /// Resample the result to this height (the width keeps the aspect ratio, unless
    /// --width is given too).
    #[arg(long)]
    height: Option<usize>,
    /// Output file (one input) or folder (several inputs or a folder; created if missing).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// A registry name or a path to a .pb / .onnx file.
    /// [default: the built-in model of --scale, else `default` (×3)]
    #[arg(short, long, env = "SUPERRES_MODEL")]
    model: Option<String>,
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
    #[arg(long, default_value_t = superres_upscale::Options::default().memory_budget >> 20)]
    memory_budget_mb: usize,
    /// exact (margins of the whole receptive field: the untiled result), blend (overlapping
    /// tiles of the budget's size, feathered), or auto: exact unless its margins would take
    /// more than half of the compute or more than the budget.
    #[arg(long, default_value = "auto", env = "SUPERRES_TILE_MODE")]
    tile_mode: TileMode,
    /// Output format: png, jpeg or webp. Default: from -o's extension, else png.
    #[arg(long)]
    format: Option<String>,
    /// Quality of lossy formats (1-100): JPEG [default: 92]; WebP is lossless unless this
    /// is given.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: Option<u8>,
    /// Write no metadata: neither the input's EXIF and XMP nor its ICC profile. By default
    /// they are copied, with the EXIF orientation set upright since it is applied.
    #[arg(long)]
    strip_metadata: bool,
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
    /// Without --model: the built-in model of this scale (2, 3 or 4). With --model:
    /// override the detected scale (must agree with the graph).
    #[arg(long)]
    scale: Option<usize>,
    /// No progress bars.
    #[arg(short, long)]
    quiet: bool,
}

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"];

/// One image to process: its path, and where it lies under the folder it was found in (its
/// file name for a file given as such).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Input {
    path: PathBuf,
    relative: PathBuf,
    /// Found in a folder given as an input.
    in_folder: bool,
}

fn is_image(f: &Path) -> bool {
    f.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Expands folders into their image files, sorted: their own files, or with `recursive`
/// every file of their tree (symbolic links to folders are not followed, so a link cycle
/// cannot loop).
fn expand(inputs: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<Input>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found = Vec::new();
            let mut pending = vec![p.clone()];
            while let Some(dir) = pending.pop() {
                let entries = std::fs::read_dir(&dir)
                    .with_context(|| format!("cannot read folder {}", dir.display()))?;
                for entry in entries.flatten() {
                    let path = entry.path();
                    let kind = entry.file_type().ok();
                    if kind.is_some_and(|k| k.is_dir()) {
                        if recursive {
                            pending.push(path);
                        }
                    } else if path.is_file() && is_image(&path) {
                        let relative = path.strip_prefix(p).unwrap_or(&path).to_path_buf();
                        found.push(Input {
                            path,
                            relative,
                            in_folder: true,
                        });
                    }
                }
            }
            found.sort_by(|a, b| a.relative.cmp(&b.relative));
            files.extend(found);
        } else {
            let relative = p.file_name().map_or_else(|| p.clone(), PathBuf::from);
            files.push(Input {
                path: p.clone(),
                relative,
                in_folder: false,
            });
        }
    }
    Ok(files)
}

/// The suffix of an output named after its input: `_x4` at the model's scale, `_x2.5` for
/// `--outscale 2.5`, `_w1920`, `_h1080` or `_1920x1080` for sides.
fn suffix(size: OutputSize, scale: usize) -> String {
    match size {
        OutputSize::Model => format!("_x{scale}"),
        OutputSize::Scale(f) => format!("_x{f}"),
        OutputSize::Width(w) => format!("_w{w}"),
        OutputSize::Height(h) => format!("_h{h}"),
        OutputSize::Exact(w, h) => format!("_{w}x{h}"),
    }
}

/// Where each input's result goes, following the naming contract: one file input and `-o`
/// names the file; otherwise `-o` is a folder and outputs keep their input's stem (and,
/// for images found in a folder, their place under it); without `-o` each result goes
/// beside its input with a suffix naming the size.
fn output_paths(
    output: Option<&Path>,
    files: &[Input],
    suffix: &str,
    format: Option<OutputFormat>,
) -> anyhow::Result<Vec<(PathBuf, OutputFormat)>> {
    let single = files.len() == 1 && !files[0].in_folder;
    let stem = |f: &Path| {
        f.file_stem()
            .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned())
    };
    match (output, single) {
        (Some(out), true) if !out.is_dir() => {
            let fmt = format
                .or_else(|| OutputFormat::from_path(out))
                .unwrap_or(OutputFormat::Png);
            Ok(vec![(out.to_path_buf(), fmt)])
        }
        (Some(dir), _) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let fmt = format.unwrap_or(OutputFormat::Png);
            Ok(files
                .iter()
                .map(|f| {
                    let name = format!("{}.{}", stem(&f.relative), fmt.extension());
                    let place = f.relative.parent().filter(|_| f.in_folder);
                    (dir.join(place.unwrap_or(Path::new(""))).join(name), fmt)
                })
                .collect())
        }
        (None, _) => {
            let fmt = format.unwrap_or(OutputFormat::Png);
            Ok(files
                .iter()
                .map(|f| {
                    let dir = f.path.parent().unwrap_or(Path::new("."));
                    let name = format!("{}{suffix}.{}", stem(&f.path), fmt.extension());
                    (dir.join(name), fmt)
                })
                .collect())
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started_batch = Instant::now();
    let size = OutputSize::from_options(args.outscale, args.width, args.height)
        .map_err(anyhow::Error::msg)?;
    let files = expand(&args.inputs, args.recursive)?;
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
    // `--scale N` alone picks the built-in model of that scale; with a model it overrides
    // the detected scale.
    let (name, scale) = match (&args.model, args.scale) {
        (Some(m), s) => (m.clone(), s),
        (None, Some(s)) => (registry::builtin_for_scale(s)?.to_string(), None),
        (None, None) => (registry::DEFAULT_MODEL.to_string(), None),
    };
    let entry = registry::resolve(&name, args.models.as_deref())?;
    let overrides = Overrides {
        family: args.family,
        scale,
    };
    let model: Model = entry
        .source
        .load(&entry.name, backend.as_ref(), overrides)?;
    let outputs = output_paths(
        args.output.as_deref(),
        &files,
        &suffix(size, model.scale()),
        format,
    )?;
    let options = Options {
        tile: args.tile,
        memory_budget: args.memory_budget_mb << 20,
        tile_mode: args.tile_mode,
    };
    let encode_options = EncodeOptions {
        jpeg_quality: args.quality.unwrap_or(92),
        webp_quality: args.quality,
        keep_metadata: !args.strip_metadata,
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

    let (mut done, mut skipped, mut failed) = (0usize, 0usize, Vec::new());
    let video_run = crate::video::VideoRun {
        model: &model,
        options: &options,
        size,
        tta: args.tta,
        video: superres_video::VideoOptions {
            codec: args.codec.clone(),
            crf: args.crf,
            resume: args.resume,
            segment_frames: args.segment_frames as usize,
        },
        quiet: args.quiet,
    };
    for (input, (out, fmt)) in files.iter().zip(&outputs) {
        let file = &input.path;
        if !input.in_folder && crate::video::is_video(file) {
            let out = match &args.output {
                Some(o) if files.len() == 1 && !o.is_dir() => o.clone(),
                Some(dir) => dir.join(
                    crate::video::default_output(file, "")
                        .file_name()
                        .unwrap_or_default(),
                ),
                None => crate::video::default_output(file, &suffix(size, model.scale())),
            };
            if args.skip_existing && out.exists() {
                println!("{} → {} exists: skipped", file.display(), out.display());
                skipped += 1;
                overall.inc(1);
                continue;
            }
            let started = Instant::now();
            match bars.suspend(|| crate::video::run_video(file, &out, &video_run)) {
                Ok(what) => {
                    done += 1;
                    println!(
                        "{} → {} ({what}, {:.2} s)",
                        file.display(),
                        out.display(),
                        started.elapsed().as_secs_f64()
                    );
                }
                Err(e) => {
                    eprintln!("FAILED {}: {e:#}", file.display());
                    failed.push(file.clone());
                }
            }
            overall.inc(1);
            continue;
        }
        if args.skip_existing && out.exists() {
            bars.suspend(|| println!("{} → {} exists: skipped", file.display(), out.display()));
            skipped += 1;
            overall.inc(1);
            continue;
        }
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
            FileLimits {
                max_input_side: args.max_input_side,
                max_output_pixels: args.max_output_pixels,
                size,
                tta: args.tta,
            },
            &bar,
        );
        bar.finish_and_clear();
        match result {
            // Printed above the bars, and also when they are hidden (quiet, or not a terminal).
            Ok((w, h)) => {
                done += 1;
                bars.suspend(|| {
                    println!(
                        "{} → {} ({w}×{h}, {:.2} s)",
                        file.display(),
                        out.display(),
                        started.elapsed().as_secs_f64()
                    )
                })
            }
            Err(e) => {
                bars.suspend(|| eprintln!("FAILED {}: {e:#}", file.display()));
                failed.push(file.clone());
            }
        }
        overall.inc(1);
    }
    overall.finish_and_clear();
    println!(
        "{}",
        summary(
            done,
            skipped,
            failed.len(),
            started_batch.elapsed().as_secs_f64()
        )
    );
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for f in &failed {
            eprintln!("failed: {}", f.display());
        }
        Ok(ExitCode::FAILURE)
    }
}

/// The batch's last line.
fn summary(done: usize, skipped: usize, failed: usize, secs: f64) -> String {
    format!("done {done}, skipped {skipped}, failed {failed} in {secs:.1} s")
}

/// What a file may be and become, and how it is run.
struct FileLimits {
    max_input_side: Option<usize>,
    max_output_pixels: u64,
    size: OutputSize,
    tta: bool,
}

#[allow(clippy::too_many_arguments)]
fn process(
    file: &Path,
    out: &Path,
    format: OutputFormat,
    model: &Model,
    options: &Options,
    encode_options: &EncodeOptions,
    limits: FileLimits,
    bar: &ProgressBar,
) -> anyhow::Result<(usize, usize)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut image = decode(&bytes, &Limits::default())?;
    if let Some(side) = limits.max_input_side {
        image = superres_imaging::resample::downscale_lanczos(&image, side)?;
    }
    let (w, h, scale) = (image.width, image.height, model.scale());
    check_output_size(w, h, scale, limits.max_output_pixels)?;
    let (fw, fh) = limits.size.resolve(w, h, scale);
    check_final_size(fw, fh, limits.max_output_pixels)?;
    let run = if limits.tta { upscale_tta } else { upscale };
    let result = run(model, &image, options, &mut |p| {
        bar.set_length(p.tiles_total as u64);
        bar.set_position(p.tiles_done as u64);
        true
    })?;
    let result = limits.size.apply(result, w, h, scale)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
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

/// Fails when the resampled result of `width × height` would exceed `limit` pixels.
fn check_final_size(width: usize, height: usize, limit: u64) -> anyhow::Result<()> {
    let pixels = (width as u64).saturating_mul(height as u64);
    if pixels > limit {
        bail!(
            "the resized result would be {width}x{height} = {pixels} pixels, more than the \
             limit of {limit} output pixels (--max-output-pixels)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(path: &str, relative: &str, in_folder: bool) -> Input {
        Input {
            path: path.into(),
            relative: relative.into(),
            in_folder,
        }
    }

    #[test]
    fn tile_mode_is_a_flag_defaulting_to_auto() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["upscale", "in.png"];
            argv.extend_from_slice(extra);
            Args::try_parse_from(argv)
        };
        let mode = |extra: &[&str]| parse(extra).map(|a| a.tile_mode).ok();
        assert_eq!(mode(&[]), Some(TileMode::Auto));
        assert_eq!(mode(&["--tile-mode", "blend"]), Some(TileMode::Blend));
        assert_eq!(mode(&["--tile-mode=exact"]), Some(TileMode::Exact));
        assert!(parse(&["--tile-mode", "seamless"]).is_err());
    }

    #[test]
    fn outputs_keep_the_tree_under_the_output_folder() {
        let dir = std::env::temp_dir().join(format!("superres-outputs-{}", std::process::id()));
        let files = [
            input("in/a.jpg", "a.jpg", true),
            input("in/sub/deeper/b.png", "sub/deeper/b.png", true),
            input("c.webp", "c.webp", false),
        ];
        let outs = output_paths(Some(&dir), &files, "_x4", None).unwrap();
        let names: Vec<PathBuf> = outs
            .iter()
            .map(|(p, _)| p.strip_prefix(&dir).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            names,
            [
                PathBuf::from("a.png"),
                "sub/deeper/b.png".into(),
                "c.png".into()
            ]
        );
        let beside = output_paths(None, &files[..1], "_x2.5", Some(OutputFormat::Webp)).unwrap();
        assert_eq!(beside[0].0, PathBuf::from("in/a_x2.5.webp"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn suffixes_name_the_size() {
        assert_eq!(suffix(OutputSize::Model, 4), "_x4");
        assert_eq!(suffix(OutputSize::Scale(2.0), 4), "_x2");
        assert_eq!(suffix(OutputSize::Width(1920), 4), "_w1920");
        assert_eq!(suffix(OutputSize::Exact(8, 6), 4), "_8x6");
        assert_eq!(
            summary(3, 1, 2, 1.25),
            "done 3, skipped 1, failed 2 in 1.2 s"
        );
    }

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
