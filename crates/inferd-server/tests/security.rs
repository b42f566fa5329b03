//! TLS on both listeners and the request limits, over real connections.

#[path = "../../../tests/support/http.rs"]
mod http;
#[path = "support/server.rs"]
mod server;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{get, post, read_reply, send_raw};
use http_body_util::{BodyExt, Full};
use inferd_server::tls::TlsFiles;
use inferd_server::{Server, ServerConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use server::{TestServer, named};

const IRIS_ROW: &str = r#"{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [6.3, 3.3, 6.0, 2.5]}]}"#;

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM.
fn certificate(dir: &Path) -> (TlsFiles, CertificateDer<'static>) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, made.cert.pem()).expect("cert");
    std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("key");
    (files, made.cert.der().clone())
}

fn client_config(trusted: &CertificateDer<'static>, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// One HTTPS request, blocking; the reply's status and JSON body.
fn https(addr: SocketAddr, trusted: &CertificateDer<'static>, raw: &str) -> (u16, Value) {
    let config = client_config(trusted, b"http/1.1");
    let name = ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connect");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(raw.as_bytes()).expect("write");
    let mut bytes = Vec::new();
    // A close without close_notify still leaves the whole reply read.
    let _ = tls.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP reply");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).expect("json body"))
}

fn infer_request(addr: SocketAddr) -> String {
    format!(
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{IRIS_ROW}",
        IRIS_ROW.len()
    )
}

/// ServerLive over gRPC by hand: HTTP/2 over TLS, one length-prefixed
/// empty message, and the answer's message bytes and grpc-status.
async fn grpc_server_live(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
) -> (Vec<u8>, String) {
    let connector = tokio_rustls::TlsConnector::from(client_config(trusted, b"h2"));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2");
    tokio::spawn(connection);
    let request =
        hyper::Request::post("https://localhost/inference.GRPCInferenceService/ServerLive")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
            .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.expect("body");
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    (collected.to_bytes().to_vec(), status)
}

#[test]
fn tls_serves_http_and_grpc_and_plain_clients_get_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (files, trusted) = certificate(dir.path());
    let s = TestServer::spawn(
        vec![named("iris", "examples/models/iris/model.onnx")],
        |c| {
            c.tls = Some(files);
            c.grpc_addr = Some("127.0.0.1:0".parse().expect("addr"));
        },
    );
    let addr = s.addr;
    let ready =
        format!("GET /v2/health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    server::eventually("ready over TLS", || https(addr, &trusted, &ready).0 == 200);
    let (status, body) = https(addr, &trusted, &infer_request(addr));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([2]));

    // A plain-text client gets no HTTP answer from a TLS port.
    let mut plain = TcpStream::connect(addr).expect("connect");
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("timeout");
    let _ = plain.write_all(infer_request(addr).as_bytes());
    let mut bytes = Vec::new();
    let _ = plain.read_to_end(&mut bytes);
    assert!(
        !bytes.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );

    // An untrusting client refuses the handshake; the server keeps serving.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("other");
    let config = client_config(other.cert.der(), b"http/1.1");
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").expect("n"))
        .expect("client");
    let mut tls = rustls::StreamOwned::new(conn, TcpStream::connect(addr).expect("connect"));
    assert!(
        tls.write_all(infer_request(addr).as_bytes())
            .and_then(|()| tls.flush())
            .is_err()
    );
    assert_eq!(https(addr, &trusted, &infer_request(addr)).0, 200);

    let grpc_addr = s.grpc_addr.expect("gRPC is on");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (message, status) = rt.block_on(grpc_server_live(grpc_addr, &trusted));
    assert_eq!(status, "0");
    // One uncompressed message of two bytes: field 1 (live) = true.
    assert_eq!(message, vec![0, 0, 0, 0, 2, 0x08, 0x01]);
}

#[test]
fn bad_certificates_stop_the_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (files, _) = certificate(dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let start = |tls: TlsFiles| {
        let config = ServerConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            tls: Some(tls),
            ..ServerConfig::default()
        };
        rt.block_on(Server::bind(
            &config,
            &[named("iris", "examples/models/iris/model.onnx")],
            None,
        ))
        .map(|_| ())
        .expect_err("refused")
        .to_string()
    };
    let missing = start(TlsFiles {
        cert: dir.path().join("nope.pem"),
        key: files.key.clone(),
    });
    assert!(
        missing.contains("cannot read the certificate chain"),
        "{missing}"
    );
    std::fs::write(dir.path().join("empty.pem"), "not a certificate").expect("write");
    let empty = start(TlsFiles {
        cert: dir.path().join("empty.pem"),
        key: files.key.clone(),
    });
    assert!(empty.contains("no CERTIFICATE"), "{empty}");
    let swapped = start(TlsFiles {
        cert: files.cert.clone(),
        key: files.cert.clone(),
    });
    assert!(swapped.contains("private key"), "{swapped}");
    let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).expect("other");
    std::fs::write(
        dir.path().join("other.key"),
        other.signing_key.serialize_pem(),
    )
    .expect("w");
    let mismatched = start(TlsFiles {
        cert: files.cert.clone(),
        key: dir.path().join("other.key"),
    });
    assert!(
        mismatched.contains("do not make a TLS configuration"),
        "{mismatched}"
    );
}

