//! The gRPC side: `inference.GRPCInferenceService` calls routed by the
//! model name in their first message, forwarded over HTTP/2 to a replica's
//! gRPC listener with the response (trailers included) streamed back.
//!
//! To route a call, the router reads its first message (5-byte prefix:
//! compressed flag and big-endian length), and of it only the model name
//! field; it never decodes a whole request. A unary call's body is then
//! read whole before the call takes a replica slot, so that a slow client
//! holds none and a call that a replica lost before answering can go to
//! another; `ModelStreamInfer` streams after its first message. Errors the router makes itself are trailers-only responses:
//! HTTP 200 with `grpc-status` and `grpc-message` in the head.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response};
use tokio::time::Instant;

use std::time::Duration;

use crate::body::{BodySlot, Frames, RouterBody, Whole, full};
use crate::error::{Failure, GrpcCode};
use crate::hold::{Dispatched, Trace};
use crate::proxy::{Router, pin};
use crate::table::{RevisionState, Wire};

const INFERENCE: &str = "/inference.GRPCInferenceService/";
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// `ServerLiveResponse { live: true }`, `ServerReadyResponse { ready: true }`
/// and `HealthCheckResponse { status: SERVING }`: field 1, varint 1.
const TRUE: &[u8] = &[0x08, 0x01];
const PREFIX: usize = 5;
/// The one streaming method; every other is unary.
const STREAM_INFER: &str = "ModelStreamInfer";

impl Router {
    /// Routes one gRPC call and returns the response to send to the client.
    /// `ServerLive`, `ServerReady` and `grpc.health.v1.Health/Check` are
    /// answered here.
    pub async fn handle_grpc(&self, req: Request<Incoming>) -> Response<RouterBody> {
        match req.uri().path() {
            "/inference.GRPCInferenceService/ServerLive" | HEALTH_CHECK => return message(TRUE),
            "/inference.GRPCInferenceService/ServerReady" => {
                // An empty message is `ready: false`.
                return message(if self.is_ready() { TRUE } else { &[] });
            }
            _ => {}
        }
        let mut trace = Trace::new(Instant::now());
        let result = self.route_grpc(req, &mut trace).await;
        self.finish(&trace, result, Wire::Grpc)
    }

    async fn route_grpc(
        &self,
        req: Request<Incoming>,
        trace: &mut Trace,
    ) -> Result<Response<RouterBody>, Failure> {
        let path = req.uri().path();
        let Some(method) = path.strip_prefix(INFERENCE) else {
            let message = format!("the router serves inference.GRPCInferenceService, not {path}");
            return Err(Failure::Unimplemented(message));
        };
        let field = model_field(method);
        let streaming = method == STREAM_INFER;
        let pin = pin(req.headers())?;
        let (parts, mut body) = req.into_parts();
        let (first, model) = match field {
            Some(field) => {
                let first =
                    read_first_message(&mut body, self.max_grpc_message, self.body_read_timeout)
                        .await?;
                let model = match &first.message {
                    Some(message) => string_field(message, field).map_err(Failure::BadMessage)?,
                    None => None,
                };
                (first, model)
            }
            None => (FirstMessage::default(), None),
        };
        let slot = if streaming {
            // A stream's client may wait for answers before it sends more.
            BodySlot::with_prefix(first.buffered, (!first.ended).then_some(body))
        } else {
            // A unary call's body is one message: read whole before it
            // takes a slot, so that a slow client holds none and a retry
            // can send it again.
            let limit = self.max_grpc_message.saturating_add(PREFIX);
            let whole = if first.ended {
                if first.buffered.len() > limit {
                    return Err(Failure::BodyTooLarge { limit });
                }
                Whole {
                    bytes: first.buffered,
                    trailers: None,
                }
            } else {
                self.read_body(body, first.buffered, limit).await?
            };
            BodySlot::whole(whole)
        };
        let body_bytes = slot.len();
        let dispatched = match model.filter(|m| !m.is_empty()) {
            Some(name) => {
                self.dispatch(&name, pin.as_deref(), Wire::Grpc, body_bytes, trace)
                    .await?
            }
            None => self.any_replica(trace)?,
        };
        self.forward_until(parts, slot, Wire::Grpc, dispatched, trace)
            .await
    }

