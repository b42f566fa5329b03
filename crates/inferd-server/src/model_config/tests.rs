use std::io::Write;

use inferd_runtime::{ModelMetadata, Result as RuntimeResult};

use super::*;

struct Fake(ModelMetadata);

impl Model for Fake {
    fn metadata(&self) -> &ModelMetadata {
        &self.0
    }

    fn infer(&self, inputs: Vec<Tensor>) -> RuntimeResult<Vec<Tensor>> {
        Ok(inputs)
    }
}

fn batchable_model() -> Fake {
    Fake(ModelMetadata {
        platform: "onnx_onnxv1",
        inputs: vec![TensorSpec::new(
            "x",
            DataType::Fp32,
            vec![Dim::Dynamic, Dim::Fixed(4)],
        )],
        outputs: vec![TensorSpec::new("y", DataType::Int64, vec![Dim::Dynamic])],
    })
}

fn fixed_model() -> Fake {
    Fake(ModelMetadata {
        platform: "onnx_onnxv1",
        inputs: vec![TensorSpec::new(
            "x",
            DataType::Fp32,
            vec![Dim::Fixed(1), Dim::Fixed(4)],
        )],
        outputs: vec![TensorSpec::new("y", DataType::Fp32, vec![Dim::Fixed(1)])],
    })
}

fn with_file(text: &str, model: &Fake, defaults: &Defaults) -> Result<Resolved, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write");
    resolve(Some(&path), "m", model, defaults)
}

fn refused(text: &str, model: &Fake) -> (String, String) {
    let e = with_file(text, model, &Defaults::default()).expect_err(text);
    (e.path, e.message)
}

#[test]
fn without_a_file_the_defaults_apply_where_they_can() {
    let defaults = Defaults {
        max_batch_size: 16,
        max_queue_delay: Duration::from_micros(300),
        max_queue_size: 7,
        instance_count: 3,
        default_timeout: Some(Duration::from_secs(2)),
    };
    let r = resolve(None, "m", &batchable_model(), &defaults).expect("defaults");
    assert_eq!(
        r.scheduler,
        SchedulerConfig {
            max_batch_size: 16,
            max_queue_delay: Duration::from_micros(300),
            preferred_batch_sizes: vec![],
            max_queue_size: 7,
            instance_count: 3,
        }
    );
    assert_eq!(r.default_timeout, Some(Duration::from_secs(2)));
    assert!(r.warmup.is_empty());
    // A model without a batch dimension is never batched by default.
    let r = resolve(None, "m", &fixed_model(), &defaults).expect("defaults");
    assert_eq!(r.scheduler.max_batch_size, 0);
    // A path that does not exist is no file.
    let r = resolve(
        Some(Path::new("/nonexistent/config.json")),
        "m",
        &fixed_model(),
        &Defaults::default(),
    )
    .expect("no file");
    assert!(r.scheduler.instance_count >= 1);
}

#[test]
fn a_full_config_is_honoured() {
    let r = with_file(
        r#"{
            "name": "m",
            "platform": "onnx_onnxv1",
            "backend": "tract",
            "max_batch_size": 32,
            "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [4]}],
            "output": [{"name": "y", "data_type": "TYPE_INT64", "dims": []}],
            "dynamic_batching": {
                "max_queue_delay_microseconds": "500",
                "preferred_batch_size": [8, 16],
                "default_queue_policy": {
                    "timeout_action": "REJECT",
                    "default_timeout_microseconds": 2000000,
                    "allow_timeout_override": true,
                    "max_queue_size": 64
                }
            },
            "instance_group": [{"name": "a", "count": 2, "kind": "KIND_CPU"}, {"count": 1}],
            "model_warmup": [
                {"name": "zeros", "batch_size": 8, "count": 2},
                {"name": "given", "batch_size": 2, "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [4], "random_data": true}}}
            ]
        }"#,
        &batchable_model(),
        &Defaults::default(),
    )
    .expect("valid");
    assert_eq!(
        r.scheduler,
        SchedulerConfig {
            max_batch_size: 32,
            max_queue_delay: Duration::from_micros(500),
            preferred_batch_sizes: vec![8, 16],
            max_queue_size: 64,
            instance_count: 3,
        }
    );
    assert_eq!(r.default_timeout, Some(Duration::from_secs(2)));
    assert_eq!(r.warmup.len(), 2);
    assert_eq!(r.warmup[0].count, 2);
    assert_eq!(r.warmup[0].inputs[0].shape(), &[8, 4]);
    assert!(
        matches!(r.warmup[0].inputs[0].data(), TensorData::Fp32(v) if v.iter().all(|&x| x == 0.0))
    );
    assert_eq!(r.warmup[1].inputs[0].shape(), &[2, 4]);
    assert!(
        matches!(r.warmup[1].inputs[0].data(), TensorData::Fp32(v) if v.iter().any(|&x| x != 0.0) && v.iter().all(|x| (0.0..1.0).contains(x)))
    );

    let json = r.triton_json("m", &batchable_model());
    assert_eq!(json["max_batch_size"], 32);
    assert_eq!(json["input"][0]["dims"], serde_json::json!([4]));
    assert_eq!(json["output"][0]["dims"], serde_json::json!([]));
    assert_eq!(
        json["dynamic_batching"]["max_queue_delay_microseconds"],
        500
    );
    assert_eq!(
        json["dynamic_batching"]["default_queue_policy"]["max_queue_size"],
        64
    );
    assert_eq!(json["instance_group"][0]["count"], 3);
}

