//! Body wrappers: a request body that a retry can take back while no byte
//! of the client's stream has been sent (after a prefix the router already
//! read), a response body that holds the replica's in-flight count until
//! the response is done, and small bodies the router makes itself.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::stats::InFlight;

/// The body type of every response the router returns.
pub type RouterBody = BoxBody<Bytes, hyper::Error>;

/// Holds the client's request body until an attempt starts sending it.
/// `prefix` is what the router read of it already (the first gRPC message);
/// every attempt sends it again before the rest.
#[derive(Debug, Clone)]
pub(crate) struct BodySlot {
    prefix: Bytes,
    body: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    end: bool,
}

impl BodySlot {
    pub(crate) fn new(body: Incoming) -> Self {
        Self::with_prefix(Bytes::new(), Some(body))
    }

    /// `rest` is None when the router read the whole body into `prefix`.
    pub(crate) fn with_prefix(prefix: Bytes, rest: Option<Incoming>) -> Self {
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
            body: Arc::new(Mutex::new(rest)),
            hint: total,
            end,
        }
    }

    /// Whether no attempt has started reading the client's stream.
    pub(crate) fn untouched(&self) -> bool {
        self.end
            || self
                .body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }

    /// A body for one attempt; it takes the client's body on its first poll
    /// after the prefix.
    pub(crate) fn attempt(&self) -> LazyBody {
        LazyBody {
            prefix: (!self.prefix.is_empty()).then(|| self.prefix.clone()),
            slot: self.clone(),
            body: None,
        }
    }
}

/// Streams the client's body, taken from its slot on the first poll.
#[derive(Debug)]
pub(crate) struct LazyBody {
    prefix: Option<Bytes>,
    slot: BodySlot,
    body: Option<Incoming>,
}

impl Body for LazyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        if self.body.is_none() {
            let taken = self
                .slot
                .body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            match taken {
                Some(body) => self.body = Some(body),
                None => return Poll::Ready(None),
            }
        }
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.prefix.is_some() {
            return false;
        }
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => self.slot.end,
        }
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
