//! Starting and stopping the service.
//!
//! Where it sits: the service's life cycle. [`Server::bind`] opens the listening socket,
//! starts the workers and begins loading the models in the background (so `/healthz`
//! answers at once and `/readyz` says 503 until the models are in); [`Server::run`] serves
//! until [`ServerHandle::shutdown`] (or a signal, see [`ServerHandle::watch_signals`]), then
//! drains: no new connections or jobs, every accepted job finishes within the drain timeout,
//! and the function returns a [`ShutdownReport`].
//!
//! A server that listens beyond the loopback interface with neither an admin token nor API
//! keys logs a warning as it starts: anyone who can reach it may use it.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use superres_imaging::{EncodeOptions, Limits};
use superres_upscale::Options;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Access, KeyFile};
use crate::broker::worker::ClusterWorkers;
use crate::broker::{Broker, BrokerError, RedisBackend};
use crate::config::Settings;
use crate::http::{FullReload, reload_all, router};
use crate::jobs::JobBackend;
use crate::media::VideoUploads;
use crate::models::{ModelRegistry, ModelSetup};
use crate::queue::{JobQueue, LocalBackend, QueueConfig, RequestLimits};
use crate::state::{AppState, HttpLimits};
use crate::telemetry;
use crate::worker::{Pipeline, Upscaler, WorkerPool};

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {bind}: {source}")]
    Bind {
        bind: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Keys(String),
    #[error("cannot make the folder for video uploads: {0}")]
    Videos(#[source] std::io::Error),
    #[error("{0}")]
    Broker(#[from] BrokerError),
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] std::io::Error),
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// How a shutdown went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs that ended while the server was draining.
    pub finished_while_draining: u64,
    /// Jobs still queued or running when the drain timeout passed (cancelled).
    pub abandoned: usize,
    pub drain_time: Duration,
}

/// This node's part in a cluster.
struct Cluster {
    broker: Arc<Broker>,
    /// Present on worker nodes (`--role worker` or `all`).
    workers: Option<ClusterWorkers>,
}

/// A bound, not yet serving, server.
pub struct Server {
    listener: TcpListener,
    settings: Settings,
    state: AppState,
    /// This process's queue: the jobs' home without a broker, drained at shutdown.
    queue: Arc<JobQueue>,
    cluster: Option<Cluster>,
    workers: WorkerPool,
    shutdown: watch::Sender<bool>,
}

/// Controls a running server from elsewhere: shut it down, reload its models.
#[derive(Clone)]
pub struct ServerHandle {
    shutdown: watch::Sender<bool>,
    models: Arc<ModelRegistry>,
    access: Arc<Access>,
    addr: SocketAddr,
}

