//! What the service can be told: [`Settings`], and the [`ConfigLayer`]s they are built from.
//!
//! Where it sits: before anything starts. Settings come from three places, in rising order
//! of precedence: a TOML file (`--config FILE`), `SUPERRES_*` environment variables, and
//! command-line flags. The command line parses the last two into one layer (clap reads the
//! variables), reads the file into another, and [`Settings::from_layers`] fills what neither
//! names with the defaults below. Every size a request can influence has a limit here.
//!
//! Access control is configured here too (see [`crate::auth`]): the admin token, given in
//! the clear (`admin_token`) or as a file whose first line it is (`admin_token_file`, read
//! once, at start), and the API key file (`api_keys`, read at start and on every reload).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use superres_upscale::device::DeviceSpec;
use superres_upscale::{Precision, TileMode};

use crate::auth::AdminToken;
use crate::broker::{BrokerSettings, Role};
use crate::clock::Clock;

/// A secret given in the clear (the admin token from a flag, a variable or the file). Its
/// `Debug` shows nothing of it, so settings can be logged.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret(s)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format '{other}' (expected text or json)"
            )),
        }
    }
}

/// Defines [`ConfigLayer`] from one list of its settings, with the field-by-field merge
/// that [`ConfigLayer::over`] builds on, so a new setting is named once.
macro_rules! config_layer {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: Option<$ty:ty>,)*
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: Option<$ty>,)*
        }

        impl $name {
            /// Every setting of this layer, or of `below` where this one says nothing.
            fn or_each(self, below: $name) -> $name {
                $name {
                    $($field: self.$field.or(below.$field),)*
                }
            }
        }
    };
}

config_layer! {
    /// One source of settings; `None` means "this source does not say". The TOML file uses
    /// the same keys (`queue_size = 5`, `models = "/srv/models"`, …); unknown keys are an
    /// error so a typo does not silently leave a default in place.
    #[derive(Clone, Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ConfigLayer {
        pub bind: Option<String>,
        pub models: Option<PathBuf>,
        pub model: Option<String>,
        #[serde(default, deserialize_with = "parsed")]
        pub device: Option<DeviceSpec>,
        #[serde(default, deserialize_with = "parsed")]
        pub precision: Option<Precision>,
        pub queue_size: Option<usize>,
        pub workers: Option<usize>,
        pub max_pixels: Option<u64>,
        pub max_output_pixels: Option<u64>,
        pub max_request_memory_mb: Option<u64>,
        pub max_body_mb: Option<usize>,
        /// Largest video upload in MB; 0 turns video uploads off.
        pub max_video_mb: Option<u64>,
        /// Where uploaded videos and their results stay while their job lives.
        pub video_dir: Option<PathBuf>,
        pub job_timeout_secs: Option<u64>,
        pub upload_timeout_secs: Option<u64>,
        pub result_ttl_secs: Option<u64>,
        pub result_store_mb: Option<usize>,
        pub drain_timeout_secs: Option<u64>,
        pub tile: Option<usize>,
        pub memory_budget_mb: Option<usize>,
        /// `exact`, `blend` or `auto` (see [`superres_upscale::TileMode`]).
        #[serde(default, deserialize_with = "parsed")]
        pub tile_mode: Option<TileMode>,
        pub log_format: Option<LogFormat>,
        /// The admin token itself. A layer that names it or `admin_token_file` decides the
        /// token for the layers below it too.
        pub admin_token: Option<Secret>,
        /// A file whose first line (trimmed) is the admin token.
        pub admin_token_file: Option<PathBuf>,
        /// The API key file (`NAME:SHA256HEX[:MAX_IN_FLIGHT]` per line).
        pub api_keys: Option<PathBuf>,
        /// Jobs in flight per API key whose line gives no limit.
        pub api_key_max_in_flight: Option<usize>,
        /// `redis://HOST:PORT[/DB]`: run as a node of a cluster on this Redis.
        pub broker: Option<String>,
        #[serde(default, deserialize_with = "parsed")]
        pub role: Option<Role>,
        /// Where the cluster keeps images: `file:///DIR` (a folder every node sees) or
        /// `s3://BUCKET[/PREFIX]`.
        pub blob_store: Option<String>,
        pub visibility_timeout_secs: Option<u64>,
        pub max_attempts: Option<u32>,
    }
}

