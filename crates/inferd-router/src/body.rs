//! Body wrappers: a request body that a retry can take back while no byte
//! of it has been sent, and a response body that holds the replica's
//! in-flight count until the response is done.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::table::InFlight;

/// The body type of every response the router returns.
pub type RouterBody = BoxBody<Bytes, hyper::Error>;

/// Holds the client's request body until an attempt starts sending it.
#[derive(Debug, Clone)]
pub(crate) struct BodySlot {
    body: Arc<Mutex<Option<Incoming>>>,
    hint: SizeHint,
    end: bool,
}

impl BodySlot {
    pub(crate) fn new(body: Incoming) -> Self {
        let hint = body.size_hint();
        let end = body.is_end_stream();
        Self {
            body: Arc::new(Mutex::new(Some(body))),
            hint,
            end,
        }
    }

    /// Whether no attempt has started reading the body.
    pub(crate) fn untouched(&self) -> bool {
        self.end
            || self
                .body
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }

    /// A body for one attempt; it takes the client's body on its first poll.
    pub(crate) fn attempt(&self) -> LazyBody {
        LazyBody {
            slot: self.clone(),
            body: None,
        }
    }
}

/// Streams the client's body, taken from its slot on the first poll.
#[derive(Debug)]
pub(crate) struct LazyBody {
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
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => self.slot.end,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self.slot.hint,
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

/// A small complete body (the router's own JSON answers).
pub(crate) fn full(bytes: impl Into<Bytes>) -> RouterBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
