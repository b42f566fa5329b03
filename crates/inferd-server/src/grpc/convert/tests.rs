use inferd_tensor::f16;
use serde_json::json;

use super::*;

fn input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: Option<InferTensorContents>,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents,
    }
}

fn raw_of(data: &TensorData) -> Bytes {
    let mut out = Vec::new();
    binary::encode(data, &mut out);
    Bytes::from(out)
}

/// One example buffer of every datatype, four elements each, with extremes.
fn samples() -> Vec<TensorData> {
    vec![
        TensorData::Bool(vec![true, false, false, true]),
        TensorData::Uint8(vec![0, 1, 254, 255]),
        TensorData::Uint16(vec![0, 1, 2, u16::MAX]),
        TensorData::Uint32(vec![0, 1, 2, u32::MAX]),
        TensorData::Uint64(vec![0, 1, 2, u64::MAX]),
        TensorData::Int8(vec![i8::MIN, -1, 0, i8::MAX]),
        TensorData::Int16(vec![i16::MIN, -1, 0, i16::MAX]),
        TensorData::Int32(vec![i32::MIN, -1, 0, i32::MAX]),
        TensorData::Int64(vec![i64::MIN, -1, 0, i64::MAX]),
        TensorData::Fp16(vec![
            f16::from_f32(0.5),
            f16::from_f32(-2.0),
            f16::ZERO,
            f16::MAX,
        ]),
        TensorData::Fp32(vec![0.1, -1.5, 0.0, f32::MAX]),
        TensorData::Fp64(vec![0.1, -1.5, 0.0, 1e300]),
        TensorData::Bytes(vec![
            b"a".to_vec(),
            Vec::new(),
            "üñí".as_bytes().to_vec(),
            vec![0, 0xff],
        ]),
    ]
}

/// The typed contents carrying a buffer (none for FP16).
fn typed_of(data: &TensorData) -> Option<InferTensorContents> {
    let mut c = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::Uint8(v) => c.uint_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::Uint16(v) => c.uint_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::Uint32(v) => c.uint_contents = v.clone(),
        TensorData::Uint64(v) => c.uint64_contents = v.clone(),
        TensorData::Int8(v) => c.int_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::Int16(v) => c.int_contents = v.iter().map(|&x| x.into()).collect(),
        TensorData::Int32(v) => c.int_contents = v.clone(),
        TensorData::Int64(v) => c.int64_contents = v.clone(),
        TensorData::Fp16(_) => return None,
        TensorData::Fp32(v) => c.fp32_contents = v.clone(),
        TensorData::Fp64(v) => c.fp64_contents = v.clone(),
        TensorData::Bytes(v) => c.bytes_contents = v.iter().cloned().map(Bytes::from).collect(),
    }
    Some(c)
}

#[test]
fn every_datatype_decodes_from_typed_contents() {
    for data in samples() {
        let t = data.datatype();
        let Some(contents) = typed_of(&data) else {
            assert_eq!(t, DataType::Fp16);
            continue;
        };
        let got = decode_inputs(
            vec![input("x", t.as_str(), &[2, 2], Some(contents))],
            vec![],
        )
        .unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name(), "x");
        assert_eq!(got[0].shape(), &[2, 2]);
        assert_eq!(got[0].data(), &data, "{t}");
    }
}

#[test]
fn every_datatype_decodes_from_raw_contents() {
    let all = samples();
    let inputs = all
        .iter()
        .enumerate()
        .map(|(i, d)| input(&format!("x{i}"), d.datatype().as_str(), &[4], None))
        .collect();
    let raw = all.iter().map(raw_of).collect();
    let got = decode_inputs(inputs, raw).expect("decodes");
    assert_eq!(got.len(), all.len());
    for (tensor, want) in got.iter().zip(&all) {
        assert_eq!(tensor.shape(), &[4]);
        assert_eq!(tensor.data(), want, "{}", want.datatype());
    }
}

