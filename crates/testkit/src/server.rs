//! In-process gRPC test servers serving `TestService` and `MultiService`.
//!
//! Behaviour of every method (see `proto/switchyard/test/v1/test.proto`):
//!
//! | method | replies |
//! | --- | --- |
//! | `Ping` | waits `delay_ms`, then fails with `error_code`/`error_message` if `error_code != 0`, else echoes `value` and `payload` with `counter = 1` |
//! | `PingEmpty` | `value = ""`, `counter = 0` |
//! | `PingError` | always `FAILED_PRECONDITION` (`error_message`, or "something went wrong") |
//! | `PingList` | `count` replies (10 when 0), `counter = 0, 1, …`, each after `delay_ms`; then fails with `error_code` if non-zero |
//! | `PingStream` | one reply per request message as soon as it arrives (after its `delay_ms`), `counter = 0, 1, …`; a message with `error_code != 0` ends the call with that status |
//!
//! Every reply carries the server's name in `server`. The `MultiService`
//! variants send the same data as `MultiPingResponse { messages: [one] }`
//! (unary) or `MultiPingReply` (streamed), with `metadata` unset: adding it
//! is the proxy's job.
//!
//! Every request header whose name starts with [`ECHO_PREFIX`] is sent back
//! in the response headers, and every OK response gets the trailer
//! [`TRAILER`] (value: the server name). Servers accept gzip requests and compress
//! replies with gzip when the client accepts it; messages may be up to
//! [`MAX_MESSAGE_SIZE`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::server::Connected;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::MAX_MESSAGE_SIZE;
use crate::pb::multi_service_server::{MultiService, MultiServiceServer};
use crate::pb::test_service_server::{TestService, TestServiceServer};
use crate::pb::{Empty, MultiPingReply, MultiPingResponse, PingRequest, PingResponse};
use crate::trailer::TrailerLayer;

/// Request headers starting with this prefix are echoed in the response headers.
pub const ECHO_PREFIX: &str = "x-test-";

/// Trailer added to every OK response; its value is the server's name.
pub const TRAILER: &str = "x-test-trailer";

/// Number of `PingList` replies when the request's `count` is 0.
pub const DEFAULT_LIST_COUNT: u32 = 10;

/// Message of `PingError` when the request has no `error_message`.
pub const DEFAULT_ERROR_MESSAGE: &str = "something went wrong";

/// One call as a test server saw it.
#[derive(Debug, Clone)]
pub struct SeenCall {
    /// The gRPC method path, e.g. `/switchyard.test.v1.TestService/Ping`.
    pub method: &'static str,
    /// The request headers (gRPC metadata, including `grpc-timeout`,
    /// `grpc-encoding`, `user-agent`…).
    pub headers: HeaderMap,
}

/// What a test server saw: calls, their metadata, and handlers that were
/// cancelled (dropped before they finished). Cheap to clone; clones share
/// the same record.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    inner: Arc<ProbeInner>,
}

#[derive(Debug, Default)]
struct ProbeInner {
    calls: AtomicUsize,
    cancelled: AtomicUsize,
    last: Mutex<Option<SeenCall>>,
    changed: Notify,
}

impl Probe {
    /// An empty probe.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of calls that reached a handler.
    pub fn calls(&self) -> usize {
        self.inner.calls.load(Ordering::SeqCst)
    }

    /// Number of handlers that were dropped before finishing: the client
    /// cancelled, the deadline passed, or the connection died.
    pub fn cancelled(&self) -> usize {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// The last call that reached a handler.
    pub fn last_call(&self) -> Option<SeenCall> {
        self.inner.last.lock().expect("probe poisoned").clone()
    }

    /// Request headers of the last call.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.last_call().map(|call| call.headers)
    }

