//! Three real `switchyard serve` processes registering themselves in a real
//! etcd: every machine is seen by a fan-out; one is killed (SIGKILL, no
//! goodbye) and within its heartbeat TTL it is answered as down without
//! being dialled; it restarts and is back; one is stopped with SIGTERM and
//! is down at once (its lease revoked, long before its TTL); bad data in
//! etcd is one log line and nothing else.

mod common;
mod etcd_common;

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use machine_info::pb::DescribeResponse;
use switchyard::etcd::LocalEtcd;
use tokio::time::Instant;
use tonic::Code;

use common::*;
use etcd_common::*;

/// One machine: its service runs in the test, its Switchyard as a process.
struct Machine {
    id: &'static str,
    name: &'static str,
    addr: SocketAddr,
    socket: PathBuf,
    ttl: Duration,
    _service: machine_info::Server,
    process: Option<Process>,
}

impl Machine {
    fn new(dir: &Path, id: &'static str, name: &'static str, ttl: Duration) -> Self {
        let socket = dir.join(format!("{name}.sock"));
        let service = machine_info::Server::spawn_unix(name, &socket).unwrap();
        Self {
            id,
            name,
            addr: SocketAddr::from((Ipv6Addr::LOCALHOST, free_port())),
            socket,
            ttl,
            _service: service,
            process: None,
        }
    }

