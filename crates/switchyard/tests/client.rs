//! The real `switchyard call`, `list`, `describe` and `machines` against
//! three machines on loopback (in-process Switchyards in front of
//! `machine-info` services with reflection): output, exit status, and the
//! messages a person gets for a mistake. Every run of the binary is bounded.

mod common;
mod dynamic;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::time::Instant;

use common::*;
use dynamic::{Reflection, spawn_bare, spawn_echo, spawn_inventory};
use switchyard::config::{Listen, Settings};
use switchyard::daemon::Daemon;
use switchyard_engine::Address;

const DESCRIBE: &str = "machineinfo.v1.MachineInfo/Describe";

/// Runs `switchyard <args>` to completion, bounded; stdin is empty.
async fn cli(args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    bounded(&format!("switchyard {args:?}"), command.output())
        .await
        .expect("the binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Panics unless `out` exited with `code`, showing what it printed.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// `--via` of machine `i`.
fn via(cluster: &Cluster, i: usize) -> String {
    cluster.nodes[i].addr.to_string()
}

/// The one line of `lines` whose first word is `machine` (a fan-out's rows
/// come in the order the machines answer).
fn row_of<'a>(lines: &[&'a str], machine: &str) -> &'a str {
    let mine: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.split_whitespace().next() == Some(machine))
        .collect();
    assert_eq!(mine.len(), 1, "one row of {machine} in {lines:#?}");
    mine[0]
}

/// The one JSON line of `lines` of `machine`.
fn line_of<'a>(lines: &[&'a str], machine: &str) -> &'a str {
    let prefix = format!(r#"{{"machine":"{machine}","#);
    let mine: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    assert_eq!(mine.len(), 1, "one line of {machine} in {lines:#?}");
    mine[0]
}

