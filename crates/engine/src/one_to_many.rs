//! Fan-out: one call to N backends at once.
//!
//! Each backend runs in its own task: it connects, sends the request, reads
//! replies, decompresses and tags them ([`Backend::tag_reply`]) and reports
//! [`Event`]s. Tasks start together, so a slow or dead backend delays nobody;
//! tagging runs in parallel. The client's request messages are broadcast to
//! every live backend by a pump task (chunks are reference-counted, not
//! copied).
//!
//! - Unary: replies are collected until every backend is done (or the
//!   caller's deadline is about to expire), then sent as ONE message: the
//!   concatenation in the director's order. Failed or late backends become
//!   [`Backend::error_entry`] entries. The merged message is written as a
//!   prefix followed by the parts, so its payload is never copied again.
//! - Streaming: each tagged reply is forwarded as it arrives.
//!
//! Dropping the response body (client gone) aborts every task, which resets
//! every upstream stream.

use std::collections::VecDeque;
use std::io::Read;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderMap, HeaderValue, Response, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tonic::{Code, Status};

use crate::backend::{Backend, ReplyShape};
use crate::body::ResponseBody;
use crate::codec::frame::{FrameDecoder, FrameHeader, FrameScanner};
use crate::config::ProxyConfig;
use crate::status::{self, GRPC_CONTENT_TYPE};
use crate::upstream::UpstreamBody;
use crate::{BoxError, upstream};

/// Request chunks buffered per backend before the broadcast waits for it.
const REQUEST_QUEUE: usize = 16;

/// What backend tasks report to the call.
#[derive(Debug)]
enum Event {
    /// Response headers of backend `.0`.
    Headers(usize, HeaderMap),
    /// One tagged reply message of backend `.0`.
    Message(usize, Bytes),
    /// Backend `.0` finished: its trailers, or why it failed.
    Done(usize, Result<HeaderMap, Status>),
    /// The client's request was invalid; the whole call fails.
    RequestFailed(Status),
}

type Events = mpsc::Sender<Event>;

/// Forwards one call to every backend.
pub(crate) async fn forward<B>(
    config: &ProxyConfig,
    backends: Vec<Arc<dyn Backend>>,
    parts: http::request::Parts,
    body: B,
    deadline: Option<Instant>,
    shape: ReplyShape,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let parts = Arc::new(parts);
    let (events, rx) = mpsc::channel(backends.len() * 4 + 16);
    let mut tasks = JoinSet::new();
    let mut request_queues = Vec::with_capacity(backends.len());
    for (index, backend) in backends.iter().enumerate() {
        let (tx, request_rx) = mpsc::channel(REQUEST_QUEUE);
        request_queues.push(tx);
        let call = BackendCall {
            index,
            backend: backend.clone(),
            parts: parts.clone(),
            events: events.clone(),
            shape,
            max_message_size: config.max_message_size,
        };
        tasks.spawn(call.run(request_rx, deadline));
    }
    tasks.spawn(pump_request(
        body.map_err(Into::into),
        request_queues,
        events,
        config.max_message_size,
    ));

    let call = Collector {
        backends,
        events: rx,
        tasks,
        method: parts.uri.path().to_owned(),
    };
    if shape == ReplyShape::Streamed {
        call.streamed(deadline).await
    } else {
        let cutoff = deadline.map(|at| {
            let left = at.saturating_duration_since(Instant::now());
            at - config.deadline_margin.min(left / 10)
        });
        call.merged(cutoff).await
    }
}

/// Copies the client's request chunks to every backend still listening.
async fn pump_request<B>(
    body: B,
    mut queues: Vec<mpsc::Sender<Result<Bytes, Status>>>,
    events: Events,
    max_message_size: usize,
) where
    B: Body<Data = Bytes, Error = BoxError>,
{
    let mut body = pin!(body);
    let mut scanner = FrameScanner::new(max_message_size);
    let failure = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if let Err(err) = scanner.observe(&data) {
                    break status::request_frame(&err);
                }
                queues.retain(|q| !q.is_closed());
                join_all(queues.iter().map(|q| q.send(Ok(data.clone())))).await;
            }
            Some(Err(err)) => break Status::cancelled(format!("client request failed: {err}")),
            None => match scanner.finish() {
                // Dropping the queues half-closes every upstream request.
                Ok(()) => return,
                Err(err) => break status::request_frame(&err),
            },
        }
    };
    for q in &queues {
        let _ = q.try_send(Err(failure.clone()));
    }
    let _ = events.send(Event::RequestFailed(failure)).await;
}

