//! KServe V1 (TensorFlow Serving's row format): `{"instances": [...]}` in,
//! `{"predictions": [...]}` out.
//!
//! An instance is one row. For a model with one input it is that input's row
//! (a scalar or a nested array); for several inputs it is an object keyed by
//! input name. Rows are stacked into tensors with a leading batch dimension.
//! Predictions follow TensorFlow Serving: with one output each prediction is
//! that output's row; with several it is an object keyed by output name.

use inferd_tensor::{Tensor, TensorData, TensorSpec};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::collections::HashMap;

use crate::data::{self, Nested};
use crate::{DecodeError, EncodeError, Parameters};

#[derive(Deserialize)]
struct WirePredict<'a> {
    /// KServe also accepts TensorFlow Serving's `inputs` name for the rows.
    #[serde(borrow, alias = "inputs")]
    instances: Vec<&'a RawValue>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Parameters>,
}

/// Decodes a `:predict` body into one tensor per model input, in `inputs` order.
pub fn decode_predict_request(
    body: &[u8],
    inputs: &[TensorSpec],
) -> Result<Vec<Tensor>, DecodeError> {
    let wire: WirePredict<'_> = crate::parse_json(body)?;
    if wire.instances.is_empty() {
        return Err(DecodeError::new(
            "instances",
            "must hold at least one instance",
        ));
    }
    let mut columns: Vec<Column> = inputs.iter().map(Column::new).collect();
    for (row, raw) in wire.instances.iter().enumerate() {
        let text = raw.get();
        let keyed = text.trim_start().starts_with('{');
        if keyed {
            let fields: HashMap<&str, &RawValue> = serde_json::from_str(text)
                .map_err(|e| DecodeError::new(format!("instances[{row}]"), e.to_string()))?;
            if let Some(unknown) = fields
                .keys()
                .find(|k| !inputs.iter().any(|s| s.name == **k))
            {
                return Err(DecodeError::new(
                    format!("instances[{row}].{unknown}"),
                    "the model has no input of this name",
                ));
            }
            for column in &mut columns {
                let value = fields.get(column.spec.name.as_str()).ok_or_else(|| {
                    DecodeError::new(
                        format!("instances[{row}]"),
                        format!("missing input '{}'", column.spec.name),
                    )
                })?;
                column.push(
                    value.get(),
                    &format!("instances[{row}].{}", column.spec.name),
                )?;
            }
        } else {
            match columns.as_mut_slice() {
                [column] => column.push(text, &format!("instances[{row}]"))?,
                _ => {
                    return Err(DecodeError::new(
                        format!("instances[{row}]"),
                        format!(
                            "the model takes {} inputs, so each instance must be an object keyed by input name",
                            inputs.len()
                        ),
                    ));
                }
            }
        }
    }
    columns
        .into_iter()
        .map(|c| c.finish(wire.instances.len()))
        .collect()
}

/// One input's rows, stacked as they are decoded.
struct Column<'a> {
    spec: &'a TensorSpec,
    data: TensorData,
    row_shape: Option<Vec<usize>>,
}

impl<'a> Column<'a> {
    fn new(spec: &'a TensorSpec) -> Column<'a> {
        Column {
            spec,
            data: TensorData::with_capacity(spec.datatype, 0),
            row_shape: None,
        }
    }

    fn push(&mut self, json: &str, path: &str) -> Result<(), DecodeError> {
        let nested_shape = data::decode_into(json, &mut self.data)
            .map_err(|e| DecodeError::new(path, e.to_string()))?;
        match &self.row_shape {
            None => self.row_shape = Some(nested_shape),
            Some(first) if *first == nested_shape => {}
            Some(first) => {
                return Err(DecodeError::new(
                    path,
                    format!(
                        "shape {:?} differs from instances[0]'s {first:?}; every instance must have the same shape",
                        nested_shape
                    ),
                ));
            }
        }
        Ok(())
    }

    fn finish(self, rows: usize) -> Result<Tensor, DecodeError> {
        let mut shape = vec![rows];
        shape.extend(self.row_shape.unwrap_or_default());
        Tensor::new(self.spec.name.clone(), shape, self.data)
            .map_err(|e| DecodeError::new("instances", e.to_string()))
    }
}

/// Encodes outputs as `{"predictions": [...]}`, one entry per row of the
/// leading (batch) dimension.
pub fn encode_predict_response(outputs: &[Tensor]) -> Result<Vec<u8>, EncodeError> {
    let rows = match outputs.first().and_then(|t| t.shape().first()) {
        Some(&rows) => rows,
        None => {
            return Err(EncodeError(
                "the model's output has no batch dimension; use the V2 protocol".into(),
            ));
        }
    };
    if let Some(t) = outputs.iter().find(|t| t.shape().first() != Some(&rows)) {
        return Err(EncodeError(format!(
            "output '{}' with shape {:?} does not share the batch dimension {rows}; use the V2 protocol",
            t.name(),
            t.shape()
        )));
    }
    let body = Predictions { outputs, rows };
    serde_json::to_vec(&body).map_err(|e| EncodeError(e.to_string()))
}

struct Predictions<'a> {
    outputs: &'a [Tensor],
    rows: usize,
}

