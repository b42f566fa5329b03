//! The admin API of the local control plane, on loopback, behind the bearer
//! token kept in the state directory. `inferd apply|get|describe|logs|delete`
//! are its clients ([`super::client`]).
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/apply` | JSON array of InferenceServices; all or nothing |
//! | `GET /v1/services` | every service ([`ServiceView`]) |
//! | `GET /v1/services/{name}` | one service |
//! | `DELETE /v1/services/{name}` | deletes it; its replicas drain and stop |
//! | `GET /v1/services/{name}/logs?revision=N&tail=N&follow=true` | replica logs, as text |

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use hyper::body::Frame;
use inferd_api::InferenceService;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::controller::Command;
use super::{LocalError, ServiceView};

/// Largest apply body.
const MAX_APPLY_BYTES: usize = 8 * 1024 * 1024;
/// Most bytes of one log file sent when no tail is asked for.
const MAX_LOG_BYTES: u64 = 4 * 1024 * 1024;
/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    commands: mpsc::Sender<Command>,
    token: Arc<str>,
}

impl AdminState {
    pub(super) fn new(commands: mpsc::Sender<Command>, token: String) -> Self {
        AdminState {
            commands,
            token: token.into(),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ApiFailure> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| ApiFailure::from(LocalError::Stopped))?;
        rx.await.map_err(|_| ApiFailure::from(LocalError::Stopped))
    }
}

/// An error answer: `{"error": ...}` with a status that fits.
struct ApiFailure(StatusCode, String);

impl From<LocalError> for ApiFailure {
    fn from(e: LocalError) -> Self {
        let status = match &e {
            LocalError::Invalid(_) => StatusCode::BAD_REQUEST,
            LocalError::NotFound(_) => StatusCode::NOT_FOUND,
            LocalError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiFailure(status, e.to_string())
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// Serves the admin API until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = axum::Router::new()
        .route("/v1/apply", post(apply))
        .route("/v1/services", get(list))
        .route("/v1/services/{name}", get(get_one).delete(delete))
        .route("/v1/services/{name}/logs", get(logs))
        .layer(DefaultBodyLimit::max(MAX_APPLY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin API stopped");
    }
}

async fn require_token(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
        return ApiFailure(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token (it is in the state directory's `token` file)".into(),
        )
        .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn apply(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<Vec<super::Applied>>, ApiFailure> {
    let services: Vec<InferenceService> = {
        let de = &mut serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            ApiFailure(
                StatusCode::BAD_REQUEST,
                format!("{}: {}", e.path(), e.inner()),
            )
        })?
    };
    let result = state
        .ask(|reply| Command::Apply { services, reply })
        .await?;
    Ok(Json(result?))
}

async fn list(State(state): State<AdminState>) -> Result<Json<Vec<ServiceView>>, ApiFailure> {
    Ok(Json(state.ask(|reply| Command::List { reply }).await?))
}

async fn get_one(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceView>, ApiFailure> {
    let view = state
        .ask(|reply| Command::Get {
            name: name.clone(),
            reply,
        })
        .await?;
    view.map(Json)
        .ok_or_else(|| ApiFailure::from(LocalError::NotFound(name)))
}

async fn delete(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiFailure> {
    state
        .ask(|reply| Command::Delete {
            name: name.clone(),
            reply,
        })
        .await??;
    Ok(Json(serde_json::json!({ "deleted": name })))
}

#[derive(Deserialize)]
struct LogQuery {
    revision: Option<u32>,
    tail: Option<usize>,
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Response, ApiFailure> {
    let files = state
        .ask(|reply| Command::Logs {
            name: name.clone(),
            revision: q.revision,
            reply,
        })
        .await??;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let several = files.len() > 1 || q.follow;
    tokio::spawn(async move {
        let mut offsets: Vec<(String, PathBuf, u64)> = Vec::new();
        for (id, path) in files {
            let offset = send_file(&tx, &id, &path, q.tail, several).await;
            offsets.push((id, path, offset));
        }
        if !q.follow {
            return;
        }
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            if tx.is_closed() {
                return;
            }
            // New replicas' files too.
            if let Ok(Ok(now)) = state
                .ask(|reply| Command::Logs {
                    name: name.clone(),
                    revision: q.revision,
                    reply,
                })
                .await
            {
                for (id, path) in now {
                    if !offsets.iter().any(|(_, p, _)| *p == path) {
                        offsets.push((id, path, 0));
                    }
                }
            }
            for (id, path, offset) in &mut offsets {
                match read_from(path, *offset).await {
                    Some(bytes) if !bytes.is_empty() => {
                        *offset += bytes.len() as u64;
                        let mut text = Vec::with_capacity(bytes.len() + id.len() + 4);
                        for line in bytes.split_inclusive(|b| *b == b'\n') {
                            text.extend_from_slice(format!("[{id}] ").as_bytes());
                            text.extend_from_slice(line);
                        }
                        if tx.send(Bytes::from(text)).await.is_err() {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::new(ChannelBody(rx)),
    )
        .into_response())
}

/// Sends a file (or its last `tail` lines); returns the offset read up to.
async fn send_file(
    tx: &mpsc::Sender<Bytes>,
    id: &str,
    path: &std::path::Path,
    tail: Option<usize>,
    prefixed: bool,
) -> u64 {
    let len = tokio::fs::metadata(path).await.map_or(0, |m| m.len());
    let text = match tail {
        Some(n) => {
            let path = path.to_path_buf();
            let lines =
                tokio::task::spawn_blocking(move || super::supervisor::tail_lines(&path, n))
                    .await
                    .unwrap_or_default();
            let mut s = lines.join("\n");
            if !s.is_empty() {
                s.push('\n');
            }
            s.into_bytes()
        }
        None => read_from(path, len.saturating_sub(MAX_LOG_BYTES))
            .await
            .unwrap_or_default(),
    };
    let mut out = Vec::with_capacity(text.len() + 64);
    if prefixed {
        for line in text.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(format!("[{id}] ").as_bytes());
            out.extend_from_slice(line);
        }
    } else {
        out = text;
    }
    let _ = tx.send(Bytes::from(out)).await;
    len
}

async fn read_from(path: &std::path::Path, offset: u64) -> Option<Vec<u8>> {
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let len = file.metadata().await.ok()?.len();
    if len <= offset {
        return Some(Vec::new());
    }
    file.seek(std::io::SeekFrom::Start(offset)).await.ok()?;
    let mut buf = Vec::new();
    file.take(MAX_LOG_BYTES).read_to_end(&mut buf).await.ok()?;
    Some(buf)
}

/// A response body fed by a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
