//! One slow caller or one hung machine never hurts the others, seen from
//! outside the daemon: a client that stops reading a streaming fan-out costs
//! the daemon memory in the order of one message per machine, and a machine
//! that accepts TCP but never speaks HTTP/2 — blackholed, or a Switchyard
//! stopped with SIGSTOP — costs one bounded wait, after which calls answer
//! at once.

mod common;

use std::time::Duration;

use common::*;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use switchyard::config::Secs;
use switchyard_testkit::TestServer;
use switchyard_testkit::pb::PingRequest;
use tokio::time::Instant;
use tonic::Code;

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// The gRPC frame of `message`.
fn frame(message: &impl Message) -> bytes::Bytes {
    let payload = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_a_fan_out_costs_about_one_message_per_machine() {
    const MESSAGE: usize = 8 * 1024 * 1024;
    let tmp = socket_dir("rss");
    let dir = tmp.path();
    // Two machines whose services stream 8 MiB replies: alpha's Switchyard is
    // the real binary (its memory is measured), beta's runs in-process.
    let alpha_service = TestServer::spawn_unix("alpha", dir.join("alpha.sock")).await;
    let beta_socket = dir.join("beta.sock");
    let _beta_service = TestServer::spawn_unix("beta", &beta_socket).await;
    let beta_listener = loopback_listener().await;
    let beta_addr = beta_listener.local_addr().unwrap();
    let beta = switchyard::daemon::Daemon::with_listeners(
        &node_settings(beta_addr, beta_socket, None),
        vec![beta_listener.into()],
    );
    let alpha_port = loopback_listener().await.local_addr().unwrap().port();
    let unix = dir.join("sy.sock");
    let config = dir.join("alpha.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"unix:{unix}\", \"[::1]:{alpha_port}\"]\n\
             local_socket = \"{local}\"\n\
             local_address = \"[::1]:{alpha_port}\"\n\
             streamed_methods = [\"/switchyard.test.v1.MultiService/PingList\"]\n\
             allowed_networks = [\"::1/128\"]\n\
             [[machines]]\nid = \"m1\"\nname = \"alpha\"\naddr = \"[::1]:{alpha_port}\"\n\
             [[machines]]\nid = \"m2\"\nname = \"beta\"\naddr = \"{beta_addr}\"\n",
            unix = unix.display(),
            local = alpha_service.path().unwrap().display(),
        ),
    )
    .unwrap();
    let mut alpha = Process::spawn(&["serve", "--config", config.to_str().unwrap()]);
    alpha.wait_listening(&unix).await;
    let idle = rss(alpha.pid());

    // Three calls, each asking both machines for 40 messages of 8 MiB, whose
    // client never reads a byte of the reply.
    let io = tokio::net::UnixStream::connect(&unix).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    let body = frame(&PingRequest {
        count: 40,
        payload: vec![3; MESSAGE - 64],
        ..Default::default()
    });
    let mut unread = Vec::new();
    for _ in 0..3 {
        let request =
            http::Request::post("http://localhost/switchyard.test.v1.MultiService/PingList")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("machines", "alpha,beta")
                .body(Full::new(body.clone()))
                .unwrap();
        let response = bounded("a fan-out starts", send.clone().send_request(request))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        unread.push(response);
    }
    // Let every buffer that can fill, fill.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss(alpha.pid()).saturating_sub(idle);
    // Two machines, three calls: a handful of messages each (the one being
    // decoded, the one being sent), not the 40 they would send.
    let bound = 3 * 2 * 4 * MESSAGE as u64;
    assert!(
        grown < bound,
        "the daemon grew by {} MiB (bound {} MiB)",
        grown >> 20,
        bound >> 20
    );
    eprintln!(
        "daemon memory grew by {} MiB for three unread fan-outs",
        grown >> 20
    );
    drop(unread);
    alpha.signal("TERM");
    alpha.wait_exit(WAIT).await;
    bounded("beta shutdown", beta.shutdown()).await.unwrap();
}

/// Every machine's entry when gamma cannot be reached: alpha and beta
/// answer, gamma is an `UNAVAILABLE` entry.
fn assert_gamma_unavailable(reply: &machine_info::pb::DescribeResponse) {
    assert_eq!(reply.messages.len(), 3, "{reply:?}");
    assert!(entry_error(reply.messages[0].metadata.as_ref()).is_none());
    assert!(entry_error(reply.messages[1].metadata.as_ref()).is_none());
    let (code, message) = entry_error(reply.messages[2].metadata.as_ref()).expect("gamma failed");
    assert_eq!(code, Code::Unavailable, "{message}");
}

const ALL: [(&str, &str); 1] = [("machines", "alpha,beta,gamma")];

/// Calls without a deadline: the first costs at most the connect bound, the
/// next ones answer at once.
async fn one_bounded_wait(cluster: &Cluster, bound: Duration) {
    let mut client = cluster.client(A);
    let started = Instant::now();
    let reply = call_describe(&mut client, &ALL).await.unwrap();
    let first = started.elapsed();
    assert_gamma_unavailable(&reply);
    assert!(
        first < bound + Duration::from_secs(2),
        "first call: {first:?}"
    );
    for attempt in 0..3 {
        let started = Instant::now();
        let reply = call_describe(&mut client, &ALL).await.unwrap();
        assert_gamma_unavailable(&reply);
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(500),
            "call {attempt}: {elapsed:?}"
        );
    }
}

const A: usize = 0;
const C: usize = 2;

async fn cluster_with_connect_bound(tag: &str, bound: Duration) -> Cluster {
    Cluster::start_with(tag, |_, settings| {
        settings.start.connect_timeout_secs = Secs(bound);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_machine_costs_one_bounded_wait() {
    let bound = Duration::from_secs(2);
    let mut cluster = cluster_with_connect_bound("hole", bound).await;
    // gamma's address accepts TCP and never speaks HTTP/2.
    let holder = cluster.blackhole_daemon(C).await;
    one_bounded_wait(&cluster, bound).await;
    drop(holder);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_switchyard_costs_one_bounded_wait() {
    let bound = Duration::from_secs(2);
    let mut cluster = cluster_with_connect_bound("sigstop", bound).await;
    // gamma's Switchyard becomes a real process, then is stopped with SIGSTOP:
    // its socket still accepts (the kernel does), nothing answers.
    cluster.stop_daemon(C).await;
    let gamma = &cluster.nodes[C];
    let config = cluster.dir().join("gamma.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"{}\"]\nlocal_socket = \"{}\"\nlocal_address = \"{}\"\n",
            gamma.addr,
            gamma.socket.display(),
            gamma.addr
        ),
    )
    .unwrap();
    let mut process = Process::spawn(&["serve", "--config", config.to_str().unwrap()]);
    process.wait_log("switchyard started").await;
    process.signal("STOP");
    one_bounded_wait(&cluster, bound).await;
    process.signal("CONT");
    process.signal("TERM");
    process.wait_exit(WAIT).await;
    cluster.shutdown().await;
}
