//! Which methods stream, learned from the local gRPC server's reflection
//! service (`grpc.reflection.v1`).
//!
//! Fan-out must know whether a method's replies stream (interleave them) or
//! not (merge them into one message); nothing on the wire says so. A list in
//! the configuration works until someone forgets a method, and then its
//! stream is silently merged as if it were unary. So the daemon also asks
//! its own machine's server, which serves the same API as every other
//! machine, and adds every server-streaming method it declares.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use prost::Message;
use switchyard_director::StreamedMethods;

use crate::config::MethodName;
use tokio::sync::Notify;
use tonic::transport::Endpoint;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// Bound of one whole discovery (connect plus every request).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Streamed methods: the configured ones plus those discovered.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    discovered: Arc<RwLock<HashSet<String>>>,
}

impl Streamed {
    /// The director's detector: `configured` or discovered.
    pub fn detector(&self, configured: &[MethodName]) -> StreamedMethods {
        let configured: HashSet<String> = configured.iter().map(|m| m.0.clone()).collect();
        let discovered = self.discovered.clone();
        StreamedMethods::from_fn(move |method| {
            configured.contains(method)
                || discovered
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(method)
        })
    }

    /// The discovered methods.
    pub fn discovered(&self) -> HashSet<String> {
        self.discovered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keeps the discovered set up to date: asks the server at `socket` now,
    /// retries with backoff while it is unreachable, and asks again each time
    /// `refresh` is notified (configuration reload).
    pub async fn keep_discovering(self, socket: PathBuf, refresh: Arc<Notify>) {
        let mut retry = Duration::from_millis(200);
        loop {
            match discover(&socket).await {
                Ok(methods) => {
                    tracing::info!(count = methods.len(), methods = ?methods, "discovered streamed methods through gRPC reflection");
                    *self
                        .discovered
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = methods;
                    retry = Duration::from_millis(200);
                    refresh.notified().await;
                }
                Err(DiscoveryError::Unsupported(status)) => {
                    tracing::info!(
                        message = status.message(),
                        "the local gRPC server has no reflection service; only configured streamed methods apply"
                    );
                    refresh.notified().await;
                }
                Err(err) => {
                    tracing::debug!(error = %err, ?retry, "streamed-method discovery failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        () = refresh.notified() => {}
                    }
                    retry = (retry * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The server does not serve reflection.
    #[error("no reflection service: {}", .0.message())]
    Unsupported(tonic::Status),
    /// The server could not be reached or answered with an error.
    #[error("reflection call failed: {0}")]
    Call(#[from] tonic::Status),
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// A descriptor could not be decoded.
    #[error("malformed file descriptor: {0}")]
    Descriptor(#[from] prost::DecodeError),
    /// Discovery took longer than its bound.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// The server-streaming methods (`/pkg.Service/Method`) the gRPC server on
/// the Unix socket `socket` declares through reflection.
pub async fn discover(socket: &Path) -> Result<HashSet<String>, DiscoveryError> {
    tokio::time::timeout(DISCOVERY_TIMEOUT, discover_unbounded(socket))
        .await
        .map_err(|_| DiscoveryError::Timeout(DISCOVERY_TIMEOUT))?
}

async fn discover_unbounded(socket: &Path) -> Result<HashSet<String>, DiscoveryError> {
    let socket = Arc::new(socket.to_owned());
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(&*socket)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await?;
    let mut client = ServerReflectionClient::new(channel);
    let services = match ask(&mut client, MessageRequest::ListServices(String::new())).await {
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            return Err(DiscoveryError::Unsupported(status));
        }
        other => other?,
    };
    let Some(MessageResponse::ListServicesResponse(list)) = services.message_response else {
        return Err(unexpected("ListServices"));
    };
    let mut streamed = HashSet::new();
    for service in list.service.iter().map(|s| s.name.as_str()) {
        if service.starts_with("grpc.reflection.") {
            continue;
        }
        let reply = ask(
            &mut client,
            MessageRequest::FileContainingSymbol(service.to_owned()),
        )
        .await?;
        let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
            return Err(unexpected("FileContainingSymbol"));
        };
        for encoded in &files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(encoded.as_slice())?;
            let package = file.package();
            for declared in &file.service {
                let full = match package {
                    "" => declared.name().to_owned(),
                    package => format!("{package}.{}", declared.name()),
                };
                if full != service {
                    continue;
                }
                for method in declared.method.iter().filter(|m| m.server_streaming()) {
                    streamed.insert(format!("/{full}/{}", method.name()));
                }
            }
        }
    }
    Ok(streamed)
}

/// One request on a fresh reflection stream, and its first answer.
async fn ask(
    client: &mut ServerReflectionClient<tonic::transport::Channel>,
    request: MessageRequest,
) -> Result<ServerReflectionResponse, tonic::Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::once(request))
        .await?
        .into_inner();
    let reply = replies
        .message()
        .await?
        .ok_or_else(|| tonic::Status::internal("reflection stream ended without an answer"))?;
    if let Some(MessageResponse::ErrorResponse(err)) = &reply.message_response {
        return Err(tonic::Status::new(
            err.error_code.into(),
            err.error_message.clone(),
        ));
    }
    Ok(reply)
}

fn unexpected(what: &str) -> DiscoveryError {
    DiscoveryError::Call(tonic::Status::internal(format!(
        "unexpected reflection answer to {what}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "switchyard-reflect-{}-{name}.sock",
            std::process::id()
        ))
    }

    #[tokio::test]
    async fn discovers_the_server_streaming_methods() {
        let path = socket("with");
        let _server = machine_info::Server::spawn_unix("alpha", &path).unwrap();
        let found = discover(&path).await.unwrap();
        assert_eq!(
            found,
            HashSet::from(["/machineinfo.v1.MachineInfo/Watch".to_owned()])
        );

        let streamed = Streamed::default();
        let detector = streamed.detector(&["/x.Y/Configured".parse().unwrap()]);
        *streamed.discovered.write().unwrap() = found;
        assert!(detector.is_streamed("/machineinfo.v1.MachineInfo/Watch"));
        assert!(detector.is_streamed("/x.Y/Configured"));
        assert!(!detector.is_streamed("/machineinfo.v1.MachineInfo/Describe"));
        let _ = std::fs::remove_file(&path);
    }

    #[tokio::test]
    async fn a_server_without_reflection_is_reported_as_such() {
        let path = socket("without");
        let _server = machine_info::Server::spawn_unix_with("alpha", &path, false).unwrap();
        assert!(matches!(
            discover(&path).await,
            Err(DiscoveryError::Unsupported(_))
        ));
        assert!(matches!(
            discover(&socket("nobody")).await,
            Err(DiscoveryError::Connect(_))
        ));
        let _ = std::fs::remove_file(&path);
    }
}
