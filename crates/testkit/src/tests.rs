//! The test servers and backend, exercised directly (no proxy).

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use switchyard_engine::{Backend, ReplyShape};
use tokio_stream::StreamExt;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Status};

use crate::client::{multi_client, tcp_channel, test_client, unix_channel};
use crate::pb::{
    Empty, MetadataOnlyResponse, MultiPingReply, MultiPingResponse, PingRequest, PingResponse,
};
use crate::server::{DEFAULT_ERROR_MESSAGE, TRAILER};
use crate::{TestBackend, TestServer, blackhole};

const WAIT: Duration = Duration::from_secs(5);

fn ping(value: &str) -> PingRequest {
    PingRequest {
        value: value.into(),
        ..PingRequest::default()
    }
}

fn text(map: &tonic::metadata::MetadataMap, key: &str) -> Option<String> {
    map.get(key)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn unary_ping_echoes_value_metadata_and_trailer() {
    let (addr, server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));

    let mut request = Request::new(PingRequest {
        payload: b"\x00\x01".to_vec(),
        ..ping("hello")
    });
    request
        .metadata_mut()
        .insert("x-test-one", "1".parse().unwrap());
    request
        .metadata_mut()
        .append("x-test-many", "a".parse().unwrap());
    request
        .metadata_mut()
        .append("x-test-many", "b".parse().unwrap());
    request
        .metadata_mut()
        .insert("x-other", "no".parse().unwrap());
    let response = client.ping(request).await.unwrap();

    let reply = response.get_ref();
    assert_eq!(reply.value, "hello");
    assert_eq!(reply.counter, 1);
    assert_eq!(reply.payload, b"\x00\x01");
    assert_eq!(reply.server, "alpha");
    let md = response.metadata();
    assert_eq!(text(md, "x-test-one").as_deref(), Some("1"));
    let many: Vec<_> = md.get_all("x-test-many").iter().collect();
    assert_eq!(many, ["a", "b"]);
    assert!(md.get("x-other").is_none());
    // tonic merges a unary response's trailers into its metadata.
    assert_eq!(text(md, TRAILER).as_deref(), Some("alpha"));

    let probe = server.probe();
    assert_eq!(probe.calls(), 1);
    let call = probe.last_call().unwrap();
    assert_eq!(call.method, "/switchyard.test.v1.TestService/Ping");
    assert_eq!(probe.last_header("x-other").as_deref(), Some("no"));
    assert_eq!(probe.cancelled(), 0);

    let empty = client.ping_empty(Empty {}).await.unwrap().into_inner();
    assert_eq!(
        empty,
        PingResponse {
            server: "alpha".into(),
            ..PingResponse::default()
        }
    );
    assert_eq!(probe.calls(), 2);
}

#[tokio::test]
async fn errors_carry_code_message_and_echo() {
    let (addr, _server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));

    let mut request = Request::new(PingRequest {
        error_code: Code::NotFound as i32,
        error_message: "no such ping".into(),
        ..ping("x")
    });
    request
        .metadata_mut()
        .insert("x-test-id", "7".parse().unwrap());
    let status = client.ping(request).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such ping");
    assert_eq!(text(status.metadata(), "x-test-id").as_deref(), Some("7"));
    assert!(status.metadata().get(TRAILER).is_none());

    let status = client.ping_error(ping("x")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), DEFAULT_ERROR_MESSAGE);
    let status = client
        .ping_error(PingRequest {
            error_message: "custom".into(),
            ..ping("x")
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "custom");
}

#[tokio::test]
async fn ping_list_sends_count_replies_and_a_trailer() {
    let (addr, _server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));

    let mut request = Request::new(PingRequest {
        count: 5,
        payload: b"p".to_vec(),
        ..ping("list")
    });
    request
        .metadata_mut()
        .insert("x-test-list", "yes".parse().unwrap());
    let response = client.ping_list(request).await.unwrap();
    assert_eq!(
        text(response.metadata(), "x-test-list").as_deref(),
        Some("yes")
    );
    let mut stream = response.into_inner();
    let mut counters = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        assert_eq!(reply.value, "list");
        assert_eq!(reply.payload, b"p");
        assert_eq!(reply.server, "alpha");
        counters.push(reply.counter);
    }
    assert_eq!(counters, [0, 1, 2, 3, 4]);
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(text(&trailers, TRAILER).as_deref(), Some("alpha"));

    // Default count.
    let replies: Vec<_> = client
        .ping_list(ping("d"))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert_eq!(replies.len(), 10);
}