/// One backend's part of a fan-out call.
struct BackendCall {
    index: usize,
    backend: Arc<dyn Backend>,
    parts: Arc<http::request::Parts>,
    events: Events,
    shape: ReplyShape,
    max_message_size: usize,
}

impl BackendCall {
    async fn run(self, requests: mpsc::Receiver<Result<Bytes, Status>>, deadline: Option<Instant>) {
        let call = self.call(requests, deadline);
        let outcome = match deadline {
            Some(at) => tokio::time::timeout_at(at, call).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "backend {} did not answer before the deadline",
                    self.backend
                )))
            }),
            None => call.await,
        };
        let _ = self.events.send(Event::Done(self.index, outcome)).await;
    }

    async fn call(
        &self,
        requests: mpsc::Receiver<Result<Bytes, Status>>,
        deadline: Option<Instant>,
    ) -> Result<HeaderMap, Status> {
        let backend = &*self.backend;
        let upstream = backend.connect(&self.parts).await?;
        let path = self.parts.uri.path_and_query().expect("checked gRPC path");
        let body = UpstreamBody::new(RequestQueue(requests));
        let (connection, request) = upstream::request(upstream, path, deadline, true, body)?;
        let (_connection, response) = upstream::send(connection, request, &self.backend).await?;
        let (head, mut body) = response.into_parts();
        let mut headers = head.headers;
        if let Some(status) = Status::from_header_map(&headers) {
            // Trailers-Only: the status sits in the headers.
            for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
                headers.remove(name);
            }
            self.report(Event::Headers(self.index, headers)).await?;
            return ok_or_status(status, HeaderMap::new());
        }
        let encoding = headers.get("grpc-encoding").cloned();
        self.report(Event::Headers(self.index, headers)).await?;

        let mut decoder = FrameDecoder::new(self.max_message_size);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| status::from_upstream_error(&e, &backend))?;
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    decoder
                        .finish()
                        .map_err(|e| status::reply_frame(&e, &self.backend))?;
                    let trailers = frame.into_trailers().unwrap_or_default();
                    return match Status::from_header_map(&trailers) {
                        Some(status) => ok_or_status(status, trailers),
                        None => Err(self.no_status()),
                    };
                }
            };
            decoder.push(data);
            while let Some(message) = decoder
                .next_message()
                .map_err(|e| status::reply_frame(&e, &self.backend))?
            {
                let payload = if message.compressed {
                    self.decompress(encoding.as_ref(), &message.payload)?
                } else {
                    message.payload
                };
                let tagged = backend.tag_reply(self.shape, payload).map_err(|e| {
                    Status::internal(format!(
                        "reply from backend {backend} does not fit the fan-out shape: {e}"
                    ))
                })?;
                self.report(Event::Message(self.index, tagged)).await?;
            }
        }
        decoder
            .finish()
            .map_err(|e| status::reply_frame(&e, &self.backend))?;
        Err(self.no_status())
    }

    async fn report(&self, event: Event) -> Result<(), Status> {
        self.events
            .send(event)
            .await
            .map_err(|_| Status::cancelled("call ended"))
    }

    fn no_status(&self) -> Status {
        Status::internal(format!(
            "backend {} ended the stream without a grpc-status",
            self.backend
        ))
    }

    fn decompress(&self, encoding: Option<&HeaderValue>, payload: &[u8]) -> Result<Bytes, Status> {
        if encoding.map(HeaderValue::as_bytes) != Some(b"gzip") {
            return Err(Status::internal(format!(
                "backend {} sent a message compressed with {:?}, which fan-out cannot read",
                self.backend,
                encoding
                    .map(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
                    .unwrap_or_default()
            )));
        }
        let mut out = Vec::new();
        let limit = self.max_message_size as u64;
        flate2::read::GzDecoder::new(payload)
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                Status::internal(format!(
                    "backend {} sent a corrupt gzip message: {e}",
                    self.backend
                ))
            })?;
        if out.len() as u64 > limit {
            return Err(Status::resource_exhausted(format!(
                "reply from backend {}: decompressed message exceeds the limit of {limit} bytes",
                self.backend
            )));
        }
        Ok(out.into())
    }
}

