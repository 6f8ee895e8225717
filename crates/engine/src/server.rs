//! Serving a [`TransparentProxy`](crate::TransparentProxy) (or any HTTP
//! service) with hyper on TCP and Unix-socket listeners, with graceful
//! shutdown.
//!
//! Every connection is bounded before it costs anything: it must finish its
//! handshake (TLS when configured, then the HTTP/2 preface and SETTINGS)
//! within `handshake_timeout` or it is closed ([`crate::handshake`]), and
//! holds one of the slots that [`crate::admission`] hands out: at the cap a
//! connection that never sent a request, else one with no open stream,
//! gives its slot to the newcomer, a few slots are kept for Unix listeners,
//! one peer holds at most its share, and idle connections are closed.
//! Refusals and evictions are logged at most once a second.
//!
//! HTTP/1.1 requests get a clear `505` from the proxy (hyper-util's auto
//! builder) on a connection that then closes.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::BoxError;
use crate::admission::{ActiveCall, Activity, Admission, Close, PeerKey, Refusal, Ticket};
pub use crate::admission::{ConnectionLimit, ConnectionLimits};
use crate::budget::certificate_key;
use crate::config::ServerConfig;
use crate::handshake::{Handshake, Progress};
use crate::log_limit::LogLimit;
use crate::observe::{ConnectionEvent, SharedObserver};
use crate::peer::{Peer, PeerAddr};
use crate::tls::{ALPN_H2, TlsStore};

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP (with TLS when the server is configured with it).
    Tcp(TcpListener),
    /// Unix socket (always plaintext: its trust is the socket file's permissions).
    Unix(UnixListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Self::Tcp(l)
    }
}

impl From<UnixListener> for Listener {
    fn from(l: UnixListener) -> Self {
        Self::Unix(l)
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(l) => match l.local_addr() {
                Ok(addr) => write!(f, "{addr}"),
                Err(_) => f.write_str("tcp:?"),
            },
            Self::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(path) => write!(f, "unix:{path}"),
                None => f.write_str("unix:?"),
            },
        }
    }
}

static ACCEPT_FAILED: LogLimit = LogLimit::new(Duration::from_secs(1));
static REFUSED: LogLimit = LogLimit::new(Duration::from_secs(1));
static EVICTED: LogLimit = LogLimit::new(Duration::from_secs(1));

/// How long an evicted or idle connection may take to close after its
/// GOAWAY (calls that crossed it finish) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting and lets running calls finish within the grace period.
pub async fn serve<S, B>(
    listener: impl Into<Listener>,
    service: S,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = listener.into();
    let unix = matches!(listener, Listener::Unix(_));
    let tls = if unix { None } else { config.tls.clone() };
    static LISTENERS: AtomicU64 = AtomicU64::new(0);
    let serving = Serving {
        builder: builder(config),
        admission: config.connections.0.clone(),
        listener: LISTENERS.fetch_add(1, Ordering::Relaxed),
        handshake_timeout: config.handshake_timeout,
        tls,
        observer: config.observer.clone(),
    };
    serving.admission.start_reaper();
    let tasks = TaskTracker::new();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(listener = %listener, tls = serving.tls.is_some(), "serving");
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        let (io, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                if let Some(suppressed) = ACCEPT_FAILED.check() {
                    tracing::warn!(listener = %listener, error = %err, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let key = match addr {
            PeerAddr::Tcp(socket) => Some(PeerKey::Ip(socket.ip().to_canonical())),
            PeerAddr::Unix { .. } => None,
        };
        let (ticket, evicted) = match serving.admission.admit(serving.listener, unix, key) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                serving.refused(refusal, &addr);
                continue;
            }
        };
        serving.report(ConnectionEvent::Accepted, &addr);
        let service = service.clone();
        let serving = serving.clone();
        tasks.spawn(async move {
            serving.connection(io, addr, ticket, service).await;
        });
        if evicted {
            // Let the evicted connection close its socket before the next
            // accept: under a burst, file descriptors stay within the cap.
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    tracing::info!(grace = ?config.grace_period, "shutting down; waiting for running calls");
    serving.admission.close_listener(serving.listener);
    tasks.close();
    if tokio::time::timeout(config.grace_period, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; dropping remaining connections");
    }
}

fn builder(config: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let http2 = &config.http2;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout)
        .keep_alive(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.max_concurrent_streams)
        .initial_stream_window_size(http2.stream_window)
        .initial_connection_window_size(http2.connection_window)
        .max_frame_size(http2.max_frame_size)
        .max_header_list_size(http2.max_header_list_size)
        .keep_alive_interval(http2.keepalive_interval)
        .keep_alive_timeout(http2.keepalive_timeout);
    builder
}

/// What every connection of one listener shares.
#[derive(Clone)]
struct Serving {
    builder: auto::Builder<TokioExecutor>,
    admission: Arc<Admission>,
    /// This listener, among those sharing the admission.
    listener: u64,
    handshake_timeout: Duration,
    tls: Option<Arc<TlsStore>>,
    observer: Option<SharedObserver>,
}

enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<(Accepted, PeerAddr)> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, addr) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok((Accepted::Tcp(stream), PeerAddr::Tcp(addr)))
        }
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            let cred = stream.peer_cred().ok();
            let addr = PeerAddr::Unix {
                uid: cred.as_ref().map(|c| c.uid()),
                pid: cred.and_then(|c| c.pid()),
            };
            Ok((Accepted::Unix(stream), addr))
        }
    }
}

