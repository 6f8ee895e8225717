//! A client of gRPC server reflection, shared by the daemon and the CLI.
//!
//! The daemon asks its own machine's server which methods stream
//! (fan-out must know, and the wire does not say); `switchyard call` asks a
//! machine for the schema of the method it calls. Both need the same things
//! done the same way: `grpc.reflection.v1` first and, when the server answers
//! `UNIMPLEMENTED`, `grpc.reflection.v1alpha` (older servers offer only
//! that); every operation bounded by one timeout, whatever the server does;
//! the caller's metadata on every request (through Switchyard it names the
//! machine to ask: `machine: beta`).
//!
//! Files come back encoded, as received, in a [`FileSet`]: decoding them
//! into `prost_types` and encoding again would drop what those types do not
//! know (custom options), and each user decodes what it needs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use futures_channel::mpsc;
use prost::Message;
use tonic::client::GrpcService;
use tonic::codegen::{Body, StdError};
use tonic::metadata::MetadataMap;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// A channel over the Unix socket `path`, configured by `endpoint` (whose
/// URI is only a placeholder): how the director reaches its local server's
/// reflection, and the CLI a Switchyard's Unix listener.
pub async fn connect_unix(
    endpoint: tonic::transport::Endpoint,
    path: &std::path::Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    endpoint.connect_with_connector(unix_connector(path)).await
}

/// [`connect_unix`], connecting on first use (and again after a failure):
/// one channel that every caller's stream shares.
pub fn connect_unix_lazy(
    endpoint: tonic::transport::Endpoint,
    path: &std::path::Path,
) -> tonic::transport::Channel {
    endpoint.connect_with_connector_lazy(unix_connector(path))
}

/// Dials the Unix socket `path`, whatever URI the channel asks for.
fn unix_connector(
    path: &std::path::Path,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let path = std::sync::Arc::new(path.to_owned());
    tower::service_fn(move |_: http::Uri| {
        let path = path.clone();
        async move {
            tokio::net::UnixStream::connect(&*path)
                .await
                .map(hyper_util::rt::TokioIo::new)
        }
    })
}

/// Bound of one reflection operation unless the caller sets another.
pub const DEFAULT_REFLECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why reflection gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum ReflectionError {
    /// The server serves neither reflection version.
    #[error(
        "the server does not support gRPC reflection (grpc.reflection.v1 and v1alpha are unimplemented{})",
        if .0.message().is_empty() { String::new() } else { format!(": {}", .0.message()) }
    )]
    Unsupported(tonic::Status),
    /// The call failed, or the server answered a request with an error.
    #[error("reflection call failed: {}", status_text(.0))]
    Status(tonic::Status),
    /// The server knows no such symbol.
    #[error("the server's reflection knows no symbol `{0}`")]
    SymbolNotFound(String),
    /// The server broke the protocol.
    #[error("unexpected reflection answer to {0}")]
    Protocol(&'static str),
    /// A file descriptor could not be decoded.
    #[error("malformed file descriptor: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The operation took longer than its bound.
    #[error("reflection timed out after {0:?}")]
    Timeout(Duration),
}

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// The reflection protocol version a server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReflectionVersion {
    /// `grpc.reflection.v1`.
    V1,
    /// `grpc.reflection.v1alpha`, the older name of the same protocol.
    V1Alpha,
}

impl ReflectionVersion {
    fn path(self) -> &'static str {
        match self {
            Self::V1 => "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            Self::V1Alpha => "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        }
    }
}

/// A client of a server's reflection service over any gRPC channel `T`.
///
/// Each operation opens one reflection stream, asks everything it needs on
/// it, and is bounded as a whole by the timeout. The version the server
/// speaks is learnt on first use and kept.
#[derive(Debug, Clone)]
pub struct ReflectionClient<T> {
    channel: T,
    metadata: MetadataMap,
    timeout: Duration,
    version: Option<ReflectionVersion>,
}

