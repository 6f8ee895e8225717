//! A cluster of machines on IPv6 loopback, in one process: each machine is a
//! `machine-info` service on a Unix socket plus a Switchyard on `[::1]`, the
//! machines differing by port and knowing each other through a registry.
//! The demo and the end-to-end tests both start their clusters here.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use switchyard_director::{Machine, Registry};
use switchyard_engine::Address;
use tokio::net::TcpListener;

use crate::config::{Listen, Settings};
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

/// Settings of a machine whose Switchyard listens on `addr` (its local
/// address too) and whose service is at `socket`; the rest is default.
pub fn machine_settings(addr: SocketAddr, socket: PathBuf, registry: Option<Registry>) -> Settings {
    let mut settings = Settings::default();
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
            let mut settings = machine_settings(addr, socket.clone(), Some(registry.clone()));
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