#[test]
fn nan_and_infinity_pass_through_as_data() {
    let typed = InferTensorContents {
        fp32_contents: vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY],
        ..Default::default()
    };
    let got = decode_inputs(vec![input("x", "FP32", &[3], Some(typed))], vec![]).expect("typed");
    let TensorData::Fp32(v) = got[0].data() else {
        panic!("not FP32")
    };
    assert!(v[0].is_nan());
    assert_eq!(&v[1..], &[f32::INFINITY, f32::NEG_INFINITY]);

    let raw = raw_of(&TensorData::Fp64(vec![f64::NAN, -0.0]));
    let got = decode_inputs(vec![input("x", "FP64", &[2], None)], vec![raw]).expect("raw");
    let TensorData::Fp64(v) = got[0].data() else {
        panic!("not FP64")
    };
    assert!(v[0].is_nan());
    assert!(v[1] == 0.0 && v[1].is_sign_negative());
}

#[test]
fn empty_tensors_need_no_contents() {
    let got = decode_inputs(vec![input("x", "FP32", &[0, 4], None)], vec![]).expect("empty");
    assert_eq!(got[0].shape(), &[0, 4]);
    assert!(got[0].data().is_empty());
    // A scalar holds one element.
    let one = InferTensorContents {
        int64_contents: vec![7],
        ..Default::default()
    };
    let got = decode_inputs(vec![input("s", "INT64", &[], Some(one))], vec![]).expect("scalar");
    assert_eq!(got[0].data(), &TensorData::Int64(vec![7]));
}

fn fp32(values: &[f32]) -> Option<InferTensorContents> {
    Some(InferTensorContents {
        fp32_contents: values.to_vec(),
        ..Default::default()
    })
}

