//! The Open Inference Protocol (V2) over REST: request decoding, response and
//! metadata encoding.

use inferd_tensor::{DataType, Tensor, TensorData, TensorSpec, element_count};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::binary;
use crate::data::{self, Flat};
use crate::{DecodeError, EncodeError, Parameters};

/// A decoded `POST /v2/models/{m}/infer` body.
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    pub parameters: Option<Parameters>,
    pub inputs: Vec<Tensor>,
    /// Outputs the caller asked for; `None` means all of them.
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// An entry of the request's `outputs`.
#[derive(Debug, Deserialize, PartialEq)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct WireRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(borrow)]
    inputs: Vec<WireInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
struct WireInput<'a> {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Parameters>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Decodes a V2 inference request body (JSON only) into typed tensors.
///
/// Checks everything that can be checked without the model: the JSON's
/// structure, datatype names, that each element fits its datatype, and that
/// the element count matches the declared shape. Errors name the field.
pub fn decode_infer_request(body: &[u8]) -> Result<InferRequest, DecodeError> {
    decode(body, None)
}

/// Decodes a body in the binary tensor data extension's layout: a JSON header
/// of `json_len` bytes (the `Inference-Header-Content-Length` header), then
/// the raw bytes of every input whose `parameters.binary_data_size` is set,
/// in the order of `inputs`.
pub fn decode_infer_request_binary(
    body: &[u8],
    json_len: usize,
) -> Result<InferRequest, DecodeError> {
    if json_len == 0 {
        return Err(DecodeError::new(
            "",
            "Inference-Header-Content-Length: 0 (a raw binary request) is not supported; send a JSON header",
        ));
    }
    if json_len > body.len() {
        return Err(DecodeError::new(
            "",
            format!(
                "Inference-Header-Content-Length is {json_len} but the body holds {} bytes",
                body.len()
            ),
        ));
    }
    let (json, binary) = body.split_at(json_len);
    decode(json, Some(binary))
}

fn decode(json: &[u8], mut binary: Option<&[u8]>) -> Result<InferRequest, DecodeError> {
    let wire: WireRequest<'_> = crate::parse_json(json)?;
    let mut inputs = Vec::with_capacity(wire.inputs.len());
    for (i, input) in wire.inputs.into_iter().enumerate() {
        let path = |field: &str| format!("inputs[{i}].{field}");
        if inputs.iter().any(|t: &Tensor| t.name() == input.name) {
            return Err(DecodeError::new(
                path("name"),
                format!("input '{}' is given twice", input.name),
            ));
        }
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            DecodeError::new(
                path("datatype"),
                format!("unknown datatype '{}'", input.datatype),
            )
        })?;
        let shape = shape_from_wire(&input.shape).ok_or_else(|| {
            DecodeError::new(
                path("shape"),
                format!("{:?} holds more elements than fit in memory", input.shape),
            )
        })?;
        let count = element_count(&shape).unwrap_or(0);
        let binary_size = match input
            .parameters
            .as_ref()
            .and_then(|p| p.get("binary_data_size"))
        {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                DecodeError::new(
                    path("parameters.binary_data_size"),
                    "must be a non-negative integer",
                )
            })?),
        };
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(DecodeError::new(
                    path("data"),
                    "give either `data` or parameters.binary_data_size, not both",
                ));
            }
            (Some(size), None) => {
                let rest = binary.as_mut().ok_or_else(|| {
                    DecodeError::new(
                        path("parameters.binary_data_size"),
                        "binary data needs the Inference-Header-Content-Length header",
                    )
                })?;
                let size = usize::try_from(size)
                    .ok()
                    .filter(|s| *s <= rest.len())
                    .ok_or_else(|| {
                        DecodeError::new(
                            path("parameters.binary_data_size"),
                            format!("{size} bytes, but only {} are left in the body", rest.len()),
                        )
                    })?;
                let (mine, others) = rest.split_at(size);
                *rest = others;
                binary::decode(mine, datatype, count)
                    .map_err(|e| DecodeError::new(path("parameters.binary_data_size"), e))?
            }
            (None, Some(raw)) => {
                let mut data = TensorData::with_capacity(datatype, count.min(1 << 16));
                data::decode_into(raw.get(), &mut data)
                    .map_err(|e| DecodeError::new(path("data"), e.to_string()))?;
                data
            }
            (None, None) => {
                return Err(DecodeError::new(
                    path("data"),
                    "missing: each input needs `data` or parameters.binary_data_size",
                ));
            }
        };
        let tensor = Tensor::new(input.name, shape, data)
            .map_err(|e| DecodeError::new(path("data"), e.to_string()))?;
        inputs.push(tensor);
    }
    if let Some(left) = binary.filter(|b| !b.is_empty()) {
        return Err(DecodeError::new(
            "",
            format!(
                "{} bytes of binary data follow the inputs' binary_data_size total",
                left.len()
            ),
        ));
    }
    Ok(InferRequest {
        id: wire.id,
        parameters: wire.parameters,
        inputs,
        outputs: wire.outputs,
    })
}