/// The lines of `text` without the uptime, which depends on timing.
fn without_uptime(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("uptimeSeconds"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_this_machine_another_and_all_of_them() {
    let cluster = Cluster::start("cli-call").await;
    let alpha = via(&cluster, 0);

    // This machine, untagged: exactly what grpcurl prints (the default when
    // stdout is not a terminal).
    let out = cli(&["call", "--via", &alpha, DESCRIBE]).await;
    assert_exit(&out, 0);
    assert_eq!(
        without_uptime(&stdout(&out)),
        "{\n  \"messages\": [\n    {\n      \"name\": \"alpha\",\n      \"calls\": \"2\"\n    }\n  ]\n}\n"
    );

    // Another machine, one-to-one (two hops), in any spelling of the method.
    let out = cli(&[
        "call",
        "--via",
        &alpha,
        "--machine",
        "beta",
        "machineinfo.v1.MachineInfo.Describe",
        "-o",
        "jsonl",
    ])
    .await;
    assert_exit(&out, 0);
    let line = stdout(&out);
    assert!(
        line.starts_with(r#"{"machine":"beta","reply":{"name":"beta","#),
        "{line}"
    );
    assert!(line.contains(r#""proxyAuthority":"#), "{line}");

    // All of them: one row per machine, as each answers (a streamed table:
    // the header sized for common names and addresses).
    let out = cli(&[
        "call",
        "--via",
        &alpha,
        "-m",
        "gamma,alpha",
        "-m",
        "beta",
        "MachineInfo/Describe",
        "-o",
        "table",
    ])
    .await;
    assert_exit(&out, 0);
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert_eq!(
        rows[0],
        "MACHINE      ADDRESS                  NAME   UPTIME_SECONDS   PROXY_AUTHORITY   CALLS",
        "{table}"
    );
    for i in [2, 0, 1] {
        let name = cluster.nodes[i].name.as_str();
        let addr = cluster.meta(i).machine_addr;
        assert_eq!(
            row_of(&rows[1..], name)
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>(),
            [name, addr.as_str(), name],
            "{table}"
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_down_is_its_own_row_and_exit_status_1() {
    let mut cluster = Cluster::start("cli-down").await;
    let alpha = via(&cluster, 0);
    cluster.stop_daemon(2).await;

    let out = cli(&[
        "call",
        "--via",
        &alpha,
        "-m",
        "alpha,beta,gamma",
        DESCRIBE,
        "-o",
        "table",
    ])
    .await;
    assert_exit(&out, 1);
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    for name in ["alpha", "beta"] {
        assert!(!row_of(&rows[1..], name).contains("ERROR"), "{table}");
    }
    let gamma = cluster.meta(2).machine_addr;
    assert_eq!(
        row_of(&rows[1..], "gamma")
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>(),
        ["gamma", gamma.as_str(), "ERROR", "UNAVAILABLE:"],
        "{table}"
    );

    // The same in JSON: grpcurl's form, gamma's entry carrying its error.
    let out = cli(&["call", "--via", &alpha, "-m", "*", DESCRIBE, "-o", "json"]).await;
    assert_exit(&out, 1);
    let json = stdout(&out);
    assert!(json.contains("\"machineName\": \"gamma\""), "{json}");
    assert!(json.contains("\"code\": 14"), "{json}");
    assert!(json.contains("\"name\": \"beta\""), "{json}");

    // What `machines` says now: gamma down with its cause, the others up;
    // answered by alpha itself whatever the metadata asks.
    let out = cli(&[
        "machines",
        "--via",
        &alpha,
        "-H",
        "machines=beta",
        "-o",
        "table",
    ])
    .await;
    assert_exit(&out, 0);
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].starts_with("NAME    ID   ADDRESS"), "{table}");
    assert!(
        rows[1].starts_with("alpha   m1   ") && rows[1].ends_with("up (local)"),
        "{table}"
    );
    assert!(
        rows[2].starts_with("beta    m2   ") && rows[2].ends_with("up"),
        "{table}"
    );
    assert_eq!(
        rows[3].split_whitespace().take(4).collect::<Vec<_>>(),
        ["gamma", "m3", gamma.as_str(), "down"],
        "{table}"
    );
    let out = cli(&["machines", "--via", &alpha, "-o", "jsonl"]).await;
    assert_exit(&out, 0);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with(r#"{"id":"m1","name":"alpha","addr":"#)
            && lines[0].ends_with(r#""state":"UP","local":true}"#),
        "{lines:?}"
    );
    assert!(
        lines[2].contains(r#""state":"DOWN","lastError":"#),
        "{lines:?}"
    );
    cluster.shutdown().await;
}

/// An API that declares the fan-out tags itself, under another name and
/// package (`inventory.v1.Origin`): the entries are still one per machine,
/// and a failed machine still fails the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_tags_of_another_name_are_entries_per_machine() {
    let services: Vec<_> = NAMES.iter().map(|name| spawn_inventory(name)).collect();
    let sockets: Vec<_> = services.iter().map(|s| s.socket.path.clone()).collect();
    let mut cluster = Cluster::start_with("cli-origin", |i, settings| {
        settings.start.local_socket = sockets[i].clone();
    })
    .await;
    cluster.stop_daemon(2).await;
    let alpha = via(&cluster, 0);
    let parts = "inventory.v1.Inventory/Parts";

    let out = cli(&["call", "--via", &alpha, "-m", "*", parts, "-o", "jsonl"]).await;
    assert_exit(&out, 1);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (i, name) in ["alpha", "beta"].iter().enumerate() {
        let addr = cluster.meta(i).machine_addr;
        assert_eq!(
            line_of(&lines, name),
            format!(
                r#"{{"machine":"{name}","machineAddr":"{addr}","machineId":"m{}","reply":{{"serial":"{name}-1","count":3}}}}"#,
                i + 1
            ),
            "{text}"
        );
    }
    assert!(
        line_of(&lines, "gamma").contains(r#""error":{"code":"UNAVAILABLE","#),
        "{text}"
    );

    let out = cli(&["call", "--via", &alpha, "-m", "*", parts, "-o", "table"]).await;
    assert_exit(&out, 1);
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["MACHINE", "ADDRESS", "SERIAL", "COUNT"],
        "{table}"
    );
    assert_eq!(
        row_of(&rows[1..], "alpha")
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "alpha",
            cluster.meta(0).machine_addr.as_str(),
            "alpha-1",
            "3"
        ],
        "{table}"
    );
    assert_eq!(
        row_of(&rows[1..], "beta")
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["beta", cluster.meta(1).machine_addr.as_str(), "beta-1", "3"],
        "{table}"
    );
    assert_eq!(
        row_of(&rows[1..], "gamma")
            .split_whitespace()
            .take(4)
            .collect::<Vec<_>>(),
        [
            "gamma",
            cluster.meta(2).machine_addr.as_str(),
            "ERROR",
            "UNAVAILABLE:"
        ],
        "{table}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_every_machines_ticks_as_json_lines() {
    let cluster = Cluster::start("cli-watch").await;
    let out = cli(&[
        "call",
        "--via",
        &via(&cluster, 1),
        "-m",
        "*",
        "MachineInfo/Watch",
        "-d",
        r#"{"count": 2, "intervalMs": 50}"#,
        "-o",
        "jsonl",
    ])
    .await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    for (i, name) in NAMES.iter().enumerate() {
        let addr = cluster.meta(i).machine_addr;
        let mine: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(&format!(r#"{{"machine":"{name}","#)))
            .collect();
        assert_eq!(
            mine,
            [
                format!(
                    r#"{{"machine":"{name}","machineAddr":"{addr}","machineId":"m{}","reply":{{"name":"{name}"}}}}"#,
                    i + 1
                ),
                format!(
                    r#"{{"machine":"{name}","machineAddr":"{addr}","machineId":"m{}","reply":{{"name":"{name}","seq":1}}}}"#,
                    i + 1
                ),
            ],
            "{text}"
        );
    }
    cluster.shutdown().await;
}

/// A method whose reply has no fan-out layout (server reflection: a bidi
/// stream, no `Metadata` field) fans out through the envelope, one entry
/// per machine, in every format; before the envelope it was refused with
/// `FAILED_PRECONDITION`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_method_fans_out_one_row_per_machine() {
    let cluster = Cluster::start("cli-any").await;
    let alpha = via(&cluster, 0);
    // The machines' reflection does not describe itself: a protoset does.
    let protoset = cluster.dir().join("reflection.pb");
    std::fs::write(&protoset, tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET).unwrap();
    let protoset = protoset.to_str().unwrap();
    let call = |format: &'static str| {
        let alpha = alpha.clone();
        async move {
            cli(&[
                "call",
                "--via",
                &alpha,
                "--protoset",
                protoset,
                "-m",
                "alpha,beta,gamma",
                "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "-d",
                r#"{"listServices": ""}"#,
                "-o",
                format,
            ])
            .await
        }
    };
    let listed = r#""listServicesResponse":{"service":[{"name":"machineinfo.v1.MachineInfo"}"#;

    let out = call("jsonl").await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (i, name) in NAMES.iter().enumerate() {
        let line = line_of(&lines, name);
        let addr = cluster.meta(i).machine_addr;
        assert!(
            line.starts_with(&format!(
                r#"{{"machine":"{name}","machineAddr":"{addr}","machineId":"m{}","reply":{{"#,
                i + 1
            )) && line.contains(listed),
            "{text}"
        );
    }

    let out = call("table").await;
    assert_exit(&out, 0);
    let table = stdout(&out);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert_eq!(
        rows[0].split_whitespace().collect::<Vec<_>>(),
        ["MACHINE", "ADDRESS", "VALID_HOST"],
        "{table}"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let addr = cluster.meta(i).machine_addr;
        assert_eq!(
            row_of(&rows[1..], name)
                .split_whitespace()
                .collect::<Vec<_>>(),
            [*name, addr.as_str()],
            "{table}"
        );
    }

    // JSON: a reply type without the tags is one document per reply, the
    // machine beside the reply (jsonl's object, indented).
    let out = call("json").await;
    assert_exit(&out, 0);
    let json = stdout(&out);
    for name in NAMES {
        assert!(
            json.contains(&format!("{{\n  \"machine\": \"{name}\",\n")),
            "{json}"
        );
    }
    assert_eq!(
        json.matches("\"listServicesResponse\": {").count(),
        3,
        "{json}"
    );
    cluster.shutdown().await;
}

/// Alpha, beta and gamma, gamma's server taking calls and never answering.
async fn cluster_with_a_hung_machine(tag: &str) -> Cluster {
    let mut cluster = Cluster::start(tag).await;
    let gamma = cluster.index("gamma");
    cluster.stop_service(gamma).await;
    let _ = std::fs::remove_file(&cluster.nodes[gamma].socket);
    hang_on(&cluster.nodes[gamma].socket);
    cluster
}

/// Runs `switchyard <args>`, reading its stdout line by line as it comes:
/// each line with when it arrived, and the exit status.
async fn cli_timed<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Vec<(Duration, String)>, Output) {
    use tokio::io::AsyncBufReadExt as _;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lines = Vec::new();
    while let Some(line) = bounded("a line of output", stdout.next_line())
        .await
        .unwrap()
    {
        lines.push((started.elapsed(), line));
    }
    let out = bounded("the exit", child.wait_with_output()).await.unwrap();
    (lines, out)
}

/// A fan-out prints each machine's row as it answers: alpha's and beta's
/// before a hung gamma's timeout (`--machine-timeout`), which is then its
/// own DEADLINE_EXCEEDED row, exit status 1. Without `--machine-timeout` a
/// little less than `--timeout` bounds each machine, so the hung one is
/// still a row of its own rather than failing the whole call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_print_as_machines_answer_and_a_hung_one_times_out() {
    let cluster = cluster_with_a_hung_machine("cli-hung").await;
    let alpha = via(&cluster, 0);
    let args = |extra: &[&'static str]| {
        let mut args = vec![
            "call".to_owned(),
            "--via".to_owned(),
            alpha.clone(),
            "-m".to_owned(),
            "alpha,beta,gamma".to_owned(),
            DESCRIBE.to_owned(),
            "-o".to_owned(),
            "jsonl".to_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let check = |lines: &[(Duration, String)], out: &Output, bound: Duration| {
        assert_exit(out, 1);
        let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(lines.len(), 3, "{text:#?}");
        let at = |name: &str| {
            let line = line_of(&text, name);
            lines.iter().find(|(_, l)| l == line).unwrap().0
        };
        for name in ["alpha", "beta"] {
            assert!(
                line_of(&text, name).contains(&format!(r#""reply":{{"name":"{name}","#)),
                "{text:#?}"
            );
            assert!(at(name) < bound, "{name} at {:?}: {text:#?}", at(name));
        }
        let gamma = line_of(&text, "gamma");
        assert!(
            gamma.contains(r#""error":{"code":"DEADLINE_EXCEEDED","message":"machine "#)
                && gamma.contains("did not answer within"),
            "{text:#?}"
        );
        assert!(at("gamma") >= bound, "gamma at {:?}", at("gamma"));
        assert_eq!(text.last(), Some(&gamma), "{text:#?}");
    };

    let (lines, out) = cli_timed(&args(&["--machine-timeout", "1s"])).await;
    check(&lines, &out, Duration::from_secs(1));

    let (lines, out) = cli_timed(&args(&["--timeout", "2s"])).await;
    check(&lines, &out, Duration::from_millis(1800));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_describes_through_reflection() {
    let cluster = Cluster::start("cli-list").await;
    let beta = via(&cluster, 1);
    // Every Switchyard's reflection knows its own API besides its machine's.
    let out = cli(&["list", "--via", &beta, "-m", "gamma"]).await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "machineinfo.v1.MachineInfo\nswitchyard.v1.Cluster\n"
    );
    let out = cli(&["describe", "--via", &beta, "switchyard.v1.MachineReply"]).await;
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.starts_with("switchyard.v1.MachineReply is a message:")
            && text.contains(".switchyard.common.v1.Metadata metadata = 1;")
            && text.contains("bool last = 3;"),
        "{text}"
    );
    let out = cli(&["list", "--via", &beta, "switchyard.v1.Cluster"]).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("/switchyard.v1.Cluster/ListMachines"),
        "{}",
        stdout(&out)
    );

    let out = cli(&["list", "--via", &beta, "MachineInfo"]).await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "/machineinfo.v1.MachineInfo/Describe(machineinfo.v1.DescribeRequest) returns (machineinfo.v1.DescribeResponse)\n\
         /machineinfo.v1.MachineInfo/Watch(machineinfo.v1.WatchRequest) returns (stream machineinfo.v1.Tick)\n"
    );

    let out = cli(&["describe", "--via", &beta, "--machine", "alpha", "Tick"]).await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "machineinfo.v1.Tick is a message:\nmessage Tick {\n  \
         .switchyard.common.v1.Metadata metadata = 1;\n  string name = 2;\n  uint32 seq = 3;\n}\n"
    );
    let out = cli(&["describe", "--via", &beta, "MachineInfo.Watch"]).await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "machineinfo.v1.MachineInfo.Watch is a method:\n\
         // A stream of `count` ticks, one every `interval_ms`.\n\
         rpc Watch ( .machineinfo.v1.WatchRequest ) returns ( stream .machineinfo.v1.Tick );\n"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_exit_2_saying_what_to_change() {
    let cluster = Cluster::start("cli-usage").await;
    let alpha = via(&cluster, 0);

    let out = cli(&["call", "--via", &alpha, "MachineInfo/Descrbe"]).await;
    assert_exit(&out, 2);
    assert_eq!(
        stderr(&out),
        "switchyard: service `machineinfo.v1.MachineInfo` has no method `Descrbe`. \
         Did you mean `Describe`? Its methods: Describe, Watch\n"
    );
    let out = cli(&["call", "--via", &alpha, "Nope/Describe"]).await;
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("unknown service `Nope`"),
        "{}",
        stderr(&out)
    );
    let out = cli(&[
        "call",
        "--via",
        &alpha,
        "-m",
        "beta",
        "MachineInfo/Watch",
        "-d",
        r#"{"count": "three"}"#,
    ])
    .await;
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("invalid value for field `count` of machineinfo.v1.WatchRequest"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["call", "--via", &alpha, DESCRIBE, "-d", "{"]).await;
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("request data is not valid JSON"),
        "{}",
        stderr(&out)
    );
    let out = cli(&["call", "--via", "nowhere", DESCRIBE]).await;
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("--via \"nowhere\""),
        "{}",
        stderr(&out)
    );
    let out = cli(&["call", "--via", &alpha, "Describe"]).await;
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("is not a method name"),
        "{}",
        stderr(&out)
    );
    // A machine nobody knows: the call fails (exit 1), saying which.
    let out = cli(&["call", "--via", &alpha, "--machine", "delta", DESCRIBE]).await;
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("delta"), "{}", stderr(&out));
    cluster.shutdown().await;
}

/// A Switchyard on a Unix socket named by a config file, in front of a
/// server without reflection: the schema comes from `--protoset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protoset_for_a_server_without_reflection_via_the_configured_socket() {
    let dir = socket_dir("cli-protoset");
    let service_socket = dir.path().join("api.sock");
    let _service = machine_info::Server::spawn_unix_with("solo", &service_socket, false).unwrap();
    let socket = dir.path().join("sy.sock");
    let mut settings = Settings::default();
    settings.start.listen = Some(vec![Listen(Address::Unix(socket.clone()))]);
    settings.start.local_socket = service_socket.clone();
    settings.start.detect_streamed_methods = false;
    let daemon = Daemon::start(&settings).await.unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            "local_socket = {:?}\nlisten = [\"[::1]:1\", \"unix:{}\"]\n",
            service_socket.display().to_string(),
            socket.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let out = cli(&["call", "--config", config, DESCRIBE]).await;
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("does not support gRPC reflection")
            && stderr(&out).contains("--protoset"),
        "{}",
        stderr(&out)
    );

    let protoset = dir.path().join("machineinfo.protoset");
    std::fs::write(&protoset, machine_info::pb::FILE_DESCRIPTOR_SET).unwrap();
    let protoset = protoset.to_str().unwrap();
    let out = cli(&[
        "call",
        "--config",
        config,
        "--protoset",
        protoset,
        DESCRIBE,
        "-o",
        "jsonl",
    ])
    .await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).starts_with(r#"{"reply":{"name":"solo""#),
        "{}",
        stdout(&out)
    );
    // list and describe need no connection with a protoset.
    let out = cli(&["list", "--protoset", protoset, "--via", "unix:/nonexistent"]).await;
    assert_exit(&out, 0);
    assert_eq!(stdout(&out), "machineinfo.v1.MachineInfo\n");
    bounded("shutdown", daemon.shutdown()).await.unwrap();
    assert!(!Path::new(&socket).exists());
}

