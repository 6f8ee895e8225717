//! The machine registry in etcd, with in-process Switchyards and a real
//! etcd on loopback: machines registering themselves, members written by an
//! operator while calls run (added, moved, removed), etcd stopped and
//! started again, a compaction past the watch, and bad entries.

mod common;
mod etcd_common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::CompactionOptions;
use machine_info::pb::DescribeResponse;
use switchyard::daemon::Daemon;
use switchyard::etcd::LocalEtcd;
use tokio::sync::watch;
use tonic::Code;

use common::*;
use etcd_common::*;

const A: usize = 0;

/// Heartbeat TTL where expiry is the point: short, so that it shows soon.
const TTL: Duration = Duration::from_secs(2);

/// Heartbeat TTL where expiry is not the point: long enough that a loaded
/// machine never misses a renewal.
const SAFE_TTL: Duration = Duration::from_secs(15);

/// A real etcd and the three machines registered in it with heartbeats of
/// `ttl`, or `None` (skip).
async fn registered_cluster(tag: &str, ttl: Duration) -> Option<(LocalEtcd, Cluster)> {
    let etcd = etcd_or_skip(&std::env::temp_dir()).await?;
    let settings = etcd_settings(&etcd.endpoint(), ttl);
    let cluster = Cluster::start_etcd(socket_dir(tag), &settings, |_, _| {}).await;
    Some((etcd, cluster))
}

/// One entry of a fan-out reply: the machine it is tagged with, and the
/// machine that answered or the error.
type Entry = (String, Result<String, (Code, String)>);

fn entries(reply: &DescribeResponse) -> Vec<Entry> {
    reply
        .messages
        .iter()
        .map(|d| {
            let m = d.metadata.clone().unwrap_or_default();
            let outcome = match entry_error(d.metadata.as_ref()) {
                Some(error) => Err(error),
                None => Ok(d.name.clone()),
            };
            (m.machine_name, outcome)
        })
        .collect()
}

fn all_answer(reply: &DescribeResponse, names: &[&str]) -> bool {
    let expected: Vec<_> = names
        .iter()
        .map(|n| ((*n).to_owned(), Ok((*n).to_owned())))
        .collect();
    entries(reply) == expected
}

