//! The proxy as the fallback of a tonic server: the application serves its
//! own services and everything else is proxied.

mod common;

use std::sync::Arc;

use switchyard_engine::{Backend, Mode, TransparentProxy};
use switchyard_testkit::client::{tcp_channel, test_client};
use switchyard_testkit::pb::PingRequest;
use switchyard_testkit::{TestBackend, TestServer};
use tonic::service::Routes;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn own_services_are_served_and_the_rest_is_proxied() {
    let (backend_addr, server) = TestServer::spawn_tcp("behind").await;
    let backend: Arc<dyn Backend> = Arc::new(TestBackend::tcp("behind", backend_addr));
    let proxy = TransparentProxy::new(common::StaticDirector::new(Mode::OneToOne, vec![backend]));

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>>().await;
    let router = Routes::new(health)
        .into_axum_router()
        .fallback_service(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(Routes::from(router))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    // Served by the application itself: the backend never sees it.
    let health = HealthClient::new(tcp_channel(addr))
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.get_ref().status, 1);
    assert_eq!(server.probe().calls(), 0);

    // Proxied: unary and server streaming.
    let mut client = test_client(tcp_channel(addr));
    let reply = client
        .ping(PingRequest {
            value: "via fallback".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(reply.get_ref().server, "behind");
    let mut list = client
        .ping_list(PingRequest {
            count: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while list.message().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 4);
    assert_eq!(server.probe().calls(), 2);
}
