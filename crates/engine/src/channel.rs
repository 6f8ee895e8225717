//! Upstream HTTP/2 connections: one per target, shared by every call, dialled
//! when a call wants it.
//!
//! Connecting is bounded as a whole: TCP (or Unix) connect, TLS when
//! configured, and the HTTP/2 handshake up to the peer's SETTINGS frame —
//! hyper's own handshake returns as soon as the preface is written, which
//! would let a peer that accepts TCP but never speaks HTTP/2 (a hung or
//! stopped machine) hold every call. A failed attempt, or a connection that
//! dies (keepalive PINGs unanswered, I/O error), marks the target *down until*
//! a backoff delay has passed: calls fail at once meanwhile, and the next
//! call after it dials again. Nothing is dialled for a target nobody calls,
//! and a connection nobody used for `idle_timeout` is closed. Going down and
//! coming back are logged once each.
//!
//! Running calls hold their own handle to the connection, so
//! [`Channel::close`], an idle close or dropping the channel lets them finish.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use http::HeaderMap;
use http::uri::{Authority, Scheme};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::address::Address;
use crate::config::ChannelConfig;
use crate::handshake::{Handshake, Progress};
use crate::log_limit::LogLimit;
use crate::tls::{self, PeerName};
use crate::upstream::{SendRequest, Upstream};

static TARGET_DOWN: LogLimit = LogLimit::new(Duration::from_secs(1));
static TARGET_UP: LogLimit = LogLimit::new(Duration::from_secs(1));
static GOAWAY: LogLimit = LogLimit::new(Duration::from_secs(1));

/// Whether a connection ended because its peer sent GOAWAY.
fn is_remote_goaway(err: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote();
        }
        source = e.source();
    }
    false
}

/// Why no connection could be had. Displays the detail for logs; callers of
/// a proxy get a uniform message from their backend instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// Connecting, up to the peer's SETTINGS, took longer than the bound.
    #[error("connecting to {target} timed out after {timeout:?}")]
    Timeout {
        /// The target.
        target: String,
        /// The configured bound.
        timeout: Duration,
    },
    /// The socket could not be opened.
    #[error("cannot connect to {target}: {source}")]
    Io {
        /// The target.
        target: String,
        /// The OS error.
        source: Arc<io::Error>,
    },
    /// The TLS handshake failed (untrusted or wrong certificate, refused).
    #[error("TLS handshake with {target} failed: {message}")]
    Tls {
        /// The target.
        target: String,
        /// Why, e.g. the certificate names another machine.
        message: String,
    },
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake with {target} failed: {message}")]
    Handshake {
        /// The target.
        target: String,
        /// Why.
        message: String,
    },
    /// The target is known to be down; the next attempt waits until the
    /// backoff delay has passed.
    #[error("{target} is down ({cause}); next attempt in {retry_in:?}")]
    Down {
        /// The target.
        target: String,
        /// Why the last attempt failed.
        cause: Arc<ConnectError>,
        /// Time until a call may dial again.
        retry_in: Duration,
    },
    /// [`Channel::close`] was called.
    #[error("connection to {target} was closed")]
    Closed {
        /// The target.
        target: String,
    },
}

/// What a channel knows of its target now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelState {
    /// Not connected, not known down: the next call dials.
    Idle,
    /// A dial is running.
    Connecting,
    /// Connected.
    Connected,
    /// Known down: calls fail at once until the next attempt.
    Down {
        /// Why the last attempt failed (the detail, for operators).
        cause: String,
    },
    /// Closed for good.
    Closed,
}

/// A lazily connected, shared HTTP/2 connection to one target.
#[derive(Debug, Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: Address,
    /// The name a TLS certificate of the target must bear.
    peer: Option<PeerName>,
    /// Computed once: every call's URI needs it.
    authority: Authority,
    config: ChannelConfig,
    state: Mutex<State>,
}

type Outcome = Option<Result<SendRequest, ConnectError>>;

#[derive(Debug)]
enum State {
    /// No connection; `failures` in a row so far (for the backoff).
    Idle {
        failures: u32,
    },
    /// A dial is running; calls wait for its outcome.
    Connecting(watch::Receiver<Outcome>),
    /// Connected; `generation` tells this connection from a later one.
    Ready {
        conn: SendRequest,
        generation: u64,
        last_used: Instant,
    },
    /// Down until `until`: calls fail at once, the first one after dials.
    Down {
        until: Instant,
        cause: Arc<ConnectError>,
        failures: u32,
    },
    Closed,
}

