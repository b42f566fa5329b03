//! Black-box tests of the gRPC API: a real server on an ephemeral loopback
//! port, the generated client, real HTTP/2.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/server.rs"]
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;

use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use inferd_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use inferd_server::grpc::proto::infer_parameter::ParameterChoice;
use inferd_server::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use inferd_server::grpc::proto::model_instance_group::Kind;
use inferd_server::grpc::proto::{
    self, DataType as ConfigType, InferParameter, InferTensorContents, ModelInferRequest,
    ModelInferResponse,
};
use inferd_server::{AppState, ModelSource, ModelState, Server, ServerConfig, Tokens};
use inferd_tensor::{DataType, TensorData, f16};
use serde_json::Value;
use server::{TestServer, named, repo};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

type Client = GrpcInferenceServiceClient<Channel>;

/// A server with gRPC on an ephemeral port beside HTTP.
fn start_with(sources: Vec<ModelSource>, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_with(sources, |c| {
        c.grpc_addr = Some("127.0.0.1:0".parse().expect("addr"));
        tweak(c);
    })
}

fn start(sources: Vec<ModelSource>) -> TestServer {
    start_with(sources, |_| {})
}

trait GrpcServer {
    fn grpc(&self) -> SocketAddr;
    async fn client(&self) -> Client;
}

impl GrpcServer for TestServer {
    fn grpc(&self) -> SocketAddr {
        self.grpc_addr.expect("gRPC is on")
    }

    async fn client(&self) -> Client {
        connect(self.grpc()).await
    }
}

async fn connect(addr: SocketAddr) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    GrpcInferenceServiceClient::new(channel).max_decoding_message_size(64 << 20)
}

/// A client over a plain HTTP/2 connection. tonic's own channel starts a
/// timer of its own for a request's `grpc-timeout` and reports CANCELLED
/// when it fires first; this one leaves deadlines to the server.
fn plain_client(
    addr: SocketAddr,
) -> GrpcInferenceServiceClient<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tonic::body::Body,
    >,
> {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{addr}").parse().expect("uri");
    GrpcInferenceServiceClient::with_origin(http, origin)
}

fn iris_server() -> TestServer {
    start(vec![
        named("iris", "examples/models/iris/model.onnx"),
        named("multi", "tests/fixtures/models/multi/model.onnx"),
        named("identity", "tests/fixtures/models/identity/model.onnx"),
    ])
}

fn expected(dir: &str) -> Value {
    let text = std::fs::read_to_string(repo(&format!("{dir}/expected.json"))).expect("expected");
    serde_json::from_str(&text).expect("json")
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn dims(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("shape")
        .iter()
        .map(|x| x.as_i64().expect("dim"))
        .collect()
}

fn raw_of(data: &TensorData) -> Bytes {
    let mut out = Vec::new();
    inferd_protocol::binary::encode(data, &mut out);
    Bytes::from(out)
}

/// An output of a response, decoded from `raw_output_contents`.
fn output(r: &ModelInferResponse, name: &str) -> (Vec<i64>, TensorData) {
    let at = r
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name}"));
    let o = &r.outputs[at];
    let datatype = DataType::parse(&o.datatype).expect("datatype");
    let count = o.shape.iter().product::<i64>();
    let data = inferd_protocol::binary::decode(
        &r.raw_output_contents[at],
        datatype,
        usize::try_from(count).expect("count"),
    )
    .expect("raw output");
    (o.shape.clone(), data)
}

fn fp32_input(name: &str, shape: &[i64], values: &[f32]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: shape.to_vec(),
        contents: Some(InferTensorContents {
            fp32_contents: values.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn iris_row() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "iris".into(),
        inputs: vec![fp32_input("input", &[1, 4], &[5.1, 3.5, 1.4, 0.2])],
        ..Default::default()
    }
}

fn assert_close(got: &TensorData, want: &[f64], tolerance: f64, what: &str) {
    let got: Vec<f64> = match got {
        TensorData::Fp32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int64(v) => v.iter().map(|&x| x as f64).collect(),
        other => panic!("{what}: unexpected {:?}", other.datatype()),
    };
    assert_eq!(got.len(), want.len(), "{what}");
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= tolerance, "{what}: {a} vs {b}");
    }
}

fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, needle: &str) {
    let status = result.expect_err("must fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(needle),
        "{needle:?} not in {:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_server_metadata() {
    let s = iris_server();
    let mut c = s.client().await;
    let live = c
        .server_live(proto::ServerLiveRequest {})
        .await
        .expect("live");
    assert!(live.into_inner().live);
    let ready = c
        .server_ready(proto::ServerReadyRequest {})
        .await
        .expect("ready");
    assert!(ready.into_inner().ready);
    let meta = c
        .server_metadata(proto::ServerMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(meta.name, "inferd");
    assert_eq!(meta.version, env!("CARGO_PKG_VERSION"));
    assert!(meta.extensions.iter().any(|e| e == "model_configuration"));
    assert!(meta.extensions.iter().any(|e| e == "statistics"));

    let model_ready = |name: &str, version: &str| proto::ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    for (name, version) in [("iris", ""), ("iris", "1"), ("identity", "")] {
        let r = c
            .model_ready(model_ready(name, version))
            .await
            .expect("model ready");
        assert!(r.into_inner().ready, "{name} {version}");
    }
    assert_code(
        c.model_ready(model_ready("nope", "")).await,
        Code::NotFound,
        "unknown model 'nope'",
    );
    assert_code(
        c.model_ready(model_ready("iris", "2")).await,
        Code::NotFound,
        "model 'iris' has no version '2'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata() {
    let s = iris_server();
    let mut c = s.client().await;
    let request = |version: &str| proto::ModelMetadataRequest {
        name: "iris".into(),
        version: version.into(),
    };
    let meta = c
        .model_metadata(request(""))
        .await
        .expect("meta")
        .into_inner();
    assert_eq!(meta.name, "iris");
    assert_eq!(meta.versions, ["1"]);
    assert_eq!(meta.platform, "onnx_onnxv1");
    let tensors =
        |t: &[proto::model_metadata_response::TensorMetadata]| -> Vec<(String, String, Vec<i64>)> {
            t.iter()
                .map(|t| (t.name.clone(), t.datatype.clone(), t.shape.clone()))
                .collect()
        };
    assert_eq!(
        tensors(&meta.inputs),
        [("input".into(), "FP32".into(), vec![-1, 4])]
    );
    assert_eq!(
        tensors(&meta.outputs),
        [
            ("label".into(), "INT64".into(), vec![-1]),
            ("probabilities".into(), "FP32".into(), vec![-1, 3]),
        ]
    );
    assert_eq!(
        c.model_metadata(request("1"))
            .await
            .expect("v1")
            .into_inner(),
        meta
    );
    assert_code(
        c.model_metadata(request("2")).await,
        Code::NotFound,
        "no version '2'",
    );
    assert_code(
        c.model_metadata(proto::ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await,
        Code::NotFound,
        "unknown model 'nope'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iris_predictions_typed_and_raw_equal_onnxruntime() {
    let s = iris_server();
    let mut c = s.client().await;
    let want = expected("examples/models/iris");
    let input = &want["inputs"][0];
    let values: Vec<f32> = numbers(&input["data"]).iter().map(|&x| x as f32).collect();
    let shape = dims(&input["shape"]);

    let typed = ModelInferRequest {
        model_name: "iris".into(),
        model_version: "1".into(),
        id: "typed-42".into(),
        inputs: vec![fp32_input("input", &shape, &values)],
        ..Default::default()
    };
    let mut raw = typed.clone();
    raw.id = "raw-43".into();
    raw.model_version = String::new();
    raw.inputs[0].contents = None;
    raw.raw_input_contents = vec![raw_of(&TensorData::Fp32(values.clone()))];

    for (request, id) in [(typed, "typed-42"), (raw, "raw-43")] {
        let answer = c.model_infer(request).await.expect("infer");
        // Where the time went, as HTTP says it in headers.
        let ms = |name: &str| -> f64 {
            answer
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no numeric {name} in {:?}", answer.metadata()))
        };
        assert!(ms("x-queue-time") + ms("x-inference-time") <= ms("x-total-time"));
        let r = answer.into_inner();
        assert_eq!(r.id, id);
        assert_eq!(r.model_name, "iris");
        assert_eq!(r.model_version, "1");
        assert_eq!(r.outputs.len(), 2);
        assert_eq!(r.raw_output_contents.len(), 2);
        for w in want["outputs"].as_array().expect("outputs") {
            let name = w["name"].as_str().expect("name");
            let (shape, data) = output(&r, name);
            let o = r.outputs.iter().find(|o| o.name == name).expect("output");
            assert_eq!(o.datatype, w["datatype"].as_str().expect("datatype"));
            assert!(o.contents.is_none());
            assert_eq!(shape, dims(&w["shape"]), "{name}");
            assert_close(&data, &numbers(&w["data"]), 1e-6, name);
        }
        let (_, labels) = output(&r, "label");
        assert_eq!(labels, TensorData::Int64(vec![0, 0, 1, 1, 2, 2]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_input_model() {
    let s = iris_server();
    let mut c = s.client().await;
    let want = expected("tests/fixtures/models/multi");
    let inputs = want["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| {
            let values: Vec<f32> = numbers(&i["data"]).iter().map(|&x| x as f32).collect();
            fp32_input(
                i["name"].as_str().expect("name"),
                &dims(&i["shape"]),
                &values,
            )
        })
        .collect();
    let r = c
        .model_infer(ModelInferRequest {
            model_name: "multi".into(),
            inputs,
            ..Default::default()
        })
        .await
        .expect("infer")
        .into_inner();
    for w in want["outputs"].as_array().expect("outputs") {
        let name = w["name"].as_str().expect("name");
        let (shape, data) = output(&r, name);
        assert_eq!(shape, dims(&w["shape"]));
        assert_close(&data, &numbers(&w["data"]), 0.0, name);
    }
}

/// Four elements of every datatype, extremes and NaN included.
fn samples() -> Vec<(&'static str, TensorData)> {
    vec![
        ("bool", TensorData::Bool(vec![true, false, false, true])),
        ("uint8", TensorData::Uint8(vec![0, 1, 254, 255])),
        ("uint16", TensorData::Uint16(vec![0, 1, 2, u16::MAX])),
        ("uint32", TensorData::Uint32(vec![0, 1, 2, u32::MAX])),
        ("uint64", TensorData::Uint64(vec![0, 1, 2, u64::MAX])),
        ("int8", TensorData::Int8(vec![i8::MIN, -1, 0, i8::MAX])),
        ("int16", TensorData::Int16(vec![i16::MIN, -1, 0, i16::MAX])),
        ("int32", TensorData::Int32(vec![i32::MIN, -1, 0, i32::MAX])),
        ("int64", TensorData::Int64(vec![i64::MIN, -1, 0, i64::MAX])),
        (
            "fp16",
            TensorData::Fp16(vec![
                f16::from_f32(0.5),
                f16::NAN,
                f16::NEG_INFINITY,
                f16::MAX,
            ]),
        ),
        (
            "fp32",
            TensorData::Fp32(vec![0.1, f32::NAN, f32::INFINITY, f32::MAX]),
        ),
        ("fp64", TensorData::Fp64(vec![0.1, f64::NAN, -0.0, 1e300])),
        (
            "string",
            TensorData::Bytes(vec![
                b"a".to_vec(),
                Vec::new(),
                "üñí".as_bytes().to_vec(),
                b"d".to_vec(),
            ]),
        ),
    ]
}

fn identity_inputs(cases: &[(&str, TensorData)]) -> Vec<InferInputTensor> {
    cases
        .iter()
        .map(|(n, d)| InferInputTensor {
            name: format!("in_{n}"),
            datatype: d.datatype().as_str().into(),
            shape: vec![2, 2],
            ..Default::default()
        })
        .collect()
}

/// Compares buffers byte for byte, so NaN equals the same NaN.
fn same_bits(a: &TensorData, b: &TensorData) -> bool {
    raw_of(a) == raw_of(b) && a.datatype() == b.datatype()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_round_trips_raw_through_identity() {
    let s = iris_server();
    let mut c = s.client().await;
    let cases = samples();
    let r = c
        .model_infer(ModelInferRequest {
            model_name: "identity".into(),
            inputs: identity_inputs(&cases),
            raw_input_contents: cases.iter().map(|(_, d)| raw_of(d)).collect(),
            ..Default::default()
        })
        .await
        .expect("infer")
        .into_inner();
    assert_eq!(r.outputs.len(), cases.len());
    for (n, want) in &cases {
        let name = format!("out_{n}");
        let (shape, got) = output(&r, &name);
        assert_eq!(shape, [2, 2], "{name}");
        assert!(same_bits(&got, want), "{name}: {got:?} vs {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_contents_of_every_datatype_decode() {
    let s = iris_server();
    let mut c = s.client().await;
    let cases = samples();
    let mut inputs = identity_inputs(&cases);
    for (input, (_, data)) in inputs.iter_mut().zip(&cases) {
        let mut t = InferTensorContents::default();
        match data {
            TensorData::Bool(v) => t.bool_contents = v.clone(),
            TensorData::Uint8(v) => t.uint_contents = v.iter().map(|&x| x.into()).collect(),
            TensorData::Uint16(v) => t.uint_contents = v.iter().map(|&x| x.into()).collect(),
            TensorData::Uint32(v) => t.uint_contents = v.clone(),
            TensorData::Uint64(v) => t.uint64_contents = v.clone(),
            TensorData::Int8(v) => t.int_contents = v.iter().map(|&x| x.into()).collect(),
            TensorData::Int16(v) => t.int_contents = v.iter().map(|&x| x.into()).collect(),
            TensorData::Int32(v) => t.int_contents = v.clone(),
            TensorData::Int64(v) => t.int64_contents = v.clone(),
            // FP16 has no typed field: it is sent as FP32, which the
            // protocol allows and the model refuses by datatype.
            TensorData::Fp16(v) => t.fp32_contents = v.iter().map(|x| x.to_f32()).collect(),
            TensorData::Fp32(v) => t.fp32_contents = v.clone(),
            TensorData::Fp64(v) => t.fp64_contents = v.clone(),
            TensorData::Bytes(v) => {
                t.bytes_contents = v.iter().cloned().map(Bytes::from).collect();
            }
        }
        if data.datatype() == DataType::Fp16 {
            input.datatype = "FP32".into();
        }
        input.contents = Some(t);
    }
    let request = ModelInferRequest {
        model_name: "identity".into(),
        inputs,
        ..Default::default()
    };
    // Everything decoded; only the model's own datatype check is left.
    assert_code(
        c.model_infer(request.clone()).await,
        Code::InvalidArgument,
        "input 'in_fp16': datatype FP32 does not match the model's FP16",
    );
    // Typed FP16 itself is refused by the decoder, naming the field.
    let mut fp16 = request;
    fp16.inputs[9].datatype = "FP16".into();
    assert_code(
        c.model_infer(fp16).await,
        Code::InvalidArgument,
        "inputs[9].contents: FP16 has no typed contents field",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_outputs_are_selected_in_order() {
    let s = iris_server();
    let mut c = s.client().await;
    let wanted = |names: &[&str]| {
        let mut r = iris_row();
        r.outputs = names
            .iter()
            .map(|n| InferRequestedOutputTensor {
                name: (*n).into(),
                parameters: HashMap::new(),
            })
            .collect();
        r
    };
    let r = c
        .model_infer(wanted(&["probabilities", "label"]))
        .await
        .expect("both")
        .into_inner();
    let names: Vec<&str> = r.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["probabilities", "label"]);
    assert_eq!(r.raw_output_contents[0].len(), 3 * 4);
    assert_eq!(r.raw_output_contents[1].len(), 8);
    assert_eq!(output(&r, "label").1, TensorData::Int64(vec![0]));

    let r = c
        .model_infer(wanted(&["label"]))
        .await
        .expect("one")
        .into_inner();
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.raw_output_contents.len(), 1);
    assert_eq!(output(&r, "label").1, TensorData::Int64(vec![0]));

    assert_code(
        c.model_infer(wanted(&["label", "nope"])).await,
        Code::InvalidArgument,
        "outputs[1].name: the model has no output 'nope'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_from_a_repository() {
    let dir = tempfile::tempdir().expect("tmp");
    let iris = repo("examples/models/iris/model.onnx");
    for v in ["1", "2"] {
        std::fs::create_dir_all(dir.path().join("iris").join(v)).expect("mkdir");
        std::fs::copy(&iris, dir.path().join("iris").join(v).join("model.onnx")).expect("copy");
    }
    let s = start(vec![ModelSource::Repository(dir.path().to_owned())]);
    let mut c = s.client().await;
    let meta = c
        .model_metadata(proto::ModelMetadataRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .expect("meta")
        .into_inner();
    assert_eq!(meta.versions, ["1", "2"]);
    for (asked, got) in [("", "2"), ("2", "2"), ("1", "1")] {
        let mut r = iris_row();
        r.model_version = asked.into();
        let response = c.model_infer(r).await.expect("infer").into_inner();
        assert_eq!(response.model_version, got, "asked {asked:?}");
        assert_eq!(output(&response, "label").1, TensorData::Int64(vec![0]));
    }
    for bad in ["3", "x", "01x"] {
        let mut r = iris_row();
        r.model_version = bad.into();
        assert_code(
            c.model_infer(r).await,
            Code::NotFound,
            &format!("model 'iris' has no version '{bad}'"),
        );
    }
    let ready = c
        .model_ready(proto::ModelReadyRequest {
            name: "iris".into(),
            version: "1".into(),
        })
        .await
        .expect("ready");
    assert!(ready.into_inner().ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loading_model_is_not_ready_and_unavailable() {
    // A state whose model never finishes loading, served over a real socket.
    let planned =
        inferd_server::registry::plan(&[named("iris", "examples/models/iris/model.onnx")], None)
            .expect("plan");
    let state = Arc::new(AppState::new(
        inferd_server::Registry::with_planned(&planned),
        1024,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let service = inferd_server::grpc::service(state.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
    });
    let mut c = connect(addr).await;
    assert!(
        c.server_live(proto::ServerLiveRequest {})
            .await
            .expect("live")
            .into_inner()
            .live
    );
    assert!(
        !c.server_ready(proto::ServerReadyRequest {})
            .await
            .expect("ready")
            .into_inner()
            .ready
    );
    let ready = c
        .model_ready(proto::ModelReadyRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .expect("model ready");
    assert!(!ready.into_inner().ready);
    assert_code(
        c.model_infer(iris_row()).await,
        Code::Unavailable,
        "model 'iris' is not ready: it is still loading",
    );
    assert_code(
        c.model_config(proto::ModelConfigRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await,
        Code::Unavailable,
        "still loading",
    );

    // A model that failed to load says why.
    state
        .registry
        .set("iris", ModelState::Failed("no such operator".into()));
    assert_code(
        c.model_infer(iris_row()).await,
        Code::Unavailable,
        "failed to load: no such operator",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let s = iris_server();
    let mut c = s.client().await;
    let with_input = |f: &dyn Fn(&mut InferInputTensor)| {
        let mut r = iris_row();
        f(&mut r.inputs[0]);
        r
    };
    let with = |f: &dyn Fn(&mut ModelInferRequest)| {
        let mut r = iris_row();
        f(&mut r);
        r
    };
    let raw_row = || {
        let mut r = iris_row();
        r.inputs[0].contents = None;
        r.raw_input_contents = vec![raw_of(&TensorData::Fp32(vec![5.1, 3.5, 1.4, 0.2]))];
        r
    };
    let timeout = |choice: ParameterChoice| {
        with(&move |r: &mut ModelInferRequest| {
            r.parameters.insert(
                "timeout".into(),
                InferParameter {
                    parameter_choice: Some(choice.clone()),
                },
            );
        })
    };
    let cases: Vec<(&str, ModelInferRequest, Code, &str)> = vec![
        (
            "no model name",
            with(&|r| r.model_name.clear()),
            Code::NotFound,
            "unknown model ''",
        ),
        (
            "unknown model",
            with(&|r| r.model_name = "nope".into()),
            Code::NotFound,
            "unknown model 'nope'",
        ),
        (
            "unknown version",
            with(&|r| r.model_version = "9".into()),
            Code::NotFound,
            "model 'iris' has no version '9'",
        ),
        (
            "unknown datatype",
            with_input(&|i| i.datatype = "REAL".into()),
            Code::InvalidArgument,
            "inputs[0].datatype: unknown datatype 'REAL'",
        ),
        (
            "lower-case datatype",
            with_input(&|i| i.datatype = "fp32".into()),
            Code::InvalidArgument,
            "inputs[0].datatype: unknown datatype 'fp32'",
        ),
        (
            "too few elements",
            with_input(&|i| i.shape = vec![2, 4]),
            Code::InvalidArgument,
            "inputs[0].contents: shape [2, 4] holds 8 elements but 4 were given",
        ),
        (
            "negative dimension",
            with_input(&|i| i.shape = vec![-1, 4]),
            Code::InvalidArgument,
            "inputs[0].shape: dimension 0 is -1",
        ),
        (
            "huge dimensions",
            with_input(&|i| i.shape = vec![i64::MAX, 4]),
            Code::InvalidArgument,
            "inputs[0].shape: [9223372036854775807, 4] holds more elements than fit in memory",
        ),
        (
            "wrong typed field",
            with_input(&|i| {
                i.contents = Some(InferTensorContents {
                    fp64_contents: vec![5.1, 3.5, 1.4, 0.2],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "inputs[0].contents.fp64_contents: FP32 elements go in fp32_contents",
        ),
        (
            "missing contents",
            with_input(&|i| i.contents = None),
            Code::InvalidArgument,
            "inputs[0].contents: missing",
        ),
        (
            "typed and raw contents",
            {
                let mut r = raw_row();
                r.inputs[0].contents = iris_row().inputs[0].contents.clone();
                r
            },
            Code::InvalidArgument,
            "inputs[0].contents: give either typed contents or raw_input_contents, not both",
        ),
        (
            "raw contents for fewer inputs",
            {
                let mut r = raw_row();
                r.raw_input_contents.push(Bytes::from_static(&[0; 4]));
                r
            },
            Code::InvalidArgument,
            "raw_input_contents: 2 entries given, but the request has 1 inputs",
        ),
        (
            "raw contents of the wrong size",
            {
                let mut r = raw_row();
                r.raw_input_contents[0] = Bytes::from_static(&[0; 15]);
                r
            },
            Code::InvalidArgument,
            "raw_input_contents[0]: 15 bytes given, but 4 FP32 elements take 16",
        ),
        (
            "datatype the model does not take",
            with_input(&|i| {
                i.datatype = "FP64".into();
                i.contents = Some(InferTensorContents {
                    fp64_contents: vec![5.1, 3.5, 1.4, 0.2],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "input 'input': datatype FP64 does not match the model's FP32",
        ),
        (
            "shape the model does not take",
            with_input(&|i| {
                i.shape = vec![1, 3];
                i.contents = Some(InferTensorContents {
                    fp32_contents: vec![5.1, 3.5, 1.4],
                    ..Default::default()
                });
            }),
            Code::InvalidArgument,
            "dimension 1 must be 4",
        ),
        (
            "unknown input",
            with_input(&|i| i.name = "x".into()),
            Code::InvalidArgument,
            "input 'x' is not an input of the model",
        ),
        (
            "no inputs",
            with(&|r| r.inputs.clear()),
            Code::InvalidArgument,
            "input 'input' is missing",
        ),
        (
            "an input twice",
            with(&|r| r.inputs.push(r.inputs[0].clone())),
            Code::InvalidArgument,
            "inputs[1].name: input 'input' is given twice",
        ),
        (
            "unknown output",
            with(&|r| {
                r.outputs.push(InferRequestedOutputTensor {
                    name: "nope".into(),
                    parameters: HashMap::new(),
                });
            }),
            Code::InvalidArgument,
            "outputs[0].name: the model has no output 'nope'",
        ),
        (
            "timeout of the wrong type",
            timeout(ParameterChoice::StringParam("1000".into())),
            Code::InvalidArgument,
            "parameters.timeout: must be a non-negative integer",
        ),
        (
            "negative timeout",
            timeout(ParameterChoice::Int64Param(-5)),
            Code::InvalidArgument,
            "parameters.timeout",
        ),
        (
            "a message over the size limit",
            with_input(&|i| {
                i.shape = vec![20_000, 4];
                i.contents = Some(InferTensorContents {
                    fp32_contents: vec![1.0; 80_000],
                    ..Default::default()
                });
            }),
            // Refused before decoding, with gRPC's code for a message over
            // the limit (the router's too).
            Code::ResourceExhausted,
            "message length too large",
        ),
    ];
    for (what, request, code, needle) in cases {
        let status = c.model_infer(request).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        assert!(
            status.message().contains(needle),
            "{what}: {needle:?} not in {:?}",
            status.message()
        );
        // The connection and the server are fine: good requests still work.
        let r = c.model_infer(iris_row()).await.expect(what).into_inner();
        assert_eq!(output(&r, "label").1, TensorData::Int64(vec![0]), "{what}");
        let r = c.model_infer(raw_row()).await.expect(what).into_inner();
        assert_eq!(output(&r, "label").1, TensorData::Int64(vec![0]), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_inputs_are_data() {
    let s = iris_server();
    let mut c = s.client().await;
    let mut r = iris_row();
    r.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![f32::NAN, 3.5, 1.4, 0.2],
        ..Default::default()
    });
    let response = c.model_infer(r).await.expect("NaN is a value").into_inner();
    assert_eq!(response.outputs.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_guard_everything_but_liveness_and_readiness() {
    let old = "old-token-0123456789abcdef";
    let new = "new-token-0123456789abcdef";
    let tokens = Tokens::parse(&format!("{old}\n{new}\n")).expect("tokens");
    let s = start_with(
        vec![named("iris", "examples/models/iris/model.onnx")],
        |c| c.tokens = tokens,
    );
    let mut c = s.client().await;
    let authed = |message: ModelInferRequest, token: &str| {
        let mut r = Request::new(message);
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("ascii"),
        );
        r
    };

    // Probes need no token.
    assert!(
        c.server_live(proto::ServerLiveRequest {})
            .await
            .expect("live")
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(proto::ServerReadyRequest {})
            .await
            .expect("ready")
            .into_inner()
            .ready
    );

    // Everything else does, and a known and an unknown model look the same.
    let known = c.model_infer(iris_row()).await.expect_err("no token");
    let mut secret = iris_row();
    secret.model_name = "secret-model".into();
    let unknown = c.model_infer(secret.clone()).await.expect_err("no token");
    assert_eq!(known.code(), Code::Unauthenticated);
    assert_eq!(unknown.code(), Code::Unauthenticated);
    assert_eq!(known.message(), unknown.message());
    assert!(
        known.message().contains("bearer token"),
        "{}",
        known.message()
    );
    let name = || proto::ModelMetadataRequest {
        name: "iris".into(),
        version: String::new(),
    };
    assert_code(c.model_metadata(name()).await, Code::Unauthenticated, "");
    assert_code(
        c.model_ready(proto::ModelReadyRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await,
        Code::Unauthenticated,
        "",
    );
    assert_code(
        c.server_metadata(proto::ServerMetadataRequest {}).await,
        Code::Unauthenticated,
        "",
    );
    assert_code(
        c.model_config(proto::ModelConfigRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await,
        Code::Unauthenticated,
        "",
    );
    assert_code(
        c.model_statistics(proto::ModelStatisticsRequest::default())
            .await,
        Code::Unauthenticated,
        "",
    );
    assert_code(
        c.model_infer(authed(iris_row(), "wrong-token-0123456789ab"))
            .await,
        Code::Unauthenticated,
        "",
    );
    assert_code(
        c.model_infer(authed(iris_row(), &old[..old.len() - 1]))
            .await,
        Code::Unauthenticated,
        "",
    );
    let mut lower = Request::new(iris_row());
    lower.metadata_mut().insert(
        "authorization",
        format!("bearer {old}").parse().expect("ascii"),
    );
    assert_code(c.model_infer(lower).await, Code::Unauthenticated, "");

    // Either token works (rotation).
    for token in [old, new] {
        let r = c
            .model_infer(authed(iris_row(), token))
            .await
            .expect("authorized")
            .into_inner();
        assert_eq!(output(&r, "label").1, TensorData::Int64(vec![0]));
    }
    let mut meta = Request::new(name());
    meta.metadata_mut().insert(
        "authorization",
        format!("Bearer {new}").parse().expect("ascii"),
    );
    assert_eq!(
        c.model_metadata(meta)
            .await
            .expect("meta")
            .into_inner()
            .name,
        "iris"
    );
    assert_code(
        c.model_infer(authed(secret, new)).await,
        Code::NotFound,
        "unknown model 'secret-model'",
    );
    let metrics = s.state.metrics.encode();
    assert!(
        metrics.contains("inferd_auth_failures_total 10"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_deadline_is_deadline_exceeded() {
    let s = iris_server();
    let mut plain = plain_client(s.grpc());
    let mut late = Request::new(iris_row());
    late.set_timeout(Duration::ZERO);
    assert_code(
        plain.model_infer(late).await,
        Code::DeadlineExceeded,
        "deadline passed",
    );
    let mut c = s.client().await;
    // A deadline that leaves time, from the transport or as Triton's
    // `timeout` parameter (microseconds), changes nothing.
    let mut roomy = Request::new(iris_row());
    roomy.set_timeout(Duration::from_secs(60));
    let r = c.model_infer(roomy).await.expect("in time").into_inner();
    assert_eq!(output(&r, "label").1, TensorData::Int64(vec![0]));
    let mut param = iris_row();
    param.parameters.insert(
        "timeout".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(60_000_000)),
        },
    );
    let r = c.model_infer(param).await.expect("in time").into_inner();
    assert_eq!(output(&r, "label").1, TensorData::Int64(vec![0]));

    let metrics = s.state.metrics.encode();
    for line in [
        // Answered before the message (and so the model name) is read.
        r#"inferd_requests_total{model="",protocol="grpc",code="504"} 1"#,
        r#"inferd_requests_total{model="iris",protocol="grpc",code="200"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_configuration() {
    let s = iris_server();
    let mut c = s.client().await;
    let config = |name: &str, version: &str| proto::ModelConfigRequest {
        name: name.into(),
        version: version.into(),
    };
    let got = c
        .model_config(config("iris", ""))
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("a config");
    assert_eq!(got.name, "iris");
    assert_eq!(got.platform, "onnx_onnxv1");
    assert_eq!(got.backend, "tract");
    assert_eq!(got.max_batch_size, 0);
    assert_eq!(got.input.len(), 1);
    assert_eq!(got.input[0].name, "input");
    assert_eq!(got.input[0].data_type(), ConfigType::TypeFp32);
    assert_eq!(got.input[0].dims, [-1, 4]);
    let outputs: Vec<_> = got
        .output
        .iter()
        .map(|o| (o.name.as_str(), o.data_type(), o.dims.clone()))
        .collect();
    assert_eq!(
        outputs,
        [
            ("label", ConfigType::TypeInt64, vec![-1]),
            ("probabilities", ConfigType::TypeFp32, vec![-1, 3]),
        ]
    );
    assert_eq!(got.instance_group.len(), 1);
    assert_eq!(got.instance_group[0].kind(), Kind::Cpu);
    assert_eq!(got.instance_group[0].count, 2);
    assert_eq!(got.dynamic_batching, None);
    assert_eq!(
        c.model_config(config("iris", "1"))
            .await
            .expect("v1")
            .into_inner()
            .config,
        Some(got)
    );
    let identity = c
        .model_config(config("identity", ""))
        .await
        .expect("identity")
        .into_inner()
        .config
        .expect("a config");
    let types: Vec<ConfigType> = identity.input.iter().map(|i| i.data_type()).collect();
    for t in [
        ConfigType::TypeBool,
        ConfigType::TypeUint8,
        ConfigType::TypeUint16,
        ConfigType::TypeUint32,
        ConfigType::TypeUint64,
        ConfigType::TypeInt8,
        ConfigType::TypeInt16,
        ConfigType::TypeInt32,
        ConfigType::TypeInt64,
        ConfigType::TypeFp16,
        ConfigType::TypeFp32,
        ConfigType::TypeFp64,
        ConfigType::TypeString,
    ] {
        assert!(types.contains(&t), "{t:?} missing from {types:?}");
    }
    assert_code(
        c.model_config(config("nope", "")).await,
        Code::NotFound,
        "unknown model 'nope'",
    );
    assert_code(
        c.model_config(config("iris", "3")).await,
        Code::NotFound,
        "no version '3'",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_configuration_and_statistics_match_rest() {
    let s = start_with(
        vec![named("iris", "examples/models/iris/model.onnx")],
        |c| {
            c.serving.max_batch_size = 8;
            c.serving.max_queue_delay = Duration::from_micros(500);
        },
    );
    let mut c = s.client().await;
    let got = c
        .model_config(proto::ModelConfigRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("a config");
    let rest = s.state.registry.with("iris", |found| match found {
        Some(ModelState::Ready(ready)) => ready
            .latest()
            .map(|v| v.config.triton_json(&v.name, v.model.as_ref())),
        _ => None,
    });
    let rest = rest.expect("iris config");
    assert_eq!(got.max_batch_size, 8);
    assert_eq!(rest["max_batch_size"], 8);
    // With batching, dims leave the batch dimension out.
    assert_eq!(got.input[0].dims, [4]);
    assert_eq!(rest["input"][0]["dims"], serde_json::json!([4]));
    let batching = got.dynamic_batching.expect("dynamic_batching");
    let want = &rest["dynamic_batching"];
    assert_eq!(batching.max_queue_delay_microseconds, 500);
    assert_eq!(want["max_queue_delay_microseconds"], 500);
    let policy = batching.default_queue_policy.expect("queue policy");
    assert_eq!(
        policy.max_queue_size,
        u32::try_from(
            want["default_queue_policy"]["max_queue_size"]
                .as_u64()
                .expect("max_queue_size")
        )
        .expect("fits")
    );

    c.model_infer(iris_row()).await.expect("infer");
    let stats = c
        .model_statistics(proto::ModelStatisticsRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .expect("stats")
        .into_inner();
    let batches = &stats.model_stats[0].batch_stats;
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].batch_size, 1);
    assert_eq!(batches[0].compute_infer.as_ref().map(|d| d.count), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_grpc_requests() {
    let s = iris_server();
    let mut c = s.client().await;
    let stats = |name: &str, version: &str| proto::ModelStatisticsRequest {
        name: name.into(),
        version: version.into(),
    };
    let zero = c
        .model_statistics(stats("iris", ""))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(zero.model_stats.len(), 1);
    assert_eq!(zero.model_stats[0].inference_count, 0);
    assert_eq!(zero.model_stats[0].last_inference, 0);

    let mut three_rows = iris_row();
    three_rows.inputs[0] = fp32_input(
        "input",
        &[3, 4],
        &[1., 2., 3., 4., 1., 2., 3., 4., 1., 2., 3., 4.],
    );
    for _ in 0..2 {
        c.model_infer(three_rows.clone()).await.expect("infer");
    }
    let mut bad = iris_row();
    bad.inputs[0].shape = vec![9, 4];
    c.model_infer(bad).await.expect_err("bad");

    let got = c
        .model_statistics(stats("iris", ""))
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(got.model_stats.len(), 1);
    let m = &got.model_stats[0];
    assert_eq!((m.name.as_str(), m.version.as_str()), ("iris", "1"));
    assert_eq!(m.execution_count, 2);
    assert_eq!(m.inference_count, 6);
    assert!(m.last_inference > 1_600_000_000_000);
    let i = m.inference_stats.as_ref().expect("inference_stats");
    let count = |d: &Option<proto::StatisticDuration>| d.as_ref().map(|d| d.count);
    assert_eq!(count(&i.success), Some(2));
    assert_eq!(count(&i.fail), Some(1));
    for d in [
        &i.queue,
        &i.compute_input,
        &i.compute_infer,
        &i.compute_output,
    ] {
        assert_eq!(count(d), Some(2));
    }
    assert_eq!(count(&i.cache_hit), Some(0));
    let ns = |d: &Option<proto::StatisticDuration>| d.as_ref().map_or(0, |d| d.ns);
    assert!(ns(&i.compute_infer) > 0 && ns(&i.compute_infer) < ns(&i.success));

    // The same numbers REST serves.
    let rest = s.state.registry.with("iris", |found| match found {
        Some(ModelState::Ready(ready)) => ready
            .versions()
            .map(|v| v.stats.json(&v.name, &v.version))
            .next(),
        _ => None,
    });
    let rest = rest.expect("iris stats");
    assert_eq!(rest["inference_stats"]["success"]["ns"], ns(&i.success));
    assert_eq!(rest["inference_stats"]["queue"]["ns"], ns(&i.queue));
    assert_eq!(rest["last_inference"], m.last_inference);

    assert_eq!(
        c.model_statistics(stats("iris", "1"))
            .await
            .expect("v1")
            .into_inner(),
        got
    );
    let all = c
        .model_statistics(stats("", ""))
        .await
        .expect("all")
        .into_inner();
    let names: Vec<&str> = all.model_stats.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["identity", "iris", "multi"]);
    assert_code(
        c.model_statistics(stats("nope", "")).await,
        Code::NotFound,
        "unknown model 'nope'",
    );
    assert_code(
        c.model_statistics(stats("iris", "2")).await,
        Code::NotFound,
        "no version '2'",
    );
    assert_code(
        c.model_statistics(stats("", "1")).await,
        Code::InvalidArgument,
        "a version needs a model name",
    );

    let metrics = s.state.metrics.encode();
    for line in [
        r#"inferd_requests_total{model="iris",protocol="grpc",code="200"} 2"#,
        r#"inferd_requests_total{model="iris",protocol="grpc",code="400"} 1"#,
        r#"inferd_request_duration_seconds_count{model="iris",protocol="grpc"} 3"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_are_counted_without_their_name() {
    let s = iris_server();
    let mut c = s.client().await;
    let mut r = iris_row();
    r.model_name = "made-up-name".into();
    c.model_infer(r).await.expect_err("unknown");
    let metrics = s.state.metrics.encode();
    assert!(
        metrics.contains(r#"inferd_requests_total{model="",protocol="grpc",code="404"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("made-up-name"));
}

#[test]
fn grpc_can_be_off_and_a_taken_port_is_reported() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sources = [named("iris", "examples/models/iris/model.onnx")];
    rt.block_on(async {
        let off = ServerConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            ..ServerConfig::default()
        };
        let server = Server::bind(&off, &sources, None).await.expect("binds");
        assert_eq!(server.grpc_local_addr().expect("addr"), None);

        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr");
        let clash = ServerConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            grpc_addr: Some(port),
            ..ServerConfig::default()
        };
        let err = Server::bind(&clash, &sources, None)
            .await
            .expect_err("port in use");
        assert!(
            err.to_string()
                .contains(&format!("cannot listen on {port}")),
            "{err}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_grpc_and_run_returns() {
    let s = iris_server();
    let addr = s.grpc();
    let mut c = s.client().await;
    c.model_infer(iris_row()).await.expect("infer");
    let result = tokio::task::spawn_blocking(move || s.stop())
        .await
        .expect("joined");
    assert_eq!(result, Ok(()));
    // Nothing listens any more.
    assert!(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_model_repository_over_grpc() {
    use proto::model_repository_parameter::ParameterChoice as Choice;
    use proto::{
        ModelConfigRequest, ModelReadyRequest, ModelRepositoryParameter, RepositoryIndexRequest,
        RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
    };
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(root.path().join("iris")).expect("mkdir");
    std::fs::copy(
        repo("examples/models/iris/model.onnx"),
        root.path().join("iris/model.onnx"),
    )
    .expect("copy");
    let s = start_with(
        vec![ModelSource::Repository(root.path().to_path_buf())],
        |c| c.model_control = inferd_server::ModelControl::Explicit,
    );
    let mut client = s.client().await;
    let index = |ready: bool| RepositoryIndexRequest {
        repository_name: String::new(),
        ready,
    };
    let listed = client
        .repository_index(index(false))
        .await
        .expect("index")
        .into_inner()
        .models;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].name.as_str(),
            listed[0].state.as_str(),
            listed[0].reason.as_str()
        ),
        ("iris", "UNAVAILABLE", "unloaded")
    );
    let param = |choice: Choice| ModelRepositoryParameter {
        parameter_choice: Some(choice),
    };
    let load = |name: &str, parameters: HashMap<String, ModelRepositoryParameter>| {
        RepositoryModelLoadRequest {
            repository_name: String::new(),
            model_name: name.to_owned(),
            parameters,
        }
    };
    let config = HashMap::from([(
        "config".to_owned(),
        param(Choice::StringParam(r#"{"max_batch_size": 4}"#.to_owned())),
    )]);
    client
        .repository_model_load(load("iris", config))
        .await
        .expect("loads");
    let ready = client
        .repository_index(index(true))
        .await
        .expect("index")
        .into_inner()
        .models;
    assert_eq!(
        (
            ready.len(),
            ready[0].version.as_str(),
            ready[0].state.as_str()
        ),
        (1, "1", "READY")
    );
    let served = client
        .model_config(ModelConfigRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .expect("config")
        .into_inner()
        .config
        .expect("a config");
    assert_eq!(served.max_batch_size, 4);
    let answer = client
        .model_infer(iris_row())
        .await
        .expect("infers")
        .into_inner();
    assert_eq!(answer.model_name, "iris");

    // Refusals name what is wrong; the model keeps serving.
    assert_code(
        client
            .repository_model_load(load("nope", HashMap::new()))
            .await,
        Code::NotFound,
        "no model 'nope'",
    );
    let mut elsewhere = load("iris", HashMap::new());
    elsewhere.repository_name = "other".into();
    assert_code(
        client.repository_model_load(elsewhere).await,
        Code::InvalidArgument,
        "repository_name",
    );
    let bad = HashMap::from([("config".to_owned(), param(Choice::BoolParam(true)))]);
    assert_code(
        client.repository_model_load(load("iris", bad)).await,
        Code::InvalidArgument,
        "parameters.config",
    );
    let file = HashMap::from([(
        "file:1/model.onnx".to_owned(),
        param(Choice::BytesParam(Bytes::from_static(b"onnx"))),
    )]);
    assert_code(
        client.repository_model_load(load("iris", file)).await,
        Code::InvalidArgument,
        "not supported",
    );
    client.model_infer(iris_row()).await.expect("still serving");

    client
        .repository_model_unload(RepositoryModelUnloadRequest {
            repository_name: String::new(),
            model_name: "iris".into(),
            parameters: HashMap::from([(
                "unload_dependents".to_owned(),
                param(Choice::BoolParam(false)),
            )]),
        })
        .await
        .expect("unloads");
    assert_code(
        client
            .model_ready(ModelReadyRequest {
                name: "iris".into(),
                version: String::new(),
            })
            .await,
        Code::NotFound,
        "unknown model",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_message_is_resource_exhausted_from_its_length_prefix() {
    // A ModelInfer call that announces 100 MB (over the 64 MiB default) and
    // sends a few bytes of it: refused from the prefix, as the router does.
    let s = start(vec![named("iris", "examples/models/iris/model.onnx")]);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let mut message = vec![0];
    message.extend_from_slice(&100_000_000u32.to_be_bytes());
    message.extend_from_slice(&[0; 64]);
    let request = hyper::Request::post(format!(
        "http://{}/inference.GRPCInferenceService/ModelInfer",
        s.grpc()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(Bytes::from(message)))
    .expect("request");
    let response = http.request(request).await.expect("an answer");
    let (parts, body) = response.into_parts();
    let trailers = http_body_util::BodyExt::collect(body)
        .await
        .expect("body")
        .trailers()
        .cloned();
    let status = parts
        .headers
        .get("grpc-status")
        .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        status.as_deref(),
        Some("8"),
        "{:?} {trailers:?}",
        parts.headers
    );
}