/// A reply above tonic's default 4 MiB and below the daemon's 32 MiB
/// arrives whole; a smaller `--max-message-size` refuses it, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_up_to_the_daemons_message_size_arrive() {
    use base64::Engine as _;

    let echo = spawn_echo(Reflection::V1);
    let dir = socket_dir("cli-large");
    let socket = dir.path().join("sy.sock");
    let mut settings = Settings::default();
    settings.start.listen = Some(vec![Listen(Address::Unix(socket.clone()))]);
    settings.start.local_socket = echo.socket.path.clone();
    settings.start.detect_streamed_methods = false;
    let daemon = Daemon::start(&settings).await.unwrap();
    let via = format!("unix:{}", socket.display());

    // 5 MiB of bytes: a 5 MiB request, echoed as a 5 MiB reply.
    let blob = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 5 << 20]);
    let data = dir.path().join("request.json");
    std::fs::write(&data, format!(r#"{{"by": "{blob}"}}"#)).unwrap();
    let data = format!("@{}", data.display());
    let call = [
        "call",
        "--via",
        &via,
        "--timeout",
        "60s",
        "test.v1.Echo/Echo",
        "-d",
        &data,
        "-o",
        "json",
    ];

    let out = cli(&call).await;
    assert_exit(&out, 0);
    let reply = stdout(&out);
    assert!(
        reply == format!("{{\n  \"by\": \"{blob}\"\n}}\n"),
        "not the whole reply: {} bytes",
        reply.len()
    );

    let out = cli(&[&call[..], &["--max-message-size", "4194304"]].concat()).await;
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("above the limit of 4194304 bytes")
            && stderr(&out).contains("--max-message-size"),
        "{}",
        stderr(&out)
    );
    bounded("shutdown", daemon.shutdown()).await.unwrap();
}

