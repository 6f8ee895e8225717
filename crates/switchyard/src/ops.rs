//! The operations listener: Prometheus metrics and health over plain
//! HTTP/1.1, apart from the gRPC listeners so that a scraper or a probe
//! never competes with calls, and off unless `metrics_listen` is set.
//!
//! - `GET /metrics`: the metrics in the Prometheus text format;
//! - `GET /healthz`: 200 while the process runs;
//! - `GET /readyz`: 200 when the listeners are bound, the local server
//!   accepts connections and the registry is fresh; else 503 and the reason.
//!
//! It is reachable from the network like any listener, so it is bounded
//! too: few connections at once, one request each, a short deadline on the
//! request's headers and one on the whole exchange. Probes must get an
//! answer even while someone holds connections open without asking
//! anything: at the cap, a new connection takes the slot of the oldest one
//! still waiting for its request ([`Slots`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchyard_engine::server::Listener;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};

use crate::metrics::Telemetry;

/// Most operations connections open at once.
const MAX_CONNECTIONS: usize = 64;

/// Bound of reading a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Bound of one connection: read the request, answer, close.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bound of the local server check of `/readyz`.
const LOCAL_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A readiness check beyond the built-in ones: `Err` says why not ready.
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the operations listener answers from.
#[derive(Clone)]
pub struct Ops {
    /// Metrics source.
    pub telemetry: Arc<Telemetry>,
    /// The local gRPC server, which must accept connections to be ready.
    pub local_socket: PathBuf,
    /// Further checks (the registry's freshness).
    pub checks: Vec<ReadyCheck>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("local_socket", &self.local_socket)
            .field("checks", &self.checks.len())
            .finish_non_exhaustive()
    }
}

impl Ops {
    /// Serves `listener` until `stopping` turns true; from then on `/readyz`
    /// answers 503 (the daemon drains) until the task is dropped.
    pub async fn serve(self, listener: Listener, stopping: watch::Receiver<bool>) {
        let ops = Arc::new(self);
        let slots = Arc::new(Slots::default());
        loop {
            let accepted = match &listener {
                Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                    let Some(slot) = slots.take() else { return };
                    tokio::spawn(exchange(ops.clone(), s, stopping.clone(), slot));
                }),
                Listener::Unix(l) => l.accept().await.map(|(s, _)| {
                    let Some(slot) = slots.take() else { return };
                    tokio::spawn(exchange(ops.clone(), s, stopping.clone(), slot));
                }),
            };
            if let Err(err) = accepted {
                tracing::debug!(error = %err, "operations listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    async fn answer(&self, request: &Request<Incoming>, stopping: bool) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".to_owned());
        }
        match request.uri().path() {
            "/metrics" => {
                let mut response = text(StatusCode::OK, self.telemetry.encode());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            "/healthz" => text(StatusCode::OK, "ok\n".to_owned()),
            "/readyz" => match self.ready(stopping).await {
                Ok(()) => text(StatusCode::OK, "ready\n".to_owned()),
                Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz or /readyz\n".to_owned(),
            ),
        }
    }

    /// Whether the daemon can serve calls; `Err` says why not. Its listeners
    /// are bound before this listener starts.
    async fn ready(&self, stopping: bool) -> Result<(), String> {
        if stopping {
            return Err("shutting down".to_owned());
        }
        let local = &self.local_socket;
        match tokio::time::timeout(LOCAL_CHECK_TIMEOUT, tokio::net::UnixStream::connect(local))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Err(format!(
                    "local server unreachable at {}: {err}",
                    local.display()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "local server at {} did not accept within {LOCAL_CHECK_TIMEOUT:?}",
                    local.display()
                ));
            }
        }
        self.checks.iter().try_for_each(|check| check())
    }
}

/// The operations connections open, and which of them still wait for
/// their request (oldest first), to give way at the cap.
#[derive(Debug, Default)]
struct Slots {
    state: Mutex<SlotsState>,
}

#[derive(Debug, Default)]
struct SlotsState {
    open: usize,
    next_id: u64,
    waiting: BTreeMap<u64, Arc<Notify>>,
}

/// One open operations connection; dropping it frees the slot.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    evicted: Arc<Notify>,
}

impl Slots {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot: a free one, or the oldest waiting connection's, which is
    /// closed; `None` when every connection is being answered.
    fn take(self: &Arc<Self>) -> Option<Slot> {
        let mut state = self.state();
        if state.open >= MAX_CONNECTIONS {
            let (_, evict) = state.waiting.pop_first()?;
            evict.notify_one();
        }
        state.open += 1;
        state.next_id += 1;
        let id = state.next_id;
        let evicted = Arc::new(Notify::new());
        state.waiting.insert(id, evicted.clone());
        Some(Slot {
            slots: self.clone(),
            id,
            evicted,
        })
    }
}

impl Slot {
    /// Its request arrived: it is answered, no longer evicted.
    fn answering(&self) {
        self.slots.state().waiting.remove(&self.id);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.slots.state();
        state.open -= 1;
        state.waiting.remove(&self.id);
    }
}

/// One request on `stream`, within [`EXCHANGE_TIMEOUT`], unless a newer
/// connection takes its slot before the request arrives.
async fn exchange<S>(ops: Arc<Ops>, stream: S, stopping: watch::Receiver<bool>, slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = Arc::new(slot);
    let evicted = slot.evicted.clone();
    let service = hyper::service::service_fn(move |request| {
        slot.answering();
        let (ops, stopping) = (ops.clone(), stopping.clone());
        async move {
            let stopping = *stopping.borrow();
            Ok::<_, Infallible>(ops.answer(&request, stopping).await)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = tokio::time::timeout(EXCHANGE_TIMEOUT, connection) => {}
        () = evicted.notified() => {}
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
