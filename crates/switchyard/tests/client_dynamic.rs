//! The dynamic client's library against real servers on Unix sockets:
//! reflection (v1, v1alpha, metadata, bounds), every method kind, errors.

mod dynamic;

use dynamic as support;

use std::time::Duration;

use tokio::time::Instant;

use futures_util::StreamExt;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use support::{
    Reflection, TIMEOUT, pool_for_all_services, pool_for_symbols, spawn_echo, spawn_machine_info,
};
use switchyard::client::describe::describe;
use switchyard::client::invoke::{CallError, CallOptions, add_header, call, call_unary};
use switchyard::client::output::{self, JsonOptions};
use switchyard::client::request::{RequestError, RequestOptions, requests_for};
use switchyard::client::resolve::{
    MethodName, ResolveError, Symbol, resolve_method, resolve_symbol,
};
use switchyard::client::schema::{SchemaError, decode_protosets, load_protosets};
use switchyard_director::{ReflectionClient, ReflectionError, ReflectionVersion};
use tonic::metadata::MetadataMap;

fn options() -> CallOptions {
    CallOptions {
        metadata: MetadataMap::new(),
        timeout: Some(TIMEOUT),
        ..CallOptions::default()
    }
}

fn request(method: &MethodDescriptor, json: &str) -> Vec<DynamicMessage> {
    requests_for(method, json, RequestOptions::default()).expect("valid request")
}