impl Channel {
    /// A channel to `target`; nothing is dialled until the first call. With
    /// TLS configured, the target's certificate must name its IP.
    pub fn new(target: Address, config: ChannelConfig) -> Self {
        Self::named(target, None, config)
    }

    /// A channel to `target` whose TLS certificate may name it by its IP or
    /// by `name` (a DNS SAN, e.g. its registry name).
    pub fn named(target: Address, name: Option<&str>, config: ChannelConfig) -> Self {
        let peer = match &target {
            Address::Tcp(addr) => PeerName::new(addr.ip(), name)
                .or_else(|_| PeerName::new(addr.ip(), None))
                .ok(),
            Address::Unix(_) => None,
        };
        Self {
            inner: Arc::new(Inner {
                authority: target.authority(),
                target,
                peer,
                config,
                state: Mutex::new(State::Idle { failures: 0 }),
            }),
        }
    }

    /// The target.
    pub fn target(&self) -> &Address {
        &self.inner.target
    }

    /// The connection, dialling it if needed. Fails fast while the target is
    /// known to be down.
    pub async fn connection(&self) -> Result<SendRequest, ConnectError> {
        let mut rx = {
            let mut state = self.inner.state();
            let now = Instant::now();
            match &mut *state {
                State::Ready {
                    conn, last_used, ..
                } if !conn.is_closed() => {
                    *last_used = now;
                    return Ok(conn.clone());
                }
                State::Down {
                    until,
                    cause,
                    failures,
                } => {
                    if now < *until {
                        return Err(ConnectError::Down {
                            target: self.inner.target.to_string(),
                            cause: cause.clone(),
                            retry_in: *until - now,
                        });
                    }
                    let failures = *failures;
                    self.inner.dial(&mut state, failures)
                }
                State::Closed => return Err(self.inner.closed()),
                State::Connecting(rx) => rx.clone(),
                State::Idle { failures } => {
                    let failures = *failures;
                    self.inner.dial(&mut state, failures)
                }
                State::Ready { .. } => self.inner.dial(&mut state, 0),
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().expect("waited for Some"),
            Err(_) => Err(self.inner.closed()),
        }
    }

    /// An [`Upstream`] for one call on this channel, sending `headers`
    /// (`None`: the caller's).
    pub async fn upstream(&self, headers: Option<HeaderMap>) -> Result<Upstream, ConnectError> {
        Ok(Upstream {
            connection: self.connection().await?,
            scheme: if self.inner.config.tls.is_some() && self.inner.peer.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            authority: self.inner.authority.clone(),
            headers,
        })
    }

    /// What the channel knows of its target now.
    pub fn state(&self) -> ChannelState {
        match &*self.inner.state() {
            State::Idle { .. } => ChannelState::Idle,
            State::Connecting(_) => ChannelState::Connecting,
            State::Ready { conn, .. } if !conn.is_closed() => ChannelState::Connected,
            State::Ready { .. } => ChannelState::Idle,
            State::Down { cause, .. } => ChannelState::Down {
                cause: cause.to_string(),
            },
            State::Closed => ChannelState::Closed,
        }
    }

    /// Whether the target is currently known to be down.
    pub fn is_down(&self) -> bool {
        matches!(&*self.inner.state(), State::Down { until, .. } if Instant::now() < *until)
    }

    /// Whether a connection is established and open.
    pub fn is_connected(&self) -> bool {
        matches!(&*self.inner.state(), State::Ready { conn, .. } if !conn.is_closed())
    }

    /// Forgets the connection and refuses new calls. Calls already running
    /// keep their handle and finish.
    pub fn close(&self) {
        *self.inner.state() = State::Closed;
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed(&self) -> ConnectError {
        ConnectError::Closed {
            target: self.target.to_string(),
        }
    }

    /// Starts a dial in its own task, so that it completes (and is shared)
    /// even when the call that started it gives up.
    fn dial(self: &Arc<Self>, state: &mut State, failures: u32) -> watch::Receiver<Outcome> {
        let (tx, rx) = watch::channel(None);
        *state = State::Connecting(rx.clone());
        tokio::spawn(dial_task(Arc::downgrade(self), failures, tx));
        rx
    }

    /// Marks the target down after its `failures`-th failure in a row.
    fn mark_down(&self, state: &mut State, cause: ConnectError, failures: u32) {
        let delay = self
            .config
            .backoff
            .delay(failures.saturating_sub(1), rand::random::<f64>());
        if failures == 1 {
            // Callers choose targets (made-up addresses included): one line
            // per interval, however many go down.
            if let Some(suppressed) = TARGET_DOWN.check() {
                tracing::warn!(upstream = %self.target, error = %cause, retry_in = ?delay, suppressed, "target down; calls fail at once until the next attempt");
            }
        } else {
            tracing::debug!(upstream = %self.target, error = %cause, failures, retry_in = ?delay, "target still down");
        }
        *state = State::Down {
            until: Instant::now() + delay,
            cause: Arc::new(cause),
            failures,
        };
    }
}

async fn dial_task(inner: Weak<Inner>, failures: u32, tx: watch::Sender<Outcome>) {
    let Some(strong) = inner.upgrade() else {
        return;
    };
    let result = dial(&strong).await;
    let mut state = strong.state();
    if !matches!(*state, State::Connecting(_)) {
        // Closed meanwhile: the connection (if any) is dropped.
        tx.send_replace(Some(Err(strong.closed())));
        return;
    }
    match result {
        Ok((conn, driver)) => {
            if failures > 0 {
                if let Some(suppressed) = TARGET_UP.check() {
                    tracing::info!(upstream = %strong.target, suppressed, "target reachable again");
                }
            } else {
                tracing::debug!(upstream = %strong.target, "connected");
            }
            static GENERATIONS: AtomicU64 = AtomicU64::new(0);
            let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
            *state = State::Ready {
                conn: conn.clone(),
                generation,
                last_used: Instant::now(),
            };
            tokio::spawn(drive(inner, generation, driver));
            tx.send_replace(Some(Ok(conn)));
        }
        Err(err) => {
            strong.mark_down(&mut state, err.clone(), failures + 1);
            tx.send_replace(Some(Err(err)));
        }
    }
}

/// The future that runs an established connection.
type Driver = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), hyper::Error>> + Send>>;

/// Runs the connection; closes it when idle, and marks the target down when
/// it dies (unanswered PINGs, I/O errors) or idle when it ends cleanly.
async fn drive(inner: Weak<Inner>, generation: u64, mut conn: Driver) {
    let idle = inner
        .upgrade()
        .map_or(Duration::from_secs(60), |i| i.config.idle_timeout);
    let result = loop {
        tokio::select! {
            result = &mut conn => break result,
            () = tokio::time::sleep(idle) => {
                let Some(strong) = inner.upgrade() else { continue };
                let mut state = strong.state();
                if let State::Ready { generation: g, last_used, .. } = &*state
                    && *g == generation
                    && last_used.elapsed() >= idle
                {
                    // Running calls keep their handles; the connection closes
                    // once they end.
                    tracing::debug!(upstream = %strong.target, "closing idle connection");
                    *state = State::Idle { failures: 0 };
                }
            }
        }
    };
    let Some(strong) = inner.upgrade() else {
        return;
    };
    let mut state = strong.state();
    if !matches!(&*state, State::Ready { generation: g, .. } if *g == generation) {
        return;
    }
    match result {
        Ok(()) => *state = State::Idle { failures: 0 },
        // The peer closed the connection (GOAWAY, e.g. its own limits): it
        // is alive, so the next call dials again at once. Calls it had not
        // taken failed with UNAVAILABLE, which callers may retry.
        Err(err) if is_remote_goaway(&err) => {
            if let Some(suppressed) = GOAWAY.check() {
                tracing::warn!(upstream = %strong.target, error = %err, suppressed, "upstream closed the connection (GOAWAY); the next call dials again");
            }
            *state = State::Idle { failures: 0 };
        }
        Err(err) => {
            let cause = ConnectError::Handshake {
                target: strong.target.to_string(),
                message: format!("connection lost: {err}"),
            };
            strong.mark_down(&mut state, cause, 1);
        }
    }
}

/// Connects, bounded as a whole by the connect timeout.
async fn dial(inner: &Inner) -> Result<(SendRequest, Driver), ConnectError> {
    let target = &inner.target;
    let config = &inner.config;
    let deadline = Instant::now() + config.connect_timeout;
    let timeout = || ConnectError::Timeout {
        target: target.to_string(),
        timeout: config.connect_timeout,
    };
    let io_err = |e: io::Error| ConnectError::Io {
        target: target.to_string(),
        source: Arc::new(e),
    };
    let connect = async {
        match target {
            Address::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await.map_err(io_err)?;
                let _ = stream.set_nodelay(true);
                match (&config.tls, &inner.peer) {
                    (Some(store), Some(peer)) => {
                        let stream = store.client().connect(peer, stream).await.map_err(|e| {
                            ConnectError::Tls {
                                target: target.to_string(),
                                message: match tls::name_mismatch(&e) {
                                    Some(mismatch) => mismatch.to_string(),
                                    None => e.to_string(),
                                },
                            }
                        })?;
                        handshake(stream, config, target, deadline).await
                    }
                    _ => handshake(stream, config, target, deadline).await,
                }
            }
            Address::Unix(path) => {
                let stream = UnixStream::connect(path).await.map_err(io_err)?;
                handshake(stream, config, target, deadline).await
            }
        }
    };
    tokio::time::timeout_at(deadline, connect)
        .await
        .unwrap_or_else(|_| Err(timeout()))
}