impl<T> ReflectionClient<T>
where
    T: GrpcService<tonic::body::Body> + Clone + Send + 'static,
    T::Error: Into<StdError>,
    T::Future: Send,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    /// A client over `channel`, without metadata, with the default timeout.
    pub fn new(channel: T) -> Self {
        Self {
            channel,
            metadata: MetadataMap::new(),
            timeout: DEFAULT_REFLECTION_TIMEOUT,
            version: None,
        }
    }

    /// Sends `metadata` with every reflection call.
    pub fn with_metadata(mut self, metadata: MetadataMap) -> Self {
        self.metadata = metadata;
        self
    }

    /// Bounds each operation by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The version the server answered with, once known.
    pub fn version(&self) -> Option<ReflectionVersion> {
        self.version
    }

    /// The full names of the services the server exposes, sorted, the
    /// reflection service itself included.
    pub async fn list_services(&mut self) -> Result<Vec<String>, ReflectionError> {
        let timeout = self.timeout;
        bounded(timeout, async {
            let (session, reply) = self
                .open(MessageRequest::ListServices(String::new()))
                .await?;
            drop(session);
            let mut names = services_of(reply)?;
            names.sort();
            Ok(names)
        })
        .await
    }

    /// The files declaring `symbols` (full names of services, methods,
    /// messages…) and, transitively, the files they import.
    pub async fn files_for_symbols(
        &mut self,
        symbols: &[&str],
    ) -> Result<FileSet, ReflectionError> {
        let symbols: Vec<String> = symbols
            .iter()
            .map(|s| s.trim_start_matches('.').to_owned())
            .collect();
        let timeout = self.timeout;
        bounded(timeout, self.fetch(symbols)).await
    }

    /// The services the server exposes (reflection itself excepted), sorted,
    /// with the files declaring them and, transitively, the files they
    /// import.
    pub async fn files_for_services(&mut self) -> Result<ServiceFiles, ReflectionError> {
        let timeout = self.timeout;
        bounded(timeout, async {
            let (session, reply) = self
                .open(MessageRequest::ListServices(String::new()))
                .await?;
            let mut services: Vec<String> = services_of(reply)?
                .into_iter()
                .filter(|name| !name.starts_with("grpc.reflection."))
                .collect();
            services.sort();
            let files = Self::fetch_on(session, services.clone(), FileSet::default()).await?;
            Ok(ServiceFiles { services, files })
        })
        .await
    }

    async fn fetch(&mut self, symbols: Vec<String>) -> Result<FileSet, ReflectionError> {
        let mut files = FileSet::default();
        let Some((first, rest)) = symbols.split_first() else {
            return Ok(files);
        };
        let (session, reply) = self
            .open(MessageRequest::FileContainingSymbol(first.clone()))
            .await
            .map_err(|e| symbol_not_found(e, first))?;
        files.add_reply(reply, "FileContainingSymbol")?;
        Self::fetch_on(session, rest.to_vec(), files).await
    }

    /// Adds to `files`, on the open `session` (one stream for everything),
    /// the files declaring `symbols`, then the imports the server did not
    /// volunteer.
    async fn fetch_on(
        mut session: Session,
        symbols: Vec<String>,
        mut files: FileSet,
    ) -> Result<FileSet, ReflectionError> {
        for symbol in symbols {
            let reply = session
                .ask(MessageRequest::FileContainingSymbol(symbol.clone()))
                .await
                .map_err(|e| symbol_not_found(e, &symbol))?;
            files.add_reply(reply, "FileContainingSymbol")?;
        }
        let mut asked = BTreeSet::new();
        loop {
            // Each import is asked for once: a server that answers with other
            // files than the one asked for must not keep us asking.
            let missing: Vec<String> = files
                .missing()
                .into_iter()
                .map(|(_, dependency)| dependency)
                .filter(|dependency| asked.insert(dependency.clone()))
                .collect();
            if missing.is_empty() {
                return Ok(files);
            }
            for dependency in missing {
                match session
                    .ask(MessageRequest::FileByFilename(dependency.clone()))
                    .await
                {
                    Ok(reply) => files.add_reply(reply, "FileByFilename")?,
                    // Left for the caller ([`FileSet::missing`]): servers
                    // often omit the well-known types, which clients know.
                    Err(ReflectionError::Status(status))
                        if status.code() == tonic::Code::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
    }

    /// Opens a reflection stream with `first` as its first request: `v1`
    /// unless the server is known to speak only `v1alpha`, falling back to
    /// `v1alpha` when `v1` is UNIMPLEMENTED.
    async fn open(
        &mut self,
        first: MessageRequest,
    ) -> Result<(Session, ServerReflectionResponse), ReflectionError> {
        let versions: &[ReflectionVersion] = match self.version {
            Some(ReflectionVersion::V1Alpha) => &[ReflectionVersion::V1Alpha],
            _ => &[ReflectionVersion::V1, ReflectionVersion::V1Alpha],
        };
        let mut unimplemented = None;
        for &version in versions {
            let opened =
                Session::open(self.channel.clone(), &self.metadata, version, first.clone()).await;
            match opened {
                Ok(opened) => {
                    self.version = Some(version);
                    return Ok(opened);
                }
                Err(ReflectionError::Status(status))
                    if status.code() == tonic::Code::Unimplemented =>
                {
                    unimplemented = Some(status);
                }
                Err(err) => return Err(err),
            }
        }
        Err(ReflectionError::Unsupported(unimplemented.unwrap_or_else(
            || tonic::Status::unimplemented("no reflection version left to try"),
        )))
    }
}

/// The services a server exposes and the files that declare them.
#[derive(Debug, Clone, Default)]
pub struct ServiceFiles {
    /// Full names of the services, sorted (reflection itself excepted).
    pub services: Vec<String>,
    /// The files declaring them, with their imports.
    pub files: FileSet,
}

/// One open reflection stream: requests go out through `tx`, answers come
/// back in order on `rx`. Dropping it ends the request stream, and so the
/// call.
struct Session {
    tx: mpsc::UnboundedSender<ServerReflectionRequest>,
    rx: tonic::Streaming<ServerReflectionResponse>,
}

impl Session {
    async fn open<T>(
        channel: T,
        metadata: &MetadataMap,
        version: ReflectionVersion,
        first: MessageRequest,
    ) -> Result<(Self, ServerReflectionResponse), ReflectionError>
    where
        T: GrpcService<tonic::body::Body> + Send,
        T::Error: Into<StdError>,
        T::ResponseBody: Body<Data = Bytes> + Send + 'static,
        <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    {
        let (tx, requests) = mpsc::unbounded();
        // Queued before the call starts: a server may wait for it before
        // sending its headers.
        tx.unbounded_send(request(first))
            .map_err(|_| ReflectionError::Protocol("the first request"))?;
        let mut request = tonic::Request::new(requests);
        *request.metadata_mut() = metadata.clone();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|err| {
            ReflectionError::Status(tonic::Status::unavailable(format!(
                "connection not ready: {}",
                err.into()
            )))
        })?;
        // `v1alpha` is `v1` under another package name: the messages are
        // identical on the wire, so the `v1` types serve both paths.
        let codec =
            tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
        let path = http::uri::PathAndQuery::from_static(version.path());
        let rx = grpc
            .streaming(request, path, codec)
            .await
            .map_err(ReflectionError::Status)?
            .into_inner();
        let mut session = Self { tx, rx };
        let reply = session.next().await?;
        Ok((session, reply))
    }

    async fn ask(
        &mut self,
        message: MessageRequest,
    ) -> Result<ServerReflectionResponse, ReflectionError> {
        self.tx
            .unbounded_send(request(message))
            .map_err(|_| ReflectionError::Protocol("a request after the stream ended"))?;
        self.next().await
    }

    async fn next(&mut self) -> Result<ServerReflectionResponse, ReflectionError> {
        let reply = self
            .rx
            .message()
            .await
            .map_err(ReflectionError::Status)?
            .ok_or(ReflectionError::Protocol(
                "a request: the stream ended without an answer",
            ))?;
        if let Some(MessageResponse::ErrorResponse(err)) = &reply.message_response {
            return Err(ReflectionError::Status(tonic::Status::new(
                err.error_code.into(),
                err.error_message.clone(),
            )));
        }
        Ok(reply)
    }
}

fn request(message: MessageRequest) -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    }
}

