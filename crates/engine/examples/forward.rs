//! Serves a `TransparentProxy` directly with hyper, on TCP and on a Unix
//! socket, forwarding every gRPC call to one upstream server.
//!
//! ```text
//! cargo run -p switchyard-engine --example forward -- 127.0.0.1:50051 [::1]:7000 /tmp/forward.sock
//! ```

use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_engine::server::{ServerConfig, serve};
use switchyard_engine::{
    Backend, Channel, ChannelConfig, Director, Mode, Route, Target, TransparentProxy, Upstream,
};
use tonic::Status;

/// Forwards metadata as is to one upstream.
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

/// Sends every call to the same backend.
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
        .ok_or("usage: forward UPSTREAM TCP_LISTEN UNIX_PATH")?
        .parse()?;
    let tcp = args.next().unwrap_or_else(|| "[::1]:7000".into());
    let unix = args
        .next()
        .unwrap_or_else(|| "/tmp/switchyard-forward.sock".into());

    let backend = Forward(Channel::new(
        Target::Tcp(upstream),
        ChannelConfig::default(),
    ));
    let proxy = TransparentProxy::new(Everything(Arc::new(backend)));
    let config = ServerConfig::default();

    let _ = std::fs::remove_file(&unix);
    let tcp_listener = tokio::net::TcpListener::bind(&tcp).await?;
    let unix_listener = tokio::net::UnixListener::bind(&unix)?;
    let shutdown = || async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::join!(
        serve(tcp_listener, proxy.clone(), &config, shutdown()),
        serve(unix_listener, proxy, &config, shutdown()),
    );
    Ok(())
}