    /// One request header of the last call, if it is there and is text.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let last = self.inner.last.lock().expect("probe poisoned");
        let value = last.as_ref()?.headers.get(name)?;
        value.to_str().ok().map(str::to_owned)
    }

    /// Waits until at least one handler was cancelled; false on timeout.
    pub async fn wait_cancelled(&self, timeout: Duration) -> bool {
        self.wait_cancelled_at_least(1, timeout).await
    }

    /// Waits until at least `n` handlers were cancelled; false on timeout.
    pub async fn wait_cancelled_at_least(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |p| p.cancelled() >= n).await
    }

    /// Waits until at least `n` calls reached a handler; false on timeout.
    pub async fn wait_calls(&self, n: usize, timeout: Duration) -> bool {
        self.wait_until(timeout, |p| p.calls() >= n).await
    }

    /// Forgets everything recorded so far.
    pub fn reset(&self) {
        self.inner.calls.store(0, Ordering::SeqCst);
        self.inner.cancelled.store(0, Ordering::SeqCst);
        *self.inner.last.lock().expect("probe poisoned") = None;
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let wait = async {
            loop {
                let changed = self.inner.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if done(self) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    fn record(&self, method: &'static str, metadata: &MetadataMap) {
        *self.inner.last.lock().expect("probe poisoned") = Some(SeenCall {
            method,
            headers: metadata.clone().into_headers(),
        });
        self.inner.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
    }

    /// A guard counting a cancellation unless [`CallGuard::finish`] is called.
    fn guard(&self) -> CallGuard {
        CallGuard {
            probe: self.clone(),
            finished: false,
        }
    }
}

/// Increments [`Probe::cancelled`] when dropped before `finish`.
struct CallGuard {
    probe: Probe,
    finished: bool,
}

impl CallGuard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.probe.inner.cancelled.fetch_add(1, Ordering::SeqCst);
            self.probe.inner.changed.notify_waiters();
        }
    }
}

/// The data of one reply, before it is shaped as a `PingResponse` or a
/// `MultiPingReply`.
struct Pong {
    value: String,
    counter: i64,
    payload: Vec<u8>,
}

/// The handlers of `TestService` and `MultiService`. Mount them in your own
/// tonic server with [`TestHandler::test_service`] and
/// [`TestHandler::multi_service`], or let [`TestServer`] do it.
#[derive(Debug, Clone)]
pub struct TestHandler {
    name: Arc<str>,
    probe: Probe,
}

impl TestHandler {
    /// Handlers answering as `name`, recording into `probe`.
    pub fn new(name: &str, probe: Probe) -> Self {
        Self {
            name: name.into(),
            probe,
        }
    }

    /// The server name put in every reply.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The probe.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// `TestService` with gzip and 64 MiB limits.
    pub fn test_service(&self) -> TestServiceServer<Self> {
        TestServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// `MultiService` with gzip and 64 MiB limits.
    pub fn multi_service(&self) -> MultiServiceServer<Self> {
        MultiServiceServer::new(self.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// The layer adding [`TRAILER`] to OK responses of this server.
    pub fn trailer_layer(&self) -> TrailerLayer {
        TrailerLayer::new(
            HeaderName::from_static(TRAILER),
            HeaderValue::from_str(&self.name).unwrap_or(HeaderValue::from_static("invalid-name")),
        )
    }

    fn response(&self, pong: Pong) -> PingResponse {
        PingResponse {
            value: pong.value,
            counter: pong.counter,
            payload: pong.payload,
            server: self.name.to_string(),
        }
    }

    fn multi_reply(&self, pong: Pong) -> MultiPingReply {
        MultiPingReply {
            metadata: None,
            value: pong.value,
            counter: pong.counter,
            server: self.name.to_string(),
            payload: pong.payload,
        }
    }

    async fn ping_core(
        &self,
        method: &'static str,
        request: Request<PingRequest>,
    ) -> Result<(Pong, MetadataMap), Status> {
        self.probe.record(method, request.metadata());
        let echo = echo(request.metadata());
        let req = request.into_inner();
        let mut guard = self.probe.guard();
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
        }
        guard.finish();
        if let Some(status) = requested_error(&req, &echo) {
            return Err(status);
        }
        Ok((
            Pong {
                value: req.value,
                counter: 1,
                payload: req.payload,
            },
            echo,
        ))
    }

    fn ping_error_core(&self, method: &'static str, request: &Request<PingRequest>) -> Status {
        self.probe.record(method, request.metadata());
        let message = match request.get_ref().error_message.as_str() {
            "" => DEFAULT_ERROR_MESSAGE,
            message => message,
        };
        Status::with_metadata(Code::FailedPrecondition, message, echo(request.metadata()))
    }

    fn list_core<T: Send + 'static>(
        &self,
        method: &'static str,
        request: Request<PingRequest>,
        shape: fn(&Self, Pong) -> T,
    ) -> Response<BoxStream<'static, Result<T, Status>>> {
        self.probe.record(method, request.metadata());
        let echo = echo(request.metadata());
        let req = request.into_inner();
        let count = if req.count == 0 {
            DEFAULT_LIST_COUNT
        } else {
            req.count
        };
        let delay = Duration::from_millis(req.delay_ms);
        let error = requested_error(&req, &MetadataMap::new());
        let this = self.clone();
        let state = (0u32, self.probe.guard(), error);
        let replies = stream::unfold(state, move |(i, mut guard, error)| {
            let this = this.clone();
            let value = req.value.clone();
            let payload = req.payload.clone();
            async move {
                if i < count {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let pong = Pong {
                        value,
                        counter: i64::from(i),
                        payload,
                    };
                    Some((Ok(shape(&this, pong)), (i + 1, guard, error)))
                } else {
                    guard.finish();
                    error.map(|status| (Err(status), (i, guard, None)))
                }
            }
        });
        with_metadata(replies.boxed(), echo)
    }

