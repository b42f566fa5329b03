//! A native engine for tree ensembles.
//!
//! Three formats are read into one flattened [`Forest`]:
//!
//! - [`xgboost`]: the JSON model XGBoost writes with `save_model("x.json")`;
//! - [`lightgbm`]: the text model LightGBM writes with `save_model("x.txt")`;
//! - [`onnx_ml`]: the attributes of ONNX-ML's `TreeEnsembleClassifier` and
//!   `TreeEnsembleRegressor`, as the runtime crate reads them from a graph.
//!
//! XGBoost and LightGBM models become a [`Booster`]: a forest, a base margin
//! per output and the objective's transform. Predictions follow the library's
//! own `Booster.predict`; classifiers also give every class's probability.
//!
//! Loading never trusts the file: counts are checked against the data that
//! is actually there before anything is allocated for them, every child
//! index, feature index and output column is checked, trees must be trees
//! (no cycles or shared nodes), and NaN thresholds are refused. Every such
//! problem is an [`Error`], never a panic.

mod booster;
mod forest;
pub mod lightgbm;
pub mod onnx_ml;
pub mod xgboost;

pub use booster::{Booster, Link, Prediction, Task};
pub use forest::{Aggregate, Forest, RawNode, RawTree, Split, Test};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a model cannot be loaded or run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The file is not the format it claims to be, or is malformed.
    #[error("not a valid {format} model: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    /// The file parses but describes something that is not a usable forest.
    #[error("invalid tree model: {0}")]
    Invalid(String),
    /// A feature of the format this engine does not implement.
    #[error("unsupported tree model: {0}")]
    Unsupported(String),
    /// Inputs or output buffers of the wrong size.
    #[error("{0}")]
    Shape(String),
}
