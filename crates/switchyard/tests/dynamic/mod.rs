//! Servers for the dynamic client's tests, on Unix sockets in temporary
//! directories, and schema helpers.
//!
//! - machine-info, with or without reflection (the project's sample);
//! - `test.v1.Echo` (`tests/proto/test/v1/echo.proto`): every field kind and
//!   all four method kinds, implemented with the client's own codec on the
//!   server side, plus machine-info, with a choice of reflection services.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use switchyard::client::codec::DynamicCodec;
use switchyard::client::schema::complete;
use switchyard_director::{ReflectionClient, ReflectionError};
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The test API's encoded `FileDescriptorSet` (with its imports and
/// comments), compiled from source without protoc.
pub fn echo_descriptor_set() -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proto");
    let contract = concat!(env!("CARGO_MANIFEST_DIR"), "/../director/proto");
    let fds =
        protox::compile(["test/v1/echo.proto"], [dir, contract]).expect("the test proto compiles");
    fds.encode_to_vec()
}

pub fn echo_pool() -> DescriptorPool {
    DescriptorPool::decode(echo_descriptor_set().as_slice()).expect("valid descriptor set")
}

/// The machine-info pool, from the descriptor set it embeds.
pub fn machine_info_pool() -> DescriptorPool {
    DescriptorPool::decode(machine_info::pb::FILE_DESCRIPTOR_SET).expect("valid descriptor set")
}

pub struct Socket {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Socket {
    pub fn new() -> Self {
        let dir = switchyard_testkit::wait::socket_dir("dynamic");
        let path = dir.path().join("grpc.sock");
        Self { dir, path }
    }

    pub async fn channel(&self) -> Channel {
        switchyard_testkit::client::unix_channel(&self.path)
    }
}

/// machine-info as machine `name`.
pub fn spawn_machine_info(name: &str, reflection: bool) -> (Socket, machine_info::Server) {
    let socket = Socket::new();
    let server =
        machine_info::Server::spawn_unix_with(name, &socket.path, reflection).expect("serves");
    (socket, server)
}

/// Which reflection services the echo server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflection {
    None,
    V1,
    V1Alpha,
    /// v1, answering only calls that carry `machine: alpha`.
    V1RequiringMachine,
}

/// Stops its server when dropped.
pub struct Running {
    pub socket: Socket,
    _stop: oneshot::Sender<()>,
}

/// `test.v1.Echo` and machine-info (as `alpha`) on one socket.
pub fn spawn_echo(reflection: Reflection) -> Running {
    let socket = Socket::new();
    let listener = UnixListener::bind(&socket.path).expect("binds");
    let echo_set = echo_descriptor_set();
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(machine_info::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(&echo_set)
    };
    let v1 = (reflection == Reflection::V1).then(|| builder().build_v1().expect("reflection"));
    let v1alpha =
        (reflection == Reflection::V1Alpha).then(|| builder().build_v1alpha().expect("reflection"));
    let guarded = (reflection == Reflection::V1RequiringMachine).then(|| {
        tonic::service::interceptor::InterceptedService::new(
            builder().build_v1().expect("reflection"),
            |request: Request<()>| match request.metadata().get("machine") {
                Some(machine) if machine == "alpha" => Ok(request),
                _ => Err(Status::permission_denied(
                    "say which machine (machine: alpha)",
                )),
            },
        )
    });
    let router = tonic::transport::Server::builder()
        .add_service(EchoService::new())
        .add_service(machine_info::Service::new("alpha").into_server())
        .add_optional_service(v1)
        .add_optional_service(v1alpha)
        .add_optional_service(guarded);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        socket,
        _stop: stop,
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type BoxStream = Pin<Box<dyn Stream<Item = Result<DynamicMessage, Status>> + Send>>;

/// `test.v1.Echo`, served from descriptors alone.
#[derive(Clone)]
pub struct EchoService {
    pool: DescriptorPool,
}

impl EchoService {
    pub fn new() -> Self {
        Self { pool: echo_pool() }
    }

    fn method(&self, name: &str) -> MethodDescriptor {
        self.pool
            .get_service_by_name("test.v1.Echo")
            .and_then(|s| s.methods().find(|m| m.name() == name))
            .expect("declared method")
    }
}

impl NamedService for EchoService {
    const NAME: &'static str = "test.v1.Echo";
}

impl tower::Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let name = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let this = self.clone();
        Box::pin(async move {
            let unimplemented =
                || Ok(Status::unimplemented(format!("no method {name}")).into_http());
            if !["Echo", "Collect", "Chat", "Fleet"].contains(&name.as_str()) {
                return unimplemented();
            }
            let method = this.method(&name);
            // Requests as large as a Switchyard passes (its default limit).
            let mut grpc = tonic::server::Grpc::new(DynamicCodec::for_server(&method))
                .max_decoding_message_size(32 << 20);
            Ok(match name.as_str() {
                "Echo" => grpc.unary(Echo, request).await,
                "Fleet" => grpc.unary(Fleet(method), request).await,
                "Collect" => grpc.client_streaming(Collect(method), request).await,
                _ => grpc.streaming(Chat(method), request).await,
            })
        })
    }
}

