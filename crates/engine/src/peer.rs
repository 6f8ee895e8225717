//! Who is on the other end of a served connection. The server puts an
//! `Arc<Peer>` in the extensions of every request, so directors, access logs
//! and authorization know the caller without the engine knowing what a
//! certificate means to them.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;

use rustls::pki_types::CertificateDer;

/// Where a connection comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A process on a Unix socket, with its credentials when the OS tells.
    Unix {
        /// The peer's user ID.
        uid: Option<u32>,
        /// The peer's process ID.
        pid: Option<i32>,
    },
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix {
                uid: Some(uid),
                pid: Some(pid),
            } => write!(f, "unix(uid={uid},pid={pid})"),
            Self::Unix { .. } => f.write_str("unix"),
        }
    }
}

/// The peer of one connection.
pub struct Peer {
    /// Where it connects from.
    pub addr: PeerAddr,
    /// Its TLS certificate chain, leaf first, already verified against the
    /// cluster CA; `None` on a plaintext connection.
    pub certificates: Option<Vec<CertificateDer<'static>>>,
    /// Something derived from the peer once per connection (say, the roles in
    /// its certificate), by whoever needs it.
    derived: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl Peer {
    /// A peer at `addr` with these certificates.
    pub fn new(addr: PeerAddr, certificates: Option<Vec<CertificateDer<'static>>>) -> Self {
        Self {
            addr,
            certificates,
            derived: OnceLock::new(),
        }
    }

    /// The value `derive` computes from this peer, computed on first use and
    /// kept for the connection's life. One type per connection: a second type
    /// is computed each time (callers use one type).
    pub fn derived<T: Any + Send + Sync + Clone>(&self, derive: impl FnOnce(&Self) -> T) -> T {
        if let Some(value) = self.derived.get().and_then(|v| v.downcast_ref::<T>()) {
            return value.clone();
        }
        let value = derive(self);
        let _ = self.derived.set(Box::new(value.clone()));
        value
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.addr)
            .field("tls", &self.certificates.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn derived_values_are_computed_once_per_peer() {
        let peer = Peer::new(
            PeerAddr::Unix {
                uid: Some(0),
                pid: Some(1),
            },
            None,
        );
        let computed = AtomicUsize::new(0);
        let derive = |_: &Peer| {
            computed.fetch_add(1, Ordering::SeqCst);
            Arc::new("roles".to_owned())
        };
        assert_eq!(*peer.derived(derive), "roles");
        assert_eq!(*peer.derived(derive), "roles");
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        assert_eq!(peer.addr.to_string(), "unix(uid=0,pid=1)");
    }
}
