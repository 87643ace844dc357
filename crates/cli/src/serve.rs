//! `superres serve`: the HTTP service.
//!
//! Settings come from flags, then `SUPERRES_*` environment variables, then the TOML file
//! named by `--config`, then defaults; this module only gathers them and hands them to
//! `superres_server`, which does the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use superres_engine::Precision;
use superres_server::broker::Role;
use superres_server::{ConfigLayer, LogFormat, ModelSetup, Secret, Server, Settings};
use superres_upscale::TileMode;
use superres_upscale::device::{self, DeviceSpec};

#[derive(Parser)]
#[command(after_help = "\
Every flag can also be set with its SUPERRES_* environment variable (shown with each flag) or \
in the TOML file given by --config, with the flag's name in snake_case as key, for example:

    bind = \"0.0.0.0:8080\"
    models = \"/srv/models\"
    queue_size = 8
    max_body_mb = 20
    device = \"cuda:0\"
    precision = \"fp16\"

Flags win over environment variables, which win over the file.
Signals: SIGTERM or SIGINT drain and stop (exit 0); SIGHUP reloads the models and the API key \
file.

Access control: with --admin-token (or --admin-token-file) the admin endpoint \
POST /v1/models/reload answers to `Authorization: Bearer TOKEN`; without one it is disabled \
(403). With --api-keys FILE, POST /enhance, POST /v1/jobs and the job endpoints need \
`Authorization: Bearer KEY`, and each key sees only its own jobs. The file has one line per \
key, NAME:SHA256HEX[:MAX_IN_FLIGHT], where SHA256HEX is the SHA-256 of the key, e.g.:

    KEY=$(head -c 24 /dev/urandom | base64)
    echo \"alice:$(printf %s \"$KEY\" | sha256sum | cut -d' ' -f1):4\" >> keys.txt")]