    /// Starts its Switchyard and waits until it listens.
    async fn start(&mut self, etcd: &LocalEtcd) {
        let addr = self.addr.to_string();
        let ttl = self.ttl.as_secs().to_string();
        let endpoint = etcd.endpoint();
        let args: Vec<&str> = vec![
            "serve",
            "--listen",
            &addr,
            "--local-address",
            &addr,
            "--local-socket",
            self.socket.to_str().unwrap(),
            "--machine-id",
            self.id,
            "--machine-name",
            self.name,
            "--etcd-endpoint",
            &endpoint,
            "--etcd-prefix",
            PREFIX,
            "--etcd-register",
            // The machines share `::1`, which is no mesh address.
            "--allowed-network",
            "::1/128",
            "--etcd-heartbeat-ttl-secs",
            &ttl,
            "--no-detect-streamed-methods",
        ];
        let mut process = Process::spawn(&args);
        let what = format!("{} listening", self.name);
        let target = self.addr;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(target).await.is_err() {
            if let Some(status) = process.exited() {
                panic!("{what}: exited ({status}):\n{}", process.stderr());
            }
            assert!(started.elapsed() < WAIT, "{what}: not within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.process = Some(process);
    }

    fn process(&mut self) -> &mut Process {
        self.process.as_mut().expect("running")
    }
}

/// The machine an entry of a fan-out reply is tagged with, and its error if
/// it failed.
type Outcome = (String, Option<(Code, String)>);

fn outcomes(reply: &DescribeResponse) -> Vec<Outcome> {
    reply
        .messages
        .iter()
        .map(|d| {
            let name = d.metadata.as_ref().map(|m| m.machine_name.clone());
            (name.unwrap_or_default(), entry_error(d.metadata.as_ref()))
        })
        .collect()
}

/// `machines: *` through `via` until `check` accepts the outcomes.
async fn fan_out_until(via: SocketAddr, what: &str, check: impl Fn(&[Outcome]) -> bool) {
    let client = tcp_client(via);
    let check = &check;
    eventually(WAIT, what, || {
        let mut client = client.clone();
        async move {
            let reply = call_describe(&mut client, &[("machines", "*")])
                .await
                .ok()?;
            check(&outcomes(&reply)).then_some(())
        }
    })
    .await;
}

fn down(name: &str) -> Option<(Code, String)> {
    Some((
        Code::Unavailable,
        format!("machine {name} is down (no heartbeat)"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_machines_go_down_by_heartbeat_and_come_back() {
    let tmp = socket_dir("etcd-procs");
    let Some(etcd) = etcd_or_skip(tmp.path()).await else {
        return;
    };
    // gamma dies without a goodbye: a short TTL shows it soon. beta stops
    // cleanly: a TTL far longer than the test proves its lease is revoked.
    let short = Duration::from_secs(2);
    let long = Duration::from_secs(60);
    let mut machines = [
        Machine::new(tmp.path(), "m1", "alpha", short),
        Machine::new(tmp.path(), "m2", "beta", long),
        Machine::new(tmp.path(), "m3", "gamma", short),
    ];
    for machine in &mut machines {
        machine.start(&etcd).await;
    }
    let alpha = machines[0].addr;
    let all_answer = |o: &[Outcome]| {
        o.len() == 3
            && o.iter()
                .zip(["alpha", "beta", "gamma"])
                .all(|((name, error), expected)| name == expected && error.is_none())
    };
    fan_out_until(alpha, "every machine registered and answering", all_answer).await;

    // SIGKILL: gamma's lease is not revoked; it expires within the TTL.
    let killed = Instant::now();
    machines[2].process().signal("KILL");
    let _ = machines[2].process().wait_exit(WAIT).await;
    machines[2].process = None;
    fan_out_until(alpha, "gamma down by heartbeat", |o| {
        o.len() == 3
            && o[2] == ("gamma".to_owned(), down("gamma"))
            && o[..2].iter().all(|e| e.1.is_none())
    })
    .await;
    let noticed = killed.elapsed();
    eprintln!("gamma seen down {noticed:?} after SIGKILL (TTL {short:?})");
    assert!(
        noticed < short + Duration::from_secs(8),
        "gamma was seen down {noticed:?} after the kill (TTL {short:?})"
    );
    // Down means not dialled: a black hole on gamma's port, where any dial
    // would hang until the connect timeout, sees nothing, and the calls
    // answer at once.
    let hole = Blackhole::bind(machines[2].addr).await;
    let mut client = tcp_client(alpha);
    for _ in 0..5 {
        let started = Instant::now();
        let reply = call_describe(&mut client, &[("machines", "*")])
            .await
            .unwrap();
        assert_eq!(outcomes(&reply)[2], ("gamma".to_owned(), down("gamma")));
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "a fan-out took {took:?}");
        // Named alone, it fails the same way, at once.
        let err = call_describe(&mut client, &[("machine", "gamma")])
            .await
            .unwrap_err();
        assert_status(
            &err,
            Code::Unavailable,
            &["machine gamma is down (no heartbeat)"],
        );
    }
    assert_eq!(hole.accepted(), 0, "gamma was dialled while down");
    drop(hole);

    // gamma restarts: it registers again and answers.
    machines[2].start(&etcd).await;
    fan_out_until(alpha, "gamma back", all_answer).await;

    // SIGTERM: beta revokes its lease on the way out, so it is down at once
    // (its TTL is a minute).
    let stopped = Instant::now();
    machines[1].process().signal("TERM");
    fan_out_until(alpha, "beta down after SIGTERM", |o| {
        o.len() == 3 && o[1] == ("beta".to_owned(), down("beta"))
    })
    .await;
    let noticed = stopped.elapsed();
    eprintln!("beta seen down {noticed:?} after SIGTERM (TTL {long:?})");
    assert!(
        noticed < Duration::from_secs(15),
        "beta was seen down {noticed:?} after SIGTERM (TTL {long:?})"
    );
    let (status, stderr) = machines[1].process().wait_exit(WAIT).await;
    assert!(status.success(), "{stderr}");

    // Bad data: one log line naming the key; the rest of the registry and
    // every machine go on.
    let mut kv = etcd.client().await.unwrap();
    put(&mut kv, "machines/zz", "{oops").await;
    let key = format!("{PREFIX}machines/zz");
    machines[0].process().wait_log(&key).await;
    fan_out_until(alpha, "the registry after a bad entry", |o| {
        o.len() == 3 && o[0].1.is_none() && o[2].1.is_none()
    })
    .await;
    for i in [0, 2] {
        let machine = &mut machines[i];
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stderr = machine.process().stderr();
        let lines = stderr
            .lines()
            .filter(|l| l.contains("skipping entry") && l.contains(&key))
            .count();
        assert_eq!(lines, 1, "{}: {stderr}", machine.name);
        machine.process().signal("TERM");
        let (status, stderr) = machine.process().wait_exit(WAIT).await;
        assert!(status.success(), "{stderr}");
    }
}
