//! Fan-out: N backends at once, replies tagged, merged or interleaved, and
//! failures turned into entries while the others still answer.

mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use common::*;
use prost::Message;
use switchyard_engine::{Backend, Mode, ProxyConfig, ReplyShape};
use switchyard_testkit::client::{multi_client, tcp_channel};
use switchyard_testkit::pb::multi_service_client::MultiServiceClient;
use switchyard_testkit::pb::{MultiPingReply, MultiPingResponse, PingRequest};
use switchyard_testkit::wait::bounded;
use switchyard_testkit::{TestBackend, TestServer, blackhole};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const NAMES: [&str; 5] = ["m0", "m1", "m2", "m3", "m4"];

/// Fan-out whose replies stream.
const STREAMED: Mode = Mode::OneToMany(ReplyShape::Streamed);
/// Fan-out whose replies are merged.
const MERGED: Mode = Mode::OneToMany(ReplyShape::Unary);

struct Cluster {
    servers: Vec<Option<TestServer>>,
    proxy: Proxy,
}

impl Cluster {
    fn client(&self) -> MultiServiceClient<Channel> {
        multi_client(tcp_channel(self.proxy.addr))
    }
}

/// Five test servers behind a fan-out proxy; `dead` names become backends
/// pointing at a closed port.
async fn cluster(dead: &[&str], config: ProxyConfig) -> Cluster {
    let mut servers = Vec::new();
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    for name in NAMES {
        if dead.contains(&name) {
            servers.push(None);
            backends.push(Arc::new(TestBackend::tcp(name, dead_addr().await)));
        } else {
            let (addr, server) = TestServer::spawn_tcp(&format!("server-{name}")).await;
            servers.push(Some(server));
            backends.push(Arc::new(TestBackend::tcp(name, addr)));
        }
    }
    let proxy = spawn_proxy(ByName(backends), config).await;
    Cluster { servers, proxy }
}

fn ping(value: &str) -> PingRequest {
    PingRequest {
        value: value.into(),
        ..Default::default()
    }
}

fn machine(reply: &MultiPingReply) -> &str {
    &reply
        .metadata
        .as_ref()
        .expect("every entry is tagged")
        .machine_addr
}

fn error_of(reply: &MultiPingReply) -> (&str, Option<i32>) {
    let m = reply.metadata.as_ref().unwrap();
    (&m.error, m.status.as_ref().map(|s| s.code))
}

#[tokio::test]
async fn unary_replies_of_all_backends_in_target_order() {
    let c = cluster(&[], ProxyConfig::default()).await;
    let reply = c
        .client()
        .ping(with_meta(ping("hi"), &[("x-test-trace", "t1")]))
        .await
        .unwrap();
    let entries = &reply.get_ref().messages;
    assert_eq!(entries.iter().map(machine).collect::<Vec<_>>(), NAMES);
    for (entry, name) in entries.iter().zip(NAMES) {
        assert_eq!(entry.value, "hi");
        assert_eq!(entry.server, format!("server-{name}"));
        assert_eq!(error_of(entry), ("", None));
    }
    // Merged response metadata and trailers.
    assert_eq!(reply.metadata().get("x-test-trace").unwrap(), "t1");
    assert_eq!(reply.metadata().get_all("x-test-trailer").iter().count(), 5);
    for s in c.servers.iter().flatten() {
        assert_eq!(s.probe().last_header("x-test-trace").as_deref(), Some("t1"));
        assert_eq!(
            s.probe().last_header("grpc-accept-encoding").as_deref(),
            Some("identity")
        );
    }
}

