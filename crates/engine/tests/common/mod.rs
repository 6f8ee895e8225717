//! In-process harness: a proxy on 127.0.0.1:0 in front of test servers, and
//! a raw HTTP/2 backend for replies no well-behaved server would send.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_engine::server::serve;
use switchyard_engine::{
    Backend, Director, Mode, ProxyConfig, ReplyShape, Route, ServerConfig, TransparentProxy,
};
#[allow(unused_imports)]
pub use switchyard_testkit::client::with_meta;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::Status;

/// A proxy serving on a free loopback port until dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub async fn spawn_proxy(director: impl Director, config: ProxyConfig) -> Proxy {
    spawn_proxy_with(director, config, ServerConfig::default()).await
}

pub async fn spawn_proxy_with(
    director: impl Director,
    config: ProxyConfig,
    server: ServerConfig,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy = TransparentProxy::with_config(director, config);
    tokio::spawn(async move {
        serve(listener, proxy, &server, async {
            let _ = stopped.await;
        })
        .await
    });
    Proxy { addr, _stop: stop }
}

/// A proxy serving a Unix socket in a new temporary directory (kept while
/// the first value lives): the directory and the socket's path.
pub fn spawn_unix_proxy(
    director: impl Director,
    config: ProxyConfig,
    server: ServerConfig,
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = switchyard_testkit::wait::socket_dir("proxy-unix");
    let socket = dir.path().join("proxy.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let proxy = TransparentProxy::with_config(director, config);
    tokio::spawn(async move { serve(listener, proxy, &server, std::future::pending()).await });
    (dir, socket)
}

#[allow(unused_imports)]
pub use switchyard_engine::StaticDirector;

/// The test services' methods whose replies stream.
const STREAMED_METHODS: [&str; 2] = [
    "/switchyard.test.v1.MultiService/PingList",
    "/switchyard.test.v1.MultiService/PingStream",
];

/// Fan-out to the backends named by the `x-targets` metadata (comma
/// separated, in that order), or to all of them without it; the streaming
/// methods of `MultiService` stream.
pub struct ByName(pub Vec<Arc<dyn Backend>>);

impl Director for ByName {
    fn route<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        Box::pin(async move {
            let shape = if STREAMED_METHODS.contains(&request.uri.path()) {
                ReplyShape::Streamed
            } else {
                ReplyShape::Unary
            };
            let mode = Mode::OneToMany(shape);
            let Some(targets) = request.headers.get("x-targets") else {
                return Ok(Route::new(mode, self.0.clone()));
            };
            let mut chosen = Vec::new();
            for name in targets.to_str().unwrap().split(',') {
                let backend = self
                    .0
                    .iter()
                    .find(|b| b.to_string() == name)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown target {name}")))?;
                chosen.push(backend.clone());
            }
            Ok(Route::new(mode, chosen))
        })
    }
}

/// Refuses every call with `status`.
pub struct Refuse(pub Status);

impl Director for Refuse {
    fn route<'a>(
        &'a self,
        _: &'a mut http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        Box::pin(async move { Err(self.0.clone()) })
    }
}

/// A loopback port nothing listens on.
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// What a raw backend answers to every request.
#[derive(Clone)]
pub struct RawReply {
    pub headers: HeaderMap,
    pub chunks: Vec<Bytes>,
    pub trailers: Option<HeaderMap>,
}

impl RawReply {
    /// A gRPC 200 with `chunks` as body and `grpc-status: 0` trailers.
    pub fn ok(chunks: Vec<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        Self {
            headers,
            chunks,
            trailers: Some(trailers),
        }
    }
}

/// An HTTP/2 server that answers every request with `reply`, whatever it is.
pub async fn raw_backend(reply: RawReply) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let reply = reply.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let reply = reply.clone();
                    async move {
                        // Read the request fully, as a unary server would.
                        let _ = req.into_body().collect().await;
                        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = reply
                            .chunks
                            .into_iter()
                            .map(|c| Ok(Frame::data(c)))
                            .collect();
                        if let Some(t) = reply.trailers {
                            frames.push(Ok(Frame::trailers(t)));
                        }
                        let mut res =
                            Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                        *res.headers_mut() = reply.headers;
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A gRPC server that takes every call and never answers it: a machine
/// whose server hangs while its connection stays healthy (PINGs answered).
pub async fn hung_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_: Request<Incoming>| {
                    std::future::pending::<Result<Response<http_body_util::Empty<Bytes>>, Infallible>>(
                    )
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `inner`'s routes with every backend's answer bounded by `timeout`.
pub struct LegTimeout<D>(pub D, pub Duration);

impl<D: Director> Director for LegTimeout<D> {
    fn route<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        Box::pin(async move {
            let mut route = self.0.route(request).await?;
            route.leg_timeout = Some(self.1);
            Ok(route)
        })
    }
}

/// The 5-byte prefix plus `payload`.
pub fn framed(compressed: bool, payload: &[u8]) -> Bytes {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.into()
}

pub const SHORT: Duration = Duration::from_secs(5);

/// A tonic client on a bare hyper HTTP/2 connection: unlike tonic's own
/// channel it does not enforce `grpc-timeout` itself, so tests see what the
/// proxy does with deadlines.
pub type BareChannel =
    tower::util::BoxCloneService<Request<tonic::body::Body>, Response<Incoming>, hyper::Error>;

pub async fn bare_channel(addr: SocketAddr) -> (BareChannel, http::Uri) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let service = tower::service_fn(move |req: Request<tonic::body::Body>| {
        let mut send = send.clone();
        async move { send.send_request(req).await }
    });
    (
        tower::util::BoxCloneService::new(service),
        format!("http://{addr}").parse().unwrap(),
    )
}
