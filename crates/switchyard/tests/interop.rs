//! An independent gRPC implementation (Python grpcio, gRPC C-core) calls
//! through the daemon's Unix socket with its default channel options — which
//! send the %-encoded socket path as `:authority` — and over TCP: unary,
//! server streaming, bidi and errors one-to-one, then fan-out unary,
//! streaming and bidi across two machines, each entry tagged with its
//! machine.
//!
//! Skipped (with a message) without grpcio, except under CI.

mod common;

use common::*;
use switchyard::config::{Listen, MethodName};
use switchyard::daemon::Daemon;
use switchyard_director::{Machine, Registry};
use switchyard_engine::Address;
use switchyard_testkit::{TestServer, interop};

const STREAMED: [&str; 2] = [
    "/switchyard.test.v1.MultiService/PingList",
    "/switchyard.test.v1.MultiService/PingStream",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_through_the_unix_socket_with_default_options_and_over_tcp() {
    let Some(python) = interop::python() else {
        return;
    };
    let tmp = socket_dir("interop");
    let dir = tmp.path();
    let names = ["alpha", "beta"];
    let mut listeners = Vec::new();
    for _ in names {
        listeners.push(loopback_listener().await);
    }
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let registry = Registry::new(
        names
            .iter()
            .zip(&addrs)
            .enumerate()
            .map(|(i, (name, addr))| Machine {
                id: format!("m{}", i + 1),
                name: (*name).to_owned(),
                addr: addr.to_string().parse().unwrap(),
            })
            .collect(),
    )
    .unwrap();
    let unix = dir.join("switchyard.sock");
    let mut servers = Vec::new();
    let mut daemons = Vec::new();
    for (i, (name, listener)) in names.iter().zip(listeners).enumerate() {
        let socket = dir.join(format!("{name}.sock"));
        servers.push(TestServer::spawn_unix(name, &socket).await);
        let mut settings = node_settings(addrs[i], socket, Some(registry.clone()));
        settings.start.streamed_methods = STREAMED
            .iter()
            .map(|m| MethodName((*m).to_owned()))
            .collect();
        let mut bound = vec![listener.into()];
        if i == 0 {
            let address = Address::Unix(unix.clone());
            bound.push(switchyard::listen::bind(&address, 0o660, None).unwrap());
            settings
                .start
                .listen
                .get_or_insert_with(Vec::new)
                .push(Listen(address));
        }
        daemons.push(Daemon::with_listeners(&settings, bound));
    }

    let target = format!("unix:{}", unix.display());
    let stdout =
        interop::run_client(&python, &["--target", &target, "--fan-out", "alpha,beta"]).await;
    for check in [
        "ok   Ping",
        "ok   PingList",
        "ok   PingStream",
        "ok   PingError",
        "ok   FanOutPing",
        "ok   FanOutPingList",
        "ok   FanOutPingStream",
        "ok   Envelope",
    ] {
        assert!(stdout.contains(check), "no {check:?} in:\n{stdout}");
    }
    let tcp = addrs[0].to_string();
    interop::run_client(&python, &["--target", &tcp, "--fan-out", "beta,alpha"]).await;
    // Both machines' servers answered: the calls went through Switchyard.
    for server in &servers {
        assert!(server.probe().calls() >= 3, "{}", server.name());
    }
    for daemon in daemons {
        bounded("shutdown", daemon.shutdown()).await.unwrap();
    }
}