#[test]
fn bad_inputs_are_refused_naming_the_field() {
    let ints = |v: Vec<i32>| {
        Some(InferTensorContents {
            int_contents: v,
            ..Default::default()
        })
    };
    let uints = |v: Vec<u32>| {
        Some(InferTensorContents {
            uint_contents: v,
            ..Default::default()
        })
    };
    let shared = {
        let mut i = input("x", "FP32", &[1], fp32(&[1.0]));
        i.parameters.insert(
            SHARED_MEMORY.into(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam("region".into())),
            },
        );
        i
    };
    // What, the inputs, the raw contents, the error path and part of its message.
    type Case = (
        &'static str,
        Vec<InferInputTensor>,
        Vec<Bytes>,
        &'static str,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown datatype",
            vec![input("x", "FLOAT32", &[1], fp32(&[1.0]))],
            vec![],
            "inputs[0].datatype",
            "unknown datatype 'FLOAT32'",
        ),
        (
            "datatype names are case-sensitive",
            vec![input("x", "fp32", &[1], fp32(&[1.0]))],
            vec![],
            "inputs[0].datatype",
            "unknown datatype 'fp32'",
        ),
        (
            "negative dimension",
            vec![input("x", "FP32", &[2, -1], fp32(&[1.0]))],
            vec![],
            "inputs[0].shape",
            "dimension 1 is -1",
        ),
        (
            "huge dimensions",
            vec![input("x", "FP32", &[i64::MAX, i64::MAX], fp32(&[1.0]))],
            vec![],
            "inputs[0].shape",
            "more elements than fit in memory",
        ),
        (
            "huge dimensions with raw contents",
            vec![input("x", "FP32", &[1 << 40, 1 << 40], None)],
            vec![Bytes::from_static(&[0; 4])],
            "inputs[0].shape",
            "more elements than fit in memory",
        ),
        (
            "large shape, few elements",
            vec![input("x", "FP32", &[1 << 30, 1 << 20], fp32(&[1.0]))],
            vec![],
            "inputs[0].contents",
            "but 1 were given",
        ),
        (
            "too few typed elements",
            vec![input("x", "FP32", &[2, 2], fp32(&[1.0, 2.0, 3.0]))],
            vec![],
            "inputs[0].contents",
            "holds 4 elements but 3 were given",
        ),
        (
            "too many typed elements",
            vec![input("x", "FP32", &[1], fp32(&[1.0, 2.0]))],
            vec![],
            "inputs[0].contents",
            "holds 1 elements but 2 were given",
        ),
        (
            "wrong typed field",
            vec![input("x", "FP32", &[2], ints(vec![1, 2]))],
            vec![],
            "inputs[0].contents.int_contents",
            "FP32 elements go in fp32_contents",
        ),
        (
            "two typed fields",
            vec![input(
                "x",
                "INT32",
                &[1],
                Some(InferTensorContents {
                    int_contents: vec![1],
                    int64_contents: vec![1],
                    ..Default::default()
                }),
            )],
            vec![],
            "inputs[0].contents.int64_contents",
            "INT32 elements go in int_contents",
        ),
        (
            "FP16 has no typed field",
            vec![input("x", "FP16", &[1], fp32(&[1.0]))],
            vec![],
            "inputs[0].contents",
            "send it in raw_input_contents",
        ),
        (
            "UINT8 out of range",
            vec![input("x", "UINT8", &[2], uints(vec![1, 300]))],
            vec![],
            "inputs[0].contents.uint_contents",
            "element 1: 300 is out of range for UINT8",
        ),
        (
            "UINT16 out of range",
            vec![input("x", "UINT16", &[1], uints(vec![70_000]))],
            vec![],
            "inputs[0].contents.uint_contents",
            "70000 is out of range for UINT16",
        ),
        (
            "INT8 out of range",
            vec![input("x", "INT8", &[1], ints(vec![-129]))],
            vec![],
            "inputs[0].contents.int_contents",
            "-129 is out of range for INT8",
        ),
        (
            "INT16 out of range",
            vec![input("x", "INT16", &[1], ints(vec![40_000]))],
            vec![],
            "inputs[0].contents.int_contents",
            "40000 is out of range for INT16",
        ),
        (
            "missing contents",
            vec![input("x", "FP32", &[1, 4], None)],
            vec![],
            "inputs[0].contents",
            "missing",
        ),
        (
            "empty contents",
            vec![input(
                "x",
                "FP32",
                &[1, 4],
                Some(InferTensorContents::default()),
            )],
            vec![],
            "inputs[0].contents",
            "missing",
        ),
        (
            "both typed and raw",
            vec![input("x", "FP32", &[1], fp32(&[1.0]))],
            vec![raw_of(&TensorData::Fp32(vec![1.0]))],
            "inputs[0].contents",
            "not both",
        ),
        (
            "fewer raw entries than inputs",
            vec![
                input("a", "FP32", &[1], None),
                input("b", "FP32", &[1], None),
            ],
            vec![raw_of(&TensorData::Fp32(vec![1.0]))],
            "raw_input_contents",
            "1 entries given, but the request has 2 inputs",
        ),
        (
            "more raw entries than inputs",
            vec![input("a", "FP32", &[1], None)],
            vec![
                raw_of(&TensorData::Fp32(vec![1.0])),
                raw_of(&TensorData::Fp32(vec![1.0])),
            ],
            "raw_input_contents",
            "2 entries given, but the request has 1 inputs",
        ),
        (
            "raw bytes do not fill the shape",
            vec![input("x", "FP32", &[2], None)],
            vec![Bytes::from_static(&[0; 7])],
            "raw_input_contents[0]",
            "7 bytes given, but 2 FP32 elements take 8",
        ),
        (
            "raw BOOL that is not 0 or 1",
            vec![input("x", "BOOL", &[2], None)],
            vec![Bytes::from_static(&[1, 2])],
            "raw_input_contents[0]",
            "neither 0 nor 1",
        ),
        (
            "raw BYTES with a truncated length",
            vec![input("x", "BYTES", &[1], None)],
            vec![Bytes::from_static(&[1, 0])],
            "raw_input_contents[0]",
            "truncated length prefix",
        ),
        (
            "raw BYTES running past the end",
            vec![input("x", "BYTES", &[1], None)],
            vec![Bytes::from_static(&[9, 0, 0, 0, b'a'])],
            "raw_input_contents[0]",
            "runs past the end",
        ),
        (
            "raw BYTES count differs from the shape",
            vec![input("x", "BYTES", &[2], None)],
            vec![raw_of(&TensorData::Bytes(vec![b"a".to_vec()]))],
            "raw_input_contents[0]",
            "1 BYTES elements given, but the shape holds 2",
        ),
        (
            "an input given twice",
            vec![
                input("x", "FP32", &[1], fp32(&[1.0])),
                input("x", "FP32", &[1], fp32(&[2.0])),
            ],
            vec![],
            "inputs[1].name",
            "input 'x' is given twice",
        ),
        (
            "shared memory",
            vec![shared],
            vec![],
            "inputs[0].parameters.shared_memory_region",
            "not supported",
        ),
    ];
    for (what, inputs, raw, path, message) in cases {
        let err = decode_inputs(inputs, raw).expect_err(what);
        assert_eq!(err.path(), path, "{what}: {err}");
        assert!(err.message().contains(message), "{what}: {err}");
    }
}

