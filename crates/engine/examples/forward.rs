//! Serves a `TransparentProxy` directly with hyper, on TCP and on a Unix
//! socket, forwarding every gRPC call to one upstream server.
//!
//! ```text
//! cargo run -p switchyard-engine --example forward -- 127.0.0.1:50051 '[::1]:7000' /tmp/forward.sock
//! ```

use switchyard_engine::server::serve;
use switchyard_engine::{
    Address, Channel, ChannelBackend, ChannelConfig, ServerConfig, StaticDirector, TransparentProxy,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let upstream: std::net::SocketAddr = args
        .next()
        .ok_or("usage: forward UPSTREAM [TCP_LISTEN] [UNIX_PATH]")?
        .parse()?;
    let tcp = args.next().unwrap_or_else(|| "[::1]:7000".into());
    let unix = args
        .next()
        .unwrap_or_else(|| "/tmp/switchyard-forward.sock".into());

    let backend = ChannelBackend::new(Channel::new(
        Address::Tcp(upstream),
        ChannelConfig::default(),
    ));
    let proxy = TransparentProxy::new(StaticDirector::one(backend));
    let config = ServerConfig::default();

    let _ = std::fs::remove_file(&unix);
    let tcp_listener = tokio::net::TcpListener::bind(&tcp).await?;
    let unix_listener = tokio::net::UnixListener::bind(&unix)?;
    println!("forwarding {tcp} and unix:{unix} to {upstream}; ctrl-c stops");
    let shutdown = || async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::join!(
        serve(tcp_listener, proxy.clone(), &config, shutdown()),
        serve(unix_listener, proxy, &config, shutdown()),
    );
    Ok(())
}
