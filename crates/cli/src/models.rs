//! `superres models list | inspect`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use superres_import::Overrides;
use superres_upscale::registry;

#[derive(Subcommand)]
pub enum Command {
    /// List the models a server would load: the built-in ones and those in --models DIR.
    List {
        #[arg(long, env = "SUPERRES_MODELS")]
        models: Option<PathBuf>,
    },
    /// Show what a model file contains: family, scale, inputs/outputs, ops, parameters.
    Inspect { path: PathBuf },
}

pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::List { models } => {
            for entry in registry::discover(models.as_deref())? {
                println!("{:<24} {}", entry.name, entry.source);
            }
        }
        Command::Inspect { path } => {
            let m = superres_import::load(&path, Overrides::default())?;
            let g = &m.graph;
            let rf = g.receptive_field();
            println!("file:             {}", path.display());
            println!("format:           {:?}", m.format);
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
