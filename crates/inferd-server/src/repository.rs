//! The model repository extension: which models exist on disk, and
//! loading, replacing and unloading them while traffic flows.
//!
//! Model control follows Triton's modes. `none`: the models found at start
//! are served and the set never changes. `explicit`: models load and unload
//! through `POST /v2/repository/models/{m}/load|unload` (at start, only the
//! `--model` ones and those `--load-model` names). `poll`: the repository
//! folders are rescanned periodically; new models load, removed ones
//! unload, changed ones reload.
//!
//! A reload builds the new version set completely (load, config, warm-up,
//! instances) while the old one keeps serving, then swaps it in. Requests
//! already holding the old version finish on it; its instances stop once
//! the last of them is answered. A failed reload leaves the old version
//! serving and says why in the index.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::AppState;
use crate::error::ApiError;
use crate::registry::{self, LoadSettings, ModelSource, ModelState, PlannedModel, RegistryError};

/// How the set of served models may change, as Triton names the modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModelControl {
    #[default]
    None,
    Explicit,
    Poll,
}

impl ModelControl {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelControl::None => "none",
            ModelControl::Explicit => "explicit",
            ModelControl::Poll => "poll",
        }
    }
}

/// One row of the repository index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct IndexEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub state: &'static str,
    pub reason: String,
}

/// A model the sources make available, not yet planned.
#[derive(Clone, Debug)]
struct Candidate {
    name: String,
    path: PathBuf,
}

/// The repository: where models come from and how they may change.
#[derive(Debug)]
pub struct Repository {
    mode: ModelControl,
    sources: Vec<ModelSource>,
    format: Option<inferd_runtime::ModelFormat>,
    settings: LoadSettings,
    /// One load or unload at a time, so two changes to a model cannot race.
    changing: tokio::sync::Mutex<()>,
    /// Why the last reload of a still-served model failed.
    reload_failures: Mutex<HashMap<String, String>>,
    /// What each polled model's files looked like when last loaded.
    fingerprints: Mutex<HashMap<String, Fingerprint>>,
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// What to load at start, and the models that cannot be planned with why.
pub type StartPlan = (Vec<PlannedModel>, Vec<(String, String)>);

impl Repository {
    pub fn new(
        mode: ModelControl,
        sources: Vec<ModelSource>,
        format: Option<inferd_runtime::ModelFormat>,
        settings: LoadSettings,
    ) -> Repository {
        Repository {
            mode,
            sources,
            format,
            settings,
            changing: tokio::sync::Mutex::new(()),
            reload_failures: Mutex::new(HashMap::new()),
            fingerprints: Mutex::new(HashMap::new()),
        }
    }

    pub fn mode(&self) -> ModelControl {
        self.mode
    }

    pub fn settings(&self) -> &LoadSettings {
        &self.settings
    }

    /// Every model the sources offer, by name; repository folders that are
    /// not valid model names are skipped (they cannot be served anyway).
    fn candidates(&self) -> BTreeMap<String, Candidate> {
        let mut found = BTreeMap::new();
        for source in &self.sources {
            match source {
                ModelSource::Named { name, path } => {
                    found.insert(
                        name.clone(),
                        Candidate {
                            name: name.clone(),
                            path: path.clone(),
                        },
                    );
                }
                ModelSource::Repository(dir) => {
                    let Ok(entries) = std::fs::read_dir(dir) else {
                        continue;
                    };
                    for entry in entries.flatten() {
                        let path = entry.path();
                        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                            continue;
                        };
                        if name.starts_with('.')
                            || !path.is_dir()
                            || registry::check_name(name).is_err()
                        {
                            continue;
                        }
                        found.entry(name.to_owned()).or_insert_with(|| Candidate {
                            name: name.to_owned(),
                            path: path.clone(),
                        });
                    }
                }
            }
        }
        found
    }

