//! Model runtimes and the thread pool that runs them.
//!
//! A runtime sees tensors, never HTTP, gRPC or JSON: it loads a model file,
//! describes its inputs and outputs ([`ModelMetadata`]), checks that a set of
//! tensors fits them, and computes outputs. Inference runs on an
//! [`InferencePool`] of dedicated OS threads so the async reactor that serves
//! connections never blocks on a model.

mod onnx;
#[cfg(feature = "ort")]
mod ort;
mod scheduler;
mod trees;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use inferd_tensor::{SpecMismatch, Tensor, TensorSpec};

#[cfg(feature = "ort")]
pub use self::ort::{OrtModel, OrtOptions};
pub use onnx::OnnxModel;
pub use scheduler::{NoObserver, Observer, Scheduler, SchedulerConfig, Timing, batchable};
pub use trees::TreeModel;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unknown model format '{0}' (known: onnx, xgboost, lightgbm)")]
    UnknownFormat(String),
    #[error("model uses operators the ONNX runtime cannot run: {0}")]
    UnsupportedOperators(String),
    #[error("cannot load model: {0}")]
    Load(String),
    /// The chosen runtime is not built in or its library cannot be loaded.
    #[error("{0}")]
    Backend(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the inference pool has shut down")]
    PoolClosed,
    #[error("the queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("the request's deadline passed before it could run")]
    DeadlineExceeded,
}

impl Error {
    /// A stable snake_case name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::UnknownFormat(_) => "unknown_format",
            Error::UnsupportedOperators(_) => "unsupported_operators",
            Error::Load(_) => "load",
            Error::Backend(_) => "backend",
            Error::Input(_) => "invalid_input",
            Error::Inference(_) => "inference",
            Error::PoolClosed => "pool_closed",
            Error::QueueFull(_) => "queue_full",
            Error::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// Why a set of tensors cannot be fed to a model.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("input '{0}' is not an input of the model (it takes {1})")]
    Unknown(String, String),
    #[error("input '{0}' is missing")]
    Missing(String),
    #[error("input '{name}': {mismatch}")]
    Mismatch {
        name: String,
        #[source]
        mismatch: SpecMismatch,
    },
    #[error("input '{name}': {message}")]
    Value { name: String, message: String },
    #[error(
        "the request has {rows} rows but the model takes at most {max} per request (max_batch_size)"
    )]
    TooManyRows { rows: usize, max: usize },
}

/// Model file formats inferd can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    Onnx,
    /// XGBoost's JSON model (`Booster.save_model("model.json")`).
    Xgboost,
    /// LightGBM's text model (`Booster.save_model("model.txt")`).
    Lightgbm,
}

impl ModelFormat {
    pub fn parse(name: &str) -> Result<ModelFormat> {
        match name.to_ascii_lowercase().as_str() {
            "onnx" => Ok(ModelFormat::Onnx),
            "xgboost" => Ok(ModelFormat::Xgboost),
            "lightgbm" => Ok(ModelFormat::Lightgbm),
            _ => Err(Error::UnknownFormat(name.to_owned())),
        }
    }

    /// The format a file's extension names, if any.
    pub fn from_path(path: &Path) -> Option<ModelFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(ModelFormat::Xgboost),
            "txt" => Some(ModelFormat::Lightgbm),
            "onnx" => Some(ModelFormat::Onnx),
            _ => None,
        }
    }

    /// File names a model of this format is looked up by inside a folder.
    pub fn default_file_name(self) -> &'static str {
        match self {
            ModelFormat::Onnx => "model.onnx",
            ModelFormat::Xgboost => "model.json",
            ModelFormat::Lightgbm => "model.txt",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Xgboost => "xgboost",
            ModelFormat::Lightgbm => "lightgbm",
        }
    }
}

/// What a loaded model takes and gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelMetadata {
    /// The runtime's platform name, as V2 metadata reports it.
    pub platform: &'static str,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl ModelMetadata {
    /// Checks tensors against the declared inputs and returns them in the
    /// model's input order.
    pub fn arrange_inputs(&self, mut given: Vec<Tensor>) -> Result<Vec<Tensor>, InputError> {
        if let Some(unknown) = given
            .iter()
            .find(|t| !self.inputs.iter().any(|s| s.name == t.name()))
        {
            let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(InputError::Unknown(
                unknown.name().to_owned(),
                names.join(", "),
            ));
        }
        let mut arranged = Vec::with_capacity(self.inputs.len());
        for spec in &self.inputs {
            let at = given
                .iter()
                .position(|t| t.name() == spec.name)
                .ok_or_else(|| InputError::Missing(spec.name.clone()))?;
            let tensor = given.swap_remove(at);
            spec.check(tensor.datatype(), tensor.shape())
                .map_err(|mismatch| InputError::Mismatch {
                    name: spec.name.clone(),
                    mismatch,
                })?;
            arranged.push(tensor);
        }
        Ok(arranged)
    }
}

/// A loaded model, safe to run from several threads at once.
pub trait Model: Send + Sync + 'static {
    fn metadata(&self) -> &ModelMetadata;

    /// Runs the model on inputs already checked by
    /// [`ModelMetadata::arrange_inputs`]; outputs come in declared order.
    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>>;
}

