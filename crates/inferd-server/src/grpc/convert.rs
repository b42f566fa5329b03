//! Protobuf messages to and from tensors.
//!
//! Decoding checks what REST's decoder checks before anything sees the
//! model: datatype names, shapes (negative or overflowing dimensions),
//! element ranges and counts against shapes, and that a request carries its
//! data either typed (`contents`) or raw (`raw_input_contents`), never both.
//! Raw contents use the layout of Triton's binary tensor data extension and
//! the same decoder (`inferd_protocol::binary`). Errors name the field, e.g.
//! `inputs[0].contents.fp32_contents: ...`.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use inferd_protocol::DecodeError;
use inferd_protocol::binary;
use inferd_tensor::{DataType, Tensor, TensorData, TensorSpec, element_count};
use serde_json::Value;

use super::proto::infer_parameter::ParameterChoice;
use super::proto::model_infer_request::InferInputTensor;
use super::proto::model_infer_response::InferOutputTensor;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::{
    self, InferParameter, InferStatistics, InferTensorContents, ModelConfig, ModelStatistics,
    StatisticDuration,
};

/// Parameter naming a shared memory region (Triton's extension, unsupported).
const SHARED_MEMORY: &str = "shared_memory_region";

/// Decodes a request's inputs, typed or raw, into tensors.
pub(crate) fn decode_inputs(
    inputs: Vec<InferInputTensor>,
    raw: Vec<Bytes>,
) -> Result<Vec<Tensor>, DecodeError> {
    let use_raw = !raw.is_empty();
    if use_raw && raw.len() != inputs.len() {
        return Err(DecodeError::new(
            "raw_input_contents",
            format!(
                "{} entries given, but the request has {} inputs: give one per input, in order",
                raw.len(),
                inputs.len()
            ),
        ));
    }
    let mut raw = raw.into_iter();
    let mut tensors: Vec<Tensor> = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let path = |field: &str| format!("inputs[{i}].{field}");
        if tensors.iter().any(|t| t.name() == input.name) {
            return Err(DecodeError::new(
                path("name"),
                format!("input '{}' is given twice", input.name),
            ));
        }
        if input.parameters.contains_key(SHARED_MEMORY) {
            return Err(DecodeError::new(
                path(&format!("parameters.{SHARED_MEMORY}")),
                "shared memory is not supported; send the data in the request",
            ));
        }
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            DecodeError::new(
                path("datatype"),
                format!("unknown datatype '{}'", input.datatype),
            )
        })?;
        let shape =
            shape_from_wire(&input.shape).map_err(|e| DecodeError::new(path("shape"), e))?;
        // `shape_from_wire` has checked that the count fits.
        let count = element_count(&shape).unwrap_or(0);
        let contents = input.contents.filter(|c| !is_empty(c));
        let data = match (raw.next(), contents) {
            (Some(_), Some(_)) => {
                return Err(DecodeError::new(
                    path("contents"),
                    "give either typed contents or raw_input_contents, not both",
                ));
            }
            (Some(bytes), None) => binary::decode(&bytes, datatype, count)
                .map_err(|e| DecodeError::new(format!("raw_input_contents[{i}]"), e))?,
            (None, Some(contents)) => typed(contents, datatype, &path("contents"))?,
            (None, None) if count == 0 => TensorData::with_capacity(datatype, 0),
            (None, None) => {
                return Err(DecodeError::new(
                    path("contents"),
                    "missing: each input needs typed contents, or the request raw_input_contents",
                ));
            }
        };
        let tensor = Tensor::new(input.name, shape, data).map_err(|e| {
            let field = if use_raw {
                format!("raw_input_contents[{i}]")
            } else {
                path("contents")
            };
            DecodeError::new(field, e.to_string())
        })?;
        tensors.push(tensor);
    }
    Ok(tensors)
}

/// A wire shape as sizes whose element count fits in memory.
fn shape_from_wire(dims: &[i64]) -> Result<Vec<usize>, String> {
    let shape = dims
        .iter()
        .enumerate()
        .map(|(j, &d)| {
            usize::try_from(d)
                .map_err(|_| format!("dimension {j} is {d}; sizes cannot be negative"))
        })
        .collect::<Result<Vec<usize>, String>>()?;
    if element_count(&shape).is_none() {
        return Err(format!("{dims:?} holds more elements than fit in memory"));
    }
    Ok(shape)
}

fn is_empty(c: &InferTensorContents) -> bool {
    filled_fields(c).next().is_none()
}

/// The names of the typed fields that hold elements.
fn filled_fields(c: &InferTensorContents) -> impl Iterator<Item = &'static str> {
    [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter(|(_, empty)| !empty)
    .map(|(name, _)| name)
}

/// The typed field that carries a datatype's elements; FP16 has none.
fn field_of(datatype: DataType) -> Option<&'static str> {
    Some(match datatype {
        DataType::Bool => "bool_contents",
        DataType::Uint8 | DataType::Uint16 | DataType::Uint32 => "uint_contents",
        DataType::Uint64 => "uint64_contents",
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int_contents",
        DataType::Int64 => "int64_contents",
        DataType::Fp16 => return None,
        DataType::Fp32 => "fp32_contents",
        DataType::Fp64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
    })
}

