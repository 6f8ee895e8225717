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
    current: RwLock<Loaded>,
}

/// Files and what was loaded from them, replaced together.
#[derive(Debug)]
struct Loaded {
    paths: TlsPaths,
    configs: Arc<TlsConfigs>,
}

impl TlsStore {
    /// Loads the files; fails if any is unusable.
    pub fn load(paths: TlsPaths) -> Result<Self, TlsError> {
        let configs = Arc::new(TlsConfigs::load(&paths)?);
        Ok(Self {
            current: RwLock::new(Loaded { paths, configs }),
        })
    }

    /// Re-reads the files in force. On success new connections use them; on error the
    /// previous configurations stay in force and the error names the file at fault.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.reload_from(self.paths())
    }

    /// Reads `paths`, which may name other files than those in force (rotation to new
    /// file names); as [`TlsStore::reload`], nothing changes when they are unusable.
    pub fn reload_from(&self, paths: TlsPaths) -> Result<(), TlsError> {
        // Build outside the lock: reading files must not block handshakes.
        let configs = Arc::new(TlsConfigs::load(&paths)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Loaded { paths, configs };
        Ok(())
    }

    /// The files in force.
    pub fn paths(&self) -> TlsPaths {
        self.loaded().paths.clone()
    }

    /// The configurations in force.
    pub fn current(&self) -> Arc<TlsConfigs> {
        self.loaded().configs.clone()
    }

    fn loaded(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        // No code panics while holding the lock, but a poisoned lock still holds valid state.
        self.current.read().unwrap_or_else(PoisonError::into_inner)
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
