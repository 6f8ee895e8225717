//! [`ResponseBody`]: the one body type every proxied response uses, so the
//! service has a single concrete response type without boxing.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::one_to_many::StreamedBody;
use crate::one_to_one::PassthroughBody;

/// Body of every response of [`TransparentProxy`](crate::TransparentProxy).
///
/// Errors never surface as body errors: they end the body with gRPC
/// trailers, so `Error` is [`Infallible`].
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// No body at all (Trailers-Only responses).
    Empty,
    /// Data chunks then optional trailers (merged unary fan-out, plain text errors).
    Chunks {
        chunks: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// One-to-one passthrough.
    Passthrough(Box<PassthroughBody>),
    /// Streaming fan-out.
    Streamed(Box<StreamedBody>),
}

impl ResponseBody {
    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    pub(crate) fn text(text: &'static str) -> Self {
        Self::chunks(VecDeque::from([Bytes::from_static(text.as_bytes())]), None)
    }

    pub(crate) fn chunks(chunks: VecDeque<Bytes>, trailers: impl Into<Option<HeaderMap>>) -> Self {
        Self {
            kind: Kind::Chunks {
                chunks,
                trailers: trailers.into(),
            },
        }
    }

    pub(crate) fn passthrough(body: PassthroughBody) -> Self {
        Self {
            kind: Kind::Passthrough(Box::new(body)),
        }
    }

    pub(crate) fn streamed(body: StreamedBody) -> Self {
        Self {
            kind: Kind::Streamed(Box::new(body)),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match &mut self.get_mut().kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Chunks { chunks, trailers } => Poll::Ready(
                chunks
                    .pop_front()
                    .map(Frame::data)
                    .or_else(|| trailers.take().map(Frame::trailers)),
            ),
            Kind::Passthrough(body) => body.poll_frame(cx),
            Kind::Streamed(body) => body.poll_frame(cx),
        };
        frame.map(|frame| frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Chunks { chunks, trailers } => chunks.is_empty() && trailers.is_none(),
            Kind::Passthrough(body) => body.is_end_stream(),
            Kind::Streamed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
