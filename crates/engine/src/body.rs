//! [`ResponseBody`]: the one body type of every proxied response, so the
//! service has a single concrete response type without boxing; and the
//! responses the engine writes itself (gRPC errors, HTTP errors).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use tonic::Status;

use crate::fan_out::StreamedBody;
use crate::passthrough::PassthroughBody;
use crate::status::{self, GRPC_CONTENT_TYPE};

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

    pub(crate) fn streamed(body: Box<StreamedBody>) -> Self {
        Self {
            kind: Kind::Streamed(body),
        }
    }
}

/// A Trailers-Only response (headers with `grpc-status`, no body).
pub fn error_response(status: &Status) -> Response<ResponseBody> {
    error_with_headers(status, HeaderMap::new())
}

/// A Trailers-Only response that also carries `headers` (e.g. response
/// metadata a backend sent before failing).
pub(crate) fn error_with_headers(
    status: &Status,
    mut headers: HeaderMap,
) -> Response<ResponseBody> {
    headers.extend(status::trailers(status));
    headers.insert(header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    let mut res = Response::new(ResponseBody { kind: Kind::Empty });
    *res.headers_mut() = headers;
    res
}

/// An HTTP-level error for requests that are not gRPC at all.
pub(crate) fn http_error(code: StatusCode, message: &'static str) -> Response<ResponseBody> {
    let body = VecDeque::from([Bytes::from_static(message.as_bytes())]);
    let mut res = Response::new(ResponseBody::chunks(body, None));
    *res.status_mut() = code;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
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