    fn stream_core<T: Send + 'static>(
        &self,
        method: &'static str,
        request: Request<Streaming<PingRequest>>,
        shape: fn(&Self, Pong) -> T,
    ) -> Response<BoxStream<'static, Result<T, Status>>> {
        self.probe.record(method, request.metadata());
        let echo = echo(request.metadata());
        let inbound = request.into_inner();
        let state = StreamState {
            inbound,
            counter: 0,
            guard: self.probe.guard(),
            done: false,
        };
        let this = self.clone();
        let replies = stream::unfold(state, move |mut st| {
            let this = this.clone();
            async move {
                if st.done {
                    return None;
                }
                match st.inbound.message().await {
                    Ok(Some(req)) => {
                        if let Some(status) = requested_error(&req, &MetadataMap::new()) {
                            st.done = true;
                            st.guard.finish();
                            return Some((Err(status), st));
                        }
                        if req.delay_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
                        }
                        let pong = Pong {
                            value: req.value,
                            counter: st.counter,
                            payload: req.payload,
                        };
                        st.counter += 1;
                        Some((Ok(shape(&this, pong)), st))
                    }
                    Ok(None) => {
                        st.guard.finish();
                        None
                    }
                    // The request stream broke (client reset, decode error):
                    // the guard counts it as cancelled when dropped.
                    Err(status) => {
                        st.done = true;
                        Some((Err(status), st))
                    }
                }
            }
        });
        with_metadata(replies.boxed(), echo)
    }
}

struct StreamState {
    inbound: Streaming<PingRequest>,
    counter: i64,
    guard: CallGuard,
    done: bool,
}

/// The request headers starting with [`ECHO_PREFIX`].
fn echo(metadata: &MetadataMap) -> MetadataMap {
    let headers = metadata.clone().into_headers();
    let mut out = HeaderMap::new();
    for (name, value) in &headers {
        if name.as_str().starts_with(ECHO_PREFIX) {
            out.append(name.clone(), value.clone());
        }
    }
    MetadataMap::from_headers(out)
}

/// The status the request asks for, if any.
fn requested_error(req: &PingRequest, metadata: &MetadataMap) -> Option<Status> {
    (req.error_code != 0).then(|| {
        Status::with_metadata(
            Code::from(req.error_code),
            req.error_message.clone(),
            metadata.clone(),
        )
    })
}

fn with_metadata<T>(message: T, metadata: MetadataMap) -> Response<T> {
    let mut response = Response::new(message);
    *response.metadata_mut() = metadata;
    response
}

const TEST_PING: &str = "/switchyard.test.v1.TestService/Ping";
const TEST_PING_EMPTY: &str = "/switchyard.test.v1.TestService/PingEmpty";
const TEST_PING_ERROR: &str = "/switchyard.test.v1.TestService/PingError";
const TEST_PING_LIST: &str = "/switchyard.test.v1.TestService/PingList";
const TEST_PING_STREAM: &str = "/switchyard.test.v1.TestService/PingStream";
const MULTI_PING: &str = "/switchyard.test.v1.MultiService/Ping";
const MULTI_PING_ERROR: &str = "/switchyard.test.v1.MultiService/PingError";
const MULTI_PING_LIST: &str = "/switchyard.test.v1.MultiService/PingList";
const MULTI_PING_STREAM: &str = "/switchyard.test.v1.MultiService/PingStream";