fn ok_or_status(status: Status, trailers: HeaderMap) -> Result<HeaderMap, Status> {
    if status.code() == Code::Ok {
        Ok(trailers)
    } else {
        Err(status)
    }
}

/// The request body of one backend: chunks broadcast by [`pump_request`].
struct RequestQueue(mpsc::Receiver<Result<Bytes, Status>>);

impl Body for RequestQueue {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut().0.poll_recv(cx).map(|chunk| {
            chunk.map(|chunk| {
                chunk
                    .map(Frame::data)
                    .map_err(|status| Box::new(status) as BoxError)
            })
        })
    }
}

/// The call side: gathers events into the client's response.
struct Collector {
    backends: Vec<Arc<dyn Backend>>,
    events: mpsc::Receiver<Event>,
    tasks: JoinSet<()>,
    method: String,
}

/// What one backend contributed to a unary fan-out.
#[derive(Default)]
struct Slot {
    headers: Option<HeaderMap>,
    messages: Vec<Bytes>,
    outcome: Option<Result<HeaderMap, Status>>,
}

impl Collector {
    /// The backend's error entry, or `Err` when it must fail the call.
    fn error_entry(
        &self,
        index: usize,
        shape: ReplyShape,
        status: &Status,
    ) -> Result<Option<Bytes>, Status> {
        let backend = &self.backends[index];
        tracing::warn!(backend = %backend, method = %self.method, code = ?status.code(), message = status.message(), "backend failed in fan-out");
        match backend.error_entry(shape, status) {
            Some(entry) => Ok(Some(entry)),
            None => Err(status.clone()),
        }
    }

    async fn merged(mut self, cutoff: Option<Instant>) -> Response<ResponseBody> {
        let mut slots: Vec<Slot> = self.backends.iter().map(|_| Slot::default()).collect();
        let mut pending = slots.len();
        while pending > 0 {
            let event = match cutoff {
                Some(at) => match tokio::time::timeout_at(at, self.events.recv()).await {
                    Ok(event) => event,
                    Err(_) => break,
                },
                None => self.events.recv().await,
            };
            match event {
                Some(Event::Headers(i, headers)) => slots[i].headers = Some(headers),
                Some(Event::Message(i, message)) => slots[i].messages.push(message),
                Some(Event::Done(i, outcome)) => {
                    slots[i].outcome = Some(outcome);
                    pending -= 1;
                }
                Some(Event::RequestFailed(status)) => return status::response(&status),
                None => break,
            }
        }
        // Late backends are cancelled now; their entries say so.
        self.tasks.abort_all();

        let headers = merge_headers(slots.iter_mut().filter_map(|s| s.headers.take()));
        let mut trailers = HeaderMap::new();
        let mut parts = Vec::with_capacity(slots.len());
        for (i, slot) in slots.into_iter().enumerate() {
            let outcome = slot.outcome.unwrap_or_else(|| {
                Err(Status::deadline_exceeded(format!(
                    "backend {} did not answer before the deadline",
                    self.backends[i]
                )))
            });
            match outcome {
                Ok(backend_trailers) => {
                    merge_metadata(&mut trailers, backend_trailers);
                    parts.extend(slot.messages);
                }
                Err(status) => match self.error_entry(i, ReplyShape::Unary, &status) {
                    Ok(entry) => parts.extend(entry),
                    Err(status) => return status::response_with_headers(&status, headers),
                },
            }
        }
        let total: usize = parts.iter().map(Bytes::len).sum();
        let prefix = match FrameHeader::uncompressed(total) {
            Ok(prefix) => prefix,
            Err(err) => {
                return status::response(&Status::resource_exhausted(format!(
                    "merged reply: {err}"
                )));
            }
        };
        let mut chunks = VecDeque::with_capacity(parts.len() + 1);
        chunks.push_back(Bytes::copy_from_slice(&prefix.encode()));
        chunks.extend(parts.into_iter().filter(|p| !p.is_empty()));
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let mut response = Response::new(ResponseBody::chunks(chunks, trailers));
        *response.headers_mut() = headers;
        response
    }

