//! A running Switchyard: the machine director, the proxy engine behind the
//! daemon's own API ([`Front`]) and the listeners, wired together. No routing
//! logic lives here.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchyard_director::{DirectorOptions, MachineDirector, Policy, Registry, StreamedMethods};
use switchyard_engine::observe::SharedObserver;
use switchyard_engine::server::{ConnectionLimit, Listener, serve};
use switchyard_engine::tls::TlsStore;
use switchyard_engine::{Address, ChannelConfig, ProxyConfig, ServerConfig, TransparentProxy};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use crate::config::{Listen, LiveSettings, Settings};
use crate::front::Front;
use crate::live::EtcdRegistry;
use crate::metrics::{Metrics, Telemetry};
use crate::ops::Ops;

/// A Switchyard serving until [`Daemon::shutdown`].
#[derive(Debug)]
pub struct Daemon {
    director: Arc<MachineDirector>,
    stop: watch::Sender<bool>,
    servers: JoinSet<()>,
    socket_files: Vec<SocketFile>,
    /// The TLS certificates in force, re-read on reload.
    tls: Option<Arc<TlsStore>>,
    /// The access log and metrics.
    telemetry: Arc<Telemetry>,
    /// The operations listener's task and its TCP address.
    ops: Option<(AbortOnDropHandle<()>, Option<SocketAddr>)>,
    /// The machine registry in etcd, when it is there rather than in the file.
    etcd: Option<EtcdRegistry>,
}

impl Daemon {
    /// Binds every listener of `settings` and starts serving. When one
    /// cannot be bound, the socket files of those already bound are removed.
    pub async fn start(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(etcd) = settings.etcd() {
            etcd.validate().context("registry.etcd")?;
        }
        let tls = settings
            .tls_paths()
            .map(|paths| TlsStore::load(paths).context("tls"))
            .transpose()?
            .map(Arc::new);
        let group = settings
            .start
            .socket_group
            .as_deref()
            .map(crate::listen::group_id)
            .transpose()?;
        let addresses = settings.listeners();
        let metrics = settings.start.metrics_listen.as_ref().map(|l| &l.0);
        let mut listeners = Vec::with_capacity(addresses.len() + 1);
        let mut socket_files = Vec::new();
        for addr in addresses.iter().chain(metrics) {
            match crate::listen::bind(addr, settings.start.socket_mode.0, group) {
                Ok(listener) => listeners.push(listener),
                Err(err) => {
                    drop(listeners);
                    remove_socket_files(&socket_files);
                    return Err(err);
                }
            }
            if let Address::Unix(path) = addr {
                socket_files.push(SocketFile::new(path));
            }
        }
        let ops = metrics.and_then(|_| listeners.pop());
        let mut daemon = Self::serving(settings, listeners, ops, tls);
        daemon.socket_files = socket_files;
        Ok(daemon)
    }

    /// Starts serving on listeners bound by the caller; binds the metrics
    /// listener if one is configured.
    ///
    /// # Panics
    ///
    /// When the TLS files of `settings` cannot be loaded, its etcd
    /// registry settings are invalid or the metrics listener cannot be
    /// bound (use [`Daemon::start`] to get the error).
    pub fn with_listeners(settings: &Settings, listeners: Vec<Listener>) -> Self {
        let tls = settings
            .tls_paths()
            .map(|paths| Arc::new(TlsStore::load(paths).expect("the TLS files load")));
        let ops = settings.start.metrics_listen.as_ref().map(|Listen(addr)| {
            crate::listen::bind(addr, settings.start.socket_mode.0, None)
                .expect("the metrics listener binds")
        });
        Self::serving(settings, listeners, ops, tls)
    }

