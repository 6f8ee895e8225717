//! The current TLS configurations, replaceable at run time (certificate rotation).
//!
//! Each new connection takes the configurations current at that moment; established
//! connections keep the `Arc` they were built with, so a reload never disturbs them.
//! A reload that fails keeps the previous configurations: a half-written or mismatched
//! set of files must not take the machine off the cluster.
//!
//! A `std::sync::RwLock<Arc<_>>` is enough: readers hold the lock only to clone an `Arc`
//! (once per connection), and reloads are rare, so arc-swap would not earn its place.

use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::TlsAcceptor;

use super::config::{ClientTls, TlsConfigs, TlsError, TlsPaths};

/// The files of the `[tls]` section and the configurations last loaded from them.
#[derive(Debug)]
pub struct TlsStore {
    paths: TlsPaths,
    current: RwLock<Arc<TlsConfigs>>,
}

impl TlsStore {
    /// Loads the files; fails if any is unusable.
    pub fn load(paths: TlsPaths) -> Result<Self, TlsError> {
        let configs = TlsConfigs::load(&paths)?;
        Ok(Self {
            paths,
            current: RwLock::new(Arc::new(configs)),
        })
    }

    /// Re-reads the files. On success new connections use them; on error the previous
    /// configurations stay in force and the error names the file at fault.
    pub fn reload(&self) -> Result<(), TlsError> {
        // Build outside the lock: reading files must not block handshakes.
        let configs = Arc::new(TlsConfigs::load(&self.paths)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = configs;
        Ok(())
    }

    /// The configurations in force.
    pub fn current(&self) -> Arc<TlsConfigs> {
        // No code panics while holding the lock, but a poisoned lock still holds a valid Arc.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// An acceptor for one new incoming connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current().server().clone())
    }

    /// The client side for new outgoing connections.
    pub fn client(&self) -> ClientTls {
        self.current().client().clone()
    }
}