/// Converts wire dims to a shape whose element count fits in `usize`.
fn shape_from_wire(dims: &[u64]) -> Option<Vec<usize>> {
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<Vec<_>>>()?;
    element_count(&shape)?;
    Some(shape)
}

/// What a response says of itself besides its outputs.
#[derive(Debug, Clone, Copy)]
pub struct ResponseHeader<'a> {
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub id: Option<&'a str>,
}

#[derive(Serialize)]
struct WireResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<WireOutput<'a>>,
}

#[derive(Serialize)]
struct WireOutput<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Flat<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// An encoded response: with binary outputs, `json_len` is the length of the
/// JSON header (the `Inference-Header-Content-Length` to send).
#[derive(Debug)]
pub struct EncodedResponse {
    pub body: Vec<u8>,
    pub json_len: Option<usize>,
}

/// Encodes a V2 inference response. Outputs whose flag in `binary` is set are
/// sent as raw bytes after the JSON header; the others as flat JSON `data`.
pub fn encode_infer_response_binary(
    header: ResponseHeader<'_>,
    outputs: &[Tensor],
    binary: &[bool],
) -> Result<EncodedResponse, EncodeError> {
    let is_binary = |i: usize| binary.get(i).copied().unwrap_or(false);
    if !(0..outputs.len()).any(is_binary) {
        return encode_infer_response(header, outputs).map(|body| EncodedResponse {
            body,
            json_len: None,
        });
    }
    let mut blobs = Vec::new();
    let mut wire = Vec::with_capacity(outputs.len());
    for (i, t) in outputs.iter().enumerate() {
        let (parameters, data) = if is_binary(i) {
            let size = binary::encode(t.data(), &mut blobs);
            (
                Some(BinarySize {
                    binary_data_size: size,
                }),
                None,
            )
        } else {
            (None, Some(Flat(t.data())))
        };
        wire.push(WireOutput {
            name: t.name(),
            datatype: t.datatype().as_str(),
            shape: t.shape(),
            parameters,
            data,
        });
    }
    let response = WireResponse {
        model_name: header.model_name,
        model_version: header.model_version,
        id: header.id,
        outputs: wire,
    };
    let mut body = serde_json::to_vec(&response).map_err(|e| EncodeError(e.to_string()))?;
    let json_len = body.len();
    body.extend_from_slice(&blobs);
    Ok(EncodedResponse {
        body,
        json_len: Some(json_len),
    })
}

/// Encodes a V2 inference response with flat, row-major `data`.
pub fn encode_infer_response(
    header: ResponseHeader<'_>,
    outputs: &[Tensor],
) -> Result<Vec<u8>, EncodeError> {
    let response = WireResponse {
        model_name: header.model_name,
        model_version: header.model_version,
        id: header.id,
        outputs: outputs
            .iter()
            .map(|t| WireOutput {
                name: t.name(),
                datatype: t.datatype().as_str(),
                shape: t.shape(),
                parameters: None,
                data: Some(Flat(t.data())),
            })
            .collect(),
    };
    let mut out =
        Vec::with_capacity(128 + outputs.iter().map(|t| t.data().len() * 12).sum::<usize>());
    serde_json::to_writer(&mut out, &response).map_err(|e| EncodeError(e.to_string()))?;
    Ok(out)
}

/// `GET /v2` body.
#[derive(Debug, Serialize)]
pub struct ServerMetadata<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub extensions: &'a [&'a str],
}

/// `GET /v2/models/{m}` body.
#[derive(Debug, Serialize)]
pub struct ModelMetadata<'a> {
    pub name: &'a str,
    pub versions: Vec<&'a str>,
    pub platform: &'a str,
    pub inputs: Vec<MetadataTensor<'a>>,
    pub outputs: Vec<MetadataTensor<'a>>,
}

/// One input or output in model metadata; `-1` marks a dynamic dimension.
#[derive(Debug, Serialize)]
pub struct MetadataTensor<'a> {
    pub name: &'a str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

impl<'a> From<&'a TensorSpec> for MetadataTensor<'a> {
    fn from(spec: &'a TensorSpec) -> Self {
        MetadataTensor {
            name: &spec.name,
            datatype: spec.datatype.as_str(),
            shape: spec.shape_i64(),
        }
    }
}

/// `GET /v2/models/{m}/ready` body.
#[derive(Debug, Serialize)]
pub struct ModelReady<'a> {
    pub name: &'a str,
    pub ready: bool,
}

#[cfg(test)]
mod tests;
