use super::*;
use crate::uri::{Shape, Source, parse};
use std::path::Path;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn isolated(map: &BTreeMap<String, String>) -> Env<'_> {
    Env {
        overrides: map,
        inherit: false,
    }
}

fn remote(uri: &str) -> Remote {
    match parse(uri, Path::new("/")) {
        Ok(Source::Remote(remote)) => remote,
        other => panic!("{uri}: {other:?}"),
    }
}

fn build(uri: &str, pairs: &[(&str, &str)]) -> Result<Arc<dyn ObjectStore>> {
    let map = vars(pairs);
    build_store(uri, &remote(uri), &isolated(&map))
}

#[test]
fn env_overrides_and_empty_values() {
    let map = vars(&[("A_ONE", "1"), ("A_EMPTY", ""), ("B", "2")]);
    let env = isolated(&map);
    assert_eq!(env.get("A_ONE").as_deref(), Some("1"));
    assert_eq!(env.get("A_EMPTY"), None);
    assert_eq!(env.get("MISSING"), None);
    assert_eq!(
        env.with_prefix("A_"),
        vars(&[("A_ONE", "1")]),
        "empty values count as unset"
    );
    // An override hides the process environment's value; PATH is set in any test run.
    let unset = vars(&[("PATH", "")]);
    let env = Env {
        overrides: &unset,
        inherit: true,
    };
    assert_eq!(env.get("PATH"), None);
    let env = Env {
        overrides: &map,
        inherit: true,
    };
    assert!(env.get("PATH").is_some());
}

#[test]
fn s3_defaults_to_aws() {
    let map = vars(&[]);
    let s = s3_settings(&isolated(&map));
    assert_eq!(
        s,
        S3Settings {
            endpoint: None,
            region: None,
            allow_http: false,
            allow_invalid_certificates: false,
        }
    );
}

#[test]
fn s3_endpoint_precedence_and_http() {
    let map = vars(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/"),
        ("S3_ENDPOINT", "minio:9000"),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
    ]);
    let s = s3_settings(&isolated(&map));
    assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert!(s.allow_http, "an http:// endpoint allows plain HTTP");
    assert_eq!(s.region.as_deref(), Some("eu-west-1"));

    let map = vars(&[
        ("AWS_ENDPOINT_URL_S3", "https://s3.example.com"),
        ("AWS_ENDPOINT_URL", "http://other"),
        ("AWS_REGION", "us-west-2"),
        ("AWS_DEFAULT_REGION", "eu-west-1"),
    ]);
    let s = s3_settings(&isolated(&map));
    assert_eq!(s.endpoint.as_deref(), Some("https://s3.example.com"));
    assert!(!s.allow_http);
    assert_eq!(s.region.as_deref(), Some("us-west-2"));
}

#[test]
fn s3_kserve_variables() {
    let map = vars(&[
        ("S3_ENDPOINT", "minio-service.kubeflow:9000"),
        ("S3_USE_HTTPS", "0"),
    ]);
    let s = s3_settings(&isolated(&map));
    assert_eq!(
        s.endpoint.as_deref(),
        Some("http://minio-service.kubeflow:9000")
    );
    assert!(s.allow_http);

    let map = vars(&[("S3_ENDPOINT", "minio:9000"), ("S3_VERIFY_SSL", "0")]);
    let s = s3_settings(&isolated(&map));
    assert_eq!(s.endpoint.as_deref(), Some("https://minio:9000"));
    assert!(!s.allow_http);
    assert!(s.allow_invalid_certificates);

    let map = vars(&[("AWS_ALLOW_HTTP", "true")]);
    assert!(s3_settings(&isolated(&map)).allow_http);
}

#[test]
fn s3_clients_build_without_a_request() {
    build(
        "s3://models/iris.onnx",
        &[
            ("AWS_ACCESS_KEY_ID", "key"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_PROFILE", "ignored"),
        ],
    )
    .expect("s3 client");
    // No credentials: the instance/pod identity is asked lazily, not now.
    build("s3://models/iris/", &[]).expect("s3 client without credentials");
}

#[test]
fn s3_half_credentials_are_a_config_error() {
    let uri = "s3://models/iris.onnx";
    let Err(e) = build(uri, &[("AWS_ACCESS_KEY_ID", "key")]) else {
        panic!("a key id without a secret was accepted");
    };
    assert_eq!(e.kind(), "config");
    assert!(e.to_string().starts_with(uri), "{e}");
    let cause = std::error::Error::source(&e).map(ToString::to_string);
    assert!(
        cause.as_deref().is_some_and(|c| c.contains("ecret")),
        "{cause:?}"
    );
}

#[test]
fn gcs_configuration() {
    let uri = "gs://bucket/models/iris.onnx";
    assert_eq!(
        remote(uri).shape,
        Shape::Object {
            name: "iris.onnx".into()
        }
    );
    let key = r#"{"private_key":"unused","private_key_id":"id","client_email":"a@b.c","disable_oauth":true}"#;
    build(uri, &[("GOOGLE_SERVICE_ACCOUNT_KEY", key)]).expect("gcs client");

    for (var, value) in [
        ("GOOGLE_SERVICE_ACCOUNT", "/nonexistent/inferd/sa.json"),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/nonexistent/inferd/adc.json",
        ),
        ("GOOGLE_SERVICE_ACCOUNT_KEY", "{not json"),
        (
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            r#"{"private_key":"not a pem key","private_key_id":"id","client_email":"a@b.c"}"#,
        ),
    ] {
        let Err(e) = build(uri, &[(var, value)]) else {
            panic!("{var}={value} was accepted");
        };
        assert_eq!(e.kind(), "config", "{var}: {e}");
        assert!(e.to_string().starts_with(uri), "{e}");
    }
}

#[test]
fn azure_configuration() {
    let uri = "az://container/models/iris/";
    let Err(e) = build(uri, &[]) else {
        panic!("an azure client without an account was built");
    };
    assert_eq!(e.kind(), "config");
    assert!(e.to_string().starts_with(uri), "{e}");

    build(
        uri,
        &[
            ("AZURE_STORAGE_ACCOUNT_NAME", "account"),
            // base64 of "not a real key"
            ("AZURE_STORAGE_ACCOUNT_KEY", "bm90IGEgcmVhbCBrZXk="),
        ],
    )
    .expect("azure client");

    let Err(e) = build(
        uri,
        &[
            ("AZURE_STORAGE_ACCOUNT_NAME", "account"),
            ("AZURE_STORAGE_ACCOUNT_KEY", "%%% not base64"),
        ],
    ) else {
        panic!("a key that is not base64 was accepted");
    };
    assert_eq!(e.kind(), "config");
}

#[test]
fn http_clients() {
    build("http://127.0.0.1:1/m.onnx", &[]).expect("http client");
    build("https://example.com/models/m.onnx", &[]).expect("https client");
}