/// A reflection server whose file lists none of its imports (as
/// @grpc/reflection serves files, grpc-node#3034): the well-known types are
/// built in, the other files asked for by the names they define; a file
/// found nowhere is an error that shows how to make a protoset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_a_server_leaves_out_are_found() {
    let bare = spawn_bare(true);
    let via = format!("unix:{}", bare.socket.path.display());
    let request = r#"{"at": "2024-01-02T03:04:05Z", "part": {"name": "x"}}"#;
    let echo = "bare.v1.Bare/Echo";
    let out = cli(&["call", "--via", &via, echo, "-d", request, "-o", "jsonl"]).await;
    assert_exit(&out, 0);
    assert_eq!(
        stdout(&out),
        "{\"reply\":{\"at\":\"2024-01-02T03:04:05Z\",\"part\":{\"name\":\"x\"}}}\n"
    );
    // Through every service, as list and describe ask.
    let out = cli(&["describe", "--via", &via, "Stamp"]).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains(".google.protobuf.Timestamp at = 1;"),
        "{}",
        stdout(&out)
    );

    let lean = spawn_bare(false);
    let via = format!("unix:{}", lean.socket.path.display());
    let out = cli(&["call", "--via", &via, echo, "-d", request]).await;
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("bare.v1.Part' is not defined")
            && err.contains("--protoset FILE")
            && err.contains("protoc --include_imports --descriptor_set_out=FILE"),
        "{err}"
    );
}

