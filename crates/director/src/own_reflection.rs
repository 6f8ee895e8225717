//! Server reflection that knows Switchyard's own API besides the local
//! server's.
//!
//! `switchyard list`, `describe` and code generators learn schemas through
//! reflection, but the local server knows nothing of `switchyard.v1.Cluster`
//! (answered by every Switchyard itself) or `switchyard.v1.MachineReply`
//! (the envelope's items). So a local reflection stream
//! (`grpc.reflection.v1`) is answered here: requests about Switchyard's own
//! files and symbols (`switchyard.v1.*`, `switchyard.common.v1.*`) from its
//! descriptors, everything else by the local server over one stream per
//! caller's stream (all of them over one shared connection), in order, and
//! the list of services is the local
//! server's plus `switchyard.v1.Cluster`. Reflection of another machine
//! (`machine`/`machines` metadata) is proxied as before.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{Stream, StreamExt};
use prost::Message;
use prost_types::FileDescriptorSet;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::server_reflection_server::{
    ServerReflection, ServerReflectionServer,
};
use tonic_reflection::pb::v1::{
    ErrorResponse, FileDescriptorResponse, ServerReflectionRequest, ServerReflectionResponse,
    ServiceResponse,
};

use crate::pb::FILE_DESCRIPTOR_SET;
use crate::reflection::{DEFAULT_REFLECTION_TIMEOUT, connect_unix_lazy};

/// The reflection method this answers.
pub const REFLECTION_INFO_PATH: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

/// Packages of Switchyard's own API.
const OWN_PACKAGES: [&str; 2] = ["switchyard.v1", "switchyard.common.v1"];

/// The service every Switchyard answers itself.
const OWN_SERVICE: &str = "switchyard.v1.Cluster";

/// Most requests on one reflection stream (a client walks a schema in a few
/// dozen).
const MAX_REQUESTS: usize = 4096;

/// Switchyard's own descriptors, by file and by symbol.
#[derive(Debug)]
struct Own {
    /// File name → encoded `FileDescriptorProto`.
    files: HashMap<String, Vec<u8>>,
    /// Top-level symbol (`switchyard.v1.Cluster`) → its file's name.
    symbols: HashMap<String, String>,
}

impl Own {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("built-in descriptors");
        let mut own = Self {
            files: HashMap::new(),
            symbols: HashMap::new(),
        };
        for file in set.file {
            let name = file.name().to_owned();
            let package = file.package();
            if OWN_PACKAGES.contains(&package) {
                let names = file
                    .message_type
                    .iter()
                    .map(|m| m.name())
                    .chain(file.enum_type.iter().map(|e| e.name()))
                    .chain(file.service.iter().map(|s| s.name()));
                for symbol in names {
                    own.symbols
                        .insert(format!("{package}.{symbol}"), name.clone());
                }
            }
            own.files.insert(name, file.encode_to_vec());
        }
        own
    }

    /// The file defining `symbol` (a type, a service, or a member of one).
    fn file_of(&self, symbol: &str) -> Option<&Vec<u8>> {
        let mut name = symbol;
        loop {
            if let Some(file) = self.symbols.get(name) {
                return self.files.get(file);
            }
            name = &name[..name.rfind('.')?];
        }
    }

    fn is_own_file(name: &str) -> bool {
        name.starts_with("switchyard/")
    }
}

/// Answers local reflection streams (see the module docs).
#[derive(Debug, Clone)]
pub struct OwnReflection {
    own: Arc<Own>,
    local: Arc<LocalChannel>,
}

/// The one connection to the local server that every forwarded reflection
/// stream shares (a caller opening many streams costs streams on it, not
/// file descriptors), made on first use inside the runtime.
#[derive(Debug)]
struct LocalChannel {
    socket: PathBuf,
    channel: Mutex<Option<tonic::transport::Channel>>,
}

impl LocalChannel {
    fn get(&self) -> tonic::transport::Channel {
        let mut channel = self.channel.lock().unwrap_or_else(PoisonError::into_inner);
        channel
            .get_or_insert_with(|| {
                let endpoint = tonic::transport::Endpoint::from_static("http://localhost")
                    .connect_timeout(DEFAULT_REFLECTION_TIMEOUT);
                connect_unix_lazy(endpoint, &self.socket)
            })
            .clone()
    }
}

impl OwnReflection {
    /// Reflection in front of the local server at `local_socket`.
    pub fn new(local_socket: impl Into<PathBuf>) -> Self {
        Self {
            own: Arc::new(Own::load()),
            local: Arc::new(LocalChannel {
                socket: local_socket.into(),
                channel: Mutex::new(None),
            }),
        }
    }

    /// As a tonic service.
    pub fn into_server(self) -> ServerReflectionServer<Self> {
        ServerReflectionServer::new(self)
    }
}

/// The local server's side of one caller's stream, opened on first need.
struct Local {
    requests: mpsc::Sender<ServerReflectionRequest>,
    responses: Streaming<ServerReflectionResponse>,
}

