//! One-to-one transparency: what goes in comes out unchanged, both ways.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_engine::observe::{CallEnd, CallStart, Observer};
use switchyard_engine::{Backend, Mode, ProxyConfig};
use switchyard_testkit::client::{tcp_channel, test_client, unix_channel};
use switchyard_testkit::pb::{Empty, PingRequest};
use switchyard_testkit::{TestBackend, TestServer};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::codec::CompressionEncoding;

async fn setup() -> (TestServer, Proxy) {
    setup_with(ProxyConfig::default()).await
}

async fn setup_with(config: ProxyConfig) -> (TestServer, Proxy) {
    let (addr, server) = TestServer::spawn_tcp("alpha").await;
    let backend: Arc<dyn Backend> = Arc::new(TestBackend::tcp("alpha", addr));
    let proxy = spawn_proxy(StaticDirector::new(Mode::OneToOne, vec![backend]), config).await;
    (server, proxy)
}

fn ping(value: &str) -> PingRequest {
    PingRequest {
        value: value.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn metadata_reaches_the_backend_and_headers_and_trailers_come_back() {
    let (server, proxy) = setup().await;
    let mut client = test_client(tcp_channel(proxy.addr));
    let reply = client
        .ping(with_meta(
            ping("hello"),
            &[("x-test-color", "blue"), ("x-other", "kept")],
        ))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "hello");
    assert_eq!(reply.get_ref().server, "alpha");
    assert_eq!(
        server.probe().last_header("x-test-color").as_deref(),
        Some("blue")
    );
    assert_eq!(
        server.probe().last_header("x-other").as_deref(),
        Some("kept")
    );
    // Echoed response header and custom trailer (tonic merges trailers into unary metadata).
    assert_eq!(reply.metadata().get("x-test-color").unwrap(), "blue");
    assert_eq!(reply.metadata().get("x-test-trailer").unwrap(), "alpha");

    let mut stream = client
        .ping_list(with_meta(
            PingRequest {
                count: 3,
                ..ping("l")
            },
            &[("x-test-k", "v")],
        ))
        .await
        .unwrap();
    assert_eq!(stream.metadata().get("x-test-k").unwrap(), "v");
    let mut got = Vec::new();
    while let Some(m) = stream.get_mut().message().await.unwrap() {
        got.push(m.counter);
    }
    assert_eq!(got, [0, 1, 2]);
    let trailers = stream.get_mut().trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("x-test-trailer").unwrap(), "alpha");
}

#[tokio::test]
async fn application_errors_pass_with_code_message_and_headers() {
    let (_server, proxy) = setup().await;
    let mut client = test_client(tcp_channel(proxy.addr));
    let status = client
        .ping_error(with_meta(
            PingRequest {
                error_message: "not today".into(),
                ..ping("")
            },
            &[("x-test-id", "7")],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "not today");
    // Trailers-Only error: the response headers are not lost.
    assert_eq!(status.metadata().get("x-test-id").unwrap(), "7");

    let status = client
        .ping(PingRequest {
            error_code: Code::NotFound as i32,
            error_message: "gone".into(),
            ..ping("")
        })
        .await
        .unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::NotFound, "gone"));
}

