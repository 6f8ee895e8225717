//! The live registry in etcd, wired to the machine director: every snapshot
//! the watcher publishes becomes the director's registry and liveness, and
//! shutting down revokes this machine's heartbeat.
//!
//! Applying happens in one task that only ever swaps whole snapshots, so a
//! call sees either the old registry or the new one; the director forgets
//! (never cuts) the connections of machines that left, moved or went down.

use std::sync::Arc;

use switchyard_director::MachineDirector;
use switchyard_director::live::{EtcdConfig, Health, LiveRegistry, Registration, Snapshot};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

/// A running live registry and the task that feeds it to the director.
#[derive(Debug)]
pub struct EtcdRegistry {
    registry: LiveRegistry,
    health: watch::Receiver<Health>,
    /// The machine this one registered as, if it registers.
    registered: Option<switchyard_director::Machine>,
    _apply: AbortOnDropHandle<()>,
}

impl EtcdRegistry {
    /// Starts following (and, as configured, joining) the registry in etcd;
    /// `liveness` makes members without a heartbeat down. Until the first
    /// read the director's registry is empty and [`EtcdRegistry::fresh`] is
    /// false.
    pub fn start(
        config: &EtcdConfig,
        liveness: bool,
        director: Arc<MachineDirector>,
    ) -> Result<Self, switchyard_director::live::Error> {
        let registry = LiveRegistry::start(config)?;
        let apply = tokio::spawn(follow(registry.snapshot(), director, liveness));
        tracing::info!(
            endpoints = ?config.endpoints,
            prefix = %config.prefix,
            register = ?config.register.as_ref().map(|m| &m.id),
            "machine registry in etcd"
        );
        Ok(Self {
            health: registry.health(),
            registered: config.register.clone(),
            registry,
            _apply: AbortOnDropHandle::new(apply),
        })
    }

    /// Whether the registry in force follows etcd now: false before the
    /// first read and while etcd is unreachable (the last registry read
    /// stays in force meanwhile).
    pub fn fresh(&self) -> bool {
        self.health.borrow().is_fresh()
    }

    /// The `/readyz` check of the registry: ready while it is fresh.
    pub fn ready_check(&self) -> crate::ops::ReadyCheck {
        let health = self.health.clone();
        Arc::new(move || {
            match *health.borrow() {
            Health::Fresh => Ok(()),
            Health::Starting => Err("machine registry in etcd not read yet".to_owned()),
            Health::Stale => {
                Err("machine registry in etcd is stale (etcd unreachable); the last one read stays in force".to_owned())
            }
        }
        })
    }

    /// The latest registry read from etcd.
    pub fn snapshot(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.registry.snapshot()
    }

    /// How many times the registry was read in full rather than followed
    /// (start, compaction, history reset).
    pub fn full_reads(&self) -> u64 {
        self.registry.full_reads()
    }

    /// Applies new `allowed_networks` to the members (a reload): the
    /// registry is read again with them.
    pub fn set_allowed_networks(&self, networks: Option<Vec<ipnet::Ipv6Net>>) {
        self.registry.set_allowed_networks(networks);
    }

    /// This machine's registration, when it registers itself.
    pub fn registration(&self) -> Option<watch::Receiver<Registration>> {
        self.registry.registration()
    }

    /// The entry this machine registered, if it registers.
    pub fn registered(&self) -> Option<&switchyard_director::Machine> {
        self.registered.as_ref()
    }

    /// Revokes this machine's heartbeat so the others see it down at once,
    /// then stops watching. Bounded by the etcd request timeouts; a failure
    /// is logged (the heartbeat then expires after its TTL).
    pub async fn shutdown(self) {
        match self.registry.shutdown().await {
            Ok(()) => tracing::debug!("registry in etcd left"),
            Err(err) => tracing::warn!(
                error = %err,
                "cannot revoke this machine's heartbeat in etcd; it expires after its TTL"
            ),
        }
    }
}

/// How many down machines a log line names.
const DOWN_NAMED: usize = 8;

/// Applies every new snapshot to `director` until the watcher stops.
async fn follow(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    director: Arc<MachineDirector>,
    liveness: bool,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        // Revision 0: nothing read yet, the empty registry stays.
        if snapshot.revision > 0 {
            apply(&director, &snapshot, liveness);
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

fn apply(director: &MachineDirector, snapshot: &Snapshot, liveness: bool) {
    let registry = match snapshot.registry() {
        Ok(registry) => registry,
        Err(err) => {
            // The watcher leaves conflicts out, so this is a bug: keep the
            // registry in force rather than lose it.
            tracing::error!(error = %err, "registry from etcd refused; keeping the previous one");
            return;
        }
    };
    let mut down = snapshot
        .machines
        .iter()
        .filter(|m| liveness && !snapshot.is_alive(&m.id))
        .map(|m| m.name.as_str());
    // A few names say which; the count says how many.
    let named: Vec<&str> = down.by_ref().take(DOWN_NAMED).collect();
    let down_count = named.len() + down.count();
    tracing::info!(
        machines = snapshot.machines.len(),
        down = down_count,
        ?named,
        revision = snapshot.revision,
        "machine registry updated from etcd"
    );
    director.set_registry_and_liveness(Some(registry), liveness.then(|| snapshot.alive.clone()));
}
