//! Upstream HTTP/2 connections: one per target, shared by every call, dialled
//! lazily, re-dialled when it breaks.
//!
//! A failed dial marks the target *down*: calls fail fast with the last error
//! while a background task retries with [`Backoff`], so a dead machine costs
//! callers nothing but an immediate `UNAVAILABLE` instead of a connect timeout
//! each. Running calls hold their own handle to the connection, so
//! [`Channel::close`] (or dropping the channel) lets them finish.

use std::io;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::HeaderMap;
use http::uri::{Authority, Scheme};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::watch;

use crate::address::Address;
use crate::config::ChannelConfig;
use crate::upstream::{SendRequest, Upstream};

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

/// A lazily connected, shared, self-healing HTTP/2 connection to one target.
#[derive(Debug, Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    target: Address,
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
    pub fn new(target: Address, config: ChannelConfig) -> Self {
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
    pub fn target(&self) -> &Address {
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

async fn dial(target: &Address, config: &ChannelConfig) -> Result<SendRequest, ConnectError> {
    let name = || target.to_string();
    let io_err = |e: io::Error| ConnectError::Io {
        target: name(),
        source: Arc::new(e),
    };
    let attempt = async {
        let handshake = match target {
            Address::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await.map_err(io_err)?;
                let _ = stream.set_nodelay(true);
                handshake(stream, config).await
            }
            Address::Unix(path) => {
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
        .keep_alive_while_idle(false);
    let (send, conn) = builder.handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "upstream connection ended");
        }
    });
    Ok(send)
}
