//! Transparency of cancellation: when a client resets its call while the
//! request is still open, the backend sees the reason the client used
//! (`CANCEL`), as over a direct connection — one-to-one, in fan-out, and
//! across two hops.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchyard_engine::{
    Address, Backend, Channel, ChannelBackend, ChannelConfig, Mode, ProxyConfig, ReplyShape,
};
use switchyard_testkit::TestBackend;
use switchyard_testkit::wait::bounded;
use tokio::sync::mpsc;

/// An HTTP/2 server that answers each request with headers, reads its body,
/// and reports the reason the request stream was reset with.
async fn recording_backend() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<h2::Reason>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let response = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(())
                            .unwrap();
                        let _stream = respond.send_response(response, false);
                        let mut body = request.into_body();
                        while let Some(chunk) = body.data().await {
                            match chunk {
                                Ok(data) => {
                                    let _ = body.flow_control().release_capacity(data.len());
                                }
                                Err(err) => {
                                    let _ = tx.send(err.reason().unwrap_or(h2::Reason::NO_ERROR));
                                    return;
                                }
                            }
                        }
                    });
                }
            });
        }
    });
    (addr, rx)
}

/// Starts a call through `proxy`, sends one message, and resets the stream
/// with `CANCEL` while the request is still open.
async fn cancel_midway(proxy: std::net::SocketAddr) {
    let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (client, conn) = bounded("HTTP/2 handshake", h2::client::handshake(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{proxy}/switchyard.test.v1.MultiService/PingStream"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, mut stream) = client.send_request(request, false).unwrap();
    stream
        .send_data(framed(false, b"\x0a\x01x"), false)
        .unwrap();
    // Wait until the call reached the backends (response headers came back).
    let _ = bounded("response headers", response).await;
    stream.send_reset(h2::Reason::CANCEL);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

async fn next_reason(rx: &mut mpsc::UnboundedReceiver<h2::Reason>) -> h2::Reason {
    bounded("the backend saw the reset", rx.recv())
        .await
        .unwrap()
}

#[tokio::test]
async fn one_to_one_passes_the_reset_reason() {
    let (addr, mut reasons) = recording_backend().await;
    let proxy = spawn_proxy(
        StaticDirector::one(TestBackend::tcp("backend", addr)),
        ProxyConfig::default(),
    )
    .await;
    cancel_midway(proxy.addr).await;
    assert_eq!(next_reason(&mut reasons).await, h2::Reason::CANCEL);
}

#[tokio::test]
async fn fan_out_passes_the_reset_reason_to_every_backend() {
    let (a, mut reasons_a) = recording_backend().await;
    let (b, mut reasons_b) = recording_backend().await;
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(TestBackend::tcp("a", a)),
        Arc::new(TestBackend::tcp("b", b)),
    ];
    let proxy = spawn_proxy(
        StaticDirector::new(Mode::OneToMany(ReplyShape::Streamed), backends),
        ProxyConfig::default(),
    )
    .await;
    cancel_midway(proxy.addr).await;
    assert_eq!(next_reason(&mut reasons_a).await, h2::Reason::CANCEL);
    assert_eq!(next_reason(&mut reasons_b).await, h2::Reason::CANCEL);
}

#[tokio::test]
async fn two_hops_pass_the_reset_reason() {
    let (addr, mut reasons) = recording_backend().await;
    let second = spawn_proxy(
        StaticDirector::one(TestBackend::tcp("backend", addr)),
        ProxyConfig::default(),
    )
    .await;
    let first = spawn_proxy(
        StaticDirector::one(ChannelBackend::new(Channel::new(
            Address::Tcp(second.addr),
            ChannelConfig::default(),
        ))),
        ProxyConfig::default(),
    )
    .await;
    cancel_midway(first.addr).await;
    assert_eq!(next_reason(&mut reasons).await, h2::Reason::CANCEL);
}
