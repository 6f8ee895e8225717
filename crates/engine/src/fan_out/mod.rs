//! Fan-out: one call to N backends at once.
//!
//! Every backend is a [`Leg`]: it connects, sends the request, reads,
//! decompresses and tags the replies ([`Backend::tag_reply`]). Legs start
//! together, so a slow or dead backend delays nobody, and they run inside the
//! call's own future ([`legs`]), which polls only the legs that woke. The
//! client's request is copied to every leg ([`broadcast`]), each at its own
//! pace; a leg that stops taking it is dropped from the call.
//!
//! Memory is bounded in bytes whatever the client's reading speed: a leg
//! holds at most one reply message, and is only polled for the next once the
//! call has taken it, so a client that stops reading holds the backends back
//! (through HTTP/2 flow control) instead of making the proxy buffer for it.
//!
//! - Unary ([`ReplyShape::Unary`]): one reply per backend, collected until
//!   every backend is done or the caller's deadline is about to expire, then
//!   sent as ONE message, the concatenation in the director's order. A reply
//!   that would make the merged message exceed the size limit, or a second
//!   reply (the method streams), ends that backend's part; failed or late
//!   backends become [`Backend::error_entry`] entries. The merged message is
//!   written as a prefix followed by the parts, never copied again.
//! - Streamed: each tagged reply is forwarded as it arrives.
//! - Envelope ([`ReplyShape::Envelope`]): as streamed, but each reply is
//!   wrapped whole (any method, any reply type), the response head leaves at
//!   once (a hung backend cannot hold it), each backend's end is one more
//!   item with its status and trailers, and the call's trailers carry a
//!   summary (`switchyard-summary: 3 ok, 1 unavailable`).
//!
//! Dropping the response (client gone) drops every leg, which resets every
//! upstream stream.

mod broadcast;
mod leg;
mod legs;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};

use crate::backend::{Backend, ReplyShape};
use crate::body::Legs;
use crate::budget::{Hold, Holder, MemoryBudget};
use crate::codec::frame::FrameHeader;
use crate::config::{Http2Settings, ProxyConfig};
use crate::log_limit::LogLimit;
use crate::names::GRPC_STATUS;
use crate::status::{self, GRPC_CONTENT_TYPE};
use crate::upstream::UpstreamBody;
use crate::{BoxError, upstream};
use broadcast::{Broadcast, BroadcastEvent, RequestFeed};
use leg::{Leg, LegEvent, Start};
use legs::LegSet;

/// How a fan-out call answers.
#[derive(Debug)]
pub(crate) enum Answer {
    /// One merged message, then the trailers.
    Merged {
        headers: HeaderMap,
        message: VecDeque<Bytes>,
        trailers: HeaderMap,
        /// The memory budget the message holds until it is sent.
        hold: Option<Hold>,
    },
    /// Replies as they arrive.
    Streamed {
        headers: HeaderMap,
        body: Box<StreamedBody>,
    },
    /// The whole call failed (the request was invalid, or a backend without
    /// error entries failed).
    Failed { headers: HeaderMap, status: Status },
}

static LEG_FAILED: LogLimit = LogLimit::new(Duration::from_secs(1));

/// What a streamed fan-out may hold per machine: replies the machine sent
/// that the caller has not read, up to the upstream stream window.
const STREAMED_LEG_BYTES: usize = Http2Settings::CHANNEL.stream_window as usize;

/// One fan-out call to forward.
pub(crate) struct Request<B> {
    pub(crate) parts: http::request::Parts,
    pub(crate) body: B,
    pub(crate) deadline: Option<Instant>,
    pub(crate) shape: ReplyShape,
    /// Counts the request bytes, when the call is observed.
    pub(crate) bytes_in: Option<Arc<AtomicU64>>,
    /// Reports each backend's end, when the call is observed.
    pub(crate) legs: Option<Legs>,
    /// The budget the call's buffers come from, and whose they are.
    pub(crate) memory: Option<(MemoryBudget, Holder)>,
    /// How long each backend may take for its whole answer.
    pub(crate) leg_timeout: Option<Duration>,
}

