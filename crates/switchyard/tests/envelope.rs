//! The envelope (`switchyard-reply: envelope`): any method fans out, its
//! replies byte for byte in `switchyard.v1.MachineReply` items as each
//! machine answers, with exactly one last item per machine carrying its
//! status, and a summary trailer.

mod common;

use common::*;
use machine_info::pb::{DescribeRequest, DescribeResponse, Tick, WatchRequest};
use prost::Message;
use switchyard_director::pb::MachineReply;
use tonic::Code;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

const DESCRIBE: &str = "/machineinfo.v1.MachineInfo/Describe";
const WATCH: &str = "/machineinfo.v1.MachineInfo/Watch";
const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

/// Calls `path` with `requests` (a stream), asking for the envelope: its
/// items and trailers.
async fn enveloped<Req>(
    channel: Channel,
    path: &'static str,
    requests: Vec<Req>,
    meta: &[(&str, &str)],
) -> Result<(Vec<MachineReply>, MetadataMap), tonic::Status>
where
    Req: Message + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    bounded("the channel", grpc.ready()).await.unwrap();
    let mut meta = meta.to_vec();
    meta.push(("switchyard-reply", "envelope"));
    let request = with_meta(tokio_stream::iter(requests), &meta);
    let codec = tonic_prost::ProstCodec::<Req, MachineReply>::default();
    let path = http::uri::PathAndQuery::from_static(path);
    let mut stream = bounded("the call", grpc.streaming(request, path, codec))
        .await?
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = bounded("an item", stream.message()).await? {
        items.push(item);
    }
    let trailers = stream.trailers().await?.unwrap_or_default();
    Ok((items, trailers))
}

fn code_of(item: &MachineReply) -> Option<i32> {
    item.metadata
        .as_ref()
        .and_then(|m| m.status.as_ref())
        .map(|s| s.code)
}

fn machine_of(item: &MachineReply) -> String {
    item.metadata
        .as_ref()
        .map(|m| m.machine_name.clone())
        .unwrap_or_default()
}

/// The last item of each machine, by name, with its code.
fn last_items(items: &[MachineReply]) -> Vec<(String, i32)> {
    let mut last: Vec<(String, i32)> = items
        .iter()
        .filter(|i| i.last)
        .map(|i| (machine_of(i), code_of(i).expect("a last item has a status")))
        .collect();
    last.sort();
    last
}

#[tokio::test]
async fn a_unary_method_answers_item_by_item_with_one_last_item_per_machine() {
    let mut cluster = Cluster::start("envelope-unary").await;
    let gamma = cluster.index("gamma");
    cluster.stop_service(gamma).await;
    let (items, trailers) = enveloped(
        switchyard_testkit::client::tcp_channel(cluster.nodes[0].addr),
        DESCRIBE,
        vec![DescribeRequest {}],
        &[("machines", "alpha,beta,gamma")],
    )
    .await
    .unwrap();
    assert_eq!(
        last_items(&items),
        [
            ("alpha".to_owned(), 0),
            ("beta".to_owned(), 0),
            ("gamma".to_owned(), Code::Unavailable as i32)
        ]
    );
    // Each machine's reply is its own, untouched (no tags written into it),
    // before its last item.
    for name in ["alpha", "beta"] {
        let mine: Vec<&MachineReply> = items.iter().filter(|i| machine_of(i) == name).collect();
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert!(!mine[0].last && mine[1].last && mine[1].message.is_empty());
        let reply = DescribeResponse::decode(&*mine[0].message).unwrap();
        assert_eq!(reply.messages.len(), 1);
        assert_eq!(reply.messages[0].name, name);
        assert!(reply.messages[0].metadata.is_none(), "tagged: {reply:?}");
    }
    let summary = trailers
        .get("switchyard-summary")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(summary, "2 ok, 1 unavailable");
    cluster.shutdown().await;
}