/// `machines: *` calls through one machine, back to back, until stopped:
/// every call must succeed and every entry answer.
struct Load {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    fn start(
        mut client: machine_info::pb::machine_info_client::MachineInfoClient<
            tonic::transport::Channel,
        >,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let (mut calls, mut failures) = (0, Vec::new());
            // Bounded: a few thousand calls at most.
            while !*stopped.borrow_and_update() && calls < 5_000 {
                calls += 1;
                match call_describe(&mut client, &[("machines", "*")]).await {
                    Ok(reply) => {
                        for (machine, outcome) in entries(&reply) {
                            if let Err(error) = outcome {
                                failures.push(format!("{machine}: {error:?}"));
                            }
                        }
                    }
                    Err(status) => failures.push(format!("call: {status:?}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (calls, failures)
        });
        Self { stop, task }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.send_replace(true);
        bounded("load stops", self.task).await.expect("load task")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_register_themselves_and_fan_out_sees_all() {
    let Some((_etcd, cluster)) = registered_cluster("etcd-all", SAFE_TTL).await else {
        return;
    };
    let reply = call_describe(&mut cluster.client(A), &[("machines", "*")])
        .await
        .unwrap();
    assert!(
        all_answer(&reply, &NAMES),
        "every machine answers: {:?}",
        entries(&reply)
    );
    for (i, d) in reply.messages.iter().enumerate() {
        assert_eq!(d.metadata.as_ref(), Some(&cluster.meta(i)), "entry {i}");
    }
    // Names and IDs from etcd resolve like a file registry's.
    let reply = call_describe(
        &mut cluster.client(A),
        &[("machines", "m2"), ("machines", "gamma")],
    )
    .await
    .unwrap();
    assert!(
        all_answer(&reply, &["beta", "gamma"]),
        "{:?}",
        entries(&reply)
    );
    for node in &cluster.nodes {
        let daemon = node.daemon.as_ref().unwrap();
        assert!(daemon.registry_fresh());
        assert_eq!(daemon.etcd_registry().unwrap().full_reads(), 1);
    }
    // A reload (SIGHUP) leaves the registry to etcd.
    cluster.daemon(A).reload(&cluster.nodes[A].settings);
    let reply = call_describe(&mut cluster.client(A), &[("machines", "*")])
        .await
        .unwrap();
    assert!(all_answer(&reply, &NAMES), "{:?}", entries(&reply));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_move_and_leave_while_calls_run() {
    let Some((etcd, cluster)) = registered_cluster("etcd-members", SAFE_TTL).await else {
        return;
    };
    let mut client = cluster.client(A);
    let alpha = cluster.daemon(A);

    // delta: a service and a Switchyard listening on two ports, not
    // registering itself: an operator writes its entry.
    let socket = cluster.dir().join("delta.sock");
    let _service = machine_info::Server::spawn_unix("delta", &socket).unwrap();
    let (first, second) = (loopback_listener().await, loopback_listener().await);
    let (p1, p2) = (first.local_addr().unwrap(), second.local_addr().unwrap());
    let delta = Daemon::with_listeners(
        &node_settings(p1, socket, None),
        vec![first.into(), second.into()],
    );
    let load = Load::start(cluster.client(A));
    let mut kv = etcd.client().await.unwrap();

    // Added: callable as soon as the watch delivers it. Its heartbeat key
    // first, else the load's `*` could see it registered but not alive.
    put(&mut kv, "alive/m4", "").await;
    put_member(&mut kv, "m4", "delta", &p1.to_string()).await;
    eventually(WAIT, "delta callable by name", || {
        let mut client = client.clone();
        async move {
            call_describe(&mut client, &[("machines", "delta")])
                .await
                .ok()
        }
    })
    .await;
    let reply = call_describe(&mut client, &[("machines", "*")])
        .await
        .unwrap();
    assert!(
        all_answer(&reply, &["alpha", "beta", "gamma", "delta"]),
        "{:?}",
        entries(&reply)
    );

    // Moved: new calls dial the new address; a call running on the old
    // connection finishes.
    let mut running = start_watch(&mut client, 30, 50, &[("machines", "delta")]).await;
    assert!(next_tick(&mut running).await.is_some());
    put_member(&mut kv, "m4", "delta", &p2.to_string()).await;
    let new_label = label(p2, switchyard_director::DEFAULT_REMOTE_PORT);
    eventually(WAIT, "delta at its new address", || {
        let (mut client, new_label) = (client.clone(), new_label.clone());
        async move {
            let reply = call_describe(&mut client, &[("machines", "*")])
                .await
                .ok()?;
            let d = reply.messages.get(3)?;
            (d.metadata.as_ref()?.machine_addr == new_label && d.name == "delta").then_some(())
        }
    })
    .await;
    let cached: HashSet<_> = alpha.director().cached_remotes().into_iter().collect();
    assert!(
        cached.contains(&as_v6(p2)) && !cached.contains(&as_v6(p1)),
        "{cached:?}"
    );
    assert_eq!(
        rest_of(&mut running).await.len(),
        29,
        "the running call finished"
    );

    // Removed: unknown at once for new calls; a running call finishes and
    // the cached connection is forgotten.
    let mut running = start_watch(&mut client, 30, 50, &[("machines", "delta")]).await;
    assert!(next_tick(&mut running).await.is_some());
    delete(&mut kv, "machines/m4").await;
    delete(&mut kv, "alive/m4").await;
    eventually(WAIT, "delta unknown", || {
        let mut client = client.clone();
        async move {
            let err = call_describe(&mut client, &[("machines", "delta")])
                .await
                .err()?;
            (err.code() == Code::InvalidArgument && err.message().contains("\"delta\""))
                .then_some(())
        }
    })
    .await;
    assert!(!alpha.director().cached_remotes().contains(&as_v6(p2)));
    assert_eq!(
        rest_of(&mut running).await.len(),
        29,
        "the running call finished"
    );
    let reply = call_describe(&mut client, &[("machines", "*")])
        .await
        .unwrap();
    assert!(all_answer(&reply, &NAMES), "{:?}", entries(&reply));

    let (calls, failures) = load.finish().await;
    assert!(calls >= 5, "only {calls} calls ran");
    assert!(failures.is_empty(), "{failures:?}");
    bounded("delta shutdown", delta.shutdown()).await.unwrap();
    cluster.shutdown().await;
}

fn as_v6(addr: std::net::SocketAddr) -> std::net::SocketAddrV6 {
    match addr {
        std::net::SocketAddr::V6(v6) => v6,
        std::net::SocketAddr::V4(v4) => panic!("{v4} is not IPv6"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_keeps_the_registry_and_the_watch_resumes() {
    let Some(mut etcd) = etcd_or_skip(&std::env::temp_dir()).await else {
        return;
    };
    let settings = etcd_settings(&etcd.endpoint(), TTL);
    let cluster = Cluster::start_etcd(socket_dir("etcd-down"), &settings, |i, settings| {
        if i == A {
            metrics_on_loopback(settings);
        }
    })
    .await;
    let mut client = cluster.client(A);
    let daemons: Vec<&Daemon> = (0..NAMES.len()).map(|i| cluster.daemon(i)).collect();
    let ops = daemons[A].metrics_addr().expect("metrics listener");
    eventually(WAIT, "/readyz 200", || async {
        (http_get(ops, "/readyz").await.0 == 200).then_some(())
    })
    .await;

    etcd.kill();
    eventually(WAIT, "every machine says its registry is stale", || async {
        daemons.iter().all(|d| !d.registry_fresh()).then_some(())
    })
    .await;
    let (status, body) = http_get(ops, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("stale"), "{body}");
    // The last registry stays in force, liveness included, for a while
    // longer than the heartbeat TTL.
    for _ in 0..3 {
        let reply = call_describe(&mut client, &[("machines", "*")])
            .await
            .unwrap();
        assert!(all_answer(&reply, &NAMES), "{:?}", entries(&reply));
        tokio::time::sleep(TTL).await;
    }
    assert!(daemons.iter().all(|d| !d.registry_fresh()));

    etcd.restart().await.unwrap();
    eventually(WAIT, "every machine follows etcd again", || async {
        daemons.iter().all(|d| d.registry_fresh()).then_some(())
    })
    .await;
    assert_eq!(http_get(ops, "/readyz").await.0, 200);
    // A change made after the restart arrives through the resumed watch: a
    // member without a heartbeat, answered as down without dialling.
    let mut kv = etcd.client().await.unwrap();
    let zeta = format!("[::1]:{}", free_port());
    put_member(&mut kv, "m9", "zeta", &zeta).await;
    let reply = eventually(WAIT, "zeta listed", || {
        let mut client = client.clone();
        async move {
            let reply = call_describe(&mut client, &[("machines", "*")])
                .await
                .ok()?;
            (reply.messages.len() == 4).then_some(reply)
        }
    })
    .await;
    let zeta_entry = &entries(&reply)[3];
    assert_eq!(
        zeta_entry,
        &(
            "zeta".to_owned(),
            Err((
                Code::Unavailable,
                "machine zeta is down (no heartbeat)".to_owned()
            ))
        )
    );
    for daemon in &daemons {
        assert_eq!(
            daemon.etcd_registry().unwrap().full_reads(),
            1,
            "the watch resumed; nothing was read again"
        );
    }
    // The heartbeats survived etcd's restart (the leases were kept).
    tokio::time::sleep(TTL * 2).await;
    cluster.wait_liveness(&NAMES).await;
    cluster.shutdown().await;
}

/// One Switchyard that follows the registry through `endpoint` and
/// registers nothing; liveness off, so that members are just entries.
async fn follower(dir: &std::path::Path, endpoint: &str) -> Daemon {
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    let mut settings = node_settings(addr, dir.join("follower.sock"), None);
    settings.start.registry.etcd = Some(switchyard::config::EtcdSettings {
        liveness: false,
        ..etcd_settings(endpoint, TTL)
    });
    Daemon::with_listeners(&settings, vec![listener.into()])
}

/// The member IDs in `daemon`'s registry.
fn ids(daemon: &Daemon) -> Vec<String> {
    daemon
        .director()
        .registry()
        .map(|r| r.machines().iter().map(|m| m.id.clone()).collect())
        .unwrap_or_default()
}

async fn wait_ids(daemon: &Daemon, expected: &[&str]) {
    eventually(WAIT, &format!("registry {expected:?}"), || async {
        (ids(daemon) == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_past_the_watch_revision_reads_the_registry_again() {
    let dir = socket_dir("etcd-compact");
    let Some(etcd) = etcd_or_skip(dir.path()).await else {
        return;
    };
    let proxy = Proxy::start(etcd.client_addr()).await;
    let mut kv = etcd.client().await.unwrap();
    put_member(&mut kv, "m1", "alpha", "fd00::1").await;
    put_member(&mut kv, "m2", "beta", "fd00::2").await;
    let daemon = follower(dir.path(), &proxy.endpoint()).await;
    wait_ids(&daemon, &["m1", "m2"]).await;
    eventually(WAIT, "fresh", || async {
        daemon.registry_fresh().then_some(())
    })
    .await;

    // Cut off from etcd while the registry changes and its history is
    // compacted past the revision the watch would resume from.
    proxy.set_enabled(false);
    eventually(WAIT, "stale", || async {
        (!daemon.registry_fresh()).then_some(())
    })
    .await;
    delete(&mut kv, "machines/m1").await;
    put_member(&mut kv, "m2", "beta", "[fd00::2]:51001").await;
    put_member(&mut kv, "m3", "gamma", "fd00::3").await;
    let now = revision(&mut kv).await;
    kv.compact(now, Some(CompactionOptions::new().with_physical()))
        .await
        .expect("compact");
    assert_eq!(
        ids(&daemon),
        ["m1", "m2"],
        "the last registry stays meanwhile"
    );

    proxy.set_enabled(true);
    wait_ids(&daemon, &["m2", "m3"]).await;
    let registry = daemon.director().registry().unwrap();
    assert_eq!(registry.machines()[0].addr.to_string(), "[fd00::2]:51001");
    eventually(WAIT, "fresh", || async {
        daemon.registry_fresh().then_some(())
    })
    .await;
    assert_eq!(
        daemon.etcd_registry().unwrap().full_reads(),
        2,
        "the compacted watch was replaced by a full read"
    );
    // And the watch goes on from there.
    put_member(&mut kv, "m4", "delta", "fd00::4").await;
    wait_ids(&daemon, &["m2", "m3", "m4"]).await;
    bounded("shutdown", daemon.shutdown()).await.unwrap();
}

/// Log lines written on this thread, for as long as the guard lives.
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || sink.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

// Current-thread runtime: every task logs on this thread, where the
// capture is installed.
#[tokio::test]
async fn bad_entries_are_skipped_with_one_log_line_each() {
    let dir = socket_dir("etcd-bad");
    let Some(etcd) = etcd_or_skip(dir.path()).await else {
        return;
    };
    let (logs, _guard) = capture_logs();
    let mut kv = etcd.client().await.unwrap();
    let oversize = format!(
        r#"{{"id":"m6","name":"zeta","addr":"fd00::6","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    // Each kind of bad entry, there at the first read...
    put_member(&mut kv, "m1", "alpha", "fd00::1").await;
    put(&mut kv, "machines/m2", "{not json").await;
    put_member(&mut kv, "m3", "gamma", "10.0.0.3").await;
    put(
        &mut kv,
        "machines/m4",
        &member_json("mX", "delta", "fd00::4"),
    )
    .await;
    put_member(&mut kv, "m5", "alpha", "fd00::5").await;
    put(&mut kv, "machines/m6", &oversize).await;
    put_member(&mut kv, "m7", "eta", "[fd00::7]:51001").await;
    put(
        &mut kv,
        "machines/a,b",
        &member_json("a,b", "comma", "fd00::8"),
    )
    .await;
    let daemon = follower(dir.path(), &etcd.endpoint()).await;
    wait_ids(&daemon, &["m1", "m7"]).await;

    // ...and each arriving through the watch.
    put(&mut kv, "machines/w2", "[]").await;
    put_member(&mut kv, "w3", "w3name", "fd00::3:1").await;
    put_member(&mut kv, "w3", "w3name", "[fd00::3:1]:0").await;
    put(
        &mut kv,
        "machines/w4",
        &member_json("other", "w4name", "fd00::4:1"),
    )
    .await;
    put_member(&mut kv, "w5", "eta", "fd00::5:1").await;
    put(&mut kv, "machines/w6", &oversize.replace("m6", "w6")).await;
    put(&mut kv, "alive/bad/id", "").await;
    put_member(&mut kv, "w8", "theta", "fd00::8").await;
    wait_ids(&daemon, &["m1", "m7", "w8"]).await;
    assert!(daemon.registry_fresh(), "bad data never stops the watch");

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for key in [
        "machines/m2",
        "machines/m3",
        "machines/m4",
        "machines/m5",
        "machines/m6",
        "machines/a,b",
        "machines/w2",
        "machines/w3",
        "machines/w4",
        "machines/w5",
        "machines/w6",
        "alive/bad/id",
    ] {
        let needle = format!("{PREFIX}{key}");
        let lines = text
            .lines()
            .filter(|l| l.contains("skipping entry") && l.contains(&needle))
            .count();
        assert_eq!(lines, 1, "{key}: {lines} log lines in:\n{text}");
    }

    // Fixing an entry brings it in; removing the winner of a conflict lets
    // the other one in.
    put_member(&mut kv, "m3", "gamma", "fd00::3").await;
    delete(&mut kv, "machines/m1").await;
    wait_ids(&daemon, &["m3", "m5", "m7", "w8"]).await;
    bounded("shutdown", daemon.shutdown()).await.unwrap();
}

// ---------------------------------------------------------------------------
// Entries written to harm the others (issue 28): anyone who can write under
// the prefix must not take the place of live members nor make machines dial
// what callers may not.

/// Through every running machine, `machines: alpha, beta, gamma` is answered
/// by each of them.
async fn every_machine_reaches_every_other(cluster: &Cluster) {
    // The watcher's snapshot reaches the director a moment later.
    for node in &cluster.nodes {
        let daemon = node.daemon.as_ref().unwrap();
        eventually(
            WAIT,
            &format!("{} lists every machine", node.name),
            || async {
                let registry = daemon.director().registry()?;
                NAMES
                    .iter()
                    .all(|name| registry.find(name, 0).is_some())
                    .then_some(())
            },
        )
        .await;
    }
    for (i, through) in NAMES.iter().enumerate() {
        let reply = call_describe(&mut cluster.client(i), &[("machines", "alpha,beta,gamma")])
            .await
            .unwrap_or_else(|s| panic!("through {through}: {s:?}"));
        assert!(
            all_answer(&reply, &NAMES),
            "through {through}: {:?}",
            entries(&reply)
        );
    }
}

/// A free `[::1]` socket address as registry text.
fn free_loopback() -> String {
    format!("[::1]:{}", free_port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_sorting_first_do_not_displace_live_members() {
    let Some((etcd, cluster)) = registered_cluster("etcd-displace", SAFE_TTL).await else {
        return;
    };
    let mut kv = etcd.client().await.unwrap();
    let beta_addr = cluster.nodes[1].addr.to_string();
    // Each clashes with a live member and sorts before it, so "the first
    // by ID wins" would have given it the member's place.
    put_member(&mut kv, "0-alpha", "alpha", &free_loopback()).await; // alpha's name
    put_member(&mut kv, "0-beta", "evil", &beta_addr).await; // beta's address
    put_member(&mut kv, "0-gamma", "m3", &free_loopback()).await; // gamma's ID as a name
    put_member(&mut kv, "0-m2", "m1", &free_loopback()).await; // alpha's ID as a name
    // And one clashing with nobody: once it is in, the others were applied.
    put_member(&mut kv, "0-zeta", "zeta", &free_loopback()).await;
    for node in &cluster.nodes {
        wait_ids(node.daemon.as_ref().unwrap(), &["0-zeta", "m1", "m2", "m3"]).await;
    }
    every_machine_reaches_every_other(&cluster).await;

    // A forged heartbeat makes 0-alpha a live member that sorts first: it
    // takes alpha's name on the others (equals: first by ID), never on
    // alpha itself, whose own entry always wins.
    put(&mut kv, "alive/0-alpha", "").await;
    let alpha = cluster.daemon(A);
    eventually(WAIT, "alpha sees the forged heartbeat", || async {
        let snapshot = alpha.etcd_registry()?.snapshot().borrow().clone();
        snapshot.is_alive("0-alpha").then_some(())
    })
    .await;
    assert_eq!(ids(alpha), ["0-zeta", "m1", "m2", "m3"]);
    let reply = call_describe(&mut cluster.client(A), &[("machines", "alpha")])
        .await
        .unwrap();
    assert_eq!(reply.messages[0].name, "alpha", "alpha answers for itself");
    cluster.shutdown().await;
}

/// Puts `count` valid members without a heartbeat whose IDs sort before
/// every real one, in transactions (etcd's default limit is 128 operations).
async fn put_junk(kv: &mut etcd_client::Client, count: u16) {
    let mut ops = Vec::new();
    for i in 1..=count {
        let id = format!("0-junk-{i:05}");
        let value = member_json(&id, &format!("junk-{i:05}"), &format!("[::1]:{i}"));
        ops.push(etcd_client::TxnOp::put(
            format!("{PREFIX}machines/{id}"),
            value,
            None,
        ));
        if ops.len() == 128 || i == count {
            let txn = etcd_client::Txn::new().and_then(std::mem::take(&mut ops));
            kv.txn(txn).await.expect("put junk");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_junk_entries_do_not_push_live_members_past_the_cap() {
    let Some(etcd) = etcd_or_skip(&std::env::temp_dir()).await else {
        return;
    };
    let mut kv = etcd.client().await.unwrap();
    // As many as the cap (max_members, 10,000), all sorting first: a full
    // read used to fill the registry with them and refuse every machine.
    put_junk(&mut kv, 10_000).await;
    // Each machine's first read sees the junk; the later ones join through
    // the others' watches, into a registry that is already full.
    let settings = etcd_settings(&etcd.endpoint(), SAFE_TTL);
    let cluster = Cluster::start_etcd(socket_dir("etcd-cap"), &settings, |_, _| {}).await;
    every_machine_reaches_every_other(&cluster).await;
    for node in &cluster.nodes {
        let registry = node.daemon.as_ref().unwrap().director().registry().unwrap();
        assert_eq!(registry.machines().len(), 10_000, "the cap still holds");
        for name in NAMES {
            assert!(registry.find(name, 0).is_some(), "{name} listed");
        }
    }
    // A member that loses its heartbeat keeps its place until room is
    // needed, and a restarted machine still finds every live one.
    let mut cluster = cluster;
    cluster.stop_daemon(1).await;
    let beta = &cluster.nodes[1];
    let restarted = Daemon::start(&beta.settings).await.expect("beta restarts");
    cluster.nodes[1].daemon = Some(restarted);
    cluster.wait_liveness(&NAMES).await;
    every_machine_reaches_every_other(&cluster).await;
    cluster.shutdown().await;
}

// Current-thread runtime: the log capture sees every task.
#[tokio::test]
async fn entries_naming_loopback_or_ipv4_space_are_skipped_and_never_dialled() {
    let dir = socket_dir("etcd-addr");
    let Some(etcd) = etcd_or_skip(dir.path()).await else {
        return;
    };
    let (logs, _guard) = capture_logs();
    let mut kv = etcd.client().await.unwrap();
    // The victims: services on IPv4 loopback and on [::1] that an entry
    // points at; any dial shows.
    let v4_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let v4 = Blackhole::bind(([127, 0, 0, 1], v4_port).into()).await;
    let v6_addr = free_loopback();
    let v6 = Blackhole::bind(v6_addr.parse().unwrap()).await;
    let bad = [
        ("mapped", format!("[::ffff:127.0.0.1]:{v4_port}")),
        ("compat", format!("[::127.0.0.1]:{v4_port}")),
        ("loop", v6_addr.clone()),
        ("nat64", "64:ff9b::7f00:1".to_owned()),
        ("localnat", "64:ff9b:1::7f00:1".to_owned()),
        ("sixtofour", "2002:7f00:1::1".to_owned()),
        ("linklocal", "fe80::1".to_owned()),
    ];
    for (id, addr) in &bad[..4] {
        put_member(&mut kv, id, id, addr).await;
    }
    put_member(&mut kv, "mesh", "mesh", "fd00::1").await;
    // A follower with the default rule: mesh addresses only.
    let listener = loopback_listener().await;
    let addr = listener.local_addr().unwrap();
    let mut settings = node_settings(addr, dir.path().join("follower.sock"), None);
    settings.start.registry.etcd = Some(switchyard::config::EtcdSettings {
        liveness: false,
        ..etcd_settings(&etcd.endpoint(), TTL)
    });
    let daemon = Daemon::with_listeners(&settings, vec![listener.into()]);
    wait_ids(&daemon, &["mesh"]).await;
    // The same through the watch.
    for (id, addr) in &bad[4..] {
        put_member(&mut kv, id, id, addr).await;
    }
    put_member(&mut kv, "mesh2", "mesh2", "fd00::2").await;
    wait_ids(&daemon, &["mesh", "mesh2"]).await;

    let mut client = tcp_client(addr);
    for (id, _) in &bad {
        let status = call_describe(&mut client, &[("machines", id)])
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, &["unknown"]);
    }
    assert_eq!(
        (v4.accepted(), v6.accepted()),
        (0, 0),
        "a victim was dialled"
    );
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    for (id, _) in &bad {
        let needle = format!("{PREFIX}machines/{id}");
        let lines = text
            .lines()
            .filter(|l| l.contains("skipping entry") && l.contains(&needle))
            .count();
        assert_eq!(lines, 1, "{id}: {lines} log lines in:\n{text}");
        assert!(text.contains("may not be dialled"), "{text}");
    }

    // allowed_networks decide alone, and a reload applies them to the
    // registry in etcd: loopback now comes in, IPv4 space stays out.
    settings.live.allowed_networks = Some(vec![
        "::1/128".parse().unwrap(),
        "fd00::1/128".parse().unwrap(),
    ]);
    daemon.reload(&settings);
    wait_ids(&daemon, &["loop", "mesh"]).await;
    assert_eq!(
        (v4.accepted(), v6.accepted()),
        (0, 0),
        "nothing called them"
    );
    bounded("shutdown", daemon.shutdown()).await.unwrap();
}
