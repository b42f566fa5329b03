//! Tree ensembles on the native engine (`inferd-trees`).
//!
//! Three ways in:
//!
//! - XGBoost JSON (`model.json`, platform `xgboost_json`) and LightGBM text
//!   (`model.txt`, platform `lightgbm_text`): one input `input`, FP32
//!   `[-1, n_features]` (NaN is a missing value); output `predict` is what the
//!   library's own `Booster.predict` returns (as KServe's xgbserver and
//!   lgbserver and MLServer's LightGBM runtime answer): `[N]` for regression
//!   and for binary classifiers (the positive class's probability), `[N, C]`
//!   class probabilities for multiclass models, `[N]` class indices for
//!   XGBoost's `multi:softmax`. Classifiers also have `predict_proba`,
//!   `[N, C]` with every class (MLServer's name for it).
//! - ONNX graphs (platform `onnx_onnxv1`) whose work is a
//!   `TreeEnsembleClassifier`/`TreeEnsembleRegressor` with the usual ONNX-ML
//!   glue around it (Cast, Identity, Normalizer, Scaler,
//!   ArrayFeatureExtractor, ZipMap): [`TreeModel::from_onnx`] recognises them
//!   and runs them here instead of in tract, which is two orders of magnitude
//!   slower on trees and lacks TreeEnsembleRegressor, Scaler and ZipMap. A
//!   ZipMap output (a list of maps) becomes an FP32 `[N, C]` tensor of the
//!   class probabilities in label order, under the same name.

use std::collections::HashMap;
use std::path::Path;

use inferd_tensor::{DataType, Dim, Tensor, TensorData, TensorSpec};
use inferd_trees::onnx_ml::{Attributes, LabelValues, Labels, TreeEnsemble};
use inferd_trees::{Booster, Task};
use tract_onnx::pb;

use crate::{Error, InputError, Model, ModelMetadata, Result};

/// The input name of XGBoost and LightGBM models.
const BOOSTER_INPUT: &str = "input";

/// A tree-ensemble model served by the native engine.
pub struct TreeModel {
    engine: Engine,
    metadata: ModelMetadata,
}

enum Engine {
    Booster(Booster),
    Graph(Graph),
}

impl std::fmt::Debug for TreeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeModel")
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn load_error(e: inferd_trees::Error) -> Error {
    Error::Load(e.to_string())
}

impl TreeModel {
    /// Loads an XGBoost JSON model (`Booster.save_model("model.json")`).
    pub fn load_xgboost(path: &Path) -> Result<TreeModel> {
        let booster = inferd_trees::xgboost::load(&read(path)?).map_err(load_error)?;
        Ok(TreeModel::from_booster(booster, "xgboost_json"))
    }

    /// Loads a LightGBM text model (`Booster.save_model("model.txt")`).
    pub fn load_lightgbm(path: &Path) -> Result<TreeModel> {
        let booster = inferd_trees::lightgbm::load(&read(path)?).map_err(load_error)?;
        Ok(TreeModel::from_booster(booster, "lightgbm_text"))
    }

    fn from_booster(booster: Booster, platform: &'static str) -> TreeModel {
        let features = booster.n_features();
        let inputs = vec![TensorSpec::new(
            BOOSTER_INPUT,
            DataType::Fp32,
            vec![Dim::Dynamic, Dim::Fixed(features)],
        )];
        let predict_shape = match (booster.task(), booster.n_classes()) {
            (Task::Multiclass, Some(c)) => vec![Dim::Dynamic, Dim::Fixed(c)],
            _ => vec![Dim::Dynamic],
        };
        let mut outputs = vec![TensorSpec::new("predict", DataType::Fp32, predict_shape)];
        if let Some(classes) = booster.n_classes() {
            outputs.push(TensorSpec::new(
                "predict_proba",
                DataType::Fp32,
                vec![Dim::Dynamic, Dim::Fixed(classes)],
            ));
        }
        TreeModel {
            engine: Engine::Booster(booster),
            metadata: ModelMetadata {
                platform,
                inputs,
                outputs,
            },
        }
    }

