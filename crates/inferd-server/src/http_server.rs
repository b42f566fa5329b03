//! The HTTP/1.1 accept loop: plain TCP or TLS, with limits on request
//! heads, and a graceful drain on shutdown.
//!
//! hyper answers a request head larger than the limit with 431 and closes
//! the connection; the loop counts it. A client that opens a connection and
//! sends no complete head within [`HEADER_READ_TIMEOUT`] is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::AppState;
use crate::metrics::Rejection;
use crate::tls::TlsListener;

/// How long a client may take to send a request head.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head hyper buffers (the request line and headers);
/// hyper's own floor is 8 KiB.
pub(crate) const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Where HTTP connections come from.
pub(crate) enum HttpListener {
    Plain(TcpListener),
    Tls(TlsListener),
}

/// Serves `app` until `shutdown` resolves, then waits for in-flight
/// requests (the caller bounds that wait).
pub(crate) async fn serve(
    listener: HttpListener,
    app: Router,
    state: Arc<AppState>,
    max_header_bytes: usize,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(max_header_bytes.max(MIN_HEADER_BYTES));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    let mut listener = listener;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&mut listener) => accepted,
        };
        match accepted {
            Accepted::Plain(io) => spawn(&builder, &graceful, io, &app, &state),
            Accepted::Tls(io) => spawn(&builder, &graceful, io, &app, &state),
            Accepted::Closed => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

enum Accepted {
    Plain(tokio::net::TcpStream),
    Tls(Box<crate::tls::TlsConnection>),
    Closed,
}

async fn accept(listener: &mut HttpListener) -> Accepted {
    match listener {
        HttpListener::Plain(l) => loop {
            match l.accept().await {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    return Accepted::Plain(tcp);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        },
        HttpListener::Tls(l) => match l.next().await {
            Some((io, _)) => Accepted::Tls(Box::new(io)),
            None => Accepted::Closed,
        },
    }
}

fn spawn<I>(
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    io: I,
    app: &Router,
    state: &Arc<AppState>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection =
        builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app.clone()));
    let connection = graceful.watch(connection);
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            if e.is_parse_too_large() {
                state
                    .metrics
                    .record_rejection("", Rejection::HeaderTooLarge);
            }
            tracing::debug!(error = %e, "connection ended with an error");
        }
    });
}