/// `text` without the lines that mention `uptimeSeconds`/`UPTIME`, which
/// depend on timing.
fn without_uptime(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("uptimeSeconds"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn lists_services_through_reflection() {
    let (socket, _server) = spawn_machine_info("alpha", true);
    let mut reflection = ReflectionClient::new(socket.channel().await).with_timeout(TIMEOUT);
    let services = reflection.list_services().await.unwrap();
    assert_eq!(
        services,
        [
            "grpc.reflection.v1.ServerReflection",
            "machineinfo.v1.MachineInfo"
        ]
    );
    assert_eq!(reflection.version(), Some(ReflectionVersion::V1));
}

#[tokio::test]
async fn describes_service_method_and_message() {
    let (socket, _server) = spawn_machine_info("alpha", true);
    let pool = pool_for_all_services(socket.channel().await).await.unwrap();
    let text = |name: &str| describe(&resolve_symbol(&pool, name).unwrap());
    assert_eq!(
        text("machineinfo.v1.MachineInfo"),
        "machineinfo.v1.MachineInfo is a service:
service MachineInfo {
  // Who is this machine?
  rpc Describe ( .machineinfo.v1.DescribeRequest ) returns ( .machineinfo.v1.DescribeResponse );
  // A stream of `count` ticks, one every `interval_ms`.
  rpc Watch ( .machineinfo.v1.WatchRequest ) returns ( stream .machineinfo.v1.Tick );
}
"
    );
    assert_eq!(
        text("machineinfo.v1.MachineInfo.Watch"),
        "machineinfo.v1.MachineInfo.Watch is a method:
// A stream of `count` ticks, one every `interval_ms`.
rpc Watch ( .machineinfo.v1.WatchRequest ) returns ( stream .machineinfo.v1.Tick );
"
    );
    // Other spellings of the method name resolve to the same method.
    assert_eq!(
        text("MachineInfo/Watch"),
        text("machineinfo.v1.MachineInfo.Watch")
    );
    assert_eq!(
        text("machineinfo.v1.Tick"),
        "machineinfo.v1.Tick is a message:
message Tick {
  .switchyard.common.v1.Metadata metadata = 1;
  string name = 2;
  uint32 seq = 3;
}
"
    );
    // A short name, unique in the pool.
    assert!(
        text("Description")
            .starts_with("machineinfo.v1.Description is a message:\nmessage Description {\n")
    );
}

#[tokio::test]
async fn calls_describe_and_prints_every_form() {
    let (socket, _server) = spawn_machine_info("alpha", true);
    let channel = socket.channel().await;
    assert!(
        !MethodName::parse("MachineInfo/Describe")
            .unwrap()
            .is_qualified()
    );
    let pool = pool_for_all_services(channel.clone()).await.unwrap();
    let method = resolve_method(&pool, "MachineInfo/Describe").unwrap();
    let mut options = options();
    add_header(&mut options.metadata, "proxy-authority=cli-test").unwrap();
    let reply = call_unary(channel, &method, request(&method, "").remove(0), &options)
        .await
        .unwrap();

    assert_eq!(
        without_uptime(&output::format_json(&reply, JsonOptions::default())),
        r#"{
  "messages": [
    {
      "name": "alpha",
      "proxyAuthority": "cli-test",
      "calls": "1"
    }
  ]
}"#
    );
    let entries = output::split(&reply);
    assert_eq!(entries.len(), 1);
    assert_eq!(output::exit_code(&entries), 0);
    let table = output::format_table(&entries, false);
    let uptime = entries[0]
        .body
        .get_field_by_name("uptime_seconds")
        .unwrap()
        .as_u64()
        .unwrap();
    let pad = " ".repeat("UPTIME_SECONDS".len() - uptime.to_string().len());
    assert_eq!(
        table,
        format!(
            "MACHINE   NAME    UPTIME_SECONDS   PROXY_AUTHORITY   CALLS\n\
             -         alpha   {uptime}{pad}   cli-test          1\n"
        )
    );
    let line = output::format_jsonl(&entries[0], JsonOptions::default());
    let expected_uptime = if uptime == 0 {
        String::new()
    } else {
        format!(r#""uptimeSeconds":"{uptime}","#)
    };
    assert_eq!(
        line,
        format!(
            r#"{{"reply":{{"name":"alpha",{expected_uptime}"proxyAuthority":"cli-test","calls":"1"}}}}"#
        )
    );
}

#[tokio::test]
async fn streams_watch_ticks_as_they_arrive() {
    let (socket, _server) = spawn_machine_info("alpha", true);
    let channel = socket.channel().await;
    let pool = pool_for_symbols(channel.clone(), &["machineinfo.v1.MachineInfo"])
        .await
        .unwrap();
    let method = resolve_method(&pool, "/machineinfo.v1.MachineInfo/Watch").unwrap();
    let requests = request(&method, r#"{"count": 3, "intervalMs": 300}"#);
    let started = Instant::now();
    let mut reply = call(
        channel,
        &method,
        futures_util::stream::iter(requests),
        &options(),
    )
    .await
    .unwrap();
    let mut arrivals = Vec::new();
    let mut lines = Vec::new();
    while let Some(tick) = reply.messages.next().await {
        arrivals.push(started.elapsed());
        for entry in output::split(&tick.unwrap()) {
            lines.push(output::format_jsonl(&entry, JsonOptions::default()));
        }
    }
    assert_eq!(
        lines,
        [
            r#"{"reply":{"name":"alpha"}}"#,
            r#"{"reply":{"name":"alpha","seq":1}}"#,
            r#"{"reply":{"name":"alpha","seq":2}}"#,
        ]
    );
    // Ticks are 300 ms apart at the server; had the client buffered the
    // stream, they would all arrive together.
    assert!(
        arrivals[1] - arrivals[0] >= Duration::from_millis(200),
        "{arrivals:?}"
    );
    assert!(
        arrivals[2] - arrivals[1] >= Duration::from_millis(200),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn bad_request_json_names_the_field() {
    let pool = support::machine_info_pool();
    let method = resolve_method(&pool, "machineinfo.v1.MachineInfo.Watch").unwrap();
    let err = requests_for(&method, r#"{"count": "x"}"#, RequestOptions::default()).unwrap_err();
    match &err {
        RequestError::Field {
            path, message_type, ..
        } => {
            assert_eq!(path, "count");
            assert_eq!(message_type, "machineinfo.v1.WatchRequest");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("field `count` of machineinfo.v1.WatchRequest"),
        "{err}"
    );

    let err = requests_for(
        &method,
        r#"{"count": 1, "bogus": 2}"#,
        RequestOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bogus"), "{err}");
    let lenient = RequestOptions {
        allow_unknown_fields: true,
    };
    assert_eq!(
        requests_for(&method, r#"{"count": 1, "bogus": 2}"#, lenient)
            .unwrap()
            .len(),
        1
    );

    let err = requests_for(&method, "{} {}", RequestOptions::default()).unwrap_err();
    assert!(
        matches!(err, RequestError::TooMany { count: 2, .. }),
        "{err}"
    );
    let err = requests_for(&method, "{", RequestOptions::default()).unwrap_err();
    assert!(matches!(err, RequestError::Syntax(_)), "{err}");
}

#[tokio::test]
async fn unknown_methods_get_helpful_errors() {
    let (socket, _server) = spawn_machine_info("alpha", true);
    let pool = pool_for_all_services(socket.channel().await).await.unwrap();
    let err = resolve_method(&pool, "MachineInfo/Descrbe").unwrap_err();
    assert_eq!(
        err.to_string(),
        "service `machineinfo.v1.MachineInfo` has no method `Descrbe`. Did you mean `Describe`? Its methods: Describe, Watch"
    );
    let err = resolve_method(&pool, "machineinfo.v1.MachineInf/Describe").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown service `machineinfo.v1.MachineInf`. Did you mean `machineinfo.v1.MachineInfo`? \
         Known services: machineinfo.v1.MachineInfo"
    );
    let err = resolve_method(&pool, "Nope/Describe").unwrap_err();
    assert!(
        matches!(err, ResolveError::UnknownService { ref candidates, .. } if candidates.is_empty())
    );
    // Reflection's own service is not part of the API.
    assert!(
        err.to_string()
            .ends_with(". Known services: machineinfo.v1.MachineInfo"),
        "{err}"
    );
    assert!(matches!(
        resolve_method(&pool, "Describe"),
        Err(ResolveError::Malformed(_))
    ));

    // Reflection itself says which symbol it does not know.
    let err = pool_for_symbols(socket.channel().await, &["nope.v1.Missing"])
        .await
        .unwrap_err();
    assert!(
        matches!(err, ReflectionError::SymbolNotFound(ref s) if s == "nope.v1.Missing"),
        "{err}"
    );
}

#[tokio::test]
async fn ambiguous_short_names_list_their_matches() {
    // Two packages with a service of the same short name.
    let file = |package: &str| prost_types::FileDescriptorProto {
        name: Some(format!("{package}.proto")),
        package: Some(package.into()),
        message_type: vec![prost_types::DescriptorProto {
            name: Some("Empty".into()),
            ..Default::default()
        }],
        service: vec![prost_types::ServiceDescriptorProto {
            name: Some("Info".into()),
            method: vec![prost_types::MethodDescriptorProto {
                name: Some("Get".into()),
                input_type: Some(format!(".{package}.Empty")),
                output_type: Some(format!(".{package}.Empty")),
                ..Default::default()
            }],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let pool = DescriptorPool::from_file_descriptor_set(prost_types::FileDescriptorSet {
        file: vec![file("a.v1"), file("b.v1")],
    })
    .unwrap();
    let err = resolve_method(&pool, "Info/Get").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`Info` is ambiguous: it matches a.v1.Info, b.v1.Info. Give the full name"
    );
    assert_eq!(
        resolve_method(&pool, "b.v1.Info/Get").unwrap().full_name(),
        "b.v1.Info.Get"
    );
}

#[tokio::test]
async fn protoset_calls_a_server_without_reflection() {
    let (socket, _server) = spawn_machine_info("bare", false);
    let channel = socket.channel().await;
    let err = ReflectionClient::new(channel.clone())
        .list_services()
        .await
        .unwrap_err();
    assert!(matches!(err, ReflectionError::Unsupported(_)), "{err}");
    let err = SchemaError::from(err);
    assert!(err.to_string().contains("--protoset"), "{err}");
    assert!(err.is_usage());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("machineinfo.protoset");
    std::fs::write(&path, machine_info::pb::FILE_DESCRIPTOR_SET).unwrap();
    let pool = load_protosets(&[&path]).unwrap();
    let method = resolve_method(&pool, "MachineInfo/Describe").unwrap();
    let reply = call_unary(
        channel,
        &method,
        request(&method, "{}").remove(0),
        &options(),
    )
    .await
    .unwrap();
    assert_eq!(
        output::split(&reply)[0]
            .body
            .get_field_by_name("name")
            .unwrap()
            .as_str(),
        Some("bare")
    );
}

#[tokio::test]
async fn protoset_without_well_known_imports_gets_built_in_ones() {
    // The echo set includes its google/protobuf imports; drop them.
    let full = prost::Message::decode(support::echo_descriptor_set().as_slice()).unwrap();
    let prost_types::FileDescriptorSet { file } = full;
    let trimmed = prost_types::FileDescriptorSet {
        file: file
            .into_iter()
            .filter(|f| !f.name().starts_with("google/protobuf/"))
            .collect(),
    };
    let pool = decode_protosets([prost::Message::encode_to_vec(&trimmed).as_slice()]).unwrap();
    assert!(
        pool.get_message_by_name("google.protobuf.Timestamp")
            .is_some()
    );
    assert!(resolve_method(&pool, "Echo/Echo").is_ok());

    // Any other missing import is an error naming it.
    let only_echo = prost_types::FileDescriptorSet {
        file: trimmed
            .file
            .into_iter()
            .filter(|f| f.name() == "test/v1/echo.proto")
            .collect(),
    };
    let err = decode_protosets([prost::Message::encode_to_vec(&only_echo).as_slice()]).unwrap_err();
    let err = err.to_string();
    assert!(
        err.starts_with(
            "file `test/v1/echo.proto` imports `switchyard/common/v1/common.proto`, which the schema source does not provide; \
             give the schema with --protoset FILE, made with `protoc --include_imports"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn falls_back_to_v1alpha_reflection() {
    let server = spawn_echo(Reflection::V1Alpha);
    let mut reflection = ReflectionClient::new(server.socket.channel().await).with_timeout(TIMEOUT);
    let services = reflection.list_services().await.unwrap();
    assert_eq!(reflection.version(), Some(ReflectionVersion::V1Alpha));
    assert!(
        services.contains(&"machineinfo.v1.MachineInfo".to_owned()),
        "{services:?}"
    );
    let files = reflection
        .files_for_symbols(&["machineinfo.v1.MachineInfo"])
        .await
        .unwrap();
    let pool = switchyard::client::schema::complete(files).unwrap();
    let method = resolve_method(&pool, "machineinfo.v1.MachineInfo/Describe").unwrap();
    // The files came with their imports: the fan-out metadata is known.
    assert!(
        pool.get_message_by_name("switchyard.common.v1.Metadata")
            .is_some()
    );
    assert!(pool.get_message_by_name("google.rpc.Status").is_some());
    let reply = call_unary(
        server.socket.channel().await,
        &method,
        request(&method, "{}").remove(0),
        &options(),
    )
    .await
    .unwrap();
    assert_eq!(output::split(&reply).len(), 1);
}

#[tokio::test]
async fn reflection_carries_request_metadata() {
    let server = spawn_echo(Reflection::V1RequiringMachine);
    let channel = server.socket.channel().await;
    let err = ReflectionClient::new(channel.clone())
        .list_services()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ReflectionError::Status(status) if status.code() == tonic::Code::PermissionDenied),
        "{err}"
    );
    let mut metadata = MetadataMap::new();
    add_header(&mut metadata, "machine=alpha").unwrap();
    let mut reflection = ReflectionClient::new(channel).with_metadata(metadata);
    assert!(
        reflection
            .list_services()
            .await
            .unwrap()
            .contains(&"test.v1.Echo".to_owned())
    );
    let found = reflection.files_for_services().await.unwrap();
    let pool = switchyard::client::schema::complete(found.files).unwrap();
    assert!(resolve_method(&pool, "Echo/Chat").is_ok());
}

#[tokio::test]
async fn reflection_is_bounded_by_its_timeout() {
    // A listener that accepts and never answers.
    let socket = support::Socket::new();
    let listener = tokio::net::UnixListener::bind(&socket.path).unwrap();
    let _accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let channel = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
            let path = socket.path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }));
    let started = Instant::now();
    let err = ReflectionClient::new(channel)
        .with_timeout(Duration::from_millis(300))
        .list_services()
        .await
        .unwrap_err();
    assert!(matches!(err, ReflectionError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn client_streaming_and_bidi_calls() {
    let server = spawn_echo(Reflection::V1);
    let channel = server.socket.channel().await;
    let pool = pool_for_all_services(channel.clone()).await.unwrap();

    let collect = resolve_method(&pool, "test.v1.Echo/Collect").unwrap();
    let items = request(
        &collect,
        r#"{"text": "a"} {"text": "b"}
{"text": "c"}"#,
    );
    assert_eq!(items.len(), 3);
    let mut reply = call(
        channel.clone(),
        &collect,
        futures_util::stream::iter(items),
        &options(),
    )
    .await
    .unwrap();
    let summary = reply.messages.next().await.unwrap().unwrap();
    assert!(reply.messages.next().await.is_none());
    assert_eq!(
        output::format_json(&summary, JsonOptions::default()),
        "{\n  \"count\": 3,\n  \"joined\": \"a,b,c\"\n}"
    );
    // No message at all is a valid client stream.
    let none = request(&collect, "");
    assert!(none.is_empty());
    let mut reply = call(
        channel.clone(),
        &collect,
        futures_util::stream::iter(none),
        &options(),
    )
    .await
    .unwrap();
    let summary = reply.messages.next().await.unwrap().unwrap();
    assert_eq!(output::format_json(&summary, JsonOptions::default()), "{}");

    // Bidi: each answer arrives before the next request is sent.
    let chat = resolve_method(&pool, "Echo.Chat").unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<DynamicMessage>(1);
    let mut reply = call(
        channel,
        &chat,
        tokio_stream::wrappers::ReceiverStream::new(rx),
        &options(),
    )
    .await
    .unwrap();
    for (i, text) in ["x", "y"].into_iter().enumerate() {
        tx.send(request(&chat, &format!(r#"[{{"text": "{text}"}}]"#)).remove(0))
            .await
            .unwrap();
        let answer = reply.messages.next().await.unwrap().unwrap();
        assert_eq!(
            output::to_json(&answer, JsonOptions::default()).to_compact(),
            format!(r#"{{"text":"{text}","n":"{}"}}"#, i + 1)
        );
    }
    drop(tx);
    assert!(reply.messages.next().await.is_none());
}

#[tokio::test]
async fn fan_out_reply_through_the_wire() {
    let server = spawn_echo(Reflection::V1);
    let channel = server.socket.channel().await;
    let pool = pool_for_symbols(channel.clone(), &["test.v1.Echo"])
        .await
        .unwrap();
    let fleet = resolve_method(&pool, "Echo/Fleet").unwrap();
    let reply = call_unary(
        channel.clone(),
        &fleet,
        request(&fleet, "").remove(0),
        &options(),
    )
    .await
    .unwrap();
    let golden = include_str!("golden/fleet.grpcurl.json");
    assert_eq!(
        output::format_json(&reply, JsonOptions::default()) + "\n",
        golden
    );
    let entries = output::split(&reply);
    assert_eq!(output::exit_code(&entries), 1);
    assert_eq!(
        output::format_table(&entries, false),
        "MACHINE          NAME    LOAD   COLOR               TAGS   RATIO\n\
         alpha            alpha   12     RED                 a,b    0.5\n\
         beta             ERROR UNAVAILABLE: connection refused\n\
         10.0.0.3:50000   gamma   7      COLOR_UNSPECIFIED          0\n"
    );
}

#[tokio::test]
async fn calls_are_bounded_by_their_timeout() {
    let (socket, _server) = spawn_machine_info("alpha", true);
    let pool = support::machine_info_pool();
    let method = resolve_method(&pool, "MachineInfo/Watch").unwrap();
    let requests = request(&method, r#"{"count": 5, "intervalMs": 2000}"#);
    let options = CallOptions {
        metadata: MetadataMap::new(),
        timeout: Some(Duration::from_millis(500)),
        ..CallOptions::default()
    };
    let started = Instant::now();
    let mut reply = call(
        socket.channel().await,
        &method,
        futures_util::stream::iter(requests),
        &options,
    )
    .await
    .unwrap();
    assert!(reply.messages.next().await.unwrap().is_ok());
    let err = reply.messages.next().await.unwrap().unwrap_err();
    // The server or the client, whichever notices first, ends it.
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );
    assert!(reply.messages.next().await.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn status_errors_are_reported() {
    let (socket, _server) = spawn_machine_info("alpha", true);
    let pool = support::machine_info_pool();
    let method = resolve_method(&pool, "MachineInfo/Watch").unwrap();
    let requests = request(&method, r#"{"count": 100000}"#);
    let err = match call(
        socket.channel().await,
        &method,
        futures_util::stream::iter(requests),
        &options(),
    )
    .await
    {
        Err(err) => err,
        Ok(mut reply) => reply.messages.next().await.unwrap().unwrap_err(),
    };
    assert!(matches!(&err, CallError::Status(s) if s.code() == tonic::Code::InvalidArgument));
    assert_eq!(
        err.to_string(),
        "INVALID_ARGUMENT: count 100000 is above the limit of 10000"
    );
}

#[tokio::test]
async fn symbols_of_every_kind_resolve() {
    let pool = support::echo_pool();
    let kind = |name: &str| match resolve_symbol(&pool, name).unwrap() {
        Symbol::Service(_) => "service",
        Symbol::Method(_) => "method",
        Symbol::Message(_) => "message",
        Symbol::Enum(_) => "enum",
        Symbol::Field(_) => "field",
        Symbol::EnumValue(_) => "enum value",
    };
    assert_eq!(kind("test.v1.Echo"), "service");
    assert_eq!(kind(".test.v1.Echo.Chat"), "method");
    assert_eq!(kind("Echo/Chat"), "method");
    assert_eq!(kind("test.v1.Kitchen"), "message");
    assert_eq!(kind("Kitchen"), "message");
    assert_eq!(kind("test.v1.Color"), "enum");
    assert_eq!(kind("test.v1.Kitchen.custom"), "field");
    assert_eq!(kind("test.v1.RED"), "enum value");
    let err = resolve_symbol(&pool, "test.v1.Kichen").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown symbol `test.v1.Kichen`. Did you mean `test.v1.Kitchen`?"
    );
}