/// Forwards one call to every backend.
pub(crate) async fn forward<B>(
    config: &ProxyConfig,
    backends: Vec<Arc<dyn Backend>>,
    request: Request<B>,
) -> Answer
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let Request {
        parts,
        body,
        deadline,
        shape,
        bytes_in,
        legs: observed,
        memory,
        leg_timeout,
    } = request;
    // A streamed fan-out may hold an upstream stream window per machine for
    // its whole life: taken before anything is dialled.
    let streamed_hold = match (&memory, shape) {
        (Some((budget, holder)), ReplyShape::Streamed | ReplyShape::Envelope) => {
            match budget.hold(*holder, backends.len() * STREAMED_LEG_BYTES) {
                Ok(hold) => Some(hold),
                Err(status) => {
                    return Answer::Failed {
                        headers: HeaderMap::new(),
                        status,
                    };
                }
            }
        }
        _ => None,
    };
    let method = parts.uri.path().to_owned();
    let parts = Arc::new(parts);
    let (broadcast, feeds) = Broadcast::new(
        UpstreamBody::new(body.map_err(Into::into)),
        backends.len(),
        config.max_message_size,
        config.request_stall_timeout,
        bytes_in,
    );
    let legs = backends
        .iter()
        .zip(feeds)
        .map(|(backend, feed)| {
            let start = start(
                backend.clone(),
                parts.clone(),
                deadline,
                config.max_upstream_metadata,
                feed,
            );
            Leg::new(backend.clone(), shape, config.max_message_size, start)
        })
        .collect();
    let call = Call {
        legs: LegSet::new(legs),
        broadcast: Some(broadcast),
        backends,
        method,
        stall_timeout: config.request_stall_timeout,
        observed,
        leg_deadline: leg_timeout.map(|t| (t, Box::pin(tokio::time::sleep(t)))),
        late: VecDeque::new(),
    };
    match shape {
        ReplyShape::Streamed | ReplyShape::Envelope => {
            call.streamed(deadline, shape, streamed_hold).await
        }
        ReplyShape::Unary => {
            let cutoff = deadline.map(|at| {
                let left = at.saturating_duration_since(Instant::now());
                at - config.deadline_margin.min(left / 10)
            });
            call.merged(cutoff, config.max_message_size, memory).await
        }
    }
}

/// Connects to `backend` and sends the request, up to the response head.
fn start(
    backend: Arc<dyn Backend>,
    parts: Arc<http::request::Parts>,
    deadline: Option<Instant>,
    max_metadata: usize,
    feed: RequestFeed,
) -> Start {
    Box::pin(async move {
        let upstream = backend.connect(&parts).await?;
        let path = parts.uri.path_and_query().expect("checked gRPC path");
        let (connection, request) = upstream::request(
            upstream,
            || parts.headers.clone(),
            path,
            deadline,
            true,
            max_metadata,
            UpstreamBody::new(feed),
        )?;
        upstream::send(connection, request, &backend).await
    })
}

/// What happens next in a fan-out call.
enum CallEvent {
    Leg(usize, LegEvent),
    /// Leg `.0` did not take the request in time; it is stopped.
    Stalled(usize),
    RequestFailed(Status),
    /// Every leg has ended.
    LegsDone,
}

/// The running legs and the request broadcast of one call.
struct Call {
    legs: LegSet,
    /// `None` once the whole request was delivered.
    broadcast: Option<Broadcast>,
    backends: Vec<Arc<dyn Backend>>,
    method: String,
    stall_timeout: Duration,
    /// Reports each backend's end, when the call is observed.
    observed: Option<Legs>,
    /// Every backend's time for its whole answer (they start together),
    /// until it passes.
    leg_deadline: Option<(Duration, Pin<Box<Sleep>>)>,
    /// Backends stopped at the leg deadline whose end is still to report.
    late: VecDeque<(usize, Status)>,
}

