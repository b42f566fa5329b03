//! Body wrappers: reading a request body whole before dispatch, a request
//! body that a retry can send again (the part the router read, then the
//! client's stream while no attempt has taken it), a
//! response body that holds the replica's in-flight count until the
//! response is done, and small bodies the router makes itself.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::stats::InFlight;

/// The body type of every response the router returns.
pub type RouterBody = BoxBody<Bytes, hyper::Error>;

/// Why an attempt's request body failed.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An attempt that a retry replaced polled the client's stream.
#[derive(Debug, thiserror::Error)]
#[error("the request body went to a later attempt")]
struct Superseded;

/// The client's stream past the part the router read, and the attempt
/// allowed to take it.
#[derive(Debug)]
struct Rest {
    body: Option<Incoming>,
    /// Moved on by each retry, so that an attempt being torn down cannot
    /// take the stream from the one that replaced it.
    attempt: u32,
}

/// Holds the client's request body for the attempts that send it. `prefix`
/// is what the router read of it before dispatch (the whole body, or a
/// gRPC stream's first message); every attempt sends it again before the
/// rest, which only one attempt can stream.
#[derive(Debug, Clone)]
pub(crate) struct BodySlot {
    prefix: Bytes,
    /// The client's trailers, when the body ended within the part read.
    trailers: Option<HeaderMap>,
    rest: Arc<Mutex<Rest>>,
    hint: SizeHint,
    /// Whether the part read is the whole body.
    end: bool,
}

impl BodySlot {
    /// A body the router read whole.
    pub(crate) fn whole(body: Whole) -> Self {
        Self::build(body.bytes, body.trailers, None)
    }

    /// A body the router read the start of; `rest` streams.
    pub(crate) fn with_prefix(prefix: Bytes, rest: Option<Incoming>) -> Self {
        Self::build(prefix, None, rest)
    }

    fn build(prefix: Bytes, trailers: Option<HeaderMap>, rest: Option<Incoming>) -> Self {
        let len = prefix.len() as u64;
        let (hint, end) = match &rest {
            Some(body) => (body.size_hint(), body.is_end_stream()),
            None => (SizeHint::with_exact(0), true),
        };
        let mut total = SizeHint::new();
        total.set_lower(hint.lower().saturating_add(len));
        if let Some(upper) = hint.upper() {
            total.set_upper(upper.saturating_add(len));
        }
        Self {
            prefix,
            trailers,
            // An ended stream has nothing left to take.
            rest: Arc::new(Mutex::new(Rest {
                body: rest.filter(|_| !end),
                attempt: 0,
            })),
            hint: total,
            end,
        }
    }

    /// Bytes the router read of the body (what a held request keeps).
    pub(crate) fn len(&self) -> usize {
        self.prefix.len()
    }

    /// Hands the body to the next attempt, if none of the client's stream
    /// is lost: the part read is kept, and the rest must not have been
    /// taken. From then on, earlier attempts cannot take it.
    pub(crate) fn retry(&self) -> bool {
        if self.end {
            return true;
        }
        let mut rest = self.rest.lock().unwrap_or_else(PoisonError::into_inner);
        if rest.body.is_none() {
            return false;
        }
        rest.attempt = rest.attempt.wrapping_add(1);
        true
    }

    /// A body for one attempt: the part read, then the client's stream,
    /// taken on the first poll past the part read.
    pub(crate) fn attempt(&self) -> LazyBody {
        let attempt = self
            .rest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .attempt;
        LazyBody {
            prefix: (!self.prefix.is_empty()).then(|| self.prefix.clone()),
            trailers: self.trailers.clone(),
            slot: self.clone(),
            attempt,
            body: None,
        }
    }
}

/// A request body the router read to its end.
#[derive(Debug, Default)]
pub(crate) struct Whole {
    pub(crate) bytes: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
}

