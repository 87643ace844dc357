//! The superres HTTP service: `superres serve`.
//!
//! Where it sits: on top of the pipeline (`superres-upscale`) and the image codecs
//! (`superres-imaging`); the command line only parses flags and calls [`Server`]. Its parts,
//! in the order a request meets them:
//!
//! - [`auth`]: who may do what: the admin token and the API keys, as extractors.
//! - [`http`]: routes and handlers, and the tower layers around them (request ids, request
//!   logs, metrics, JSON errors, upload timeout, body limit).
//! - [`openapi`]: the OpenAPI 3.1 description, derived from the handlers, at `/openapi.json`.
//! - [`upload`]: the multipart extractor and the header check that refuses non-images and
//!   oversized images before they queue.
//! - [`media`]: what a job carries: an image in memory or a video in a folder of its own.
//! - [`models`]: the loaded models, swapped atomically on reload.
//! - [`jobs`]: the seam between the handlers and where jobs live ([`jobs::JobBackend`]),
//!   and the domain's error, [`jobs::JobError`].
//! - [`broker`]: the cluster backend: jobs in Redis Streams, images in a blob store, many
//!   API and worker nodes (`--broker`).
//! - [`queue`]: the bounded job queue, job states, results with a time-to-live.
//! - [`worker`]: the inference threads (never the async runtime) and the [`Upscaler`] seam.
//! - [`error`]: the one error type, [`ApiError`], and the JSON shape of every failure.
//! - [`state`]: [`AppState`](state::AppState), what every handler and extractor can reach.
//! - [`telemetry`], [`config`], [`server`], [`clock`]: logs and metrics, settings, life
//!   cycle, the queue's time.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use superres_server::{ModelSetup, Server, Settings};
//! let settings = Settings { bind: "127.0.0.1:0".into(), ..Settings::default() };
//! use superres_upscale::device::{DeviceSpec, select};
//! let backend = select(&DeviceSpec::Auto, None)?.backend;
//! let models = ModelSetup::Disk { dir: Some("models".into()), model: None, backend };
//! let server = Server::bind(settings, models).await?;
//! server.handle().watch_signals();
//! let report = server.run().await?;
//! assert_eq!(report.abandoned, 0);
//! # Ok(()) }
//! ```

mod assets;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod config;
pub mod error;
pub mod http;
pub mod jobs;
pub mod media;
pub mod models;
pub mod openapi;
pub mod queue;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod upload;
pub mod worker;

pub use auth::AdminToken;
pub use clock::Clock;
pub use config::{ConfigError, ConfigLayer, LogFormat, Secret, Settings};
pub use error::ApiError;
pub use models::{ModelRegistry, ModelSetup, ModelView, ReloadReport};
pub use server::{Server, ServerError, ServerHandle, ShutdownReport};
pub use telemetry::init_tracing;
pub use worker::{Pipeline, Upscaler};
