//! Reference points for the suite, not proxies to deploy: the least an
//! HTTP/2 relay costs on this machine, written on `h2` alone ([`Stack::H2`])
//! or on hyper's HTTP/2 server and client as the daemon is ([`Stack::Hyper`]).
//!
//! Both accept HTTP/2 over TCP and relay every stream, headers, DATA and
//! trailers as they come, to one backend connection on a Unix socket: one
//! task per stream, under flow control in both directions, on one runtime
//! thread like the daemon. They do nothing else Switchyard does — no
//! routing, metadata, deadlines, limits, keepalive, TLS, fan-out or error
//! statuses. So `direct` → h2 relay is what any HTTP/2 hop costs here,
//! h2 relay → hyper relay what hyper's layers cost, and hyper relay →
//! `switchyard serve` what the engine's own work costs per call.

use std::future::poll_fn;
use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// The HTTP/2 implementation a relay is written on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stack {
    /// `h2` directly: a stream per task, nothing in between.
    H2,
    /// hyper's HTTP/2 server and client (the daemon's stack, patched hyper).
    Hyper,
}

/// Stream and connection windows, as the daemon sets them.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;

/// Relays every call accepted on `listener` to the backend at `backend`
/// until the backend connection ends.
pub async fn run(listener: TcpListener, backend: &Path, stack: Stack) -> anyhow::Result<()> {
    let io = UnixStream::connect(backend)
        .await
        .with_context(|| format!("cannot connect to {}", backend.display()))?;
    match stack {
        Stack::H2 => run_h2(listener, io).await,
        Stack::Hyper => run_hyper(listener, io).await,
    }
}

/// Accepts connections, each served by `serve` in its own task, until
/// `backend_done` ends.
async fn accept_until<D, S, F>(
    listener: TcpListener,
    backend_done: D,
    serve: S,
) -> anyhow::Result<()>
where
    D: std::future::Future<Output = anyhow::Result<()>>,
    S: Fn(TcpStream) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::pin!(backend_done);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted.context("accept")?,
            done = &mut backend_done => return done,
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp));
    }
}

async fn run_h2(listener: TcpListener, io: UnixStream) -> anyhow::Result<()> {
    let (upstream, connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .context("HTTP/2 handshake with the backend")?;
    let backend_done = async { connection.await.context("backend connection") };
    accept_until(listener, backend_done, |tcp| {
        let upstream = upstream.clone();
        async move {
            let Ok(mut conn) = h2::server::Builder::new()
                .initial_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_concurrent_streams(1024)
                .handshake::<_, Bytes>(tcp)
                .await
            else {
                return;
            };
            while let Some(Ok((request, respond))) = conn.accept().await {
                tokio::spawn(relay(upstream.clone(), request, respond));
            }
        }
    })
    .await
}

type HyperBody = UnsyncBoxBody<Bytes, hyper::Error>;

async fn run_hyper(listener: TcpListener, io: UnixStream) -> anyhow::Result<()> {
    let (upstream, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, HyperBody>(TokioIo::new(io))
        .await
        .context("HTTP/2 handshake with the backend")?;
    let backend_done = async { connection.await.context("backend connection") };
    accept_until(listener, backend_done, |tcp| {
        let upstream = upstream.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut upstream = upstream.clone();
            async move {
                let request = request.map(BodyExt::boxed_unsync);
                let response = upstream.send_request(request).await?;
                Ok::<_, hyper::Error>(response.map(BodyExt::boxed_unsync))
            }
        });
        async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .max_concurrent_streams(1024)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    })
    .await
}

/// One call: the request upstream and the response back, concurrently.
async fn relay(
    upstream: h2::client::SendRequest<Bytes>,
    request: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let result = async {
        let (head, body) = request.into_parts();
        let mut upstream = upstream.ready().await?;
        let (response, mut send) = upstream.send_request(Request::from_parts(head, ()), false)?;
        let requests = forward(body, &mut send);
        let responses = async {
            let (head, body) = response.await?.into_parts();
            let mut send = respond.send_response(Response::from_parts(head, ()), false)?;
            forward(body, &mut send).await
        };
        let (a, b) = tokio::join!(requests, responses);
        a.and(b)
    }
    .await;
    if let Err(err) = result {
        respond.send_reset(err.reason().unwrap_or(h2::Reason::INTERNAL_ERROR));
    }
}

/// Forwards DATA and trailers from one stream to the other. The first chunk
/// goes at once (one write with the headers, as the daemon's patched hyper
/// does); later ones wait for the receiver's window, and a chunk's window is
/// released to its sender once it is handed on, so a slow reader slows its
/// own writer and nothing else.
async fn forward(mut from: RecvStream, to: &mut SendStream<Bytes>) -> Result<(), h2::Error> {
    let mut first = true;
    while let Some(chunk) = from.data().await {
        let mut chunk = chunk?;
        let len = chunk.len();
        if first {
            first = false;
            to.send_data(chunk, false)?;
        } else {
            while !chunk.is_empty() {
                to.reserve_capacity(chunk.len());
                let granted = poll_fn(|cx| to.poll_capacity(cx))
                    .await
                    .ok_or(h2::Reason::CANCEL)??;
                to.send_data(chunk.split_to(granted.min(chunk.len())), false)?;
            }
        }
        from.flow_control().release_capacity(len)?;
    }
    match from.trailers().await? {
        Some(trailers) => to.send_trailers(trailers),
        None => to.send_data(Bytes::new(), true),
    }
}
