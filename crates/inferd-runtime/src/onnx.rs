//! ONNX models through tract.
//!
//! Loading reads the graph, refuses it whole if any operator is one tract
//! cannot run (naming the operators), gives every unknown dimension of an
//! input a symbol (the first one a batch symbol shared by all inputs) so one
//! loaded model runs any batch size, then optimizes it once into a plan that
//! any number of threads run at the same time.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use inferd_tensor::{DataType, Dim, Tensor, TensorData, TensorSpec};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;
use tract_onnx::tract_hir::internal::DimLike;

use crate::{Error, InputError, Model, ModelMetadata, Result};

type Plan = Arc<TypedRunnableModel>;
type TractTensor = tract_onnx::prelude::Tensor;

/// An ONNX model compiled by tract.
pub struct OnnxModel {
    plan: Plan,
    /// Run states kept between calls: making one allocates a slot per node,
    /// which costs as much as running a small model. At most one per thread
    /// that runs the model at the same time.
    states: Mutex<Vec<TypedSimpleState>>,
    metadata: ModelMetadata,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

fn load_error(e: impl std::fmt::Display) -> Error {
    Error::Load(e.to_string())
}

pub(crate) fn read_proto(path: &Path) -> Result<tract_onnx::pb::ModelProto> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    tract_onnx::onnx()
        .proto_model_for_read(&mut bytes.as_slice())
        .map_err(|e| Error::Load(format!("not a readable ONNX model: {e:#}")))
}

/// Loads an ONNX model for serving: a graph that is a tree ensemble with
/// its usual ONNX-ML glue runs on the native tree engine
/// ([`crate::TreeModel`]), anything else on tract. The file is decoded once.
pub(crate) fn load_model(path: &Path) -> Result<Arc<dyn Model>> {
    let proto = read_proto(path)?;
    if let Some(trees) = crate::TreeModel::from_onnx(&proto)? {
        return Ok(Arc::new(trees));
    }
    Ok(Arc::new(OnnxModel::from_proto(&proto)?))
}

impl OnnxModel {
    /// Loads an ONNX model with tract, whatever its operators.
    pub fn load(path: &Path) -> Result<OnnxModel> {
        OnnxModel::from_proto(&read_proto(path)?)
    }

    fn from_proto(proto: &tract_onnx::pb::ModelProto) -> Result<OnnxModel> {
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(|e| Error::Load(format!("not a readable ONNX model: {e:#}")))?;

        let unsupported: BTreeSet<String> = model
            .nodes()
            .iter()
            .filter_map(|node| {
                let name = node.op().name();
                name.strip_prefix("Unimplemented(")
                    .and_then(|rest| rest.strip_suffix(')'))
                    .map(str::to_owned)
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(Error::UnsupportedOperators(
                unsupported.into_iter().collect::<Vec<_>>().join(", "),
            ));
        }

        let batch = model.sym("N");
        let mut inputs = Vec::new();
        for ix in 0..model.inputs.len() {
            let outlet = model.inputs[ix];
            let name = model.node(outlet.node).name.clone();
            let fact = model.input_fact(ix).map_err(load_error)?.clone();
            let datum = fact
                .datum_type
                .concretize()
                .ok_or_else(|| Error::Load(format!("input '{name}' declares no element type")))?;
            let datatype = protocol_type(datum).ok_or_else(|| {
                Error::Load(format!(
                    "input '{name}' has element type {datum:?}, which the inference protocol cannot carry"
                ))
            })?;
            if fact.shape.is_open() {
                return Err(Error::Load(format!("input '{name}' declares no shape")));
            }
            let mut dims: TVec<TDim> = tvec![];
            let mut spec_shape = Vec::new();
            for (i, dim) in fact.shape.dims().enumerate() {
                match dim.concretize().and_then(|d| d.to_usize().ok()) {
                    Some(size) => {
                        dims.push(size.to_dim());
                        spec_shape.push(Dim::Fixed(size));
                    }
                    None => {
                        let symbol = match dim.concretize() {
                            Some(symbolic) => symbolic,
                            None if i == 0 => batch.clone().into(),
                            None => model.sym(&format!("{name}_dim{i}")).into(),
                        };
                        dims.push(symbol);
                        spec_shape.push(Dim::Dynamic);
                    }
                }
            }
            model
                .set_input_fact(ix, InferenceFact::dt_shape(datum, dims))
                .map_err(load_error)?;
            inputs.push(TensorSpec::new(name, datatype, spec_shape));
        }

        let output_names: Vec<String> = model
            .outputs
            .iter()
            .map(|&outlet| {
                model
                    .outlet_label(outlet)
                    .map(str::to_owned)
                    .unwrap_or_else(|| model.node(outlet.node).name.clone())
            })
            .collect();

        let typed = model
            .into_optimized()
            .map_err(|e| Error::Load(format!("{e:#}")))?;
        let mut outputs = Vec::with_capacity(output_names.len());
        for (ix, name) in output_names.into_iter().enumerate() {
            let fact = typed.output_fact(ix).map_err(load_error)?;
            // tract may compute integer outputs it can reason about (labels
            // picked from a constant class table) as symbolic dims; they are
            // integers and reach the caller as INT64.
            let datum = match fact.datum_type {
                DatumType::TDim => DatumType::I64,
                other => other,
            };
            let datatype = protocol_type(datum).ok_or_else(|| {
                Error::Load(format!(
                    "output '{name}' has element type {:?}, which the inference protocol cannot carry",
                    fact.datum_type
                ))
            })?;
            let shape = fact
                .shape
                .iter()
                .map(|d| d.to_usize().map_or(Dim::Dynamic, Dim::Fixed))
                .collect();
            outputs.push(TensorSpec::new(name, datatype, shape));
        }
        let plan = typed.into_runnable().map_err(load_error)?;
        Ok(OnnxModel {
            plan,
            states: Mutex::new(Vec::new()),
            metadata: ModelMetadata {
                platform: "onnx_onnxv1",
                inputs,
                outputs,
            },
        })
    }
}

impl Model for OnnxModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>> {
        let values = inputs
            .into_iter()
            .map(to_tract)
            .collect::<Result<TVec<TValue>>>()?;
        let reused = self
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let mut state = match reused {
            Some(state) => state,
            None => self
                .plan
                .spawn()
                .map_err(|e| Error::Inference(format!("{e:#}")))?,
        };
        // A state whose run failed is dropped rather than reused.
        let results = state
            .run(values)
            .map_err(|e| Error::Inference(format!("{e:#}")))?;
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(state);
        results
            .into_iter()
            .zip(&self.metadata.outputs)
            .map(|(value, spec)| from_tract(&value, &spec.name))
            .collect()
    }
}

