//! A cluster of machines on IPv6 loopback, in one process: each machine is a
//! `machine-info` service on a Unix socket plus a Switchyard on `[::1]`, the
//! machines differing by port and knowing each other through a registry —
//! the same file registry given to each, or one in etcd where each machine
//! registers itself. The demo and the end-to-end tests both start their
//! clusters here.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ipnet::Ipv6Net;
use switchyard_director::{Machine, Registry};
use switchyard_engine::Address;
use tokio::net::TcpListener;

use crate::config::{EtcdSettings, Identifier, Listen, Settings};
use crate::daemon::Daemon;

/// One machine of a [`LoopbackCluster`].
#[derive(Debug)]
pub struct LoopbackMachine {
    /// Its registry ID (`m1`, `m2`, …).
    pub id: String,
    /// Its registry name.
    pub name: String,
    /// Where its Switchyard listens.
    pub addr: SocketAddr,
    /// Its `machine-info` service's socket.
    pub socket: PathBuf,
    /// Its `machine-info` service, while running.
    pub service: Option<machine_info::Server>,
    /// Its Switchyard, while running.
    pub daemon: Option<Daemon>,
    /// The settings its Switchyard started with.
    pub settings: Settings,
}

/// Machines on `[::1]` with a registry naming every one of them.
#[derive(Debug)]
pub struct LoopbackCluster {
    /// The machines, in registry order.
    pub machines: Vec<LoopbackMachine>,
    /// The registry of all of them.
    pub registry: Registry,
}

/// The networks a loopback cluster's machines are dialled in: `::1/128`.
/// Loopback is no mesh address, so a registry naming `[::1]:port` needs
/// `allowed_networks` to admit it.
pub fn loopback_networks() -> Vec<Ipv6Net> {
    vec![Ipv6Net::new(Ipv6Addr::LOCALHOST, 128).expect("/128 is a prefix length")]
}

/// Settings of a machine whose Switchyard listens on `addr` (its local
/// address too) and whose service is at `socket`; the rest is default. With
/// a registry, `allowed_networks` admits loopback ([`loopback_networks`]).
pub fn machine_settings(addr: SocketAddr, socket: PathBuf, registry: Option<Registry>) -> Settings {
    let mut settings = Settings::default();
    if registry.is_some() {
        settings.live.allowed_networks = Some(loopback_networks());
    }
    settings.start.listen = Some(vec![Listen(Address::Tcp(addr))]);
    settings.start.local_socket = socket;
    settings.live.local_address = Some(
        addr.to_string()
            .parse()
            .expect("a [::1] socket address is a machine address"),
    );
    settings.live.machines = registry;
    settings
}

impl LoopbackCluster {
    /// Starts one machine per name (IDs `m1`, `m2`, …) with sockets in `dir`;
    /// `configure` adjusts machine `i`'s [`machine_settings`] before its
    /// Switchyard starts.
    pub async fn start(
        dir: &Path,
        names: &[&str],
        configure: impl Fn(usize, &mut Settings),
    ) -> anyhow::Result<Self> {
        Self::launch(dir, names, None, configure).await
    }

    /// Like [`LoopbackCluster::start`], with the registry in etcd as `etcd`
    /// says: each machine registers itself (`register` is set) and learns
    /// the others from etcd.
    pub async fn start_with_etcd(
        dir: &Path,
        names: &[&str],
        etcd: &EtcdSettings,
        configure: impl Fn(usize, &mut Settings),
    ) -> anyhow::Result<Self> {
        Self::launch(dir, names, Some(etcd), configure).await
    }

    async fn launch(
        dir: &Path,
        names: &[&str],
        etcd: Option<&EtcdSettings>,
        configure: impl Fn(usize, &mut Settings),
    ) -> anyhow::Result<Self> {
        let mut listeners = Vec::with_capacity(names.len());
        for _ in names {
            let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
                .await
                .context("a loopback cluster needs IPv6 loopback ([::1]); is IPv6 disabled?")?;
            listeners.push(listener);
        }
        let mut machines = Vec::with_capacity(names.len());
        for (i, (name, listener)) in names.iter().zip(&listeners).enumerate() {
            machines.push(Machine {
                id: format!("m{}", i + 1),
                name: (*name).to_owned(),
                addr: listener.local_addr()?.to_string().parse()?,
            });
        }
        let registry = Registry::new(machines.clone())?;
        let mut started = Vec::with_capacity(names.len());
        for (i, (machine, listener)) in machines.into_iter().zip(listeners).enumerate() {
            let addr = listener.local_addr()?;
            let socket = dir.join(format!("{}.sock", machine.name));
            let service = machine_info::Server::spawn_unix(&machine.name, &socket)
                .with_context(|| format!("cannot start machine-info of {}", machine.name))?;
            let mut settings = match etcd {
                None => machine_settings(addr, socket.clone(), Some(registry.clone())),
                Some(etcd) => {
                    let mut settings = machine_settings(addr, socket.clone(), None);
                    settings.live.allowed_networks = Some(loopback_networks());
                    settings.start.machine_id = Some(Identifier(machine.id.clone()));
                    settings.start.machine_name = Some(Identifier(machine.name.clone()));
                    settings.start.registry.etcd = Some(EtcdSettings {
                        register: true,
                        ..etcd.clone()
                    });
                    settings
                }
            };
            configure(i, &mut settings);
            let daemon = Daemon::with_listeners(&settings, vec![listener.into()]);
            started.push(LoopbackMachine {
                id: machine.id,
                name: machine.name,
                addr,
                socket,
                service: Some(service),
                daemon: Some(daemon),
                settings,
            });
        }
        Ok(Self {
            machines: started,
            registry,
        })
    }

    /// With the registry in etcd: waits, at most `limit`, until every
    /// running Switchyard sees every machine in `alive` registered with a
    /// heartbeat and every other machine of the cluster without one.
    pub async fn wait_for_liveness(&self, alive: &[&str], limit: Duration) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            let agreed = self.machines.iter().all(|m| {
                let Some(registry) = m.daemon.as_ref().and_then(Daemon::etcd_registry) else {
                    return true;
                };
                let snapshot = registry.snapshot().borrow().clone();
                registry.fresh()
                    && self.machines.iter().all(|other| {
                        let registered = snapshot.machine(&other.id).is_some();
                        let beating = snapshot.is_alive(&other.id);
                        if alive.contains(&other.name.as_str()) {
                            registered && beating
                        } else {
                            !beating
                        }
                    })
            });
            if agreed {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!("the machines did not see {alive:?} alive (and no others) within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every service and shuts every Switchyard down.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        for machine in &mut self.machines {
            machine.service.take();
            if let Some(daemon) = machine.daemon.take() {
                daemon.shutdown().await?;
            }
        }
        Ok(())
    }
}