    /// Reads an ONNX file and builds a native model for it when it is a tree
    /// ensemble with its glue; `None` otherwise.
    pub fn load_onnx(path: &Path) -> Result<Option<TreeModel>> {
        TreeModel::from_onnx(&crate::onnx::read_proto(path)?)
    }

    /// A native model for an ONNX graph made of a tree ensemble and its glue,
    /// `None` when the graph is anything else (tract then runs it).
    pub fn from_onnx(proto: &pb::ModelProto) -> Result<Option<TreeModel>> {
        let Some(graph) = proto.graph.as_ref() else {
            return Ok(None);
        };
        let Some(plan) = Graph::plan(graph)? else {
            return Ok(None);
        };
        let metadata = ModelMetadata {
            platform: "onnx_onnxv1",
            inputs: vec![TensorSpec::new(
                plan.input_name.clone(),
                DataType::Fp32,
                vec![Dim::Dynamic, Dim::Fixed(plan.n_features)],
            )],
            outputs: plan.output_specs.clone(),
        };
        Ok(Some(TreeModel {
            engine: Engine::Graph(plan),
            metadata,
        }))
    }
}

/// The rows of the model's single FP32 `[N, F]` input.
fn rows(inputs: Vec<Tensor>, metadata: &ModelMetadata) -> Result<(Vec<f32>, usize)> {
    let spec = &metadata.inputs[0];
    let tensor = inputs
        .into_iter()
        .next()
        .ok_or_else(|| InputError::Missing(spec.name.clone()))?;
    let (name, shape, data) = tensor.into_parts();
    match (data, shape.as_slice()) {
        (TensorData::Fp32(values), &[n, _]) => Ok((values, n)),
        (data, _) => Err(InputError::Value {
            name,
            message: format!(
                "expected FP32 [rows, features], got {} {shape:?}",
                data.datatype()
            ),
        }
        .into()),
    }
}

fn output(name: &str, shape: Vec<usize>, data: TensorData) -> Result<Tensor> {
    Tensor::new(name, shape, data).map_err(|e| Error::Inference(format!("output '{name}': {e}")))
}

fn inference_error(e: inferd_trees::Error) -> Error {
    Error::Inference(e.to_string())
}

impl Model for TreeModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let (x, n) = rows(inputs, &self.metadata)?;
        match &self.engine {
            Engine::Booster(booster) => {
                let p = booster.predict(&x, n).map_err(inference_error)?;
                let mut out = vec![output(
                    "predict",
                    p.predict_shape,
                    TensorData::Fp32(p.predict),
                )?];
                if let (Some(proba), Some(classes)) = (p.proba, booster.n_classes()) {
                    out.push(output(
                        "predict_proba",
                        vec![n, classes],
                        TensorData::Fp32(proba),
                    )?);
                }
                Ok(out)
            }
            Engine::Graph(graph) => graph.run(x, n),
        }
    }
}

// ------------------------------------------------------------- ONNX graphs

/// A value flowing through the graph; every one has the batch as its first
/// dimension, then `cols` columns (or none: `[N]`).
#[derive(Clone, Debug)]
struct Value {
    cols: Option<usize>,
    data: Data,
}

#[derive(Clone, Debug)]
enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    F32,
    F64,
    I64,
    Str,
}

impl Kind {
    fn datatype(self) -> DataType {
        match self {
            Kind::F32 => DataType::Fp32,
            Kind::F64 => DataType::Fp64,
            Kind::I64 => DataType::Int64,
            Kind::Str => DataType::Bytes,
        }
    }

    /// An ONNX `TensorProto.DataType` this engine carries.
    fn from_onnx(elem: i64) -> Option<Kind> {
        Some(match elem {
            1 => Kind::F32,
            7 => Kind::I64,
            8 => Kind::Str,
            11 => Kind::F64,
            _ => return None,
        })
    }
}

/// What is known of a value before running: its type and column count.
#[derive(Clone, Copy, Debug)]
struct Info {
    kind: Kind,
    cols: Option<usize>,
}

