//! ONNX models through onnxruntime, loaded at run time.
//!
//! The onnxruntime shared library is not linked: it is opened once per
//! process from a path the user gives (or `ORT_DYLIB_PATH`), so a build of
//! inferd needs nothing from onnxruntime and only the servers that choose
//! this backend need the library. It runs every operator onnxruntime has,
//! including the ONNX-ML ones tract lacks (tree ensemble regressors, SVMs,
//! scalers), and is much faster on tree ensembles.
//!
//! onnxruntime sessions are run one call at a time (`Session::run` takes
//! `&mut self`), so a model keeps a small stack of sessions: one is made at
//! load, others when several threads run the model at once, at most one per
//! such thread (if the file can no longer make one, calls wait for the
//! sessions there are). They share prepacked weights. Each session runs on the
//! calling thread alone by default (`intra_threads` 1), since inferd already
//! runs requests in parallel.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use ::ort::environment::Environment;
use ::ort::logging::LogLevel;
use ::ort::session::builder::{GraphOptimizationLevel, PrepackedWeights};
use ::ort::session::{Session, SessionInputValue};
use ::ort::value::{
    DynValue, PrimitiveTensorElementType, Tensor as OrtTensor, TensorElementType, ValueType,
};
use inferd_tensor::{DataType, Dim, Tensor, TensorData, TensorSpec};

use crate::{Error, InputError, Model, ModelMetadata, Result};

/// The environment variable naming the library when no path is given.
pub(crate) const LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// How to give the library, for error messages.
const HOW: &str = "pass --ort-library /path/to/libonnxruntime.so (pip install onnxruntime ships one in site-packages/onnxruntime/capi/)";

/// The error when neither `--ort-library` nor the environment names a library.
fn no_library() -> Error {
    Error::Backend(format!(
        "onnxruntime backend selected but no library: {HOW}"
    ))
}

/// How an [`OrtModel`] is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrtOptions {
    /// The onnxruntime shared library; `None`: the one this process already
    /// opened, else `ORT_DYLIB_PATH`.
    pub library: Option<PathBuf>,
    /// Threads one inference may use inside an operator (at least 1).
    pub intra_threads: usize,
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            library: None,
            intra_threads: 1,
        }
    }
}

/// The library this process opened and its one environment.
struct Runtime {
    library: PathBuf,
    environment: Environment,
}

/// onnxruntime allows one library and one environment per process.
static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can leave them half-updated.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Opens the onnxruntime library (once per process) and returns the path it
/// was opened from.
///
/// `library` `None` uses the library already open, else `ORT_DYLIB_PATH`. A
/// second, different library is refused: a process can hold only one.
pub(crate) fn init_library(library: Option<&Path>) -> Result<PathBuf> {
    environment(library).map(|(path, _)| path)
}

fn environment(library: Option<&Path>) -> Result<(PathBuf, Environment)> {
    let mut runtime = lock(&RUNTIME);
    if let Some(open) = runtime.as_ref() {
        return match library {
            Some(path) if !same_file(path, &open.library) => Err(Error::Backend(format!(
                "onnxruntime is already loaded from {} in this process; cannot also load {}",
                open.library.display(),
                path.display()
            ))),
            _ => Ok((open.library.clone(), open.environment.clone())),
        };
    }
    let path = match library {
        Some(path) => path.to_owned(),
        None => std::env::var_os(LIBRARY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or_else(no_library)?,
    };
    // The library is opened by path, never searched for; a relative path is
    // taken from the working directory.
    let absolute = std::path::absolute(&path).map_err(|e| {
        Error::Backend(format!(
            "cannot load the onnxruntime library {}: {e}",
            path.display()
        ))
    })?;
    if !absolute.is_file() {
        return Err(Error::Backend(format!(
            "cannot load the onnxruntime library {}: no such file; {HOW}",
            absolute.display()
        )));
    }
    let builder = ::ort::init_from(&absolute).map_err(|e| {
        Error::Backend(format!(
            "cannot load the onnxruntime library {}: {e}",
            absolute.display()
        ))
    })?;
    let environment = builder
        .with_name("inferd")
        .with_telemetry(false)
        .with_logger(Arc::new(forward_log))
        .build()
        .map_err(|e| Error::Backend(format!("cannot start onnxruntime: {e}")))?;
    // The logger is called for every message at the verbose level unless
    // told otherwise; warnings and errors are what an operator needs.
    environment.set_log_level(LogLevel::Warning);
    *runtime = Some(Runtime {
        library: absolute.clone(),
        environment: environment.clone(),
    });
    Ok((absolute, environment))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => std::path::absolute(a).ok().as_deref() == Some(b),
    }
}

