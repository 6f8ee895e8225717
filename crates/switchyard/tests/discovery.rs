//! The director learns the local server's methods through gRPC reflection
//! (v1, or v1alpha on older servers): an embedded director with default
//! options streams fan-out of streaming methods from its very first call,
//! and refuses to fan out a method whose reply type cannot carry the
//! machines' `Metadata`.

use std::time::Duration;

use switchyard_director::catalog::discover;
use switchyard_director::{DirectorOptions, MachineDirector, ReflectionError};
use switchyard_engine::{ServerConfig, TransparentProxy};
use switchyard_testkit::client::with_meta;
use switchyard_testkit::pb::PingRequest;
use switchyard_testkit::pb::multi_service_client::MultiServiceClient;
use switchyard_testkit::pb::test_service_client::TestServiceClient;
use switchyard_testkit::server::TestServer;
use switchyard_testkit::wait::{bounded, socket_dir};
use tonic::Code;

const TWICE: [(&str, &str); 1] = [("machines", "fd00::1,fd00::1")];
const WATCH: &str = "/machineinfo.v1.MachineInfo/Watch";
const DESCRIBE: &str = "/machineinfo.v1.MachineInfo/Describe";

#[tokio::test]
async fn learns_which_methods_stream_and_which_fit_fan_out() {
    let dir = socket_dir("discover");
    let socket = dir.path().join("api.sock");
    let _server = machine_info::Server::spawn_unix("alpha", &socket).unwrap();
    let methods = discover(&socket).await.unwrap();
    assert!(methods[WATCH].streamed);
    assert!(methods[WATCH].unfit.is_none(), "{:?}", methods[WATCH]);
    assert!(!methods[DESCRIBE].streamed);
    assert!(methods[DESCRIBE].unfit.is_none());
}

/// Older servers offer only `grpc.reflection.v1alpha`.
#[tokio::test]
async fn falls_back_to_v1alpha() {
    let dir = socket_dir("v1alpha");
    let socket = dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(machine_info::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(machine_info::Service::new("alpha").into_server())
            .add_service(reflection)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let methods = discover(&socket).await.unwrap();
    assert!(methods[WATCH].streamed);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}

#[tokio::test]
async fn a_server_without_reflection_is_reported_as_such() {
    let dir = socket_dir("no-reflection");
    let socket = dir.path().join("api.sock");
    let _server = machine_info::Server::spawn_unix_with("alpha", &socket, false).unwrap();
    assert!(matches!(
        discover(&socket).await,
        Err(ReflectionError::Unsupported(_))
    ));
    assert!(discover(&dir.path().join("nobody.sock")).await.is_err());
}

/// A director embedded with default options in front of the test server
/// (which answers reflection), served on loopback; `machines: fd00::1,
/// fd00::1` (a list, naming this machine) fans out to the local server
/// without dialling anything.
#[tokio::test]
async fn an_embedded_director_with_defaults_streams_fan_out_and_refuses_unfit_replies() {
    let dir = socket_dir("embedded");
    let socket = dir.path().join("api.sock");
    let _server = TestServer::spawn_unix_reflecting("local", &socket).await;
    let endpoint = serve_director(&socket, DirectorOptions::default()).await;
    let twice = TWICE;

    // The very first call is a streaming fan-out: each reply comes tagged,
    // as it arrives (merged as unary, the second reply would end the
    // machine's part with an error entry).
    let mut multi = MultiServiceClient::connect(endpoint.clone()).await.unwrap();
    let request = PingRequest {
        value: "hi".into(),
        count: 3,
        ..PingRequest::default()
    };
    let mut stream = bounded(
        "PingList fan-out",
        multi.ping_list(with_meta(request, &twice)),
    )
    .await
    .unwrap()
    .into_inner();
    let mut replies = Vec::new();
    while let Some(reply) = bounded("a PingList reply", stream.message()).await.unwrap() {
        replies.push(reply);
    }
    assert_eq!(replies.len(), 3, "{replies:?}");
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.counter, i as i64);
        let metadata = reply.metadata.as_ref().expect("tagged");
        assert_eq!(metadata.machine_addr, "fd00::1");
        assert!(metadata.error.is_empty(), "{metadata:?}");
        assert_eq!(reply.value, "hi");
    }

    // TestService/Ping answers a plain PingResponse (field 1 a string):
    // refused before anything is sent, saying why.
    let mut plain = TestServiceClient::connect(endpoint).await.unwrap();
    let status = plain
        .ping(with_meta(PingRequest::default(), &twice))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with(
            "/switchyard.test.v1.TestService/Ping cannot fan out tagged: field 1 of its reply type \
             switchyard.test.v1.PingResponse (`value`) is not a repeated message"
        ),
        "{}",
        status.message()
    );
    // One-to-one it is served as always.
    let reply = plain.ping(PingRequest::default()).await.unwrap();
    assert_eq!(reply.into_inner().server, "local");
}