pub struct Args {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "SUPERRES_BIND")]
    bind: Option<String>,
    /// Folder of models: NAME.pb / NAME.onnx files or NAME/<version>/model.{pb,onnx} folders
    /// with a `current` symlink.
    #[arg(long, env = "SUPERRES_MODELS")]
    models: Option<PathBuf>,
    /// Model for requests that name none: a registry name or a .pb / .onnx path [default:
    /// `default`, or the only model].
    #[arg(long, env = "SUPERRES_MODEL")]
    model: Option<String>,
    /// auto (a usable GPU, else the CPU), cpu, cuda (the first usable GPU), cuda:N,
    /// cuda:N,M or cuda:all [default: auto]. The choice and its reason are logged at start.
    #[arg(long, env = "SUPERRES_DEVICE")]
    device: Option<DeviceSpec>,
    /// exact, tf32, fp16 or bf16 [default: fp16 on a GPU; the CPU is always exact].
    #[arg(long, env = "SUPERRES_PRECISION")]
    precision: Option<Precision>,
    /// Images that may wait for a worker; beyond it requests get 429 [default: 5].
    #[arg(long, env = "SUPERRES_QUEUE_SIZE")]
    queue_size: Option<usize>,
    /// Inference threads; each run already uses every core [default: 1].
    #[arg(long, env = "SUPERRES_WORKERS")]
    workers: Option<usize>,
    /// Most pixels (width × height) an uploaded image may have [default: 16777216].
    #[arg(long, env = "SUPERRES_MAX_PIXELS")]
    max_pixels: Option<u64>,
    /// Most pixels (width × height) an upscaled result may have; larger get 413
    /// [default: 200000000].
    #[arg(long, env = "SUPERRES_MAX_OUTPUT_PIXELS")]
    max_output_pixels: Option<u64>,
    /// Most memory one request may need (its output image and the model's peak per run), in
    /// MiB; larger get 413 [default: 4096].
    #[arg(long, env = "SUPERRES_MAX_REQUEST_MEMORY_MB")]
    max_request_memory_mb: Option<u64>,
    /// Largest image upload, in MB [default: 50].
    #[arg(long, env = "SUPERRES_MAX_BODY_MB")]
    max_body_mb: Option<usize>,
    /// Largest video upload to /v1/jobs, in MB; 0 refuses videos [default: 1000].
    #[arg(long, env = "SUPERRES_MAX_VIDEO_MB")]
    max_video_mb: Option<u64>,
    /// Where uploaded videos and their results stay while their job lives [default: the
    /// system's temporary folder].
    #[arg(long, env = "SUPERRES_VIDEO_DIR", value_name = "DIR")]
    video_dir: Option<PathBuf>,
    /// Longest one image (or one video frame) may run, in seconds [default: 300].
    #[arg(long, env = "SUPERRES_JOB_TIMEOUT_SECS")]
    job_timeout_secs: Option<u64>,
    /// Longest a client may take to send its upload, in seconds [default: 60].
    #[arg(long, env = "SUPERRES_UPLOAD_TIMEOUT_SECS")]
    upload_timeout_secs: Option<u64>,
    /// How long finished jobs' results are kept, in seconds [default: 600].
    #[arg(long, env = "SUPERRES_RESULT_TTL_SECS")]
    result_ttl_secs: Option<u64>,
    /// Most MiB of results kept; the oldest are evicted beyond it [default: 512].
    #[arg(long, env = "SUPERRES_RESULT_STORE_MB")]
    result_store_mb: Option<usize>,
    /// How long a shutdown waits for running and queued jobs, in seconds [default: 30].
    #[arg(long, env = "SUPERRES_DRAIN_TIMEOUT_SECS")]
    drain_timeout_secs: Option<u64>,
    /// Tile side in input pixels (0: whole image) [default: from --memory-budget-mb].
    #[arg(long, env = "SUPERRES_TILE")]
    tile: Option<usize>,
    /// Memory for one tile's activations, in MiB, when --tile is not given [default: 256].
    #[arg(long, env = "SUPERRES_MEMORY_BUDGET_MB")]
    memory_budget_mb: Option<usize>,
    /// exact (margins of the whole receptive field: the untiled result), blend (overlapping
    /// tiles of the budget's size, feathered), or auto: exact unless its margins would take
    /// more than half of the compute or more than the budget [default: auto].
    #[arg(long, env = "SUPERRES_TILE_MODE")]
    tile_mode: Option<TileMode>,
    /// Log lines as text or json [default: text]. The level comes from SUPERRES_LOG
    /// (e.g. `debug`, `info,tower_http=warn`).
    #[arg(long, env = "SUPERRES_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Who may do what (boxed: the flags of `serve` are many).
    #[command(flatten)]
    access: Box<AccessArgs>,
    /// Joining a cluster.
    #[command(flatten)]
    cluster: Box<ClusterArgs>,
    /// A TOML file of settings.
    #[arg(long, env = "SUPERRES_CONFIG")]
    config: Option<PathBuf>,
}

/// The access-control flags of `serve`.
#[derive(clap::Args)]
struct AccessArgs {
    /// Token for the admin endpoints (POST /v1/models/reload), sent as
    /// `Authorization: Bearer TOKEN` [default: none, admin endpoints disabled].
    #[arg(long, env = "SUPERRES_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// File whose first line (trimmed) is the admin token, read at start.
    #[arg(
        long,
        env = "SUPERRES_ADMIN_TOKEN_FILE",
        conflicts_with = "admin_token"
    )]
    admin_token_file: Option<PathBuf>,
    /// API key file, one NAME:SHA256HEX[:MAX_IN_FLIGHT] per line; submissions and jobs then
    /// need `Authorization: Bearer KEY`. Reloaded on SIGHUP and POST /v1/models/reload
    /// [default: none, open service].
    #[arg(long, env = "SUPERRES_API_KEYS")]
    api_keys: Option<PathBuf>,
    /// Jobs queued or running at once per API key whose line names no limit [default: 4].
    #[arg(long, env = "SUPERRES_API_KEY_MAX_IN_FLIGHT")]
    api_key_max_in_flight: Option<usize>,
}