fn protocol_type(datum: DatumType) -> Option<DataType> {
    Some(match datum {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

fn to_tract(tensor: Tensor) -> Result<TValue> {
    let (name, shape, data) = tensor.into_parts();
    fn array<T: Datum>(shape: &[usize], v: Vec<T>) -> Result<TractTensor> {
        tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(shape), v)
            .map(IntoTensor::into_tensor)
            .map_err(|e| Error::Inference(format!("cannot shape input: {e}")))
    }
    let t = match data {
        TensorData::Bool(v) => array(&shape, v)?,
        TensorData::Uint8(v) => array(&shape, v)?,
        TensorData::Uint16(v) => array(&shape, v)?,
        TensorData::Uint32(v) => array(&shape, v)?,
        TensorData::Uint64(v) => array(&shape, v)?,
        TensorData::Int8(v) => array(&shape, v)?,
        TensorData::Int16(v) => array(&shape, v)?,
        TensorData::Int32(v) => array(&shape, v)?,
        TensorData::Int64(v) => array(&shape, v)?,
        TensorData::Fp16(v) => array(&shape, v)?,
        TensorData::Fp32(v) => array(&shape, v)?,
        TensorData::Fp64(v) => array(&shape, v)?,
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|_| InputError::Value {
                        name: name.clone(),
                        message: format!(
                            "element {i} is not UTF-8, which an ONNX string tensor needs"
                        ),
                    })
                })
                .collect::<Result<Vec<String>, InputError>>()?;
            array(&shape, strings)?
        }
    };
    Ok(t.into_tvalue())
}

fn from_tract(value: &TValue, name: &str) -> Result<Tensor> {
    fn collect<T: Datum + Clone>(value: &TractTensor) -> Result<Vec<T>> {
        value
            .to_plain_array_view::<T>()
            .map(|view| view.iter().cloned().collect())
            .map_err(|e| Error::Inference(format!("cannot read output: {e:#}")))
    }
    let data = match value.datum_type() {
        DatumType::Bool => TensorData::Bool(collect(value)?),
        DatumType::U8 => TensorData::Uint8(collect(value)?),
        DatumType::U16 => TensorData::Uint16(collect(value)?),
        DatumType::U32 => TensorData::Uint32(collect(value)?),
        DatumType::U64 => TensorData::Uint64(collect(value)?),
        DatumType::I8 => TensorData::Int8(collect(value)?),
        DatumType::I16 => TensorData::Int16(collect(value)?),
        DatumType::I32 => TensorData::Int32(collect(value)?),
        DatumType::I64 => TensorData::Int64(collect(value)?),
        DatumType::F16 => TensorData::Fp16(collect(value)?),
        DatumType::F32 => TensorData::Fp32(collect(value)?),
        DatumType::F64 => TensorData::Fp64(collect(value)?),
        DatumType::TDim => {
            let ints = value
                .cast_to::<i64>()
                .map_err(|e| Error::Inference(format!("output '{name}': {e:#}")))?;
            TensorData::Int64(collect(&ints)?)
        }
        DatumType::String => TensorData::Bytes(
            collect::<String>(value)?
                .into_iter()
                .map(String::into_bytes)
                .collect(),
        ),
        other => {
            return Err(Error::Inference(format!(
                "output '{name}' has element type {other:?}, which the inference protocol cannot carry"
            )));
        }
    };
    Tensor::new(name, value.shape().to_vec(), data)
        .map_err(|e| Error::Inference(format!("output '{name}': {e}")))
}

#[cfg(test)]
mod tests;
