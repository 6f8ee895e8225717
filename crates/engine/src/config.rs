//! Tunables of the engine: the proxy, the servers it runs and the channels it
//! dials, sharing one [`Http2Settings`] type so that the two sides of a hop
//! are configured with the same words (and compared: the upstream side must
//! accept at least what the downstream side does).

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::budget::{DEFAULT_MEMORY_BUDGET, DEFAULT_MEMORY_SHARE, MemoryBudget};
use crate::observe::SharedObserver;
use crate::server::ConnectionLimit;
use crate::tls::TlsStore;

/// Default limit of one message, each way.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 32 * 1024 * 1024;

/// The largest flow-control window HTTP/2 allows.
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// HTTP/2 settings of one side of a connection.
///
/// # Why one slow reader cannot freeze a shared connection
///
/// Every call to a machine shares one upstream connection, and data a reader
/// has not taken yet counts against both its stream's window and the whole
/// connection's. If the connection window were a small multiple of the
/// stream window, a few streams whose clients stop reading would use it up
/// and every other call on that connection would wait. So on both sides of
/// every hop (what a server accepts from callers, what a channel accepts
/// from the server it dials) the connection window is the protocol's maximum
/// (2³¹−1 bytes) and the stream window modest: a stalled stream holds at most
/// its stream window, on each hop, and thousands of them fit before the
/// connection window could matter. Across two hops (client → A → B →
/// backend) the same holds link by link: a client that stops reading stops
/// A reading that stream from B, which stops B reading it from the backend;
/// each link holds one stream window for it and keeps the rest flowing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Settings {
    /// Receive window of each stream.
    pub stream_window: u32,
    /// Receive window of the whole connection.
    pub connection_window: u32,
    /// Largest frame payload the peer may send.
    pub max_frame_size: u32,
    /// Largest header list (request metadata, or response headers and
    /// trailers) accepted from the peer.
    pub max_header_list_size: u32,
    /// Interval of PINGs that detect a dead peer; `None` disables them.
    pub keepalive_interval: Option<Duration>,
    /// How long a PING may stay unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
}

impl Http2Settings {
    const WINDOWS: Self = Self {
        stream_window: 1024 * 1024,
        connection_window: MAX_WINDOW,
        max_frame_size: 64 * 1024,
        max_header_list_size: 1024 * 1024,
        keepalive_interval: None,
        keepalive_timeout: Duration::from_secs(10),
    };

    /// What a server accepts from its callers.
    pub const SERVER: Self = Self {
        keepalive_interval: Some(Duration::from_secs(30)),
        ..Self::WINDOWS
    };

    /// What a channel accepts from the servers it dials: response metadata
    /// up to 16 MiB, as grpc-go accepts, so that a backend's large trailers
    /// end that one call instead of tearing down the shared connection.
    pub const CHANNEL: Self = Self {
        max_header_list_size: 16 * 1024 * 1024,
        keepalive_interval: Some(Duration::from_secs(10)),
        ..Self::WINDOWS
    };
}

/// Tunables of [`TransparentProxy`](crate::TransparentProxy).
#[derive(Clone)]
pub struct ProxyConfig {
    /// Largest message accepted from a client or a backend; larger ones end
    /// the call (or that backend's part of a fan-out) with `RESOURCE_EXHAUSTED`.
    pub max_message_size: usize,
    /// How long before the caller's deadline a unary fan-out stops waiting
    /// and answers with what has arrived (capped at a tenth of the timeout),
    /// so the partial answer reaches the caller in time.
    pub deadline_margin: Duration,
    /// How long a fan-out backend may leave the request unread (its queue
    /// full) before it is dropped from the call with an error entry, so the
    /// others keep going.
    pub request_stall_timeout: Duration,
    /// Largest request header list forwarded to a backend (HTTP/2's
    /// measure: names, values and 32 bytes per entry); a larger request
    /// fails alone with `RESOURCE_EXHAUSTED` before it is sent, instead of
    /// making the backend close the connection every caller shares (tonic
    /// and hyper servers accept 16 KiB).
    pub max_upstream_metadata: usize,
    /// What fan-out calls may hold for their callers, in all and per caller
    /// ([`MemoryBudget`]); `None`: no bound beyond each call's own.
    pub memory: Option<MemoryBudget>,
    /// Hears of every call and fan-out leg (metrics, access logs).
    pub observer: Option<SharedObserver>,
}