/// onnxruntime's messages go to the process's log, never straight to stderr.
fn forward_log(level: LogLevel, category: &str, id: &str, location: &str, message: &str) {
    match level {
        LogLevel::Verbose | LogLevel::Info => {
            tracing::debug!(target: "onnxruntime", category, id, location, "{message}");
        }
        LogLevel::Warning => {
            tracing::warn!(target: "onnxruntime", category, id, location, "{message}");
        }
        LogLevel::Error | LogLevel::Fatal => {
            tracing::error!(target: "onnxruntime", category, id, location, "{message}");
        }
    }
}

/// An ONNX model run by onnxruntime.
pub struct OrtModel {
    path: PathBuf,
    environment: Environment,
    prepacked: PrepackedWeights,
    intra_threads: usize,
    /// Idle sessions; one is taken for each call and put back after it.
    sessions: Mutex<Vec<Session>>,
    /// Signalled when a session is put back.
    returned: Condvar,
    /// Cleared when making another session failed.
    may_grow: AtomicBool,
    /// Input names in the session's order, for the run call.
    input_names: Vec<String>,
    metadata: ModelMetadata,
}

impl std::fmt::Debug for OrtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtModel")
            .field("path", &self.path)
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

impl OrtModel {
    /// Loads `path` with onnxruntime from `library` (else the library this
    /// process already opened, else `ORT_DYLIB_PATH`).
    pub fn load(path: &Path, library: Option<&Path>) -> Result<OrtModel> {
        OrtModel::load_with(
            path,
            &OrtOptions {
                library: library.map(Path::to_owned),
                ..OrtOptions::default()
            },
        )
    }

    pub fn load_with(path: &Path, options: &OrtOptions) -> Result<OrtModel> {
        // A missing model file is an I/O error whatever the runtime.
        std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        let (_, environment) = environment(options.library.as_deref())?;
        let prepacked = PrepackedWeights::new();
        let intra_threads = options.intra_threads.max(1);
        let session = new_session(&environment, &prepacked, intra_threads, path)
            .map_err(|e| Error::Load(format!("onnxruntime cannot load the model: {e}")))?;

        let inputs = session
            .inputs()
            .iter()
            .map(|outlet| spec(outlet.name(), outlet.dtype(), "input"))
            .collect::<Result<Vec<_>>>()?;
        let outputs = session
            .outputs()
            .iter()
            .map(|outlet| spec(outlet.name(), outlet.dtype(), "output"))
            .collect::<Result<Vec<_>>>()?;
        let input_names = inputs.iter().map(|s| s.name.clone()).collect();
        Ok(OrtModel {
            path: path.to_owned(),
            environment,
            prepacked,
            intra_threads,
            sessions: Mutex::new(vec![session]),
            returned: Condvar::new(),
            may_grow: AtomicBool::new(true),
            input_names,
            metadata: ModelMetadata {
                platform: "onnxruntime_onnx",
                inputs,
                outputs,
            },
        })
    }

