//! The two bodies of a one-to-one call: the client's request on its way
//! upstream, and the backend's response on its way to the client. Frames
//! pass as they arrive; a [`FrameScanner`] on each side reads only the
//! 5-byte prefix of each message, to enforce the size limit and catch
//! truncation, so no payload byte is copied.
//!
//! Ending a call early (deadline, client gone) must reset the upstream
//! stream, which h2 does only once both halves of it are dropped: the
//! response half is ours, the request half belongs to hyper's body-pumping
//! task. So the response side holds a [`oneshot::Sender`] whose drop makes
//! the request body fail with `CANCEL`, which makes hyper reset the stream
//! with that reason. A client that resets its own request stream has its
//! reason passed on the same way, so the backend sees what a direct
//! connection would have shown it.
//!
//! A reset of a stream the backend has not answered yet waits a little
//! ([`crate::upstream::LINGER`]) before it leaves: see [`crate::upstream`]
//! for why, and [`CallState::answered`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tonic::Status;

use crate::backend::Backend;
use crate::codec::frame::FrameScanner;
use crate::upstream::{self, SendRequest};
use crate::{BoxError, status};

/// What both halves of a one-to-one call know.
#[derive(Debug, Default)]
pub(crate) struct CallState {
    /// Why the request failed, for the client's status.
    pub(crate) failure: OnceLock<Status>,
    /// The backend answered (sent its response head): it has taken the
    /// stream, so a reset may leave at once.
    pub(crate) answered: AtomicBool,
}

pin_project_lite::pin_project! {
    /// The client's request body on its way upstream.
    pub(crate) struct RequestBody<B> {
        #[pin]
        inner: B,
        scanner: FrameScanner,
        // Fires (or is dropped) when the call has ended on the response side.
        cancel: Option<oneshot::Receiver<()>>,
        call: Arc<CallState>,
        // A reset waiting for the backend to take the stream, and its reason.
        lingering: Option<(Pin<Box<Sleep>>, h2::Reason)>,
        // Counts the request bytes, when the call is observed.
        bytes_in: Option<Arc<AtomicU64>>,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn new(
        inner: B,
        max_message_size: usize,
        cancel: oneshot::Receiver<()>,
        call: Arc<CallState>,
        bytes_in: Option<Arc<AtomicU64>>,
    ) -> Self {
        Self {
            inner,
            scanner: FrameScanner::new(max_message_size),
            cancel: Some(cancel),
            call,
            lingering: None,
            bytes_in,
        }
    }
}

/// The stream is reset with `reason`: at once when the backend answered,
/// else after a linger (see [`crate::upstream`]).
fn reset(
    call: &CallState,
    lingering: &mut Option<(Pin<Box<Sleep>>, h2::Reason)>,
    reason: h2::Reason,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if call.answered.load(Ordering::Acquire) {
        return Poll::Ready(Some(Err(status::reset(reason))));
    }
    let (sleep, reason) =
        lingering.get_or_insert_with(|| (Box::pin(tokio::time::sleep(upstream::LINGER)), reason));
    ready!(sleep.as_mut().poll(cx));
    Poll::Ready(Some(Err(status::reset(*reason))))
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
        if let Some((_, reason)) = this.lingering {
            let reason = *reason;
            return reset(this.call, this.lingering, reason, cx);
        }
        let ended = match this.cancel.as_mut() {
            Some(cancel) => Pin::new(cancel).poll(cx).is_ready(),
            None => true,
        };
        if ended {
            *this.cancel = None;
            return reset(this.call, this.lingering, h2::Reason::CANCEL, cx);
        }
        let fail = |call: &CallState, status: Status| {
            let _ = call.failure.set(status.clone());
            Poll::Ready(Some(Err(Box::new(status) as BoxError)))
        };
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(err) = this.scanner.observe(data) {
                        return fail(this.call, status::request_frame(&err));
                    }
                    if let Some(bytes) = this.bytes_in {
                        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                let err = err.into();
                let reason = status::reset_reason(&*err);
                let _ = this
                    .call
                    .failure
                    .set(Status::cancelled(format!("client request failed: {err}")));
                reset(this.call, this.lingering, reason, cx)
            }
            None => match this.scanner.finish() {
                Ok(()) => Poll::Ready(None),
                Err(err) => fail(this.call, status::request_frame(&err)),
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
    call: Arc<CallState>,
    backend: Arc<dyn Backend>,
}

/// The upstream resources of a running call, released together.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) inner: Incoming,
    pub(crate) deadline: Option<Pin<Box<Sleep>>>,
    /// Dropped when the call ends, which ends the request body (see module docs).
    pub(crate) _cancel: oneshot::Sender<()>,
    /// Keeps the connection alive while the call runs, even if the backend's
    /// channel has been closed meanwhile.
    pub(crate) _connection: SendRequest,
}

impl PassthroughBody {
    pub(crate) fn new(
        live: Live,
        max_message_size: usize,
        trailers_only: bool,
        call: Arc<CallState>,
        backend: Arc<dyn Backend>,
    ) -> Self {
        Self {
            live: Some(live),
            scanner: FrameScanner::new(max_message_size),
            trailers_only,
            call,
            backend,
        }
    }

    /// Ends the call with `status` in the trailers and releases the upstream.
    fn end(&mut self, status: &Status) -> Poll<Option<Frame<Bytes>>> {
        self.live = None;
        tracing::debug!(backend = %self.backend, code = ?status.code(), status_message = status.message(), "call ended with an error");
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
                    .call
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
