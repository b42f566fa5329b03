use super::*;
use inferd_tensor::{Dim, TensorData, f16};

fn decode(body: &str) -> Result<InferRequest, DecodeError> {
    decode_infer_request(body.as_bytes())
}

#[test]
fn decodes_the_readme_request() {
    let req = decode(
        r#"{"id": "r1", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
            "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}"#,
    )
    .expect("decodes");
    assert_eq!(req.id.as_deref(), Some("r1"));
    assert_eq!(req.inputs.len(), 1);
    assert_eq!(req.inputs[0].name(), "input");
    assert_eq!(req.inputs[0].shape(), &[2, 4]);
    assert_eq!(
        req.inputs[0].data(),
        &TensorData::Fp32(vec![5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3])
    );
    assert!(req.outputs.is_none());
}

#[test]
fn nested_data_and_parameters_are_accepted() {
    let req = decode(
        r#"{"parameters": {"priority": 1}, "inputs": [{"datatype": "INT64", "name": "x",
            "parameters": {"a": "b"}, "data": [[1, 2], [3, 4]], "shape": [2, 2]}],
            "outputs": [{"name": "y", "parameters": {"classification": 0}}]}"#,
    )
    .expect("decodes");
    assert_eq!(req.inputs[0].data(), &TensorData::Int64(vec![1, 2, 3, 4]));
    assert_eq!(req.parameters.expect("parameters")["priority"], 1);
    let outputs = req.outputs.expect("outputs");
    assert_eq!(outputs[0].name, "y");
}

#[test]
fn every_datatype_decodes() {
    let cases = [
        ("BOOL", "[true, false]", TensorData::Bool(vec![true, false])),
        ("UINT8", "[1, 2]", TensorData::Uint8(vec![1, 2])),
        ("UINT16", "[1, 2]", TensorData::Uint16(vec![1, 2])),
        ("UINT32", "[1, 2]", TensorData::Uint32(vec![1, 2])),
        ("UINT64", "[1, 2]", TensorData::Uint64(vec![1, 2])),
        ("INT8", "[-1, 2]", TensorData::Int8(vec![-1, 2])),
        ("INT16", "[-1, 2]", TensorData::Int16(vec![-1, 2])),
        ("INT32", "[-1, 2]", TensorData::Int32(vec![-1, 2])),
        ("INT64", "[-1, 2]", TensorData::Int64(vec![-1, 2])),
        (
            "FP16",
            "[0.5, 2]",
            TensorData::Fp16(vec![f16::from_f32(0.5), f16::from_f32(2.0)]),
        ),
        ("FP32", "[0.5, 2]", TensorData::Fp32(vec![0.5, 2.0])),
        ("FP64", "[0.5, 2]", TensorData::Fp64(vec![0.5, 2.0])),
        (
            "BYTES",
            r#"["ab", "c"]"#,
            TensorData::Bytes(vec![b"ab".to_vec(), b"c".to_vec()]),
        ),
    ];
    for (datatype, data, want) in cases {
        let body = format!(
            r#"{{"inputs": [{{"name": "x", "shape": [2], "datatype": "{datatype}", "data": {data}}}]}}"#
        );
        let req = decode(&body).unwrap_or_else(|e| panic!("{datatype}: {e}"));
        assert_eq!(req.inputs[0].data(), &want, "{datatype}");
    }
}