    /// An idle session, or a new one when every session is busy. If the
    /// file can no longer make a session like the first (it was removed or
    /// replaced), the model keeps the sessions it has and waits for one.
    fn take_session(&self) -> Session {
        if let Some(session) = lock(&self.sessions).pop() {
            return session;
        }
        if self.may_grow.load(Ordering::Relaxed) {
            match self.another_session() {
                Ok(session) => return session,
                Err(reason) => {
                    self.may_grow.store(false, Ordering::Relaxed);
                    tracing::warn!(
                        path = %self.path.display(),
                        "cannot start another onnxruntime session ({reason}); \
                         runs will wait for the sessions there are"
                    );
                }
            }
        }
        // Every session made is put back after its run, and there is one.
        let mut idle = lock(&self.sessions);
        loop {
            if let Some(session) = idle.pop() {
                return session;
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn put_back(&self, session: Session) {
        lock(&self.sessions).push(session);
        self.returned.notify_one();
    }

    fn another_session(&self) -> std::result::Result<Session, String> {
        let session = new_session(
            &self.environment,
            &self.prepacked,
            self.intra_threads,
            &self.path,
        )?;
        // The file is read again: it must still be the model described.
        let same = session
            .inputs()
            .iter()
            .map(|o| o.name())
            .eq(self.input_names.iter().map(String::as_str))
            && session.outputs().iter().map(|o| o.name()).eq(self
                .metadata
                .outputs
                .iter()
                .map(|s| s.name.as_str()));
        if !same {
            return Err("the file is no longer the model loaded".to_owned());
        }
        Ok(session)
    }
}

fn new_session(
    environment: &Environment,
    prepacked: &PrepackedWeights,
    intra_threads: usize,
    path: &Path,
) -> std::result::Result<Session, String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    Session::builder(environment)
        .map_err(|e| text(&e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| text(&e))?
        .with_intra_threads(intra_threads)
        .map_err(|e| text(&e))?
        .with_inter_threads(1)
        .map_err(|e| text(&e))?
        .with_prepacked_weights(prepacked)
        .map_err(|e| text(&e))?
        .commit_from_file(path)
        .map_err(|e| text(&e))
}

/// The protocol's description of one session input or output.
fn spec(name: &str, dtype: &ValueType, role: &str) -> Result<TensorSpec> {
    let (ty, shape) = match dtype {
        ValueType::Tensor { ty, shape, .. } => (ty, shape),
        ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => {
            return Err(Error::Load(format!(
                "{role} '{name}' is a sequence of maps (what sklearn-onnx's ZipMap makes), \
                 not a tensor; export the model without ZipMap \
                 (skl2onnx: options={{id(model): {{'zipmap': False}}}})"
            )));
        }
        other => {
            return Err(Error::Load(format!(
                "{role} '{name}' is a {other}, not a tensor, which the inference protocol cannot carry"
            )));
        }
    };
    let datatype = protocol_type(*ty).ok_or_else(|| {
        Error::Load(format!(
            "{role} '{name}' has element type {ty}, which the inference protocol cannot carry"
        ))
    })?;
    let shape = shape
        .iter()
        .map(|&d| usize::try_from(d).map_or(Dim::Dynamic, Dim::Fixed))
        .collect();
    Ok(TensorSpec::new(name, datatype, shape))
}

fn protocol_type(ty: TensorElementType) -> Option<DataType> {
    Some(match ty {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

impl Model for OrtModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let values = inputs
            .into_iter()
            .map(|t| {
                let name = t.name().to_owned();
                to_ort(t).map(|v| (Cow::Owned(name), v.into()))
            })
            .collect::<Result<Vec<(Cow<'_, str>, SessionInputValue<'_>)>>>()?;
        if values.len() != self.input_names.len() {
            return Err(Error::Inference(format!(
                "the model takes {} inputs, {} were given",
                self.input_names.len(),
                values.len()
            )));
        }
        let mut lease = Lease {
            model: self,
            session: Some(self.take_session()),
        };
        let session = lease
            .session
            .as_mut()
            .ok_or_else(|| Error::Inference("no onnxruntime session".to_owned()))?;
        run(session, values, &self.metadata.outputs)
    }
}

/// A session taken for one call; it goes back when the call ends, however it
/// ends (a failed run leaves it sound: onnxruntime keeps no state between
/// runs), so waiting callers are never left without one.
struct Lease<'a> {
    model: &'a OrtModel,
    session: Option<Session>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.model.put_back(session);
        }
    }
}

fn run(
    session: &mut Session,
    values: Vec<(Cow<'_, str>, SessionInputValue<'_>)>,
    outputs: &[TensorSpec],
) -> Result<Vec<Tensor>> {
    let mut results = session
        .run(values)
        .map_err(|e| Error::Inference(e.to_string()))?;
    outputs
        .iter()
        .map(|spec| {
            let value = results.remove(spec.name.as_str()).ok_or_else(|| {
                Error::Inference(format!("onnxruntime gave no output '{}'", spec.name))
            })?;
            from_ort(&value, &spec.name)
        })
        .collect()
}

fn to_ort(tensor: Tensor) -> Result<DynValue> {
    fn array<T: PrimitiveTensorElementType + std::fmt::Debug + Clone + 'static>(
        shape: Vec<usize>,
        v: Vec<T>,
    ) -> Result<DynValue> {
        OrtTensor::from_array((shape, v))
            .map(|t| t.into_dyn())
            .map_err(|e| Error::Inference(format!("cannot make an input tensor: {e}")))
    }
    let (name, shape, data) = tensor.into_parts();
    match data {
        TensorData::Bool(v) => array(shape, v),
        TensorData::Uint8(v) => array(shape, v),
        TensorData::Uint16(v) => array(shape, v),
        TensorData::Uint32(v) => array(shape, v),
        TensorData::Uint64(v) => array(shape, v),
        TensorData::Int8(v) => array(shape, v),
        TensorData::Int16(v) => array(shape, v),
        TensorData::Int32(v) => array(shape, v),
        TensorData::Int64(v) => array(shape, v),
        TensorData::Fp16(v) => array(shape, v),
        TensorData::Fp32(v) => array(shape, v),
        TensorData::Fp64(v) => array(shape, v),
        TensorData::Bytes(v) => {
            let bad = |i: usize, what: &str| InputError::Value {
                name: name.clone(),
                message: format!("element {i} {what}"),
            };
            let strings = v
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    if b.contains(&0) {
                        return Err(bad(i, "holds a NUL byte, which onnxruntime strings cannot"));
                    }
                    String::from_utf8(b)
                        .map_err(|_| bad(i, "is not UTF-8, which an ONNX string tensor needs"))
                })
                .collect::<Result<Vec<String>, InputError>>()?;
            OrtTensor::from_string_array((shape, strings.as_slice()))
                .map(|t| t.into_dyn())
                .map_err(|e| Error::Inference(format!("cannot make input '{name}': {e}")))
        }
    }
}