#[tonic::async_trait]
impl TestService for TestHandler {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        let (pong, echo) = self.ping_core(TEST_PING, request).await?;
        Ok(with_metadata(self.response(pong), echo))
    }

    async fn ping_empty(&self, request: Request<Empty>) -> Result<Response<PingResponse>, Status> {
        self.probe.record(TEST_PING_EMPTY, request.metadata());
        let pong = Pong {
            value: String::new(),
            counter: 0,
            payload: Vec::new(),
        };
        Ok(with_metadata(self.response(pong), echo(request.metadata())))
    }

    async fn ping_error(&self, request: Request<PingRequest>) -> Result<Response<Empty>, Status> {
        Err(self.ping_error_core(TEST_PING_ERROR, &request))
    }

    type PingListStream = BoxStream<'static, Result<PingResponse, Status>>;

    async fn ping_list(
        &self,
        request: Request<PingRequest>,
    ) -> Result<Response<Self::PingListStream>, Status> {
        Ok(self.list_core(TEST_PING_LIST, request, Self::response))
    }

    type PingStreamStream = BoxStream<'static, Result<PingResponse, Status>>;

    async fn ping_stream(
        &self,
        request: Request<Streaming<PingRequest>>,
    ) -> Result<Response<Self::PingStreamStream>, Status> {
        Ok(self.stream_core(TEST_PING_STREAM, request, Self::response))
    }
}

#[tonic::async_trait]
impl MultiService for TestHandler {
    async fn ping(
        &self,
        request: Request<PingRequest>,
    ) -> Result<Response<MultiPingResponse>, Status> {
        let (pong, echo) = self.ping_core(MULTI_PING, request).await?;
        let reply = MultiPingResponse {
            messages: vec![self.multi_reply(pong)],
        };
        Ok(with_metadata(reply, echo))
    }

    async fn ping_error(
        &self,
        request: Request<PingRequest>,
    ) -> Result<Response<MultiPingResponse>, Status> {
        Err(self.ping_error_core(MULTI_PING_ERROR, &request))
    }

    type PingListStream = BoxStream<'static, Result<MultiPingReply, Status>>;

    async fn ping_list(
        &self,
        request: Request<PingRequest>,
    ) -> Result<Response<Self::PingListStream>, Status> {
        Ok(self.list_core(MULTI_PING_LIST, request, Self::multi_reply))
    }

    type PingStreamStream = BoxStream<'static, Result<MultiPingReply, Status>>;

    async fn ping_stream(
        &self,
        request: Request<Streaming<PingRequest>>,
    ) -> Result<Response<Self::PingStreamStream>, Status> {
        Ok(self.stream_core(MULTI_PING_STREAM, request, Self::multi_reply))
    }
}

/// A running test server. Dropping it kills the server: the listener closes
/// and every open connection is cut at once, as if the machine died.
/// [`TestServer::shutdown`] stops it gracefully instead.
pub struct TestServer {
    name: Arc<str>,
    probe: Probe,
    local: Local,
    stop: Option<oneshot::Sender<()>>,
    kill: CancellationToken,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

#[derive(Debug, Clone)]
enum Local {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Debug for TestServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestServer")
            .field("name", &self.name)
            .field("local", &self.local)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl TestServer {
    /// Serves both test services as `name` on `127.0.0.1`, on a free port.
    ///
    /// # Panics
    ///
    /// If no port can be bound.
    pub async fn spawn_tcp(name: &str) -> (SocketAddr, Self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::spawn_tcp_on(name, addr, Probe::new())
            .await
            .expect("cannot bind a test server on 127.0.0.1")
    }

    /// Serves both test services as `name` on `addr` (e.g. the address of a
    /// server that was just killed, to restart it), recording into `probe`.
    pub async fn spawn_tcp_on(
        name: &str,
        addr: SocketAddr,
        probe: Probe,
    ) -> io::Result<(SocketAddr, Self)> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let kill = CancellationToken::new();
        let token = kill.clone();
        let incoming = TcpListenerStream::new(listener).map(move |conn| {
            conn.map(|stream| {
                let _ = stream.set_nodelay(true);
                Killable::new(stream, &token)
            })
        });
        let server = Self::spawn(name, probe, Local::Tcp(addr), kill, incoming, false);
        Ok((addr, server))
    }

