//! The memory budget of fan-out calls, measured on the process: in its own
//! test binary, so no other test's memory is counted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchyard_engine::budget::MemoryBudget;
use switchyard_engine::{Backend, ProxyConfig, ServerConfig};
use switchyard_testkit::client::{multi_client, tcp_channel, unix_channel};
use switchyard_testkit::pb::PingRequest;
use switchyard_testkit::wait::{bounded, bounded_for};
use switchyard_testkit::{TestBackend, TestServer};
use tonic::Code;

/// The process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// A caller that opens streamed fan-outs and reads none of them holds, per
/// call, an upstream stream window per machine: past its share of the
/// memory budget its next call is refused, so memory stays within the
/// budget, while another caller (on the Unix socket) still fans out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_read_nothing_hold_only_their_share_of_memory() {
    let mut servers = Vec::new();
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    for name in ["a", "b", "c", "d"] {
        let (addr, server) = TestServer::spawn_tcp(name).await;
        servers.push(server);
        backends.push(Arc::new(TestBackend::tcp(name, addr)));
    }
    const MIB: usize = 1 << 20;
    let config = ProxyConfig {
        memory: Some(MemoryBudget::new(48 * MIB, 16 * MIB)),
        ..ProxyConfig::default()
    };
    let proxy = spawn_proxy(ByName(backends.clone()), config.clone()).await;
    let (_dir, socket) = spawn_unix_proxy(ByName(backends), config, ServerConfig::default());

    let flood = || PingRequest {
        value: "flood".into(),
        count: 10_000,
        payload: vec![7; 64 * 1024],
        ..Default::default()
    };
    let before = rss();
    let channel = tcp_channel(proxy.addr);
    let mut unread = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..40 {
        match multi_client(channel.clone()).ping_list(flood()).await {
            Ok(stream) => unread.push(stream),
            Err(status) => refused.push(status),
        }
    }
    // Let every open call's replies fill what they may.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = rss().saturating_sub(before);
    // Four machines, 1 MiB each: four calls fit the caller's 16 MiB share.
    assert_eq!(unread.len(), 4, "{refused:?}");
    assert!(
        refused.iter().all(|s| s.code() == Code::ResourceExhausted),
        "{refused:?}"
    );
    assert!(refused[0].message().contains("share"), "{:?}", refused[0]);
    assert!(grown < 40 * MIB, "memory grew by {} MiB", grown / MIB);

    let mut local = multi_client(unix_channel(&socket));
    let mut stream = bounded(
        "the Unix caller's fan-out",
        local.ping_list(PingRequest {
            value: "local".into(),
            count: 2,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let mut replies = 0;
    while let Some(reply) = bounded("a reply", stream.message()).await.unwrap() {
        assert_eq!(reply.value, "local");
        replies += 1;
    }
    assert_eq!(replies, 8);
    // Reading or ending its calls gives the caller its share back.
    drop(unread);
    let reopened = bounded_for(
        Duration::from_secs(5),
        "a call after the others ended",
        async {
            loop {
                if let Ok(stream) = multi_client(channel.clone()).ping_list(flood()).await {
                    return stream;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    drop(reopened);
}