impl Call {
    /// Reports that backend `index` is done, if the call is observed.
    fn ended(&self, index: usize, code: Code, error_entry: bool) {
        if let Some(legs) = &self.observed {
            legs.ended(&*self.backends[index], code, error_entry);
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<CallEvent> {
        if let Some((timeout, sleep)) = self.leg_deadline.as_mut()
            && sleep.as_mut().poll(cx).is_ready()
        {
            let timeout = *timeout;
            self.leg_deadline = None;
            for index in self.legs.running().collect::<Vec<_>>() {
                self.stop(index);
                let status = Status::deadline_exceeded(format!(
                    "machine {} did not answer within {timeout:?} (the machine timeout)",
                    self.backends[index]
                ));
                self.late.push_back((index, status));
            }
        }
        if let Some((index, status)) = self.late.pop_front() {
            return Poll::Ready(CallEvent::Leg(index, LegEvent::Done(Err(status))));
        }
        if let Some(broadcast) = self.broadcast.as_mut() {
            match broadcast.poll(cx) {
                Poll::Ready(BroadcastEvent::Finished) => self.broadcast = None,
                Poll::Ready(BroadcastEvent::Failed(status)) => {
                    self.broadcast = None;
                    return Poll::Ready(CallEvent::RequestFailed(status));
                }
                Poll::Ready(BroadcastEvent::Stalled(index)) => {
                    self.legs.stop(index);
                    return Poll::Ready(CallEvent::Stalled(index));
                }
                Poll::Pending => {}
            }
        }
        match self.legs.poll_next(cx) {
            Poll::Ready(Some((index, event))) => {
                if matches!(event, LegEvent::Done(_))
                    && let Some(broadcast) = self.broadcast.as_mut()
                {
                    broadcast.drop_leg(index);
                }
                Poll::Ready(CallEvent::Leg(index, event))
            }
            Poll::Ready(None) => Poll::Ready(CallEvent::LegsDone),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Ends leg `index` early (its upstream stream is reset).
    fn stop(&mut self, index: usize) {
        self.legs.stop(index);
        if let Some(broadcast) = self.broadcast.as_mut() {
            broadcast.drop_leg(index);
        }
    }

    fn no_envelope(&self, index: usize) -> Status {
        Status::internal(format!(
            "backend {} cannot answer in the envelope",
            self.backends[index]
        ))
    }

    fn stalled(&self, index: usize) -> Status {
        Status::unavailable(format!(
            "machine {} did not take the request within {:?}",
            self.backends[index], self.stall_timeout
        ))
    }

    /// Backend `index`'s error entry, or `Err` when it must fail the call.
    fn error_entry(
        &self,
        index: usize,
        shape: ReplyShape,
        status: &Status,
    ) -> Result<Bytes, Status> {
        let backend = &self.backends[index];
        self.ended(index, status.code(), true);
        // A machine's status text (up to 16 MiB of trailers) is cut before it
        // reaches the log or the caller.
        let status = status::bounded(status);
        let status = status.as_ref();
        if let Some(suppressed) = LEG_FAILED.check() {
            tracing::warn!(backend = %backend, method = %self.method, code = ?status.code(), status_message = status.message(), suppressed, "backend failed in fan-out");
        }
        let entry = match shape {
            ReplyShape::Envelope => backend.envelope_end(status, &HeaderMap::new()),
            shape => backend.error_entry(shape, status),
        };
        entry.ok_or_else(|| status.clone())
    }

    /// Collects one reply per backend and answers with them merged; the
    /// merged reply is held from `memory` until the caller has it.
    async fn merged(
        mut self,
        cutoff: Option<Instant>,
        max_message_size: usize,
        memory: Option<(MemoryBudget, Holder)>,
    ) -> Answer {
        let mut slots: Vec<Slot> = self.backends.iter().map(|_| Slot::default()).collect();
        let mut total = 0usize;
        let mut cutoff = cutoff.map(|at| Box::pin(tokio::time::sleep_until(at)));
        loop {
            let event = std::future::poll_fn(|cx| {
                if let Some(sleep) = cutoff.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(None);
                }
                self.poll_event(cx).map(Some)
            })
            .await;
            let Some(event) = event else {
                break; // the deadline is near: answer with what arrived
            };
            match event {
                CallEvent::LegsDone => break,
                CallEvent::RequestFailed(status) => {
                    return Answer::Failed {
                        headers: HeaderMap::new(),
                        status,
                    };
                }
                CallEvent::Stalled(i) => slots[i].outcome = Some(Err(self.stalled(i))),
                CallEvent::Leg(i, LegEvent::Headers(headers)) => slots[i].headers = Some(headers),
                CallEvent::Leg(i, LegEvent::Message(message)) => {
                    let refused = if slots[i].message.is_some() {
                        Some(Status::failed_precondition(format!(
                            "{} sent more than one reply message: the method streams; \
                             declare it as streamed (streamed_methods) to fan it out",
                            self.method
                        )))
                    } else if total + message.len() > max_message_size {
                        Some(Status::resource_exhausted(format!(
                            "the reply of machine {} ({} bytes) does not fit in the merged \
                             reply's limit of {max_message_size} bytes",
                            self.backends[i],
                            message.len()
                        )))
                    } else {
                        None
                    };
                    match refused {
                        Some(status) => {
                            self.stop(i);
                            if let Some(dropped) = slots[i].message.take() {
                                total -= dropped.len();
                            }
                            slots[i].outcome = Some(Err(status));
                        }
                        None => {
                            total += message.len();
                            slots[i].message = Some(message);
                        }
                    }
                }
                CallEvent::Leg(i, LegEvent::Done(outcome)) => {
                    slots[i].outcome.get_or_insert(outcome);
                }
            }
        }
        // Late backends are cancelled now (dropping their legs resets their
        // streams); their entries say so.
        self.legs.stop_all();
        self.broadcast = None;
        let headers = merge_headers(slots.iter_mut().filter_map(|s| s.headers.take()));
        // Each machine's part: its reply (and trailers), or its error entry.
        let mut parts = Vec::with_capacity(slots.len());
        for (i, slot) in slots.into_iter().enumerate() {
            let outcome = slot.outcome.unwrap_or_else(|| {
                Err(Status::deadline_exceeded(format!(
                    "machine {} did not answer before the deadline",
                    self.backends[i]
                )))
            });
            parts.push(match outcome {
                Ok(trailers) => Part::Reply(slot.message, trailers),
                Err(status) => match self.error_entry(i, ReplyShape::Unary, &status) {
                    Ok(entry) => Part::Entry(entry),
                    Err(status) => return Answer::Failed { headers, status },
                },
            });
        }
        if let Err(status) = self.fit(&mut parts, max_message_size) {
            return Answer::Failed { headers, status };
        }
        let mut trailers = HeaderMap::new();
        let mut message = VecDeque::with_capacity(parts.len() + 1);
        let mut total = 0;
        for (i, part) in parts.into_iter().enumerate() {
            let bytes = match part {
                Part::Reply(bytes, backend_trailers) => {
                    self.ended(i, Code::Ok, false);
                    merge_metadata(&mut trailers, backend_trailers);
                    bytes
                }
                Part::Entry(entry) => Some(entry),
            };
            if let Some(bytes) = bytes.filter(|b| !b.is_empty()) {
                total += bytes.len();
                message.push_back(bytes);
            }
        }
        let prefix = match FrameHeader::uncompressed(total) {
            Ok(prefix) => prefix,
            Err(err) => {
                return Answer::Failed {
                    headers: HeaderMap::new(),
                    status: Status::resource_exhausted(format!("merged reply: {err}")),
                };
            }
        };
        let hold = match memory.map(|(budget, holder)| budget.hold(holder, total)) {
            None => None,
            Some(Ok(hold)) => Some(hold),
            Some(Err(status)) => return Answer::Failed { headers, status },
        };
        message.push_front(Bytes::copy_from_slice(&prefix.encode()));
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        Answer::Merged {
            headers,
            message,
            trailers,
            hold,
        }
    }

    /// Makes the merged reply fit in `max_message_size` as a whole, error
    /// entries included: replies were admitted against the limit as they
    /// came, but the entries of machines that failed come on top. The
    /// largest replies give way to `RESOURCE_EXHAUSTED` entries until the
    /// reply fits; when even error entries alone do not fit, the call fails.
    fn fit(&self, parts: &mut [Part], max_message_size: usize) -> Result<(), Status> {
        let mut total: usize = parts.iter().map(Part::len).sum();
        if total <= max_message_size {
            return Ok(());
        }
        let mut replies: Vec<usize> = (0..parts.len())
            .filter(|&i| matches!(parts[i], Part::Reply(..)))
            .collect();
        replies.sort_unstable_by_key(|&i| std::cmp::Reverse(parts[i].len()));
        let status = Status::resource_exhausted(format!(
            "the merged reply of {} machines does not fit in its limit of {max_message_size} bytes",
            parts.len()
        ));
        for i in replies {
            if total <= max_message_size {
                return Ok(());
            }
            let entry = self.error_entry(i, ReplyShape::Unary, &status)?;
            total = total - parts[i].len() + entry.len();
            parts[i] = Part::Entry(entry);
        }
        if total <= max_message_size {
            Ok(())
        } else {
            Err(status)
        }
    }

    /// Waits for the first backend's response headers, then answers with a
    /// body that forwards every reply as it arrives.
    async fn streamed(
        self,
        deadline: Option<Instant>,
        shape: ReplyShape,
        hold: Option<Hold>,
    ) -> Answer {
        let mut body = Box::new(StreamedBody {
            queue: VecDeque::new(),
            trailers: HeaderMap::new(),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            call: Some(self),
            shape,
            summary: Summary::default(),
            _hold: hold,
        });
        if shape == ReplyShape::Envelope {
            // Every backend's answer is in the items: nothing to wait for.
            return Answer::Streamed {
                headers: merge_headers(std::iter::empty()),
                body,
            };
        }
        // Hold the response until a backend sends headers (first wins) or all are done.
        let headers = loop {
            let event = std::future::poll_fn(|cx| {
                if let Some(sleep) = body.deadline.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(None);
                }
                body.call
                    .as_mut()
                    .expect("running")
                    .poll_event(cx)
                    .map(Some)
            })
            .await;
            match event {
                None => {
                    return Answer::Failed {
                        headers: HeaderMap::new(),
                        status: Status::deadline_exceeded(
                            "no backend answered before the deadline",
                        ),
                    };
                }
                Some(CallEvent::Leg(_, LegEvent::Headers(headers))) => {
                    break merge_headers(std::iter::once(headers));
                }
                Some(CallEvent::LegsDone) => {
                    // Nothing more will come: the body ends at once.
                    body.call = None;
                    body.trailers
                        .insert(GRPC_STATUS, HeaderValue::from_static("0"));
                    break merge_headers(std::iter::empty());
                }
                Some(event) => {
                    if let Err(status) = body.apply(event) {
                        return Answer::Failed {
                            headers: HeaderMap::new(),
                            status,
                        };
                    }
                }
            }
        };
        Answer::Streamed { headers, body }
    }
}

/// What one backend contributed to a unary fan-out.
#[derive(Default)]
struct Slot {
    headers: Option<HeaderMap>,
    message: Option<Bytes>,
    outcome: Option<Result<HeaderMap, Status>>,
}

/// The trailer that sums up how the backends of an enveloped fan-out ended.
pub(crate) const SUMMARY: HeaderName = HeaderName::from_static("switchyard-summary");

/// How many backends ended with each code.
#[derive(Debug, Default)]
struct Summary([usize; 17]);

impl Summary {
    fn add(&mut self, code: Code) {
        if let Some(count) = self.0.get_mut(code as usize) {
            *count += 1;
        }
    }
}

impl std::fmt::Display for Summary {
    /// `3 ok, 1 unavailable`: each code that occurred, in code order.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (code, count) in self.0.iter().enumerate().filter(|(_, n)| **n > 0) {
            let name = status::code_name(Code::from_i32(code as i32)).to_ascii_lowercase();
            write!(f, "{}{count} {name}", if first { "" } else { ", " })?;
            first = false;
        }
        Ok(())
    }
}