    fn serving(
        settings: &Settings,
        listeners: Vec<Listener>,
        ops: Option<Listener>,
        tls: Option<Arc<TlsStore>>,
    ) -> Self {
        if tls.is_none() && !settings.live.authz.is_empty() {
            tracing::warn!(
                "authz rules without [tls]: callers on TCP have no roles, only Unix callers (unix_roles) can be allowed"
            );
        }
        let start = &settings.start;
        let options = DirectorOptions {
            remote_channel: ChannelConfig {
                connect_timeout: start.connect_timeout_secs.into(),
                tls: tls.clone(),
                ..ChannelConfig::default()
            },
            policy: policy(&settings.live, tls.is_some()),
            // With etcd, an empty registry until the first read.
            registry: settings.live.machines.clone().or_else(|| {
                settings
                    .etcd()
                    .map(|_| Registry::new(Vec::new()).expect("an empty registry is valid"))
            }),
            always_fan_out: start.always_fan_out,
            local_address: settings.live.local_address,
            streamed: StreamedMethods::from_list(
                start.streamed_methods.iter().map(|m| m.0.clone()),
            ),
            discover_methods: start.detect_streamed_methods,
            allowed_networks: settings.live.allowed_networks.clone(),
            max_targets: start.max_targets.0,
            machine_timeout: (start.machine_timeout_secs > 0)
                .then(|| Duration::from_secs(start.machine_timeout_secs)),
            ..DirectorOptions::default()
        };
        let director = Arc::new(MachineDirector::new(
            start.local_socket.clone(),
            start.remote_port.get(),
            options,
        ));
        director.discover_methods();
        let etcd = settings.etcd().map(|config| {
            EtcdRegistry::start(&config, settings.liveness(), director.clone())
                .expect("the etcd registry settings are valid")
        });
        let metrics = start
            .metrics_listen
            .is_some()
            .then(|| Metrics::new(start.streamed_methods.iter().map(|m| m.0.clone())));
        let telemetry = Arc::new(Telemetry::new(
            director.clone(),
            settings.live.access_log,
            metrics,
        ));
        let observer: SharedObserver = telemetry.clone();
        let proxy = TransparentProxy::with_config(
            director.clone(),
            ProxyConfig {
                max_message_size: start.max_message_size.0,
                max_upstream_metadata: start.max_upstream_metadata.0,
                memory: Some(settings.memory_budget()),
                request_stall_timeout: start.request_stall_secs.into(),
                observer: Some(observer.clone()),
                ..ProxyConfig::default()
            },
        );
        let front = Front::new(proxy, director.clone());
        let server = ServerConfig {
            grace_period: start.shutdown_grace_secs.into(),
            connections: ConnectionLimit::with(settings.connection_limits()),
            handshake_timeout: start.handshake_timeout_secs.into(),
            tls: tls.clone(),
            observer: Some(observer),
            ..ServerConfig::default()
        };
        let (stop, stopped) = watch::channel(false);
        let mut servers = JoinSet::new();
        for listener in listeners {
            let (front, server, mut stopped) = (front.clone(), server.clone(), stopped.clone());
            servers.spawn(async move {
                let shutdown = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                serve(listener, front, &server, shutdown).await;
            });
        }
        let ops = ops.map(|listener| {
            let addr = match &listener {
                Listener::Tcp(l) => l.local_addr().ok(),
                Listener::Unix(_) => None,
            };
            let ops = Ops {
                telemetry: telemetry.clone(),
                local_socket: start.local_socket.clone(),
                checks: etcd.iter().map(EtcdRegistry::ready_check).collect(),
            };
            let task = tokio::spawn(ops.serve(listener, stop.subscribe()));
            (AbortOnDropHandle::new(task), addr)
        });
        Self {
            director,
            stop,
            servers,
            socket_files: Vec::new(),
            tls,
            telemetry,
            ops,
            etcd,
        }
    }