impl ServerHandle {
    /// Begins a graceful shutdown: [`Server::run`] drains and returns.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Reloads the models and the API key file, as `POST /v1/models/reload` and SIGHUP do.
    pub async fn reload(&self) -> Result<FullReload, String> {
        let models = Arc::clone(&self.models);
        let access = Arc::clone(&self.access);
        tokio::task::spawn_blocking(move || reload_all(&models, &access))
            .await
            .map_err(|e| format!("the reload did not finish: {e}"))?
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down on SIGTERM or SIGINT (Ctrl-C) and reloads the models and the API key file
    /// on SIGHUP.
    pub fn watch_signals(&self) {
        let handle = self.clone();
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            tracing::info!("shutdown requested: draining");
            handle.shutdown();
        });
        #[cfg(unix)]
        {
            let handle = self.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hangups) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP: reload with POST /v1/models/reload");
                    return;
                };
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading models");
                    match handle.reload().await {
                        Ok(r) => tracing::info!(
                            models = r.models.models.len(),
                            errors = r.models.errors.len(),
                            keys = r.keys,
                            "models reloaded"
                        ),
                        Err(e) => tracing::error!("reload failed, keeping the current models: {e}"),
                    }
                }
            });
        }
    }
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl Server {
    /// Binds `settings.bind` with the real pipeline. See [`Server::bind_with`].
    pub async fn bind(settings: Settings, models: ModelSetup) -> Result<Server, ServerError> {
        Self::bind_with(settings, models, Arc::new(Pipeline)).await
    }

    /// Binds the listening socket, starts the workers running `upscaler`, and starts loading
    /// the models: at once when they are already loaded, in the background otherwise.
    pub async fn bind_with(
        settings: Settings,
        models: ModelSetup,
        upscaler: Arc<dyn Upscaler>,
    ) -> Result<Server, ServerError> {
        let keys = settings
            .api_keys
            .as_deref()
            .map(|path| KeyFile::open(path, settings.api_key_max_in_flight))
            .transpose()
            .map_err(ServerError::Keys)?;
        if let Some(keys) = &keys {
            tracing::info!(
                keys = keys.current().len(),
                file = %keys.path().display(),
                "API keys required for submissions and jobs"
            );
        }
        let access = Arc::new(Access {
            admin: settings.admin_token.clone(),
            keys,
        });
        let listener =
            TcpListener::bind(&settings.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    bind: settings.bind.clone(),
                    source,
                })?;
        let queue = Arc::new(JobQueue::new(QueueConfig {
            queue_size: settings.queue_size,
            workers: settings.workers.max(1),
            job_timeout: settings.job_timeout,
            result_ttl: settings.result_ttl,
            result_store_bytes: settings.result_store_bytes,
            limits: Limits {
                max_pixels: settings.max_pixels,
                ..Limits::default()
            },
            request_limits: RequestLimits {
                max_output_pixels: settings.max_output_pixels,
                max_memory_bytes: settings.max_request_memory_bytes,
            },
            options: Options {
                tile: settings.tile,
                memory_budget: settings.memory_budget_bytes,
                tile_mode: settings.tile_mode,
            },
            encode: EncodeOptions::default(),
            clock: settings.clock.clone(),
        }));
        // In a cluster the workers read the shared streams instead (below); the local queue
        // stays empty.
        let local_workers = if settings.broker.is_some() {
            0
        } else {
            settings.workers.max(1)
        };
        let workers = WorkerPool::start(Arc::clone(&queue), Arc::clone(&upscaler), local_workers)
            .map_err(ServerError::Workers)?;
        let preloaded = matches!(models, ModelSetup::Loaded { .. });
        let registry = Arc::new(ModelRegistry::new(models));
        if preloaded {
            if let Err(e) = registry.reload() {
                tracing::error!("{e}");
            }
        } else {
            let registry = Arc::clone(&registry);
            tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                match registry.reload() {
                    Ok(r) => {
                        for e in &r.errors {
                            tracing::warn!("{e}");
                        }
                        tracing::info!(
                            models = r.models.len(),
                            secs = started.elapsed().as_secs_f64(),
                            "models loaded: ready"
                        );
                    }
                    Err(e) => tracing::error!(
                        "models could not be loaded, /readyz stays 503 until a reload succeeds: {e}"
                    ),
                }
            });
        }
        let videos = (settings.max_video_bytes > 0)
            .then(|| VideoUploads::new(settings.video_dir.as_deref(), settings.max_video_bytes))
            .transpose()
            .map_err(ServerError::Videos)?
            .map(Arc::new);
        let (jobs, cluster): (Arc<dyn JobBackend>, Option<Cluster>) = match &settings.broker {
            None => (Arc::new(LocalBackend::new(Arc::clone(&queue))), None),
            Some(b) => {
                let broker = Arc::new(
                    Broker::new(b.clone(), queue.config().clone()).map_err(ServerError::Broker)?,
                );
                let workers = b.role.runs_jobs().then(|| {
                    ClusterWorkers::start(
                        Arc::clone(&broker),
                        Arc::clone(&registry),
                        Arc::clone(&upscaler),
                        settings.workers.max(1),
                    )
                });
                tracing::info!(
                    role = b.role.as_str(),
                    node = %b.node,
                    broker = %crate::broker::redacted(&b.url),
                    "cluster node"
                );
                let backend = Arc::new(RedisBackend::new(Arc::clone(&broker)));
                (backend, Some(Cluster { broker, workers }))
            }
        };
        let state = AppState {
            jobs,
            models: registry,
            metrics: telemetry::prometheus(),
            http: HttpLimits {
                max_body_bytes: settings.max_body_bytes,
                max_video_bytes: settings.max_video_bytes,
                upload_timeout: settings.upload_timeout,
            },
            access,
            videos,
            takes_requests: settings
                .broker
                .as_ref()
                .is_none_or(|b| b.role.takes_requests()),
        };
        if let Some(b) = &settings.broker {
            // After the recorder is installed (with the state's metrics handle).
            metrics::gauge!("superres_node_info", "role" => b.role.as_str()).set(1.0);
        }
        let (shutdown, _) = watch::channel(false);
        Ok(Server {
            listener,
            settings,
            state,
            queue,
            cluster,
            workers,
            shutdown,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shutdown: self.shutdown.clone(),
            models: Arc::clone(&self.state.models),
            access: Arc::clone(&self.state.access),
            addr: self
                .listener
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }

    /// Serves until a shutdown is requested, then drains and returns.
    pub async fn run(self) -> Result<ShutdownReport, ServerError> {
        let Server {
            listener,
            settings,
            state,
            queue,
            cluster,
            workers,
            shutdown,
        } = self;
        let warning = listener
            .local_addr()
            .ok()
            .and_then(|addr| exposure_warning(addr, &state.access));
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        let app = router(state);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "listening");
        }
        let mut requested = shutdown.subscribe();
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<u64>();
        let draining_queue = Arc::clone(&queue);
        let draining_broker = cluster.as_ref().map(|c| Arc::clone(&c.broker));
        let graceful = async move {
            let _ = requested.wait_for(|stop| *stop).await;
            draining_queue.begin_drain();
            if let Some(broker) = draining_broker {
                broker.begin_drain();
            }
            let _ = drain_tx.send(draining_queue.finished_count());
        };
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(graceful)
            .into_future();
        tokio::pin!(serve);

        // With no connection open, the serve future can end as soon as the shutdown begins.
        let mut served = false;
        let finished_before = tokio::select! {
            result = &mut serve => {
                result.map_err(ServerError::Serve)?;
                served = true;
                queue.begin_drain();
                queue.finished_count()
            }
            finished = drain_rx => finished.unwrap_or_else(|_| queue.finished_count()),
        };
        let started = Instant::now();
        // A cluster worker stops at once: its running jobs go back to the queue for another.
        if let Some(workers) = cluster.and_then(|c| c.workers) {
            workers.stop().await;
        }
        let drain = settings.drain_timeout;
        let drained = tokio::time::timeout(drain, queue.wait_idle()).await.is_ok();
        let abandoned = if drained {
            0
        } else {
            let n = queue.abandon_all();
            tracing::warn!(
                jobs = n,
                "drain timeout of {} s passed: cancelling what is left",
                drain.as_secs()
            );
            n
        };
        // Let the connections deliver their last responses (results of the drained jobs).
        let left = drain
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(1));
        if !served && tokio::time::timeout(left, &mut serve).await.is_err() {
            tracing::warn!("connections still open after the drain: closing them");
        }
        let report = ShutdownReport {
            finished_while_draining: queue.finished_count().saturating_sub(finished_before),
            abandoned,
            drain_time: started.elapsed(),
        };
        if drained {
            // Idle workers return at once; joining them is quick.
            let _ = tokio::task::spawn_blocking(move || workers.join()).await;
        }
        tracing::info!(
            finished = report.finished_while_draining,
            abandoned = report.abandoned,
            "stopped"
        );
        Ok(report)
    }
}