#[test]
fn a_served_configuration_reads_back_as_the_same_configuration() {
    let defaults = Defaults {
        max_batch_size: 16,
        max_queue_delay: Duration::from_micros(250),
        max_queue_size: 9,
        instance_count: 3,
        default_timeout: Some(Duration::from_millis(1500)),
    };
    for model in [batchable_model(), fixed_model()] {
        let served = resolve(None, "m", &model, &defaults).expect("defaults");
        let text = served.triton_json("m", &model).to_string();
        let again = resolve_text(&text, "m", &model, &Defaults::default()).expect(&text);
        if served.scheduler.max_batch_size > 0 {
            assert_eq!(again.scheduler, served.scheduler, "{text}");
            assert_eq!(again.default_timeout, served.default_timeout, "{text}");
        } else {
            // Without batching the queue's settings come from the command
            // line only (Triton has no place for them outside a batcher).
            assert_eq!(again.scheduler.max_batch_size, 0, "{text}");
            assert_eq!(again.scheduler.instance_count, 3, "{text}");
        }
    }
    let (path, message) = refused(
        r#"{"version_policy": {"latest": {"num_versions": 1}}}"#,
        &batchable_model(),
    );
    assert_eq!(path, "version_policy");
    assert!(message.contains("not supported"), "{message}");
}

#[test]
fn without_batching_the_config_reports_full_shapes() {
    let r = resolve(None, "m", &fixed_model(), &Defaults::default()).expect("defaults");
    let json = r.triton_json("m", &fixed_model());
    assert_eq!(json["max_batch_size"], 0);
    assert_eq!(json["input"][0]["dims"], serde_json::json!([1, 4]));
    assert!(json.get("dynamic_batching").is_none());
}

