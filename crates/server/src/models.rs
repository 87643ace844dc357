//! The loaded models, swapped atomically on reload.
//!
//! Where it sits: beside the job queue. A request names a model (or takes the default); the
//! handler resolves it here to a [`Model`] — a cheap `Arc` clone — and the job carries that
//! clone to the worker. A reload builds a whole new [`Catalog`] off to the side and swaps it
//! in with one atomic store, so a job accepted before the swap finishes on the model it was
//! accepted with and a job accepted after it sees only the new set: none fails because of a
//! reload. Files whose resolved path, size and modification time did not change are not
//! loaded again, so a reload after flipping one `current` symlink only pays for that model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;
use superres_import::Overrides;
use superres_upscale::registry::{self, DEFAULT_MODEL, ModelSource};
use superres_upscale::{Backend, Model, Precision, UpscaleError};

use crate::error::ApiError;

/// Where the models come from.
pub enum ModelSetup {
    /// Models already prepared by the caller on `backend` (tests, embedding); a reload keeps
    /// them. The backend is what `/v1/devices` and the device metrics report.
    Loaded {
        models: Vec<Model>,
        default: Option<String>,
        backend: Arc<dyn Backend>,
    },
    /// Models read from disk: every model of `dir` (see DESIGN.md) plus `model` when it is a
    /// file path; `model` (a name or a path) is also the default.
    Disk {
        dir: Option<PathBuf>,
        model: Option<String>,
        backend: Arc<dyn Backend>,
    },
}

/// Identifies the bytes a model was loaded from, to skip unchanged files on reload.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileKey {
    resolved: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

impl FileKey {
    fn of(path: &Path) -> Option<FileKey> {
        let resolved = std::fs::canonicalize(path).ok()?;
        let meta = std::fs::metadata(&resolved).ok()?;
        Some(FileKey {
            resolved,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

#[derive(Clone)]
struct Loaded {
    model: Model,
    key: Option<FileKey>,
}

/// One consistent set of models and the default among them.
pub struct Catalog {
    models: BTreeMap<String, Loaded>,
    default: Option<String>,
}

/// A model as `GET /v1/models` lists it.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ModelView {
    pub name: String,
    pub family: &'static str,
    pub scale: usize,
    pub source: String,
    /// The backend it runs on, e.g. `cpu (avx512, 2 threads)`.
    pub device: String,
    /// `exact`, `tf32`, `fp16` or `bf16`.
    pub precision: &'static str,
    pub default: bool,
}

/// What a reload did.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    pub models: Vec<ModelView>,
    /// Models that could not be loaded; where an older version existed it was kept.
    pub errors: Vec<String>,
}

/// The current [`Catalog`], or none while the first load runs.
pub struct ModelRegistry {
    setup: ModelSetup,
    catalog: ArcSwapOption<Catalog>,
    /// Why the last load failed, reported by `/readyz` while there is no catalog.
    last_error: Mutex<Option<String>>,
    /// One reload at a time; requests never wait on it.
    reloading: Mutex<()>,
    /// How many catalogs have been put in place: a cluster worker announces its models
    /// again on each change, and is not ready before it has announced the current one.
    generation: tokio::sync::watch::Sender<u64>,
}

impl ModelSetup {
    /// The backend the models run on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        match self {
            ModelSetup::Loaded { backend, .. } | ModelSetup::Disk { backend, .. } => backend,
        }
    }
}

impl ModelRegistry {
    pub fn new(setup: ModelSetup) -> ModelRegistry {
        ModelRegistry {
            setup,
            catalog: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            reloading: Mutex::new(()),
            generation: tokio::sync::watch::Sender::new(0),
        }
    }

