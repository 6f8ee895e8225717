//! A machine whose Switchyard is healthy but whose own gRPC server takes
//! calls and never answers: a fan-out without any caller deadline still ends,
//! by `switchyard-machine-timeout` or the daemon's `machine_timeout_secs`,
//! with that machine's `DEADLINE_EXCEEDED` entry and the others' answers.

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::*;
use tonic::Code;

const ALL: [(&str, &str); 1] = [("machines", "alpha,beta,gamma")];

/// Alpha, beta and a hung gamma, with `machine_timeout_secs = 1`.
async fn cluster_with_a_hung_machine(tag: &str) -> Cluster {
    let mut cluster = Cluster::start_with(tag, |_, settings| {
        settings.start.machine_timeout_secs = 1;
    })
    .await;
    let gamma = cluster.index("gamma");
    cluster.stop_service(gamma).await;
    let _ = std::fs::remove_file(&cluster.nodes[gamma].socket);
    hang_on(&cluster.nodes[gamma].socket);
    cluster
}

fn check_entries(reply: &machine_info::pb::DescribeResponse) {
    let entries: Vec<_> = reply
        .messages
        .iter()
        .map(|d| entry_error(d.metadata.as_ref()))
        .collect();
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert!(entries[0].is_none() && entries[1].is_none(), "{entries:?}");
    let (code, message) = entries[2].clone().expect("gamma's error entry");
    assert_eq!(code, Code::DeadlineExceeded, "{message}");
    assert!(message.contains("did not answer within"), "{message}");
}

#[tokio::test]
async fn a_hung_machine_ends_at_the_daemons_machine_timeout_without_a_caller_deadline() {
    let cluster = cluster_with_a_hung_machine("hung-default").await;
    let started = Instant::now();
    let reply = call_describe(&mut cluster.client(0), &ALL).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    check_entries(&reply);
    cluster.shutdown().await;
}

#[tokio::test]
async fn switchyard_machine_timeout_bounds_each_machine() {
    let cluster = cluster_with_a_hung_machine("hung-header").await;
    let started = Instant::now();
    let meta = [ALL[0], ("switchyard-machine-timeout", "300m")];
    let reply = call_describe(&mut cluster.client(0), &meta).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_millis(900), "{took:?}");
    check_entries(&reply);
    // A bad value is the caller's error, named.
    let status = call_describe(
        &mut cluster.client(0),
        &[ALL[0], ("switchyard-machine-timeout", "soon")],
    )
    .await
    .unwrap_err();
    assert_status(
        &status,
        Code::InvalidArgument,
        &["switchyard-machine-timeout"],
    );
    cluster.shutdown().await;
}

/// In the envelope the answering machines' items arrive first, as they
/// answer; the hung machine's last item, `DEADLINE_EXCEEDED`, at the timeout.
#[tokio::test]
async fn in_the_envelope_answers_arrive_before_the_hung_machines_timeout() {
    use machine_info::pb::DescribeRequest;
    use switchyard_director::pb::MachineReply;

    let cluster = cluster_with_a_hung_machine("hung-envelope").await;
    let mut grpc = tonic::client::Grpc::new(switchyard_testkit::client::tcp_channel(
        cluster.nodes[0].addr,
    ));
    bounded("the channel", grpc.ready()).await.unwrap();
    let request = with_meta(
        DescribeRequest {},
        &[ALL[0], ("switchyard-reply", "envelope")],
    );
    let codec = tonic_prost::ProstCodec::<DescribeRequest, MachineReply>::default();
    let path = http::uri::PathAndQuery::from_static("/machineinfo.v1.MachineInfo/Describe");
    let started = Instant::now();
    let mut stream = bounded("the call", grpc.server_streaming(request, path, codec))
        .await
        .unwrap()
        .into_inner();
    let mut arrivals = Vec::new();
    while let Some(item) = bounded("an item", stream.message()).await.unwrap() {
        let metadata = item.metadata.clone().unwrap_or_default();
        let code = metadata.status.map_or(-1, |s| s.code);
        arrivals.push((metadata.machine_name, item.last, code, started.elapsed()));
    }
    let (gamma, others): (Vec<_>, Vec<_>) = arrivals.iter().partition(|a| a.0 == "gamma");
    assert_eq!(others.len(), 4, "{arrivals:?}");
    assert!(
        others.iter().all(|a| a.3 < Duration::from_millis(900)),
        "{arrivals:?}"
    );
    assert_eq!(gamma.len(), 1, "{arrivals:?}");
    let (_, last, code, at) = gamma[0];
    assert!(
        *last && *code == Code::DeadlineExceeded as i32,
        "{arrivals:?}"
    );
    assert!(*at >= Duration::from_secs(1), "{arrivals:?}");
    cluster.shutdown().await;
}