#[test]
fn timeouts_are_microseconds() {
    let with = |choice: Option<ParameterChoice>| {
        let mut p = HashMap::new();
        p.insert(
            "timeout".to_owned(),
            InferParameter {
                parameter_choice: choice,
            },
        );
        timeout_parameter(&p)
    };
    assert_eq!(timeout_parameter(&HashMap::new()), Ok(None));
    assert_eq!(
        with(Some(ParameterChoice::Int64Param(1500))),
        Ok(Some(Duration::from_micros(1500)))
    );
    assert_eq!(
        with(Some(ParameterChoice::Uint64Param(7))),
        Ok(Some(Duration::from_micros(7)))
    );
    // 0 is Triton's "no timeout".
    assert_eq!(with(Some(ParameterChoice::Int64Param(0))), Ok(None));
    for bad in [
        Some(ParameterChoice::Int64Param(-1)),
        Some(ParameterChoice::StringParam("5".into())),
        Some(ParameterChoice::DoubleParam(1.5)),
        Some(ParameterChoice::BoolParam(true)),
        None,
    ] {
        let err = with(bad.clone()).expect_err("refused");
        assert_eq!(err.path(), "parameters.timeout", "{bad:?}");
    }
}

#[test]
fn outputs_are_raw_in_order() {
    let outputs = vec![
        Tensor::new("label", vec![2], TensorData::Int64(vec![1, -2])).expect("label"),
        Tensor::new(
            "words",
            vec![1, 2],
            TensorData::Bytes(vec![b"hi".to_vec(), Vec::new()]),
        )
        .expect("words"),
        Tensor::new("p", vec![1], TensorData::Fp32(vec![f32::NAN])).expect("p"),
    ];
    let (meta, raw) = encode_outputs(outputs);
    let names: Vec<_> = meta
        .iter()
        .map(|m| (m.name.as_str(), m.datatype.as_str(), m.shape.clone()))
        .collect();
    assert_eq!(
        names,
        [
            ("label", "INT64", vec![2]),
            ("words", "BYTES", vec![1, 2]),
            ("p", "FP32", vec![1])
        ]
    );
    assert!(meta.iter().all(|m| m.contents.is_none()));
    assert_eq!(
        raw[0].as_ref(),
        [
            1, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ]
    );
    assert_eq!(raw[1].as_ref(), [2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
    assert_eq!(raw[2].as_ref(), f32::NAN.to_le_bytes());
}

#[test]
fn output_parameters() {
    assert!(check_output_parameters(0, &HashMap::new()).is_ok());
    let mut p = HashMap::new();
    p.insert(
        "binary_data".to_owned(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::BoolParam(true)),
        },
    );
    assert!(check_output_parameters(0, &p).is_ok());
    p.insert(SHARED_MEMORY.to_owned(), InferParameter::default());
    let err = check_output_parameters(3, &p).expect_err("refused");
    assert_eq!(err.path(), "outputs[3].parameters.shared_memory_region");
}

#[test]
fn metadata_tensors() {
    use inferd_tensor::Dim;
    let spec = TensorSpec::new("input", DataType::Fp32, vec![Dim::Dynamic, Dim::Fixed(4)]);
    let m = tensor_metadata(&spec);
    assert_eq!(
        (m.name.as_str(), m.datatype.as_str(), m.shape),
        ("input", "FP32", vec![-1, 4])
    );
}

#[test]
fn configuration_from_its_json_form() {
    let config = config_from_json(&json!({
        "name": "iris",
        "platform": "onnx_onnxv1",
        "backend": "tract",
        "version_policy": {"all": {}},
        "max_batch_size": 8,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": [-1, 4]}],
        "output": [
            {"name": "label", "data_type": "TYPE_INT64", "dims": [-1]},
            {"name": "text", "data_type": "TYPE_STRING", "dims": [1]},
        ],
        "instance_group": [{"name": "iris_0", "kind": "KIND_CPU", "count": 2}],
    }));
    assert_eq!(config.name, "iris");
    assert_eq!(config.platform, "onnx_onnxv1");
    assert_eq!(config.backend, "tract");
    assert_eq!(config.max_batch_size, 8);
    assert_eq!(
        config.version_policy,
        Some(proto::ModelVersionPolicy {
            policy_choice: Some(proto::model_version_policy::PolicyChoice::All(
                proto::model_version_policy::All {}
            )),
        })
    );
    assert_eq!(config.input.len(), 1);
    assert_eq!(config.input[0].name, "input");
    assert_eq!(config.input[0].data_type(), proto::DataType::TypeFp32);
    assert_eq!(config.input[0].dims, [-1, 4]);
    assert_eq!(config.output[0].data_type(), proto::DataType::TypeInt64);
    assert_eq!(config.output[1].data_type(), proto::DataType::TypeString);
    assert_eq!(config.output[1].dims, [1]);
    assert_eq!(config.instance_group.len(), 1);
    assert_eq!(config.instance_group[0].name, "iris_0");
    assert_eq!(
        config.instance_group[0].kind(),
        proto::model_instance_group::Kind::Cpu
    );
    assert_eq!(config.instance_group[0].count, 2);
    assert_eq!(config.dynamic_batching, None);

    let batching = config_from_json(&json!({
        "name": "iris",
        "max_batch_size": 8,
        "dynamic_batching": {
            "max_queue_delay_microseconds": 500,
            "preferred_batch_size": [4, 8],
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "allow_timeout_override": true,
                "max_queue_size": 1024,
                "default_timeout_microseconds": 2_000_000,
            },
        },
    }));
    let b = batching.dynamic_batching.expect("dynamic_batching");
    assert_eq!(b.max_queue_delay_microseconds, 500);
    assert_eq!(b.preferred_batch_size, [4, 8]);
    let policy = b.default_queue_policy.expect("policy");
    assert_eq!(
        policy.timeout_action(),
        proto::model_queue_policy::TimeoutAction::Reject
    );
    assert!(policy.allow_timeout_override);
    assert_eq!(policy.max_queue_size, 1024);
    assert_eq!(policy.default_timeout_microseconds, 2_000_000);
}

