//! Operations: metrics after a known sequence of calls, health endpoints
//! that follow the local server, JSON and access log lines, systemd
//! notifications, the version, the shipped unit and sample configuration.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use switchyard::config::{Options, Settings};
use switchyard_director::Policy;
use tonic::Code;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const ALL: [(&str, &str); 1] = [("machines", "alpha,beta,gamma")];
const DESCRIBE: &str = "/machineinfo.v1.MachineInfo/Describe";

/// The samples of a metrics text: `name{labels}` to value.
async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("# EOF\n"), "not OpenMetrics text: {text}");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn sample(metrics: &HashMap<String, f64>, key: &str) -> f64 {
    metrics.get(key).copied().unwrap_or(0.0)
}

/// How much `key` grew between two scrapes.
fn grew(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    sample(after, key) - sample(before, key)
}

fn metrics_on(i: usize, settings: &mut Settings) {
    if i == A {
        metrics_on_loopback(settings);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_machines_partial_answers_and_connections() {
    let mut cluster = Cluster::start_with("metrics", metrics_on).await;
    let addr = cluster.daemon(A).metrics_addr().expect("metrics listener");
    assert!(cluster.daemon(B).metrics_addr().is_none());
    let mut client = cluster.client(A);
    let before = scrape(addr).await;

    // One local call, one remote, one fan-out to all three.
    call_describe(&mut client, &[]).await.unwrap();
    call_describe(&mut client, &[("machine", "beta")])
        .await
        .unwrap();
    call_describe(&mut client, &ALL).await.unwrap();
    let m = scrape(addr).await;
    let beta = cluster.meta(B).machine_addr;
    let calls = |mode: &str, code: &str| {
        format!("switchyard_calls_total{{method=\"{DESCRIBE}\",mode=\"{mode}\",code=\"{code}\"}}")
    };
    assert_eq!(grew(&before, &m, &calls("local", "OK")), 1.0, "{m:#?}");
    assert_eq!(grew(&before, &m, &calls("remote", "OK")), 1.0);
    assert_eq!(grew(&before, &m, &calls("fan_out", "OK")), 1.0);
    let beta_ok = format!("switchyard_machine_calls_total{{machine=\"{beta}\",code=\"OK\"}}");
    assert_eq!(grew(&before, &m, &beta_ok), 2.0, "one remote call, one leg");
    assert_eq!(
        grew(
            &before,
            &m,
            "switchyard_call_duration_seconds_count{mode=\"fan_out\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            &format!("switchyard_machine_connection_state{{machine=\"{beta}\",state=\"up\"}}")
        ),
        1.0
    );
    assert_eq!(sample(&m, "switchyard_open_calls{mode=\"fan_out\"}"), 0.0);
    assert!(grew(&before, &m, "switchyard_received_bytes_total") > 0.0);
    assert!(grew(&before, &m, "switchyard_sent_bytes_total") > 0.0);
    assert!(sample(&m, "switchyard_connections_total{event=\"accepted\"}") >= 1.0);

    // gamma's service is down: an error entry, counted by its code
    // (UNAVAILABLE, or INTERNAL while a call races the service's exit).
    // gamma's Switchyard may still hold its closing connection to the
    // service for a moment, and a call over it can still succeed: call until
    // gamma's entry is an error (the calls before count only as OK).
    cluster.stop_service(C).await;
    let code = eventually(WAIT, "gamma's entry is an error", || {
        let mut client = client.clone();
        async move {
            let reply = call_describe(&mut client, &ALL).await.unwrap();
            entry_error(reply.messages.get(C)?.metadata.as_ref()).map(|(code, _)| code)
        }
    })
    .await;
    let code = switchyard::metrics::code_name(code);
    let gamma = cluster.meta(C).machine_addr;
    let after_down = scrape(addr).await;
    assert_eq!(
        grew(
            &m,
            &after_down,
            &format!("switchyard_fan_out_error_entries_total{{code=\"{code}\"}}")
        ),
        1.0,
        "{after_down:#?}"
    );
    assert_eq!(
        grew(
            &m,
            &after_down,
            &format!("switchyard_machine_calls_total{{machine=\"{gamma}\",code=\"{code}\"}}")
        ),
        1.0
    );

    // gamma never answers: the caller's deadline gives a partial answer.
    // gamma's address accepts TCP and never speaks HTTP/2.
    let holder = cluster.blackhole_daemon(C).await;
    let mut request = describe(&ALL);
    request.set_timeout(Duration::from_millis(1500));
    let reply = bounded("Describe with a deadline", client.describe(request))
        .await
        .unwrap()
        .into_inner();
    let (code, _) = entry_error(reply.messages[C].metadata.as_ref()).expect("gamma failed");
    assert_eq!(code, Code::DeadlineExceeded);
    let after_late = scrape(addr).await;
    assert_eq!(
        grew(
            &after_down,
            &after_late,
            "switchyard_fan_out_late_machines_total"
        ),
        1.0,
        "{after_late:#?}"
    );

    // A method no machine implements is counted, but not under its name.
    let unknown = call_unknown(cluster.nodes[A].addr, "/nope.v1.Nope/Random1").await;
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown:?}");
    let text = http_get(addr, "/metrics").await.1;
    assert!(!text.contains("nope.v1"), "{text}");
    assert!(
        text.contains("method=\"other\",mode=\"local\",code=\"UNIMPLEMENTED\""),
        "{text}"
    );
    drop(holder);
    cluster.shutdown().await;
}

/// Calls `method` (which the sample API lacks) on the Switchyard at `addr`.
async fn call_unknown(addr: SocketAddr, method: &'static str) -> tonic::Status {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    bounded(method, async {
        grpc.ready().await.unwrap();
        grpc.unary(
            tonic::Request::new(()),
            tonic::codegen::http::uri::PathAndQuery::from_static(method),
            codec,
        )
        .await
    })
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_local_server() {
    let mut cluster = Cluster::start_with("readyz", metrics_on).await;
    let addr = cluster.daemon(A).metrics_addr().expect("metrics listener");
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(http_get(addr, "/nothing").await.0, 404);

    cluster.stop_service(A).await;
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("local server unreachable"), "{body}");
    assert_eq!(http_get(addr, "/healthz").await.0, 200);

    let socket = cluster.nodes[A].socket.clone();
    cluster.nodes[A].service = Some(machine_info::Server::spawn_unix("alpha", &socket).unwrap());
    eventually(WAIT, "/readyz 200 again", || async move {
        (http_get(addr, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

/// A machine-info service and the arguments of a daemon in front of it, on
/// Unix sockets in `dir`: its listener's path, the service.
fn unix_daemon_args(dir: &Path) -> (Vec<String>, PathBuf, machine_info::Server) {
    let socket = dir.join("api.sock");
    let listen = dir.join("switchyard.sock");
    let service = machine_info::Server::spawn_unix("alpha", &socket).unwrap();
    let args = vec![
        "serve".to_owned(),
        "--local-socket".to_owned(),
        socket.display().to_string(),
        format!("--listen=unix:{}", listen.display()),
        "--no-detect-streamed-methods".to_owned(),
    ];
    (args, listen, service)
}

#[tokio::test]
async fn json_logs_parse_and_carry_one_access_line_per_call_without_h2_noise() {
    let dir = socket_dir("json-logs");
    let (mut args, listen, _service) = unix_daemon_args(dir.path());
    args.extend(["--log-format=json".to_owned(), "--access-log".to_owned()]);
    let mut daemon = Process::spawn_with_env(&args, &[("RUST_LOG", "debug")]);
    daemon.wait_listening(&listen).await;
    call_describe(&mut unix_client(&listen), &[]).await.unwrap();
    daemon.wait_log("switchyard::access").await;
    daemon.signal("TERM");
    let (status, stderr) = daemon.wait_exit(WAIT).await;
    assert!(status.success(), "{stderr}");

    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect();
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "switchyard::access")
        .collect();
    assert_eq!(access.len(), 1, "{stderr}");
    let line = access[0];
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["method"], DESCRIBE, "{line}");
    assert_eq!(line["mode"], "local", "{line}");
    assert_eq!(line["code"], "OK", "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(line["bytes_out"].as_u64().is_some_and(|n| n > 0), "{line}");
    assert!(
        line["peer"].as_str().is_some_and(|p| p.starts_with("unix")),
        "{line}"
    );
    // RUST_LOG=debug shows Switchyard's lines, not every HTTP/2 frame.
    let noisy: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| {
            let target = l["target"].as_str().unwrap_or_default();
            ["h2", "hyper", "tower"]
                .iter()
                .any(|k| target == *k || target.starts_with(&format!("{k}::")))
        })
        .collect();
    assert!(noisy.is_empty(), "{noisy:#?}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log that is not a terminal"
    );
}

#[tokio::test]
async fn systemd_hears_ready_reloading_and_stopping() {
    let dir = socket_dir("notify");
    let (args, listen, _service) = unix_daemon_args(dir.path());
    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let mut daemon =
        Process::spawn_with_env(&args, &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
    let mut buf = vec![0u8; 4096];
    let mut next = async || {
        let n = bounded("a notification", notify.recv(&mut buf))
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next().await.trim(), "READY=1");
    // Ready means serving.
    daemon.wait_listening(&listen).await;
    daemon.signal("HUP");
    let reloading = next().await;
    assert!(reloading.contains("RELOADING=1"), "{reloading:?}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(next().await.trim(), "READY=1");
    daemon.signal("TERM");
    assert_eq!(next().await.trim(), "STOPPING=1");
    let (status, stderr) = daemon.wait_exit(WAIT).await;
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn version_names_the_git_commit() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(output.stdout).unwrap();
    assert!(
        version.starts_with(&format!("switchyard {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match head {
        Ok(head) if head.status.success() => {
            let commit = String::from_utf8(head.stdout).unwrap();
            assert!(version.contains(commit.trim()), "{version} vs {commit}");
        }
        _ => eprintln!("not a git checkout: commit not compared"),
    }
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn the_sample_configuration_loads() {
    let options = Options {
        config: Some(repo_file("contrib/switchyard.toml")),
        ..Options::default()
    };
    let settings = Settings::load(&options).unwrap();
    assert!(settings.start.tls.is_some());
    assert!(settings.start.metrics_listen.is_some());
    assert_eq!(settings.live.authz.len(), 2);
    assert_eq!(settings.live.machines.unwrap().machines().len(), 3);
    // The monitor role can use `switchyard call`: reflection is allowed.
    let policy = Policy {
        rules: settings.live.authz.clone(),
        ..Policy::default()
    };
    let monitor = ["monitor".to_owned()];
    for method in [
        "/machineinfo.v1.MachineInfo/Describe",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ] {
        assert!(policy.allows(&monitor, method), "monitor may call {method}");
    }
    assert!(!policy.allows(&monitor, "/switchyard.v1.Cluster/ListMachines"));
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo_file("contrib/systemd/switchyard.service")).unwrap();
    assert!(unit.contains("Type=notify"));
    assert!(unit.contains("switchyard serve --config /etc/switchyard.toml"));
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze not installed: the unit is not verified");
        return;
    };
    assert!(probe.status.success());
    // verify wants an executable ExecStart: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let kill = ["/bin/kill", "/usr/bin/kill"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("kill(1)");
    let local = unit
        .replace(
            "/usr/local/bin/switchyard",
            env!("CARGO_BIN_EXE_switchyard"),
        )
        .replace("/bin/kill", kill);
    let path = dir.path().join("switchyard.service");
    std::fs::write(&path, local).unwrap();
    let output = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: none allowed.
    assert!(stderr.trim().is_empty(), "{stderr}");
}

/// A JSON object's top-level keys, refused when one repeats (serde_json
/// alone would keep the last value and hide the first).
struct UniqueKeys(serde_json::Map<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<UniqueKeys, M::Error> {
                let mut keys = serde_json::Map::new();
                while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if keys.insert(key.clone(), value).is_some() {
                        return Err(serde::de::Error::custom(format!("key {key:?} twice")));
                    }
                }
                Ok(UniqueKeys(keys))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A daemon in front of a test backend whose status messages the caller
/// chooses, one machine fanned out (`--always-fan-out`), logging at debug in
/// `format`; returns its stderr after a fan-out call and a one-to-one call
/// that fail with a status message holding a forged log line.
async fn logs_of_forged_status(format: &str) -> String {
    use switchyard_testkit::client::{multi_client, unix_channel, with_meta};
    use switchyard_testkit::pb::PingRequest;

    let dir = socket_dir(&format!("forged-{format}"));
    let socket = dir.path().join("api.sock");
    let listen = dir.path().join("switchyard.sock");
    let _backend = switchyard_testkit::TestServer::spawn_unix("alpha", &socket).await;
    let args = [
        "serve".to_owned(),
        format!("--local-socket={}", socket.display()),
        format!("--listen=unix:{}", listen.display()),
        "--local-address=fd00::1".to_owned(),
        "--always-fan-out".to_owned(),
        "--no-detect-streamed-methods".to_owned(),
        format!("--log-format={format}"),
    ];
    let mut daemon = Process::spawn_with_env(&args, &[("RUST_LOG", "debug")]);
    daemon.wait_listening(&listen).await;
    let request = || PingRequest {
        error_message: "disk full\nERROR switchyard: forged line\r\u{1b}[2K".to_owned(),
        ..Default::default()
    };
    let mut client = multi_client(unix_channel(&listen));
    let reply = client
        .ping_error(with_meta(request(), &[("machines", "fd00::1")]))
        .await
        .expect("a fan-out answers with error entries")
        .into_inner();
    assert_eq!(reply.messages.len(), 1);
    let status = client.ping_error(request()).await.unwrap_err();
    assert!(
        status.message().starts_with("disk full\nERROR"),
        "{status:?}"
    );
    daemon.wait_log("backend failed in fan-out").await;
    daemon.wait_log("switchyard_engine::channel").await;
    daemon.signal("TERM");
    let (exit, stderr) = daemon.wait_exit(WAIT).await;
    assert!(exit.success(), "{stderr}");
    stderr
}

#[tokio::test]
async fn a_status_message_cannot_forge_a_json_log_line_nor_hide_the_event_text() {
    let stderr = logs_of_forged_status("json").await;
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str::<UniqueKeys>(line)
                .unwrap_or_else(|e| panic!("not a JSON object with unique keys ({e}): {line}"))
                .0
        })
        .collect();
    let event = |text: &str| {
        lines
            .iter()
            .find(|l| l["message"] == text)
            .unwrap_or_else(|| panic!("no {text:?} line: {stderr}"))
    };
    let line = event("backend failed in fan-out");
    assert!(
        line["status_message"]
            .as_str()
            .is_some_and(|m| m.starts_with("disk full\nERROR")),
        "{line:?}"
    );
    // The upstream connection's line names it without a second `target`.
    let connected = event("connected");
    assert_eq!(
        connected["target"], "switchyard_engine::channel",
        "{connected:?}"
    );
    assert!(
        connected["upstream"]
            .as_str()
            .is_some_and(|u| u.starts_with("unix:"))
    );
}

#[tokio::test]
async fn a_status_message_cannot_forge_a_text_log_line() {
    let stderr = logs_of_forged_status("text").await;
    assert!(stderr.contains("backend failed in fan-out"), "{stderr}");
    assert!(
        stderr.contains(r"disk full\nERROR switchyard: forged line"),
        "{stderr}"
    );
    for line in stderr.lines() {
        assert!(
            !line.starts_with("ERROR switchyard: forged"),
            "forged: {stderr}"
        );
        assert!(
            !line.contains('\r') && !line.contains('\u{1b}'),
            "control characters: {line:?}"
        );
    }
}

/// Every machine a caller names that turns out down is a warning a caller
/// can multiply: a hundred made-up machines (IPv4 loopback addresses on a
/// port nobody listens on) write one line, not a hundred.
#[tokio::test]
async fn machines_going_down_are_logged_within_the_rate_limit() {
    let dir = socket_dir("down-log");
    let (mut args, listen, _service) = unix_daemon_args(dir.path());
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    args.extend([
        format!("--remote-port={closed}"),
        "--allowed-network=::ffff:127.0.0.0/104".to_owned(),
    ]);
    let mut daemon = Process::spawn(&args);
    daemon.wait_listening(&listen).await;
    let machines: Vec<String> = (1..=100).map(|i| format!("::ffff:127.0.0.{i}")).collect();
    let reply = call_describe(
        &mut unix_client(&listen),
        &[("machines", &machines.join(","))],
    )
    .await
    .unwrap();
    assert_eq!(reply.messages.len(), 100);
    assert!(
        reply
            .messages
            .iter()
            .all(|d| entry_error(d.metadata.as_ref()).is_some())
    );
    daemon.signal("TERM");
    let (status, stderr) = daemon.wait_exit(WAIT).await;
    assert!(status.success(), "{stderr}");
    let lines = stderr.matches("target down").count();
    assert!((1..=2).contains(&lines), "{lines} lines:\n{stderr}");
}

/// Connections held open without a request (as a flaky client or an
/// attacker would) never keep a probe from its answer: a new connection
/// takes the slot of the oldest silent one.
#[tokio::test]
async fn probes_are_answered_while_idle_connections_hold_the_metrics_listener() {
    let cluster = Cluster::start_with("metrics-idle", metrics_on).await;
    let addr = cluster.daemon(A).metrics_addr().expect("metrics listener");
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    for path in ["/healthz", "/readyz"].into_iter().cycle().take(20) {
        let (status, body) =
            bounded_for(Duration::from_secs(2), "a probe", http_get(addr, path)).await;
        assert_eq!(status, 200, "{path}: {body}");
        // And more silent ones keep coming between probes.
        for _ in 0..10 {
            silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
    }
    drop(silent);
    cluster.shutdown().await;
}