    /// The models to load at start, and those that could not even be
    /// planned (only in `poll` mode, which serves the rest; the other modes
    /// refuse to start on a bad model).
    pub fn plan_start(&self, load_models: &[String]) -> Result<StartPlan, RegistryError> {
        match self.mode {
            ModelControl::None => Ok((registry::plan(&self.sources, self.format)?, Vec::new())),
            ModelControl::Explicit => {
                let mut sources: Vec<ModelSource> = self
                    .sources
                    .iter()
                    .filter(|s| matches!(s, ModelSource::Named { .. }))
                    .cloned()
                    .collect();
                let candidates = self.candidates();
                let all = load_models.iter().any(|n| n == "*");
                for (name, c) in &candidates {
                    let named = sources
                        .iter()
                        .any(|s| matches!(s, ModelSource::Named { name: n, .. } if n == name));
                    if !named && (all || load_models.contains(name)) {
                        sources.push(ModelSource::Named {
                            name: name.clone(),
                            path: c.path.clone(),
                        });
                    }
                }
                if let Some(missing) = load_models
                    .iter()
                    .find(|n| *n != "*" && !candidates.contains_key(*n))
                {
                    return Err(RegistryError::Argument(format!(
                        "--load-model {missing}: no such model in the repositories"
                    )));
                }
                Ok((registry::plan(&sources, self.format)?, Vec::new()))
            }
            ModelControl::Poll => {
                let mut planned = Vec::new();
                let mut failed = Vec::new();
                for (name, c) in self.candidates() {
                    let one = [ModelSource::Named {
                        name: name.clone(),
                        path: c.path,
                    }];
                    match registry::plan(&one, self.format) {
                        Ok(mut p) => planned.append(&mut p),
                        Err(e) => failed.push((name, e.to_string())),
                    }
                }
                Ok((planned, failed))
            }
        }
    }

    /// The index: every model on offer or served, with its state.
    pub fn index(&self, state: &AppState, ready_only: bool) -> Vec<IndexEntry> {
        let mut names: Vec<String> = self.candidates().into_keys().collect();
        names.extend(state.registry.names());
        names.sort();
        names.dedup();
        let failures = lock(&self.reload_failures).clone();
        let mut out = Vec::new();
        for name in names {
            state.registry.with(&name, |found| match found {
                Some(ModelState::Ready(ready)) => {
                    let reason = failures.get(&name).cloned().unwrap_or_default();
                    for v in ready.version_names() {
                        out.push(IndexEntry {
                            name: name.clone(),
                            version: Some(v.to_owned()),
                            state: "READY",
                            reason: reason.clone(),
                        });
                    }
                }
                Some(ModelState::Loading) if !ready_only => out.push(IndexEntry {
                    name: name.clone(),
                    version: None,
                    state: "LOADING",
                    reason: String::new(),
                }),
                Some(ModelState::Failed(why)) if !ready_only => out.push(IndexEntry {
                    name: name.clone(),
                    version: None,
                    state: "UNAVAILABLE",
                    reason: why.clone(),
                }),
                None if !ready_only => out.push(IndexEntry {
                    name: name.clone(),
                    version: None,
                    state: "UNAVAILABLE",
                    reason: "unloaded".into(),
                }),
                _ => {}
            });
        }
        out
    }

    fn refuse_unless_explicit(&self) -> Result<(), ApiError> {
        match self.mode {
            ModelControl::Explicit => Ok(()),
            mode => Err(ApiError::BadRequest(format!(
                "model control mode is '{}': loading and unloading through the API \
                 needs --model-control explicit",
                mode.as_str()
            ))),
        }
    }

    /// `POST /v2/repository/models/{m}/load`: loads or reloads a model,
    /// optionally with a configuration given inline (Triton's `config`
    /// parameter) instead of its `config.json`.
    pub async fn load(
        &self,
        state: &Arc<AppState>,
        name: &str,
        config: Option<String>,
    ) -> Result<(), ApiError> {
        self.refuse_unless_explicit()?;
        let _one_at_a_time = self.changing.lock().await;
        let candidate = self
            .candidates()
            .remove(name)
            .ok_or_else(|| ApiError::NotFound(format!("no model '{name}' in the repository")))?;
        self.load_candidate(state, candidate, config).await
    }

    /// `POST /v2/repository/models/{m}/unload`.
    pub async fn unload(&self, state: &AppState, name: &str) -> Result<(), ApiError> {
        self.refuse_unless_explicit()?;
        let _one_at_a_time = self.changing.lock().await;
        if !state.registry.remove(name) {
            return Err(ApiError::UnknownModel(name.to_owned()));
        }
        lock(&self.reload_failures).remove(name);
        tracing::info!(model = %name, "model unloaded");
        Ok(())
    }