#[tokio::test]
async fn every_backend_gets_the_time_left_of_the_deadline() {
    let c = cluster(&[], ProxyConfig::default()).await;
    let mut request = tonic::Request::new(ping("t"));
    request.set_timeout(Duration::from_secs(10));
    c.client().ping(request).await.unwrap();
    for server in c.servers.iter().flatten() {
        let sent = server.probe().last_header("grpc-timeout").unwrap();
        let left = switchyard_engine::codec::timeout::parse(sent.as_bytes()).unwrap();
        // What is left, not the caller's original 10 s.
        assert!(left < Duration::from_secs(10), "{sent}");
        assert!(left > Duration::from_secs(5), "{sent}");
    }
}

#[tokio::test]
async fn a_reply_whose_field_1_is_a_string_becomes_an_error_entry() {
    // `message Status { string text = 1; }`: field 1 is length-delimited
    // like an entry, but it is text, not a message with `Metadata`.
    let text = [&b"\x0a\x13"[..], b"machine-2 status ok"].concat();
    let (good, _server) = TestServer::spawn_tcp("good").await;
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(TestBackend::tcp(
            "text",
            raw_backend(RawReply::ok(vec![framed(false, &text)])).await,
        )),
        Arc::new(TestBackend::tcp("good", good)),
    ];
    let proxy = spawn_proxy(
        StaticDirector::new(MERGED, backends),
        ProxyConfig::default(),
    )
    .await;
    let reply = bounded(
        "Ping",
        multi_client(tcp_channel(proxy.addr)).ping(ping("v")),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(reply.messages.len(), 2);
    let (error, code) = error_of(&reply.messages[0]);
    assert_eq!(code, Some(Code::Internal as i32));
    assert!(error.contains("field 1"), "{error}");
    assert_eq!(reply.messages[1].value, "v");
}