/// A TOML string read with the type's `FromStr`, so the file accepts exactly what the flag
/// does (`device = "cuda:0,1"`, `precision = "fp16"`) and says the same thing when it does not.
fn parsed<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {file} is not valid: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl ConfigLayer {
    /// Reads a TOML configuration file.
    pub fn from_toml_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            file: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// This layer, with `below` filling what it leaves unsaid.
    pub fn over(self, mut below: ConfigLayer) -> ConfigLayer {
        // The token and the token file are one setting: a flag naming a token file replaces
        // a token in the file below, and the other way round.
        if self.admin_token.is_some() || self.admin_token_file.is_some() {
            below.admin_token = None;
            below.admin_token_file = None;
        }
        self.or_each(below)
    }
}

/// Everything the service runs with. [`Settings::default`] is what `superres serve` uses when
/// nothing is configured.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to listen on, `host:port`; port 0 picks a free one.
    pub bind: String,
    /// Folder of named models (see DESIGN.md, "Models on disk").
    pub models_dir: Option<PathBuf>,
    /// Model for requests that name none: a registry name or a file path.
    pub default_model: Option<String>,
    /// `auto`, `cpu`, `cuda`, `cuda:N`, `cuda:N,M` or `cuda:all`
    /// (see [`superres_upscale::device`]).
    pub device: DeviceSpec,
    /// The GPU's precision; `None` is [`superres_upscale::DEFAULT_GPU_PRECISION`] on a GPU.
    /// The CPU is always exact (`cpu` with another precision is refused at start).
    pub precision: Option<Precision>,
    /// Images that may wait for a worker; one more is refused with 429.
    pub queue_size: usize,
    /// Inference threads. Each run already spreads over every core, so 1 is the default.
    pub workers: usize,
    /// Most decoded pixels (width × height) an upload may have.
    pub max_pixels: u64,
    /// Most pixels (width × height) an upscaled result may have: an upload whose size times
    /// the model's scale exceeds it is refused before it is queued.
    pub max_output_pixels: u64,
    /// Most bytes one request may need: its output image plus the model's peak for the run
    /// size the pipeline would use. Checked before the job is queued.
    pub max_request_memory_bytes: u64,
    /// Largest image upload (and request body without a video), in bytes.
    pub max_body_bytes: usize,
    /// Largest video upload, in bytes; 0: video uploads are refused (415).
    pub max_video_bytes: u64,
    /// Parent of the folder where uploaded videos and their results stay while their job
    /// lives; `None`: the system's temporary folder (`TMPDIR`).
    pub video_dir: Option<PathBuf>,
    /// Longest one image (or one frame of a video) may run before its job is stopped at its
    /// next tile.
    pub job_timeout: Duration,
    /// Longest a client may take to send its request body.
    pub upload_timeout: Duration,
    /// How long finished jobs (and their results) are kept.
    pub result_ttl: Duration,
    /// Most bytes of results kept at once; the oldest are dropped beyond it.
    pub result_store_bytes: usize,
    /// How long a shutdown waits for running and queued jobs.
    pub drain_timeout: Duration,
    /// Tile side in input pixels (0: whole image); `None` derives it from `memory_budget_bytes`.
    pub tile: Option<usize>,
    /// Memory for one tile's activations when `tile` is `None`.
    pub memory_budget_bytes: usize,
    /// Exact tiles, blended ones, or the choice by cost (default).
    pub tile_mode: TileMode,
    pub log_format: LogFormat,
    /// The token the admin endpoints answer to; `None` disables them.
    pub admin_token: Option<AdminToken>,
    /// The API key file; `None` leaves the service open (no key needed).
    pub api_keys: Option<PathBuf>,
    /// Jobs queued or running at once per API key whose line names no limit.
    pub api_key_max_in_flight: usize,
    /// The job queue's time (when results expire): the system clock; tests move a manual one.
    pub clock: Clock,
    /// The cluster this node belongs to; `None`: jobs live in this process.
    pub broker: Option<BrokerSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            bind: "127.0.0.1:8080".into(),
            models_dir: None,
            default_model: None,
            device: DeviceSpec::Auto,
            precision: None,
            queue_size: 5,
            workers: 1,
            max_pixels: 16_777_216,
            max_output_pixels: 200_000_000,
            max_request_memory_bytes: 4096 << 20,
            max_body_bytes: 50_000_000,
            max_video_bytes: 1_000_000_000,
            video_dir: None,
            job_timeout: Duration::from_secs(300),
            upload_timeout: Duration::from_secs(60),
            result_ttl: Duration::from_secs(600),
            result_store_bytes: 512 << 20,
            drain_timeout: Duration::from_secs(30),
            tile: None,
            memory_budget_bytes: superres_upscale::Options::default().memory_budget,
            tile_mode: TileMode::Auto,
            log_format: LogFormat::Text,
            admin_token: None,
            api_keys: None,
            api_key_max_in_flight: 4,
            clock: Clock::system(),
            broker: None,
        }
    }
}

