//! Any `:authority` a gRPC client sends is accepted: the socket path that
//! gRPC C-core, Java and Swift clients send on a Unix socket (raw or
//! %-encoded), a host name, or none at all. The authority is opaque to the
//! proxy; the backend gets one of the proxy's choosing.

mod common;

use std::sync::Arc;

use common::*;
use prost::Message;
use switchyard_engine::{Backend, Mode, ProxyConfig, ServerConfig, TransparentProxy};
use switchyard_testkit::pb::{PingRequest, PingResponse};
use switchyard_testkit::raw_h2::{RawH2, RawOutcome, grpc_request};
use switchyard_testkit::wait::{bounded, socket_dir};
use switchyard_testkit::{TestBackend, TestServer};

const AUTHORITIES: [Option<&str>; 5] = [
    Some("/run/x.sock"),
    Some("%2Frun%2Fx.sock"),
    Some("tmp%2Fx%2Fproxy.sock"),
    Some("localhost"),
    None,
];

async fn ping_with_authority<IO>(io: IO, authority: Option<&str>) -> RawOutcome
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut h2 = RawH2::handshake(io).await.unwrap();
    let request = PingRequest {
        value: "any authority".into(),
        ..Default::default()
    };
    let fields = grpc_request("/switchyard.test.v1.TestService/Ping", authority, &[]);
    bounded(
        &format!("call with authority {authority:?}"),
        h2.request(&fields, &framed(false, &request.encode_to_vec())),
    )
    .await
    .unwrap()
}

fn assert_answered(outcome: &RawOutcome, authority: Option<&str>) {
    assert_eq!(
        outcome.grpc("grpc-status"),
        Some("0"),
        "{authority:?}: {outcome:?}"
    );
    let RawOutcome::Response { body, .. } = outcome else {
        unreachable!("checked above");
    };
    let reply = PingResponse::decode(&body[5..]).unwrap();
    assert_eq!(reply.value, "any authority", "{authority:?}");
}

#[tokio::test]
async fn every_authority_is_accepted_on_tcp_and_unix_sockets() {
    let (addr, server) = TestServer::spawn_tcp("backend").await;
    let backend: Arc<dyn Backend> = Arc::new(TestBackend::tcp("backend", addr));
    let proxy = TransparentProxy::with_config(
        StaticDirector::new(Mode::OneToOne, vec![backend]),
        ProxyConfig::default(),
    );
    let dir = socket_dir("authority");
    let path = dir.path().join("proxy.sock");
    let unix = tokio::net::UnixListener::bind(&path).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serve_unix = {
        let (proxy, mut stopped) = (proxy.clone(), stopped.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            switchyard_engine::server::serve(unix, proxy, &ServerConfig::default(), shutdown).await
        })
    };
    let tcp = spawn_proxy(
        StaticDirector::new(
            Mode::OneToOne,
            vec![Arc::new(TestBackend::tcp("backend", addr)) as Arc<dyn Backend>],
        ),
        ProxyConfig::default(),
    )
    .await;

    for authority in AUTHORITIES {
        let io = tokio::net::UnixStream::connect(&path).await.unwrap();
        assert_answered(&ping_with_authority(io, authority).await, authority);
        let io = tokio::net::TcpStream::connect(tcp.addr).await.unwrap();
        assert_answered(&ping_with_authority(io, authority).await, authority);
        // The backend got an authority of the proxy's choosing: its address.
        let seen = server.probe().last_call().unwrap();
        assert_eq!(seen.method, "/switchyard.test.v1.TestService/Ping");
    }
    assert_eq!(server.probe().calls(), 2 * AUTHORITIES.len());
    stop.send(true).unwrap();
    bounded("the Unix server stops", serve_unix).await.unwrap();
    drop(stopped);
}