#[derive(Debug)]
enum Step {
    Ensemble {
        op: Box<TreeEnsemble>,
        input: usize,
        labels: Option<usize>,
        scores: Option<usize>,
    },
    Cast {
        input: usize,
        output: usize,
        to: Kind,
    },
    Identity {
        input: usize,
        output: usize,
    },
    Scaler {
        input: usize,
        output: usize,
        offset: Vec<f32>,
        scale: Vec<f32>,
    },
    Normalizer {
        input: usize,
        output: usize,
        norm: Norm,
    },
    /// Column selection with constant indices.
    Select {
        input: usize,
        output: usize,
        columns: Vec<usize>,
    },
}

#[derive(Clone, Copy, Debug)]
enum Norm {
    Max,
    L1,
    L2,
}

#[derive(Debug)]
struct Graph {
    input_name: String,
    n_features: usize,
    n_values: usize,
    steps: Vec<Step>,
    /// (value, output name)
    outputs: Vec<(usize, String)>,
    output_specs: Vec<TensorSpec>,
}

/// ONNX-ML glue and the ensembles: what a graph may hold to run here.
const ML_OPS: &[&str] = &[
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
    "Normalizer",
    "Scaler",
    "ArrayFeatureExtractor",
    "ZipMap",
];
const CORE_OPS: &[&str] = &["Cast", "Identity"];

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn ints(node: &pb::NodeProto, name: &str) -> Vec<i64> {
    attr(node, name).map(|a| a.ints.clone()).unwrap_or_default()
}

fn floats(node: &pb::NodeProto, name: &str) -> Vec<f32> {
    attr(node, name)
        .map(|a| a.floats.clone())
        .unwrap_or_default()
}