#[tokio::test]
async fn director_errors_reach_the_client_unchanged() {
    let refusal = tonic::Status::with_details(
        Code::PermissionDenied,
        "machine fd00::9 is not yours",
        Bytes::from_static(b"\x08\x07"),
    );
    let proxy = spawn_proxy(Refuse(refusal), ProxyConfig::default()).await;
    let status = test_client(tcp_channel(proxy.addr))
        .ping(ping("x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "machine fd00::9 is not yours");
    assert_eq!(status.details(), b"\x08\x07");
}

#[tokio::test]
async fn full_duplex_ping_pong() {
    let (_server, proxy) = setup().await;
    let mut client = test_client(tcp_channel(proxy.addr));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = client
        .ping_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..20 {
        tx.send(ping(&format!("ping {i}"))).await.unwrap();
        // The next request is only sent once this reply arrived: true ping-pong.
        let reply = tokio::time::timeout(SHORT, replies.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.value, format!("ping {i}"));
        assert_eq!(reply.counter, i);
    }
    drop(tx); // client half-close ends the call
    assert!(replies.next().await.is_none());
}

#[tokio::test]
async fn fifty_concurrent_calls() {
    let (server, proxy) = setup().await;
    let client = test_client(tcp_channel(proxy.addr));
    let calls = (0..50).map(|i| {
        let mut client = client.clone();
        async move {
            client
                .ping(ping(&i.to_string()))
                .await
                .map(|r| r.into_inner().value)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), i.to_string());
    }
    assert_eq!(server.probe().calls(), 50);
}

#[tokio::test]
async fn empty_messages() {
    let (_server, proxy) = setup().await;
    let reply = test_client(tcp_channel(proxy.addr))
        .ping_empty(Empty {})
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "");
    assert_eq!(reply.get_ref().counter, 0);
}

#[tokio::test]
async fn twenty_mib_message_both_ways() {
    let (_server, proxy) = setup().await;
    let payload: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let reply = test_client(tcp_channel(proxy.addr))
        .ping(PingRequest {
            payload: payload.clone(),
            ..ping("big")
        })
        .await
        .unwrap();
    assert!(reply.get_ref().payload == payload);
}

#[tokio::test]
async fn gzip_messages_pass_untouched() {
    let (_server, proxy) = setup().await;
    let mut client = test_client(tcp_channel(proxy.addr))
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let payload = vec![7u8; 100_000];
    let reply = client
        .ping(PingRequest {
            payload: payload.clone(),
            ..ping("z")
        })
        .await
        .unwrap();
    assert_eq!(reply.metadata().get("grpc-encoding").unwrap(), "gzip");
    assert_eq!(reply.get_ref().payload, payload);
}

#[tokio::test]
async fn deadline_expiry_cancels_the_backend() {
    let (server, proxy) = setup().await;
    let mut client = test_client(tcp_channel(proxy.addr));
    // Set as plain metadata: tonic's `set_timeout` would make the client
    // enforce the deadline itself and hide what the proxy does.
    let req = with_meta(
        PingRequest {
            count: 1000,
            delay_ms: 50,
            ..ping("slow")
        },
        &[("grpc-timeout", "300m")],
    );
    let started = Instant::now();
    let mut stream = client.ping_list(req).await.unwrap().into_inner();
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without the deadline"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        server.probe().wait_cancelled(SHORT).await,
        "backend never saw the cancellation"
    );
}

#[tokio::test]
async fn deadline_before_headers_is_deadline_exceeded() {
    let (server, proxy) = setup().await;
    let req = with_meta(
        PingRequest {
            delay_ms: 10_000,
            ..ping("slow")
        },
        &[("grpc-timeout", "200m")],
    );
    let started = Instant::now();
    let (channel, origin) = bare_channel(proxy.addr).await;
    let mut client = switchyard_testkit::pb::test_service_client::TestServiceClient::with_origin(
        channel, origin,
    );
    let status = client.ping(req).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(server.probe().wait_cancelled(SHORT).await);
}

#[tokio::test]
async fn client_cancel_cancels_the_backend_stream() {
    let (server, proxy) = setup().await;
    let mut client = test_client(tcp_channel(proxy.addr));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = client
        .ping_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(ping("one")).await.unwrap();
    replies.next().await.unwrap().unwrap();
    // tonic resets the stream once both halves are dropped.
    drop(replies);
    drop(tx);
    assert!(
        server.probe().wait_cancelled(SHORT).await,
        "backend stream was not cancelled"
    );

    let mut list = client
        .ping_list(PingRequest {
            count: 1000,
            delay_ms: 20,
            ..ping("many")
        })
        .await
        .unwrap()
        .into_inner();
    list.message().await.unwrap().unwrap();
    drop(list);
    assert!(
        server.probe().wait_cancelled_at_least(2, SHORT).await,
        "server stream was not cancelled"
    );
}