/// A director in front of the server at `socket`, as this machine
/// `fd00::1`, served on loopback; its endpoint URL.
async fn serve_director(socket: &std::path::Path, options: DirectorOptions) -> String {
    let director = MachineDirector::new(
        socket,
        51000,
        DirectorOptions {
            local_address: Some("fd00::1".parse().unwrap()),
            ..options
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = TransparentProxy::new(director);
    tokio::spawn(async move {
        switchyard_engine::server::serve(
            listener,
            proxy,
            &ServerConfig::default(),
            std::future::pending(),
        )
        .await;
    });
    format!("http://{addr}")
}

/// The codes of a fan-out reply's error entries.
fn entry_codes(reply: &machine_info::pb::DescribeResponse) -> Vec<i32> {
    reply
        .messages
        .iter()
        .map(|d| {
            d.metadata
                .as_ref()
                .and_then(|m| m.status.as_ref())
                .map_or(0, |s| s.code)
        })
        .collect()
}

/// The test server declares no `MachineInfo`: once it answered reflection, a
/// tagged fan-out of `MachineInfo/Describe` (to this machine, named twice:
/// one entry) is refused (tags would be
/// written into a reply type nobody knows), unless configured as streamed;
/// a server without reflection is trusted as before.
#[tokio::test]
async fn an_undeclared_method_does_not_fan_out_once_the_server_answered_reflection() {
    use machine_info::pb::DescribeRequest;
    use machine_info::pb::machine_info_client::MachineInfoClient;

    let dir = socket_dir("undeclared");
    let socket = dir.path().join("api.sock");
    let _server = TestServer::spawn_unix_reflecting("local", &socket).await;
    let endpoint = serve_director(&socket, DirectorOptions::default()).await;
    let mut client = MachineInfoClient::connect(endpoint).await.unwrap();
    let status = client
        .describe(with_meta(DescribeRequest {}, &TWICE))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with(&format!(
            "{DESCRIBE} cannot fan out tagged: the local server does not declare it"
        )),
        "{}",
        status.message()
    );
    // One-to-one it is forwarded (and the server says it has no such method).
    let status = client.describe(DescribeRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Named in streamed_methods: fanned out, each machine's answer an entry.
    let options = DirectorOptions {
        streamed: switchyard_director::StreamedMethods::from_list([WATCH]),
        ..DirectorOptions::default()
    };
    let endpoint = serve_director(&socket, options).await;
    let mut client = MachineInfoClient::connect(endpoint).await.unwrap();
    let mut stream = client
        .watch(with_meta(machine_info::pb::WatchRequest::default(), &TWICE))
        .await
        .unwrap()
        .into_inner();
    let mut codes = Vec::new();
    while let Some(tick) = bounded("a Watch entry", stream.message()).await.unwrap() {
        codes.push(tick.metadata.and_then(|m| m.status).map_or(0, |s| s.code));
    }
    assert_eq!(codes, [Code::Unimplemented as i32]);

    // A server without reflection: nothing is known, the fan-out goes ahead.
    let plain_socket = dir.path().join("plain.sock");
    let _plain = TestServer::spawn_unix("plain", &plain_socket).await;
    let endpoint = serve_director(&plain_socket, DirectorOptions::default()).await;
    let mut client = MachineInfoClient::connect(endpoint).await.unwrap();
    let reply = client
        .describe(with_meta(DescribeRequest {}, &TWICE))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(entry_codes(&reply), [Code::Unimplemented as i32]);
}