/// Each bad body, the path the error must name, and a part of its message.
#[test]
fn bad_requests_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("", "", "empty"),
        ("   \n", "", "empty"),
        ("{", "", "EOF"),
        ("not json", "", "must be a JSON object"),
        ("[]", "", "must be a JSON object"),
        ("null", "", "must be a JSON object"),
        ("{}", "", "missing field `inputs`"),
        (r#"{"inputs": {}}"#, "inputs", "invalid type: map"),
        (r#"{"inputs": [{}]}"#, "inputs[0]", "missing field `name`"),
        (
            r#"{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}"#,
            "inputs[0]",
            "missing field `shape`",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [1], "data": [1]}]}"#,
            "inputs[0]",
            "missing field `datatype`",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}"#,
            "inputs[0].data",
            "missing",
        ),
        (
            r#"{"inputs": [{"name": 7, "shape": [1], "datatype": "FP32", "data": [1]}]}"#,
            "inputs[0].name",
            "invalid type: integer",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": "2", "datatype": "FP32", "data": [1]}]}"#,
            "inputs[0].shape",
            "invalid type: string",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}"#,
            "inputs[0].shape[0]",
            "invalid value: integer `-1`",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [1.5], "datatype": "FP32", "data": [1]}]}"#,
            "inputs[0].shape[0]",
            "invalid type: floating point",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT32", "data": [1]}]}"#,
            "inputs[0].datatype",
            "unknown datatype 'FLOAT32'",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3]}]}"#,
            "inputs[0].data",
            "shape [2, 4] holds 8 elements but 3 were given",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [4294967296, 4294967296, 4294967296], "datatype": "FP32", "data": [1]}]}"#,
            "inputs[0].shape",
            "more elements than fit in memory",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [100000000000], "datatype": "FP32", "data": [1]}]}"#,
            "inputs[0].data",
            "holds 100000000000 elements but 1 were given",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [99999999999999999999], "datatype": "FP32", "data": [1]}]}"#,
            "inputs[0].shape[0]",
            "",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, NaN]}]}"#,
            "inputs[0].data",
            "",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "Infinity"]}]}"#,
            "inputs[0].data",
            "element 1: expected a number for FP32, found a string",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1e39]}]}"#,
            "inputs[0].data",
            "out of range for FP32",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1e999]}]}"#,
            "inputs[0].data",
            "",
        ),
        (
            r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
                          {"name": "x", "shape": [1], "datatype": "FP32", "data": [2]}]}"#,
            "inputs[1].name",
            "given twice",
        ),
        (r#"{"id": 5, "inputs": []}"#, "id", "invalid type: integer"),
        (
            r#"{"inputs": [], "outputs": [{"nom": "y"}]}"#,
            "outputs[0]",
            "missing field `name`",
        ),
        (r#"{"inputs": []} trailing"#, "", "trailing characters"),
    ];
    for (body, path, message) in cases {
        let err = decode(body)
            .err()
            .unwrap_or_else(|| panic!("{body} decoded"));
        assert_eq!(err.path(), *path, "{body}: {err}");
        assert!(
            err.message().contains(message),
            "{body}: message {:?} lacks {message:?}",
            err.message()
        );
    }
}

#[test]
fn response_encodes_flat_and_round_trips() {
    let outputs = vec![
        Tensor::new("label", vec![2], TensorData::Int64(vec![0, 2])).expect("tensor"),
        Tensor::new(
            "probabilities",
            vec![2, 3],
            TensorData::Fp32(vec![0.9, 0.05, 0.05, 0.1, 0.2, 0.7]),
        )
        .expect("tensor"),
    ];
    let body = encode_infer_response(
        ResponseHeader {
            model_name: "iris",
            model_version: "1",
            id: Some("abc"),
        },
        &outputs,
    )
    .expect("encodes");
    let text = String::from_utf8(body).expect("utf8");
    assert_eq!(
        text,
        r#"{"model_name":"iris","model_version":"1","id":"abc","outputs":[{"name":"label","datatype":"INT64","shape":[2],"data":[0,2]},{"name":"probabilities","datatype":"FP32","shape":[2,3],"data":[0.9,0.05,0.05,0.1,0.2,0.7]}]}"#
    );
    // The response's outputs are valid request inputs: the codec round-trips.
    let as_request = text.replace("\"outputs\"", "\"inputs\"");
    let req = decode(&as_request).expect("round-trips");
    assert_eq!(req.inputs, outputs);
}

#[test]
fn metadata_writes_dynamic_dims_as_minus_one() {
    let spec = TensorSpec::new("input", DataType::Fp32, vec![Dim::Dynamic, Dim::Fixed(4)]);
    let meta = ModelMetadata {
        name: "iris",
        versions: vec!["1"],
        platform: "onnx",
        inputs: vec![MetadataTensor::from(&spec)],
        outputs: vec![],
    };
    let json = serde_json::to_value(&meta).expect("encodes");
    assert_eq!(
        json,
        serde_json::json!({"name": "iris", "versions": ["1"], "platform": "onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}], "outputs": []})
    );
}

fn binary_body(json: &str, blobs: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut body = json.as_bytes().to_vec();
    for b in blobs {
        body.extend_from_slice(b);
    }
    (body, json.len())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn binary_and_json_inputs_mix() {
    let a = f32_bytes(&[1.0, 2.0, 3.0, 4.0]);
    let b: Vec<u8> = [7i64, 8].iter().flat_map(|x| x.to_le_bytes()).collect();
    let json = r#"{"inputs": [
        {"name": "a", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
        {"name": "j", "shape": [1], "datatype": "BOOL", "data": [true]},
        {"name": "b", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}
    ], "outputs": [{"name": "y", "parameters": {"binary_data": true}}]}"#;
    let (body, len) = binary_body(json, &[&a, &b]);
    let req = decode_infer_request_binary(&body, len).expect("decodes");
    assert_eq!(
        req.inputs[0].data(),
        &TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0])
    );
    assert_eq!(req.inputs[1].data(), &TensorData::Bool(vec![true]));
    assert_eq!(req.inputs[2].data(), &TensorData::Int64(vec![7, 8]));
}