/// Why reading a request body failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// It announced (Content-Length), or sent, more than the limit.
    TooLarge,
    /// No frame came within the read timeout.
    Timeout,
    /// The client's stream broke.
    Broken(hyper::Error),
}

/// Reads the rest of `body` after `prefix` (bytes already read of it) to
/// its end. A body that announces more than `limit` bytes in all is
/// refused before any of it is read, one that sends more as soon as it
/// does; `timeout` bounds the wait for each frame, so a client that stops
/// sending is let go. A body of one frame is not copied.
pub(crate) async fn read_whole(
    mut body: Incoming,
    prefix: Bytes,
    limit: usize,
    timeout: Duration,
) -> Result<Whole, ReadError> {
    let limit = limit as u64;
    let mut read = prefix.len() as u64;
    if body.size_hint().lower().saturating_add(read) > limit {
        return Err(ReadError::TooLarge);
    }
    let mut chunks = Vec::new();
    if !prefix.is_empty() {
        chunks.push(prefix);
    }
    let mut trailers = None;
    while !body.is_end_stream() {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(None) => break,
            Ok(Some(frame)) => frame.map_err(ReadError::Broken)?,
        };
        match frame.into_data() {
            Ok(data) => {
                read = read.saturating_add(data.len() as u64);
                if read > limit {
                    return Err(ReadError::TooLarge);
                }
                if !data.is_empty() {
                    chunks.push(data);
                }
            }
            Err(frame) => {
                // Trailers end a body.
                trailers = frame.into_trailers().ok();
                break;
            }
        }
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(usize::try_from(read).unwrap_or(0));
            for chunk in &chunks {
                joined.extend_from_slice(chunk);
            }
            joined.freeze()
        }
    };
    Ok(Whole { bytes, trailers })
}

/// One attempt's request body.
#[derive(Debug)]
pub(crate) struct LazyBody {
    prefix: Option<Bytes>,
    trailers: Option<HeaderMap>,
    slot: BodySlot,
    attempt: u32,
    body: Option<Incoming>,
}

impl Body for LazyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if self.slot.end {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        if self.body.is_none() {
            let taken = {
                let mut rest = self
                    .slot
                    .rest
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if rest.attempt == self.attempt {
                    rest.body.take()
                } else {
                    None
                }
            };
            match taken {
                Some(body) => self.body = Some(body),
                // Ending here would send a cut body as if whole.
                None => return Poll::Ready(Some(Err(Superseded.into()))),
            }
        }
        match self.body.as_mut() {
            Some(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(BoxError::from))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.prefix.is_some() {
            return false;
        }
        if self.slot.end {
            return self.trailers.is_none();
        }
        self.body.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None if self.prefix.is_some() => self.slot.hint,
            // The prefix is sent: what is left is the client's stream.
            None => {
                let len = self.slot.prefix.len() as u64;
                let mut hint = SizeHint::new();
                hint.set_lower(self.slot.hint.lower().saturating_sub(len));
                if let Some(upper) = self.slot.hint.upper() {
                    hint.set_upper(upper.saturating_sub(len));
                }
                hint
            }
        }
    }
}

/// A replica's response body with the request's in-flight count.
#[derive(Debug)]
pub(crate) struct Counted {
    body: Incoming,
    _in_flight: InFlight,
}

impl Counted {
    pub(crate) fn boxed(body: Incoming, in_flight: InFlight) -> RouterBody {
        Self {
            body,
            _in_flight: in_flight,
        }
        .boxed()
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A few frames the router made itself (a gRPC message and its trailers).
#[derive(Debug)]
pub(crate) struct Frames(VecDeque<Frame<Bytes>>);

impl Frames {
    pub(crate) fn boxed(data: Bytes, trailers: HeaderMap) -> RouterBody {
        let frames = VecDeque::from([Frame::data(data), Frame::trailers(trailers)]);
        Self(frames).boxed()
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A small complete body (the router's own JSON answers).
pub(crate) fn full(bytes: impl Into<Bytes>) -> RouterBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
