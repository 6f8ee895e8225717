//! A tonic server that serves its own services (here: gRPC health) and
//! proxies every other method through a `TransparentProxy`.
//!
//! ```text
//! cargo run -p switchyard-engine --example tonic_fallback -- 127.0.0.1:50051 127.0.0.1:7001
//! ```

use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_engine::{
    Backend, Channel, ChannelConfig, Director, Mode, Route, Target, TransparentProxy, Upstream,
};
use tonic::Status;
use tonic::service::Routes;

#[derive(Debug)]
struct Forward(Channel);

impl std::fmt::Display for Forward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.target().fmt(f)
    }
}

impl Backend for Forward {
    fn connect<'a>(
        &'a self,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>> {
        Box::pin(async move {
            let mut headers = request.headers.clone();
            headers.remove(http::header::HOST);
            self.0
                .upstream(headers)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))
        })
    }
}

struct Everything(Arc<dyn Backend>);

impl Director for Everything {
    fn route<'a>(
        &'a self,
        _method: &'a str,
        _request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        Box::pin(async move { Ok((Mode::OneToOne, vec![self.0.clone()])) })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let upstream: std::net::SocketAddr = args
        .next()
        .ok_or("usage: tonic_fallback UPSTREAM LISTEN")?
        .parse()?;
    let listen: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7001".into())
        .parse()?;

    let proxy = TransparentProxy::new(Everything(Arc::new(Forward(Channel::new(
        Target::Tcp(upstream),
        ChannelConfig::default(),
    )))));
    let (_reporter, health) = tonic_health::server::health_reporter();

    // Own services first; anything else falls through to the proxy.
    let router = Routes::new(health)
        .into_axum_router()
        .fallback_service(proxy);
    tonic::transport::Server::builder()
        .add_routes(Routes::from(router))
        .serve(listen)
        .await?;
    Ok(())
}