#[test]
fn bad_binary_requests_name_the_field() {
    let input = |size: &str| {
        format!(
            r#"{{"inputs": [{{"name": "a", "shape": [2], "datatype": "FP32", "parameters": {{"binary_data_size": {size}}}}}]}}"#
        )
    };
    let two = f32_bytes(&[1.0, 2.0]);
    let cases: Vec<(Vec<u8>, usize, &str, &str)> = vec![
        (input("8").into_bytes(), 0, "", "raw binary request"),
        (
            input("8").into_bytes(),
            10_000,
            "",
            "Inference-Header-Content-Length is 10000",
        ),
        (
            {
                let (b, _) = binary_body(&input("8"), &[&two[..4]]);
                b
            },
            input("8").len(),
            "inputs[0].parameters.binary_data_size",
            "only 4 are left",
        ),
        (
            {
                let (b, _) = binary_body(&input("4"), &[&two[..4]]);
                b
            },
            input("4").len(),
            "inputs[0].parameters.binary_data_size",
            "2 FP32 elements take 8",
        ),
        (
            {
                let (b, _) = binary_body(&input("8"), &[&two, &[0]]);
                b
            },
            input("8").len(),
            "",
            "1 bytes of binary data follow",
        ),
        (
            {
                let (b, _) = binary_body(&input("\"8\""), &[&two]);
                b
            },
            input("\"8\"").len(),
            "inputs[0].parameters.binary_data_size",
            "non-negative integer",
        ),
        (
            {
                let (b, _) = binary_body(&input("-8"), &[&two]);
                b
            },
            input("-8").len(),
            "inputs[0].parameters.binary_data_size",
            "non-negative integer",
        ),
        (
            {
                let (b, _) = binary_body(&input("99999999999999999999"), &[&two]);
                b
            },
            input("99999999999999999999").len(),
            "inputs[0].parameters.binary_data_size",
            "",
        ),
    ];
    for (body, len, path, message) in cases {
        let err = decode_infer_request_binary(&body, len).expect_err("must fail");
        assert_eq!(err.path(), path, "{err}");
        assert!(err.message().contains(message), "{err} lacks {message}");
    }
    // Binary sizes without the header, and both data and a binary size.
    let err = decode(&input("8")).expect_err("no header");
    assert!(
        err.message()
            .contains("needs the Inference-Header-Content-Length"),
        "{err}"
    );
    let both = r#"{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": 4}}]}"#;
    let err = decode_infer_request_binary(both.as_bytes(), both.len()).expect_err("both");
    assert_eq!(err.path(), "inputs[0].data");
}

#[test]
fn binary_response_has_a_json_header_then_blobs() {
    let outputs = vec![
        Tensor::new("label", vec![2], TensorData::Int64(vec![0, 2])).expect("tensor"),
        Tensor::new("p", vec![2], TensorData::Fp32(vec![0.5, 0.25])).expect("tensor"),
    ];
    let header = ResponseHeader {
        model_name: "iris",
        model_version: "1",
        id: None,
    };
    let encoded = encode_infer_response_binary(header, &outputs, &[false, true]).expect("encodes");
    let json_len = encoded.json_len.expect("binary");
    let json: serde_json::Value =
        serde_json::from_slice(&encoded.body[..json_len]).expect("json header");
    assert_eq!(json["outputs"][0]["data"], serde_json::json!([0, 2]));
    assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 8);
    assert!(json["outputs"][1].get("data").is_none());
    assert_eq!(&encoded.body[json_len..], &f32_bytes(&[0.5, 0.25])[..]);
    // No binary outputs: plain JSON, no header length.
    let plain = encode_infer_response_binary(header, &outputs, &[]).expect("encodes");
    assert!(plain.json_len.is_none());
    assert_eq!(
        plain.body,
        encode_infer_response(header, &outputs).expect("encodes")
    );
}