fn from_ort(value: &DynValue, name: &str) -> Result<Tensor> {
    let fail = |e: ::ort::Error| Error::Inference(format!("cannot read output '{name}': {e}"));
    fn plain<T: PrimitiveTensorElementType + Clone>(
        value: &DynValue,
    ) -> ::ort::Result<(Vec<usize>, Vec<T>)> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((dims(shape), data.to_vec()))
    }
    fn dims(shape: &[i64]) -> Vec<usize> {
        // Shapes of computed values are never negative.
        shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect()
    }
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(Error::Inference(format!(
            "output '{name}' is a {}, not a tensor",
            value.dtype()
        )));
    };
    macro_rules! read {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = plain::<$t>(value).map_err(fail)?;
            (shape, TensorData::$variant(data))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => read!(bool, Bool),
        TensorElementType::Uint8 => read!(u8, Uint8),
        TensorElementType::Uint16 => read!(u16, Uint16),
        TensorElementType::Uint32 => read!(u32, Uint32),
        TensorElementType::Uint64 => read!(u64, Uint64),
        TensorElementType::Int8 => read!(i8, Int8),
        TensorElementType::Int16 => read!(i16, Int16),
        TensorElementType::Int32 => read!(i32, Int32),
        TensorElementType::Int64 => read!(i64, Int64),
        TensorElementType::Float16 => read!(inferd_tensor::f16, Fp16),
        TensorElementType::Float32 => read!(f32, Fp32),
        TensorElementType::Float64 => read!(f64, Fp64),
        TensorElementType::String => {
            let (shape, strings) = value.try_extract_strings().map_err(fail)?;
            (
                dims(shape),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(Error::Inference(format!(
                "output '{name}' has element type {other}, which the inference protocol cannot carry"
            )));
        }
    };
    Tensor::new(name, shape, data).map_err(|e| Error::Inference(format!("output '{name}': {e}")))
}
