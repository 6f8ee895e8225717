//! A tonic server that serves its own services (here: gRPC health) and
//! proxies every other method through a `TransparentProxy`.
//!
//! ```text
//! cargo run -p switchyard-engine --example tonic_fallback -- 127.0.0.1:50051 127.0.0.1:7001
//! ```

use switchyard_engine::{
    Address, Channel, ChannelBackend, ChannelConfig, StaticDirector, TransparentProxy,
};
use tonic::service::Routes;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let upstream: std::net::SocketAddr = args
        .next()
        .ok_or("usage: tonic_fallback UPSTREAM [LISTEN]")?
        .parse()?;
    let listen: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:7001".into())
        .parse()?;

    let backend = ChannelBackend::new(Channel::new(
        Address::Tcp(upstream),
        ChannelConfig::default(),
    ));
    let proxy = TransparentProxy::new(StaticDirector::one(backend));
    let (_reporter, health) = tonic_health::server::health_reporter();

    // Own services first; anything else falls through to the proxy.
    let router = Routes::new(health)
        .into_axum_router()
        .fallback_service(proxy);
    println!("serving gRPC health on {listen}, proxying everything else to {upstream}");
    tonic::transport::Server::builder()
        .add_routes(Routes::from(router))
        .serve(listen)
        .await?;
    Ok(())
}
