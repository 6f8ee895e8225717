//! Streams through the cluster: streaming fan-out, and running streams that
//! survive a flush of the cached connections and a configuration reload.

mod common;

use std::collections::BTreeMap;

use common::*;
use machine_info::pb::Tick;
use tonic::Code;

const A: usize = 0;
const B: usize = 1;

/// Panics unless `ticks` are `0..count` of machine `name`, in order.
fn assert_all_ticks(ticks: &[Tick], name: &str, count: u32) {
    let seqs: Vec<u32> = ticks.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, (0..count).collect::<Vec<_>>(), "ticks of {name}");
    assert!(ticks.iter().all(|t| t.name == name), "{ticks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_fan_out_keeps_each_machines_order() {
    let cluster = Cluster::start("stream-fan-out").await;
    let mut client = cluster.client(A);
    let count = 8;
    let mut stream = start_watch(&mut client, count, 30, &[("machines", "gamma,alpha,beta")]).await;
    let ticks = rest_of(&mut stream).await;
    assert_eq!(ticks.len(), 3 * count as usize, "{ticks:?}");
    let mut per_machine: BTreeMap<String, Vec<Tick>> = BTreeMap::new();
    for tick in ticks {
        let meta = tick.metadata.clone().expect("fan-out ticks are tagged");
        assert!(entry_error(Some(&meta)).is_none(), "{tick:?}");
        let i = cluster.index(&meta.machine_name);
        assert_eq!(meta, cluster.meta(i), "{tick:?}");
        assert_eq!(
            tick.name, meta.machine_name,
            "tag matches the answering machine"
        );
        per_machine.entry(meta.machine_name).or_default().push(tick);
    }
    assert_eq!(per_machine.len(), 3);
    for (name, ticks) in &per_machine {
        assert_all_ticks(ticks, name, count);
    }
    // One streaming target, one-to-one: untagged ticks of that machine.
    let mut stream = start_watch(&mut client, 3, 10, &[("machines", "beta")]).await;
    let ticks = rest_of(&mut stream).await;
    assert!(ticks.iter().all(|t| t.metadata.is_none()), "{ticks:?}");
    assert_all_ticks(&ticks, "beta", 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushing_remote_connections_lets_a_running_stream_finish() {
    let cluster = Cluster::start("flush").await;
    let mut client = cluster.client(A);
    let director = cluster.daemon(A).director().clone();
    let count = 20;
    let mut stream = start_watch(&mut client, count, 50, &[("machines", "beta")]).await;
    let first = next_tick(&mut stream).await.expect("a first tick");
    assert_eq!((first.name.as_str(), first.seq), ("beta", 0));
    let b_socket = cluster.nodes[B].addr;
    assert_eq!(
        director
            .cached_remotes()
            .iter()
            .map(|s| std::net::SocketAddr::V6(*s))
            .collect::<Vec<_>>(),
        [b_socket]
    );

    director.flush_remote_backends();
    assert!(director.cached_remotes().is_empty(), "flushed");

    // New calls dial afresh while the stream still runs on the old connection.
    for target in ["beta", "gamma"] {
        let reply = call_describe(&mut client, &[("machines", target)])
            .await
            .unwrap_or_else(|s| panic!("machines: {target} after the flush: {s:?}"));
        assert_untagged(&reply.messages[0], target);
    }
    assert_eq!(director.cached_remotes().len(), 2);
    let mut second = start_watch(&mut client, 3, 10, &[("machines", "beta")]).await;
    assert_all_ticks(&rest_of(&mut second).await, "beta", 3);

    // Flush again mid-stream, for good measure.
    director.flush_remote_backends();
    let mut ticks = vec![first];
    ticks.extend(rest_of(&mut stream).await);
    assert_all_ticks(&ticks, "beta", count);

    let reply = call_describe(&mut client, &[("machines", "alpha,beta,gamma")])
        .await
        .unwrap();
    assert!(
        reply
            .messages
            .iter()
            .all(|d| entry_error(d.metadata.as_ref()).is_none()),
        "{reply:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_machine_without_dropping_a_running_stream() {
    // alpha starts knowing only itself and beta.
    let cluster = Cluster::start_with("reload", |i, settings| {
        if i == A {
            let registry = settings.live.machines.take().unwrap();
            let known: Vec<_> = registry
                .machines()
                .iter()
                .filter(|m| m.name != "gamma")
                .cloned()
                .collect();
            settings.live.machines = Some(switchyard_director::Registry::new(known).unwrap());
        }
    })
    .await;
    let mut client = cluster.client(A);
    let status = call_describe(&mut client, &[("machines", "gamma")])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["unknown", "\"gamma\""]);

    // Streams to beta (remote) and to alpha (local) are running…
    let count = 20;
    let mut remote = start_watch(&mut client, count, 50, &[("machines", "beta")]).await;
    let mut local = start_watch(&mut client, count, 50, &[]).await;
    let mut remote_ticks = vec![next_tick(&mut remote).await.unwrap()];
    let mut local_ticks = vec![next_tick(&mut local).await.unwrap()];

    // …when the registry gains gamma and beta is renamed (which forgets the
    // cached connection to beta: the stream must still finish on it).
    let mut machines = cluster.registry.machines().to_vec();
    machines[B].name = "bravo".to_owned();
    let mut settings = cluster.nodes[A].settings.clone();
    settings.live.machines = Some(switchyard_director::Registry::new(machines).unwrap());
    cluster.daemon(A).reload(&settings);

    let reply = call_describe(&mut client, &[("machines", "gamma")])
        .await
        .expect("gamma is known after the reload");
    assert_untagged(&reply.messages[0], "gamma");
    let reply = call_describe(&mut client, &[("machines", "bravo,gamma")])
        .await
        .unwrap();
    let tags: Vec<_> = reply
        .messages
        .iter()
        .map(|d| d.metadata.as_ref().map(|m| m.machine_name.clone()))
        .collect();
    assert_eq!(tags, [Some("bravo".to_owned()), Some("gamma".to_owned())]);
    assert_eq!(
        reply.messages[0].name, "beta",
        "the service keeps its own name"
    );
    let status = call_describe(&mut client, &[("machines", "beta")])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["\"beta\""]);

    remote_ticks.extend(rest_of(&mut remote).await);
    local_ticks.extend(rest_of(&mut local).await);
    assert_all_ticks(&remote_ticks, "beta", count);
    assert_all_ticks(&local_ticks, "alpha", count);

    // A reload that changes nothing is harmless to cached connections.
    let before = cluster.daemon(A).director().cached_remotes();
    cluster.daemon(A).reload(&settings);
    assert_eq!(cluster.daemon(A).director().cached_remotes(), before);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_methods_are_learned_from_the_local_servers_reflection() {
    // No configured list: without discovery, Watch would be merged as unary
    // and its ticks would arrive as one message at the end.
    let cluster = Cluster::start_with("reflection", |_, settings| {
        settings.start.streamed_methods.clear();
        settings.start.detect_streamed_methods = true;
    })
    .await;
    // The first fan-out waits for the first discovery: no polling needed.
    let mut client = cluster.client(A);
    let mut stream = start_watch(&mut client, 3, 20, &[("machines", "alpha,beta,gamma")]).await;
    let ticks = rest_of(&mut stream).await;
    assert_eq!(ticks.len(), 9, "one tagged message per tick: {ticks:?}");
    assert!(ticks.iter().all(|t| t.metadata.is_some()));
    cluster.shutdown().await;
}