impl Settings {
    /// Settings from the flags-and-environment layer over the file layer over the defaults.
    pub fn from_layers(flags: ConfigLayer, file: ConfigLayer) -> Result<Settings, ConfigError> {
        let c = flags.over(file);
        let d = Settings::default();
        let secs = Duration::from_secs;
        let settings = Settings {
            bind: c.bind.unwrap_or(d.bind),
            models_dir: c.models,
            default_model: c.model,
            device: c.device.unwrap_or(d.device),
            precision: c.precision.or(d.precision),
            queue_size: c.queue_size.unwrap_or(d.queue_size),
            workers: c.workers.unwrap_or(d.workers),
            max_pixels: c.max_pixels.unwrap_or(d.max_pixels),
            max_output_pixels: c.max_output_pixels.unwrap_or(d.max_output_pixels),
            max_request_memory_bytes: c
                .max_request_memory_mb
                .map_or(d.max_request_memory_bytes, |mb| mb.saturating_mul(1 << 20)),
            max_body_bytes: c
                .max_body_mb
                .map_or(d.max_body_bytes, |mb| mb.saturating_mul(1_000_000)),
            max_video_bytes: c
                .max_video_mb
                .map_or(d.max_video_bytes, |mb| mb.saturating_mul(1_000_000)),
            video_dir: c.video_dir,
            job_timeout: c.job_timeout_secs.map_or(d.job_timeout, secs),
            upload_timeout: c.upload_timeout_secs.map_or(d.upload_timeout, secs),
            result_ttl: c.result_ttl_secs.map_or(d.result_ttl, secs),
            result_store_bytes: c
                .result_store_mb
                .map_or(d.result_store_bytes, |mb| mb.saturating_mul(1 << 20)),
            drain_timeout: c.drain_timeout_secs.map_or(d.drain_timeout, secs),
            tile: c.tile.or(d.tile),
            memory_budget_bytes: c
                .memory_budget_mb
                .map_or(d.memory_budget_bytes, |mb| mb.saturating_mul(1 << 20)),
            tile_mode: c.tile_mode.unwrap_or(d.tile_mode),
            log_format: c.log_format.unwrap_or(d.log_format),
            admin_token: admin_token(c.admin_token, c.admin_token_file.as_deref())?,
            api_keys: c.api_keys,
            api_key_max_in_flight: c.api_key_max_in_flight.unwrap_or(d.api_key_max_in_flight),
            clock: d.clock,
            broker: broker_settings(
                c.broker,
                c.role,
                c.blob_store,
                c.visibility_timeout_secs,
                c.max_attempts,
            )?,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects values the service cannot run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return Err(ConfigError::Invalid("workers must be at least 1".into()));
        }
        if self.max_pixels == 0 || self.max_body_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_pixels and max_body_mb must be positive".into(),
            ));
        }
        if self.max_output_pixels == 0 || self.max_request_memory_bytes == 0 {
            return Err(ConfigError::Invalid(
                "max_output_pixels and max_request_memory_mb must be positive".into(),
            ));
        }
        if self.api_key_max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "api_key_max_in_flight must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Default `--visibility-timeout-secs`: a job whose worker is silent this long moves on.
pub const DEFAULT_VISIBILITY_TIMEOUT_SECS: u64 = 30;
/// Default `--max-attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The cluster settings, which need `--broker`; a cluster needs `--blob-store`.
fn broker_settings(
    url: Option<String>,
    role: Option<Role>,
    blob_store: Option<String>,
    visibility_timeout_secs: Option<u64>,
    max_attempts: Option<u32>,
) -> Result<Option<BrokerSettings>, ConfigError> {
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
        let given = [
            ("role", role.is_some()),
            ("blob_store", blob_store.is_some()),
            ("visibility_timeout_secs", visibility_timeout_secs.is_some()),
            ("max_attempts", max_attempts.is_some()),
        ];
        return match given.iter().find(|(_, g)| *g) {
            Some((name, _)) => Err(ConfigError::Invalid(format!(
                "{name} applies to a cluster: give broker (--broker redis://HOST:PORT) too"
            ))),
            None => Ok(None),
        };
    };
    let blob_store = blob_store.ok_or_else(|| {
        ConfigError::Invalid(
            "a cluster keeps its images in a blob store every node sees: give blob_store \
             (--blob-store file:///DIR)"
                .into(),
        )
    })?;
    let visibility = visibility_timeout_secs.unwrap_or(DEFAULT_VISIBILITY_TIMEOUT_SECS);
    let max_attempts = max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if visibility == 0 || max_attempts == 0 {
        return Err(ConfigError::Invalid(
            "visibility_timeout_secs and max_attempts must be at least 1".into(),
        ));
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    Ok(Some(BrokerSettings {
        url,
        role: role.unwrap_or_default(),
        blob_store,
        visibility_timeout: Duration::from_secs(visibility),
        max_attempts,
        node: format!("{host}-{}", std::process::id()),
    }))
}

