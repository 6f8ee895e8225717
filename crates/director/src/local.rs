//! The backend for this machine's own gRPC server, on a Unix socket.
//!
//! Calls for this machine (no routing metadata, loop prevention, or its own
//! address in `machines`) go here with their metadata as is: the local server
//! sees what the client sent. One HTTP/2 connection is shared by every call;
//! the engine's [`Channel`] dials it lazily and again after it breaks, with a
//! short backoff because a local server restarts quickly.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderMap;
use switchyard_engine::{Backend, Backoff, BoxError, Channel, ChannelConfig, Target, Upstream};
use tonic::Status;

use crate::responder::{MachineInfo, One2ManyResponder};

/// Forwards calls to the local machine's gRPC server over a Unix socket (the
/// Go reference's `LocalBackend`).
///
/// Displays as the machine's address, or `local` while it is unknown.
#[derive(Debug)]
pub struct LocalBackend {
    socket_path: PathBuf,
    channel: Channel,
    responder: One2ManyResponder,
}

impl LocalBackend {
    /// Connection settings for a local socket: quick reconnects, a 5 s dial bound.
    pub fn default_config() -> ChannelConfig {
        ChannelConfig {
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff::LOCAL,
            ..ChannelConfig::default()
        }
    }

    /// A backend for the server at `socket_path`. `addr` is this machine's
    /// address, written into fan-out replies; empty when not known yet.
    /// Nothing is dialled until the first call.
    pub fn new(socket_path: impl Into<PathBuf>, addr: &str) -> Self {
        Self::with_config(
            socket_path,
            MachineInfo::from_addr(addr),
            Self::default_config(),
        )
    }

    /// A backend with explicit machine info and connection settings.
    pub fn with_config(
        socket_path: impl Into<PathBuf>,
        info: MachineInfo,
        config: ChannelConfig,
    ) -> Self {
        let socket_path = socket_path.into();
        Self {
            channel: Channel::new(Target::Unix(socket_path.clone()), config),
            socket_path,
            responder: One2ManyResponder::new(info),
        }
    }

    /// The Unix socket of the local server.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The machine info fan-out replies carry.
    pub fn info(&self) -> Arc<MachineInfo> {
        self.responder.info()
    }

    /// Sets this machine's address (dropping any registry ID and name); safe
    /// while calls run.
    pub fn set_address(&self, addr: &str) {
        self.set_info(MachineInfo::from_addr(addr));
    }

    /// Sets this machine's address, ID and name; safe while calls run.
    pub fn set_info(&self, info: MachineInfo) {
        self.responder.set_info(info);
    }

    /// Tags replies and builds error entries for this machine.
    pub fn responder(&self) -> &One2ManyResponder {
        &self.responder
    }

    /// Closes the connection. Running calls finish; new calls fail.
    pub fn close(&self) {
        self.channel.close();
    }
}

/// The request metadata sent to the local server: everything the client sent
/// (the `host` header is replaced by the upstream `:authority`).
fn forwarded_headers(request: &http::request::Parts) -> HeaderMap {
    let mut headers = request.headers.clone();
    headers.remove(http::header::HOST);
    headers
}

impl fmt::Display for LocalBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.info();
        if info.addr.is_empty() {
            f.write_str("local")
        } else {
            f.write_str(&info.addr)
        }
    }
}

impl Backend for LocalBackend {
    fn connect<'a>(
        &'a self,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>> {
        Box::pin(async move {
            self.channel
                .upstream(forwarded_headers(request))
                .await
                .map_err(|err| {
                    let info = self.info();
                    let machine = if info.addr.is_empty() {
                        "this machine".to_owned()
                    } else {
                        format!("this machine ({})", info.addr)
                    };
                    Status::unavailable(format!(
                        "{machine}: local gRPC server at {} is unreachable: {err}",
                        self.socket_path.display()
                    ))
                })
        })
    }

    fn append_info(&self, streaming: bool, message: Bytes) -> Result<Bytes, BoxError> {
        Ok(self.responder.append_info(streaming, message)?)
    }

    fn build_error(&self, streaming: bool, status: &Status) -> Option<Bytes> {
        Some(self.responder.build_error(streaming, status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder()
            .method("POST")
            .uri("http://[fd00::1]:51000/pkg.Service/Method");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn metadata_is_forwarded_as_is_except_host() {
        let request = parts(&[
            ("host", "[fd00::1]:51000"),
            ("machines", "fd00::1"),
            ("authorization", "Bearer x"),
            ("x-custom", "a"),
            ("x-custom", "b"),
            ("proxy-authority", "[fd00::9]:51000"),
        ]);
        let headers = forwarded_headers(&request);
        assert!(headers.get("host").is_none());
        assert_eq!(headers["machines"], "fd00::1");
        assert_eq!(headers["authorization"], "Bearer x");
        assert_eq!(headers["proxy-authority"], "[fd00::9]:51000");
        let custom: Vec<_> = headers.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["a", "b"]);
        assert_eq!(headers.len(), 5);
    }

    #[test]
    fn displays_as_the_machine_address() {
        let backend = LocalBackend::new("/run/sy.sock", "");
        assert_eq!(backend.to_string(), "local");
        backend.set_address("fd00::1");
        assert_eq!(backend.to_string(), "fd00::1");
        assert_eq!(backend.info().addr, "fd00::1");
        let dyn_backend: Arc<dyn Backend> = Arc::new(backend);
        assert_eq!(dyn_backend.to_string(), "fd00::1");
    }

    #[test]
    fn failures_become_error_entries() {
        let backend = LocalBackend::new("/run/sy.sock", "fd00::1");
        assert!(backend.build_error(false, &Status::internal("x")).is_some());
        assert!(
            backend
                .append_info(false, Bytes::from_static(b"\x10\x01"))
                .is_err()
        );
    }

    #[tokio::test]
    async fn unreachable_socket_is_unavailable_naming_machine_and_socket() {
        let dir = std::env::temp_dir().join(format!("sy-local-{}", std::process::id()));
        let path = dir.join("missing.sock");
        let backend = LocalBackend::new(&path, "fd00::1");
        let err = backend.connect(&parts(&[])).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("fd00::1"), "{}", err.message());
        assert!(
            err.message().contains(&path.display().to_string()),
            "{}",
            err.message()
        );
        backend.close();
        let err = backend.connect(&parts(&[])).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert!(err.message().contains("closed"), "{}", err.message());
    }
}