impl Serving {
    fn report(&self, event: ConnectionEvent, peer: &PeerAddr) {
        if let Some(observer) = &self.observer {
            observer.connection(event, peer);
        }
    }

    /// Runs one connection: TLS (when configured), the bounded HTTP/2
    /// handshake, then hyper until the connection ends or is evicted.
    async fn connection<S, B>(self, io: Accepted, addr: PeerAddr, ticket: Ticket, service: S)
    where
        S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let deadline = Instant::now() + self.handshake_timeout;
        match (io, &self.tls) {
            (Accepted::Tcp(tcp), Some(tls)) => {
                let acceptor = tls.acceptor();
                let accepted = tokio::select! {
                    accepted = tokio::time::timeout_at(deadline, acceptor.accept(tcp)) => accepted,
                    reason = ticket.signal.closing() => return self.closed(reason, &addr),
                };
                let stream = match accepted {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => {
                        tracing::debug!(peer = %addr, error = %err, "TLS handshake refused");
                        self.report(ConnectionEvent::TlsFailed, &addr);
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %addr, "TLS handshake timed out");
                        self.report(ConnectionEvent::HandshakeTimeout, &addr);
                        return;
                    }
                };
                let tls_state = stream.get_ref().1;
                if tls_state.alpn_protocol() != Some(ALPN_H2) {
                    tracing::debug!(peer = %addr, "TLS client did not negotiate h2");
                    self.report(ConnectionEvent::TlsFailed, &addr);
                    return;
                }
                let certificates = tls_state.peer_certificates().map(<[_]>::to_vec);
                // One client certificate is one peer, from whatever address.
                if let Some(leaf) = certificates.as_ref().and_then(|c| c.first()) {
                    let key = PeerKey::Certificate(certificate_key(leaf.as_ref()));
                    if let Err(refusal) = self.admission.identify(&ticket, key) {
                        return self.refused(refusal, &addr);
                    }
                }
                let peer = Arc::new(Peer::new(addr, certificates));
                self.http(stream, peer, deadline, &ticket, service).await;
            }
            (Accepted::Tcp(tcp), None) => {
                let peer = Arc::new(Peer::new(addr, None));
                self.http(tcp, peer, deadline, &ticket, service).await;
            }
            (Accepted::Unix(unix), _) => {
                let peer = Arc::new(Peer::new(addr, None));
                self.http(unix, peer, deadline, &ticket, service).await;
            }
        }
    }

    /// Reports and logs a connection that was not admitted.
    fn refused(&self, refusal: Refusal, peer: &PeerAddr) {
        self.report(ConnectionEvent::Refused, peer);
        if let Some(suppressed) = REFUSED.check() {
            let limits = self.admission.limits;
            match refusal {
                Refusal::Full => tracing::warn!(
                    peer = %peer,
                    max_connections = limits.max,
                    suppressed,
                    "connection refused: every connection slot holds a connection with a call running"
                ),
                Refusal::PeerFull => tracing::warn!(
                    peer = %peer,
                    max_connections_per_peer = limits.per_peer,
                    suppressed,
                    "connection refused: this peer holds its share of connections, each with a call running"
                ),
            }
        }
    }

    /// Reports a connection asked to close (evicted, idle, shutdown).
    fn closed(&self, reason: Close, peer: &PeerAddr) {
        match reason {
            Close::Evicted => {
                self.report(ConnectionEvent::Evicted, peer);
                if let Some(suppressed) = EVICTED.check() {
                    tracing::warn!(
                        peer = %peer,
                        suppressed,
                        "connection evicted: its slot went to a new connection at the connection cap"
                    );
                }
            }
            Close::Idle => {
                self.report(ConnectionEvent::IdleClosed, peer);
                tracing::debug!(peer = %peer, "connection closed: no open stream for the idle timeout");
            }
            Close::Shutdown => {}
        }
    }

    async fn http<IO, S, B>(
        &self,
        io: IO,
        peer: Arc<Peer>,
        deadline: Instant,
        ticket: &Ticket,
        service: S,
    ) where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The connection counts as established from its first request
        // (`WithPeer`), not from the end of its HTTP/2 handshake.
        let (io, _progress) = Handshake::new(io, Progress::SERVER, deadline);
        let service = TowerToHyperService::new(WithPeer {
            inner: service,
            peer: peer.clone(),
            activity: ticket.activity.clone(),
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let mut conn = std::pin::pin!(conn);
        // The connection first, so that its wake-ups poll little else.
        let asked = tokio::select! {
            biased;
            result = conn.as_mut() => Err(result),
            reason = ticket.signal.closing() => Ok(reason),
        };
        let result = match asked {
            Err(result) => {
                if result.is_err() && Instant::now() >= deadline {
                    self.report(ConnectionEvent::HandshakeTimeout, &peer.addr);
                }
                result
            }
            Ok(reason) => {
                self.closed(reason, &peer.addr);
                // GOAWAY: calls already sent finish, new ones go elsewhere.
                conn.as_mut().graceful_shutdown();
                match reason {
                    // The server's grace period bounds it.
                    Close::Shutdown => conn.await,
                    Close::Evicted | Close::Idle => tokio::time::timeout(CLOSE_GRACE, conn)
                        .await
                        .unwrap_or(Ok(())),
                }
            }
        };
        if let Err(err) = result {
            tracing::debug!(peer = %peer.addr, error = %err, "connection ended with an error");
        }
    }
}

/// Puts the connection's [`Peer`] into every request's extensions, and
/// counts its calls ([`Activity`]) until their responses end.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: Arc<Peer>,
    activity: Arc<Activity>,
}

impl<S, B, RB> tower_service::Service<Request<B>> for WithPeer<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<Counted<RB>>;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        CountedFuture {
            call: Some(self.activity.call_started()),
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's response future, holding its [`ActiveCall`] for the body.
    struct CountedFuture<F> {
        #[pin]
        inner: F,
        call: Option<ActiveCall>,
    }
}

impl<F, RB, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<Counted<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let call = this.call.take();
        Poll::Ready(result.map(|response| response.map(|body| Counted { body, _call: call })))
    }
}

pin_project_lite::pin_project! {
    /// A response body; its call counts as open until it is dropped.
    struct Counted<B> {
        #[pin]
        body: B,
        _call: Option<ActiveCall>,
    }
}

impl<B: http_body::Body> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
