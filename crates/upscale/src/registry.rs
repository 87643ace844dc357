//! Finding models by name: the built-in ones and a models folder.
//!
//! The folder layout (see the README): `NAME.pb` / `NAME.onnx` files, or versioned folders
//! `NAME/<version>/model.{pb,onnx}` with a `current` symlink naming the active version.
//! A model argument is either a registry name or a path to a model file.

use std::fmt;
use std::path::{Path, PathBuf};

use superres_engine::Backend;
use superres_import::{ImportedModel, Overrides};

use crate::{Model, UpscaleError};

/// Models compiled into the binary: `(name, ONNX bytes)`, our own Y-channel networks from
/// one training pipeline (`models/MODEL_CARD.md`): `default` (×3, Set5 PSNR-Y 31.06 dB),
/// `default_x2` and `default_x4`, so a fresh install upscales offline at every common scale
/// with no model argument.
pub const BUILTIN: &[(&str, &[u8])] = &[
    ("default", include_bytes!("../../../models/default_x3.onnx")),
    (
        "default_x2",
        include_bytes!("../../../models/default_x2.onnx"),
    ),
    (
        "default_x4",
        include_bytes!("../../../models/default_x4.onnx"),
    ),
];

/// The built-in model of each scale, for `--scale N` without `--model`.
pub const BUILTIN_SCALES: &[(usize, &str)] =
    &[(2, "default_x2"), (3, "default"), (4, "default_x4")];

/// The built-in model of `scale`.
pub fn builtin_for_scale(scale: usize) -> Result<&'static str, RegistryError> {
    BUILTIN_SCALES
        .iter()
        .find(|(s, _)| *s == scale)
        .map(|(_, n)| *n)
        .ok_or_else(|| RegistryError::NoBuiltinScale {
            scale,
            known: BUILTIN_SCALES
                .iter()
                .map(|(s, n)| format!("×{s} ({n})"))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The bytes of the built-in model `key`.
fn builtin_bytes(key: &str) -> Result<&'static [u8], RegistryError> {
    BUILTIN
        .iter()
        .find(|(n, _)| *n == key)
        .map(|(_, b)| *b)
        .ok_or_else(|| RegistryError::NotFound {
            name: key.to_string(),
            dir: None,
            known: BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The name of the model used when none is given.
pub const DEFAULT_MODEL: &str = "default";

/// Where a model's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    Builtin(&'static str),
    File(PathBuf),
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Builtin(_) => write!(f, "builtin"),
            ModelSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A model found by [`discover`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub source: ModelSource,
}

/// Why a model could not be found.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "no model named '{name}'{}; pass a path to a .pb or .onnx file, or one of: {known}",
        dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default()
    )]
    NotFound {
        name: String,
        dir: Option<PathBuf>,
        known: String,
    },
    #[error(
        "no built-in model has scale {scale}; the built-in ones are {known}: pass --model for another"
    )]
    NoBuiltinScale { scale: usize, known: String },
    #[error("cannot read the models folder {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ModelSource {
    /// Reads the model into the IR, without preparing it for a backend (for `models list`
    /// and `inspect`).
    pub fn import(&self, overrides: Overrides) -> Result<ImportedModel, UpscaleError> {
        match self {
            ModelSource::Builtin(key) => Ok(superres_import::load_bytes(
                builtin_bytes(key)?,
                &format!("builtin:{key}"),
                overrides,
            )?),
            ModelSource::File(path) => Ok(superres_import::load(path, overrides)?),
        }
    }

    /// Reads and prepares the model on `backend`, named `name`.
    pub fn load(
        &self,
        name: &str,
        backend: &dyn Backend,
        overrides: Overrides,
    ) -> Result<Model, UpscaleError> {
        match self {
            ModelSource::Builtin(key) => {
                let bytes = builtin_bytes(key)?;
                let imported =
                    superres_import::load_bytes(bytes, &format!("builtin:{key}"), overrides)?;
                Model::prepare(name, "builtin", imported, backend)
            }
            ModelSource::File(path) => {
                let imported = superres_import::load(path, overrides)?;
                Model::prepare(name, &path.display().to_string(), imported, backend)
            }
        }
    }
}

/// The model file of a versioned folder `NAME/`:
/// `current/model.{pb,onnx,pth,safetensors,param}` (an ncnn `model.param` with `model.bin`).
fn versioned_file(dir: &Path) -> Option<PathBuf> {
    [
        "model.pb",
        "model.onnx",
        "model.pth",
        "model.safetensors",
        "model.param",
    ]
    .iter()
    .map(|f| dir.join("current").join(f))
    .find(|p| p.is_file())
}

fn is_model_file(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("pb" | "onnx" | "pth" | "safetensors" | "param")
    )
}

/// Every model available by name: the built-in ones, then the folder's, sorted by name. A
/// folder model with a built-in's name replaces it.
pub fn discover(dir: Option<&Path>) -> Result<Vec<Entry>, RegistryError> {
    let mut found: Vec<Entry> = BUILTIN
        .iter()
        .map(|(n, _)| Entry {
            name: n.to_string(),
            source: ModelSource::Builtin(n),
        })
        .collect();
    if let Some(dir) = dir {
        let rd = std::fs::read_dir(dir).map_err(|source| RegistryError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
        for entry in rd.flatten() {
            let path = entry.path();
            let Some(stem) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let file = if path.is_dir() {
                versioned_file(&path)
            } else if is_model_file(&path) {
                Some(path.clone())
            } else {
                None
            };
            if let Some(file) = file {
                let name = if path.is_dir() {
                    path.file_name()
                        .map_or(stem.clone(), |n| n.to_string_lossy().into_owned())
                } else {
                    stem
                };
                found.retain(|e| e.name != name);
                found.push(Entry {
                    name,
                    source: ModelSource::File(file),
                });
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// Resolves a model argument: an existing file path, or a name in the registry.
pub fn resolve(spec: &str, dir: Option<&Path>) -> Result<Entry, RegistryError> {
    let path = Path::new(spec);
    if path.is_file() {
        let name = path
            .file_stem()
            .map_or_else(|| spec.to_string(), |s| s.to_string_lossy().into_owned());
        return Ok(Entry {
            name,
            source: ModelSource::File(path.to_path_buf()),
        });
    }
    let all = discover(dir)?;
    if let Some(e) = all.iter().find(|e| e.name == spec) {
        return Ok(e.clone());
    }
    let known = if all.is_empty() {
        "(none)".to_string()
    } else {
        all.iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(RegistryError::NotFound {
        name: spec.to_string(),
        dir: dir.map(Path::to_path_buf),
        known,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovers_plain_and_versioned_models() {
        let dir = std::env::temp_dir().join(format!("superres-registry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("edsr/2")).unwrap();
        std::fs::write(dir.join("espcn.pb"), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        std::fs::write(dir.join("edsr/2/model.pb"), b"x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("2", dir.join("edsr/current")).unwrap();
        let names: Vec<String> = discover(Some(&dir))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.contains(&"espcn".to_string()), "{names:?}");
        assert!(!names.contains(&"notes".to_string()), "{names:?}");
        #[cfg(unix)]
        {
            assert!(names.contains(&"edsr".to_string()), "{names:?}");
            let e = resolve("edsr", Some(&dir)).unwrap();
            assert_eq!(
                e.source,
                ModelSource::File(dir.join("edsr/current/model.pb"))
            );
        }
        let err = resolve("nope", Some(&dir)).unwrap_err().to_string();
        assert!(
            err.contains("no model named 'nope'") && err.contains("espcn"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