/// One machine's part of a merged reply.
enum Part {
    /// Its reply message (none when it sent none) and its trailers.
    Reply(Option<Bytes>, HeaderMap),
    /// Its error entry.
    Entry(Bytes),
}

impl Part {
    fn len(&self) -> usize {
        match self {
            Self::Reply(bytes, _) => bytes.as_ref().map_or(0, Bytes::len),
            Self::Entry(entry) => entry.len(),
        }
    }
}

/// Streaming fan-out replies on their way to the client.
pub(crate) struct StreamedBody {
    /// Frames ready for the client: at most one message (prefix and payload).
    queue: VecDeque<Bytes>,
    trailers: HeaderMap,
    deadline: Option<Pin<Box<Sleep>>>,
    /// Streamed or Envelope.
    shape: ReplyShape,
    /// How the backends ended (the envelope's summary trailer).
    summary: Summary,
    /// The memory budget the call holds while it runs.
    _hold: Option<Hold>,
    /// `None` once the call has ended.
    call: Option<Call>,
}

impl std::fmt::Debug for StreamedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedBody")
            .field("running", &self.call.is_some())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl StreamedBody {
    /// Applies one event; `Err` ends the call with that status.
    fn apply(&mut self, event: CallEvent) -> Result<(), Status> {
        let call = self.call.as_ref().expect("running");
        let shape = self.shape;
        match event {
            CallEvent::Leg(_, LegEvent::Headers(_)) => {}
            CallEvent::Leg(_, LegEvent::Message(message)) => self.push_message(message)?,
            CallEvent::Leg(i, LegEvent::Done(Ok(trailers))) => {
                call.ended(i, Code::Ok, false);
                self.summary.add(Code::Ok);
                if shape == ReplyShape::Envelope {
                    let ok = Status::new(Code::Ok, "");
                    let last = call.backends[i].envelope_end(&ok, &trailers);
                    let last = last.ok_or_else(|| call.no_envelope(i))?;
                    self.push_message(last)?;
                } else {
                    merge_metadata(&mut self.trailers, trailers);
                }
            }
            CallEvent::Leg(i, LegEvent::Done(Err(status))) => {
                self.summary.add(status.code());
                let entry = call.error_entry(i, shape, &status)?;
                self.push_message(entry)?;
            }
            CallEvent::Stalled(i) => {
                let status = call.stalled(i);
                self.summary.add(status.code());
                let entry = call.error_entry(i, shape, &status)?;
                self.push_message(entry)?;
            }
            CallEvent::RequestFailed(status) => return Err(status),
            CallEvent::LegsDone => {
                self.call = None;
                self.trailers
                    .insert(GRPC_STATUS, HeaderValue::from_static("0"));
                if shape == ReplyShape::Envelope
                    && let Ok(value) = HeaderValue::try_from(self.summary.to_string())
                {
                    self.trailers.insert(SUMMARY, value);
                }
            }
        }
        Ok(())
    }

    fn push_message(&mut self, message: Bytes) -> Result<(), Status> {
        let prefix = FrameHeader::uncompressed(message.len())
            .map_err(|e| Status::resource_exhausted(format!("reply: {e}")))?;
        self.queue
            .push_back(Bytes::copy_from_slice(&prefix.encode()));
        if !message.is_empty() {
            self.queue.push_back(message);
        }
        Ok(())
    }

    /// Ends the body with `status`.
    fn fail(&mut self, status: &Status) -> Poll<Option<Frame<Bytes>>> {
        self.call = None; // drops every leg: their streams are reset
        self.deadline = None;
        self.queue.clear();
        self.trailers.clear();
        Poll::Ready(Some(Frame::trailers(status::trailers(status))))
    }

    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        loop {
            if let Some(chunk) = self.queue.pop_front() {
                return Poll::Ready(Some(Frame::data(chunk)));
            }
            let Some(call) = self.call.as_mut() else {
                // Ended: the trailers, once.
                return if self.trailers.is_empty() {
                    Poll::Ready(None)
                } else {
                    let trailers = std::mem::take(&mut self.trailers);
                    Poll::Ready(Some(Frame::trailers(trailers)))
                };
            };
            if let Some(sleep) = self.deadline.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                return self.fail(&Status::deadline_exceeded(
                    "deadline expired during fan-out",
                ));
            }
            let event = std::task::ready!(call.poll_event(cx));
            if let Err(status) = self.apply(event) {
                return self.fail(&status);
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.call.is_none() && self.queue.is_empty() && self.trailers.is_empty()
    }
}