    async fn load_candidate(
        &self,
        state: &Arc<AppState>,
        candidate: Candidate,
        config: Option<String>,
    ) -> Result<(), ApiError> {
        let name = candidate.name.clone();
        let planned = match registry::plan(
            &[ModelSource::Named {
                name: name.clone(),
                path: candidate.path.clone(),
            }],
            self.format,
        ) {
            Ok(mut planned) if planned.len() == 1 => planned.remove(0),
            Ok(_) => return Err(ApiError::Internal("planning found no model".into())),
            Err(e) => {
                let why = e.to_string();
                self.record_failure(state, &name, &why);
                return Err(ApiError::BadRequest(why));
            }
        };
        let fingerprint = fingerprint(&candidate.path);
        let loading_state = state.clone();
        let settings = self.settings.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            registry::load_model_inline(&planned, &loading_state.metrics, &settings, config)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the loader stopped: {e}")))?;
        match loaded {
            Ok(ready) => {
                state
                    .registry
                    .set(&name, ModelState::Ready(Arc::new(ready)));
                lock(&self.reload_failures).remove(&name);
                lock(&self.fingerprints).insert(name, fingerprint);
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                self.record_failure(state, &name, &why);
                Err(ApiError::BadRequest(why))
            }
        }
    }

    /// A failed load: a model that is still served keeps serving and the
    /// index says why; otherwise the model is marked failed.
    fn record_failure(&self, state: &AppState, name: &str, why: &str) {
        tracing::warn!(model = %name, error = %why, "model failed to load");
        let serving = state
            .registry
            .with(name, |found| matches!(found, Some(ModelState::Ready(_))));
        if serving {
            lock(&self.reload_failures).insert(
                name.to_owned(),
                format!("reload failed; still serving the previous load: {why}"),
            );
        } else {
            state.registry.set(name, ModelState::Failed(why.to_owned()));
        }
    }

    /// Notes the files of models loaded at start, so polling sees changes.
    pub fn remember_loaded(&self, names: &[String]) {
        let candidates = self.candidates();
        let mut prints = lock(&self.fingerprints);
        for name in names {
            if let Some(c) = candidates.get(name) {
                prints.insert(name.clone(), fingerprint(&c.path));
            }
        }
    }

    /// One pass of `poll` mode: load new models, reload changed ones,
    /// unload the ones whose files are gone.
    pub async fn poll_once(&self, state: &Arc<AppState>) {
        let _one_at_a_time = self.changing.lock().await;
        let candidates = self.candidates();
        for name in state.registry.names() {
            if !candidates.contains_key(&name) {
                state.registry.remove(&name);
                lock(&self.fingerprints).remove(&name);
                lock(&self.reload_failures).remove(&name);
                tracing::info!(model = %name, "model removed from the repository; unloaded");
            }
        }
        for (name, candidate) in candidates {
            let now = fingerprint(&candidate.path);
            let known = lock(&self.fingerprints).get(&name).cloned();
            if known.as_ref() == Some(&now) {
                continue;
            }
            tracing::info!(model = %name, "model new or changed in the repository; loading");
            // Remember the attempt even when it fails, so a broken model is
            // retried when its files change, not on every pass.
            let result = self.load_candidate(state, candidate, None).await;
            lock(&self.fingerprints).insert(name, now);
            if let Err(e) = result {
                tracing::warn!(error = %e, "poll: load failed");
            }
        }
    }

    /// Runs [`Repository::poll_once`] every `interval` until the state
    /// begins shutting down.
    pub fn spawn_poller_on(
        runtime: tokio::runtime::Handle,
        state: Arc<AppState>,
        interval: Duration,
    ) {
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if state.is_shutting_down() {
                    return;
                }
                state.repository.poll_once(&state).await;
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sizes and modification times of a model's files (at most 4 levels deep
/// and 10,000 entries, so a strange folder cannot stall the poller).
fn fingerprint(path: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![(path.to_path_buf(), 0usize)];
    while let Some((p, depth)) = stack.pop() {
        if out.len() >= 10_000 {
            break;
        }
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if depth < 4
                && let Ok(entries) = std::fs::read_dir(&p)
            {
                stack.extend(entries.flatten().map(|e| (e.path(), depth + 1)));
            }
        } else {
            out.push((p, meta.len(), meta.modified().ok()));
        }
    }
    out.sort();
    out
}