/// Over TCP with TLS, the client presents its certificate and checks the
/// Switchyard's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_mutual_tls() {
    let (cluster, certs) = Cluster::start_tls("cli-tls", |_, _, _| {}).await;
    let admin = certs.client("admin", &["admin"]);
    let (cert, key, ca) = (
        admin.cert.to_str().unwrap(),
        admin.key.to_str().unwrap(),
        admin.ca.to_str().unwrap(),
    );
    let alpha = via(&cluster, 0);
    let tls = ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca];
    let mut args = vec![
        "call", "--via", &alpha, "-m", "beta", DESCRIBE, "-o", "jsonl",
    ];
    args.extend(tls);
    let out = cli(&args).await;
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains(r#""reply":{"name":"beta""#),
        "{}",
        stdout(&out)
    );
    // Without a certificate the Switchyard refuses the connection.
    let out = cli(&["call", "--via", &alpha, DESCRIBE]).await;
    assert_exit(&out, 2);
    cluster.shutdown().await;
}

/// TLS set up wrong: the error says what is wrong and which flag fixes it,
/// whatever transport error the call itself ended with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_mistakes_say_what_is_wrong_and_which_flag_fixes_it() {
    let (cluster, certs) = Cluster::start_tls("cli-tls-hints", |_, settings, _| {
        settings.live.authz = vec![switchyard_director::AuthzRule {
            roles: vec!["admin".into()],
            methods: vec!["*".parse().unwrap()],
        }];
    })
    .await;
    let alpha = via(&cluster, 0);
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let admin = certs.client("admin", &["admin"]);
    // Another cluster's client certificate, and a bundle trusting both CAs
    // (so that the client's own files are consistent).
    let other = Certs::create(&certs.dir.join("other"));
    let foreign = other.client("mallory", &["admin"]);
    let both = certs.dir.join("both.crt");
    std::fs::write(
        &both,
        [
            std::fs::read(&admin.ca).unwrap(),
            std::fs::read(&foreign.ca).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let machine = certs.machine("beta");
    let run = |tls: Option<[String; 3]>, args: &'static [&'static str]| {
        let alpha = alpha.clone();
        async move {
            let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            all.extend(["--via".to_owned(), alpha]);
            if let Some([cert, key, ca]) = tls {
                all.extend([
                    "--tls-cert".to_owned(),
                    cert,
                    "--tls-key".to_owned(),
                    key,
                    "--tls-ca".to_owned(),
                    ca,
                ]);
            }
            cli(&all.iter().map(String::as_str).collect::<Vec<_>>()).await
        }
    };
    let files = |paths: &switchyard_engine::tls::TlsPaths, ca: &std::path::Path| {
        Some([path(&paths.cert), path(&paths.key), path(ca)])
    };
    let call: &[&str] = &["call", DESCRIBE];
    let machines: &[&str] = &["machines"];

    for args in [call, machines] {
        // No certificate against a TLS listener.
        let out = run(None, args).await;
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("speaks TLS") && err.contains("--tls-cert, --tls-key and --tls-ca"),
            "{args:?}: {err}"
        );
        // A certificate the Switchyard does not trust.
        let out = run(files(&foreign, &both), args).await;
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("refused this client's certificate")
                && err.contains("switchyard cert client"),
            "{args:?}: {err}"
        );
        // A CA that does not trust the Switchyard.
        let out = run(files(&foreign, &foreign.ca), args).await;
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("certificate is not accepted") && err.contains("--tls-ca"),
            "{args:?}: {err}"
        );
        // A machine's certificate: allowed to connect, not to call.
        let out = run(files(&machine, &machine.ca), args).await;
        assert_exit(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains(
                "not allowed for roles [machine]: the machine role is for \
                 Switchyard-to-Switchyard forwarding; call with a client certificate \
                 (`switchyard cert client`)"
            ),
            "{args:?}: {err}"
        );
    }
    // A failure that is not TLS's gets no TLS hint.
    let out = run(
        files(&admin, &admin.ca),
        &["call", "--machine", "delta", DESCRIBE],
    )
    .await;
    assert_exit(&out, 1);
    assert!(!stderr(&out).contains("TLS"), "{}", stderr(&out));
    cluster.shutdown().await;
}