#[tokio::test]
async fn subsets_of_targets_keep_the_requested_order() {
    let c = cluster(&[], ProxyConfig::default()).await;
    for targets in ["m3,m1", "m4", "m2,m0,m4,m1"] {
        let reply = c
            .client()
            .ping(with_meta(ping("s"), &[("x-targets", targets)]))
            .await
            .unwrap();
        let got: Vec<_> = reply.get_ref().messages.iter().map(machine).collect();
        assert_eq!(got, targets.split(',').collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn a_backend_that_cannot_connect_becomes_an_error_entry() {
    let c = cluster(&["m2"], ProxyConfig::default()).await;
    let started = Instant::now();
    let reply = c.client().ping(ping("x")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let entries = &reply.get_ref().messages;
    assert_eq!(entries.iter().map(machine).collect::<Vec<_>>(), NAMES);
    for entry in entries {
        if machine(entry) == "m2" {
            let (error, code) = error_of(entry);
            assert_eq!(code, Some(Code::Unavailable as i32));
            assert!(error.contains("m2"), "{error}");
            assert_eq!(entry.value, "");
        } else {
            assert_eq!((entry.value.as_str(), error_of(entry)), ("x", ("", None)));
        }
    }
}

#[tokio::test]
async fn all_backends_failing_give_one_entry_each_and_ok() {
    let c = cluster(&[], ProxyConfig::default()).await;
    let reply = c
        .client()
        .ping_error(with_meta(
            PingRequest {
                error_message: "broken".into(),
                ..ping("")
            },
            &[("x-test-k", "v")],
        ))
        .await
        .unwrap();
    let entries = &reply.get_ref().messages;
    assert_eq!(entries.iter().map(machine).collect::<Vec<_>>(), NAMES);
    for entry in entries {
        assert_eq!(
            error_of(entry),
            ("broken", Some(Code::FailedPrecondition as i32))
        );
    }
    // Headers of Trailers-Only errors are merged, not lost.
    assert_eq!(reply.metadata().get("x-test-k").unwrap(), "v");
}

#[tokio::test]
async fn a_failure_without_error_entry_fails_the_call() {
    let (addr, _server) = TestServer::spawn_tcp("ok").await;
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(TestBackend::tcp("ok", addr)),
        Arc::new(TestBackend::tcp("strict", dead_addr().await).without_error_entries()),
    ];
    let proxy = spawn_proxy(
        StaticDirector::new(MERGED, backends),
        ProxyConfig::default(),
    )
    .await;
    let status = multi_client(tcp_channel(proxy.addr))
        .ping(ping("x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("strict"), "{}", status.message());
}

#[tokio::test]
async fn replies_not_shaped_for_fan_out_become_error_entries() {
    // TestService.Ping replies `PingResponse { value = 1 (string), counter = 2 }`:
    // field 2 is not an entry of `repeated SomeReply messages = 1`.
    let c = cluster(&[], ProxyConfig::default()).await;
    // The merged reply is made of error entries: decode it as the fan-out shape.
    let mut grpc = tonic::client::Grpc::new(tcp_channel(c.proxy.addr));
    grpc.ready().await.unwrap();
    let reply: tonic::Response<MultiPingResponse> = grpc
        .unary(
            tonic::Request::new(ping("v")),
            "/switchyard.test.v1.TestService/Ping".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap();
    let entries = &reply.get_ref().messages;
    assert_eq!(entries.len(), 5);
    for entry in entries {
        let (error, code) = error_of(entry);
        assert_eq!(code, Some(Code::Internal as i32));
        assert!(error.contains("fan-out shape"), "{error}");
    }
}

#[tokio::test]
async fn streaming_full_duplex_one_reply_per_backend_per_send() {
    let c = cluster(&[], ProxyConfig::default()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = c
        .client()
        .ping_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for round in 0..10i64 {
        tx.send(ping(&format!("r{round}"))).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..NAMES.len() {
            let reply = tokio::time::timeout(SHORT, replies.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(reply.value, format!("r{round}"));
            assert_eq!(reply.counter, round, "order within one backend is kept");
            seen.push(machine(&reply).to_owned());
        }
        seen.sort();
        assert_eq!(seen, NAMES);
    }
    drop(tx);
    assert!(
        replies.next().await.is_none(),
        "call ends OK once all backends are done"
    );
}

#[tokio::test]
async fn streaming_backend_dying_mid_stream_becomes_one_error_message() {
    let mut c = cluster(&[], ProxyConfig::default()).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut replies = c
        .client()
        .ping_stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(ping("before")).await.unwrap();
    for _ in 0..5 {
        replies.next().await.unwrap().unwrap();
    }
    c.servers[2].take().unwrap().kill().await;
    let mut errors = Vec::new();
    let mut answers = Vec::new();
    // m2's failure may surface before or after the next round.
    tx.send(ping("after")).await.unwrap();
    while answers.len() < 4 || errors.is_empty() {
        let reply = tokio::time::timeout(SHORT, replies.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if error_of(&reply).1.is_some() {
            errors.push(machine(&reply).to_owned());
        } else {
            assert_eq!(reply.value, "after");
            answers.push(machine(&reply).to_owned());
        }
    }
    assert_eq!(errors, ["m2"]);
    answers.sort();
    assert_eq!(answers, ["m0", "m1", "m3", "m4"]);
    drop(tx);
    assert!(
        tokio::time::timeout(SHORT, replies.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn server_streaming_interleaves_and_ends_ok() {
    let c = cluster(&["m4"], ProxyConfig::default()).await;
    let mut stream = c
        .client()
        .ping_list(PingRequest {
            count: 3,
            ..ping("l")
        })
        .await
        .unwrap()
        .into_inner();
    let mut per_machine = std::collections::BTreeMap::<String, Vec<i64>>::new();
    let mut errors = 0;
    while let Some(reply) = stream.message().await.unwrap() {
        if error_of(&reply).1.is_some() {
            errors += 1;
            assert_eq!(machine(&reply), "m4");
        } else {
            per_machine
                .entry(machine(&reply).to_owned())
                .or_default()
                .push(reply.counter);
        }
    }
    assert_eq!(errors, 1);
    assert_eq!(per_machine.len(), 4);
    assert!(per_machine.values().all(|c| c == &[0, 1, 2]));
}

#[tokio::test]
async fn a_blackholed_backend_does_not_delay_the_others() {
    let (hole, _hole) = blackhole().await;
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        let (addr, server) = TestServer::spawn_tcp(name).await;
        servers.push(server);
        backends.push(Arc::new(TestBackend::tcp(name, addr)));
    }
    backends.insert(1, Arc::new(TestBackend::tcp("hole", hole)));
    let proxy = spawn_proxy(
        StaticDirector::new(STREAMED, backends),
        ProxyConfig::default(),
    )
    .await;
    let started = Instant::now();
    let req = with_meta(
        PingRequest {
            count: 3,
            ..ping("l")
        },
        &[("grpc-timeout", "2S")],
    );
    let mut stream = multi_client(tcp_channel(proxy.addr))
        .ping_list(req)
        .await
        .unwrap()
        .into_inner();
    for _ in 0..9 {
        let reply = stream.message().await.unwrap().unwrap();
        assert_ne!(machine(&reply), "hole");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "others were delayed: {:?}",
        started.elapsed()
    );
    // The stuck backend ends the call only at the deadline.
    let end = stream.message().await;
    assert!(started.elapsed() >= Duration::from_millis(1500));
    match end {
        Ok(Some(reply)) => assert_eq!(error_of(&reply).1, Some(Code::DeadlineExceeded as i32)),
        Ok(None) => panic!("stream ended OK although a backend never answered"),
        Err(status) => assert_eq!(status.code(), Code::DeadlineExceeded),
    }
}

#[tokio::test]
async fn unary_deadline_returns_partial_results() {
    let (hole, _hole) = blackhole().await;
    let (a, _sa) = TestServer::spawn_tcp("a").await;
    let (b, _sb) = TestServer::spawn_tcp("b").await;
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(TestBackend::tcp("a", a)),
        Arc::new(TestBackend::tcp("hole", hole)),
        Arc::new(TestBackend::tcp("b", b)),
    ];
    let proxy = spawn_proxy(
        StaticDirector::new(MERGED, backends),
        ProxyConfig::default(),
    )
    .await;
    let (channel, origin) = bare_channel(proxy.addr).await;
    let mut client = MultiServiceClient::with_origin(channel, origin);
    let started = Instant::now();
    let reply = client
        .ping(with_meta(ping("p"), &[("grpc-timeout", "500m")]))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(500),
        "answer must beat the deadline: {elapsed:?}"
    );
    let entries = &reply.get_ref().messages;
    assert_eq!(
        entries.iter().map(machine).collect::<Vec<_>>(),
        ["a", "hole", "b"]
    );
    assert_eq!(entries[0].value, "p");
    assert_eq!(entries[2].value, "p");
    assert_eq!(error_of(&entries[1]).1, Some(Code::DeadlineExceeded as i32));
}

#[tokio::test]
async fn compressed_and_malformed_backend_replies() {
    use std::io::Write;
    let good = MultiPingResponse {
        messages: vec![MultiPingReply {
            value: "zipped".into(),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&good).unwrap();
    let mut zipped = RawReply::ok(vec![framed(true, &gz.finish().unwrap())]);
    zipped
        .headers
        .insert("grpc-encoding", "gzip".parse().unwrap());
    let mut unknown = RawReply::ok(vec![framed(true, b"??")]);
    unknown
        .headers
        .insert("grpc-encoding", "snappy".parse().unwrap());
    let truncated = RawReply::ok(vec![bytes::Bytes::from_static(&[0, 0, 0, 0, 9, 1])]);

    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(TestBackend::tcp("zipped", raw_backend(zipped).await)),
        Arc::new(TestBackend::tcp("snappy", raw_backend(unknown).await)),
        Arc::new(TestBackend::tcp("truncated", raw_backend(truncated).await)),
    ];
    let proxy = spawn_proxy(
        StaticDirector::new(MERGED, backends),
        ProxyConfig::default(),
    )
    .await;
    let reply = multi_client(tcp_channel(proxy.addr))
        .ping(ping("x"))
        .await
        .unwrap();
    let entries = &reply.get_ref().messages;
    assert_eq!(
        entries.iter().map(machine).collect::<Vec<_>>(),
        ["zipped", "snappy", "truncated"]
    );
    assert_eq!(entries[0].value, "zipped");
    assert_eq!(error_of(&entries[0]).1, None);
    assert_eq!(error_of(&entries[1]).1, Some(Code::Internal as i32));
    assert_eq!(error_of(&entries[2]).1, Some(Code::Internal as i32));
    assert!(
        error_of(&entries[2]).0.contains("truncated"),
        "{}",
        error_of(&entries[2]).0
    );
}

#[tokio::test]
async fn five_concurrent_fan_outs_under_stress() {
    let c = cluster(&[], ProxyConfig::default()).await;
    let calls = (0..50).map(|i| {
        let mut client = c.client();
        async move {
            client
                .ping(ping(&i.to_string()))
                .await
                .map(|r| r.into_inner().messages)
        }
    });
    for (i, entries) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let entries = entries.unwrap();
        assert_eq!(entries.len(), 5);
        assert!(entries.iter().all(|e| e.value == i.to_string()));
    }
}

/// A machine whose server takes the call and never answers is bounded by
/// the route's per-backend timeout, in both shapes: the others' answers
/// arrive, the hung one becomes a `DEADLINE_EXCEEDED` entry naming it, and
/// the call (without any deadline of its own) ends in about that time.
#[tokio::test]
async fn a_hung_backend_is_cut_at_the_leg_timeout_and_the_others_answer() {
    let (addr, _server) = TestServer::spawn_tcp("fast").await;
    let hung = hung_backend().await;
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(TestBackend::tcp("fast", addr)),
        Arc::new(TestBackend::tcp("hung", hung)),
    ];
    let timeout = Duration::from_millis(300);
    let proxy = spawn_proxy(
        LegTimeout(ByName(backends), timeout),
        ProxyConfig::default(),
    )
    .await;
    let mut client = multi_client(tcp_channel(proxy.addr));
    let hung_entry = |metadata: Option<&switchyard_testkit::pb::Metadata>| {
        let status = metadata
            .and_then(|m| m.status.as_ref())
            .expect("an error entry");
        assert_eq!(status.code, Code::DeadlineExceeded as i32, "{status:?}");
        assert!(
            status.message.contains("hung") && status.message.contains("300ms"),
            "{status:?}"
        );
    };

    let started = Instant::now();
    let reply = bounded(
        "a unary fan-out",
        client.ping(PingRequest {
            value: "u".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let took = started.elapsed();
    assert!(took >= timeout && took < timeout * 4, "{took:?}");
    assert_eq!(reply.messages.len(), 2);
    assert_eq!(reply.messages[0].value, "u");
    hung_entry(reply.messages[1].metadata.as_ref());

    let started = Instant::now();
    let mut stream = bounded(
        "a streamed fan-out",
        client.ping_list(PingRequest {
            value: "s".into(),
            count: 3,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let mut values = Vec::new();
    let mut late = Vec::new();
    while let Some(reply) = bounded("a streamed reply", stream.message()).await.unwrap() {
        if reply.value == "s" {
            // The fast machine's replies come first, before the cut.
            assert!(started.elapsed() < timeout, "{:?}", started.elapsed());
            values.push(reply.counter);
        } else {
            late.push(reply);
        }
    }
    assert_eq!(values, [0, 1, 2]);
    assert_eq!(late.len(), 1);
    hung_entry(late[0].metadata.as_ref());
    assert!(started.elapsed() < timeout * 4);
}