#[tokio::test]
async fn backend_down_is_unavailable_quickly() {
    let dead = dead_addr().await;
    let backend: Arc<dyn Backend> = Arc::new(TestBackend::tcp("ghost", dead));
    let proxy = spawn_proxy(
        StaticDirector::new(Mode::OneToOne, vec![backend]),
        ProxyConfig::default(),
    )
    .await;
    let started = Instant::now();
    let status = test_client(tcp_channel(proxy.addr))
        .ping(ping("x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("ghost"), "{}", status.message());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn oversize_request_is_resource_exhausted() {
    let config = ProxyConfig {
        max_message_size: 1024 * 1024,
        ..Default::default()
    };
    let (server, proxy) = setup_with(config).await;
    let status = test_client(tcp_channel(proxy.addr))
        .ping(PingRequest {
            payload: vec![0; 2 * 1024 * 1024],
            ..ping("x")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(server.probe().calls() <= 1);
}

async fn raw_call(reply: RawReply) -> tonic::Status {
    let backend_addr = raw_backend(reply).await;
    let backend: Arc<dyn Backend> = Arc::new(TestBackend::tcp("raw", backend_addr));
    let config = ProxyConfig {
        max_message_size: 1024,
        ..Default::default()
    };
    let proxy = spawn_proxy(StaticDirector::new(Mode::OneToOne, vec![backend]), config).await;
    test_client(tcp_channel(proxy.addr))
        .ping(ping("x"))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn malformed_backend_frames_are_internal() {
    // Truncated: 10 bytes announced, 2 sent.
    let status = raw_call(RawReply::ok(vec![Bytes::from_static(&[
        0, 0, 0, 0, 10, 1, 2,
    ])]))
    .await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("raw"), "{}", status.message());
    // Invalid compression flag.
    let status = raw_call(RawReply::ok(vec![Bytes::from_static(&[9, 0, 0, 0, 0])])).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    // Over the limit (1 KiB here): rejected from the prefix alone.
    let status = raw_call(RawReply::ok(vec![Bytes::from_static(&[0, 0, 1, 0, 0])])).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // No grpc-status at all.
    let status = raw_call(RawReply {
        trailers: None,
        ..RawReply::ok(vec![framed(false, b"")])
    })
    .await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}

#[tokio::test]
async fn unix_socket_listener_and_backend() {
    let dir = std::env::temp_dir().join(format!("switchyard-o2o-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backend_path = dir.join("backend.sock");
    let proxy_path = dir.join("proxy.sock");
    let _server = TestServer::spawn_unix("local", &backend_path).await;
    let backend: Arc<dyn Backend> = Arc::new(TestBackend::unix("local", &backend_path));
    let _ = std::fs::remove_file(&proxy_path);
    let listener = tokio::net::UnixListener::bind(&proxy_path).unwrap();
    let proxy = switchyard_engine::TransparentProxy::new(StaticDirector::new(
        Mode::OneToOne,
        vec![backend],
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        switchyard_engine::server::serve(listener, proxy, &Default::default(), async {
            let _ = stopped.await;
        })
        .await
    });
    let reply = test_client(unix_channel(&proxy_path))
        .ping(ping("over uds"))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().value, "over uds");
    assert_eq!(reply.get_ref().server, "local");
    let _ = stop.send(());
    task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn non_grpc_requests_get_clear_errors() {
    let (_server, proxy) = setup().await;
    // HTTP/1.1
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = h1
        .send_request(
            http::Request::post("/switchyard.test.v1.TestService/Ping")
                .header("content-type", "application/grpc")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 505);

    // HTTP/2 but not gRPC.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = format!("http://{}/switchyard.test.v1.TestService/Ping", proxy.addr);
    let res = h2
        .send_request(
            http::Request::post(&uri)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = h2
        .send_request(
            http::Request::get(&uri)
                .header("content-type", "application/grpc")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let bad = format!("http://{}/not-a-method", proxy.addr);
    let res = h2
        .send_request(
            http::Request::post(&bad)
                .header("content-type", "application/grpc")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers().get("grpc-status").unwrap(), "12");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}

/// Counts the calls it hears of; observes them only while `on`.
#[derive(Default)]
struct Counting {
    on: AtomicBool,
    started: AtomicUsize,
    ended: AtomicUsize,
}

impl Observer for Counting {
    fn observes_calls(&self) -> bool {
        self.on.load(Relaxed)
    }

    fn call_started(&self, _: &CallStart<'_>) {
        self.started.fetch_add(1, Relaxed);
    }

    fn call_ended(&self, _: &CallEnd<'_>) {
        self.ended.fetch_add(1, Relaxed);
    }
}

#[tokio::test]
async fn calls_are_reported_only_while_the_observer_observes_them() {
    let observer = Arc::new(Counting::default());
    let config = ProxyConfig {
        observer: Some(observer.clone()),
        ..ProxyConfig::default()
    };
    let (_server, proxy) = setup_with(config).await;
    let mut client = test_client(tcp_channel(proxy.addr));
    client.ping(ping("unheard")).await.unwrap();
    assert_eq!(observer.started.load(Relaxed), 0);
    assert_eq!(observer.ended.load(Relaxed), 0);

    observer.on.store(true, Relaxed);
    client.ping(ping("heard")).await.unwrap();
    // The record is finished when the response body ends, which the
    // client may see first.
    switchyard_testkit::wait::eventually(Duration::from_secs(5), "the call's end", || async {
        (observer.ended.load(Relaxed) == 1).then_some(())
    })
    .await;
    assert_eq!(observer.started.load(Relaxed), 1);
    assert_eq!(observer.ended.load(Relaxed), 1);
}