/// `switchyard demo --keep` prints `switchyard call` commands that work as
/// printed against the cluster it keeps running, until ctrl-c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_calls_that_work_against_the_kept_cluster() {
    use tokio::io::AsyncBufReadExt as _;

    let tmp = socket_dir("demo-keep");
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["demo", "--keep", "--dir", tmp.path().to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the demo runs");
    let mut lines = tokio::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    loop {
        let line = bounded("the demo's output", lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the demo ended early:\n{}", printed.join("\n")));
        let done = line.starts_with("Try: switchyard machines");
        printed.push(line);
        if done {
            break;
        }
    }
    let commands: Vec<String> = printed
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix("$ switchyard "))
        .map(|rest| format!("\"$0\" {rest}"))
        .collect();
    assert_eq!(commands.len(), 7, "{printed:#?}");
    // gamma was stopped and started again: wait until alpha reaches it.
    for command in &commands {
        let run = || async {
            let out = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(command)
                .arg(env!("CARGO_BIN_EXE_switchyard"))
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            out.status.success().then_some(out)
        };
        let out = eventually(WAIT, &format!("`{command}` succeeding"), run).await;
        assert!(!stdout(&out).is_empty(), "{command}");
    }
    let pid = demo.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let status = bounded("the demo's exit", demo.wait()).await.unwrap();
    assert!(status.success(), "{status}");
}