/// Request metadata forwarded at most unless configured: what tonic and
/// hyper servers accept by default.
pub const DEFAULT_MAX_UPSTREAM_METADATA: usize = 16 * 1024;

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_upstream_metadata: DEFAULT_MAX_UPSTREAM_METADATA,
            memory: Some(MemoryBudget::new(
                DEFAULT_MEMORY_BUDGET,
                DEFAULT_MEMORY_SHARE,
            )),
            deadline_margin: Duration::from_millis(50),
            request_stall_timeout: Duration::from_secs(5),
            observer: None,
        }
    }
}

/// Settings of [`server::serve`](crate::server::serve).
#[derive(Clone)]
pub struct ServerConfig {
    /// After shutdown is requested, how long running calls may take to finish.
    pub grace_period: Duration,
    /// HTTP/2 streams allowed per connection.
    pub max_concurrent_streams: u32,
    /// Connections open at once (shared by every listener served with this
    /// configuration); at the cap a new one evicts the oldest connection
    /// still in its handshake, or is refused.
    pub connections: ConnectionLimit,
    /// Bound of a connection's handshake: TLS, then the HTTP/2 preface and
    /// the client's SETTINGS.
    pub handshake_timeout: Duration,
    /// HTTP/2 settings towards callers.
    pub http2: Http2Settings,
    /// Mutual TLS on TCP listeners; Unix listeners stay plaintext.
    pub tls: Option<Arc<TlsStore>>,
    /// Hears of connections accepted, refused and failed.
    pub observer: Option<SharedObserver>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(10),
            max_concurrent_streams: 1024,
            connections: ConnectionLimit::new(1024),
            handshake_timeout: Duration::from_secs(10),
            http2: Http2Settings::SERVER,
            tls: None,
            observer: None,
        }
    }
}

/// Settings of a [`Channel`](crate::Channel).
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Bound of one connection attempt, up to the peer's HTTP/2 SETTINGS.
    pub connect_timeout: Duration,
    /// How long a target stays down after failed attempts in a row.
    pub backoff: Backoff,
    /// A connection no call used for this long is closed.
    pub idle_timeout: Duration,
    /// HTTP/2 settings towards the dialled server.
    pub http2: Http2Settings,
    /// Mutual TLS towards TCP targets.
    pub tls: Option<Arc<TlsStore>>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::REMOTE,
            idle_timeout: Duration::from_secs(300),
            http2: Http2Settings::CHANNEL,
            tls: None,
        }
    }
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("max_message_size", &self.max_message_size)
            .field("deadline_margin", &self.deadline_margin)
            .field("request_stall_timeout", &self.request_stall_timeout)
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("grace_period", &self.grace_period)
            .field("max_concurrent_streams", &self.max_concurrent_streams)
            .field("connections", &self.connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("http2", &self.http2)
            .field("tls", &self.tls.is_some())
            .field("observed", &self.observer.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_accepts_at_least_what_downstream_does() {
        let (server, channel) = (Http2Settings::SERVER, Http2Settings::CHANNEL);
        assert!(channel.max_header_list_size >= server.max_header_list_size);
        assert_eq!(channel.max_frame_size, server.max_frame_size);
    }

    #[test]
    fn connection_windows_dwarf_stream_windows() {
        for side in [Http2Settings::SERVER, Http2Settings::CHANNEL] {
            assert_eq!(side.connection_window, MAX_WINDOW);
            // Over a thousand stalled streams before the connection could stall.
            assert!(side.connection_window / side.stream_window > 1000);
        }
    }
}