impl Local {
    async fn open(channel: tonic::transport::Channel) -> Result<Self, Status> {
        let (requests, rx) = mpsc::channel(1);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let responses = tokio::time::timeout(
            DEFAULT_REFLECTION_TIMEOUT,
            ServerReflectionClient::new(channel).server_reflection_info(stream),
        )
        .await
        .map_err(|_| Status::deadline_exceeded("the local server's reflection did not answer"))??
        .into_inner();
        Ok(Self {
            requests,
            responses,
        })
    }

    /// The local server's answer to `request`.
    async fn ask(&mut self, request: ServerReflectionRequest) -> Result<MessageResponse, Status> {
        self.requests
            .send(request)
            .await
            .map_err(|_| Status::unavailable("the local server's reflection stream ended"))?;
        let reply = tokio::time::timeout(DEFAULT_REFLECTION_TIMEOUT, self.responses.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("the local server's reflection did not answer")
            })??
            .ok_or_else(|| Status::unavailable("the local server's reflection stream ended"))?;
        reply
            .message_response
            .ok_or_else(|| Status::internal("empty reflection response from the local server"))
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<ServerReflectionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ServerReflection for OwnReflection {
    type ServerReflectionInfoStream = ResponseStream;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<ServerReflectionRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut requests = request.into_inner().take(MAX_REQUESTS);
        let (tx, rx) = mpsc::channel(1);
        let this = self.clone();
        tokio::spawn(async move {
            let mut local: Option<Local> = None;
            while let Some(Ok(request)) = requests.next().await {
                let answer = this.answer(&mut local, request.clone()).await;
                let response = ServerReflectionResponse {
                    valid_host: request.host.clone(),
                    original_request: Some(request),
                    message_response: Some(answer),
                };
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}

impl OwnReflection {
    /// The answer to one request: ours, the local server's, or both (the
    /// list of services). Failures are reflection error responses, as a
    /// reflection server gives them.
    async fn answer(
        &self,
        local: &mut Option<Local>,
        request: ServerReflectionRequest,
    ) -> MessageResponse {
        let own = match &request.message_request {
            Some(MessageRequest::FileContainingSymbol(symbol)) => self.own.file_of(symbol),
            Some(MessageRequest::FileByFilename(name)) if Own::is_own_file(name) => {
                self.own.files.get(name)
            }
            _ => None,
        };
        if let Some(file) = own {
            return MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto: vec![file.clone()],
            });
        }
        let list = matches!(
            request.message_request,
            Some(MessageRequest::ListServices(_))
        );
        let by_filename = match &request.message_request {
            Some(MessageRequest::FileByFilename(name)) => self.own.files.get(name).cloned(),
            _ => None,
        };
        let forwarded = async {
            if local.is_none() {
                *local = Some(Local::open(self.local.get()).await?);
            }
            local.as_mut().expect("opened").ask(request).await
        }
        .await;
        match forwarded {
            Ok(MessageResponse::ListServicesResponse(mut services)) => {
                services.service.push(ServiceResponse {
                    name: OWN_SERVICE.to_owned(),
                });
                MessageResponse::ListServicesResponse(services)
            }
            // A file the local server lacks but Switchyard's API imports
            // (google/rpc/status.proto).
            Ok(MessageResponse::ErrorResponse(_)) | Err(_) if by_filename.is_some() => {
                MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                    file_descriptor_proto: vec![by_filename.expect("checked")],
                })
            }
            Ok(answer) => answer,
            Err(_) if list => MessageResponse::ListServicesResponse(
                tonic_reflection::pb::v1::ListServiceResponse {
                    service: vec![ServiceResponse {
                        name: OWN_SERVICE.to_owned(),
                    }],
                },
            ),
            Err(status) => MessageResponse::ErrorResponse(ErrorResponse {
                error_code: status.code() as i32,
                error_message: status.message().to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_symbols_and_their_members_name_their_files() {
        let own = Own::load();
        let file = |symbol: &str| {
            own.file_of(symbol).map(|f| {
                prost_types::FileDescriptorProto::decode(&f[..])
                    .unwrap()
                    .name()
                    .to_owned()
            })
        };
        assert_eq!(
            file("switchyard.v1.Cluster").as_deref(),
            Some("switchyard/v1/cluster.proto")
        );
        assert_eq!(
            file("switchyard.v1.Cluster.ListMachines").as_deref(),
            Some("switchyard/v1/cluster.proto")
        );
        assert_eq!(
            file("switchyard.v1.MachineReply").as_deref(),
            Some("switchyard/v1/envelope.proto")
        );
        assert_eq!(
            file("switchyard.common.v1.Metadata").as_deref(),
            Some("switchyard/common/v1/common.proto")
        );
        assert_eq!(file("machineinfo.v1.MachineInfo"), None);
        assert_eq!(file("switchyard.v1.Nothing"), None);
    }
}