/// Typed contents as a buffer of `datatype`; only its own field may be set.
fn typed(
    contents: InferTensorContents,
    datatype: DataType,
    path: &str,
) -> Result<TensorData, DecodeError> {
    let Some(own) = field_of(datatype) else {
        return Err(DecodeError::new(
            path,
            format!("{datatype} has no typed contents field; send it in raw_input_contents"),
        ));
    };
    if let Some(other) = filled_fields(&contents).find(|f| *f != own) {
        return Err(DecodeError::new(
            format!("{path}.{other}"),
            format!("{datatype} elements go in {own}, not {other}"),
        ));
    }
    let field = format!("{path}.{own}");
    let InferTensorContents {
        bool_contents,
        int_contents,
        int64_contents,
        uint_contents,
        uint64_contents,
        fp32_contents,
        fp64_contents,
        bytes_contents,
    } = contents;
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(bool_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(uint_contents, datatype, &field)?),
        DataType::Uint16 => TensorData::Uint16(narrow(uint_contents, datatype, &field)?),
        DataType::Uint32 => TensorData::Uint32(uint_contents),
        DataType::Uint64 => TensorData::Uint64(uint64_contents),
        DataType::Int8 => TensorData::Int8(narrow(int_contents, datatype, &field)?),
        DataType::Int16 => TensorData::Int16(narrow(int_contents, datatype, &field)?),
        DataType::Int32 => TensorData::Int32(int_contents),
        DataType::Int64 => TensorData::Int64(int64_contents),
        DataType::Fp32 => TensorData::Fp32(fp32_contents),
        DataType::Fp64 => TensorData::Fp64(fp64_contents),
        DataType::Bytes => TensorData::Bytes(bytes_contents.into_iter().map(Vec::from).collect()),
        // Refused above: FP16 has no typed field.
        DataType::Fp16 => return Err(DecodeError::new(path, "FP16 needs raw contents")),
    })
}

/// Elements of a wider protobuf type, each checked to fit `datatype`.
fn narrow<S, T>(values: Vec<S>, datatype: DataType, field: &str) -> Result<Vec<T>, DecodeError>
where
    S: Copy + std::fmt::Display,
    T: TryFrom<S>,
{
    values
        .into_iter()
        .enumerate()
        .map(|(k, v)| {
            T::try_from(v).map_err(|_| {
                DecodeError::new(
                    field,
                    format!("element {k}: {v} is out of range for {datatype}"),
                )
            })
        })
        .collect()
}

/// Outputs as Triton answers them: metadata in `outputs`, the elements in
/// `raw_output_contents`, one entry per output in the same order.
pub(crate) fn encode_outputs(outputs: Vec<Tensor>) -> (Vec<InferOutputTensor>, Vec<Bytes>) {
    let mut metadata = Vec::with_capacity(outputs.len());
    let mut raw = Vec::with_capacity(outputs.len());
    for tensor in outputs {
        let (name, shape, data) = tensor.into_parts();
        let mut bytes = Vec::new();
        binary::encode(&data, &mut bytes);
        raw.push(Bytes::from(bytes));
        metadata.push(InferOutputTensor {
            name,
            datatype: data.datatype().as_str().to_owned(),
            shape: shape_to_wire(&shape),
            parameters: HashMap::new(),
            contents: None,
        });
    }
    (metadata, raw)
}

fn shape_to_wire(shape: &[usize]) -> Vec<i64> {
    shape
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect()
}

/// A declared input or output as model metadata reports it.
pub(crate) fn tensor_metadata(spec: &TensorSpec) -> TensorMetadata {
    TensorMetadata {
        name: spec.name.clone(),
        datatype: spec.datatype.as_str().to_owned(),
        shape: spec.shape_i64(),
    }
}

/// The request parameter `timeout` (Triton's name): microseconds the request
/// may take. 0 means no timeout, as in Triton.
pub(crate) fn timeout_parameter(
    parameters: &HashMap<String, InferParameter>,
) -> Result<Option<Duration>, DecodeError> {
    let Some(p) = parameters.get("timeout") else {
        return Ok(None);
    };
    let micros = match p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(v).ok(),
        Some(ParameterChoice::Uint64Param(v)) => Some(v),
        _ => None,
    };
    match micros {
        None => Err(DecodeError::new(
            "parameters.timeout",
            "must be a non-negative integer number of microseconds (int64_param)",
        )),
        Some(0) => Ok(None),
        Some(us) => Ok(Some(Duration::from_micros(us))),
    }
}

/// Refuses a requested output that names a shared memory region.
pub(crate) fn check_output_parameters(
    index: usize,
    parameters: &HashMap<String, InferParameter>,
) -> Result<(), DecodeError> {
    if parameters.contains_key(SHARED_MEMORY) {
        return Err(DecodeError::new(
            format!("outputs[{index}].parameters.{SHARED_MEMORY}"),
            "shared memory is not supported; outputs come in raw_output_contents",
        ));
    }
    Ok(())
}