/// Loads a model file of the given format.
pub fn load(path: &Path, format: ModelFormat) -> Result<Arc<dyn Model>> {
    match format {
        ModelFormat::Onnx => onnx::load_model(path),
        ModelFormat::Xgboost => Ok(Arc::new(TreeModel::load_xgboost(path)?)),
        ModelFormat::Lightgbm => Ok(Arc::new(TreeModel::load_lightgbm(path)?)),
    }
}

/// Which runtime runs ONNX models.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OnnxBackend {
    /// tract, built in.
    #[default]
    Tract,
    /// onnxruntime, opened at run time from `library` (else `ORT_DYLIB_PATH`);
    /// only in builds with the `ort` feature.
    Ort {
        library: Option<PathBuf>,
        /// Threads one inference may use inside an operator (at least 1).
        intra_threads: usize,
    },
}

impl OnnxBackend {
    /// onnxruntime with its defaults: the library from `ORT_DYLIB_PATH`, one thread.
    pub fn ort(library: Option<PathBuf>) -> OnnxBackend {
        OnnxBackend::Ort {
            library,
            intra_threads: 1,
        }
    }

    /// Opens what the backend needs before any model loads (onnxruntime's
    /// library), so a missing library fails a start at once.
    pub fn prepare(&self) -> Result<()> {
        match self {
            OnnxBackend::Tract => Ok(()),
            #[cfg(feature = "ort")]
            OnnxBackend::Ort { library, .. } => ort::init_library(library.as_deref()).map(drop),
            #[cfg(not(feature = "ort"))]
            OnnxBackend::Ort { .. } => Err(ort_not_built()),
        }
    }
}

#[cfg(not(feature = "ort"))]
fn ort_not_built() -> Error {
    Error::Backend(
        "the onnxruntime backend is not part of this build of inferd (build it with the `ort` feature)"
            .to_owned(),
    )
}

/// How models are loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    pub onnx_backend: OnnxBackend,
}

/// Loads a model file of the given format with the runtimes `options` choose.
pub fn load_with(
    path: &Path,
    format: ModelFormat,
    options: &LoadOptions,
) -> Result<Arc<dyn Model>> {
    match (format, &options.onnx_backend) {
        #[cfg(feature = "ort")]
        (
            ModelFormat::Onnx,
            OnnxBackend::Ort {
                library,
                intra_threads,
            },
        ) => {
            let options = OrtOptions {
                library: library.clone(),
                intra_threads: *intra_threads,
            };
            Ok(Arc::new(OrtModel::load_with(path, &options)?))
        }
        #[cfg(not(feature = "ort"))]
        (ModelFormat::Onnx, OnnxBackend::Ort { .. }) => Err(ort_not_built()),
        _ => load(path, format),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferd_tensor::{DataType, Dim, TensorData};

    fn meta() -> ModelMetadata {
        ModelMetadata {
            platform: "test",
            inputs: vec![
                TensorSpec::new("a", DataType::Fp32, vec![Dim::Dynamic, Dim::Fixed(2)]),
                TensorSpec::new("b", DataType::Int64, vec![Dim::Dynamic]),
            ],
            outputs: vec![],
        }
    }

    fn a(rows: usize) -> Tensor {
        Tensor::new("a", vec![rows, 2], TensorData::Fp32(vec![0.0; rows * 2])).expect("tensor")
    }

    fn b(rows: usize) -> Tensor {
        Tensor::new("b", vec![rows], TensorData::Int64(vec![0; rows])).expect("tensor")
    }

    #[test]
    fn inputs_are_put_in_model_order() {
        let arranged = meta().arrange_inputs(vec![b(3), a(3)]).expect("fits");
        let names: Vec<&str> = arranged.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn bad_inputs_are_named() {
        let m = meta();
        let c = Tensor::new("c", vec![1], TensorData::Int64(vec![0])).expect("tensor");
        assert_eq!(
            m.arrange_inputs(vec![a(1), b(1), c])
                .expect_err("must fail")
                .to_string(),
            "input 'c' is not an input of the model (it takes a, b)"
        );
        assert_eq!(
            m.arrange_inputs(vec![a(1)]).expect_err("must fail"),
            InputError::Missing("b".into())
        );
        let wrong = Tensor::new("b", vec![1], TensorData::Int32(vec![0])).expect("tensor");
        assert_eq!(
            m.arrange_inputs(vec![a(1), wrong])
                .expect_err("must fail")
                .to_string(),
            "input 'b': datatype INT32 does not match the model's INT64"
        );
        let flat = Tensor::new("a", vec![2], TensorData::Fp32(vec![0.0; 2])).expect("tensor");
        assert!(matches!(
            m.arrange_inputs(vec![flat, b(1)]),
            Err(InputError::Mismatch {
                mismatch: SpecMismatch::Rank { .. },
                ..
            })
        ));
    }

    #[test]
    fn format_from_path() {
        assert_eq!(
            ModelFormat::from_path(Path::new("x/model.onnx")),
            Some(ModelFormat::Onnx)
        );
        assert_eq!(
            ModelFormat::from_path(Path::new("x/model.ONNX")),
            Some(ModelFormat::Onnx)
        );
        assert_eq!(ModelFormat::from_path(Path::new("x/model.bin")), None);
        assert!(matches!(
            ModelFormat::parse("pickle"),
            Err(Error::UnknownFormat(_))
        ));
    }
}
