//! A machine failing inside a fan-out: its entry says what went wrong, the
//! other machines still answer, and nobody waits for the connect bound.

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::*;
use tonic::Code;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

/// Checks a reply to `machines: alpha, beta, gamma` whose gamma entry is an
/// error; returns that error.
fn gamma_failed(cluster: &Cluster, reply: &machine_info::pb::DescribeResponse) -> (Code, String) {
    assert_eq!(reply.messages.len(), 3, "{reply:?}");
    for i in [A, B] {
        let d = &reply.messages[i];
        assert_eq!(d.metadata.as_ref(), Some(&cluster.meta(i)), "{d:?}");
        assert_eq!(d.name, cluster.nodes[i].name, "{d:?}");
        assert!(entry_error(d.metadata.as_ref()).is_none(), "{d:?}");
    }
    let d = &reply.messages[C];
    let m = d.metadata.as_ref().expect("gamma's entry is tagged");
    assert_eq!(
        (&m.machine_addr, &m.machine_id, &m.machine_name),
        (
            &cluster.meta(C).machine_addr,
            &"m3".to_owned(),
            &"gamma".to_owned()
        )
    );
    assert!(d.name.is_empty(), "an error entry has no answer: {d:?}");
    let (code, message) = entry_error(Some(m)).expect("gamma's entry is an error");
    let status = m.status.as_ref().expect("error entries carry a status");
    assert_eq!(status.message, message, "`error` is the status message");
    (code, message)
}

const ALL: [(&str, &str); 1] = [("machines", "alpha,beta,gamma")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_is_an_error_entry_and_the_others_answer() {
    let mut cluster = Cluster::start("svc-down").await;
    let mut client = cluster.client(A);
    // All three answer first (so that every connection is up and cached).
    let reply = call_describe(&mut client, &ALL).await.unwrap();
    assert!(
        reply
            .messages
            .iter()
            .all(|d| d.metadata.as_ref().is_some_and(|m| m.error.is_empty()))
    );

    cluster.stop_service(C).await;
    // gamma's Switchyard may still hold its (closing) connection to the
    // service for a moment; wait until it notices, then check the shape.
    // A call racing the service's shutdown may see its stream cut short
    // (CANCELLED); once gamma's Switchyard knows the service is gone, every
    // call says UNAVAILABLE.
    let (code, message) = eventually(WAIT, "gamma's entry becomes UNAVAILABLE", || {
        let mut client = client.clone();
        let cluster = &cluster;
        async move {
            let reply = call_describe(&mut client, &ALL).await.unwrap();
            entry_error(reply.messages.get(C)?.metadata.as_ref())?;
            Some(gamma_failed(cluster, &reply)).filter(|(code, _)| *code == Code::Unavailable)
        }
    })
    .await;
    assert_eq!(code, Code::Unavailable, "{message}");
    // Once known down, every call says so the same way.
    for _ in 0..3 {
        let reply = call_describe(&mut client, &ALL).await.unwrap();
        let (code, message) = gamma_failed(&cluster, &reply);
        assert_eq!(code, Code::Unavailable, "{message}");
        assert!(message.contains("local gRPC server"), "{message}");
    }
    // gamma alone, one-to-one: the status itself.
    let status = call_describe(&mut client, &[("machines", "gamma")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // Streaming fan-out: gamma's error is an entry of its own too.
    let mut ticks = start_watch(&mut client, 2, 10, &[("machines", "*")]).await;
    let ticks = rest_of(&mut ticks).await;
    let errors: Vec<_> = ticks
        .iter()
        .filter_map(|t| {
            entry_error(t.metadata.as_ref())
                .map(|e| (t.metadata.clone().unwrap().machine_name, e.0))
        })
        .collect();
    assert_eq!(
        errors,
        [("gamma".to_owned(), Code::Unavailable)],
        "{ticks:?}"
    );
    assert_eq!(
        ticks.len(),
        5,
        "2 ticks each from alpha and beta + gamma's error: {ticks:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_switchyard_is_unavailable_well_within_the_connect_bound() {
    let mut cluster = Cluster::start("proxy-down").await;
    let mut client = cluster.client(A);
    let reply = call_describe(&mut client, &ALL).await.unwrap();
    assert_eq!(reply.messages.len(), 3);

    cluster.stop_daemon(C).await;
    let bound: Duration = cluster.nodes[A].settings.start.connect_timeout_secs.into();
    assert_eq!(bound, CONNECT_BOUND);
    for attempt in 0..3 {
        let started = Instant::now();
        let reply = call_describe(&mut client, &ALL).await.unwrap();
        let elapsed = started.elapsed();
        let (code, message) = gamma_failed(&cluster, &reply);
        assert_eq!(code, Code::Unavailable, "attempt {attempt}: {message}");
        assert!(
            elapsed < bound / 4,
            "attempt {attempt}: answered after {elapsed:?}; connect bound {bound:?}"
        );
    }
    // Also when the connection to gamma is dialled afresh (nothing cached).
    cluster.daemon(A).director().flush_remote_backends();
    let started = Instant::now();
    let reply = call_describe(&mut client, &ALL).await.unwrap();
    let (code, message) = gamma_failed(&cluster, &reply);
    assert_eq!(code, Code::Unavailable, "after a flush: {message}");
    assert!(started.elapsed() < bound / 4, "{:?}", started.elapsed());
    // And gamma alone fails fast with the status itself.
    let started = Instant::now();
    let status = call_describe(&mut client, &[("machine", "gamma")])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(started.elapsed() < bound / 4, "{:?}", started.elapsed());
    assert!(
        status.message().contains(&cluster.meta(C).machine_addr),
        "{status:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_never_answers_costs_only_the_callers_deadline() {
    let mut cluster = Cluster::start("blackhole").await;
    // gamma's address accepts TCP and never speaks HTTP/2.
    let holder = cluster.blackhole_daemon(C).await;
    let mut client = cluster.client(A);
    let mut request = describe(&ALL);
    request.set_timeout(Duration::from_millis(1500));
    let started = Instant::now();
    let reply = bounded("Describe with a deadline", client.describe(request))
        .await
        .unwrap()
        .into_inner();
    let elapsed = started.elapsed();
    let (code, _) = gamma_failed(&cluster, &reply);
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(
        elapsed < Duration::from_secs(6),
        "partial results must come by the deadline: {elapsed:?}"
    );
    drop(holder);
    cluster.shutdown().await;
}
