//! Switchyard is no open relay and no easy target: callers cannot make it
//! dial hosts or ports of their choosing, probe ports, grow its caches, fill
//! its logs or its file table, registry entries cannot point it at loopback
//! or IPv4 space, and the demo never deletes what it did not create.

mod common;

use std::time::Duration;

use common::*;
use switchyard::daemon::Daemon;
use tokio::time::Instant;
use tonic::Code;

/// A daemon without a registry, on `[::1]`.
async fn relay_candidate() -> (
    Daemon,
    std::net::SocketAddr,
    tempfile::TempDir,
    machine_info::Server,
) {
    let tmp = socket_dir("relay");
    let socket = tmp.path().join("api.sock");
    let service = machine_info::Server::spawn_unix("alpha", &socket).unwrap();
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    let daemon = Daemon::with_listeners(&node_settings(addr, socket, None), vec![listener.into()]);
    (daemon, addr, tmp, service)
}

#[tokio::test]
async fn callers_cannot_choose_hosts_or_ports() {
    let (daemon, addr, _tmp, _service) = relay_candidate().await;
    let mut client = tcp_client(addr);
    // A port of the caller's choosing is never dialled.
    let bait = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
    let port = bait.local_addr().unwrap().port();
    for value in [format!("[::1]:{port}"), format!("[fd00::9]:{port}")] {
        let status = call_describe(&mut client, &[("machines", &value)])
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, &["has a port"]);
    }
    // Nor this host, its link, or IPv4 space.
    for (value, kind) in [
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("fe80::1", "link-local"),
        ("64:ff9b::7f00:1", "NAT64"),
        ("2002:7f00:1::1", "6to4"),
        ("::", "not a machine address"),
    ] {
        let status = call_describe(&mut client, &[("machines", value)])
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, &[kind]);
    }
    let accepted = tokio::time::timeout(Duration::from_millis(300), bait.accept()).await;
    assert!(accepted.is_err(), "the proxy dialled a caller-chosen port");

    // A huge `machines` header comes back as a short error.
    let huge: Vec<String> = (0..1000)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    let status = call_describe(&mut client, &[("machines", &huge[..100].join(","))])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().len() <= 1024,
        "{} bytes",
        status.message().len()
    );
    assert!(
        status.message().contains("and 95 more"),
        "{}",
        status.message()
    );
    let many: Vec<String> = (1..=300).map(|i| format!("fd00::{i:x}")).collect();
    let status = call_describe(&mut client, &[("machines", &many.join(","))])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["at most 256"]);
    bounded("shutdown", daemon.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_cannot_exhaust_a_daemon_with_few_files() {
    // This test holds 1,100 sockets itself.
    rlimit::increase_nofile_limit(8192).unwrap();
    let tmp = socket_dir("idle");
    let dir = tmp.path();
    let local = dir.join("api.sock");
    let _service = machine_info::Server::spawn_unix("alpha", &local).unwrap();
    let port = loopback_listener().await.local_addr().unwrap().port();
    let unix = dir.join("sy.sock");
    let tcp = format!("[::1]:{port}");
    let mut daemon = Process::spawn_with_file_limit(
        256,
        &[
            "serve",
            "--listen",
            &tcp,
            "--listen",
            &format!("unix:{}", unix.display()),
            "--local-socket",
            local.to_str().unwrap(),
            "--handshake-timeout-secs",
            "3",
        ],
    );
    daemon.wait_listening(&unix).await;
    let mut idle = Vec::new();
    for _ in 0..1100 {
        match tokio::net::TcpStream::connect(&tcp).await {
            Ok(socket) => idle.push(socket),
            Err(err) => panic!("connect failed after {} sockets: {err}", idle.len()),
        }
    }
    // While the sockets are held, legitimate callers get in, on TCP and on
    // the Unix socket.
    let started = Instant::now();
    let reply = call_describe(&mut tcp_client(tcp.parse().unwrap()), &[])
        .await
        .unwrap();
    assert_untagged(&reply.messages[0], "alpha");
    call_describe(&mut unix_client(&unix), &[]).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(daemon.exited().is_none(), "{}", daemon.stderr());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stderr = daemon.stderr();
    let accept_failures = stderr.matches("accept failed").count();
    assert!(
        accept_failures <= 3,
        "{accept_failures} accept failures logged:\n{stderr}"
    );
    drop(idle);
    daemon.signal("TERM");
    let (status, stderr) = daemon.wait_exit(WAIT).await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn file_registry_entries_in_loopback_or_ipv4_space_are_skipped_and_never_dialled() {
    let tmp = socket_dir("file-v4");
    let socket = tmp.path().join("api.sock");
    let _service = machine_info::Server::spawn_unix("alpha", &socket).unwrap();
    // The victim: a service on IPv4 loopback that an entry points at.
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = bait.local_addr().unwrap().port();
    let machine = |id: &str, addr: String| switchyard_director::Machine {
        id: id.into(),
        name: format!("{id}-name"),
        addr: addr.parse().unwrap(),
    };
    let registry = switchyard_director::Registry::new(vec![
        machine("mapped", format!("[::ffff:127.0.0.1]:{port}")),
        machine("nat64", "64:ff9b::7f00:1".into()),
        machine("sixtofour", "2002:7f00:1::1".into()),
        machine("loop", format!("[::1]:{port}")),
    ])
    .unwrap();
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    let mut settings = node_settings(addr, socket, Some(registry));
    settings.live.allowed_networks = None; // the default rule: mesh addresses only
    let daemon = Daemon::with_listeners(&settings, vec![listener.into()]);
    assert!(daemon.director().registry().unwrap().machines().is_empty());
    let mut client = tcp_client(addr);
    for id in ["mapped", "nat64", "sixtofour", "loop"] {
        let status = call_describe(&mut client, &[("machines", id)])
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, &["unknown"]);
    }
    let accepted = tokio::time::timeout(Duration::from_millis(300), bait.accept()).await;
    assert!(accepted.is_err(), "an entry in IPv4 space was dialled");
    // allowed_networks admit loopback on reload; IPv4 space stays out.
    settings.live.allowed_networks = Some(vec!["::1/128".parse().unwrap()]);
    daemon.reload(&settings);
    let ids: Vec<String> = daemon
        .director()
        .registry()
        .unwrap()
        .machines()
        .iter()
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(ids, ["loop"]);
    bounded("shutdown", daemon.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_dead_machine_is_neither_redialled_nor_logged_forever() {
    let tmp = socket_dir("dead");
    let dir = tmp.path();
    let local = dir.join("api.sock");
    let _service = machine_info::Server::spawn_unix("alpha", &local).unwrap();
    let unix = dir.join("sy.sock");
    let dead = loopback_listener().await.local_addr().unwrap();
    let config = dir.join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"unix:{}\"]\nlocal_socket = \"{}\"\nallowed_networks = [\"::1/128\"]\n\
             [[machines]]\nid = \"m2\"\nname = \"beta\"\naddr = \"{dead}\"\n",
            unix.display(),
            local.display()
        ),
    )
    .unwrap();
    let mut daemon = Process::spawn(&["serve", "--config", config.to_str().unwrap()]);
    daemon.wait_listening(&unix).await;
    let mut client = unix_client(&unix);
    for _ in 0..5 {
        let status = call_describe(&mut client, &[("machines", "beta")])
            .await
            .unwrap_err();
        // One message whatever the cause.
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            format!("machine beta ({dead}) unreachable")
        );
    }
    // Nobody calls beta any more: no redial, no log line.
    let revived = tokio::net::TcpListener::bind(dead).await.unwrap();
    let redialled = tokio::time::timeout(Duration::from_secs(2), revived.accept()).await;
    assert!(redialled.is_err(), "a machine nobody calls was redialled");
    let stderr = daemon.stderr();
    assert_eq!(stderr.matches("target down").count(), 1, "{stderr}");
    daemon.signal("TERM");
    daemon.wait_exit(WAIT).await;
}

#[tokio::test]
async fn the_demo_never_deletes_what_it_did_not_create() {
    let tmp = socket_dir("demo");
    let precious = tmp.path().join("precious.txt");
    std::fs::write(&precious, b"keep me").unwrap();
    let (status, stderr) = run_to_exit(&["demo", "--dir", tmp.path().to_str().unwrap()]).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["precious.txt"], "the demo left files behind");
}
