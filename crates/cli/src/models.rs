//! `superres models list | inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use superres_import::Overrides;
use superres_upscale::registry;

#[derive(Subcommand)]
pub enum Command {
    /// List the models a server would load (the built-in ones and those in --models DIR),
    /// each with its format, detected architecture, family, scale, parameters, cost per pixel
    /// and receptive field.
    List {
        #[arg(long, env = "SUPERRES_MODELS")]
        models: Option<PathBuf>,
    },
    /// Show what a model contains: format, architecture, family, scale, inputs/outputs, ops,
    /// parameters. MODEL is
    /// a file or a registry name (`default_x4`).
    Inspect {
        #[arg(value_name = "MODEL")]
        path: PathBuf,
        #[arg(long, env = "SUPERRES_MODELS")]
        models: Option<PathBuf>,
    },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List { models } => {
            println!(
                "{:<20} {:<10} {:<15} {:<6} {:>5} {:>10} {:>10} {:>5}  source",
                "name",
                "format",
                "architecture",
                "family",
                "scale",
                "parameters",
                "MACs/pixel",
                "field"
            );
            for entry in registry::discover(models.as_deref())? {
                match entry.source.import(Overrides::default()) {
                    Ok(m) => println!(
                        "{:<20} {:<10} {:<15} {:<6} {:>5} {:>10} {:>10.0} {:>5}  {}",
                        entry.name,
                        format!("{:?}", m.format).to_lowercase(),
                        m.architecture().unwrap_or("-"),
                        m.family.as_str(),
                        format!("×{}", m.scale),
                        m.graph.parameter_count(),
                        m.graph.macs_per_input_pixel(),
                        m.graph.receptive_field().margin(),
                        entry.source
                    ),
                    Err(e) => println!("{:<20} cannot be read: {e}  {}", entry.name, entry.source),
                }
            }
        }
        Command::Inspect { path, models } => {
            let m = if path.is_file() {
                superres_import::load(&path, Overrides::default())?
            } else {
                let name = path.to_string_lossy();
                registry::resolve(&name, models.as_deref())?
                    .source
                    .import(Overrides::default())?
            };
            let g = &m.graph;
            let rf = g.receptive_field();
            println!("file:             {}", path.display());
            println!("format:           {:?}", m.format);
            println!(
                "architecture:     {}",
                m.architecture().unwrap_or("unknown")
            );
            println!("family:           {}", m.family.as_str());
            println!("scale:            {}", m.scale);
            println!("input channels:   {}", g.input_channels().unwrap_or(0));
            for (name, v) in &g.outputs {
                println!(
                    "output:           {name} ({} channels, ×{})",
                    g.channels(*v),
                    g.scale_factor(*v).map_or("?".into(), |s| s.to_string())
                );
            }
            println!("parameters:       {}", g.parameter_count());
            println!("MACs/input pixel: {:.0}", g.macs_per_input_pixel());
            println!(
                "receptive field:  {} px (top {}, bottom {}, left {}, right {})",
                rf.margin(),
                rf.top,
                rf.bottom,
                rf.left,
                rf.right
            );
            println!("ops (after fusion):");
            for (op, n) in g.op_counts() {
                println!("  {op:<14} {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
