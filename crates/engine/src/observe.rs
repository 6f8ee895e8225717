//! What the engine tells about its work: calls, fan-out legs, connections.
//!
//! The engine knows no metrics library or log format; an [`Observer`] (the
//! daemon's Prometheus metrics and access log) turns these reports into what
//! it needs. Without an observer nothing is recorded and nothing is
//! allocated for it. Every method has an empty default and runs on the
//! call's own task: keep them cheap.

use std::sync::Arc;
use std::time::Duration;

use tonic::Code;

use crate::backend::Backend;
use crate::director::Mode;
use crate::peer::{Peer, PeerAddr};

/// Receives the engine's reports.
pub trait Observer: Send + Sync + 'static {
    /// Whether calls that start now are reported. When `false`, the engine
    /// keeps no record of them: no [`call_started`](Self::call_started),
    /// [`call_ended`](Self::call_ended) or [`leg_ended`](Self::leg_ended)
    /// for them, and nothing allocated. Asked once per call.
    fn observes_calls(&self) -> bool {
        true
    }

    /// A call was routed and starts.
    fn call_started(&self, call: &CallStart<'_>) {
        let _ = call;
    }

    /// A call ended (its trailers were sent, or the client went away).
    fn call_ended(&self, call: &CallEnd<'_>) {
        let _ = call;
    }

    /// One backend of a fan-out call is done.
    fn leg_ended(&self, leg: &LegEnd<'_>) {
        let _ = leg;
    }

    /// Something happened to a connection of a listener.
    fn connection(&self, event: ConnectionEvent, peer: &PeerAddr) {
        let _ = (event, peer);
    }
}

/// A call that starts.
#[derive(Debug)]
pub struct CallStart<'a> {
    /// `/package.Service/Method`.
    pub method: &'a str,
    /// How it is forwarded.
    pub mode: Mode,
}

/// A call that ended.
#[derive(Debug)]
pub struct CallEnd<'a> {
    /// `/package.Service/Method`.
    pub method: &'a str,
    /// How it was forwarded; `None` when it was refused before (not gRPC,
    /// a bad deadline, or the director's refusal).
    pub mode: Option<Mode>,
    /// Where it went.
    pub backends: &'a [Arc<dyn Backend>],
    /// Its status (`CANCELLED` when the client went away first).
    pub code: Code,
    /// From the request to the end of the response.
    pub duration: Duration,
    /// Request bytes received (gRPC frames, prefixes included).
    pub bytes_in: u64,
    /// Response bytes sent.
    pub bytes_out: u64,
    /// Who called, when the server knows.
    pub peer: Option<&'a Peer>,
}

/// How one backend of a fan-out call ended.
#[derive(Debug)]
pub struct LegEnd<'a> {
    /// `/package.Service/Method`.
    pub method: &'a str,
    /// The backend.
    pub backend: &'a dyn Backend,
    /// Its status; `DEADLINE_EXCEEDED` when the call answered without it.
    pub code: Code,
    /// From the start of the call to this backend's end.
    pub duration: Duration,
    /// Its part of the answer is an error entry.
    pub error_entry: bool,
}

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// Accepted (its handshake starts).
    Accepted,
    /// Refused at the connection cap, or at its peer's share: every slot it
    /// could take held a connection with a call running.
    Refused,
    /// Closed at the connection cap (its slot went to a new connection):
    /// it had sent no request yet, or had no open stream.
    Evicted,
    /// Closed after the idle timeout without an open stream.
    IdleClosed,
    /// Closed for not finishing its handshake in time.
    HandshakeTimeout,
    /// Its TLS handshake failed (no or untrusted certificate, not h2).
    TlsFailed,
}

/// An observer shared by the proxy and its servers.
pub type SharedObserver = Arc<dyn Observer>;