#[tokio::test]
async fn streams_and_methods_without_the_layout_fan_out_in_the_envelope() {
    let cluster = Cluster::start("envelope-streams").await;
    // Server streaming: every tick of every machine, then its last item.
    let (items, _) = enveloped(
        switchyard_testkit::client::tcp_channel(cluster.nodes[0].addr),
        WATCH,
        vec![WatchRequest {
            count: 3,
            interval_ms: 1,
        }],
        &[("machines", "alpha,beta")],
    )
    .await
    .unwrap();
    for name in ["alpha", "beta"] {
        let mine: Vec<&MachineReply> = items.iter().filter(|i| machine_of(i) == name).collect();
        let seqs: Vec<u32> = mine
            .iter()
            .filter(|i| !i.last)
            .map(|i| Tick::decode(&*i.message).unwrap().seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2], "{name}");
        assert!(mine.last().unwrap().last);
    }
    // Bidi, a reply type with no Metadata field: server reflection, which
    // the tagged shape refuses (FAILED_PRECONDITION).
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let (items, _) = enveloped(
        switchyard_testkit::client::tcp_channel(cluster.nodes[0].addr),
        REFLECTION,
        vec![list.clone()],
        &[("machines", "*")],
    )
    .await
    .unwrap();
    assert_eq!(last_items(&items).len(), 3, "{items:?}");
    assert!(last_items(&items).iter().all(|(_, code)| *code == 0));
    for item in items.iter().filter(|i| !i.last) {
        let reply = ServerReflectionResponse::decode(&*item.message).unwrap();
        let Some(MessageResponse::ListServicesResponse(services)) = reply.message_response else {
            panic!("{reply:?}");
        };
        assert!(
            services
                .service
                .iter()
                .any(|s| s.name == "machineinfo.v1.MachineInfo")
        );
    }
    // `machine` with the envelope: one machine, the same items.
    let (items, _) = enveloped(
        switchyard_testkit::client::tcp_channel(cluster.nodes[0].addr),
        DESCRIBE,
        vec![DescribeRequest {}],
        &[("machine", "beta")],
    )
    .await
    .unwrap();
    assert_eq!(last_items(&items), [("beta".to_owned(), 0)]);
    // A bad value is the caller's error.
    let status = enveloped(
        switchyard_testkit::client::tcp_channel(cluster.nodes[0].addr),
        DESCRIBE,
        vec![DescribeRequest {}],
        &[("machines", "alpha,beta"), ("switchyard-reply", "xml")],
    )
    .await
    .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["switchyard-reply"]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn failing_machines_end_with_their_status_and_a_stalled_caller_holds_only_its_call() {
    let cluster = Cluster::start("envelope-failing").await;
    let channel = || switchyard_testkit::client::tcp_channel(cluster.nodes[0].addr);
    // Every machine's server refuses the request: each one last item with
    // its server's status, and the call itself ends OK.
    let (items, trailers) = enveloped(
        channel(),
        WATCH,
        vec![WatchRequest {
            count: u32::MAX,
            interval_ms: 0,
        }],
        &[("machines", "alpha,beta")],
    )
    .await
    .unwrap();
    assert_eq!(
        last_items(&items),
        [
            ("alpha".to_owned(), Code::InvalidArgument as i32),
            ("beta".to_owned(), Code::InvalidArgument as i32)
        ]
    );
    assert!(items.iter().all(|i| i.last), "{items:?}");
    let error = &items[0].metadata.as_ref().unwrap().error;
    assert!(error.contains("above the limit"), "{error}");
    assert_eq!(
        trailers
            .get("switchyard-summary")
            .unwrap()
            .to_str()
            .unwrap(),
        "2 invalid_argument"
    );

    // A caller that stops reading a long envelope stream holds only it.
    let mut grpc = tonic::client::Grpc::new(channel());
    bounded("the channel", grpc.ready()).await.unwrap();
    let request = with_meta(
        WatchRequest {
            count: 10_000,
            interval_ms: 0,
        },
        &[
            ("machines", "alpha,beta,gamma"),
            ("switchyard-reply", "envelope"),
        ],
    );
    let codec = tonic_prost::ProstCodec::<WatchRequest, MachineReply>::default();
    let path = http::uri::PathAndQuery::from_static(WATCH);
    let _unread = bounded(
        "the stalled call",
        grpc.server_streaming(request, path, codec),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (items, _) = enveloped(
        channel(),
        DESCRIBE,
        vec![DescribeRequest {}],
        &[("machines", "alpha,beta,gamma")],
    )
    .await
    .unwrap();
    assert_eq!(last_items(&items).len(), 3);
    cluster.shutdown().await;
}
