//! A live machine registry in etcd: members anyone can edit, and heartbeats
//! that vanish by themselves when a machine dies.
//!
//! The file registry (`[[machines]]`) changes only when someone edits every
//! machine's file and sends SIGHUP. In etcd the cluster shares one list,
//! changes reach every Switchyard within a watch round trip, and each
//! machine can say it is alive: its liveness key is bound to a lease it
//! keeps renewing, so the key disappears within the lease's TTL after the
//! machine stops, and at once when it shuts down cleanly (the lease is
//! revoked). The director then answers calls for a machine without a
//! heartbeat at once instead of dialling a dead host.
//!
//! Key layout under the prefix (default `/switchyard/`):
//!
//! - `<prefix>machines/<id>`: JSON `{"id":"m1","name":"alpha","addr":"fd00::1"}`
//!   (`addr` may carry a port: `[fd00::1]:51001`);
//! - `<prefix>alive/<id>`: any value, attached to the machine's lease.
//!
//! [`RegistryWatcher`] turns these keys into [`Snapshot`]s on a
//! `tokio::sync::watch` channel, with a [`Health`] channel beside it (the
//! last snapshot stays in force while etcd is unreachable); [`Registrar`]
//! registers this machine and keeps its liveness key; [`LiveRegistry`] runs
//! both as the [`EtcdConfig`] says. Both tasks retry with bounded, jittered
//! backoff, bound every etcd request with a timeout, and stop when their
//! handle is dropped or shut down. A bad entry (invalid JSON, a non-address,
//! an address that may not be dialled, a duplicate name) costs only that
//! entry, logged once with its key.
//!
//! Anyone who can write under the prefix can add entries; the rules that keep
//! such entries from pushing real machines out (conflicts and the cap favour
//! this machine and members with a heartbeat; addresses follow
//! `allowed_networks` like caller-written ones) are in `state`.

mod config;
mod conn;
mod error;
mod model;
mod registrar;
mod state;
mod watcher;

use std::sync::Arc;

use ipnet::Ipv6Net;
use tokio::sync::watch;

pub use config::{
    DEFAULT_HEARTBEAT_TTL, DEFAULT_PREFIX, EtcdConfig, MAX_HEARTBEAT_TTL, prefix_problem,
};
pub use error::{EntryError, Error};
pub use model::{Health, Snapshot, identifier_problem};
pub use registrar::{Registrar, Registration};
pub use watcher::RegistryWatcher;

/// The watcher and, when this machine registers itself, the registrar. They
/// are separate tasks: losing the liveness lease does not disturb the view
/// of the others.
#[derive(Debug)]
pub struct LiveRegistry {
    watcher: RegistryWatcher,
    registrar: Option<Registrar>,
}

impl LiveRegistry {
    /// Starts the tasks `cfg` asks for. Must be called within a Tokio
    /// runtime.
    pub fn start(cfg: &EtcdConfig) -> Result<Self, Error> {
        cfg.validate()?;
        let registrar = cfg
            .register
            .is_some()
            .then(|| Registrar::spawn(cfg))
            .transpose()?;
        let watcher = RegistryWatcher::spawn(cfg)?;
        Ok(Self { watcher, registrar })
    }

    /// The latest snapshot; see [`RegistryWatcher::snapshot`].
    pub fn snapshot(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.watcher.snapshot()
    }

    /// Whether the snapshot follows etcd; see [`RegistryWatcher::health`].
    pub fn health(&self) -> watch::Receiver<Health> {
        self.watcher.health()
    }

    /// How many times the registry was read in full (start, compaction,
    /// history reset); see [`RegistryWatcher::full_reads`].
    pub fn full_reads(&self) -> u64 {
        self.watcher.full_reads()
    }

    /// Replaces the networks member addresses must be in; see
    /// [`RegistryWatcher::set_allowed_networks`].
    pub fn set_allowed_networks(&self, networks: Option<Vec<Ipv6Net>>) {
        self.watcher.set_allowed_networks(networks);
    }

    /// This machine's registration, when it registers.
    pub fn registration(&self) -> Option<watch::Receiver<Registration>> {
        self.registrar.as_ref().map(Registrar::status)
    }

    /// Revokes this machine's lease (if registered), then stops watching.
    pub async fn shutdown(self) -> Result<(), Error> {
        let revoked = match self.registrar {
            Some(registrar) => registrar.shutdown().await,
            None => Ok(()),
        };
        self.watcher.shutdown().await;
        revoked
    }
}