/// The HTTP/2 handshake, complete once the peer's SETTINGS have arrived.
async fn handshake<S>(
    stream: S,
    config: &ChannelConfig,
    target: &Address,
    deadline: Instant,
) -> Result<(SendRequest, Driver), ConnectError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let failed = |message: String| ConnectError::Handshake {
        target: target.to_string(),
        message,
    };
    let (stream, settings) = Handshake::new(stream, Progress::CLIENT, deadline);
    let http2 = &config.http2;
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(http2.stream_window)
        .initial_connection_window_size(http2.connection_window)
        .max_frame_size(http2.max_frame_size)
        .max_header_list_size(http2.max_header_list_size)
        .keep_alive_interval(http2.keepalive_interval)
        .keep_alive_timeout(http2.keepalive_timeout)
        .keep_alive_while_idle(false)
        // h2 closes a connection after 1024 resets of its own making in its
        // whole life (a guard against servers that provoke them); on an
        // upstream connection shared by every caller for days, callers'
        // cancels of streams the peer still answers would reach that, and
        // every caller's calls would fail. Upstreams are this machine's own
        // server and authenticated machines.
        .max_local_error_reset_streams(None);
    let (send, conn) = builder
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(e.to_string()))?;
    // The connection must run for the peer's SETTINGS to be read.
    let mut conn: Driver = Box::pin(conn);
    tokio::select! {
        progress = settings => match progress {
            Ok(Progress::Done) => Ok((send, conn)),
            Ok(_) => Err(failed("the peer does not speak HTTP/2".into())),
            Err(_) => Err(failed("no SETTINGS from the peer".into())),
        },
        result = &mut conn => Err(failed(match result {
            Ok(()) => "the peer closed the connection".into(),
            Err(err) => err.to_string(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;

    fn config(connect_timeout: Duration) -> ChannelConfig {
        ChannelConfig {
            connect_timeout,
            backoff: Backoff {
                initial: Duration::from_secs(5),
                max: Duration::from_secs(5),
                multiplier: 1.0,
                jitter: 0.0,
            },
            ..ChannelConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_speaks_http2_is_down_after_one_bounded_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts TCP (the kernel does), never answers.
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let channel = Channel::new(Address::Tcp(addr), config(Duration::from_secs(2)));
        let started = Instant::now();
        let err = channel.connection().await.unwrap_err();
        assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // Down: the next calls fail at once, without dialling.
        assert!(channel.is_down());
        let started = Instant::now();
        for _ in 0..10 {
            let err = channel.connection().await.unwrap_err();
            assert!(matches!(err, ConnectError::Down { .. }), "{err}");
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
        // After the backoff, the next call dials again.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!channel.is_down());
        let err = channel.connection().await.unwrap_err();
        assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn nothing_is_dialled_for_a_target_nobody_calls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let channel = Channel::new(Address::Tcp(addr), config(Duration::from_secs(2)));
        let err = channel.connection().await.unwrap_err();
        assert!(matches!(err, ConnectError::Io { .. }), "{err}");
        // A listener appears; while down, nobody dials it in the background.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err(), "a background redial happened");
        assert!(channel.is_down());
    }
}