#[test]
fn bad_configs_name_the_field() {
    let b = batchable_model();
    for (text, path, needle) in [
        ("{", "", "EOF"),
        ("[]", "", "must be a JSON object"),
        (
            r#"{"max_batch_size": -1}"#,
            "max_batch_size",
            "invalid value",
        ),
        (
            r#"{"max_batch_size": "8"}"#,
            "max_batch_size",
            "invalid type",
        ),
        (
            r#"{"max_batch_sise": 8}"#,
            "max_batch_sise",
            "unknown field",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"max_queue_delay": 5}}"#,
            "dynamic_batching.max_queue_delay",
            "unknown field",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": "soon"}}"#,
            "dynamic_batching.max_queue_delay_microseconds",
            "not an integer",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": -5}}"#,
            "dynamic_batching.max_queue_delay_microseconds",
            "negative",
        ),
        (r#"{"name": "other"}"#, "name", "does not match"),
        (
            r#"{"platform": "tensorflow_savedmodel"}"#,
            "platform",
            "does not match",
        ),
        (r#"{"backend": "python"}"#, "backend", "does not match"),
        (
            r#"{"dynamic_batching": {}}"#,
            "dynamic_batching",
            "needs max_batch_size",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"default_queue_policy": {"timeout_action": "DELAY"}}}"#,
            "dynamic_batching.default_queue_policy.timeout_action",
            "not supported",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"default_queue_policy": {"allow_timeout_override": false}}}"#,
            "dynamic_batching.default_queue_policy.allow_timeout_override",
            "not supported",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"default_queue_policy": {"max_queue_size": 0}}}"#,
            "dynamic_batching.default_queue_policy.max_queue_size",
            "at least 1",
        ),
        (
            r#"{"max_batch_size": 8, "dynamic_batching": {"preferred_batch_size": [16]}}"#,
            "dynamic_batching.preferred_batch_size",
            "16 is not between",
        ),
        (
            r#"{"instance_group": [{"count": 1, "kind": "KIND_GPU"}]}"#,
            "instance_group[0].kind",
            "not supported",
        ),
        (
            r#"{"instance_group": [{"kind": "KIND_CPU"}]}"#,
            "instance_group[0].count",
            "at least 1",
        ),
        (
            r#"{"instance_group": [{"count": 100000}]}"#,
            "instance_group[0].count",
            "more than",
        ),
        (
            r#"{"input": [{"name": "z", "data_type": "TYPE_FP32", "dims": [-1, 4]}]}"#,
            "input[0].name",
            "no input 'z'",
        ),
        (
            r#"{"input": [{"name": "x", "data_type": "TYPE_INT8", "dims": [-1, 4]}]}"#,
            "input[0].data_type",
            "model's is TYPE_FP32",
        ),
        (
            r#"{"input": [{"name": "x", "data_type": "TYPE_FLOAT", "dims": [-1, 4]}]}"#,
            "input[0].data_type",
            "unknown datatype",
        ),
        (
            r#"{"max_batch_size": 4, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 4]}]}"#,
            "input[0].dims",
            "without the batch dimension",
        ),
        (
            r#"{"output": [{"name": "y", "data_type": "TYPE_INT64", "dims": [3, 1]}]}"#,
            "output[0].dims",
            "does not fit",
        ),
        (
            r#"{"model_warmup": [{"name": "w", "batch_size": 0}]}"#,
            "model_warmup[0].batch_size",
            "not between",
        ),
        (
            r#"{"model_warmup": [{"name": "w", "count": 5000}]}"#,
            "model_warmup[0].count",
            "not between",
        ),
        (
            r#"{"model_warmup": [{"name": "w", "inputs": {"q": {"data_type": "FP32", "dims": [1]}}}]}"#,
            "model_warmup[0].inputs.q",
            "no such input",
        ),
        (
            r#"{"model_warmup": [{"name": "w", "inputs": {"x": {"data_type": "FP32", "dims": [1000000, 1000000, 1000000]}}}]}"#,
            "model_warmup[0].inputs.x.dims",
            "larger than",
        ),
        (
            r#"{"model_warmup": [{"name": "w", "inputs": {"x": {"data_type": "FP32", "dims": [-1, 4]}}}]}"#,
            "model_warmup[0].inputs.x.dims",
            "-1 is not a size",
        ),
        (
            r#"{"model_warmup": [{"name": "w", "inputs": {"x": {"data_type": "FP32", "dims": [2, 5]}}}]}"#,
            "model_warmup[0].inputs.x",
            "does not fit",
        ),
        (
            r#"{"model_warmup": [{"name": "w", "inputs": {"x": {"data_type": "INT32", "dims": [2, 4]}}}]}"#,
            "model_warmup[0].inputs.x",
            "datatype INT32",
        ),
        (
            r#"{"model_warmup": [{"name": "w", "inputs": {"x": {"data_type": "FP32", "dims": [2, 4], "zero_data": true, "random_data": true}}}]}"#,
            "model_warmup[0].inputs.x",
            "one of",
        ),
    ] {
        let (got_path, message) = refused(text, &b);
        assert_eq!(got_path, path, "{text}: {message}");
        assert!(message.contains(needle), "{text}: {message}");
    }
    let (path, message) = refused(r#"{"max_batch_size": 8}"#, &fixed_model());
    assert_eq!(path, "max_batch_size");
    assert!(message.contains("no batch dimension"), "{message}");
}

#[test]
fn an_oversized_file_is_refused() {
    let big = format!(r#"{{"name": "{}"}}"#, "m".repeat(2 * 1024 * 1024));
    let (path, message) = refused(&big, &batchable_model());
    assert_eq!(path, "");
    assert!(message.contains("1 MiB"), "{message}");
}

#[test]
fn the_error_names_the_file() {
    let e = with_file(
        r#"{"max_batch_size": true}"#,
        &batchable_model(),
        &Defaults::default(),
    )
    .expect_err("bad");
    let text = e.to_string();
    assert!(text.contains("config.json: max_batch_size:"), "{text}");
}
