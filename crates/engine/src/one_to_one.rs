//! Transparent forwarding to one backend.
//!
//! Request and response bodies are forwarded frame by frame as they arrive,
//! both directions at once; no message is decoded or copied. A
//! [`FrameScanner`] watches each direction for oversize and truncated
//! messages at the cost of reading five bytes per message. Headers and
//! trailers pass verbatim.
//!
//! Ending a call early (deadline, client gone) must reset the upstream stream,
//! which h2 does only once both halves of it are dropped: the response half
//! is ours, the request half belongs to hyper's body-pumping task. So the
//! response side holds a [`oneshot::Sender`] whose drop makes the request
//! body fail, which makes hyper reset the stream.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::backend::Backend;
use crate::body::ResponseBody;
use crate::codec::frame::FrameScanner;
use crate::config::ProxyConfig;
use crate::upstream::{SendRequest, UpstreamBody};
use crate::{BoxError, status, upstream};

/// Forwards one call to `backend`.
pub(crate) async fn forward<B>(
    config: &ProxyConfig,
    backend: Arc<dyn Backend>,
    parts: http::request::Parts,
    body: B,
    deadline: Option<Instant>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let failure = Arc::new(OnceLock::new());
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let request_body = RequestBody {
        inner: body,
        scanner: FrameScanner::new(config.max_message_size),
        cancel: Some(cancel_rx),
        failure: failure.clone(),
    };
    let call = async {
        let upstream = backend.connect(&parts).await?;
        let path = parts.uri.path_and_query().expect("checked gRPC path");
        let (connection, request) = upstream::request(
            upstream,
            path,
            deadline,
            false,
            UpstreamBody::new(request_body),
        )?;
        upstream::send(connection, request, &backend).await
    };
    let expired = || {
        Status::deadline_exceeded(format!(
            "deadline expired before backend {backend} answered"
        ))
    };
    let outcome = match deadline {
        Some(at) => tokio::time::timeout_at(at, call)
            .await
            .unwrap_or_else(|_| Err(expired())),
        None => call.await,
    };
    // An answer after the deadline is too late whatever it says: the
    // backend's own timer may have won the race against ours.
    let late = deadline.is_some_and(|at| Instant::now() >= at);
    let (connection, response) = match outcome {
        Ok(ok) if !late => ok,
        outcome => {
            let status = match outcome {
                _ if late => expired(),
                // A failure of the request side is the real cause of an upstream reset.
                Err(status) => failure.get().cloned().unwrap_or(status),
                Ok(_) => unreachable!("only late answers get here"),
            };
            tracing::warn!(backend = %backend, method = parts.uri.path(), code = ?status.code(), message = status.message(), "call failed");
            return status::response(&status);
        }
    };
    let (head, inner) = response.into_parts();
    let trailers_only = head.headers.contains_key("grpc-status");
    let body = PassthroughBody {
        live: Some(Live {
            inner,
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            _cancel: cancel_tx,
            _connection: connection,
        }),
        scanner: FrameScanner::new(config.max_message_size),
        trailers_only,
        failure,
        backend,
    };
    Response::from_parts(head, ResponseBody::passthrough(body))
}

pin_project_lite::pin_project! {
    /// The client's request body on its way upstream.
    struct RequestBody<B> {
        #[pin]
        inner: B,
        scanner: FrameScanner,
        cancel: Option<oneshot::Receiver<()>>,
        failure: Arc<OnceLock<Status>>,
    }
}

impl<B> RequestBody<B> {
    fn fail(
        failure: &OnceLock<Status>,
        status: Status,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let _ = failure.set(status.clone());
        Poll::Ready(Some(Err(Box::new(status))))
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Some(cancel) = this.cancel {
            if Pin::new(cancel).poll(cx).is_ready() {
                *this.cancel = None;
                return Poll::Ready(Some(Err("call ended".into())));
            }
        } else {
            return Poll::Ready(Some(Err("call ended".into())));
        }
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref()
                    && let Err(err) = this.scanner.observe(data)
                {
                    return Self::fail(this.failure, status::request_frame(&err));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                let err = err.into();
                Self::fail(
                    this.failure,
                    Status::cancelled(format!("client request failed: {err}")),
                )
            }
            None => match this.scanner.finish() {
                Ok(()) => Poll::Ready(None),
                Err(err) => Self::fail(this.failure, status::request_frame(&err)),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The backend's response body on its way to the client.
#[derive(Debug)]
pub(crate) struct PassthroughBody {
    /// What the running call holds; `None` once it has ended.
    live: Option<Live>,
    scanner: FrameScanner,
    trailers_only: bool,
    failure: Arc<OnceLock<Status>>,
    backend: Arc<dyn Backend>,
}

/// The upstream resources of a running call, released together.
#[derive(Debug)]
struct Live {
    inner: Incoming,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Dropped when the call ends, which ends the request body (see module docs).
    _cancel: oneshot::Sender<()>,
    /// Keeps the connection alive while the call runs, even if the backend's
    /// channel has been closed meanwhile.
    _connection: SendRequest,
}

impl PassthroughBody {
    /// Ends the call with `status` in the trailers and releases the upstream.
    fn end(&mut self, status: &Status) -> Poll<Option<Frame<Bytes>>> {
        self.live = None;
        tracing::warn!(backend = %self.backend, code = ?status.code(), message = status.message(), "call ended with an error");
        Poll::Ready(Some(Frame::trailers(status::trailers(status))))
    }

    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        let Some(live) = self.live.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(sleep) = live.deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            return self.end(&Status::deadline_exceeded(format!(
                "deadline expired while backend {} was answering",
                self.backend
            )));
        }
        match ready!(Pin::new(&mut live.inner).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => match self.scanner.observe(&data) {
                    Ok(()) => Poll::Ready(Some(Frame::data(data))),
                    Err(err) => {
                        let status = status::reply_frame(&err, &self.backend);
                        self.end(&status)
                    }
                },
                Err(frame) => match self.scanner.finish() {
                    Ok(()) => {
                        self.live = None;
                        Poll::Ready(Some(frame))
                    }
                    Err(err) => {
                        let status = status::reply_frame(&err, &self.backend);
                        self.end(&status)
                    }
                },
            },
            Some(Err(err)) => {
                let status = self
                    .failure
                    .get()
                    .cloned()
                    .unwrap_or_else(|| status::from_upstream_error(&err, &self.backend));
                self.end(&status)
            }
            None if self.trailers_only => {
                self.live = None;
                Poll::Ready(None)
            }
            None => {
                let status = match self.scanner.finish() {
                    Err(err) => status::reply_frame(&err, &self.backend),
                    Ok(()) => Status::internal(format!(
                        "backend {} ended the stream without a grpc-status",
                        self.backend
                    )),
                };
                self.end(&status)
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        // Only a Trailers-Only response may end with the upstream: anything
        // else still owes the client trailers (ours, if the backend sent none).
        match &self.live {
            None => true,
            Some(live) => self.trailers_only && live.inner.is_end_stream(),
        }
    }
}
