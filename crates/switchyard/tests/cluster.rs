//! Routing through a three-machine cluster over real sockets: each machine a
//! `machine-info` service on a Unix socket plus a Switchyard on `[::1]:port`,
//! with a registry naming them `alpha` (m1), `beta` (m2) and `gamma` (m3).
//! Every call enters through machine A (`alpha`).

mod common;

use common::*;
use switchyard::daemon::Daemon;
use tonic::Code;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_routing_metadata_is_answered_locally() {
    let cluster = Cluster::start("local").await;
    let before = (cluster.calls(A).await, cluster.calls(B).await);
    let reply = call_describe(&mut cluster.client(A), &[]).await.unwrap();
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    let d = &reply.messages[0];
    assert_untagged(d, "alpha");
    assert_eq!(d.proxy_authority, "", "a local call is not forwarded");
    assert_eq!(d.calls, before.0 + 1);
    // Only alpha's service was called (the extra one is this direct check).
    assert_eq!(cluster.calls(A).await, before.0 + 2);
    assert_eq!(cluster.calls(B).await, before.1 + 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_machine_is_two_hops_and_answered_once() {
    let cluster = Cluster::start("two-hops").await;
    let mut client = cluster.client(A);
    let authority = cluster.nodes[A].addr.to_string();
    let b_addr = cluster.nodes[B].addr.to_string();
    // By name, ID and registered address: the same machine each time.
    for target in ["beta", "m2", b_addr.as_str()] {
        let a_before = cluster.calls(A).await;
        let b_before = cluster.calls(B).await;
        let reply = call_describe(&mut client, &[("machines", target)])
            .await
            .unwrap_or_else(|s| panic!("machines: {target}: {s:?}"));
        assert_eq!(reply.messages.len(), 1, "{reply:?}");
        let d = &reply.messages[0];
        assert_untagged(d, "beta");
        // B's service saw the call as forwarded by A's Switchyard, with the
        // authority the client used for A.
        assert_eq!(d.proxy_authority, authority);
        // Exactly one call reached B's service (no loop back and forth), and
        // none reached A's.
        assert_eq!(d.calls, b_before + 1, "machines: {target}");
        assert_eq!(cluster.calls(B).await, b_before + 2, "machines: {target}");
        assert_eq!(cluster.calls(A).await, a_before + 1, "machines: {target}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_authority_means_local_whatever_the_targets() {
    let cluster = Cluster::start("loop").await;
    let b_before = cluster.calls(B).await;
    let reply = call_describe(
        &mut cluster.client(A),
        &[
            ("proxy-authority", "elsewhere:1"),
            ("machines", "beta,gamma"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(reply.messages.len(), 1, "{reply:?}");
    assert_untagged(&reply.messages[0], "alpha");
    // Local forwarding keeps the metadata as is.
    assert_eq!(reply.messages[0].proxy_authority, "elsewhere:1");
    assert_eq!(cluster.calls(B).await, b_before + 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_tags_each_machine_in_target_order() {
    let cluster = Cluster::start("fan-out").await;
    let mut client = cluster.client(A);
    let authority = cluster.nodes[A].addr.to_string();
    let check = |reply: &machine_info::pb::DescribeResponse, order: &[usize]| {
        let got: Vec<_> = reply.messages.iter().map(|d| d.name.clone()).collect();
        let want: Vec<_> = order
            .iter()
            .map(|&i| cluster.nodes[i].name.clone())
            .collect();
        assert_eq!(got, want, "entries in target order");
        for (d, &i) in reply.messages.iter().zip(order) {
            assert_eq!(d.metadata.as_ref(), Some(&cluster.meta(i)), "{d:?}");
            assert!(entry_error(d.metadata.as_ref()).is_none(), "{d:?}");
            let via = if i == A { "" } else { authority.as_str() };
            assert_eq!(d.proxy_authority, via, "{d:?}");
        }
    };

    // Repeated entries, in an order that is neither the registry's nor A-first.
    let reply = call_describe(
        &mut client,
        &[
            ("machines", "gamma"),
            ("machines", "alpha"),
            ("machines", "beta"),
        ],
    )
    .await
    .unwrap();
    check(&reply, &[C, A, B]);

    // One comma-separated value, mixing names, IDs and addresses.
    let c_addr = cluster.nodes[C].addr.to_string();
    let list = format!("m2, {c_addr},alpha");
    let reply = call_describe(&mut client, &[("machines", &list)])
        .await
        .unwrap();
    check(&reply, &[B, C, A]);

    // `*`: every machine, in registry order.
    let reply = call_describe(&mut client, &[("machines", "*")])
        .await
        .unwrap();
    check(&reply, &[A, B, C]);

    // Duplicates collapse (first mention wins).
    let reply = call_describe(&mut client, &[("machines", "beta, m3, m2, gamma")])
        .await
        .unwrap();
    check(&reply, &[B, C]);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_are_invalid_argument_and_reach_nobody() {
    let cluster = Cluster::start("invalid").await;
    let mut client = cluster.client(A);
    let before: Vec<u64> = vec![
        cluster.calls(A).await,
        cluster.calls(B).await,
        cluster.calls(C).await,
    ];

    // Unknown names: every one listed, the known ones not.
    let status = call_describe(
        &mut client,
        &[("machines", "beta, nosuch"), ("machines", "other")],
    )
    .await
    .unwrap_err();
    assert_status(
        &status,
        Code::InvalidArgument,
        &["unknown", "\"nosuch\"", "\"other\""],
    );
    assert!(!status.message().contains("\"beta\""), "{status:?}");

    // An empty value, alone or in a list.
    for value in ["", "beta,", " , alpha"] {
        let status = call_describe(&mut client, &[("machines", value)])
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, &["empty"]);
    }

    // Not an IPv6 address, and not a registered name either.
    let status = call_describe(&mut client, &[("machines", "10.0.0.1")])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["10.0.0.1"]);

    // `machine` names exactly one machine; both keys at once are refused.
    let status = call_describe(&mut client, &[("machine", "alpha,beta")])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["machine", "exactly one"]);
    let status = call_describe(&mut client, &[("machine", "*")])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["exactly one"]);
    let status = call_describe(&mut client, &[("machine", "beta"), ("machines", "gamma")])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["both"]);

    // Streaming calls are refused the same way, before any backend.
    let status = bounded(
        "Watch with unknown machine",
        client.watch(watch(3, 10, &[("machines", "nosuch")])),
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["\"nosuch\""]);

    // No service saw any of these calls (+1: the direct check itself).
    for (i, before) in before.into_iter().enumerate() {
        assert_eq!(cluster.calls(i).await, before + 1, "machine {i} was called");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn singular_machine_is_one_to_one_and_untagged() {
    let cluster = Cluster::start("machine").await;
    let mut client = cluster.client(A);
    let reply = call_describe(&mut client, &[("machine", "gamma")])
        .await
        .unwrap();
    assert_eq!(reply.messages.len(), 1);
    assert_untagged(&reply.messages[0], "gamma");
    assert_eq!(
        reply.messages[0].proxy_authority,
        cluster.nodes[A].addr.to_string()
    );
    // This machine by name: the local backend, no hop.
    let reply = call_describe(&mut client, &[("machine", "m1")])
        .await
        .unwrap();
    assert_untagged(&reply.messages[0], "alpha");
    assert_eq!(reply.messages[0].proxy_authority, "");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_fan_out_tags_a_single_target() {
    let cluster = Cluster::start("always").await;
    // A second Switchyard for machine alpha (same service, same registry,
    // same address), with `always_fan_out`.
    let listener = loopback_listener().await;
    let entry = listener.local_addr().unwrap();
    let mut settings = cluster.nodes[A].settings.clone();
    settings.start.always_fan_out = true;
    settings.start.listen = Some(vec![switchyard::config::Listen(
        switchyard_engine::Address::Tcp(entry),
    )]);
    let daemon = Daemon::with_listeners(&settings, vec![listener.into()]);
    let mut client = tcp_client(entry);

    for (target, i) in [("beta", B), ("alpha", A)] {
        let reply = call_describe(&mut client, &[("machines", target)])
            .await
            .unwrap();
        assert_eq!(reply.messages.len(), 1, "{reply:?}");
        let d = &reply.messages[0];
        assert_eq!(d.name, cluster.nodes[i].name);
        assert_eq!(d.metadata.as_ref(), Some(&cluster.meta(i)), "{d:?}");
    }
    // The singular key stays an untagged one-to-one call.
    let reply = call_describe(&mut client, &[("machine", "beta")])
        .await
        .unwrap();
    assert_untagged(&reply.messages[0], "beta");
    // And the ordinary Switchyard of A still answers one target untagged.
    let reply = call_describe(&mut cluster.client(A), &[("machines", "beta")])
        .await
        .unwrap();
    assert_untagged(&reply.messages[0], "beta");

    bounded("always-fan-out shutdown", daemon.shutdown())
        .await
        .unwrap();
    cluster.shutdown().await;
}
