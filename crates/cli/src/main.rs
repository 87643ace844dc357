//! `superres`: AI image super-resolution from the command line and over HTTP.
//!
//! This binary only parses flags and wires the library crates together; each subcommand
//! lives in its own module.

mod bench;
mod devices;
mod models;
mod serve;
mod upscale;
mod video;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "superres",
    version,
    about = "AI image super-resolution: CLI and HTTP service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve(serve::Args),
    /// Upscale image files or folders.
    Upscale(upscale::Args),
    /// List or inspect models.
    #[command(subcommand)]
    Models(models::Command),
    /// Time a model on a synthetic input.
    Bench(bench::Args),
    /// Show the CPU and the GPUs this machine can run on, or why no GPU is usable.
    Devices(devices::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Upscale(args) => upscale::run(args),
        Command::Models(cmd) => models::run(cmd),
        Command::Bench(args) => bench::run(args),
        Command::Devices(args) => devices::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
