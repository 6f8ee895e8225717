//! `machine-info`: a sample per-machine gRPC service shaped for fan-out.
//!
//! Each machine of a Switchyard cluster runs one, on a Unix socket. Through
//! Switchyard a client asks one machine, another, or all of them at once:
//! the replies come back as one `DescribeResponse` whose entries carry each
//! machine's `Metadata`. The demo and the end-to-end tests use it.

use std::os::unix::fs::FileTypeExt as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::Stream;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// Generated protobuf and gRPC code, laid out by package.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    /// `switchyard.common.v1`: the fan-out `Metadata`.
    pub mod switchyard {
        pub mod common {
            pub mod v1 {
                tonic::include_proto!("switchyard.common.v1");
            }
        }
    }
    /// `google.rpc.Status`.
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    /// `machineinfo.v1`.
    pub mod machineinfo {
        pub mod v1 {
            tonic::include_proto!("machineinfo.v1");
        }
    }
    pub use machineinfo::v1::*;
    pub use switchyard::common::v1::Metadata;

    /// Encoded `FileDescriptorSet` of the API, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/machineinfo_descriptor.bin"));
}

use pb::machine_info_server::{MachineInfo, MachineInfoServer};
use pb::{DescribeRequest, DescribeResponse, Description, Tick, WatchRequest};

/// Most ticks one `Watch` call may ask for.
pub const MAX_TICKS: u32 = 10_000;

/// The service of one machine.
#[derive(Debug, Clone)]
pub struct Service {
    name: Arc<str>,
    started: Instant,
    calls: Arc<AtomicU64>,
}

impl Service {
    /// A service answering as machine `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            started: Instant::now(),
            calls: Arc::default(),
        }
    }

    /// The tonic service.
    pub fn into_server(self) -> MachineInfoServer<Self> {
        MachineInfoServer::new(self)
    }
}

#[tonic::async_trait]
impl MachineInfo for Service {
    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let proxy_authority = request
            .metadata()
            .get("proxy-authority")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Response::new(DescribeResponse {
            messages: vec![Description {
                metadata: None,
                name: self.name.to_string(),
                uptime_seconds: self.started.elapsed().as_secs(),
                proxy_authority,
                calls,
            }],
        }))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<Tick, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let WatchRequest { count, interval_ms } = request.into_inner();
        if count > MAX_TICKS {
            return Err(Status::invalid_argument(format!(
                "count {count} is above the limit of {MAX_TICKS}"
            )));
        }
        let name = self.name.to_string();
        let interval = Duration::from_millis(interval_ms.into());
        let ticks = futures_util::stream::unfold(0u32, move |seq| {
            let name = name.clone();
            async move {
                if seq >= count {
                    return None;
                }
                if seq > 0 {
                    tokio::time::sleep(interval).await;
                }
                let tick = Tick {
                    metadata: None,
                    name,
                    seq,
                };
                Some((Ok(tick), seq + 1))
            }
        });
        Ok(Response::new(Box::pin(ticks)))
    }
}

/// A running `machine-info` server on a Unix socket; stops when dropped.
#[derive(Debug)]
pub struct Server {
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    /// Serves machine `name` on the Unix socket `path` (a stale socket file
    /// there is replaced), with gRPC server reflection.
    pub fn spawn_unix(name: &str, path: &Path) -> std::io::Result<Self> {
        Self::spawn_unix_with(name, path, true)
    }

    /// As [`Server::spawn_unix`]; `reflection` says whether the gRPC
    /// reflection service is served too.
    pub fn spawn_unix_with(name: &str, path: &Path, reflection: bool) -> std::io::Result<Self> {
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let reflection = reflection.then(|| {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .build_v1()
                .expect("the embedded descriptor set is valid")
        });
        let router = tonic::transport::Server::builder()
            .add_service(Service::new(name).into_server())
            .add_optional_service(reflection);
        tokio::spawn(async move {
            let incoming = UnixListenerStream::new(listener);
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self { stop: Some(stop) })
    }

    /// Stops the server (running calls are cut short).
    pub fn stop(mut self) {
        self.stop.take();
    }
}

/// Removes the socket a previous server left at `path`; anything else
/// there (a file given by mistake) is kept and refused.
fn remove_stale_socket(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "exists and is not a socket",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