struct Echo;

impl tonic::server::UnaryService<DynamicMessage> for Echo {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        Box::pin(async move { Ok(Response::new(request.into_inner())) })
    }
}

struct Fleet(MethodDescriptor);

impl tonic::server::UnaryService<DynamicMessage> for Fleet {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: Request<DynamicMessage>) -> Self::Future {
        let output = self.0.output();
        Box::pin(async move {
            let fail_all = request
                .get_ref()
                .get_field_by_name("fail_all")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let reply = if fail_all { FLEET_ALL_FAILED } else { FLEET };
            let value: serde_json::Value = serde_json::from_str(reply).expect("valid JSON");
            let message = DynamicMessage::deserialize(output, value).expect("valid reply");
            Ok(Response::new(message))
        })
    }
}

pub const FLEET: &str = r#"{"messages": [
  {"metadata": {"machineAddr": "10.0.0.1:50000", "machineName": "alpha", "machineId": "m-1"},
   "name": "alpha", "load": "12", "color": "RED", "inner": {"text": "x"}, "tags": ["a", "b"], "ratio": 0.5},
  {"metadata": {"machineAddr": "10.0.0.2:50000", "machineName": "beta", "error": "connection refused",
                "status": {"code": 14, "message": "connection refused"}}},
  {"metadata": {"machineAddr": "10.0.0.3:50000"}, "name": "gamma", "load": "7"}
]}"#;

pub const FLEET_ALL_FAILED: &str = r#"{"messages": [
  {"metadata": {"machineAddr": "10.0.0.1:50000", "machineName": "alpha", "error": "boom"}},
  {"metadata": {"machineAddr": "10.0.0.2:50000", "machineName": "beta",
                "status": {"code": 4, "message": "too slow"}}}
]}"#;

struct Collect(MethodDescriptor);

impl tonic::server::ClientStreamingService<DynamicMessage> for Collect {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, request: Request<tonic::Streaming<DynamicMessage>>) -> Self::Future {
        let output = self.0.output();
        Box::pin(async move {
            let mut items = request.into_inner();
            let mut texts = Vec::new();
            while let Some(item) = items.message().await? {
                let text = item
                    .get_field_by_name("text")
                    .and_then(|v| v.as_str().map(str::to_owned));
                texts.push(text.unwrap_or_default());
            }
            let mut summary = DynamicMessage::new(output);
            summary.set_field_by_name("count", prost_reflect::Value::I32(texts.len() as i32));
            summary.set_field_by_name("joined", prost_reflect::Value::String(texts.join(",")));
            Ok(Response::new(summary))
        })
    }
}

struct Chat(MethodDescriptor);

impl tonic::server::StreamingService<DynamicMessage> for Chat {
    type Response = DynamicMessage;
    type ResponseStream = BoxStream;
    type Future = BoxFuture<Result<Response<BoxStream>, Status>>;

    fn call(&mut self, request: Request<tonic::Streaming<DynamicMessage>>) -> Self::Future {
        Box::pin(async move {
            let replies = request.into_inner().enumerate().map(|(i, item)| {
                let mut item = item?;
                item.set_field_by_name("n", prost_reflect::Value::I64(i as i64 + 1));
                Ok(item)
            });
            Ok(Response::new(Box::pin(replies) as BoxStream))
        })
    }
}

/// `inventory.v1.Inventory`'s encoded `FileDescriptorSet` (with imports).
pub fn inventory_descriptor_set() -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proto");
    let contract = concat!(env!("CARGO_MANIFEST_DIR"), "/../director/proto");
    protox::compile(["inventory/v1/inventory.proto"], [dir, contract])
        .expect("the inventory proto compiles")
        .encode_to_vec()
}