    /// A free replica of any service, for calls that name no model.
    fn any_replica(&self, trace: &mut Trace) -> Result<Dispatched, Failure> {
        let routes = self.routes();
        let mut services: Vec<_> = routes.services.values().collect();
        services.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if services.is_empty() {
            return Err(Failure::NoGrpcReplica);
        }
        // Start at a random service so no one service takes them all.
        let n = services.len() as u64;
        let start = usize::try_from(self.rng.below(n)).unwrap_or(0);
        services.rotate_left(start);
        for service in services {
            for (index, revision) in service.revisions.iter().enumerate() {
                if matches!(revision.state, RevisionState::Unavailable(_)) {
                    continue;
                }
                if let Ok(slot) = revision.acquire(&self.rng, Wire::Grpc, None) {
                    trace.deadline = Some(trace.start + service.timeout);
                    return Ok(Dispatched {
                        service: std::sync::Arc::clone(service),
                        revision: index,
                        slot,
                    });
                }
            }
        }
        Err(Failure::NoGrpcReplica)
    }
}

/// The field of a method's request message that holds the model name.
fn model_field(method: &str) -> Option<u64> {
    match method {
        // `name` / `model_name`.
        "ModelReady" | "ModelMetadata" | "ModelInfer" | "ModelStreamInfer" | "ModelConfig"
        | "ModelStatistics" => Some(1),
        // `repository_name` is field 1.
        "RepositoryModelLoad" | "RepositoryModelUnload" => Some(2),
        _ => None,
    }
}

/// What the router read of a request body.
#[derive(Debug, Default)]
struct FirstMessage {
    /// Every byte read, to be sent on before the rest.
    buffered: Bytes,
    /// The first message's payload, when the body held a whole one.
    message: Option<Bytes>,
    /// Whether the body ended within `buffered`.
    ended: bool,
}

async fn read_first_message(
    body: &mut Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<FirstMessage, Failure> {
    let mut buf = BytesMut::new();
    let mut ended = false;
    let mut whole = None;
    loop {
        if buf.len() >= PREFIX {
            let size = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let len = usize::try_from(size).unwrap_or(usize::MAX);
            if len > limit {
                return Err(Failure::MessageTooLarge {
                    size: u64::from(size),
                    limit,
                });
            }
            if buf.len() - PREFIX >= len {
                whole = Some(len);
                break;
            }
        }
        if ended {
            break;
        }
        let frame = tokio::time::timeout(timeout, body.frame())
            .await
            .map_err(|_| Failure::BodyTimeout { timeout })?;
        match frame {
            None => ended = true,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                // Trailers end a request body; gRPC clients send none.
                Err(_) => ended = true,
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "reading a gRPC request failed");
                return Err(Failure::BadMessage("the request body broke off"));
            }
        }
    }
    let ended = ended || body.is_end_stream();
    let buffered = buf.freeze();
    let message = match whole {
        Some(len) => {
            match buffered[0] {
                0 => {}
                1 => {
                    return Err(Failure::Unimplemented(
                        "the router cannot read compressed gRPC requests".to_owned(),
                    ));
                }
                _ => return Err(Failure::BadMessage("unknown compressed flag")),
            }
            Some(buffered.slice(PREFIX..PREFIX + len))
        }
        None if buffered.is_empty() => None,
        None => return Err(Failure::BadMessage("the body ends inside a message")),
    };
    Ok(FirstMessage {
        buffered,
        message,
        ended,
    })
}