    /// The TCP address of the metrics and health listener, if it is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().and_then(|(_, addr)| *addr)
    }

    /// The access log and metrics.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Whether the machine registry in force is up to date: true with a
    /// file registry or none; with etcd, true once read and while etcd is
    /// reachable (for readiness).
    pub fn registry_fresh(&self) -> bool {
        self.etcd.as_ref().is_none_or(EtcdRegistry::fresh)
    }

    /// The machine registry in etcd, when configured.
    pub fn etcd_registry(&self) -> Option<&EtcdRegistry> {
        self.etcd.as_ref()
    }

    /// The machine director (for reloads and flushes).
    pub fn director(&self) -> &Arc<MachineDirector> {
        &self.director
    }

    /// Applies the reloadable settings without dropping running calls: the
    /// [`LiveSettings`], and the `[tls]` files (new paths included) when TLS
    /// is on.
    pub fn reload(&self, settings: &Settings) {
        let live = &settings.live;
        match &self.etcd {
            None => self.director.set_registry(live.machines.clone()),
            Some(etcd) => {
                if live.machines.is_some() {
                    tracing::warn!("[[machines]] ignored: the registry is in etcd until a restart");
                }
                etcd.set_allowed_networks(live.allowed_networks.clone());
                if let Some(me) = etcd.registered()
                    && live.local_address != Some(me.addr)
                {
                    tracing::warn!(
                        registered = %me.addr,
                        "local_address changed: this machine's entry in etcd keeps its address until a restart"
                    );
                }
            }
        }
        self.director.set_local_address(live.local_address);
        self.director
            .set_allowed_networks(live.allowed_networks.clone());
        self.director.set_policy(policy(live, self.tls.is_some()));
        self.telemetry.set_access_log(live.access_log);
        if let Some(tls) = &self.tls {
            let reloaded = match settings.tls_paths() {
                Some(paths) => tls.reload_from(paths),
                // Without [tls] now: a restart turns TLS off (reported as such).
                None => tls.reload(),
            };
            match reloaded {
                Ok(()) => tracing::info!(
                    cert = %tls.paths().cert.display(),
                    "TLS certificates reloaded; new connections use them"
                ),
                Err(err) => {
                    tracing::warn!(error = %err, "TLS reload failed; keeping the certificates in force")
                }
            }
        }
        self.director.discover_methods();
        tracing::info!(
            machines = live.machines.as_ref().map_or(0, |r| r.machines().len()),
            local_address = ?live.local_address.map(|a| a.to_string()),
            "configuration reloaded"
        );
    }

    /// Stops accepting, lets running calls finish within the grace period,
    /// then closes every connection and removes the socket files.
    /// With etcd, this machine's heartbeat is revoked meanwhile, so other
    /// machines see it down at once and send it nothing new.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let etcd = self.etcd.take();
        let servers = &mut self.servers;
        let leave = async {
            if let Some(etcd) = etcd {
                etcd.shutdown().await;
            }
        };
        let drain = async {
            while let Some(done) = servers.join_next().await {
                done.context("a listener task failed")?;
            }
            anyhow::Ok(())
        };
        let ((), drained) = tokio::join!(leave, drain);
        drained?;
        self.ops.take();
        self.director.close();
        remove_socket_files(&self.socket_files);
        Ok(())
    }
}

/// Who may call what, from the reloadable settings.
fn policy(live: &LiveSettings, tls: bool) -> Policy {
    Policy {
        tls,
        unix_roles: live.unix_roles.clone().into(),
        rules: live.authz.clone(),
        fan_out_methods: live.fan_out_methods.clone(),
    }
}

/// A Unix socket file this daemon created, identified by device and inode so
/// that a file another daemon has since put at the same path (a successor
/// started while this one drained its calls) is left alone.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            id: file_id(path),
        }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// Removes the socket files that are still the ones this daemon created.
fn remove_socket_files(files: &[SocketFile]) {
    for file in files {
        match file_id(&file.path) {
            Some(id) if Some(id) == file.id => {
                let _ = std::fs::remove_file(&file.path);
            }
            Some(_) => tracing::info!(
                path = %file.path.display(),
                "socket file replaced by another server; left in place"
            ),
            None => {}
        }
    }
}
