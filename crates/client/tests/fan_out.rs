//! The client library against real daemons: a typed fan-out of a loopback
//! cluster, one machine's service stopped.

use futures_util::StreamExt as _;
use machine_info::pb::{DescribeRequest, DescribeResponse};
use switchyard::cluster::LoopbackCluster;
use switchyard_client::FanOut;
use switchyard_testkit::client::tcp_channel;
use switchyard_testkit::wait::{bounded, socket_dir};
use tonic::Code;

#[tokio::test]
async fn typed_results_per_machine_as_they_arrive() {
    let dir = socket_dir("client-lib");
    let mut cluster = LoopbackCluster::start(dir.path(), &["alpha", "beta", "gamma"], |_, _| {})
        .await
        .unwrap();
    if let Some(service) = cluster.machines[2].service.take() {
        service.stop();
    }
    let channel = tcp_channel(cluster.machines[0].addr);
    let mut results = FanOut::new(["alpha", "beta", "gamma"])
        .machine_timeout_ms(5000)
        .unary::<DescribeResponse, _, _>(
            channel,
            "/machineinfo.v1.MachineInfo/Describe",
            DescribeRequest {},
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some((machine, result)) = bounded("a result", results.next()).await {
        match result {
            Ok(reply) => {
                assert_eq!(reply.messages[0].name, machine.name);
                seen.push((machine.name, "ok".to_owned()));
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                seen.push((machine.name, "unavailable".to_owned()));
            }
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("alpha".to_owned(), "ok".to_owned()),
            ("beta".to_owned(), "ok".to_owned()),
            ("gamma".to_owned(), "unavailable".to_owned())
        ]
    );
    cluster.shutdown().await.unwrap();
}
