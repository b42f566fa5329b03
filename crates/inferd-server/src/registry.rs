//! The models a server knows: where they come from, their versions, and
//! whether each is loading, ready or failed.
//!
//! Finding model files ([`plan`]) is quick and happens before the server
//! listens, so a typo in a path fails the start at once. Loading (compiling
//! the model) may be slow and happens after, while the server already answers
//! health checks: a model is `Loading` (503) until it is `Ready`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use inferd_runtime::{LoadOptions, Model, ModelFormat, Scheduler};

use crate::metrics::{Metrics, ModelMetrics};
use crate::model_config;

/// Where to find models, as the command line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// `--model NAME=PATH`: a model file, or a folder holding one (optionally
    /// in numbered version sub-folders).
    Named { name: String, path: PathBuf },
    /// `--model-repository DIR`: each sub-folder is a model named after it.
    Repository(PathBuf),
}

impl ModelSource {
    /// Parses `NAME=PATH`.
    pub fn parse_named(arg: &str) -> Result<ModelSource, RegistryError> {
        let (name, path) = arg
            .split_once('=')
            .ok_or_else(|| RegistryError::Argument(format!("'{arg}' is not NAME=PATH")))?;
        check_name(name)?;
        if path.is_empty() {
            return Err(RegistryError::Argument(format!(
                "'{arg}' has an empty PATH"
            )));
        }
        Ok(ModelSource::Named {
            name: name.to_owned(),
            path: PathBuf::from(path),
        })
    }
}

/// Errors finding or loading models.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Argument(String),
    #[error(
        "invalid model name '{0}': use 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit"
    )]
    InvalidName(String),
    #[error("model '{0}' is given more than once")]
    Duplicate(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    NoModelFile(String),
    #[error("model '{name}': {source}")]
    Config {
        name: String,
        #[source]
        source: Box<model_config::ConfigError>,
    },
    #[error("model '{name}' version {version} ({path}): {source}")]
    Load {
        name: String,
        version: String,
        path: PathBuf,
        #[source]
        source: Box<inferd_runtime::Error>,
    },
}

/// Model names travel in URLs and metric labels: keep them plain.
pub fn check_name(name: &str) -> Result<(), RegistryError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidName(name.to_owned()))
    }
}

/// One model version to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedVersion {
    pub version: u64,
    pub path: PathBuf,
    pub format: ModelFormat,
}

/// One model and the versions to load for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedModel {
    pub name: String,
    pub versions: Vec<PlannedVersion>,
    /// Its `config.json`, where it would be (it may not exist).
    pub config: Option<PathBuf>,
}