    async fn streamed(mut self, deadline: Option<Instant>) -> Response<ResponseBody> {
        let mut body = StreamedBody {
            queue: VecDeque::new(),
            trailers: HeaderMap::new(),
            pending: self.backends.len(),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            done: false,
            collector: None,
        };
        // Hold the response until a backend sends headers (first wins) or all are done.
        let headers = loop {
            if body.pending == 0 {
                break merge_headers(std::iter::empty());
            }
            let event = match deadline {
                Some(at) => match tokio::time::timeout_at(at, self.events.recv()).await {
                    Ok(event) => event,
                    Err(_) => {
                        return status::response(&Status::deadline_exceeded(
                            "no backend answered before the deadline",
                        ));
                    }
                },
                None => self.events.recv().await,
            };
            match event {
                Some(Event::Headers(_, headers)) => break merge_headers(std::iter::once(headers)),
                Some(event) => {
                    if let Err(status) = body.apply(&self, event) {
                        return status::response(&status);
                    }
                }
                None => break merge_headers(std::iter::empty()),
            }
        };
        body.collector = Some(self);
        let mut response = Response::new(ResponseBody::streamed(body));
        *response.headers_mut() = headers;
        response
    }
}

/// Streaming fan-out replies on their way to the client.
pub(crate) struct StreamedBody {
    queue: VecDeque<Bytes>,
    trailers: HeaderMap,
    pending: usize,
    deadline: Option<Pin<Box<Sleep>>>,
    done: bool,
    collector: Option<Collector>,
}

impl std::fmt::Debug for StreamedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedBody")
            .field("pending", &self.pending)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl StreamedBody {
    /// Applies one event; `Err` ends the call with that status.
    fn apply(&mut self, collector: &Collector, event: Event) -> Result<(), Status> {
        match event {
            Event::Headers(..) => {}
            Event::Message(_, message) => self.push_message(message)?,
            Event::Done(_, Ok(trailers)) => {
                self.pending -= 1;
                merge_metadata(&mut self.trailers, trailers);
            }
            Event::Done(i, Err(status)) => {
                self.pending -= 1;
                if let Some(entry) = collector.error_entry(i, ReplyShape::Streamed, &status)? {
                    self.push_message(entry)?;
                }
            }
            Event::RequestFailed(status) => return Err(status),
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

    fn finish(&mut self, status: Option<&Status>) -> Poll<Option<Frame<Bytes>>> {
        self.done = true;
        self.collector = None; // aborts the backend tasks
        self.deadline = None;
        let trailers = match status {
            Some(status) => status::trailers(status),
            None => {
                let mut trailers = std::mem::take(&mut self.trailers);
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                trailers
            }
        };
        Poll::Ready(Some(Frame::trailers(trailers)))
    }

    pub(crate) fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame<Bytes>>> {
        loop {
            if let Some(chunk) = self.queue.pop_front() {
                return Poll::Ready(Some(Frame::data(chunk)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            if self.pending == 0 {
                return self.finish(None);
            }
            if let Some(sleep) = self.deadline.as_mut()
                && sleep.as_mut().poll(cx).is_ready()
            {
                {
                    return self.finish(Some(&Status::deadline_exceeded(
                        "deadline expired during fan-out",
                    )));
                }
            }
            let Some(mut collector) = self.collector.take() else {
                return Poll::Ready(None);
            };
            let event = collector.events.poll_recv(cx);
            let result = match event {
                Poll::Pending => {
                    self.collector = Some(collector);
                    return Poll::Pending;
                }
                Poll::Ready(Some(event)) => self.apply(&collector, event),
                Poll::Ready(None) => Err(Status::internal("fan-out backends vanished")),
            };
            self.collector = Some(collector);
            if let Err(status) = result {
                return self.finish(Some(&status));
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.done && self.queue.is_empty()
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

/// Adds `from`'s metadata to `into`, skipping framing and status keys and
/// values already present.
fn merge_metadata(into: &mut HeaderMap, from: HeaderMap) {
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
        ) || into.get_all(name).iter().any(|v| v == value)
        {
            continue;
        }
        into.append(name.clone(), value);
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
}
