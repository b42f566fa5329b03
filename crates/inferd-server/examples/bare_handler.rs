//! The benchmark baseline: a bare axum server that reads the request body
//! and answers every `POST /v2/models/{model}/infer` with fixed bytes (what
//! inferd answers for the README's iris request). It measures what the HTTP
//! stack alone costs on this machine, so inferd's figures can be read as a
//! ratio of it.
//!
//! `cargo run --release -p inferd-server --example bare_handler -- 127.0.0.1:8090`

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;

const RESPONSE: &str = r#"{"model_name":"iris","model_version":"1","outputs":[{"name":"label","datatype":"INT64","shape":[2],"data":[0,0]},{"name":"probabilities","datatype":"FP32","shape":[2,3],"data":[0.98165685,0.018343145,1.4395042e-8,0.97151023,0.028489752,3.0086234e-8]}]}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let app = Router::new().route(
        "/v2/models/{model}/infer",
        post(|_body: Bytes| async { ([(header::CONTENT_TYPE, "application/json")], RESPONSE) }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "bare handler listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await
}