/// Triton's model configuration from its JSON form (what REST `/config`
/// answers), so both protocols report the same configuration.
pub(crate) fn config_from_json(v: &Value) -> ModelConfig {
    let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
    let dims = |v: &Value| -> Vec<i64> {
        v["dims"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    };
    let data_type = |v: &Value| {
        proto::DataType::from_str_name(v["data_type"].as_str().unwrap_or_default())
            .unwrap_or(proto::DataType::TypeInvalid) as i32
    };
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let version_policy = v.get("version_policy").and_then(|p| {
        use proto::model_version_policy::{All, Latest, PolicyChoice, Specific};
        let choice = if p.get("all").is_some() {
            PolicyChoice::All(All {})
        } else if let Some(latest) = p.get("latest") {
            PolicyChoice::Latest(Latest {
                num_versions: latest["num_versions"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1),
            })
        } else if let Some(specific) = p.get("specific") {
            PolicyChoice::Specific(Specific {
                versions: specific["versions"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default(),
            })
        } else {
            return None;
        };
        Some(proto::ModelVersionPolicy {
            policy_choice: Some(choice),
        })
    });
    let dynamic_batching = v.get("dynamic_batching").map(|b| {
        let policy = &b["default_queue_policy"];
        proto::ModelDynamicBatching {
            preferred_batch_size: b["preferred_batch_size"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n.as_i64().and_then(|n| i32::try_from(n).ok()))
                        .collect()
                })
                .unwrap_or_default(),
            max_queue_delay_microseconds: b["max_queue_delay_microseconds"].as_u64().unwrap_or(0),
            preserve_ordering: b["preserve_ordering"].as_bool().unwrap_or(false),
            default_queue_policy: policy.is_object().then(|| proto::ModelQueuePolicy {
                timeout_action: proto::model_queue_policy::TimeoutAction::from_str_name(
                    policy["timeout_action"].as_str().unwrap_or_default(),
                )
                .unwrap_or(proto::model_queue_policy::TimeoutAction::Reject)
                    as i32,
                default_timeout_microseconds: policy["default_timeout_microseconds"]
                    .as_u64()
                    .unwrap_or(0),
                allow_timeout_override: policy["allow_timeout_override"].as_bool().unwrap_or(false),
                max_queue_size: policy["max_queue_size"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0),
            }),
        }
    });
    ModelConfig {
        name: text(v, "name"),
        platform: text(v, "platform"),
        backend: text(v, "backend"),
        runtime: text(v, "runtime"),
        default_model_filename: text(v, "default_model_filename"),
        version_policy,
        dynamic_batching,
        max_batch_size: v["max_batch_size"]
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0),
        input: list(&v["input"])
            .iter()
            .map(|t| proto::ModelInput {
                name: text(t, "name"),
                data_type: data_type(t),
                dims: dims(t),
                ..Default::default()
            })
            .collect(),
        output: list(&v["output"])
            .iter()
            .map(|t| proto::ModelOutput {
                name: text(t, "name"),
                data_type: data_type(t),
                dims: dims(t),
                ..Default::default()
            })
            .collect(),
        instance_group: list(&v["instance_group"])
            .iter()
            .map(|g| proto::ModelInstanceGroup {
                name: text(g, "name"),
                kind: proto::model_instance_group::Kind::from_str_name(
                    g["kind"].as_str().unwrap_or_default(),
                )
                .unwrap_or(proto::model_instance_group::Kind::Auto) as i32,
                count: g["count"]
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or(1),
                gpus: Vec::new(),
            })
            .collect(),
    }
}

/// One model version's statistics from their JSON form (an entry of REST
/// `/stats`' `model_stats`), so both protocols report the same numbers.
pub(crate) fn statistics_from_json(v: &Value) -> ModelStatistics {
    let duration = |d: &Value| StatisticDuration {
        count: d["count"].as_u64().unwrap_or(0),
        ns: d["ns"].as_u64().unwrap_or(0),
    };
    let s = &v["inference_stats"];
    ModelStatistics {
        name: v["name"].as_str().unwrap_or_default().to_owned(),
        version: v["version"].as_str().unwrap_or_default().to_owned(),
        last_inference: v["last_inference"].as_u64().unwrap_or(0),
        inference_count: v["inference_count"].as_u64().unwrap_or(0),
        execution_count: v["execution_count"].as_u64().unwrap_or(0),
        inference_stats: Some(InferStatistics {
            success: Some(duration(&s["success"])),
            fail: Some(duration(&s["fail"])),
            queue: Some(duration(&s["queue"])),
            compute_input: Some(duration(&s["compute_input"])),
            compute_infer: Some(duration(&s["compute_infer"])),
            compute_output: Some(duration(&s["compute_output"])),
            cache_hit: Some(duration(&s["cache_hit"])),
            cache_miss: Some(duration(&s["cache_miss"])),
        }),
        batch_stats: v["batch_stats"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|b| proto::InferBatchStatistics {
                        batch_size: b["batch_size"].as_u64().unwrap_or(0),
                        compute_input: Some(duration(&b["compute_input"])),
                        compute_infer: Some(duration(&b["compute_infer"])),
                        compute_output: Some(duration(&b["compute_output"])),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