fn int(node: &pb::NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn string(node: &pb::NodeProto, name: &str) -> Result<Option<String>> {
    attr(node, name)
        .map(|a| {
            String::from_utf8(a.s.clone()).map_err(|_| {
                Error::Load(format!(
                    "node '{}': attribute {name} is not UTF-8",
                    node.name
                ))
            })
        })
        .transpose()
}

fn strings(node: &pb::NodeProto, name: &str) -> Result<Vec<String>> {
    attr(node, name)
        .map(|a| {
            a.strings
                .iter()
                .map(|s| {
                    String::from_utf8(s.clone()).map_err(|_| {
                        Error::Load(format!(
                            "node '{}': attribute {name} is not UTF-8",
                            node.name
                        ))
                    })
                })
                .collect()
        })
        .unwrap_or_else(|| Ok(Vec::new()))
}

/// A float list attribute, or its `_as_tensor` form (float or double).
fn reals(node: &pb::NodeProto, name: &str) -> Result<Vec<f64>> {
    let plain = floats(node, name);
    let tensor = attr(node, &format!("{name}_as_tensor")).and_then(|a| a.t.as_ref());
    match tensor {
        None => Ok(plain.into_iter().map(f64::from).collect()),
        Some(_) if !plain.is_empty() => Err(Error::Load(format!(
            "node '{}': both {name} and {name}_as_tensor are set",
            node.name
        ))),
        Some(t) => tensor_reals(t).ok_or_else(|| {
            Error::Load(format!(
                "node '{}': {name}_as_tensor is not a float or double tensor",
                node.name
            ))
        }),
    }
}

fn tensor_reals(t: &pb::TensorProto) -> Option<Vec<f64>> {
    match t.data_type {
        1 if !t.float_data.is_empty() => Some(t.float_data.iter().map(|&v| f64::from(v)).collect()),
        1 => Some(
            t.raw_data
                .chunks_exact(4)
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
        ),
        11 if !t.double_data.is_empty() => Some(t.double_data.clone()),
        11 => Some(
            t.raw_data
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        ),
        _ => None,
    }
}

fn tensor_ints(t: &pb::TensorProto) -> Option<Vec<i64>> {
    match t.data_type {
        7 if !t.int64_data.is_empty() => Some(t.int64_data.clone()),
        7 => Some(
            t.raw_data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect(),
        ),
        _ => None,
    }
}

fn ensemble_attributes(node: &pb::NodeProto, classifier: bool) -> Result<Attributes> {
    let (prefix, ids) = if classifier {
        ("class", "class_ids")
    } else {
        ("target", "target_ids")
    };
    Ok(Attributes {
        nodes_treeids: ints(node, "nodes_treeids"),
        nodes_nodeids: ints(node, "nodes_nodeids"),
        nodes_featureids: ints(node, "nodes_featureids"),
        nodes_modes: strings(node, "nodes_modes")?,
        nodes_values: reals(node, "nodes_values")?,
        nodes_truenodeids: ints(node, "nodes_truenodeids"),
        nodes_falsenodeids: ints(node, "nodes_falsenodeids"),
        nodes_missing_value_tracks_true: ints(node, "nodes_missing_value_tracks_true"),
        leaf_treeids: ints(node, &format!("{prefix}_treeids")),
        leaf_nodeids: ints(node, &format!("{prefix}_nodeids")),
        leaf_ids: ints(node, ids),
        leaf_weights: reals(node, &format!("{prefix}_weights"))?,
        base_values: reals(node, "base_values")?,
        aggregate_function: string(node, "aggregate_function")?,
        post_transform: string(node, "post_transform")?,
        n_targets: int(node, "n_targets"),
        classlabels_int64s: ints(node, "classlabels_int64s"),
        classlabels_strings: strings(node, "classlabels_strings")?,
    })
}

/// Value names to indices, with what is known of each.
struct Values {
    index: HashMap<String, usize>,
    info: Vec<Info>,
}

impl Values {
    fn get(&self, name: &str) -> Option<(usize, Info)> {
        self.index.get(name).map(|&i| (i, self.info[i]))
    }

    fn define(&mut self, name: &str, info: Info) -> Option<usize> {
        if name.is_empty() || self.index.contains_key(name) {
            return None;
        }
        let i = self.info.len();
        self.index.insert(name.to_owned(), i);
        self.info.push(info);
        Some(i)
    }
}

impl Graph {
    /// Plans a graph, or `None` when it is not (only) a tree ensemble with glue.
    fn plan(graph: &pb::GraphProto) -> Result<Option<Graph>> {
        let known = |n: &pb::NodeProto| match n.domain.as_str() {
            "ai.onnx.ml" => ML_OPS.contains(&n.op_type.as_str()),
            "" | "ai.onnx" => CORE_OPS.contains(&n.op_type.as_str()),
            _ => false,
        };
        if graph.node.is_empty()
            || !graph.node.iter().all(known)
            || !graph
                .node
                .iter()
                .any(|n| n.op_type.starts_with("TreeEnsemble"))
        {
            return Ok(None);
        }
        let initializers: HashMap<&str, &pb::TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains_key(i.name.as_str()))
            .collect();
        let [input] = inputs.as_slice() else {
            return Ok(None);
        };
        let Some(pb::type_proto::Value::TensorType(tensor)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Ok(None);
        };
        if tensor.elem_type != 1 {
            return Ok(None);
        }
        let dims: Vec<Option<usize>> = match &tensor.shape {
            Some(shape) => shape
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                        usize::try_from(v).ok()
                    }
                    _ => None,
                })
                .collect(),
            None => return Ok(None),
        };
        let declared_features = match dims.as_slice() {
            [_, features] => *features,
            _ => return Ok(None),
        };

        let mut values = Values {
            index: HashMap::new(),
            info: Vec::new(),
        };
        let mut n_features = declared_features;
        values.define(
            &input.name,
            Info {
                kind: Kind::F32,
                cols: declared_features,
            },
        );
        let mut steps = Vec::new();
        for node in &graph.node {
            let Some(step) = Graph::plan_node(node, &mut values, &initializers, &mut n_features)?
            else {
                return Ok(None);
            };
            steps.push(step);
        }
        let Some(n_features) = n_features else {
            return Ok(None);
        };
        let mut outputs = Vec::new();
        let mut output_specs = Vec::new();
        for out in &graph.output {
            let Some((index, info)) = values.get(&out.name) else {
                return Ok(None);
            };
            let shape = match info.cols {
                Some(c) => vec![Dim::Dynamic, Dim::Fixed(c)],
                None => vec![Dim::Dynamic],
            };
            outputs.push((index, out.name.clone()));
            output_specs.push(TensorSpec::new(
                out.name.clone(),
                info.kind.datatype(),
                shape,
            ));
        }
        if outputs.is_empty() {
            return Ok(None);
        }
        tracing::debug!(
            nodes = graph.node.len(),
            "ONNX graph is a tree ensemble; serving it with the native tree engine"
        );
        Ok(Some(Graph {
            input_name: input.name.clone(),
            n_features,
            n_values: values.info.len(),
            steps,
            outputs,
            output_specs,
        }))
    }

    /// One node's step, `None` when this engine cannot run it.
    fn plan_node(
        node: &pb::NodeProto,
        values: &mut Values,
        initializers: &HashMap<&str, &pb::TensorProto>,
        n_features: &mut Option<usize>,
    ) -> Result<Option<Step>> {
        let Some(first) = node.input.first() else {
            return Ok(None);
        };
        let Some((input, info)) = values.get(first) else {
            return Ok(None);
        };
        let output_name = |k: usize| node.output.get(k).map(String::as_str).unwrap_or("");
        let step = match node.op_type.as_str() {
            "TreeEnsembleClassifier" | "TreeEnsembleRegressor" => {
                if info.kind != Kind::F32 || node.input.len() != 1 {
                    return Ok(None);
                }
                let classifier = node.op_type == "TreeEnsembleClassifier";
                let attrs = ensemble_attributes(node, classifier)?;
                let built = if classifier {
                    TreeEnsemble::classifier(&attrs, info.cols)
                } else {
                    TreeEnsemble::regressor(&attrs, info.cols)
                };
                let op = built
                    .map_err(|e| Error::Load(format!("{} '{}': {e}", node.op_type, node.name)))?;
                // The graph input's width, when it does not declare one.
                if input == 0 && n_features.is_none() {
                    *n_features = Some(op.n_features());
                }
                let columns = op.columns();
                let (labels, scores) = if classifier {
                    let kind = match op.labels() {
                        Some(Labels::Strings(_)) => Kind::Str,
                        _ => Kind::I64,
                    };
                    let labels = values.define(output_name(0), Info { kind, cols: None });
                    let scores = values.define(
                        output_name(1),
                        Info {
                            kind: Kind::F32,
                            cols: Some(columns),
                        },
                    );
                    (labels, scores)
                } else {
                    let scores = values.define(
                        output_name(0),
                        Info {
                            kind: Kind::F32,
                            cols: Some(columns),
                        },
                    );
                    (None, scores)
                };
                Step::Ensemble {
                    op: Box::new(op),
                    input,
                    labels,
                    scores,
                }
            }
            "Cast" => {
                let Some(to) = int(node, "to").and_then(Kind::from_onnx) else {
                    return Ok(None);
                };
                if (to == Kind::Str || info.kind == Kind::Str) && to != info.kind {
                    return Ok(None);
                }
                let Some(output) = values.define(
                    output_name(0),
                    Info {
                        kind: to,
                        cols: info.cols,
                    },
                ) else {
                    return Ok(None);
                };
                Step::Cast { input, output, to }
            }
            "Identity" | "ZipMap" => {
                if node.op_type == "ZipMap" && (info.kind != Kind::F32 || info.cols.is_none()) {
                    return Ok(None);
                }
                let Some(output) = values.define(output_name(0), info) else {
                    return Ok(None);
                };
                Step::Identity { input, output }
            }
            "Scaler" => {
                if info.kind == Kind::Str {
                    return Ok(None);
                }
                let offset = floats(node, "offset");
                let scale = floats(node, "scale");
                let Some(cols) = info.cols else {
                    return Ok(None);
                };
                let fits = |v: &[f32]| v.len() == 1 || v.len() == cols;
                if !fits(&offset) || !fits(&scale) {
                    return Ok(None);
                }
                let Some(output) = values.define(
                    output_name(0),
                    Info {
                        kind: Kind::F32,
                        cols: info.cols,
                    },
                ) else {
                    return Ok(None);
                };
                Step::Scaler {
                    input,
                    output,
                    offset,
                    scale,
                }
            }
            "Normalizer" => {
                let norm = match string(node, "norm")?.as_deref() {
                    Some("MAX") => Norm::Max,
                    Some("L1") => Norm::L1,
                    Some("L2") => Norm::L2,
                    _ => return Ok(None),
                };
                if info.kind == Kind::Str || info.cols.is_none() {
                    return Ok(None);
                }
                let Some(output) = values.define(
                    output_name(0),
                    Info {
                        kind: Kind::F32,
                        cols: info.cols,
                    },
                ) else {
                    return Ok(None);
                };
                Step::Normalizer {
                    input,
                    output,
                    norm,
                }
            }
            "ArrayFeatureExtractor" => {
                let Some(cols) = info.cols else {
                    return Ok(None);
                };
                let Some(indices) = node
                    .input
                    .get(1)
                    .and_then(|name| initializers.get(name.as_str()))
                    .and_then(|t| tensor_ints(t))
                else {
                    return Ok(None);
                };
                let Some(columns) = indices
                    .iter()
                    .map(|&i| usize::try_from(i).ok().filter(|&i| i < cols))
                    .collect::<Option<Vec<usize>>>()
                else {
                    return Ok(None);
                };
                let Some(output) = values.define(
                    output_name(0),
                    Info {
                        kind: info.kind,
                        cols: Some(columns.len()),
                    },
                ) else {
                    return Ok(None);
                };
                Step::Select {
                    input,
                    output,
                    columns,
                }
            }
            _ => return Ok(None),
        };
        if node.op_type != "ArrayFeatureExtractor" && node.input.len() > 1 {
            return Ok(None);
        }
        Ok(Some(step))
    }

    fn run(&self, x: Vec<f32>, n: usize) -> Result<Vec<Tensor>> {
        let mut slots: Vec<Option<Value>> = vec![None; self.n_values];
        slots[0] = Some(Value {
            cols: Some(self.n_features),
            data: Data::F32(x),
        });
        let missing = || Error::Inference("a graph value was used before it was computed".into());
        for step in &self.steps {
            match step {
                Step::Ensemble {
                    op,
                    input,
                    labels,
                    scores,
                } => {
                    let value = slots[*input].as_ref().ok_or_else(missing)?;
                    let Data::F32(x) = &value.data else {
                        return Err(Error::Inference("a tree ensemble needs FP32 input".into()));
                    };
                    let out = op.run(x, n).map_err(inference_error)?;
                    if let (Some(slot), Some(found)) = (labels, out.labels) {
                        slots[*slot] = Some(Value {
                            cols: None,
                            data: match found {
                                LabelValues::Int64(v) => Data::I64(v),
                                LabelValues::Strings(v) => Data::Str(v),
                            },
                        });
                    }
                    if let Some(slot) = scores {
                        slots[*slot] = Some(Value {
                            cols: Some(out.columns),
                            data: Data::F32(out.scores),
                        });
                    }
                }
                Step::Cast { input, output, to } => {
                    let value = slots[*input].as_ref().ok_or_else(missing)?;
                    slots[*output] = Some(Value {
                        cols: value.cols,
                        data: cast(&value.data, *to),
                    });
                }
                Step::Identity { input, output } => {
                    slots[*output] = Some(slots[*input].as_ref().ok_or_else(missing)?.clone());
                }
                Step::Scaler {
                    input,
                    output,
                    offset,
                    scale,
                } => {
                    let value = slots[*input].as_ref().ok_or_else(missing)?;
                    let cols = value.cols.unwrap_or(1);
                    let Data::F32(mut data) = cast(&value.data, Kind::F32) else {
                        return Err(missing());
                    };
                    for row in data.chunks_exact_mut(cols) {
                        for (c, v) in row.iter_mut().enumerate() {
                            let o = offset[if offset.len() == 1 { 0 } else { c }];
                            let s = scale[if scale.len() == 1 { 0 } else { c }];
                            *v = (*v - o) * s;
                        }
                    }
                    slots[*output] = Some(Value {
                        cols: value.cols,
                        data: Data::F32(data),
                    });
                }
                Step::Normalizer {
                    input,
                    output,
                    norm,
                } => {
                    let value = slots[*input].as_ref().ok_or_else(missing)?;
                    let cols = value.cols.unwrap_or(1);
                    let Data::F32(mut data) = cast(&value.data, Kind::F32) else {
                        return Err(missing());
                    };
                    for row in data.chunks_exact_mut(cols) {
                        normalize(row, *norm);
                    }
                    slots[*output] = Some(Value {
                        cols: value.cols,
                        data: Data::F32(data),
                    });
                }
                Step::Select {
                    input,
                    output,
                    columns,
                } => {
                    let value = slots[*input].as_ref().ok_or_else(missing)?;
                    let cols = value.cols.unwrap_or(1);
                    slots[*output] = Some(Value {
                        cols: Some(columns.len()),
                        data: select(&value.data, cols, columns),
                    });
                }
            }
        }
        self.outputs
            .iter()
            .map(|(slot, name)| {
                let value = slots[*slot].as_ref().ok_or_else(missing)?;
                let shape = match value.cols {
                    Some(c) => vec![n, c],
                    None => vec![n],
                };
                let data = match &value.data {
                    Data::F32(v) => TensorData::Fp32(v.clone()),
                    Data::F64(v) => TensorData::Fp64(v.clone()),
                    Data::I64(v) => TensorData::Int64(v.clone()),
                    Data::Str(v) => {
                        TensorData::Bytes(v.iter().map(|s| s.clone().into_bytes()).collect())
                    }
                };
                output(name, shape, data)
            })
            .collect()
    }
}