/// The last occurrence (protobuf's rule for a repeated scalar) of string
/// field `wanted` of a protobuf message, skipping every other field.
fn string_field(mut message: &[u8], wanted: u64) -> Result<Option<String>, &'static str> {
    let mut found: Option<&[u8]> = None;
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let (number, wire_type) = (key >> 3, key & 7);
        if number == 0 {
            return Err("protobuf field number 0");
        }
        match wire_type {
            0 => {
                varint(&mut message)?;
            }
            1 => {
                take(&mut message, 8)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut message)?).map_err(|_| "field too long")?;
                let bytes = take(&mut message, len)?;
                if number == wanted {
                    found = Some(bytes);
                }
            }
            5 => {
                take(&mut message, 4)?;
            }
            _ => return Err("unsupported protobuf wire type"),
        }
    }
    found
        .map(|b| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| "the model name is not UTF-8")
        })
        .transpose()
}

fn varint(input: &mut &[u8]) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or("truncated protobuf varint")?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("protobuf varint over 10 bytes")
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], &'static str> {
    if input.len() < len {
        return Err("truncated protobuf field");
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

fn grpc_head(code: GrpcCode, headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code as u32));
}

/// A trailers-only response: the status in the head, no body.
pub(crate) fn status(code: GrpcCode, message: &str) -> Response<RouterBody> {
    let mut response = Response::new(full(Bytes::new()));
    let headers = response.headers_mut();
    grpc_head(code, headers);
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    response
}

/// A successful response of one message.
fn message(payload: &[u8]) -> Response<RouterBody> {
    let mut data = Vec::with_capacity(PREFIX + payload.len());
    data.push(0);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    data.extend_from_slice(&len.to_be_bytes());
    data.extend_from_slice(payload);
    let mut trailers = HeaderMap::new();
    grpc_head(GrpcCode::Ok, &mut trailers);
    trailers.remove(header::CONTENT_TYPE);
    let mut response = Response::new(Frames::boxed(Bytes::from(data), trailers));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}

/// gRPC's encoding of `grpc-message`: printable ASCII but `%` as is,
/// every other byte as `%XX`.
fn percent_encode(message: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_model_name_among_other_fields() {
        // ModelInferRequest: model_version "2" (field 2), id "x" (3),
        // model_name "iris" (1), raw_input_contents 3 bytes (7), a varint
        // (field 9), a fixed64 (10), a fixed32 (11).
        let mut message = vec![0x12, 1, b'2', 0x1a, 1, b'x', 0x0a, 4];
        message.extend_from_slice(b"iris");
        message.extend_from_slice(&[0x3a, 3, 1, 2, 3, 0x48, 0x96, 0x01]);
        message.extend_from_slice(&[0x51, 0, 0, 0, 0, 0, 0, 0, 0]);
        message.extend_from_slice(&[0x5d, 0, 0, 0, 0]);
        assert_eq!(string_field(&message, 1), Ok(Some("iris".to_owned())));
        assert_eq!(string_field(&message, 2), Ok(Some("2".to_owned())));
        assert_eq!(string_field(&message, 4), Ok(None));
        assert_eq!(string_field(&[], 1), Ok(None));
    }

    #[test]
    fn the_last_occurrence_wins() {
        let message = [0x0a, 1, b'a', 0x0a, 1, b'b'];
        assert_eq!(string_field(&message, 1), Ok(Some("b".to_owned())));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert!(string_field(&[0x0a, 5, b'a'], 1).is_err());
        assert!(string_field(&[0x08], 1).is_err());
        assert!(string_field(&[0x0b], 1).is_err());
        assert!(string_field(&[0x02, 0], 1).is_err());
        assert!(string_field(&[0x0a, 1, 0xff], 1).is_err());
        assert!(
            string_field(
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
                ],
                1
            )
            .is_err()
        );
    }

    #[test]
    fn methods_name_their_model_field() {
        assert_eq!(model_field("ModelInfer"), Some(1));
        assert_eq!(model_field("ModelReady"), Some(1));
        assert_eq!(model_field("RepositoryModelLoad"), Some(2));
        assert_eq!(model_field("ServerMetadata"), None);
        assert_eq!(model_field("RepositoryIndex"), None);
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("no replica: 100%"), "no replica: 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }
}
