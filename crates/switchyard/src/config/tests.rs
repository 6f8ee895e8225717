//! Every setting is read from flags and file alike, checked once, and named
//! when it is wrong.

use std::time::Duration;

use clap::Parser;

use super::*;
use switchyard_engine::tls::TlsPaths;

fn args() -> Options {
    Options {
        local_socket: Some("/run/api.sock".into()),
        ..Default::default()
    }
}

/// [`args`] with a listener, for tests about other settings.
fn listening() -> Options {
    Options {
        listen: Some(vec!["[::1]:51000".parse().unwrap()]),
        ..args()
    }
}

/// Parses `flags` as `switchyard serve` does.
fn flags(flags: &[&str]) -> Result<Options, clap::Error> {
    #[derive(Debug, clap::Parser)]
    struct Serve {
        #[command(flatten)]
        options: Options,
    }
    Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).map(|s| s.options)
}

fn file(text: &str) -> Options {
    parse_file(text).unwrap()
}

/// The error of a file `text` with flags `args`: from the parser, or from
/// the merge.
fn error(args: &Options, text: &str) -> String {
    match parse_file(text) {
        Err(err) => err,
        Ok(file) => Settings::merge(args, &file).unwrap_err().to_string(),
    }
}

fn listen(text: &str) -> Listen {
    text.parse().unwrap()
}