    /// How many catalogs have been put in place (0 before the first).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Tells of each new catalog.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The backend every model of this registry runs on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        self.setup.backend()
    }

    /// Whether a catalog is in place (the service is ready).
    pub fn is_ready(&self) -> bool {
        self.catalog.load().is_some()
    }

    /// Why the service is not ready.
    pub fn not_ready_reason(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .map_or_else(
                || "models are still loading".to_string(),
                |e| format!("models could not be loaded: {e}"),
            )
    }

    /// The model a request asked for, or the default when it named none.
    pub fn resolve(&self, name: Option<&str>) -> Result<Model, ApiError> {
        let guard = self.catalog.load();
        let Some(catalog) = guard.as_ref() else {
            return Err(ApiError::not_ready(self.not_ready_reason()));
        };
        let known = || {
            catalog
                .models
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        let name = match name.map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => n,
            None => catalog.default.as_deref().ok_or_else(|| {
                ApiError::unknown_model(format!(
                    "no default model is configured: choose one of {} with the 'model' field",
                    known()
                ))
            })?,
        };
        catalog
            .models
            .get(name)
            .map(|l| l.model.clone())
            .ok_or_else(|| {
                ApiError::unknown_model(format!(
                    "no model named '{name}': choose one of {}",
                    known()
                ))
            })
    }

    /// The names of the loaded models (none while they load).
    pub fn names(&self) -> Vec<String> {
        self.catalog
            .load()
            .as_ref()
            .map(|c| c.models.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The loaded models, sorted by name.
    pub fn list(&self) -> Vec<ModelView> {
        self.catalog
            .load()
            .as_ref()
            .map(|c| views(c, self.backend().precision()))
            .unwrap_or_default()
    }

    /// (Re)loads every model and swaps the new set in. Blocking: run it off the async
    /// runtime. On failure the current catalog stays in place.
    pub fn reload(&self) -> Result<ReloadReport, String> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = match &self.setup {
            ModelSetup::Loaded {
                models, default, ..
            } => Ok((
                Catalog {
                    models: models
                        .iter()
                        .map(|m| {
                            (
                                m.name().to_string(),
                                Loaded {
                                    model: m.clone(),
                                    key: None,
                                },
                            )
                        })
                        .collect(),
                    default: default.clone().or_else(|| single_name(models)),
                },
                Vec::new(),
            )),
            ModelSetup::Disk {
                dir,
                model,
                backend,
            } => self.load_disk(dir.as_deref(), model.as_deref(), backend.as_ref()),
        };
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok((catalog, errors)) => {
                let report = ReloadReport {
                    models: views(&catalog, self.backend().precision()),
                    errors,
                };
                metrics::gauge!("superres_models_loaded").set(catalog.models.len() as f64);
                self.catalog.store(Some(Arc::new(catalog)));
                self.generation.send_modify(|g| *g += 1);
                *last_error = None;
                Ok(report)
            }
            Err(e) => {
                *last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn load_disk(
        &self,
        dir: Option<&Path>,
        model: Option<&str>,
        backend: &dyn Backend,
    ) -> Result<(Catalog, Vec<String>), String> {
        let mut entries = registry::discover(dir).map_err(|e| e.to_string())?;
        let mut default = None;
        if let Some(spec) = model {
            let entry = registry::resolve(spec, dir).map_err(|e| e.to_string())?;
            default = Some(entry.name.clone());
            if !entries.contains(&entry) {
                entries.retain(|e| e.name != entry.name);
                entries.push(entry);
            }
        }
        let old = self.catalog.load_full();
        let mut models = BTreeMap::new();
        let mut errors = Vec::new();
        for entry in entries {
            let key = match &entry.source {
                ModelSource::File(p) => FileKey::of(p),
                ModelSource::Builtin(_) => None,
            };
            let previous = old.as_ref().and_then(|c| c.models.get(&entry.name));
            if let Some(prev) = previous.filter(|p| p.key == key) {
                models.insert(entry.name, prev.clone());
                continue;
            }
            match load_one(&entry.name, &entry.source, key.as_ref(), backend) {
                Ok(model) => {
                    tracing::info!(model = %entry.name, source = %model.info().source, "model loaded");
                    models.insert(entry.name, Loaded { model, key });
                }
                Err(e) => {
                    let message = format!("model '{}': {e}", entry.name);
                    tracing::error!("{message}");
                    errors.push(message);
                    if let Some(prev) = previous {
                        models.insert(entry.name, prev.clone());
                    }
                }
            }
        }
        if models.is_empty() {
            return Err(if errors.is_empty() {
                match dir {
                    Some(d) => format!(
                        "no models in {} (expected NAME.pb, NAME.onnx, NAME.pth, NAME.safetensors, NAME.param with NAME.bin, or NAME/current/model.{{pb,onnx,pth,safetensors,param}}); pass --model PATH",
                        d.display()
                    ),
                    None => "no models: pass --models DIR or --model PATH".to_string(),
                }
            } else {
                errors.join("; ")
            });
        }
        let default = default.or_else(|| {
            if models.contains_key(DEFAULT_MODEL) {
                Some(DEFAULT_MODEL.to_string())
            } else if models.len() == 1 {
                models.keys().next().cloned()
            } else {
                None
            }
        });
        if let Some(d) = &default
            && !models.contains_key(d)
        {
            return Err(errors.join("; "));
        }
        Ok((Catalog { models, default }, errors))
    }
}

fn load_one(
    name: &str,
    source: &ModelSource,
    key: Option<&FileKey>,
    backend: &dyn Backend,
) -> Result<Model, UpscaleError> {
    let started = Instant::now();
    // The resolved path shows which version a `current` symlink pointed at when loaded.
    let source = match (source, key) {
        (ModelSource::File(_), Some(k)) => ModelSource::File(k.resolved.clone()),
        (s, _) => s.clone(),
    };
    let model = source.load(name, backend, Overrides::default())?;
    metrics::histogram!("superres_model_load_seconds", "model" => name.to_string())
        .record(started.elapsed().as_secs_f64());
    Ok(model)
}

fn single_name(models: &[Model]) -> Option<String> {
    match models {
        [only] => Some(only.name().to_string()),
        _ => None,
    }
}

fn views(catalog: &Catalog, precision: Precision) -> Vec<ModelView> {
    catalog
        .models
        .iter()
        .map(|(name, l)| {
            let info = l.model.info();
            ModelView {
                name: name.clone(),
                family: info.family.as_str(),
                scale: info.scale,
                source: info.source.clone(),
                device: info.device.clone(),
                precision: precision.name(),
                default: catalog.default.as_deref() == Some(name.as_str()),
            }
        })
        .collect()
}
