//! Serving a [`TransparentProxy`](crate::TransparentProxy) (or any HTTP
//! service) with hyper on TCP and Unix-socket listeners, with graceful
//! shutdown.
//!
//! Every connection is bounded before it costs anything: it must finish its
//! handshake (TLS when configured, then the HTTP/2 preface and SETTINGS)
//! within `handshake_timeout` or it is closed ([`crate::handshake`]), and at
//! most `max_connections` are open at once. At the cap, a new connection
//! evicts the oldest one still in its handshake — so idle sockets cannot lock
//! legitimate callers out — and is refused only when every open connection
//! has finished its handshake. Refusals are logged at most once a second.
//!
//! HTTP/1.1 requests get a clear `505` from the proxy (hyper-util's auto
//! builder) on a connection that then closes.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::BoxError;
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
    let tls = match &listener {
        Listener::Tcp(_) => config.tls.clone(),
        Listener::Unix(_) => None,
    };
    let serving = Serving {
        builder: builder(config),
        admission: config.connections.0.clone(),
        handshake_timeout: config.handshake_timeout,
        tls,
        observer: config.observer.clone(),
    };
    let graceful = GracefulShutdown::new();
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
        let (ticket, evicted) = match serving.admission.admit() {
            Some(admitted) => admitted,
            None => {
                serving.report(ConnectionEvent::Refused, &addr);
                if let Some(suppressed) = REFUSED.check() {
                    tracing::warn!(
                        listener = %listener,
                        peer = %addr,
                        max_connections = serving.admission.max,
                        suppressed,
                        "connection refused: every connection slot is taken by an established connection"
                    );
                }
                continue;
            }
        };
        serving.report(ConnectionEvent::Accepted, &addr);
        let service = service.clone();
        let serving = serving.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            serving.connection(io, addr, ticket, service, watcher).await;
        });
        if evicted {
            // Let the evicted connection close its socket before the next
            // accept: under a burst, file descriptors stay within the cap.
            tokio::task::yield_now().await;
        }
    }
    drop(listener);
    tracing::info!(grace = ?config.grace_period, "shutting down; waiting for running calls");
    if tokio::time::timeout(config.grace_period, graceful.shutdown())
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
    async fn connection<S, B>(
        self,
        io: Accepted,
        addr: PeerAddr,
        ticket: Ticket,
        service: S,
        watcher: Watcher,
    ) where
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
                    () = ticket.evicted.notified() => return self.evicted(&addr),
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
                let peer = Arc::new(Peer::new(addr, certificates));
                self.http(stream, peer, deadline, &ticket, service, watcher)
                    .await;
            }
            (Accepted::Tcp(tcp), None) => {
                let peer = Arc::new(Peer::new(addr, None));
                self.http(tcp, peer, deadline, &ticket, service, watcher)
                    .await;
            }
            (Accepted::Unix(unix), _) => {
                let peer = Arc::new(Peer::new(addr, None));
                self.http(unix, peer, deadline, &ticket, service, watcher)
                    .await;
            }
        }
    }

    /// Reports a connection dropped by the cap while in its handshake.
    fn evicted(&self, peer: &PeerAddr) {
        tracing::debug!(peer = %peer, "connection evicted: still in its handshake at the connection cap");
        self.report(ConnectionEvent::Evicted, peer);
    }

    async fn http<IO, S, B>(
        &self,
        io: IO,
        peer: Arc<Peer>,
        deadline: Instant,
        ticket: &Ticket,
        service: S,
        watcher: Watcher,
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
        let (io, handshake) = Handshake::new(io, Progress::SERVER, deadline);
        let service = TowerToHyperService::new(WithPeer {
            inner: service,
            peer: peer.clone(),
        });
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        let mut conn = std::pin::pin!(watcher.watch(conn));
        // Until its handshake is over the connection may be evicted; after
        // it, only the connection itself is polled (it wakes several times
        // per call).
        let result = tokio::select! {
            result = &mut conn => {
                if result.is_err() && Instant::now() >= deadline {
                    self.report(ConnectionEvent::HandshakeTimeout, &peer.addr);
                }
                result
            }
            progress = handshake => {
                // Evicted just as it finished: the slot is promised away.
                if progress.is_ok() && !ticket.established() {
                    return self.evicted(&peer.addr);
                }
                conn.await
            }
            () = ticket.evicted.notified() => return self.evicted(&peer.addr),
        };
        if let Err(err) = result {
            tracing::debug!(peer = %peer.addr, error = %err, "connection ended with an error");
        }
    }
}

