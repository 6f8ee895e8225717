//! The real `switchyard serve` binary: configuration errors, Unix socket
//! files, SIGHUP reload and SIGTERM graceful shutdown. The machine's own
//! `machine-info` service (and, for reload, another machine) run in the
//! test process; the daemon listens on Unix sockets in a temp dir only.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use common::*;
use rustls::pki_types::pem::PemObject;
use switchyard::daemon::Daemon;
use tonic::Code;

/// Checks that `switchyard <args>` exits non-zero, quickly, with a message
/// naming `setting`.
async fn refused<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], setting: &str) {
    let (status, stderr) = run_to_exit(args).await;
    assert!(
        !status.success(),
        "{args:?} was accepted; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(setting),
        "{args:?}: the error does not name {setting:?}:\n{stderr}"
    );
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn every_bad_setting_exits_non_zero_naming_it() {
    let tmp = socket_dir("cli-bad");
    let dir = tmp.path();
    let sock = format!("unix:{}", dir.join("sy.sock").display());
    let local = dir.join("api.sock");
    let local = local.to_str().unwrap();
    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", sock.as_str(), "--local-socket", local];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };

    // Flags.
    refused(
        &["serve", "--listen", "nowhere", "--local-socket", local],
        "listen",
    )
    .await;
    refused(&["serve", "--listen", sock.as_str()], "local_socket").await;
    for (flag, value, setting) in [
        ("--local-address", "10.0.0.1", "local_address"),
        ("--local-address", "fd00::1:99999", "local_address"),
        ("--socket-mode", "999", "socket_mode"),
        ("--socket-mode", "rw-rw----", "socket_mode"),
        ("--remote-port", "0", "remote_port"),
        ("--connect-timeout-secs", "0", "connect_timeout_secs"),
        ("--shutdown-grace-secs", "0", "shutdown_grace_secs"),
        ("--max-message-size", "0", "max_message_size"),
        ("--streamed-method", "Watch", "streamed_methods"),
        ("--worker-threads", "0", "worker_threads"),
        ("--etcd-prefix", "nope", "registry.etcd.prefix"),
        ("--etcd-endpoint", "[::1]:2379", "registry.etcd.endpoints"),
        ("--machine-id", "*", "machine_id"),
        // Rejected by the flag parser itself, which names the flag.
        ("--remote-port", "70000", "--remote-port"),
    ] {
        refused(&serve(&[flag, value]), setting).await;
    }
    refused(
        &serve(&["--etcd-endpoint", "http://[::1]:2379", "--etcd-register"]),
        "registry.etcd.register",
    )
    .await;
    // Nothing was bound by a refused configuration.
    assert!(!dir.join("sy.sock").exists());

    // Config file keys. The file names the listener and the local socket
    // itself (flags would override it), except where `listen` is the culprit.
    let config = dir.join("bad.toml");
    let config_arg = config.to_str().unwrap();
    let valid = format!("listen = [\"{sock}\"]\nlocal_socket = \"{local}\"\n");
    let only_local = format!("local_socket = \"{local}\"\n");
    for (base, text, setting) in [
        (&valid, "unknown_key = 1\n", "unknown_key"),
        (&valid, "remote_port = 0\n", "remote_port"),
        (&valid, "socket_mode = \"0999\"\n", "socket_mode"),
        (&valid, "local_address = \"10.0.0.1\"\n", "local_address"),
        (&valid, "connect_timeout_secs = 0\n", "connect_timeout_secs"),
        (
            &valid,
            "streamed_methods = [\"/no-method\"]\n",
            "streamed_methods",
        ),
        (&only_local, "listen = [\"localhost:80\"]\n", "listen"),
        (&only_local, "listen = \"unix:/x\"\n", "listen"),
        (
            &valid,
            "[[machines]]\nid = \"m1\"\nname = \"a\"\naddr = \"10.0.0.1\"\n",
            "10.0.0.1",
        ),
        (
            &valid,
            "[[machines]]\nid = \"m1\"\nname = \"a\"\naddr = \"fd00::1\"\n\
             [[machines]]\nid = \"m1\"\nname = \"b\"\naddr = \"fd00::2\"\n",
            "machines",
        ),
        (
            &valid,
            "[[machines]]\nid = \"m1\"\nname = \"a\"\naddr = \"fd00::1\"\n\
             [registry.etcd]\nendpoints = [\"http://[::1]:2379\"]\n",
            "registry.etcd",
        ),
        (
            &valid,
            "[registry.etcd]\nprefix = \"/a/\"\n",
            "registry.etcd.endpoints",
        ),
    ] {
        std::fs::write(&config, format!("{base}{text}")).unwrap();
        refused(&["serve", "--config", config_arg], setting).await;
    }
    // The same file with a valid value would have started.
    std::fs::write(&config, &valid).unwrap();
    let mut ok = Process::spawn(&["serve", "--config", config_arg]);
    ok.wait_listening(&dir.join("sy.sock")).await;
    ok.signal("TERM");
    let (status, stderr) = ok.wait_exit(WAIT).await;
    assert!(status.success(), "{stderr}");
    assert!(!dir.join("sy.sock").exists());
    // A config file that is not there.
    let missing = dir.join("missing.toml");
    refused(
        &serve(&["--config", missing.to_str().unwrap()]),
        "missing.toml",
    )
    .await;
    // A listener that cannot be bound names the listener.
    refused(
        &[
            "serve",
            "--listen",
            "unix:/nonexistent-switchyard-dir/sy.sock",
            "--local-socket",
            local,
        ],
        "unix:/nonexistent-switchyard-dir/sy.sock",
    )
    .await;
    assert!(!dir.join("sy.sock").exists());
    // Nor is a socket file left behind by a listener bound before the one
    // that failed.
    refused(
        &[
            "serve",
            "--listen",
            sock.as_str(),
            "--listen",
            "unix:/nonexistent-switchyard-dir/sy.sock",
            "--local-socket",
            local,
        ],
        "unix:/nonexistent-switchyard-dir/sy.sock",
    )
    .await;
    assert!(
        !dir.join("sy.sock").exists(),
        "the first listener's socket file was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_listener_socket_files() {
    let tmp = socket_dir("cli-sock");
    let dir = tmp.path();
    let path = dir.join("sy.sock");
    let listen = format!("unix:{}", path.display());
    let local = dir.join("api.sock");
    let _service = machine_info::Server::spawn_unix("alpha", &local).unwrap();
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve".to_owned(),
            "--listen".to_owned(),
            listen.clone(),
            "--local-socket".to_owned(),
            local.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    // Default mode 0660; the socket serves; SIGTERM removes the file.
    let mut daemon = Process::spawn(&serve(&[]));
    daemon.wait_listening(&path).await;
    assert_eq!(mode_of(&path), 0o660);
    let reply = call_describe(&mut unix_client(&path), &[]).await.unwrap();
    assert_untagged(&reply.messages[0], "alpha");
    daemon.signal("TERM");
    let (status, stderr) = daemon.wait_exit(WAIT).await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(!path.exists(), "socket file left behind");

    // --socket-mode is honoured, and a stale socket file (nobody listening)
    // is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "a stale socket file");
    let mut daemon = Process::spawn(&serve(&["--socket-mode", "0600"]));
    daemon.wait_listening(&path).await;
    assert_eq!(mode_of(&path), 0o600);
    call_describe(&mut unix_client(&path), &[]).await.unwrap();

    // A second daemon on the same path refuses to start and leaves the live
    // one alone.
    let (status, stderr) = run_to_exit(&serve(&[])).await;
    assert!(!status.success(), "second daemon started: {stderr}");
    assert!(stderr.contains("already listening"), "{stderr}");
    assert!(daemon.exited().is_none(), "first daemon died");
    call_describe(&mut unix_client(&path), &[]).await.unwrap();
    daemon.signal("TERM");
    let (status, stderr) = daemon.wait_exit(WAIT).await;
    assert!(status.success(), "{status}: {stderr}");

    // Another live process listening there (this one): refused, untouched.
    let live = tokio::net::UnixListener::bind(&path).unwrap();
    let (status, stderr) = run_to_exit(&serve(&[])).await;
    assert!(!status.success(), "started over a live socket: {stderr}");
    assert!(stderr.contains("already listening"), "{stderr}");
    let _client = bounded(
        "connect to the live socket",
        tokio::net::UnixStream::connect(&path),
    )
    .await
    .expect("the live listener still works");
    drop(live);
    std::fs::remove_file(&path).unwrap();

    // A regular file is never replaced.
    std::fs::write(&path, b"precious").unwrap();
    let (status, stderr) = run_to_exit(&serve(&[])).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_registry_without_dropping_a_stream() {
    let tmp = socket_dir("cli-hup");
    let dir = tmp.path();
    // This machine's service, and another machine (beta) in-process.
    let local = dir.join("alpha.sock");
    let _alpha = machine_info::Server::spawn_unix("alpha", &local).unwrap();
    let beta_socket = dir.join("beta.sock");
    let _beta = machine_info::Server::spawn_unix("beta", &beta_socket).unwrap();
    let listener = loopback_listener().await;
    let beta_addr = listener.local_addr().unwrap();
    let beta = Daemon::with_listeners(
        &node_settings(beta_addr, beta_socket, None),
        vec![listener.into()],
    );

    let path = dir.join("sy.sock");
    let config = dir.join("switchyard.toml");
    // allowed_networks: beta's registry entry is on loopback.
    let base = format!(
        "listen = [\"unix:{}\"]\nlocal_socket = \"{}\"\nstreamed_methods = [\"{WATCH}\"]\n\
         allowed_networks = [\"::1/128\"]\n",
        path.display(),
        local.display()
    );
    write_atomically(&config, &base);
    let mut daemon = Process::spawn(&["serve", "--config", config.to_str().unwrap()]);
    daemon.wait_listening(&path).await;
    let mut client = unix_client(&path);

    // No registry yet: a machine name is refused.
    let status = call_describe(&mut client, &[("machines", "beta")])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["\"beta\""]);

    // A stream is running…
    let count = 10;
    let mut stream = start_watch(&mut client, count, 100, &[]).await;
    let mut ticks = vec![next_tick(&mut stream).await.unwrap()];

    // …when the file gains a registry naming beta, and SIGHUP arrives.
    let with_beta =
        format!("{base}[[machines]]\nid = \"m2\"\nname = \"beta\"\naddr = \"{beta_addr}\"\n");
    write_atomically(&config, &with_beta);
    daemon.signal("HUP");
    let reply = eventually(WAIT, "beta resolves after SIGHUP", || {
        let mut client = client.clone();
        async move {
            match call_describe(&mut client, &[("machines", "beta")]).await {
                Ok(reply) => Some(reply),
                Err(status) if status.code() == Code::InvalidArgument => None,
                Err(status) => panic!("unexpected: {status:?}"),
            }
        }
    })
    .await;
    assert_untagged(&reply.messages[0], "beta");
    assert_eq!(reply.messages[0].proxy_authority, "localhost");
    let reply = call_describe(&mut client, &[("machines", "*")])
        .await
        .unwrap();
    assert_eq!(
        reply.messages[0]
            .metadata
            .as_ref()
            .map(|m| m.machine_id.as_str()),
        Some("m2")
    );

    ticks.extend(rest_of(&mut stream).await);
    let seqs: Vec<u32> = ticks.iter().map(|t| t.seq).collect();
    assert_eq!(
        seqs,
        (0..count).collect::<Vec<_>>(),
        "the stream kept running"
    );
    assert!(daemon.stderr().contains("configuration reloaded"));

    // A broken file on SIGHUP keeps the running configuration.
    write_atomically(&config, &format!("{with_beta}socket_mode = \"nope\"\n"));
    daemon.signal("HUP");
    daemon.wait_log("reload failed").await;
    assert!(
        daemon.stderr().contains("socket_mode"),
        "{}",
        daemon.stderr()
    );
    let reply = call_describe(&mut client, &[("machines", "beta")])
        .await
        .unwrap();
    assert_untagged(&reply.messages[0], "beta");

    daemon.signal("TERM");
    let (status, stderr) = daemon.wait_exit(WAIT).await;
    assert!(status.success(), "{status}: {stderr}");
    bounded("beta shutdown", beta.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_stream_finish_then_exits_zero() {
    let tmp = socket_dir("cli-term");
    let dir = tmp.path();
    let local = dir.join("api.sock");
    let _service = machine_info::Server::spawn_unix("alpha", &local).unwrap();
    let path = dir.join("sy.sock");
    let grace = Duration::from_secs(10);
    let mut daemon = Process::spawn(&[
        "serve",
        "--listen",
        &format!("unix:{}", path.display()),
        "--local-socket",
        local.to_str().unwrap(),
        "--shutdown-grace-secs",
        &grace.as_secs().to_string(),
        // The other tests run the default current-thread runtime.
        "--worker-threads",
        "2",
    ]);
    daemon.wait_listening(&path).await;
    let mut client = unix_client(&path);
    let count = 10;
    let interval = Duration::from_millis(150);
    let mut stream = start_watch(&mut client, count, interval.as_millis() as u32, &[]).await;
    let mut ticks = vec![next_tick(&mut stream).await.unwrap()];

    daemon.signal("TERM");
    let signalled = Instant::now();
    // New connections are refused while the stream still runs: nobody
    // accepts on the socket any more, but its file is still there (it goes
    // only once the daemon is done). A connection that was queued just as
    // the listener closed is reset instead.
    eventually(WAIT, "new connections refused", || {
        let path = path.clone();
        async move { tokio::net::UnixStream::connect(&path).await.err() }
    })
    .await;
    let refused = tokio::net::UnixStream::connect(&path).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the daemon must still be finishing the stream: {refused}"
    );
    assert!(daemon.exited().is_none(), "exited before the stream ended");
    let status = bounded("a new call after SIGTERM", async {
        unix_client(&path).describe(describe(&[])).await
    })
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    ticks.extend(rest_of(&mut stream).await);
    let seqs: Vec<u32> = ticks.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "the stream finished");

    let (status, stderr) = daemon.wait_exit(WAIT).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(took < grace, "exit {took:?} after SIGTERM; grace {grace:?}");
    assert!(!path.exists(), "socket file left behind");
    assert!(stderr.contains("shutting down"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_keeps_its_socket_when_the_old_daemon_finishes() {
    // A restart where the new daemon starts while the old one still drains
    // its running calls: the old one must not remove the new one's socket.
    let tmp = socket_dir("cli-overlap");
    let dir = tmp.path();
    let local = dir.join("api.sock");
    let _service = machine_info::Server::spawn_unix("alpha", &local).unwrap();
    let path = dir.join("sy.sock");
    let args = [
        "serve".to_owned(),
        "--listen".to_owned(),
        format!("unix:{}", path.display()),
        "--local-socket".to_owned(),
        local.display().to_string(),
    ];
    let mut old = Process::spawn(&args);
    old.wait_listening(&path).await;
    // Long enough for the successor to start while it runs, even when loaded.
    let count = 20;
    let mut stream = start_watch(&mut unix_client(&path), count, 150, &[]).await;
    let mut ticks = vec![next_tick(&mut stream).await.unwrap()];
    old.signal("TERM");
    eventually(WAIT, "old daemon stops accepting", || {
        let path = path.clone();
        async move { tokio::net::UnixStream::connect(&path).await.err() }
    })
    .await;

    // The successor replaces the (now stale) socket file and serves.
    let mut new = Process::spawn(&args);
    new.wait_listening(&path).await;
    assert!(old.exited().is_none(), "the old daemon is still draining");
    ticks.extend(rest_of(&mut stream).await);
    assert_eq!(
        ticks.len(),
        count as usize,
        "the old daemon's stream finished"
    );
    let (status, stderr) = old.wait_exit(WAIT).await;
    assert!(status.success(), "{status}: {stderr}");

    // The successor's socket is still there and still serves.
    assert!(
        path.exists(),
        "the old daemon removed its successor's socket"
    );
    let reply = call_describe(&mut unix_client(&path), &[]).await.unwrap();
    assert_untagged(&reply.messages[0], "alpha");
    new.signal("TERM");
    let (status, stderr) = new.wait_exit(WAIT).await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_cuts_the_grace_period_short() {
    let tmp = socket_dir("cli-term2");
    let dir = tmp.path();
    let local = dir.join("api.sock");
    let _service = machine_info::Server::spawn_unix("alpha", &local).unwrap();
    let path = dir.join("sy.sock");
    let mut daemon = Process::spawn(&[
        "serve",
        "--listen",
        &format!("unix:{}", path.display()),
        "--local-socket",
        local.to_str().unwrap(),
        "--shutdown-grace-secs",
        "60",
    ]);
    daemon.wait_listening(&path).await;
    // A stream far longer than the test: only the second signal can end it.
    let mut stream = start_watch(&mut unix_client(&path), 1000, 100, &[]).await;
    next_tick(&mut stream).await.unwrap();
    daemon.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        daemon.exited().is_none(),
        "the first signal must wait for the stream"
    );
    let signalled = Instant::now();
    daemon.signal("TERM");
    let (status, stderr) = daemon.wait_exit(WAIT).await;
    assert!(
        !status.success(),
        "cut-short shutdown must not report success"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?}",
        signalled.elapsed()
    );
    assert!(stderr.contains("second signal"), "{stderr}");
}

#[tokio::test]
async fn cert_makes_a_ca_machines_and_callers() {
    let tmp = socket_dir("cli-cert");
    let dir = tmp.path().join("pki");
    let out = dir.to_str().unwrap();
    let ok = |args: &'static [&'static str]| args;
    for args in [
        ok(&["cert", "ca"]),
        ok(&[
            "cert", "machine", "--name", "alpha", "--addr", "fd00::1", "--addr", "::1",
        ]),
        ok(&[
            "cert", "client", "--name", "alice", "--role", "reader", "--role", "ops",
        ]),
    ] {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--out", out]);
        if args[1] != "ca" {
            full.extend(["--ca", out]);
        }
        let (status, stderr) = run_to_exit(&full).await;
        assert!(status.success(), "{full:?}: {stderr}");
    }
    let key_mode = std::fs::metadata(dir.join("alpha.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    // What it made loads as a TLS configuration (machine and caller).
    for name in ["alpha", "alice"] {
        let paths = switchyard_engine::tls::TlsPaths {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join("ca.crt"),
        };
        switchyard_engine::tls::TlsConfigs::load(&paths).unwrap();
    }
    let alice = std::fs::read(dir.join("alice.crt")).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(&alice).unwrap();
    let identity = switchyard_director::Identity::from_der(&der).unwrap();
    assert_eq!(&*identity.roles, ["reader", "ops"]);
    // A CA key is never overwritten.
    let (status, stderr) = run_to_exit(&["cert", "ca", "--out", out]).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("refusing to overwrite"), "{stderr}");
}

#[test]
fn serve_help_shows_the_settings_own_defaults() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    // The default listener is this machine's address, never every interface.
    assert!(
        help.contains("[default: [local_address]:remote_port]"),
        "{help}"
    );
    assert!(!help.contains("[::]"), "{help}");
    assert!(help.contains("[default: 33554432]"), "{help}");
}