    /// Serves both test services as `name` on the Unix socket `path`
    /// (replacing a stale socket file there).
    ///
    /// # Panics
    ///
    /// If the socket cannot be bound.
    pub async fn spawn_unix(name: &str, path: impl AsRef<Path>) -> Self {
        Self::spawn_unix_with(name, path, Probe::new())
            .await
            .expect("cannot bind a test server on a Unix socket")
    }

    /// As [`TestServer::spawn_unix`], also answering gRPC reflection (v1)
    /// about both services.
    ///
    /// # Panics
    ///
    /// If the socket cannot be bound.
    pub async fn spawn_unix_reflecting(name: &str, path: impl AsRef<Path>) -> Self {
        Self::bind_unix(name, path.as_ref(), Probe::new(), true)
            .expect("cannot bind a test server on a Unix socket")
    }

    /// As [`TestServer::spawn_unix`], recording into `probe`.
    pub async fn spawn_unix_with(
        name: &str,
        path: impl AsRef<Path>,
        probe: Probe,
    ) -> io::Result<Self> {
        Self::bind_unix(name, path.as_ref(), probe, false)
    }

    fn bind_unix(name: &str, path: &Path, probe: Probe, reflection: bool) -> io::Result<Self> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        let listener = UnixListener::bind(path)?;
        let kill = CancellationToken::new();
        let token = kill.clone();
        let incoming = UnixListenerStream::new(listener)
            .map(move |conn| conn.map(|stream| Killable::new(stream, &token)));
        Ok(Self::spawn(
            name,
            probe,
            Local::Unix(path.to_owned()),
            kill,
            incoming,
            reflection,
        ))
    }

    fn spawn<IO>(
        name: &str,
        probe: Probe,
        local: Local,
        kill: CancellationToken,
        incoming: impl futures_util::Stream<Item = io::Result<Killable<IO>>> + Send + 'static,
        reflection: bool,
    ) -> Self
    where
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    {
        let handler = TestHandler::new(name, probe.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let router = tonic::transport::Server::builder()
            .layer(handler.trailer_layer())
            .add_service(handler.test_service())
            .add_service(handler.multi_service())
            .add_optional_service(reflection.then(|| {
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                    .build_v1()
                    .expect("the test protos describe themselves")
            }));
        let task = tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            name: name.into(),
            probe,
            local,
            stop: Some(stop),
            kill,
            task: Some(task),
        }
    }

    /// The server's name (the `server` field of its replies).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the server saw.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// The TCP address, for a TCP server.
    pub fn addr(&self) -> Option<SocketAddr> {
        match &self.local {
            Local::Tcp(addr) => Some(*addr),
            Local::Unix(_) => None,
        }
    }

    /// The socket path, for a Unix socket server.
    pub fn path(&self) -> Option<&Path> {
        match &self.local {
            Local::Tcp(_) => None,
            Local::Unix(path) => Some(path),
        }
    }

    /// Stops accepting, lets running calls finish (HTTP/2 GOAWAY), and
    /// returns once every connection is closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Closes the listener and cuts every connection at once, without
    /// GOAWAY; returns once the server is gone.
    pub async fn kill(mut self) {
        self.kill.cancel();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill.cancel();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A connection that fails every read and write once the server is killed,
/// so that hyper drops it and the peer sees the socket close.
struct Killable<IO> {
    inner: IO,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    dead: bool,
}

impl<IO> Killable<IO> {
    fn new(inner: IO, token: &CancellationToken) -> Self {
        Self {
            inner,
            killed: Box::pin(token.clone().cancelled_owned()),
            dead: false,
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        if self.dead {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "test server killed",
            ))
        } else {
            Ok(())
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Killable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Killable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<IO: Connected> Connected for Killable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}