/// Puts the connection's [`Peer`] into every request's extensions.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: Arc<Peer>,
}

impl<S, B> tower_service::Service<Request<B>> for WithPeer<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        self.inner.call(request)
    }
}

/// A bound on open connections, shared by every listener served with the
/// same [`ServerConfig`] (clones share it): file descriptors are a process
/// resource.
#[derive(Debug, Clone)]
pub struct ConnectionLimit(Arc<Admission>);

impl ConnectionLimit {
    /// At most `max` connections open at once.
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Admission::new(max)))
    }

    /// The bound.
    pub fn max(&self) -> usize {
        self.0.max
    }
}

/// The open connections, and which are still in their handshake (oldest
/// first), for the cap and eviction.
#[derive(Debug)]
struct Admission {
    max: usize,
    state: Mutex<AdmissionState>,
}

#[derive(Debug, Default)]
struct AdmissionState {
    open: usize,
    next_id: u64,
    /// Connection ID → how to evict it.
    handshaking: BTreeMap<u64, Arc<Notify>>,
}

/// One admitted connection; dropping it frees the slot.
struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    evicted: Arc<Notify>,
}

impl Admission {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            state: Mutex::new(AdmissionState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AdmissionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection: a free one, or the slot of the oldest
    /// connection still in its handshake, which is evicted (then `true`).
    /// `None` when every connection is established.
    fn admit(self: &Arc<Self>) -> Option<(Ticket, bool)> {
        let mut state = self.state();
        let evicted = state.open >= self.max;
        if evicted {
            let (_, evict) = state.handshaking.pop_first()?;
            evict.notify_one();
            // Its ticket frees the slot when its task ends; until then the
            // count is one over, which is what makes the eviction immediate.
        }
        state.open += 1;
        state.next_id += 1;
        let id = state.next_id;
        let notify = Arc::new(Notify::new());
        state.handshaking.insert(id, notify.clone());
        let ticket = Ticket {
            admission: self.clone(),
            id,
            evicted: notify,
        };
        Some((ticket, evicted))
    }
}

impl Ticket {
    /// The connection finished its handshake: it can no longer be evicted.
    /// `false` if it was evicted first.
    fn established(&self) -> bool {
        self.admission
            .state()
            .handshaking
            .remove(&self.id)
            .is_some()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        state.open -= 1;
        state.handshaking.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cap_evicts_the_oldest_handshake_then_refuses() {
        let admission = Arc::new(Admission::new(2));
        let (first, _) = admission.admit().unwrap();
        let (second, evicted) = admission.admit().unwrap();
        assert!(!evicted);
        // At the cap: the oldest connection still in its handshake goes.
        let (third, evicted) = admission.admit().unwrap();
        assert!(evicted);
        first.evicted.notified().await;
        assert!(!first.established(), "evicted before it finished");
        drop(first);
        assert!(second.established());
        assert!(third.established());
        // Every slot holds an established connection: refused.
        assert!(admission.admit().is_none());
        drop(second);
        let (fourth, _) = admission.admit().unwrap();
        assert_eq!(admission.state().open, 2);
        drop((third, fourth));
        assert_eq!(admission.state().open, 0);
        assert!(admission.state().handshaking.is_empty());
    }
}