impl Serialize for Predictions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rows: Vec<Row<'_>> = (0..self.rows)
            .map(|row| Row {
                outputs: self.outputs,
                row,
            })
            .collect();
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry("predictions", &rows)?;
        map.end()
    }
}

struct Row<'a> {
    outputs: &'a [Tensor],
    row: usize,
}

fn row_block(t: &Tensor, row: usize) -> Nested<'_> {
    let dims = &t.shape()[1..];
    Nested {
        data: t.data(),
        offset: row * dims.iter().product::<usize>(),
        dims,
    }
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.outputs {
            [only] => row_block(only, self.row).serialize(s),
            many => {
                let mut map = s.serialize_map(Some(many.len()))?;
                for t in many {
                    map.serialize_entry(t.name(), &row_block(t, self.row))?;
                }
                map.end()
            }
        }
    }
}

/// `GET /v1/models/{m}` body.
#[derive(Debug, Serialize)]
pub struct ModelStatus<'a> {
    pub name: &'a str,
    pub ready: bool,
}

/// `GET /v1/models` body.
#[derive(Debug, Serialize)]
pub struct ModelList<'a> {
    pub models: Vec<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use inferd_tensor::{DataType, Dim};

    fn spec(name: &str, t: DataType, shape: Vec<Dim>) -> TensorSpec {
        TensorSpec::new(name, t, shape)
    }

    #[test]
    fn rows_stack_into_a_batch() {
        let specs = [spec("x", DataType::Fp32, vec![Dim::Dynamic, Dim::Fixed(4)])];
        let body = br#"{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}"#;
        let tensors = decode_predict_request(body, &specs).expect("decodes");
        assert_eq!(tensors.len(), 1);
        assert_eq!(tensors[0].shape(), &[2, 4]);
        assert_eq!(
            tensors[0].data(),
            &TensorData::Fp32(vec![5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3])
        );
    }

    #[test]
    fn keyed_instances_feed_several_inputs() {
        let specs = [
            spec("a", DataType::Int64, vec![Dim::Dynamic, Dim::Fixed(2)]),
            spec("b", DataType::Bytes, vec![Dim::Dynamic]),
        ];
        let body = br#"{"instances": [{"b": "x", "a": [1, 2]}, {"a": [3, 4], "b": "y"}]}"#;
        let tensors = decode_predict_request(body, &specs).expect("decodes");
        assert_eq!(tensors[0].name(), "a");
        assert_eq!(tensors[0].shape(), &[2, 2]);
        assert_eq!(tensors[0].data(), &TensorData::Int64(vec![1, 2, 3, 4]));
        assert_eq!(tensors[1].shape(), &[2]);
        assert_eq!(
            tensors[1].data(),
            &TensorData::Bytes(vec![b"x".to_vec(), b"y".to_vec()])
        );
    }

    #[test]
    fn bad_predict_bodies_name_the_field() {
        let specs = [spec("x", DataType::Fp32, vec![Dim::Dynamic, Dim::Fixed(2)])];
        let cases: [(&[u8], &str); 8] = [
            (b"", "the request body is empty"),
            (b"{}", "missing field `instances`"),
            (
                br#"{"instances": []}"#,
                "instances: must hold at least one instance",
            ),
            (br#"{"instances": 3}"#, "instances: invalid type"),
            (
                br#"{"instances": [[1, 2], [3]]}"#,
                "instances[1]: shape [1] differs",
            ),
            (
                br#"{"instances": [[1, "a"]]}"#,
                "instances[0]: element 1: expected a number",
            ),
            (
                br#"{"instances": [{"y": [1, 2]}]}"#,
                "instances[0].y: the model has no input",
            ),
            (br#"{"instances": [[1, 2]"#, "EOF"),
        ];
        for (body, want) in cases {
            let err = decode_predict_request(body, &specs).expect_err("must fail");
            assert!(
                err.to_string().contains(want),
                "{}: got {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn predictions_with_one_output_are_rows() {
        let labels = Tensor::new("label", vec![2], TensorData::Int64(vec![0, 2])).expect("tensor");
        let body = encode_predict_response(&[labels]).expect("encodes");
        assert_eq!(body, br#"{"predictions":[0,2]}"#);
    }

    #[test]
    fn predictions_with_several_outputs_are_objects() {
        let labels = Tensor::new("label", vec![2], TensorData::Int64(vec![0, 2])).expect("tensor");
        let probs = Tensor::new(
            "probabilities",
            vec![2, 2],
            TensorData::Fp32(vec![0.75, 0.25, 0.5, 0.5]),
        )
        .expect("tensor");
        let body = encode_predict_response(&[labels, probs]).expect("encodes");
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            r#"{"predictions":[{"label":0,"probabilities":[0.75,0.25]},{"label":2,"probabilities":[0.5,0.5]}]}"#
        );
    }

    #[test]
    fn outputs_without_a_shared_batch_dimension_are_refused() {
        let a = Tensor::new("a", vec![2], TensorData::Int64(vec![0, 2])).expect("tensor");
        let b = Tensor::new("b", vec![3], TensorData::Int64(vec![0, 2, 4])).expect("tensor");
        assert!(encode_predict_response(&[a, b]).is_err());
        let scalar = Tensor::new("s", vec![], TensorData::Int64(vec![1])).expect("tensor");
        assert!(encode_predict_response(&[scalar]).is_err());
    }
}
