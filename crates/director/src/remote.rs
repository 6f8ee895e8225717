//! The backend for another machine: its Switchyard, over the IPv6 mesh.
//!
//! A call forwarded to another machine must arrive there as a *local* call,
//! or two proxies would bounce it forever: the routing keys (`machines`,
//! `machine`) are removed and `proxy-authority` records the authority the
//! client used, which makes the receiving director route locally (loop
//! prevention). Connections are the engine's [`Channel`]: dialled lazily,
//! each attempt bounded (10 s), re-dialled in the background with backoff
//! (capped at 15 s); while the machine is known down, calls fail at once with
//! `UNAVAILABLE` instead of each waiting for the connect timeout.

use std::fmt;
use std::net::SocketAddrV6;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue};
use switchyard_engine::{
    Address, Backend, BoxError, Channel, ChannelConfig, ChannelState, ConnectError, ReplyShape,
    Upstream,
};
use tonic::Status;

use crate::director::{MACHINE, MACHINES};
use crate::tag::{MachineInfo, MachineTag};

/// Metadata key recording that a call was forwarded once, and by which authority.
pub const PROXY_AUTHORITY: HeaderName = HeaderName::from_static("proxy-authority");

/// Forwards calls to the Switchyard of another machine (the Go reference's
/// `RemoteBackend`).
///
/// Displays as the machine address from its [`MachineInfo`] (e.g. `fd00::2`,
/// or `[fd00::2]:51001` for a machine on a non-default port).
#[derive(Debug)]
pub struct RemoteBackend {
    socket: SocketAddrV6,
    channel: Channel,
    tag: MachineTag,
}

impl RemoteBackend {
    /// A backend for the machine whose Switchyard listens at `socket`,
    /// tagging fan-out replies with `info`. Nothing is dialled yet.
    /// With TLS, its certificate must name its IP or its registry name.
    pub fn new(socket: SocketAddrV6, info: MachineInfo, config: ChannelConfig) -> Self {
        let name = Some(info.name.as_str()).filter(|n| !n.is_empty());
        Self {
            socket,
            channel: Channel::named(Address::Tcp(socket.into()), name, config),
            tag: MachineTag::new(info),
        }
    }

    /// The address dialled.
    pub fn socket_addr(&self) -> SocketAddrV6 {
        self.socket
    }

    /// The machine info fan-out replies carry.
    pub fn info(&self) -> Arc<MachineInfo> {
        self.tag.info()
    }

    /// Whether the last connection attempt failed and calls fail fast.
    pub fn is_down(&self) -> bool {
        self.channel.is_down()
    }

    /// Whether a connection is open.
    pub fn is_connected(&self) -> bool {
        self.channel.is_connected()
    }

    /// What is known of the connection to the machine now.
    pub fn state(&self) -> ChannelState {
        self.channel.state()
    }

    /// The machine for people: `beta ([fd00::2]:51001)` with a registry
    /// name, its address otherwise.
    fn describe(&self) -> String {
        let info = self.info();
        match info.name.as_str() {
            "" => self.to_string(),
            name => format!("{name} ({self})"),
        }
    }

    /// Forgets the connection and stops reconnecting. Running calls keep
    /// their connection and finish; new calls fail.
    pub fn close(&self) {
        self.channel.close();
    }
}

/// The request metadata sent to another machine: the client's metadata
/// without the routing keys, plus `proxy-authority` (the authority the client
/// used, or `unknown`) so the next hop serves the call locally.
fn forwarded_headers(request: &http::request::Parts) -> HeaderMap {
    let authority = request
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| request.headers.get(http::header::HOST).cloned())
        .unwrap_or_else(|| HeaderValue::from_static("unknown"));
    let mut headers = request.headers.clone();
    for key in [MACHINES, MACHINE, PROXY_AUTHORITY] {
        headers.remove(key);
    }
    headers.insert(PROXY_AUTHORITY, authority);
    headers
}

impl fmt::Display for RemoteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.info();
        if info.addr.is_empty() {
            write!(f, "{}", self.socket)
        } else {
            f.write_str(&info.addr)
        }
    }
}

