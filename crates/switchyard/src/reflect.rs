//! Which methods stream, learned from the local gRPC server's reflection
//! service (`grpc.reflection.v1`, or `v1alpha` on older servers).
//!
//! Fan-out must know whether a method's replies stream (interleave them) or
//! not (merge them into one message); nothing on the wire says so. A list in
//! the configuration works until someone forgets a method, and then its
//! stream is silently merged as if it were unary. So the daemon also asks
//! its own machine's server, which serves the same API as every other
//! machine, and adds every server-streaming method it declares. The asking
//! is the director's [`ReflectionClient`], the one `switchyard call` uses.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use switchyard_director::{ReflectionClient, ReflectionError, StreamedMethods};

use crate::config::MethodName;
use tokio::sync::Notify;
use tonic::transport::Endpoint;

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
    /// Reflection failed (the call, the answers, or its bound).
    #[error(transparent)]
    Reflection(ReflectionError),
    /// Connecting failed.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// Discovery took longer than its bound.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl From<ReflectionError> for DiscoveryError {
    fn from(err: ReflectionError) -> Self {
        match err {
            ReflectionError::Unsupported(status) => Self::Unsupported(status),
            err => Self::Reflection(err),
        }
    }
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
    let found = ReflectionClient::new(channel)
        .with_timeout(DISCOVERY_TIMEOUT)
        .files_for_services()
        .await?;
    let mut streamed = HashSet::new();
    for file in found.files.decoded() {
        let file = file.map_err(|e| DiscoveryError::Reflection(e.into()))?;
        let package = file.package();
        for declared in &file.service {
            let full = match package {
                "" => declared.name().to_owned(),
                package => format!("{package}.{}", declared.name()),
            };
            if found.services.binary_search(&full).is_err() {
                continue;
            }
            for method in declared.method.iter().filter(|m| m.server_streaming()) {
                streamed.insert(format!("/{full}/{}", method.name()));
            }
        }
    }
    Ok(streamed)
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

    /// Older servers offer only `grpc.reflection.v1alpha` (issue 14).
    #[tokio::test]
    async fn falls_back_to_v1alpha() {
        let path = socket("v1alpha");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
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
        let found = discover(&path).await.unwrap();
        assert_eq!(
            found,
            HashSet::from(["/machineinfo.v1.MachineInfo/Watch".to_owned()])
        );
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
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
