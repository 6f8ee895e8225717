//! One slow or hostile caller or backend never hurts the others: a client
//! that stops reading, connections that never finish their handshake, a
//! backend that stops reading the request, replies too large to merge, and
//! huge trailers all stay the problem of the call (or connection) that
//! caused them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use switchyard_engine::{
    Address, Backend, Channel, ChannelBackend, ChannelConfig, Mode, ProxyConfig, ReplyShape,
    ServerConfig,
};
use switchyard_testkit::client::{multi_client, tcp_channel, test_client};
use switchyard_testkit::pb::{MultiPingReply, MultiPingResponse, PingRequest};
use switchyard_testkit::wait::{bounded, bounded_for};
use switchyard_testkit::{TestBackend, TestServer};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;
use tonic::Code;

const MERGED: Mode = Mode::OneToMany(ReplyShape::Unary);
const STREAMED: Mode = Mode::OneToMany(ReplyShape::Streamed);

/// Streams of 64 KiB replies that a client opens and never reads, on one
/// connection of its own; returned to keep them open.
async fn open_unread_streams(
    addr: std::net::SocketAddr,
    streams: usize,
) -> Vec<Box<dyn std::any::Any>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = PingRequest {
        count: 400,
        payload: vec![7; 64 * 1024],
        ..Default::default()
    };
    let body = framed(false, &request.encode_to_vec());
    let mut held: Vec<Box<dyn std::any::Any>> = vec![Box::new(send.clone())];
    for _ in 0..streams {
        let request = http::Request::post(format!(
            "http://{addr}/switchyard.test.v1.TestService/PingList"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(body.clone()))
        .unwrap();
        let mut send = send.clone();
        let response = bounded("an unread stream starts", send.send_request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        // Never read: its replies pile up against flow control.
        held.push(Box::new(response));
    }
    held
}

/// A victim's unary call on a connection of its own, which must answer
/// promptly although other calls to the same backend are stalled.
async fn victim_answers(addr: std::net::SocketAddr) {
    let mut client = test_client(tcp_channel(addr));
    let reply = bounded_for(Duration::from_secs(5), "the victim's call", async {
        client
            .ping(PingRequest {
                value: "victim".into(),
                ..Default::default()
            })
            .await
    })
    .await
    .unwrap();
    assert_eq!(reply.get_ref().value, "victim");
}

/// B forwards to the backend at `addr`; A forwards to B: two hops, one
/// shared upstream connection per hop.
async fn two_hops(addr: std::net::SocketAddr) -> (Proxy, Proxy) {
    let b = spawn_proxy(
        StaticDirector::one(TestBackend::tcp("backend", addr)),
        ProxyConfig::default(),
    )
    .await;
    let a = spawn_proxy(
        StaticDirector::one(ChannelBackend::new(Channel::new(
            Address::Tcp(b.addr),
            ChannelConfig::default(),
        ))),
        ProxyConfig::default(),
    )
    .await;
    (b, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_stall_only_their_own_calls_over_one_and_two_hops() {
    let (addr, _server) = TestServer::spawn_tcp("backend").await;
    let (b, a) = two_hops(addr).await;
    for (hops, entry) in [(1, b.addr), (2, a.addr)] {
        let _unread = open_unread_streams(entry, 6).await;
        // Let the replies fill every window they can.
        tokio::time::sleep(Duration::from_secs(1)).await;
        eprintln!("{hops} hop(s): six unread streams open");
        victim_answers(entry).await;
    }
}

/// Connections that finished their handshake and made a call, then stay
/// open with nothing running (PINGs answered), and connections whose first
/// byte is not the preface, hold their slots only until someone needs one:
/// new callers get in, on TCP and on the Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn established_idle_connections_cannot_lock_callers_out_of_tcp_or_unix() {
    use switchyard_engine::server::{ConnectionLimit, ConnectionLimits};
    use switchyard_testkit::client::unix_channel;

    let (addr, _server) = TestServer::spawn_tcp("backend").await;
    let server = ServerConfig {
        connections: ConnectionLimit::with(ConnectionLimits {
            max: 24,
            unix_reserved: 4,
            per_peer: 24,
            idle_timeout: Duration::from_secs(300),
        }),
        ..ServerConfig::default()
    };
    let proxy = spawn_proxy_with(
        StaticDirector::one(TestBackend::tcp("backend", addr)),
        ProxyConfig::default(),
        server.clone(),
    )
    .await;
    let (_dir, socket) = spawn_unix_proxy(
        StaticDirector::one(TestBackend::tcp("backend", addr)),
        ProxyConfig::default(),
        server,
    );

    // Every TCP slot: established by a call each, then idle.
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut client = test_client(tcp_channel(proxy.addr));
        let reply = client
            .ping(PingRequest {
                value: format!("idle {i}"),
                ..Default::default()
            })
            .await;
        assert!(reply.is_ok(), "connection {i}: {reply:?}");
        idle.push(client);
    }
    // And more that send one byte that is not the preface.
    let mut junk = Vec::new();
    for _ in 0..20 {
        let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        socket.write_all(b"X").await.unwrap();
        junk.push(socket);
    }
    victim_answers(proxy.addr).await;
    let mut local = test_client(unix_channel(&socket));
    let reply = bounded_for(Duration::from_secs(5), "the Unix caller's call", async {
        local.ping(PingRequest::default()).await
    })
    .await;
    assert!(reply.is_ok(), "{reply:?}");
    // The idle callers lost only their connection: their next call dials anew.
    let reply = bounded_for(
        Duration::from_secs(5),
        "an evicted caller's next call",
        async { idle[0].ping(PingRequest::default()).await },
    )
    .await;
    assert!(reply.is_ok(), "{reply:?}");
}

/// Request metadata a backend would answer by closing the connection every
/// caller shares (tonic and hyper servers take 16 KiB) fails that call
/// alone, before it is forwarded: calls in flight on the same upstream
/// connection, one hop or two away, all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_too_large_for_the_backend_fails_alone() {
    let (addr, _server) = TestServer::spawn_tcp("backend").await;
    let (b, a) = two_hops(addr).await;
    for entry in [b.addr, a.addr] {
        let channel = tcp_channel(entry);
        let victims: Vec<_> = (0..5)
            .map(|i| {
                let mut client = test_client(channel.clone());
                tokio::spawn(async move {
                    client
                        .ping(PingRequest {
                            value: format!("victim {i}"),
                            delay_ms: 500,
                            ..Default::default()
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let big = "x".repeat(70_000);
        let status = test_client(channel.clone())
            .ping(with_meta(PingRequest::default(), &[("x-big", &big)]))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("request metadata"), "{status:?}");
        for victim in victims {
            let reply = victim.await.unwrap();
            assert!(reply.is_ok(), "{reply:?}");
        }
    }
}

/// A caller whose calls all expire after 5 ms (each cancel a reset on the
/// upstream connection every caller shares, mostly of streams the backend
/// has not answered yet) must not make the proxy look like a rapid-reset
/// attacker to the backend, nor trip the proxy's own HTTP/2 client: the
/// calls of an unrelated caller on the same connection all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_cancel_fast_cannot_break_the_shared_upstream_connection() {
    let (addr, _server) = TestServer::spawn_tcp("backend").await;
    let proxy = spawn_proxy(
        StaticDirector::one(TestBackend::tcp("backend", addr)),
        ProxyConfig::default(),
    )
    .await;
    let attacker = tokio::spawn({
        let channel = tcp_channel(proxy.addr);
        async move {
            let mut expired = 0;
            for _ in 0..30 {
                let calls = (0..100).map(|_| {
                    let mut client = test_client(channel.clone());
                    async move {
                        let mut request = tonic::Request::new(PingRequest {
                            delay_ms: 20,
                            ..Default::default()
                        });
                        request.set_timeout(Duration::from_millis(5));
                        client.ping(request).await
                    }
                });
                let results = futures_util::future::join_all(calls).await;
                expired += results.iter().filter(|r| r.is_err()).count();
            }
            expired
        }
    });
    let mut victim = test_client(tcp_channel(proxy.addr));
    let mut failed = Vec::new();
    let mut calls = 0;
    while !attacker.is_finished() && calls < 5000 {
        calls += 1;
        if let Err(status) = victim.ping(PingRequest::default()).await {
            failed.push(status);
        }
    }
    let expired = bounded_for(Duration::from_secs(60), "the attacker's calls", attacker)
        .await
        .unwrap();
    assert!(expired > 1000, "the attacker's calls expired: {expired}");
    assert!(calls > 10, "{calls} victim calls");
    assert!(
        failed.is_empty(),
        "{} of {calls} victim calls failed: {:?}",
        failed.len(),
        failed.first()
    );
}

#[tokio::test]
async fn idle_and_half_open_connections_cannot_lock_callers_out() {
    let (addr, _server) = TestServer::spawn_tcp("backend").await;
    let proxy = spawn_proxy_with(
        StaticDirector::one(TestBackend::tcp("backend", addr)),
        ProxyConfig::default(),
        ServerConfig {
            connections: switchyard_engine::server::ConnectionLimit::new(20),
            handshake_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        },
    )
    .await;
    // Five times the cap: silent sockets and half prefaces.
    let mut idle = Vec::new();
    for i in 0..100 {
        let mut socket = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        if i % 2 == 0 {
            socket.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        }
        idle.push(socket);
    }
    // A legitimate caller gets in at once: it evicts a connection that is
    // still in its handshake.
    victim_answers(proxy.addr).await;
    // And the idle ones are closed by the handshake bound.
    let mut last = idle.pop().unwrap();
    let mut buf = [0u8; 64];
    let closed = bounded_for(Duration::from_secs(5), "an idle socket closed", async {
        loop {
            use tokio::io::AsyncReadExt;
            match last.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    let () = closed;
}

fn payload_ping(bytes: usize) -> PingRequest {
    PingRequest {
        value: "big".into(),
        payload: vec![1; bytes],
        ..Default::default()
    }
}

fn error_code(reply: &MultiPingReply) -> Option<i32> {
    reply
        .metadata
        .as_ref()
        .and_then(|m| m.status.as_ref())
        .map(|s| s.code)
}

#[tokio::test]
async fn merged_replies_respect_the_message_size_limit() {
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        let (addr, server) = TestServer::spawn_tcp(name).await;
        servers.push(server);
        backends.push(Arc::new(TestBackend::tcp(name, addr)));
    }
    let limit = 1024 * 1024;
    let proxy = spawn_proxy(
        StaticDirector::new(MERGED, backends),
        ProxyConfig {
            max_message_size: limit,
            ..ProxyConfig::default()
        },
    )
    .await;
    let reply = multi_client(tcp_channel(proxy.addr))
        .ping(payload_ping(600 * 1024))
        .await
        .unwrap()
        .into_inner();
    assert!(
        reply.encoded_len() <= limit,
        "{} bytes",
        reply.encoded_len()
    );
    let answered = reply
        .messages
        .iter()
        .filter(|m| !m.payload.is_empty())
        .count();
    let refused: Vec<_> = reply
        .messages
        .iter()
        .filter(|m| error_code(m) == Some(Code::ResourceExhausted as i32))
        .collect();
    assert_eq!(
        (answered, refused.len()),
        (1, 2),
        "{:?}",
        reply.messages.iter().map(error_code).collect::<Vec<_>>()
    );
    let error = &refused[0].metadata.as_ref().unwrap().error;
    assert!(error.contains("does not fit"), "{error}");
}

#[tokio::test]
async fn error_entries_count_in_the_merged_replys_limit() {
    // 16 replies that fit the limit by themselves, and 20 unreachable
    // machines whose error entries come on top of them.
    let (addr, _server) = TestServer::spawn_tcp("answers").await;
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    for i in 0..16 {
        backends.push(Arc::new(TestBackend::tcp(format!("up-{i}"), addr)));
    }
    for i in 0..20 {
        backends.push(Arc::new(TestBackend::tcp(format!("down-{i}"), dead)));
    }
    let limit = 64 * 1024;
    let proxy = spawn_proxy(
        StaticDirector::new(MERGED, backends),
        ProxyConfig {
            max_message_size: limit,
            ..ProxyConfig::default()
        },
    )
    .await;
    let reply = multi_client(tcp_channel(proxy.addr))
        // A client that refuses a message over the limit accepts it.
        .max_decoding_message_size(limit)
        .ping(payload_ping(4000))
        .await
        .unwrap()
        .into_inner();
    assert!(
        reply.encoded_len() <= limit,
        "{} bytes",
        reply.encoded_len()
    );
    let codes: Vec<Option<i32>> = reply.messages.iter().map(error_code).collect();
    assert_eq!(codes.len(), 36, "one entry per machine: {codes:?}");
    let count = |code: Code| codes.iter().filter(|c| **c == Some(code as i32)).count();
    assert_eq!(count(Code::Unavailable), 20, "{codes:?}");
    let refused = count(Code::ResourceExhausted);
    assert!(
        refused >= 1,
        "a reply gave way to the error entries: {codes:?}"
    );
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 16 - refused);
}

#[tokio::test]
async fn a_stream_merged_as_unary_ends_that_machines_part() {
    // A backend whose method streams replies shaped like unary fan-out
    // replies, which this director says is unary: more than one reply.
    let one = MultiPingResponse {
        messages: vec![MultiPingReply {
            value: "part".into(),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let chunks = (0..1000).map(|_| framed(false, &one)).collect();
    let streaming = raw_backend(RawReply::ok(chunks)).await;
    let (addr, _server) = TestServer::spawn_tcp("unary").await;
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(TestBackend::tcp("streaming", streaming)),
        Arc::new(TestBackend::tcp("unary", addr)),
    ];
    let proxy = spawn_proxy(
        StaticDirector::new(MERGED, backends),
        ProxyConfig::default(),
    )
    .await;
    let reply = multi_client(tcp_channel(proxy.addr))
        .ping(payload_ping(0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.messages.len(),
        2,
        "one entry per machine, not 1000 parts"
    );
    let streaming = &reply.messages[0];
    assert_eq!(error_code(streaming), Some(Code::FailedPrecondition as i32));
    let error = &streaming.metadata.as_ref().unwrap().error;
    assert!(error.contains("streamed"), "{error}");
    assert_eq!(reply.messages[1].value, "big");
}

/// An HTTP/2 server that takes every request, answers with headers, and
/// never reads a byte of the request body.
async fn stuck_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok((request, mut respond))) = conn.accept().await {
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .body(())
                        .unwrap();
                    let stream = respond.send_response(response, false);
                    held.push((request, stream));
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_that_stops_reading_the_request_is_dropped_from_the_broadcast() {
    let (a, _sa) = TestServer::spawn_tcp("a").await;
    let (b, _sb) = TestServer::spawn_tcp("b").await;
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(TestBackend::tcp("a", a)),
        Arc::new(TestBackend::tcp("stuck", stuck_backend().await)),
        Arc::new(TestBackend::tcp("b", b)),
    ];
    let proxy = spawn_proxy(
        StaticDirector::new(STREAMED, backends),
        ProxyConfig {
            request_stall_timeout: Duration::from_secs(1),
            ..ProxyConfig::default()
        },
    )
    .await;
    let requests = (0..40).map(|i| PingRequest {
        value: format!("m{i}"),
        payload: vec![0; 16 * 1024],
        ..Default::default()
    });
    let mut replies = bounded(
        "bidi fan-out starts",
        multi_client(tcp_channel(proxy.addr)).ping_stream(tokio_stream::iter(requests)),
    )
    .await
    .unwrap()
    .into_inner();
    let mut per_machine = std::collections::HashMap::<String, usize>::new();
    let mut stalled = None;
    bounded_for(Duration::from_secs(15), "every healthy reply", async {
        while let Some(reply) = replies.next().await {
            let reply = reply.unwrap();
            let metadata = reply.metadata.as_ref().unwrap();
            if metadata.error.is_empty() {
                *per_machine
                    .entry(metadata.machine_addr.clone())
                    .or_default() += 1;
            } else {
                stalled = Some((metadata.machine_addr.clone(), metadata.error.clone()));
            }
        }
    })
    .await;
    assert_eq!(per_machine.get("a"), Some(&40));
    assert_eq!(per_machine.get("b"), Some(&40));
    let (machine, error) = stalled.expect("the stuck machine's error entry");
    assert_eq!(machine, "stuck");
    assert!(error.contains("did not take the request"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_trailers_of_one_call_do_not_affect_the_others() {
    let (addr, _server) = TestServer::spawn_tcp("backend").await;
    let proxy = spawn_proxy(
        StaticDirector::one(TestBackend::tcp("backend", addr)),
        ProxyConfig::default(),
    )
    .await;
    // Slow calls on the shared upstream connection while one fails with a
    // 100 KB message.
    let victims: Vec<_> = (0..5)
        .map(|i| {
            let mut client = test_client(tcp_channel(proxy.addr));
            tokio::spawn(async move {
                client
                    .ping(PingRequest {
                        value: format!("victim {i}"),
                        delay_ms: 500,
                        ..Default::default()
                    })
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let huge = "x".repeat(100 * 1024);
    let mut client = test_client(
        tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr))
            .unwrap()
            .http2_max_header_list_size(16 * 1024 * 1024)
            .connect_lazy(),
    );
    let status = client
        .ping(PingRequest {
            error_code: Code::NotFound as i32,
            error_message: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message().len(), huge.len());
    for victim in victims {
        let reply = bounded("a victim", victim).await.unwrap().unwrap();
        assert!(reply.get_ref().value.starts_with("victim"));
    }
}