#[tokio::test]
async fn ping_list_fails_after_its_replies() {
    let (addr, _server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));
    let mut stream = client
        .ping_list(PingRequest {
            count: 3,
            error_code: Code::Aborted as i32,
            error_message: "list failed".into(),
            ..ping("e")
        })
        .await
        .unwrap()
        .into_inner();
    for want in 0..3 {
        assert_eq!(stream.message().await.unwrap().unwrap().counter, want);
    }
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "list failed");
}

#[tokio::test]
async fn ping_stream_replies_to_each_message_at_once() {
    let (addr, server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = client
        .ping_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        let value = format!("ping-{i}");
        tx.send(ping(&value)).await.unwrap();
        // Full duplex: the reply comes before the next request is sent.
        let reply = tokio::time::timeout(WAIT, replies.message())
            .await
            .expect("reply in time")
            .unwrap()
            .unwrap();
        assert_eq!(reply.value, value);
        assert_eq!(reply.counter, i);
        assert_eq!(reply.server, "alpha");
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
    let trailers = replies.trailers().await.unwrap().unwrap();
    assert_eq!(text(&trailers, TRAILER).as_deref(), Some("alpha"));
    assert_eq!(server.probe().cancelled(), 0);

    // An error_code in a message ends the call with that status.
    let requests = tokio_stream::iter(vec![
        ping("a"),
        PingRequest {
            error_code: Code::OutOfRange as i32,
            error_message: "stop".into(),
            ..ping("b")
        },
        ping("c"),
    ]);
    let mut replies = client.ping_stream(requests).await.unwrap().into_inner();
    assert_eq!(replies.message().await.unwrap().unwrap().value, "a");
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(status.message(), "stop");
}

#[tokio::test]
async fn dropping_a_stream_is_seen_as_cancellation() {
    let (addr, server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));
    let mut stream = client
        .ping_list(PingRequest {
            count: 1000,
            delay_ms: 10,
            ..ping("slow")
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    stream.message().await.unwrap().unwrap();
    assert_eq!(server.probe().cancelled(), 0);
    drop(stream);
    assert!(server.probe().wait_cancelled(WAIT).await);
    assert_eq!(server.probe().cancelled(), 1);

    // A unary call whose deadline passes while the handler sleeps.
    let mut request = Request::new(PingRequest {
        delay_ms: 10_000,
        ..ping("late")
    });
    request.set_timeout(Duration::from_millis(100));
    let status = client.ping(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled, "{status:?}");
    assert!(server.probe().wait_cancelled_at_least(2, WAIT).await);
    assert!(server.probe().last_header("grpc-timeout").is_some());
}

#[tokio::test]
async fn gzip_round_trip() {
    let (addr, server) = TestServer::spawn_tcp("alpha").await;
    let payload = vec![b'z'; 1024 * 1024];
    let request = PingRequest {
        payload: payload.clone(),
        ..ping("zip")
    };

    let mut plain = test_client(tcp_channel(addr));
    let response = plain.ping(request.clone()).await.unwrap();
    assert!(response.metadata().get("grpc-encoding").is_none());
    assert_eq!(response.get_ref().payload, payload);

    let mut gzip = test_client(tcp_channel(addr))
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let response = gzip.ping(request).await.unwrap();
    assert_eq!(
        text(response.metadata(), "grpc-encoding").as_deref(),
        Some("gzip")
    );
    assert_eq!(response.get_ref().payload, payload);
    assert_eq!(
        server.probe().last_header("grpc-encoding").as_deref(),
        Some("gzip")
    );
}

#[tokio::test]
async fn large_messages_up_to_64_mib() {
    let (addr, _server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));
    let payload = vec![7u8; 8 * 1024 * 1024];
    let reply = client
        .ping(PingRequest {
            payload: payload.clone(),
            ..ping("big")
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().payload.len(), payload.len());
}

#[tokio::test]
async fn serves_on_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("switchyard-testkit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("unix.sock");
    let server = TestServer::spawn_unix("uds", &path).await;
    assert_eq!(server.path(), Some(path.as_path()));
    let mut client = test_client(unix_channel(&path));
    let reply = client.ping(ping("over unix")).await.unwrap().into_inner();
    assert_eq!(reply.value, "over unix");
    assert_eq!(reply.server, "uds");
    let replies: Vec<_> = client
        .ping_list(PingRequest {
            count: 3,
            ..ping("l")
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert_eq!(replies.len(), 3);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn multi_service_replies_without_metadata() {
    let (addr, _server) = TestServer::spawn_tcp("beta").await;
    let mut client = multi_client(tcp_channel(addr));
    let reply = client.ping(ping("m")).await.unwrap().into_inner();
    assert_eq!(
        reply.messages,
        [MultiPingReply {
            metadata: None,
            value: "m".into(),
            counter: 1,
            server: "beta".into(),
            payload: Vec::new(),
        }]
    );
    let status = client.ping_error(ping("m")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let replies: Vec<_> = client
        .ping_list(PingRequest {
            count: 2,
            ..ping("l")
        })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert_eq!(replies.len(), 2);
    assert!(
        replies
            .iter()
            .all(|r| r.metadata.is_none() && r.server == "beta")
    );
    let replies: Vec<_> = client
        .ping_stream(tokio_stream::iter(vec![ping("1"), ping("2")]))
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    let values: Vec<_> = replies
        .iter()
        .map(|r| (r.value.as_str(), r.counter))
        .collect();
    assert_eq!(values, [("1", 0), ("2", 1)]);
}

#[tokio::test]
async fn killing_cuts_running_calls_and_shutdown_is_graceful() {
    let (addr, server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));
    let mut stream = client
        .ping_list(PingRequest {
            count: 1000,
            delay_ms: 10,
            ..ping("k")
        })
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let probe = server.probe().clone();
    tokio::time::timeout(WAIT, server.kill())
        .await
        .expect("kill is quick");
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert!(end.is_err(), "{end:?}");
    assert!(probe.wait_cancelled(WAIT).await);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let (addr, server) = TestServer::spawn_tcp("alpha").await;
    let mut client = test_client(tcp_channel(addr));
    client.ping(ping("x")).await.unwrap();
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("an idle connection does not hold up shutdown");
    assert!(client.ping(ping("x")).await.is_err());
}

#[tokio::test]
async fn restarts_on_the_same_address() {
    let (addr, server) = TestServer::spawn_tcp("one").await;
    server.kill().await;
    let (again, server) = TestServer::spawn_tcp_on("two", addr, crate::Probe::new())
        .await
        .unwrap();
    assert_eq!(again, addr);
    let reply = test_client(tcp_channel(addr))
        .ping(ping("x"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.server, "two");
    assert_eq!(server.probe().calls(), 1);
}

#[tokio::test]
async fn blackhole_accepts_and_never_answers() {
    let (addr, hole) = blackhole().await;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
    )
    .await;
    assert!(read.is_err(), "the black hole must stay silent");
    assert_eq!(hole.accepted(), 1);

    let mut client = test_client(
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_millis(200))
            .timeout(Duration::from_millis(200))
            .connect_lazy(),
    );
    assert!(client.ping(ping("x")).await.is_err());
}

fn backend_reply(backend: &TestBackend, shape: ReplyShape, message: &impl Message) -> Bytes {
    backend
        .tag_reply(shape, message.encode_to_vec().into())
        .unwrap()
}

#[test]
fn backend_tags_replies_and_builds_error_entries() {
    let backend = TestBackend::tcp("machine-1", "127.0.0.1:1".parse().unwrap());
    assert_eq!(backend.to_string(), "machine-1");

    // Unary: every entry gets the metadata.
    let unary = MultiPingResponse {
        messages: vec![
            MultiPingReply {
                value: "a".into(),
                counter: 1,
                ..MultiPingReply::default()
            },
            MultiPingReply {
                value: "b".into(),
                ..MultiPingReply::default()
            },
        ],
    };
    let tagged =
        MultiPingResponse::decode(backend_reply(&backend, ReplyShape::Unary, &unary)).unwrap();
    assert_eq!(tagged.messages.len(), 2);
    for (entry, original) in tagged.messages.iter().zip(&unary.messages) {
        assert_eq!(entry.metadata.as_ref().unwrap().machine_addr, "machine-1");
        assert_eq!(entry.value, original.value);
        assert_eq!(entry.counter, original.counter);
    }

    // Streamed.
    let streamed = MultiPingReply {
        value: "s".into(),
        server: "srv".into(),
        ..MultiPingReply::default()
    };
    let tagged =
        MultiPingReply::decode(backend_reply(&backend, ReplyShape::Streamed, &streamed)).unwrap();
    assert_eq!(tagged.metadata, Some(backend.metadata()));
    assert_eq!(tagged.value, "s");
    assert_eq!(tagged.server, "srv");

    // A unary reply that is not of the contract's shape.
    let bad = PingResponse {
        value: "x".into(),
        counter: 3,
        ..PingResponse::default()
    };
    assert!(
        backend
            .tag_reply(ReplyShape::Unary, bad.encode_to_vec().into())
            .is_err()
    );

    // Error entries.
    let status = Status::unavailable("machine is down");
    let unary = backend.error_entry(ReplyShape::Unary, &status).unwrap();
    let decoded = MultiPingResponse::decode(unary.clone()).unwrap();
    assert_eq!(decoded.messages.len(), 1);
    let metadata = decoded.messages[0].metadata.as_ref().unwrap();
    assert_eq!(metadata.machine_addr, "machine-1");
    assert_eq!(metadata.error, "machine is down");
    let rpc = metadata.status.as_ref().unwrap();
    assert_eq!(rpc.code, Code::Unavailable as i32);
    assert_eq!(rpc.message, "machine is down");
    assert_eq!(
        MetadataOnlyResponse::decode(unary).unwrap().messages[0].metadata,
        Some(metadata.clone())
    );

    let streamed = backend.error_entry(ReplyShape::Streamed, &status).unwrap();
    let decoded = MultiPingReply::decode(streamed).unwrap();
    assert_eq!(decoded.metadata.as_ref(), Some(metadata));
    assert!(decoded.value.is_empty());

    let strict = backend.clone().without_error_entries();
    assert!(strict.error_entry(ReplyShape::Unary, &status).is_none());
    assert!(strict.error_entry(ReplyShape::Streamed, &status).is_none());
}

#[tokio::test]
async fn backend_connects_and_forwards_headers() {
    let (addr, _server) = TestServer::spawn_tcp("alpha").await;
    let backend = TestBackend::tcp("machine-1", addr);
    let (parts, ()) = http::Request::builder()
        .uri("http://proxy.example/switchyard.test.v1.TestService/Ping")
        .header("host", "proxy.example")
        .header("x-test-a", "1")
        .header("authorization", "Bearer t")
        .body(())
        .unwrap()
        .into_parts();
    let upstream = backend.connect(&parts).await.unwrap();
    assert_eq!(upstream.scheme, http::uri::Scheme::HTTP);
    assert_eq!(upstream.authority.as_str(), addr.to_string());
    // The caller's, as they are (no copy): dropping `host` is the engine's job.
    assert_eq!(upstream.headers, None);

    // Nothing listens on a freshly closed port.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dead = TestBackend::tcp("machine-2", closed);
    let status = dead.connect(&parts).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().starts_with("machine-2: "), "{status:?}");
}
