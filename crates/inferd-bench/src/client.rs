//! One keep-alive HTTP/1.1 connection that posts the same body again and again.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::stats::ErrorKind;

/// What every request of a target sends, prepared once.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) body: Bytes,
    /// Check that a 200's body parses as JSON.
    pub(crate) validate: bool,
}

/// A client that sends one request at a time and reports how it went.
pub(crate) trait Client: Send + 'static {
    fn request(&mut self) -> impl std::future::Future<Output = Result<(), ErrorKind>> + Send;

    /// Forgets the connection (after a timeout its state is unknown).
    fn abandon(&mut self);
}

/// Makes clients: one per closed-loop worker, or as needed in open loop.
pub(crate) trait ClientFactory: Send + Sync + 'static {
    type Client: Client;
    fn client(&self) -> Self::Client;
}

/// An HTTP/1.1 client over one keep-alive connection, opened lazily and
/// reopened after a failure.
pub(crate) struct HttpClient {
    target: Arc<Prepared>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl HttpClient {
    pub(crate) fn new(target: Arc<Prepared>) -> HttpClient {
        HttpClient { target, conn: None }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ErrorKind> {
        let stream = TcpStream::connect(self.target.addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| ErrorKind::Connect)?;
        tokio::spawn(async move {
            // Ends when the connection closes; errors surface on the sender.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

impl Client for HttpClient {
    async fn request(&mut self) -> Result<(), ErrorKind> {
        let mut sender = match self.conn.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender.ready().await.map_err(|_| ErrorKind::Io)?;
        let t = &self.target;
        let request = Request::post(t.path.as_str())
            .header(header::HOST, t.host.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(t.body.clone()))
            .map_err(|_| ErrorKind::Io)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|_| ErrorKind::Io)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| ErrorKind::Io)?
            .to_bytes();
        self.conn = Some(sender);
        if status != StatusCode::OK {
            return Err(ErrorKind::Status(status.as_u16()));
        }
        if t.validate && serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            return Err(ErrorKind::InvalidBody);
        }
        Ok(())
    }

    fn abandon(&mut self) {
        self.conn = None;
    }
}

/// Makes [`HttpClient`]s for one target.
pub(crate) struct HttpFactory(pub(crate) Arc<Prepared>);

impl ClientFactory for HttpFactory {
    type Client = HttpClient;

    fn client(&self) -> HttpClient {
        HttpClient::new(self.0.clone())
    }
}

/// GETs a URL and parses its body as JSON (for model metadata look-ups).
pub(crate) async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("'{url}': {e}"))?;
    let host = uri.host().ok_or_else(|| format!("'{url}' has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, format!("{host}:{port}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}