/// The admin token from the one source a layer named: the token itself, or the first line
/// of a file, read now.
fn admin_token(
    token: Option<Secret>,
    file: Option<&Path>,
) -> Result<Option<AdminToken>, ConfigError> {
    match (token, file) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(
            "give the admin token or the admin token file, not both".into(),
        )),
        (Some(Secret(t)), None) => AdminToken::new(&t).map(Some).map_err(ConfigError::Invalid),
        (None, Some(path)) => AdminToken::from_file(path)
            .map(Some)
            .map_err(ConfigError::Invalid),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: ConfigLayer =
            toml::from_str("queue_size = 9\nworkers = 2\nlog_format = \"json\"").unwrap();
        let flags = ConfigLayer {
            queue_size: Some(3),
            ..ConfigLayer::default()
        };
        let s = Settings::from_layers(flags, file).unwrap();
        assert_eq!(s.queue_size, 3);
        assert_eq!(s.workers, 2);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.max_body_bytes, 50_000_000);
    }

    #[test]
    fn video_limits_come_from_the_file_and_zero_turns_videos_off() {
        let file: ConfigLayer =
            toml::from_str("max_video_mb = 0\nvideo_dir = \"/srv/video\"").unwrap();
        let s = Settings::from_layers(ConfigLayer::default(), file).unwrap();
        assert_eq!(s.max_video_bytes, 0);
        assert_eq!(s.video_dir.as_deref(), Some(Path::new("/srv/video")));
        let d = Settings::from_layers(ConfigLayer::default(), ConfigLayer::default()).unwrap();
        assert_eq!((d.max_video_bytes, d.video_dir), (1_000_000_000, None));
    }

    #[test]
    fn cluster_settings_need_a_broker_and_a_blob_store() {
        let layer = |text: &str| toml::from_str::<ConfigLayer>(text).unwrap();
        let s = Settings::from_layers(
            layer("broker = \"redis://127.0.0.1:6379/2\"\nblob_store = \"file:///srv/b\"\nrole = \"worker\""),
            ConfigLayer::default(),
        )
        .unwrap();
        let b = s.broker.unwrap();
        assert_eq!(
            (b.url.as_str(), b.role),
            ("redis://127.0.0.1:6379/2", Role::Worker)
        );
        assert_eq!(
            b.visibility_timeout,
            Duration::from_secs(DEFAULT_VISIBILITY_TIMEOUT_SECS)
        );
        assert_eq!(b.max_attempts, DEFAULT_MAX_ATTEMPTS);
        for (text, says) in [
            ("role = \"api\"", "give broker"),
            ("max_attempts = 2", "give broker"),
            ("broker = \"redis://r\"", "blob_store"),
            (
                "broker = \"redis://r\"\nblob_store = \"file:///b\"\nmax_attempts = 0",
                "at least 1",
            ),
        ] {
            let err = Settings::from_layers(layer(text), ConfigLayer::default()).unwrap_err();
            assert!(err.to_string().contains(says), "{text}: {err}");
        }
        let err = toml::from_str::<ConfigLayer>("role = \"boss\"").unwrap_err();
        assert!(err.to_string().contains("unknown role"), "{err}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let err = toml::from_str::<ConfigLayer>("queue_sise = 9").unwrap_err();
        assert!(err.to_string().contains("queue_sise"), "{err}");
    }

    #[test]
    fn device_and_precision_come_from_the_file_and_are_checked() {
        let file: ConfigLayer =
            toml::from_str("device = \"cuda:0,1\"\nprecision = \"bf16\"").unwrap();
        let s = Settings::from_layers(ConfigLayer::default(), file.clone()).unwrap();
        assert_eq!(s.device.to_string(), "cuda:0,1");
        assert_eq!(s.precision, Some(Precision::Bf16));
        let flags = ConfigLayer {
            device: Some(DeviceSpec::Cpu),
            precision: Some(Precision::Exact),
            ..ConfigLayer::default()
        };
        let s = Settings::from_layers(flags, file).unwrap();
        assert_eq!(
            (s.device, s.precision),
            (DeviceSpec::Cpu, Some(Precision::Exact))
        );
        let d = Settings::from_layers(ConfigLayer::default(), ConfigLayer::default()).unwrap();
        assert_eq!((d.device, d.precision), (DeviceSpec::Auto, None));

        let err = toml::from_str::<ConfigLayer>("precision = \"fp8\"").unwrap_err();
        assert!(err.to_string().contains("unknown precision 'fp8'"), "{err}");
        let err = toml::from_str::<ConfigLayer>("device = \"tpu\"").unwrap_err();
        assert!(err.to_string().contains("unknown device 'tpu'"), "{err}");
    }

    #[test]
    fn access_settings_come_from_flags_or_the_file() {
        let d = Settings::from_layers(ConfigLayer::default(), ConfigLayer::default()).unwrap();
        assert!(d.admin_token.is_none() && d.api_keys.is_none());
        assert_eq!(d.api_key_max_in_flight, 4);

        let file: ConfigLayer = toml::from_str(
            "admin_token = \"from-file\"\napi_keys = \"/etc/superres/keys\"\napi_key_max_in_flight = 2",
        )
        .unwrap();
        let s = Settings::from_layers(ConfigLayer::default(), file.clone()).unwrap();
        assert!(s.admin_token.as_ref().unwrap().matches("from-file"));
        assert_eq!(s.api_keys.as_deref(), Some(Path::new("/etc/superres/keys")));
        assert_eq!(s.api_key_max_in_flight, 2);
        assert!(
            !format!("{file:?}{s:?}").contains("from-file"),
            "the token never shows in Debug output"
        );

        let flags = ConfigLayer {
            admin_token: Some(Secret("from-flag".into())),
            api_key_max_in_flight: Some(7),
            ..ConfigLayer::default()
        };
        let s = Settings::from_layers(flags, file.clone()).unwrap();
        assert!(s.admin_token.as_ref().unwrap().matches("from-flag"));
        assert_eq!(s.api_key_max_in_flight, 7);

        // A token file given by a flag replaces the file's token; its first line, trimmed.
        let dir = std::env::temp_dir().join(format!("superres-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin-token");
        std::fs::write(&path, "  tok-from-file  \nsecond line\n").unwrap();
        let flags = ConfigLayer {
            admin_token_file: Some(path.clone()),
            ..ConfigLayer::default()
        };
        let s = Settings::from_layers(flags, file).unwrap();
        assert!(s.admin_token.as_ref().unwrap().matches("tok-from-file"));

        std::fs::write(&path, "\n").unwrap();
        let flags = ConfigLayer {
            admin_token_file: Some(path.clone()),
            ..ConfigLayer::default()
        };
        let err = Settings::from_layers(flags, ConfigLayer::default()).unwrap_err();
        assert!(err.to_string().contains("admin token is empty"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_access_settings_are_refused() {
        let both: ConfigLayer =
            toml::from_str("admin_token = \"t\"\nadmin_token_file = \"/t\"").unwrap();
        let err = Settings::from_layers(ConfigLayer::default(), both).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let missing = ConfigLayer {
            admin_token_file: Some("/nonexistent/superres-token".into()),
            ..ConfigLayer::default()
        };
        let err = Settings::from_layers(missing, ConfigLayer::default()).unwrap_err();
        assert!(
            err.to_string().contains("cannot read the admin token file"),
            "{err}"
        );
        let zero = ConfigLayer {
            api_key_max_in_flight: Some(0),
            ..ConfigLayer::default()
        };
        let err = Settings::from_layers(zero, ConfigLayer::default()).unwrap_err();
        assert!(err.to_string().contains("api_key_max_in_flight"), "{err}");
        let blank = ConfigLayer {
            admin_token: Some(Secret("  ".into())),
            ..ConfigLayer::default()
        };
        assert!(Settings::from_layers(blank, ConfigLayer::default()).is_err());
    }

    #[test]
    fn zero_workers_is_refused() {
        let flags = ConfigLayer {
            workers: Some(0),
            ..ConfigLayer::default()
        };
        assert!(Settings::from_layers(flags, ConfigLayer::default()).is_err());
    }

    #[test]
    fn output_and_memory_limits_default_and_come_from_flags_or_the_file() {
        let d = Settings::from_layers(ConfigLayer::default(), ConfigLayer::default()).unwrap();
        assert_eq!(d.max_output_pixels, 200_000_000);
        assert_eq!(d.max_request_memory_bytes, 4096 << 20);

        let file: ConfigLayer =
            toml::from_str("max_output_pixels = 1000\nmax_request_memory_mb = 64").unwrap();
        let s = Settings::from_layers(ConfigLayer::default(), file.clone()).unwrap();
        assert_eq!(s.max_output_pixels, 1000);
        assert_eq!(s.max_request_memory_bytes, 64 << 20);

        let flags = ConfigLayer {
            max_output_pixels: Some(5),
            max_request_memory_mb: Some(1),
            ..ConfigLayer::default()
        };
        let s = Settings::from_layers(flags, file).unwrap();
        assert_eq!(
            (s.max_output_pixels, s.max_request_memory_bytes),
            (5, 1 << 20)
        );
    }

    #[test]
    fn tile_mode_comes_from_the_layers_and_defaults_to_auto() {
        let none = ConfigLayer::default;
        let d = Settings::from_layers(none(), none()).unwrap();
        assert_eq!(d.tile_mode, TileMode::Auto);
        let file: ConfigLayer = toml::from_str("tile_mode = \"exact\"").unwrap();
        let s = Settings::from_layers(none(), file.clone()).unwrap();
        assert_eq!(s.tile_mode, TileMode::Exact);
        let flags = ConfigLayer {
            tile_mode: Some(TileMode::Blend),
            ..none()
        };
        assert_eq!(
            Settings::from_layers(flags, file).unwrap().tile_mode,
            TileMode::Blend
        );
        assert!(toml::from_str::<ConfigLayer>("tile_mode = \"seamless\"").is_err());
    }

    #[test]
    fn zero_output_or_memory_limits_are_refused() {
        for flags in [
            ConfigLayer {
                max_output_pixels: Some(0),
                ..ConfigLayer::default()
            },
            ConfigLayer {
                max_request_memory_mb: Some(0),
                ..ConfigLayer::default()
            },
        ] {
            let err = Settings::from_layers(flags, ConfigLayer::default()).unwrap_err();
            assert!(err.to_string().contains("must be positive"), "{err}");
        }
    }

    /// A layer that names every setting, each with a value no default has.
    fn full() -> ConfigLayer {
        toml::from_str(
            "bind = \"0.0.0.0:1\"\nmodels = \"/m\"\nmodel = \"x\"\ndevice = \"cpu\"\n\
             precision = \"exact\"\nqueue_size = 7\nworkers = 3\nmax_pixels = 11\n\
             max_output_pixels = 12\nmax_request_memory_mb = 13\nmax_body_mb = 14\n\
             max_video_mb = 23\nvideo_dir = \"/v\"\njob_timeout_secs = 15\nupload_timeout_secs = 16\nresult_ttl_secs = 17\n\
             result_store_mb = 18\ndrain_timeout_secs = 19\ntile = 20\n\
             memory_budget_mb = 21\ntile_mode = \"blend\"\nlog_format = \"json\"\nadmin_token = \"t\"\n\
             admin_token_file = \"/f\"\napi_keys = \"/k\"\napi_key_max_in_flight = 22\n\
             broker = \"redis://r\"\nrole = \"api\"\nblob_store = \"file:///b\"\n\
             visibility_timeout_secs = 24\nmax_attempts = 25",
        )
        .unwrap()
    }

    #[test]
    fn every_setting_is_taken_from_the_layer_that_names_it() {
        let shown = |c: ConfigLayer| format!("{c:?}");
        let empty = ConfigLayer::default;
        assert_eq!(shown(empty().over(full())), shown(full()));
        assert_eq!(shown(full().over(empty())), shown(full()));
        assert_eq!(shown(empty().over(empty())), shown(empty()));
    }

    #[test]
    fn a_token_file_above_replaces_a_token_below() {
        let below = ConfigLayer {
            admin_token_file: None,
            ..full()
        };
        let above = ConfigLayer {
            admin_token_file: Some("/t".into()),
            ..ConfigLayer::default()
        };
        let c = above.over(below);
        assert!(c.admin_token.is_none());
        assert_eq!(c.admin_token_file.as_deref(), Some(Path::new("/t")));
        assert_eq!(c.queue_size, Some(7));
    }
}