/// Response headers of several backends as one set: every distinct value
/// once; framing headers are the proxy's own.
fn merge_headers(all: impl Iterator<Item = HeaderMap>) -> HeaderMap {
    let mut merged = HeaderMap::new();
    merged.insert(header::CONTENT_TYPE, GRPC_CONTENT_TYPE);
    for headers in all {
        merge_metadata(&mut merged, headers);
    }
    merged
}

/// Most metadata a merged response carries, counted as HTTP/2 does (name,
/// value and 32 bytes per entry): what Switchyard accepts from its own
/// callers. However much metadata N backends send, the merge stays this
/// size and linear in what they sent.
const MAX_MERGED_METADATA: usize = Http2Settings::SERVER.max_header_list_size as usize;

/// Adds `from`'s metadata to `into`, skipping framing and status keys and
/// values already present, up to [`MAX_MERGED_METADATA`].
fn merge_metadata(into: &mut HeaderMap, from: HeaderMap) {
    let entry_size =
        |name: &HeaderName, value: &HeaderValue| name.as_str().len() + value.len() + 32;
    let mut size: usize = into.iter().map(|(n, v)| entry_size(n, v)).sum();
    let mut present: HashSet<(HeaderName, HeaderValue)> =
        into.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    let mut name = None;
    for (key, value) in from {
        if key.is_some() {
            name = key;
        }
        let Some(name) = name.as_ref() else { continue };
        if matches!(
            name.as_str(),
            "content-type"
                | "content-length"
                | "grpc-encoding"
                | "grpc-status"
                | "grpc-message"
                | "grpc-status-details-bin"
        ) {
            continue;
        }
        if !present.insert((name.clone(), value.clone())) {
            continue;
        }
        size += entry_size(name, &value);
        if size > MAX_MERGED_METADATA || into.try_append(name.clone(), value).is_err() {
            tracing::debug!("fan-out metadata over {MAX_MERGED_METADATA} bytes: the rest left out");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_metadata_keeps_distinct_values_once() {
        let mut a = HeaderMap::new();
        a.insert("content-type", "application/grpc+proto".parse().unwrap());
        a.insert("grpc-encoding", "gzip".parse().unwrap());
        a.append("x-node", "a".parse().unwrap());
        a.append("x-common", "1".parse().unwrap());
        let mut b = HeaderMap::new();
        b.append("x-node", "b".parse().unwrap());
        b.append("x-common", "1".parse().unwrap());
        b.append("grpc-status", "0".parse().unwrap());
        let merged = merge_headers([a, b].into_iter());
        assert_eq!(merged.get("content-type").unwrap(), "application/grpc");
        assert!(merged.get("grpc-encoding").is_none());
        assert!(merged.get("grpc-status").is_none());
        let nodes: Vec<_> = merged.get_all("x-node").iter().collect();
        assert_eq!(nodes, ["a", "b"]);
        assert_eq!(merged.get_all("x-common").iter().count(), 1);
    }

    #[test]
    fn merged_metadata_is_bounded_whatever_the_backends_send() {
        // Many distinct names and many values of one name, from each of
        // three backends: the merge stays within its size and does not
        // panic (HeaderMap's capacity) or go quadratic.
        let backend = |tag: usize| {
            let mut headers = HeaderMap::new();
            for i in 0..20_000 {
                let name = HeaderName::from_bytes(format!("x-{tag}-{i}").as_bytes()).unwrap();
                headers.append(name, HeaderValue::from_static("v"));
                headers.append("x-many", HeaderValue::from(i));
            }
            headers
        };
        let merged = merge_headers((0..3).map(backend));
        let size: usize = merged
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        assert!(size <= MAX_MERGED_METADATA, "{size}");
        assert!(merged.len() > 1000, "the first entries are kept");
    }
}