fn cast(data: &Data, to: Kind) -> Data {
    match (data, to) {
        (Data::F32(v), Kind::F32) => Data::F32(v.clone()),
        (Data::F32(v), Kind::F64) => Data::F64(v.iter().map(|&x| f64::from(x)).collect()),
        (Data::F32(v), Kind::I64) => Data::I64(v.iter().map(|&x| x as i64).collect()),
        (Data::F64(v), Kind::F32) => Data::F32(v.iter().map(|&x| x as f32).collect()),
        (Data::F64(v), Kind::F64) => Data::F64(v.clone()),
        (Data::F64(v), Kind::I64) => Data::I64(v.iter().map(|&x| x as i64).collect()),
        (Data::I64(v), Kind::F32) => Data::F32(v.iter().map(|&x| x as f32).collect()),
        (Data::I64(v), Kind::F64) => Data::F64(v.iter().map(|&x| x as f64).collect()),
        (Data::I64(v), Kind::I64) => Data::I64(v.clone()),
        // Planning admits string casts only to strings.
        (Data::Str(v), _) => Data::Str(v.clone()),
        (_, Kind::Str) => data.clone(),
    }
}

fn select(data: &Data, cols: usize, columns: &[usize]) -> Data {
    fn pick<T: Clone>(v: &[T], cols: usize, columns: &[usize]) -> Vec<T> {
        v.chunks_exact(cols)
            .flat_map(|row| columns.iter().map(move |&c| row[c].clone()))
            .collect()
    }
    match data {
        Data::F32(v) => Data::F32(pick(v, cols, columns)),
        Data::F64(v) => Data::F64(pick(v, cols, columns)),
        Data::I64(v) => Data::I64(pick(v, cols, columns)),
        Data::Str(v) => Data::Str(pick(v, cols, columns)),
    }
}

/// onnxruntime's Normalizer: divide by the row's max, sum of absolute
/// values, or Euclidean norm, unless that is 0.
fn normalize(row: &mut [f32], norm: Norm) {
    let by = match norm {
        Norm::Max => row.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        Norm::L1 => row.iter().map(|v| v.abs()).sum(),
        Norm::L2 => row.iter().map(|v| v * v).sum::<f32>().sqrt(),
    };
    if by != 0.0 {
        for v in row.iter_mut() {
            *v /= by;
        }
    }
}