#[test]
fn statistics_from_their_json_form() {
    let s = crate::stats::ModelStats::default();
    let us = Duration::from_micros;
    s.record_success(
        us(40),
        crate::stats::RequestTimes {
            input: us(3),
            queue: us(5),
            infer: us(20),
            output: us(4),
            rows: 2,
        },
    );
    s.record_execution(2, us(20));
    s.record_failure(us(7));
    let stats = statistics_from_json(&s.json("iris", "1"));
    assert_eq!((stats.name.as_str(), stats.version.as_str()), ("iris", "1"));
    assert_eq!(stats.inference_count, 2);
    assert_eq!(stats.execution_count, 1);
    assert!(stats.last_inference > 1_600_000_000_000);
    let i = stats.inference_stats.expect("inference_stats");
    let d = |count, ns| Some(StatisticDuration { count, ns });
    assert_eq!(i.success, d(1, 40_000));
    assert_eq!(i.fail, d(1, 7_000));
    assert_eq!(i.queue, d(1, 5_000));
    assert_eq!(i.compute_input, d(1, 3_000));
    assert_eq!(i.compute_infer, d(1, 20_000));
    assert_eq!(i.compute_output, d(1, 4_000));
    assert_eq!(i.cache_hit, d(0, 0));
    assert_eq!(i.cache_miss, d(0, 0));
    assert_eq!(stats.batch_stats.len(), 1);
    assert_eq!(stats.batch_stats[0].batch_size, 2);
    assert_eq!(stats.batch_stats[0].compute_infer, d(1, 20_000));

    let batched = statistics_from_json(&json!({
        "name": "m", "version": "1",
        "batch_stats": [{"batch_size": 4, "compute_infer": {"count": 2, "ns": 90}}],
    }));
    assert_eq!(batched.batch_stats.len(), 1);
    assert_eq!(batched.batch_stats[0].batch_size, 4);
    assert_eq!(batched.batch_stats[0].compute_infer, d(2, 90));
    assert_eq!(batched.batch_stats[0].compute_input, d(0, 0));
}
