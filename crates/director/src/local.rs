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
use switchyard_engine::{
    Address, Backend, Backoff, BoxError, Channel, ChannelConfig, ChannelState, ReplyShape, Upstream,
};
use tonic::Status;

use crate::tag::{MachineInfo, MachineTag};

/// Forwards calls to the local machine's gRPC server over a Unix socket (the
/// Go reference's `LocalBackend`).
///
/// Displays as the machine's address, or `local` while it is unknown.
#[derive(Debug)]
pub struct LocalBackend {
    socket_path: PathBuf,
    channel: Channel,
    tag: MachineTag,
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

    /// A backend for the server at `socket_path`, tagging fan-out replies
    /// with `info` (empty while this machine's address is unknown). Nothing
    /// is dialled until the first call.
    pub fn new(socket_path: impl Into<PathBuf>, info: MachineInfo, config: ChannelConfig) -> Self {
        let socket_path = socket_path.into();
        Self {
            channel: Channel::new(Address::Unix(socket_path.clone()), config),
            socket_path,
            tag: MachineTag::new(info),
        }
    }

    /// The Unix socket of the local server.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The machine info fan-out replies carry.
    pub fn info(&self) -> Arc<MachineInfo> {
        self.tag.info()
    }

    /// Sets this machine's address, ID and name; safe while calls run.
    pub fn set_info(&self, info: MachineInfo) {
        self.tag.set_info(info);
    }

    /// What is known of the connection to the local server now.
    pub fn state(&self) -> ChannelState {
        self.channel.state()
    }

    /// Closes the connection. Running calls finish; new calls fail.
    pub fn close(&self) {
        self.channel.close();
    }
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
    /// The request metadata reaches the local server as the client sent it.
    fn connect<'a>(
        &'a self,
        _request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>> {
        Box::pin(async move {
            self.channel
                .upstream(None)
                .await
                .map_err(|err| {
                    tracing::debug!(socket = %self.socket_path.display(), error = %err, "local gRPC server unreachable");
                    let info = self.info();
                    let machine = if info.addr.is_empty() {
                        "this machine".to_owned()
                    } else {
                        format!("this machine ({})", info.addr)
                    };
                    Status::unavailable(format!(
                        "{machine}: local gRPC server is unreachable"
                    ))
                })
        })
    }

    fn tag_reply(&self, shape: ReplyShape, message: Bytes) -> Result<Bytes, BoxError> {
        Ok(self.tag.tag_reply(shape, message)?)
    }

    fn error_entry(&self, shape: ReplyShape, status: &Status) -> Option<Bytes> {
        Some(self.tag.error_entry(shape, status))
    }

    fn envelope_end(&self, status: &Status, trailers: &http::HeaderMap) -> Option<Bytes> {
        Some(self.tag.envelope_end(status, trailers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn backend(addr: &str) -> LocalBackend {
        LocalBackend::new(
            "/run/sy.sock",
            MachineInfo::from_addr(addr),
            LocalBackend::default_config(),
        )
    }

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
    fn displays_as_the_machine_address() {
        let backend = backend("");
        assert_eq!(backend.to_string(), "local");
        backend.set_info(MachineInfo::from_addr("fd00::1"));
        assert_eq!(backend.to_string(), "fd00::1");
        assert_eq!(backend.info().addr, "fd00::1");
        let dyn_backend: Arc<dyn Backend> = Arc::new(backend);
        assert_eq!(dyn_backend.to_string(), "fd00::1");
    }

    #[test]
    fn failures_become_error_entries() {
        let backend = backend("fd00::1");
        assert!(
            backend
                .error_entry(ReplyShape::Unary, &Status::internal("x"))
                .is_some()
        );
        assert!(
            backend
                .tag_reply(ReplyShape::Unary, Bytes::from_static(b"\x10\x01"))
                .is_err()
        );
    }

    #[tokio::test]
    async fn unreachable_socket_is_unavailable_naming_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.sock");
        let backend = LocalBackend::new(
            &path,
            MachineInfo::from_addr("fd00::1"),
            LocalBackend::default_config(),
        );
        let err = backend.connect(&parts(&[])).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(
            err.message(),
            "this machine (fd00::1): local gRPC server is unreachable"
        );
        backend.close();
        let err = backend.connect(&parts(&[])).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
}