/// Finds every model file the sources name, without loading any.
///
/// `format` overrides the format read from file extensions.
pub fn plan(
    sources: &[ModelSource],
    format: Option<ModelFormat>,
) -> Result<Vec<PlannedModel>, RegistryError> {
    let mut planned: Vec<PlannedModel> = Vec::new();
    for source in sources {
        match source {
            ModelSource::Named { name, path } => {
                planned.push(plan_model(name, path, format)?);
            }
            ModelSource::Repository(dir) => {
                for entry in sorted_entries(dir)? {
                    let file_name = entry
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if file_name.starts_with('.') || !entry.is_dir() {
                        continue;
                    }
                    check_name(&file_name)?;
                    planned.push(plan_model(&file_name, &entry, format)?);
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for m in &planned {
        if !seen.insert(m.name.as_str()) {
            return Err(RegistryError::Duplicate(m.name.clone()));
        }
    }
    Ok(planned)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let io = |source| RegistryError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

/// A model path is a file, a folder with a model file, or a folder with
/// numbered version folders each holding a model file (Triton's layout).
fn plan_model(
    name: &str,
    path: &Path,
    format: Option<ModelFormat>,
) -> Result<PlannedModel, RegistryError> {
    let meta = std::fs::metadata(path).map_err(|source| RegistryError::Io {
        path: path.to_owned(),
        source,
    })?;
    let versions = if meta.is_file() {
        let format = format.or_else(|| ModelFormat::from_path(path)).ok_or_else(|| {
            RegistryError::NoModelFile(format!(
                "model '{name}': cannot tell the format of {} from its extension; pass --format",
                path.display()
            ))
        })?;
        vec![PlannedVersion {
            version: 1,
            path: path.to_owned(),
            format,
        }]
    } else {
        let numbered: Vec<(u64, PathBuf)> = sorted_entries(path)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| {
                let n = p.file_name()?.to_str()?;
                let all_digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
                let v = if all_digits {
                    n.parse().ok()?
                } else {
                    return None;
                };
                Some((v, p))
            })
            .collect();
        if numbered.is_empty() {
            let (file, format) = find_model_file(name, path, format)?;
            vec![PlannedVersion {
                version: 1,
                path: file,
                format,
            }]
        } else {
            let mut versions = numbered
                .into_iter()
                .map(|(version, dir)| {
                    let (file, format) = find_model_file(name, &dir, format)?;
                    Ok(PlannedVersion {
                        version,
                        path: file,
                        format,
                    })
                })
                .collect::<Result<Vec<_>, RegistryError>>()?;
            versions.sort_by_key(|v| v.version);
            versions
        }
    };
    let folder = if meta.is_file() {
        path.parent()
    } else {
        Some(path)
    };
    Ok(PlannedModel {
        name: name.to_owned(),
        versions,
        config: folder.map(|f| f.join(model_config::FILE_NAME)),
    })
}

/// The model file inside a folder: `model.<ext>` of a known format, or the
/// only file of a known format.
fn find_model_file(
    name: &str,
    dir: &Path,
    format: Option<ModelFormat>,
) -> Result<(PathBuf, ModelFormat), RegistryError> {
    let candidates: Vec<(PathBuf, ModelFormat)> = sorted_entries(dir)?
        .into_iter()
        .filter(|p| p.is_file())
        .filter(|p| p.file_name().and_then(|n| n.to_str()) != Some(model_config::FILE_NAME))
        .filter_map(|p| {
            let f = ModelFormat::from_path(&p)?;
            // `.json` and `.txt` name many files besides models (notes,
            // labels): inside a folder only `model.json` / `model.txt` count.
            let file_name = p.file_name().and_then(|n| n.to_str());
            let ambiguous = f != ModelFormat::Onnx && file_name != Some(f.default_file_name());
            (!ambiguous && (format.is_none() || format == Some(f))).then_some((p, f))
        })
        .collect();
    if let Some(preferred) = candidates
        .iter()
        .find(|(p, f)| p.file_name().and_then(|n| n.to_str()) == Some(f.default_file_name()))
    {
        return Ok(preferred.clone());
    }
    match candidates.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(RegistryError::NoModelFile(format!(
            "model '{name}': no model file (e.g. model.onnx) in {}",
            dir.display()
        ))),
        _ => Err(RegistryError::NoModelFile(format!(
            "model '{name}': several model files in {} and none is named model.<format>",
            dir.display()
        ))),
    }
}

/// A loaded model version, ready to serve.
pub struct ServedModel {
    pub name: String,
    pub version: String,
    pub model: Arc<dyn Model>,
    pub metrics: ModelMetrics,
    pub stats: Arc<crate::stats::ModelStats>,
    /// Its queue and instances; requests run only through it.
    pub scheduler: Scheduler,
    /// What it is served with (config.json over the defaults).
    pub config: model_config::Resolved,
}

impl ServedModel {
    /// Counts a successful inference of `total` in the version's statistics
    /// and metrics, and logs where its time went. HTTP and gRPC both end
    /// here; each then says the same in its own headers
    /// ([`RequestTimes::headers`](crate::stats::RequestTimes::headers)).
    pub(crate) fn record_success(
        &self,
        protocol: crate::metrics::Protocol,
        total: std::time::Duration,
        times: crate::stats::RequestTimes,
    ) {
        self.stats.record_success(total, times);
        self.metrics.record_success(protocol, total.as_secs_f64());
        tracing::debug!(
            model = %self.name,
            queue = ?times.queue,
            inference = ?times.infer,
            total = ?total,
            "inferred"
        );
    }
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Where a model stands.
#[derive(Clone, Debug)]
pub enum ModelState {
    Loading,
    Ready(Arc<ReadyModel>),
    Failed(String),
}

/// A ready model's versions, newest last.
#[derive(Clone, Debug)]
pub struct ReadyModel {
    versions: BTreeMap<u64, Arc<ServedModel>>,
}

impl ReadyModel {
    /// The version a request without `/versions/{v}` gets: the newest.
    pub fn latest(&self) -> Option<&Arc<ServedModel>> {
        self.versions.values().next_back()
    }

    /// A version by its URL form; versions are decimal numbers.
    pub fn version(&self, v: &str) -> Option<&Arc<ServedModel>> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.versions.get(&v.parse().ok()?)
    }

    pub fn versions(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.versions.values()
    }

    pub fn version_names(&self) -> impl Iterator<Item = &str> {
        self.versions.values().map(|s| s.version.as_str())
    }
}

/// The models of one server and their states.
#[derive(Debug, Default)]
pub struct Registry {
    models: RwLock<HashMap<String, ModelState>>,
}

impl Registry {
    /// A registry that knows these models, all `Loading`.
    pub fn with_planned(planned: &[PlannedModel]) -> Registry {
        let models = planned
            .iter()
            .map(|m| (m.name.clone(), ModelState::Loading))
            .collect();
        Registry {
            models: RwLock::new(models),
        }
    }

    /// Looks a model up without cloning its state.
    pub fn with<R>(&self, name: &str, f: impl FnOnce(Option<&ModelState>) -> R) -> R {
        f(self.read().get(name))
    }

    /// Model names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// True when every known model is ready.
    pub fn all_ready(&self) -> bool {
        self.read()
            .values()
            .all(|s| matches!(s, ModelState::Ready(_)))
    }

    pub fn set(&self, name: &str, state: ModelState) {
        self.models
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.to_owned(), state);
    }

    /// Forgets a model; true when it was known. Requests already holding
    /// one of its versions finish on it.
    pub fn remove(&self, name: &str) -> bool {
        self.models
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name)
            .is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ModelState>> {
        // A panic while holding the lock cannot leave the map half-written
        // (inserts are single calls), so a poisoned lock is still usable.
        self.models
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// How models are loaded (runtimes) and served (queues, batching).
#[derive(Clone, Debug, Default)]
pub struct LoadSettings {
    pub runtime: LoadOptions,
    pub serving: model_config::Defaults,
}

/// Loads every version of a planned model (blocking: call it off the reactor).
pub fn load_model(planned: &PlannedModel, metrics: &Metrics) -> Result<ReadyModel, RegistryError> {
    load_model_with(planned, metrics, &LoadSettings::default())
}

/// As [`load_model`], with the runtimes and serving defaults `settings` choose.
///
/// Each version's `config.json` is applied, its warm-up requests run, and
/// its instances start before it is returned, so a version is only ever
/// published ready to serve.
pub fn load_model_with(
    planned: &PlannedModel,
    metrics: &Metrics,
    settings: &LoadSettings,
) -> Result<ReadyModel, RegistryError> {
    load_model_inline(planned, metrics, settings, None)
}

/// As [`load_model_with`]; a `config` given inline replaces `config.json`.
pub fn load_model_inline(
    planned: &PlannedModel,
    metrics: &Metrics,
    settings: &LoadSettings,
    config: Option<String>,
) -> Result<ReadyModel, RegistryError> {
    let mut versions = BTreeMap::new();
    for v in &planned.versions {
        let started = Instant::now();
        let load_error = |source: inferd_runtime::Error| RegistryError::Load {
            name: planned.name.clone(),
            version: v.version.to_string(),
            path: v.path.clone(),
            source: Box::new(source),
        };
        let model =
            inferd_runtime::load_with(&v.path, v.format, &settings.runtime).map_err(load_error)?;
        let served_config = match &config {
            Some(text) => {
                model_config::resolve_text(text, &planned.name, model.as_ref(), &settings.serving)
            }
            None => model_config::resolve(
                planned.config.as_deref(),
                &planned.name,
                model.as_ref(),
                &settings.serving,
            ),
        }
        .map_err(|e| RegistryError::Config {
            name: planned.name.clone(),
            source: Box::new(e),
        })?;
        for w in &served_config.warmup {
            for _ in 0..w.count {
                let warmed = model.infer(w.inputs.clone()).map_err(|e| {
                    load_error(inferd_runtime::Error::Load(format!(
                        "warm-up request '{}' failed: {e}",
                        w.name
                    )))
                })?;
                drop(warmed);
            }
        }
        let version = v.version.to_string();
        let model_metrics = metrics.for_model(&planned.name, &version);
        let stats = Arc::new(crate::stats::ModelStats::default());
        let observer = Arc::new(SchedulerObserver {
            stats: stats.clone(),
            batch_size: model_metrics.batch_size.clone(),
            queue_depth: model_metrics.queue_depth.clone(),
        });
        let scheduler = Scheduler::start(
            &planned.name,
            model.clone(),
            served_config.scheduler.clone(),
            observer,
        )
        .map_err(load_error)?;
        metrics.record_load(&planned.name, &version, started.elapsed().as_secs_f64());
        tracing::info!(
            model = %planned.name,
            version = %version,
            path = %v.path.display(),
            max_batch_size = served_config.scheduler.max_batch_size,
            instances = served_config.scheduler.instance_count,
            warmup = served_config.warmup.len(),
            seconds = started.elapsed().as_secs_f64(),
            "model loaded"
        );
        versions.insert(
            v.version,
            Arc::new(ServedModel {
                metrics: model_metrics,
                stats,
                name: planned.name.clone(),
                version,
                model,
                scheduler,
                config: served_config,
            }),
        );
    }
    Ok(ReadyModel { versions })
}

/// Feeds what a model's scheduler reports into its metrics and statistics.
struct SchedulerObserver {
    stats: Arc<crate::stats::ModelStats>,
    batch_size: prometheus_client::metrics::histogram::Histogram,
    queue_depth: prometheus_client::metrics::gauge::Gauge,
}

impl inferd_runtime::Observer for SchedulerObserver {
    fn queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    fn executed(&self, rows: usize, _requests: usize, compute: std::time::Duration) {
        self.batch_size.observe(rows as f64);
        self.stats.record_execution(rows, compute);
    }
}

#[cfg(test)]
mod tests;