#[test]
fn limits_refuse_with_clear_errors_and_are_counted() {
    let s = TestServer::start_with(
        vec![named("iris", "examples/models/iris/model.onnx")],
        |c| {
            c.max_tensor_elements = 8;
            c.max_header_bytes = 16 * 1024;
        },
    );
    // A head larger than the limit: 431 from the HTTP layer.
    let big = format!(
        "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = send_raw(s.addr, big.as_bytes());
    assert_eq!(r.status, 431);
    // A tensor over the element limit: 400 naming the input and the limit.
    let wide = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 4], "data": vec![0.0; 12]}]});
    let r = post(s.addr, "/v2/models/iris/infer", &wide.to_string());
    assert_eq!(r.status, 400);
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("input 'input' has 12 elements, more than the limit of 8"),
        "{error}"
    );
    // Within the limits all is well, and the refusals were counted.
    assert_eq!(post(s.addr, "/v2/models/iris/infer", IRIS_ROW).status, 200);
    let metrics = get(s.addr, "/metrics").text();
    for line in [
        r#"inferd_rejected_requests_total{model="",reason="header_too_large"} 1"#,
        r#"inferd_rejected_requests_total{model="iris",reason="too_many_elements"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line}");
    }
}

#[test]
fn unfinished_and_oversized_bodies_get_408_and_413() {
    let s = TestServer::start_with(
        vec![named("iris", "examples/models/iris/model.onnx")],
        |c| {
            c.max_body_bytes = 1024;
            c.body_read_timeout = std::time::Duration::from_millis(300);
        },
    );
    let head = |headers: &str| {
        format!("POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\n{headers}\r\n").into_bytes()
    };
    let open = |raw: &[u8]| {
        let mut tcp = TcpStream::connect(s.addr).expect("connect");
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        tcp.write_all(raw).expect("write");
        tcp
    };
    // Bodies that stop coming, announced or chunked: the server is not
    // stalled by them, and lets each go with a 408 that closes it.
    let mut unfinished = head("Content-Length: 1000\r\n");
    unfinished.push(b'{');
    let mut slow: Vec<TcpStream> = (0..20).map(|_| open(&unfinished)).collect();
    let mut in_chunk = head("Transfer-Encoding: chunked\r\n");
    in_chunk.extend_from_slice(b"10\r\n{\"inputs\"");
    slow.push(open(&in_chunk));
    assert_eq!(post(s.addr, "/v2/models/iris/infer", IRIS_ROW).status, 200);
    for tcp in &mut slow {
        let r = read_reply(tcp);
        assert_eq!(r.status, 408, "{}", r.text());
        assert_eq!(r.header("connection"), Some("close"));
        assert!(
            r.text()
                .contains("no part of the request body came for 300 ms")
        );
    }
    // Over the limit: announced, refused before any of it is sent; a chunk
    // that declares 2^64 - 1 bytes, as soon as more than the limit came.
    let mut declared = open(&head("Content-Length: 1025\r\n"));
    let r = read_reply(&mut declared);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    let mut huge = head("Transfer-Encoding: chunked\r\n");
    huge.extend_from_slice(b"ffffffffffffffff\r\n");
    huge.extend_from_slice(&[b' '; 2048]);
    let r = read_reply(&mut open(&huge));
    assert_eq!(r.status, 413, "{}", r.text());
    // A chunk that declares 2^64 - 1 bytes and stops: 408.
    let mut stalled = head("Transfer-Encoding: chunked\r\n");
    stalled.extend_from_slice(b"ffffffffffffffff\r\n{");
    assert_eq!(read_reply(&mut open(&stalled)).status, 408);
    assert_eq!(post(s.addr, "/v2/models/iris/infer", IRIS_ROW).status, 200);
}