/// The warning for a server anyone on the network may use: listening on `addr`, which is
/// not a loopback address, with neither an admin token nor API keys.
pub fn exposure_warning(addr: SocketAddr, access: &Access) -> Option<String> {
    (!addr.ip().is_loopback() && access.is_open()).then(|| {
        format!(
            "listening on {addr}, beyond this machine, with no access control: anyone who can \
             reach it may upscale images and see any job; set --api-keys FILE (and \
             --admin-token for the admin endpoints), or bind 127.0.0.1"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AdminToken;

    #[test]
    fn only_an_open_server_beyond_loopback_is_warned_about() {
        let open = Access::default();
        let guarded = Access {
            admin: Some(AdminToken::new("t").unwrap()),
            keys: None,
        };
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let lan: SocketAddr = "192.168.1.5:8080".parse().unwrap();
        for local in ["127.0.0.1:8080", "[::1]:8080"] {
            assert_eq!(exposure_warning(local.parse().unwrap(), &open), None);
        }
        let w = exposure_warning(any, &open).unwrap();
        assert!(
            w.contains("0.0.0.0:8080") && w.contains("--api-keys"),
            "{w}"
        );
        assert!(exposure_warning(lan, &open).is_some());
        assert_eq!(exposure_warning(any, &guarded), None);
    }
}