#[test]
fn defaults() {
    let s = Settings::merge(&args(), &file(r#"local_address = "fd00::1""#)).unwrap();
    assert_eq!(s.start.remote_port.get(), 51000);
    // This machine's address on the remote port: never every interface.
    assert_eq!(
        s.listeners(),
        [Address::Tcp("[fd00::1]:51000".parse().unwrap())]
    );
    assert_eq!(s.start.max_targets.0, 256);
    assert!(s.max_connections() >= 16);
    assert_eq!(s.start.socket_mode, SocketMode(0o660));
    assert_eq!(s.start.max_message_size, MessageSize(32 * 1024 * 1024));
    assert_eq!(
        Duration::from(s.start.connect_timeout_secs),
        Duration::from_secs(10)
    );
    assert!(s.live.machines.is_none() && !s.start.always_fan_out);
    assert!(s.start.detect_streamed_methods);
    assert_eq!(s.start.worker_threads.0, 1);
}

#[test]
fn flags_override_the_file() {
    let text = r#"
        listen = ["unix:/run/a.sock"]
        remote_port = 52000
        local_address = "fd00::1"
        local_socket = "/from/file.sock"
        streamed_methods = ["/a.B/Watch"]
        [[machines]]
        id = "m1"
        name = "alpha"
        addr = "fd00::1"
    "#;
    let s = Settings::merge(&Options::default(), &file(text)).unwrap();
    assert_eq!(s.start.local_socket, PathBuf::from("/from/file.sock"));
    assert_eq!(s.listeners(), [Address::Unix("/run/a.sock".into())]);
    assert_eq!(s.start.remote_port.get(), 52000);
    assert_eq!(s.start.streamed_methods, ["/a.B/Watch".parse().unwrap()]);
    assert_eq!(s.live.machines.unwrap().machines().len(), 1);
    let a = flags(&[
        "--remote-port",
        "53000",
        "--listen",
        "[::1]:7000",
        "--local-socket",
        "/from/flag.sock",
    ])
    .unwrap();
    let s = Settings::merge(&a, &file(text)).unwrap();
    assert_eq!(
        (s.start.remote_port.get(), s.start.local_socket),
        (53000, PathBuf::from("/from/flag.sock"))
    );
    assert_eq!(s.start.listen, Some(vec![listen("[::1]:7000")]));
}

#[test]
fn boolean_flags_are_switches_over_the_file() {
    let text = "local_socket = \"/x\"\nlisten = [\"unix:/s\"]\nalways_fan_out = false\ndetect_streamed_methods = true\n";
    let s = Settings::merge(&Options::default(), &file(text)).unwrap();
    assert!(!s.start.always_fan_out && s.start.detect_streamed_methods);
    let a = flags(&["--always-fan-out", "--no-detect-streamed-methods"]).unwrap();
    assert_eq!(
        (a.always_fan_out, a.detect_streamed_methods),
        (Some(true), Some(false))
    );
    let s = Settings::merge(&a, &file(text)).unwrap();
    assert!(s.start.always_fan_out && !s.start.detect_streamed_methods);
    let a = flags(&[]).unwrap();
    assert_eq!((a.always_fan_out, a.detect_streamed_methods), (None, None));
}

#[test]
fn without_an_address_only_the_listeners_given() {
    let err = Settings::merge(&args(), &Options::default())
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("listen:"), "{err}");
    let s = Settings::merge(&args(), &file(r#"listen = ["unix:/run/s.sock"]"#)).unwrap();
    assert_eq!(s.listeners(), [Address::Unix("/run/s.sock".into())]);
}

#[test]
fn every_bad_value_names_its_setting() {
    let a = args();
    assert!(error(&Options::default(), "").starts_with("local_socket:"));
    assert!(error(&a, r#"allowed_networks = ["fd00::/129"]"#).starts_with("allowed_networks:"));
    assert!(error(&a, "max_targets = 0").starts_with("max_targets:"));
    assert!(error(&a, "handshake_timeout_secs = 0").starts_with("handshake_timeout_secs:"));
    assert!(error(&a, r#"listen = ["nowhere"]"#).starts_with("listen:"));
    assert!(error(&a, "listen = []").starts_with("listen:"));
    assert!(error(&a, "remote_port = 0").starts_with("remote_port:"));
    assert!(error(&a, r#"local_address = "10.0.0.1""#).starts_with("local_address:"));
    assert!(error(&a, r#"socket_mode = "999""#).starts_with("socket_mode:"));
    assert!(error(&a, "max_message_size = 0").starts_with("max_message_size:"));
    assert!(error(&a, r#"streamed_methods = ["Watch"]"#).starts_with("streamed_methods:"));
    assert!(error(&a, "connect_timeout_secs = 0").starts_with("connect_timeout_secs:"));
    assert!(error(&a, "shutdown_grace_secs = 0").starts_with("shutdown_grace_secs:"));
    assert!(error(&a, "worker_threads = 0").starts_with("worker_threads:"));
    assert!(error(&a, "worker_threads = 1000").starts_with("worker_threads:"));
    let dup = r#"
        [[machines]]
        id = "m1"
        name = "a"
        addr = "fd00::1"
        [[machines]]
        id = "m1"
        name = "b"
        addr = "fd00::2"
    "#;
    assert!(error(&a, dup).starts_with("machines:"));
    assert!(
        parse_file("unknown_key = 1")
            .unwrap_err()
            .contains("unknown_key")
    );
    // A bad file value is reported even where a flag overrides it.
    let overriding = Options {
        listen: Some(vec![listen("[::1]:7000")]),
        ..args()
    };
    assert!(error(&overriding, r#"listen = ["localhost:80"]"#).starts_with("listen:"));
}

#[test]
fn file_errors_keep_line_and_column() {
    let err = parse_file("local_socket = \"/x\"\n\nremote_port = 0\n").unwrap_err();
    assert!(err.starts_with("remote_port:"), "{err}");
    assert!(err.contains("line 3, column 15"), "{err}");
    let err =
        parse_file("[[machines]]\nid = \"a\"\nname = \"b\"\naddr = \"10.0.0.1\"\n").unwrap_err();
    assert!(err.starts_with("machines"), "{err}");
    assert!(
        err.contains("\"10.0.0.1\"") && err.contains("line 4"),
        "{err}"
    );
    let err = parse_file("remote_port = ").unwrap_err();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn flags_are_checked_by_the_same_types() {
    for (flag, value) in [
        ("--local-address", "10.0.0.1"),
        ("--socket-mode", "999"),
        ("--remote-port", "0"),
        ("--connect-timeout-secs", "0"),
        ("--max-message-size", "0"),
        ("--streamed-method", "Watch"),
        ("--worker-threads", "0"),
        ("--listen", "nowhere"),
    ] {
        let err = flags(&[flag, value]).unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{flag}"
        );
    }
}

#[test]
fn reload_names_what_needs_a_restart() {
    let running = Settings::merge(&listening(), &Options::default()).unwrap();
    let same = Settings::merge(&listening(), &file(r#"local_address = "fd00::1""#)).unwrap();
    assert!(same.needing_restart(&running).is_empty());
    let changed = Settings::merge(
        &args(),
        &file(
            r#"listen = ["[::1]:1"]
        streamed_methods = ["/a.B/C"]"#,
        ),
    )
    .unwrap();
    assert_eq!(
        changed.needing_restart(&running),
        ["listen", "streamed_methods"]
    );
}

#[test]
fn new_tls_paths_are_reloaded_but_turning_tls_on_needs_a_restart() {
    let tls = |dir: &str| {
        file(&format!(
            "[tls]\ncert = \"/{dir}/a.crt\"\nkey = \"/{dir}/a.key\"\nca = \"/{dir}/ca.crt\""
        ))
    };
    let plain = Settings::merge(&listening(), &Options::default()).unwrap();
    let old = Settings::merge(&listening(), &tls("old")).unwrap();
    let new = Settings::merge(&listening(), &tls("new")).unwrap();
    assert!(new.needing_restart(&old).is_empty());
    assert_eq!(old.needing_restart(&plain), ["tls"]);
    assert_eq!(plain.needing_restart(&old), ["tls"]);
}

#[test]
fn tls_flags_complete_the_files_table() {
    let text = "local_socket = \"/x\"\nlisten = [\"unix:/s\"]\n[tls]\ncert = \"/a.crt\"\nca = \"/ca.crt\"\n";
    let err = Settings::merge(&Options::default(), &file(text))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("tls:") && err.contains("missing: key"),
        "{err}"
    );
    let with_key = flags(&["--tls-key", "/a.key"]).unwrap();
    let s = Settings::merge(&with_key, &file(text)).unwrap();
    assert_eq!(
        s.tls_paths().unwrap(),
        TlsPaths {
            cert: "/a.crt".into(),
            key: "/a.key".into(),
            ca: "/ca.crt".into(),
        }
    );
    assert!(
        parse_file("[tls]\ncertificate = \"/a\"\n")
            .unwrap_err()
            .starts_with("tls:")
    );
}

#[test]
fn authorization_from_the_file_and_flags() {
    let text = r#"
        local_socket = "/x"
        listen = ["unix:/s"]
        unix_roles = ["operator"]
        fan_out_methods = ["/machineinfo.v1.MachineInfo/*"]
        [[authz]]
        roles = ["admin"]
        methods = ["*"]
        [[authz]]
        roles = ["reader"]
        methods = ["/machineinfo.v1.MachineInfo/*", "/grpc.health.v1.Health/Check"]
    "#;
    let s = Settings::merge(&Options::default(), &file(text)).unwrap();
    assert_eq!(s.live.unix_roles, ["operator"]);
    assert_eq!(s.live.authz.len(), 2);
    assert_eq!(s.live.authz[1].methods.len(), 2);
    assert_eq!(s.live.fan_out_methods.as_ref().unwrap().len(), 1);
    let defaults = Settings::merge(&listening(), &Options::default()).unwrap();
    assert_eq!(defaults.live.unix_roles, ["admin"]);
    assert!(defaults.live.authz.is_empty() && defaults.live.fan_out_methods.is_none());
    assert!(
        error(
            &listening(),
            "[[authz]]\nroles = [\"a\"]\nmethods = [\"Reboot\"]\n"
        )
        .starts_with("authz")
    );
    let flagged = flags(&[
        "--unix-role",
        "a",
        "--unix-role",
        "b",
        "--fan-out-method",
        "*",
    ])
    .unwrap();
    let s = Settings::merge(&flagged, &file(text)).unwrap();
    assert_eq!(s.live.unix_roles, ["a", "b"]);
}

#[test]
fn etcd_registry_from_flags_and_file() {
    let a = flags(&[
        "--etcd-endpoint",
        "http://[::1]:2379",
        "--etcd-endpoint",
        "http://127.0.0.1:2379",
        "--etcd-register",
        "--machine-id",
        "m1",
        "--machine-name",
        "alpha",
        "--local-address",
        "fd00::1",
    ])
    .unwrap();
    let s = Settings::merge(&a, &file("local_socket = \"/x\"\n")).unwrap();
    let etcd = s.etcd().expect("etcd configured");
    assert_eq!(
        etcd.endpoints,
        ["http://[::1]:2379", "http://127.0.0.1:2379"]
    );
    assert_eq!(etcd.prefix, "/switchyard/");
    assert_eq!(etcd.heartbeat_ttl, Duration::from_secs(10));
    let me = etcd.register.expect("registers");
    assert_eq!((me.id.as_str(), me.name.as_str()), ("m1", "alpha"));
    assert_eq!(me.addr.to_string(), "fd00::1");
    assert!(s.start.registry.etcd.as_ref().unwrap().liveness);

    let text = r#"
        local_socket = "/x"
        local_address = "[fd00::1]:51001"
        machine_id = "m1"
        machine_name = "alpha"
        [registry.etcd]
        endpoints = ["http://[::1]:2379"]
        prefix = "/sy/"
        register = true
        heartbeat_ttl_secs = 3
        liveness = false
    "#;
    let s = Settings::merge(&Options::default(), &file(text)).unwrap();
    let etcd = s.etcd().unwrap();
    assert_eq!(etcd.prefix, "/sy/");
    assert_eq!(etcd.heartbeat_ttl, Duration::from_secs(3));
    assert_eq!(etcd.register.unwrap().addr.port, Some(51001));
    assert!(!s.start.registry.etcd.as_ref().unwrap().liveness);
    // A flag sets one key of the table, the file's others stay.
    let s = Settings::merge(&flags(&["--etcd-prefix", "/other/"]).unwrap(), &file(text)).unwrap();
    assert_eq!(s.etcd().unwrap().prefix, "/other/");
    assert_eq!(s.etcd().unwrap().endpoints, ["http://[::1]:2379"]);
    // Restart-only: a changed registry is named on reload.
    let plain = Settings::merge(
        &Options::default(),
        &file("local_socket = \"/x\"\nlisten = [\"unix:/s\"]\n"),
    )
    .unwrap();
    let with = Settings::merge(
        &Options::default(),
        &file(&format!("listen = [\"unix:/s\"]\n{text}")),
    )
    .unwrap();
    let restart = with.needing_restart(&plain);
    assert!(restart.contains(&"registry".to_owned()), "{restart:?}");
    assert!(plain.etcd().is_none());
}

#[test]
fn etcd_registry_errors_name_the_setting() {
    let base = "local_socket = \"/x\"\nlocal_address = \"fd00::1\"\n";
    let etcd = "[registry.etcd]\nendpoints = [\"http://[::1]:2379\"]\n";
    let machines = "[[machines]]\nid = \"m1\"\nname = \"a\"\naddr = \"fd00::1\"\n";
    let err = error(&Options::default(), &format!("{base}{machines}{etcd}"));
    assert!(
        err.contains("machines") && err.contains("registry.etcd"),
        "{err}"
    );
    let err = error(
        &Options::default(),
        &format!("{base}[registry.etcd]\nprefix = \"/a/\"\n"),
    );
    assert!(err.starts_with("registry.etcd.endpoints"), "{err}");
    let err = error(
        &Options::default(),
        &format!("{base}{etcd}register = true\n"),
    );
    assert!(
        err.starts_with("registry.etcd.register") && err.contains("machine_id, machine_name"),
        "{err}"
    );
    // This machine's own entry must pass the address rule it applies to
    // every entry: loopback only with allowed_networks admitting it.
    let on_loopback = "local_socket = \"/x\"\nlocal_address = \"[::1]:51001\"\n\
        machine_id = \"m1\"\nmachine_name = \"alpha\"\n";
    let err = error(
        &Options::default(),
        &format!("{on_loopback}{etcd}register = true\n"),
    );
    assert!(
        err.starts_with("registry.etcd.register") && err.contains("loopback"),
        "{err}"
    );
    let s = Settings::merge(
        &Options::default(),
        &file(&format!(
            "allowed_networks = [\"::1/128\"]\n{on_loopback}{etcd}register = true\n"
        )),
    )
    .unwrap();
    assert_eq!(
        s.etcd().unwrap().allowed_networks,
        Some(vec!["::1/128".parse().unwrap()])
    );
    for (text, needle) in [
        (
            "[registry.etcd]\nendpoints = [\"[::1]:2379\"]\n",
            "registry",
        ),
        (
            "[registry.etcd]\nendpoints = [\"http://[::1]:2379\"]\nprefix = \"x\"\n",
            "registry",
        ),
        (
            "[registry.etcd]\nendpoints = [\"http://[::1]:2379\"]\nttl = 3\n",
            "ttl",
        ),
        (
            "[registry.etcd]\nendpoints = [\"http://[::1]:2379\"]\nheartbeat_ttl_secs = 0\n",
            "registry",
        ),
        ("[registry]\nconsul = 1\n", "consul"),
        ("machine_id = \"*\"\n", "machine_id"),
        ("machine_name = \"a,b\"\n", "machine_name"),
    ] {
        let err = error(&Options::default(), &format!("{base}{text}"));
        assert!(err.contains(needle), "{text}: {err}");
    }
    let err = error(
        &Options::default(),
        &format!(
            "{base}[registry.etcd]\nendpoints = [\"http://[::1]:2379\"]\nheartbeat_ttl_secs = 3601\n"
        ),
    );
    assert!(err.contains("heartbeat_ttl_secs"), "{err}");
    assert!(flags(&["--etcd-endpoint", "https://[::1]:2379"]).is_err());
    assert!(flags(&["--etcd-prefix", "nope"]).is_err());
}