fn services_of(reply: ServerReflectionResponse) -> Result<Vec<String>, ReflectionError> {
    match reply.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        _ => Err(ReflectionError::Protocol("ListServices")),
    }
}

fn symbol_not_found(err: ReflectionError, symbol: &str) -> ReflectionError {
    match err {
        ReflectionError::Status(status) if status.code() == tonic::Code::NotFound => {
            ReflectionError::SymbolNotFound(symbol.to_owned())
        }
        err => err,
    }
}

async fn bounded<T>(
    timeout: Duration,
    work: impl Future<Output = Result<T, ReflectionError>>,
) -> Result<T, ReflectionError> {
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ReflectionError::Timeout(timeout))?
}

/// Encoded file descriptors by file name, each with its imports.
#[derive(Debug, Clone, Default)]
pub struct FileSet {
    files: BTreeMap<String, (Bytes, Vec<String>)>,
}

impl FileSet {
    /// Adds an encoded `FileDescriptorProto` (a file already present is
    /// kept as it was).
    pub fn insert(&mut self, encoded: Bytes) -> Result<(), prost::DecodeError> {
        let file = prost_types::FileDescriptorProto::decode(encoded.clone())?;
        self.files
            .entry(file.name.unwrap_or_default())
            .or_insert((encoded, file.dependency));
        Ok(())
    }