/// `inventory.v1.Inventory` (whose fan-out tags are its own `Origin`) and
/// machine-info, both answering as machine `name`, with v1 reflection of
/// both, on a socket of its own.
pub fn spawn_inventory(name: &str) -> Running {
    let socket = Socket::new();
    let listener = UnixListener::bind(&socket.path).expect("binds");
    let set = inventory_descriptor_set();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(machine_info::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(&set)
        .build_v1()
        .expect("reflection");
    let pool = DescriptorPool::decode(set.as_slice()).expect("valid descriptor set");
    let router = tonic::transport::Server::builder()
        .add_service(InventoryService {
            pool,
            name: name.to_owned(),
        })
        .add_service(machine_info::Service::new(name).into_server())
        .add_service(reflection);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        socket,
        _stop: stop,
    }
}

/// `inventory.v1.Inventory/Parts`: one part named after the machine.
#[derive(Clone)]
struct InventoryService {
    pool: DescriptorPool,
    name: String,
}

impl NamedService for InventoryService {
    const NAME: &'static str = "inventory.v1.Inventory";
}

impl tower::Service<http::Request<tonic::body::Body>> for InventoryService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if request.uri().path() != "/inventory.v1.Inventory/Parts" {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let method = this
                .pool
                .get_service_by_name("inventory.v1.Inventory")
                .and_then(|s| s.methods().next())
                .expect("declared method");
            let reply = serde_json::json!({
                "messages": [{"serial": format!("{}-1", this.name), "count": 3}]
            });
            let reply = DynamicMessage::deserialize(method.output(), reply).expect("valid reply");
            let mut grpc = tonic::server::Grpc::new(DynamicCodec::for_server(&method));
            Ok(grpc.unary(Reply(reply), request).await)
        })
    }
}

/// Answers any request with one reply.
struct Reply(DynamicMessage);

impl tonic::server::UnaryService<DynamicMessage> for Reply {
    type Response = DynamicMessage;
    type Future = BoxFuture<Result<Response<DynamicMessage>, Status>>;

    fn call(&mut self, _: Request<DynamicMessage>) -> Self::Future {
        let reply = self.0.clone();
        Box::pin(async move { Ok(Response::new(reply)) })
    }
}

/// `bare.v1.Bare` on a socket of its own, with v1 reflection of files that
/// list none of their imports: `bare/v1/bare.proto` uses
/// `google.protobuf.Timestamp` (not served at all) and `bare.v1.Part`, whose
/// file is served (found by symbol) only when `serve_part`.
pub fn spawn_bare(serve_part: bool) -> Running {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/proto");
    let compiled = protox::compile(["bare/v1/bare.proto"], [dir]).expect("the bare proto compiles");
    let pool = DescriptorPool::from_file_descriptor_set(compiled.clone()).expect("valid");
    let served = prost_types::FileDescriptorSet {
        file: compiled
            .file
            .into_iter()
            .filter_map(|mut file| match file.name() {
                "bare/v1/bare.proto" => {
                    file.dependency.clear();
                    Some(file)
                }
                "bare/v1/part.proto" if serve_part => Some(file),
                _ => None,
            })
            .collect(),
    };
    let socket = Socket::new();
    let listener = UnixListener::bind(&socket.path).expect("binds");
    let reflection = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(served)
        .build_v1()
        .expect("reflection");
    let router = tonic::transport::Server::builder()
        .add_service(BareService { pool })
        .add_service(reflection);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        socket,
        _stop: stop,
    }
}

/// `bare.v1.Bare/Echo`: answers with the request.
#[derive(Clone)]
struct BareService {
    pool: DescriptorPool,
}

impl NamedService for BareService {
    const NAME: &'static str = "bare.v1.Bare";
}

impl tower::Service<http::Request<tonic::body::Body>> for BareService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let method = self
            .pool
            .get_service_by_name("bare.v1.Bare")
            .and_then(|s| s.methods().next())
            .expect("declared method");
        Box::pin(async move {
            if request.uri().path() != "/bare.v1.Bare/Echo" {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(DynamicCodec::for_server(&method));
            Ok(grpc.unary(Echo, request).await)
        })
    }
}

/// A reflection client of `channel`, bounded by [`TIMEOUT`].
pub fn reflection(channel: Channel) -> ReflectionClient<Channel> {
    ReflectionClient::new(channel).with_timeout(TIMEOUT)
}

/// Every service of the server at `channel`, through reflection.
pub async fn pool_for_all_services(channel: Channel) -> Result<DescriptorPool, ReflectionError> {
    let found = reflection(channel).files_for_services().await?;
    Ok(complete(found.files).expect("a complete schema"))
}

/// The files declaring `symbols`, through reflection.
pub async fn pool_for_symbols(
    channel: Channel,
    symbols: &[&str],
) -> Result<DescriptorPool, ReflectionError> {
    let files = reflection(channel).files_for_symbols(symbols).await?;
    Ok(complete(files).expect("a complete schema"))
}