impl Backend for RemoteBackend {
    fn connect<'a>(
        &'a self,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>> {
        Box::pin(async move {
            self.channel
                .upstream(Some(forwarded_headers(request)))
                .await
                .map_err(|err| {
                    // The detail (OS errors, timeouts) is logged by the
                    // channel; callers get one message whatever the cause, so
                    // the proxy cannot be used to probe ports.
                    tracing::debug!(machine = %self, error = %err, "machine unreachable");
                    let machine = self.describe();
                    match err {
                        ConnectError::Tls { message, .. } => {
                            Status::unavailable(format!("machine {machine} unreachable: {message}"))
                        }
                        _ => Status::unavailable(format!("machine {machine} unreachable")),
                    }
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
    use std::time::Duration;
    use switchyard_engine::Backoff;
    use tonic::Code;

    fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().method("POST").uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn registry_info_is_carried_and_displayed() {
        let info = MachineInfo {
            addr: "[fd00::2]:51001".into(),
            id: "m-2".into(),
            name: "beta".into(),
        };
        let socket = "[fd00::2]:51001".parse().unwrap();
        let b = RemoteBackend::new(socket, info.clone(), ChannelConfig::default());
        assert_eq!(*b.info(), info);
        assert_eq!(b.socket_addr(), socket);
        let b: Arc<dyn Backend> = Arc::new(b);
        assert_eq!(b.to_string(), "[fd00::2]:51001");
    }

    #[test]
    fn routing_keys_are_dropped_and_proxy_authority_added() {
        let req = request(
            "http://[fd00::1]:51000/pkg.Service/Method",
            &[
                ("machines", "fd00::2"),
                ("machines", "fd00::3"),
                ("machine", "fd00::2"),
                ("authorization", "Bearer x"),
                ("x-trace", "1"),
                ("x-trace", "2"),
            ],
        );
        let headers = forwarded_headers(&req);
        assert!(headers.get("machines").is_none());
        assert!(headers.get("machine").is_none());
        assert_eq!(headers["proxy-authority"], "[fd00::1]:51000");
        assert_eq!(headers["authorization"], "Bearer x");
        assert_eq!(headers.get_all("x-trace").iter().count(), 2);
    }

    #[test]
    fn proxy_authority_falls_back_to_host_then_unknown() {
        let req = request(
            "/pkg.Service/Method",
            &[("host", "switchyard.local:51000"), ("machines", "fd00::2")],
        );
        let headers = forwarded_headers(&req);
        assert_eq!(headers["proxy-authority"], "switchyard.local:51000");

        let req = request("/pkg.Service/Method", &[("proxy-authority", "spoofed")]);
        let headers = forwarded_headers(&req);
        assert_eq!(headers["proxy-authority"], "unknown");
        assert_eq!(headers.get_all("proxy-authority").iter().count(), 1);
    }

    #[tokio::test]
    async fn unreachable_machine_fails_fast_once_down() {
        // A port on this machine's loopback with nothing listening.
        let listener = std::net::TcpListener::bind("[::1]:0");
        let Ok(listener) = listener else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = ChannelConfig {
            connect_timeout: Duration::from_secs(2),
            backoff: Backoff {
                initial: Duration::from_secs(60),
                ..Backoff::REMOTE
            },
            ..ChannelConfig::default()
        };
        let socket = SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, port, 0, 0);
        let backend = RemoteBackend::new(socket, MachineInfo::from_addr("::1"), config);
        let req = request("/pkg.Service/Method", &[]);
        let err = backend.connect(&req).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        // One message whatever the cause: no OS detail for a port scanner.
        assert_eq!(err.message(), "machine ::1 unreachable");
        assert!(backend.is_down());
        let again = tokio::time::timeout(Duration::from_millis(100), backend.connect(&req))
            .await
            .expect("a machine known down fails fast")
            .unwrap_err();
        assert_eq!(again.message(), "machine ::1 unreachable");
        backend.close();
    }
}
