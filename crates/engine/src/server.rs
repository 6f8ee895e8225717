//! Serving a [`TransparentProxy`](crate::TransparentProxy) (or any HTTP
//! service) directly with hyper on TCP and Unix-socket listeners, with
//! graceful shutdown.
//!
//! Connections are served by hyper-util's auto builder so that HTTP/1.1
//! clients reach the proxy and get a clear `505` instead of a broken
//! connection.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};

use crate::BoxError;
use crate::config::ServerConfig;

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix socket.
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
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let http2 = &config.http2;
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
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(listener = %listener, "serving");
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %listener, error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        let connection = match io {
            Accepted::Tcp(s) => {
                let _ = s.set_nodelay(true);
                let conn = builder
                    .serve_connection(TokioIo::new(s), service)
                    .into_owned();
                spawn_connection(graceful.watch(conn))
            }
            Accepted::Unix(s) => {
                let conn = builder
                    .serve_connection(TokioIo::new(s), service)
                    .into_owned();
                spawn_connection(graceful.watch(conn))
            }
        };
        drop(connection);
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

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

fn spawn_connection<F, E>(conn: F) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Display,
{
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "connection ended with an error");
        }
    })
}