    fn add_reply(
        &mut self,
        reply: ServerReflectionResponse,
        asked: &'static str,
    ) -> Result<(), ReflectionError> {
        let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
            return Err(ReflectionError::Protocol(asked));
        };
        for encoded in files.file_descriptor_proto {
            self.insert(Bytes::from(encoded))?;
        }
        Ok(())
    }

    /// `(importing file, import)` for each import not in the set, each
    /// import once.
    pub fn missing(&self) -> Vec<(String, String)> {
        let mut missing = BTreeMap::new();
        for (name, (_, dependencies)) in &self.files {
            for dependency in dependencies {
                if !self.files.contains_key(dependency) {
                    missing
                        .entry(dependency.clone())
                        .or_insert_with(|| name.clone());
                }
            }
        }
        missing
            .into_iter()
            .map(|(dependency, importer)| (importer, dependency))
            .collect()
    }

    /// Whether the set holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The encoded files, by name.
    pub fn encoded(&self) -> impl Iterator<Item = &Bytes> {
        self.files.values().map(|(encoded, _)| encoded)
    }

    /// The files, decoded.
    pub fn decoded(
        &self,
    ) -> impl Iterator<Item = Result<prost_types::FileDescriptorProto, prost::DecodeError>> + '_
    {
        self.encoded()
            .map(|encoded| prost_types::FileDescriptorProto::decode(encoded.clone()))
    }

    /// The set as one encoded `FileDescriptorSet` (field 1, repeated), the
    /// files as received.
    pub fn to_encoded_set(&self) -> Vec<u8> {
        let mut set = Vec::new();
        for encoded in self.encoded() {
            prost::encoding::bytes::encode(1, encoded, &mut set);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One set of message types serves both versions: they are the same
    /// protocol under two package names.
    #[test]
    fn v1alpha_messages_are_v1_messages_on_the_wire() {
        use tonic_reflection::pb::v1alpha;
        let alpha = v1alpha::ServerReflectionResponse {
            valid_host: "h".into(),
            original_request: None,
            message_response: Some(
                v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(
                    v1alpha::ListServiceResponse {
                        service: vec![v1alpha::ServiceResponse { name: "a.B".into() }],
                    },
                ),
            ),
        };
        let v1 = ServerReflectionResponse::decode(alpha.encode_to_vec().as_slice()).unwrap();
        assert_eq!(v1.encode_to_vec(), alpha.encode_to_vec());
        assert_eq!(services_of(v1).unwrap(), ["a.B"]);
    }

    #[test]
    fn file_sets_know_their_missing_imports() {
        let file = |name: &str, imports: &[&str]| {
            Bytes::from(
                prost_types::FileDescriptorProto {
                    name: Some(name.into()),
                    dependency: imports.iter().map(|s| (*s).to_owned()).collect(),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
        };
        let mut set = FileSet::default();
        assert!(set.is_empty());
        set.insert(file("a.proto", &["b.proto", "c.proto"]))
            .unwrap();
        set.insert(file("b.proto", &["c.proto"])).unwrap();
        assert_eq!(
            set.missing(),
            [("a.proto".to_owned(), "c.proto".to_owned())]
        );
        set.insert(file("c.proto", &[])).unwrap();
        assert!(set.missing().is_empty());
        let decoded: Vec<String> = set
            .decoded()
            .map(|f| f.unwrap().name().to_owned())
            .collect();
        assert_eq!(decoded, ["a.proto", "b.proto", "c.proto"]);
        let whole =
            prost_types::FileDescriptorSet::decode(set.to_encoded_set().as_slice()).unwrap();
        assert_eq!(whole.file.len(), 3);
        assert!(set.insert(Bytes::from_static(b"\xff")).is_err());
    }
}
