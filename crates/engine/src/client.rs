//! Upstream HTTP/2 connections: one per target, shared by every call, dialled
//! lazily, re-dialled when it breaks.
//!
//! A failed dial marks the target *down*: calls fail fast with the last error
//! while a background task retries with [`Backoff`], so a dead machine costs
//! callers nothing but an immediate `UNAVAILABLE` instead of a connect timeout
//! each. Running calls hold their own handle to the connection, so
//! [`Channel::close`] (or dropping the channel) lets them finish.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::uri::{Authority, Scheme};
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

use crate::BoxError;
use crate::backend::Upstream;
use crate::backoff::Backoff;

/// Request body type of every upstream call.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Handle to a shared upstream HTTP/2 connection.
pub type SendRequest = hyper::client::conn::http2::SendRequest<UpstreamBody>;

/// Where a channel dials.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl Target {
    /// `:authority` for requests on this target.
    pub fn authority(&self) -> Authority {
        match self {
            Self::Tcp(addr) => addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority"),
            Self::Unix(_) => Authority::from_static("localhost"),
        }
    }
}

/// Parses `unix:/path`, `[ipv6]:port` or `ipv4:port`. Host names are not
/// accepted: nothing is ever resolved.
impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?} has no socket path after unix:"));
            }
            return Ok(Self::Unix(path.into()));
        }
        s.parse()
            .map(Self::Tcp)
            .map_err(|_| format!("{s:?} is not unix:/path, [ipv6]:port or ipv4:port"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why no connection could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The dial (TCP or Unix connect plus HTTP/2 preface) took too long.
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
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake with {target} failed: {source}")]
    Handshake {
        /// The target.
        target: String,
        /// hyper's error.
        source: Arc<hyper::Error>,
    },
    /// [`Channel::close`] was called.
    #[error("connection to {target} was closed")]
    Closed {
        /// The target.
        target: String,
    },
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Bound of one dial attempt.
    pub connect_timeout: Duration,
    /// Delays between background retries while the target is down.
    pub backoff: Backoff,
    /// Interval of HTTP/2 PINGs that detect a dead peer; `None` disables.
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may stay unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// HTTP/2 stream receive window.
    pub stream_window: u32,
    /// HTTP/2 connection receive window.
    pub connection_window: u32,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::REMOTE,
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(10),
            stream_window: 2 * 1024 * 1024,
            connection_window: 8 * 1024 * 1024,
        }
    }
}

/// A lazily connected, shared, self-healing HTTP/2 connection to one target.
#[derive(Debug, Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: Target,
    /// Computed once: every call's URI needs it.
    authority: Authority,
    config: ChannelConfig,
    state: Mutex<State>,
}

type Outcome = Option<Result<SendRequest, ConnectError>>;

#[derive(Debug)]
enum State {
    Idle,
    Connecting(watch::Receiver<Outcome>),
    Ready(SendRequest),
    Down(ConnectError),
    Closed,
}

impl Channel {
    /// A channel to `target`; nothing is dialled until the first call.
    pub fn new(target: Target, config: ChannelConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                authority: target.authority(),
                target,
                config,
                state: Mutex::new(State::Idle),
            }),
        }
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// The connection, dialling it if needed. Fails fast while the target is
    /// known to be down.
    pub async fn connection(&self) -> Result<SendRequest, ConnectError> {
        let mut rx = {
            let mut state = self.inner.state.lock().expect("channel state poisoned");
            match &*state {
                State::Ready(conn) if !conn.is_closed() => return Ok(conn.clone()),
                State::Down(err) => return Err(err.clone()),
                State::Closed => return Err(self.closed()),
                State::Connecting(rx) => rx.clone(),
                State::Idle | State::Ready(_) => {
                    let (tx, rx) = watch::channel(None);
                    *state = State::Connecting(rx.clone());
                    tokio::spawn(dial_loop(Arc::downgrade(&self.inner), tx));
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().expect("waited for Some"),
            Err(_) => Err(self.closed()),
        }
    }

    /// An [`Upstream`] for one call on this channel, sending `headers`.
    pub async fn upstream(&self, headers: HeaderMap) -> Result<Upstream, ConnectError> {
        Ok(Upstream {
            connection: self.connection().await?,
            scheme: Scheme::HTTP,
            authority: self.inner.authority.clone(),
            headers,
        })
    }

    /// Whether the target is currently known to be down.
    pub fn is_down(&self) -> bool {
        matches!(
            *self.inner.state.lock().expect("channel state poisoned"),
            State::Down(_)
        )
    }

    /// Forgets the connection and stops retrying. Calls already running keep
    /// their handle and finish; new calls fail.
    pub fn close(&self) {
        *self.inner.state.lock().expect("channel state poisoned") = State::Closed;
    }

    fn closed(&self) -> ConnectError {
        ConnectError::Closed {
            target: self.inner.target.to_string(),
        }
    }
}

/// Dials until it succeeds, the channel is closed or dropped.
async fn dial_loop(inner: Weak<Inner>, tx: watch::Sender<Outcome>) {
    let mut attempt = 0;
    loop {
        let Some((target, config)) = inner
            .upgrade()
            .map(|i| (i.target.clone(), i.config.clone()))
        else {
            return;
        };
        let result = dial(&target, &config).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        {
            let mut state = strong.state.lock().expect("channel state poisoned");
            if matches!(*state, State::Closed) {
                return;
            }
            match result {
                Ok(conn) => {
                    tracing::debug!(%target, "connected");
                    *state = State::Ready(conn.clone());
                    tx.send_replace(Some(Ok(conn)));
                    return;
                }
                Err(err) => {
                    tracing::warn!(%target, error = %err, attempt, "connect failed; target marked down");
                    *state = State::Down(err.clone());
                    tx.send_replace(Some(Err(err)));
                }
            }
        }
        drop(strong);
        let delay = config.backoff.delay(attempt, rand::random::<f64>());
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

async fn dial(target: &Target, config: &ChannelConfig) -> Result<SendRequest, ConnectError> {
    let name = || target.to_string();
    let io_err = |e: io::Error| ConnectError::Io {
        target: name(),
        source: Arc::new(e),
    };
    let attempt = async {
        let handshake = match target {
            Target::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await.map_err(io_err)?;
                let _ = stream.set_nodelay(true);
                handshake(stream, config).await
            }
            Target::Unix(path) => {
                let stream = UnixStream::connect(path).await.map_err(io_err)?;
                handshake(stream, config).await
            }
        };
        handshake.map_err(|e| ConnectError::Handshake {
            target: name(),
            source: Arc::new(e),
        })
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Timeout {
                target: name(),
                timeout: config.connect_timeout,
            })
        })
}

async fn handshake<S>(stream: S, config: &ChannelConfig) -> Result<SendRequest, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .max_frame_size(64 * 1024)
        .keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
        .keep_alive_while_idle(false);
    let (send, conn) = builder.handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "upstream connection ended");
        }
    });
    Ok(send)
}