/// The cluster flags of `serve`: many API and worker nodes on one Redis.
#[derive(clap::Args)]
struct ClusterArgs {
    /// Run as a node of a cluster whose jobs live in this Redis (`redis://HOST:PORT[/DB]`)
    /// [default: none, jobs live in this process].
    #[arg(long, env = "SUPERRES_BROKER", value_name = "URL")]
    broker: Option<String>,
    /// What this node does: `api` takes requests, `worker` runs jobs, `all` both
    /// [default: all].
    #[arg(long, env = "SUPERRES_ROLE")]
    role: Option<Role>,
    /// Where the cluster keeps uploads and results: `file:///DIR` (a folder every node
    /// sees) or `s3://BUCKET[/PREFIX]` (credentials and endpoint from `AWS_*` variables).
    #[arg(long, env = "SUPERRES_BLOB_STORE", value_name = "URL")]
    blob_store: Option<String>,
    /// A running job whose worker is silent this long is given to another, in seconds
    /// [default: 30].
    #[arg(long, env = "SUPERRES_VISIBILITY_TIMEOUT_SECS")]
    visibility_timeout_secs: Option<u64>,
    /// Times a job may be lost with its worker before it fails `worker_lost` [default: 3].
    #[arg(long, env = "SUPERRES_MAX_ATTEMPTS")]
    max_attempts: Option<u32>,
}

impl Args {
    fn layer(self) -> (ConfigLayer, Option<PathBuf>) {
        let layer = ConfigLayer {
            bind: self.bind,
            models: self.models,
            model: self.model,
            device: self.device,
            precision: self.precision,
            queue_size: self.queue_size,
            workers: self.workers,
            max_pixels: self.max_pixels,
            max_output_pixels: self.max_output_pixels,
            max_request_memory_mb: self.max_request_memory_mb,
            max_body_mb: self.max_body_mb,
            max_video_mb: self.max_video_mb,
            video_dir: self.video_dir,
            job_timeout_secs: self.job_timeout_secs,
            upload_timeout_secs: self.upload_timeout_secs,
            result_ttl_secs: self.result_ttl_secs,
            result_store_mb: self.result_store_mb,
            drain_timeout_secs: self.drain_timeout_secs,
            tile: self.tile,
            memory_budget_mb: self.memory_budget_mb,
            tile_mode: self.tile_mode,
            log_format: self.log_format,
            admin_token: self.access.admin_token.map(Secret::from),
            admin_token_file: self.access.admin_token_file,
            api_keys: self.access.api_keys,
            api_key_max_in_flight: self.access.api_key_max_in_flight,
            broker: self.cluster.broker,
            role: self.cluster.role,
            blob_store: self.cluster.blob_store,
            visibility_timeout_secs: self.cluster.visibility_timeout_secs,
            max_attempts: self.cluster.max_attempts,
        };
        (layer, self.config)
    }
}

/// Inference workers when the service runs on a GPU and `--workers` is not given.
const GPU_WORKERS: usize = 4;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (flags, config) = args.layer();
    let file = match &config {
        Some(path) => ConfigLayer::from_toml_file(path)?,
        None => ConfigLayer::default(),
    };
    let workers_given = flags.workers.is_some() || file.workers.is_some();
    let mut settings = Settings::from_layers(flags, file)?;
    superres_server::init_tracing(settings.log_format);
    let choice = device::select(&settings.device, settings.precision)?;
    tracing::info!(requested = %choice.requested, "device: {choice}");
    if !choice.is_cpu() && !workers_given {
        // One CPU run uses every core, so the CPU has one worker; a GPU takes several
        // requests at once (each lane computes one while the next is uploaded, and the
        // workers decode and encode meanwhile).
        settings.workers = GPU_WORKERS;
        tracing::info!(
            workers = GPU_WORKERS,
            "workers for a GPU (--workers to change)"
        );
    }
    if let Some(note) = &choice.note {
        tracing::warn!("{note}");
    }
    let models = ModelSetup::Disk {
        dir: settings.models_dir.clone(),
        model: settings.default_model.clone(),
        backend: choice.backend,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("superres-http")
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(async move {
        let server = Server::bind(settings, models).await?;
        server.handle().watch_signals();
        server.run().await
    })?;
    if report.abandoned > 0 {
        eprintln!(
            "{} job(s) were still running or queued when the drain timeout passed",
            report.abandoned
        );
    }
    Ok(ExitCode::SUCCESS)
}
