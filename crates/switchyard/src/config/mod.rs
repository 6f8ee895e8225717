//! Daemon settings, declared once.
//!
//! [`Options`] is what a user can set: every field is a flag of
//! `switchyard serve` and a key of the TOML file, parsed by the same
//! validating types ([`value`]), so a bad value is refused the same way from
//! either source and always named. [`Settings`] is what the daemon runs
//! with: the file's options overlaid by the flags', over the defaults that
//! `Settings` declares. Settings that a reload (SIGHUP) applies are grouped in
//! [`LiveSettings`]; a change to any [`StartSettings`] needs a restart, which
//! a reload reports by name.
//!
//! Adding a setting: a field of [`Options`] (its flag, key and help text), and
//! one of [`StartSettings`] or [`LiveSettings`] (its type and default).

mod defaults;
mod value;

use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};
use smart_default::SmartDefault;
use switchyard_director::live::EtcdConfig;
use switchyard_director::{
    AuthzRule, DEFAULT_REMOTE_PORT, Machine, MachineAddr, MethodPattern, Registry,
};
use switchyard_engine::Address;
use switchyard_engine::budget::{DEFAULT_MEMORY_BUDGET, MemoryBudget};
use switchyard_engine::config::DEFAULT_MAX_MESSAGE_SIZE;
use switchyard_engine::server::ConnectionLimits;
use switchyard_engine::tls::TlsPaths;

pub use defaults::{defaults, with_defaults};
pub use value::{
    Count, EtcdEndpoint, EtcdPrefix, Identifier, Listen, LogFormat, MessageSize, MethodName, Secs,
    SocketMode,
};

/// Runtime threads unless configured: one thread avoids cross-thread wakeups
/// and work stealing, which cost more than they give on the small machines
/// a management proxy shares with its workload (see docs/PERFORMANCE.md).
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// Most runtime threads: a bound that catches typos such as `1000`.
pub const MAX_WORKER_THREADS: usize = 256;

/// Bound of counts that have no natural bound (targets, connections).
pub const MAX_COUNT: usize = 1 << 20;

/// Bound of byte budgets (1 TiB), which catches typos.
pub const MAX_BYTES: usize = 1 << 40;

/// What a user can set, from flags of `switchyard serve` or keys of the
/// configuration file; unset options take their [`Settings`] default.
#[derive(Debug, Clone, Default, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// TOML configuration file: the settings below as keys (flags override
    /// them), plus the machine registry (`[[machines]]`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where to listen: `unix:/path`, `[ipv6]:port` or `ipv4:port`; repeatable.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Option<Vec<Listen>>,
    /// Unix socket of this machine's own gRPC server.
    #[arg(long, value_name = "PATH")]
    pub local_socket: Option<PathBuf>,
    /// Port of the other machines' Switchyards.
    #[arg(long, value_name = "PORT")]
    pub remote_port: Option<NonZeroU16>,
    /// This machine's IPv6 address (calls for it are served locally).
    #[arg(long, value_name = "IPV6")]
    pub local_address: Option<MachineAddr>,
    /// Permissions of Unix listener sockets, octal.
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<SocketMode>,
    /// Largest gRPC message accepted, in bytes, each way.
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<MessageSize>,
    /// Bytes fan-out calls may hold for their callers, all together (replies a caller has not
    /// read yet).
    #[arg(long, value_name = "BYTES")]
    pub memory_budget: Option<Count<MAX_BYTES>>,
    /// Of those, what one caller may hold (a TLS certificate, an IP address, a Unix user).
    #[arg(long, value_name = "BYTES")]
    pub memory_budget_per_caller: Option<Count<MAX_BYTES>>,
    /// Largest request metadata forwarded to a backend or another machine, in bytes
    /// (names, values and 32 per entry, as HTTP/2 counts it).
    #[arg(long, value_name = "BYTES")]
    pub max_upstream_metadata: Option<Count<MAX_COUNT>>,
    /// A method whose replies stream (`/pkg.Service/Method`); repeatable.
    #[arg(long = "streamed-method", value_name = "METHOD")]
    pub streamed_methods: Option<Vec<MethodName>>,
    /// Answer `machines` one-to-many even for a single machine.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub always_fan_out: Option<bool>,
    /// Do not learn the local server's methods through its gRPC reflection
    /// (which stream; which have replies that cannot fan out).
    #[arg(
        long = "no-detect-streamed-methods",
        num_args = 0,
        default_missing_value = "false"
    )]
    pub detect_streamed_methods: Option<bool>,
    /// Bound of one connection attempt to another machine, in seconds.
    #[arg(long, value_name = "SECS")]
    pub connect_timeout_secs: Option<Secs>,
    /// After SIGTERM, how long running calls may take to finish, in seconds.
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace_secs: Option<Secs>,
    /// Threads that run calls.
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<Count<MAX_WORKER_THREADS>>,
    /// A network (CIDR) that machines may be dialled in; repeatable. When
    /// set, only addresses inside these are dialled, whether a caller names
    /// them or the registry lists them (other entries are skipped);
    /// otherwise any mesh address (not loopback, link-local, multicast, or
    /// one that embeds IPv4: mapped, compatible, NAT64, 6to4, Teredo).
    #[arg(long = "allowed-network", value_name = "CIDR")]
    pub allowed_networks: Option<Vec<Ipv6Net>>,
    /// Most machines one call may name.
    #[arg(long, value_name = "N")]
    pub max_targets: Option<Count<MAX_COUNT>>,
    /// Most connections open at once.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<Count<MAX_COUNT>>,
    /// Most connections one peer may hold: one IP address, and with TLS one client
    /// certificate.
    #[arg(long, value_name = "N")]
    pub max_connections_per_peer: Option<Count<MAX_COUNT>>,
    /// Connection slots only Unix-listener callers may take (the machine's operators).
    #[arg(long, value_name = "N")]
    pub unix_reserved_connections: Option<Count<MAX_COUNT>>,
    /// How long a connection may stay open without a call running, in seconds.
    #[arg(long, value_name = "SECS")]
    pub idle_timeout_secs: Option<Secs>,
    /// How long a new connection may take to finish its handshake (TLS, the HTTP/2 preface and
    /// SETTINGS), in seconds.
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout_secs: Option<Secs>,
    /// How long each machine may take to answer a fan-out of a method with one reply, when the
    /// caller sets no `switchyard-machine-timeout`, in seconds; 0 turns it off.
    #[arg(long, value_name = "SECS")]
    pub machine_timeout_secs: Option<u64>,
    /// How long a machine in a streaming fan-out may leave the request unread before it is
    /// dropped from the call, in seconds.
    #[arg(long, value_name = "SECS")]
    pub request_stall_secs: Option<Secs>,
    /// Group owning the Unix listener sockets (a name or a number), so that its members may
    /// connect.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// Where to serve Prometheus metrics (`/metrics`) and health (`/healthz`, `/readyz`) over
    /// plain HTTP: `[ip]:port`, `ip:port` or `unix:/path`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<Listen>,
    /// One log line per call at `info` (otherwise at `debug`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub access_log: Option<bool>,
    /// Log line format.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Mutual TLS on TCP (the `[tls]` table).
    #[command(flatten)]
    pub tls: Option<TlsOptions>,
    /// A role of callers on the Unix socket; repeatable.
    #[arg(long = "unix-role", value_name = "ROLE")]
    pub unix_roles: Option<Vec<String>>,
    /// A method (pattern) that may fan out; repeatable. When set, a fan-out
    /// of any other method is refused before anything is dialled.
    #[arg(long = "fan-out-method", value_name = "PATTERN")]
    pub fan_out_methods: Option<Vec<MethodPattern>>,
    /// Who may call what (file only): `[[authz]]` tables with `roles` and
    /// `methods`.
    #[arg(skip)]
    pub authz: Option<Vec<AuthzRule>>,
    /// The machine registry (file only): `[[machines]]` tables with `id`,
    /// `name` and `addr`.
    #[arg(skip)]
    pub machines: Option<Registry>,
    /// This machine's ID in the machine registry (what it registers with
    /// `[registry.etcd] register`).
    #[arg(long, value_name = "ID")]
    pub machine_id: Option<Identifier>,
    /// This machine's name in the machine registry.
    #[arg(long, value_name = "NAME")]
    pub machine_name: Option<Identifier>,
    /// A live machine registry (the `[registry]` table).
    #[command(flatten)]
    #[serde(default, skip_serializing_if = "RegistryOptions::is_empty")]
    pub registry: RegistryOptions,
}

/// The `[registry]` table: where a live machine registry is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryOptions {
    /// The registry in etcd (`[registry.etcd]`).
    #[command(flatten)]
    pub etcd: Option<EtcdOptions>,
}

impl RegistryOptions {
    fn is_empty(&self) -> bool {
        self.etcd.is_none()
    }
}

/// The `[registry.etcd]` table: the machine registry kept in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdOptions {
    /// An etcd endpoint holding the machine registry (`http://[::1]:2379`);
    /// repeatable.
    #[arg(
        id = "registry.etcd.endpoints",
        long = "etcd-endpoint",
        value_name = "URL"
    )]
    pub endpoints: Option<Vec<EtcdEndpoint>>,
    /// Key prefix of the registry in etcd.
    #[arg(
        id = "registry.etcd.prefix",
        long = "etcd-prefix",
        value_name = "PREFIX"
    )]
    pub prefix: Option<EtcdPrefix>,
    /// Put this machine's entry (machine_id, machine_name, local_address)
    /// and keep its liveness key alive.
    #[arg(id = "registry.etcd.register", long = "etcd-register", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub register: Option<bool>,
    /// Lease TTL of the liveness key: how soon a dead machine shows as down, in seconds.
    #[arg(
        id = "registry.etcd.heartbeat_ttl_secs",
        long = "etcd-heartbeat-ttl-secs",
        value_name = "SECS"
    )]
    pub heartbeat_ttl_secs: Option<Secs>,
    /// Treat members without a liveness key as down; turn off when members are written by hand
    /// and no machine registers.
    #[arg(
        id = "registry.etcd.liveness",
        long = "etcd-liveness",
        value_name = "BOOL"
    )]
    pub liveness: Option<bool>,
}

/// The `[tls]` table: this machine's certificate, its key, the cluster CA.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// This machine's certificate chain, PEM (`[tls] cert`).
    #[arg(long = "tls-cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Its private key, PEM (`[tls] key`).
    #[arg(long = "tls-key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The cluster CA bundle, PEM (`[tls] ca`).
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl From<TlsPaths> for TlsOptions {
    fn from(paths: TlsPaths) -> Self {
        Self {
            cert: Some(paths.cert),
            key: Some(paths.key),
            ca: Some(paths.ca),
        }
    }
}

/// What the daemon runs with.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Settings {
    /// Settings applied when the daemon starts.
    #[serde(flatten)]
    pub start: StartSettings,
    /// Settings a reload (SIGHUP) applies again.
    #[serde(flatten)]
    pub live: LiveSettings,
}

/// Settings applied when the daemon starts; changing one needs a restart.
#[derive(Debug, Clone, PartialEq, SmartDefault, Deserialize, Serialize)]
#[serde(default)]
pub struct StartSettings {
    /// Listener addresses; `None` means the default (see [`Settings::listeners`]).
    pub listen: Option<Vec<Listen>>,
    /// This machine's gRPC server (required).
    pub local_socket: PathBuf,
    /// Port of other machines' Switchyards.
    #[default(NonZeroU16::new(DEFAULT_REMOTE_PORT).expect("not zero"))]
    pub remote_port: NonZeroU16,
    /// Unix socket permissions.
    #[default(SocketMode(0o660))]
    pub socket_mode: SocketMode,
    /// Message size limit, each way.
    #[default(MessageSize(DEFAULT_MAX_MESSAGE_SIZE))]
    pub max_message_size: MessageSize,
    /// Fan-out memory, in all; `None` derives it ([`Settings::memory_budget`]).
    pub memory_budget: Option<Count<MAX_BYTES>>,
    /// Fan-out memory, per caller; `None`: half the budget.
    pub memory_budget_per_caller: Option<Count<MAX_BYTES>>,
    /// Request metadata forwarded at most.
    #[default(Count(switchyard_engine::config::DEFAULT_MAX_UPSTREAM_METADATA))]
    pub max_upstream_metadata: Count<MAX_COUNT>,
    /// Methods whose replies stream, in addition to those discovered.
    pub streamed_methods: Vec<MethodName>,
    /// `machines` always fans out.
    pub always_fan_out: bool,
    /// Learn the local server's methods through its gRPC reflection.
    #[default(true)]
    pub detect_streamed_methods: bool,
    /// Connect bound for other machines.
    #[default(Secs(std::time::Duration::from_secs(10)))]
    pub connect_timeout_secs: Secs,
    /// Shutdown grace period.
    #[default(Secs(std::time::Duration::from_secs(10)))]
    pub shutdown_grace_secs: Secs,
    /// Runtime threads.
    #[default(Count(DEFAULT_WORKER_THREADS))]
    pub worker_threads: Count<MAX_WORKER_THREADS>,
    /// Most machines one call may name.
    #[default(Count(switchyard_director::director::DEFAULT_MAX_TARGETS))]
    pub max_targets: Count<MAX_COUNT>,
    /// Most connections open at once; `None` derives it from the open-file
    /// limit ([`Settings::max_connections`]).
    pub max_connections: Option<Count<MAX_COUNT>>,
    /// Most connections per peer.
    #[default(Count(switchyard_engine::admission::DEFAULT_PER_PEER))]
    pub max_connections_per_peer: Count<MAX_COUNT>,
    /// Slots kept for Unix listeners; `None` derives it from the cap.
    pub unix_reserved_connections: Option<Count<MAX_COUNT>>,
    /// Idle bound of connections.
    #[default(Secs(switchyard_engine::admission::DEFAULT_IDLE_TIMEOUT))]
    pub idle_timeout_secs: Secs,
    /// Handshake bound of new connections.
    #[default(Secs(std::time::Duration::from_secs(10)))]
    pub handshake_timeout_secs: Secs,
    /// Default bound of each machine's answer in a fan-out (0: none).
    #[default(switchyard_director::DEFAULT_MACHINE_TIMEOUT.as_secs())]
    pub machine_timeout_secs: u64,
    /// How long a fan-out machine may leave the request unread.
    #[default(Secs(std::time::Duration::from_secs(5)))]
    pub request_stall_secs: Secs,
    /// Group of the Unix listener sockets.
    pub socket_group: Option<String>,
    /// The TLS files; `None` serves plaintext. Their contents are read again
    /// on reload (certificate rotation).
    pub tls: Option<TlsOptions>,
    /// The metrics and health listener, if any.
    pub metrics_listen: Option<Listen>,
    /// Log line format.
    pub log_format: LogFormat,
    /// This machine's registry ID, as registered.
    pub machine_id: Option<Identifier>,
    /// This machine's registry name, as registered.
    pub machine_name: Option<Identifier>,
    /// A live machine registry.
    pub registry: RegistrySettings,
}

/// Where a live machine registry is kept.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct RegistrySettings {
    /// The registry in etcd, if any.
    pub etcd: Option<EtcdSettings>,
}

/// The machine registry in etcd.
#[derive(Debug, Clone, PartialEq, SmartDefault, Deserialize, Serialize)]
#[serde(default)]
pub struct EtcdSettings {
    /// etcd client URLs.
    pub endpoints: Vec<EtcdEndpoint>,
    /// Key prefix of the registry.
    #[default(EtcdPrefix(switchyard_director::live::DEFAULT_PREFIX.to_owned()))]
    pub prefix: EtcdPrefix,
    /// Register this machine and keep its liveness key.
    pub register: bool,
    /// Lease TTL of the liveness key.
    #[default(Secs(switchyard_director::live::DEFAULT_HEARTBEAT_TTL))]
    pub heartbeat_ttl_secs: Secs,
    /// Members without a liveness key are down.
    #[default(true)]
    pub liveness: bool,
}

/// Settings a reload (SIGHUP) applies without dropping running calls.
#[derive(Debug, Clone, PartialEq, SmartDefault, Deserialize)]
#[serde(default)]
pub struct LiveSettings {
    /// This machine's address.
    pub local_address: Option<MachineAddr>,
    /// The machine registry, if any.
    pub machines: Option<Registry>,
    /// The networks machines may be dialled in: caller-written addresses and
    /// registry entries alike.
    pub allowed_networks: Option<Vec<Ipv6Net>>,
    /// Roles of callers on the Unix socket.
    #[default(default_unix_roles())]
    pub unix_roles: Vec<String>,
    /// Methods that may fan out; `None` allows every method.
    pub fan_out_methods: Option<Vec<MethodPattern>>,
    /// Who may call what; empty allows every caller everything.
    pub authz: Vec<AuthzRule>,
    /// Access log lines at `info`.
    pub access_log: bool,
}

fn default_unix_roles() -> Vec<String> {
    vec!["admin".to_owned()]
}

impl Settings {
    /// Reads the file named by `options` (if any) and applies the flags.
    pub fn load(options: &Options) -> anyhow::Result<Self> {
        let file = match &options.config {
            Some(path) => read_file(path)?,
            None => Options::default(),
        };
        Self::merge(options, &file)
    }

    /// Flags over file over defaults. Both sources were checked in full while
    /// parsed, so a bad value in the file is reported even where a flag
    /// overrides it.
    fn merge(flags: &Options, file: &Options) -> anyhow::Result<Self> {
        let table = |options: &Options| {
            toml::Table::try_from(options).context("cannot represent the settings")
        };
        let mut merged = table(file)?;
        overlay(&mut merged, table(flags)?);
        let settings: Self = toml::Value::Table(merged)
            .try_into()
            .context("cannot apply the settings")?;
        if settings.start.local_socket.as_os_str().is_empty() {
            bail!(
                "local_socket: not set (--local-socket PATH, or local_socket in the config file)"
            );
        }
        if settings.start.listen.as_ref().is_some_and(Vec::is_empty) {
            bail!("listen: the list is empty");
        }
        if let Some(tls) = &settings.start.tls {
            let missing: Vec<&str> = [("cert", &tls.cert), ("key", &tls.key), ("ca", &tls.ca)]
                .into_iter()
                .filter(|(_, path)| path.is_none())
                .map(|(name, _)| name)
                .collect();
            if !missing.is_empty() {
                bail!(
                    "tls: cert, key and ca are all needed; missing: {}",
                    missing.join(", ")
                );
            }
        }
        settings.check_registry()?;
        if settings.listeners().is_empty() {
            bail!(
                "listen: nothing to listen on: give --listen, or --local-address for the \
                 default listener [local_address]:remote_port"
            );
        }
        Ok(settings)
    }

    /// The addresses to listen on: those configured, or by default this
    /// machine's own address on the remote port (never every interface).
    pub fn listeners(&self) -> Vec<Address> {
        match (&self.start.listen, self.live.local_address) {
            (Some(listen), _) => listen.iter().map(|l| l.0.clone()).collect(),
            (None, Some(local)) => vec![Address::Tcp(
                local.socket_addr(self.start.remote_port.get()).into(),
            )],
            (None, None) => Vec::new(),
        }
    }

    /// A file registry and etcd are not used together, and a machine that
    /// registers itself knows what to register.
    fn check_registry(&self) -> anyhow::Result<()> {
        let Some(etcd) = &self.start.registry.etcd else {
            return Ok(());
        };
        if self.live.machines.is_some() {
            bail!(
                "machines, registry.etcd: a file registry ([[machines]]) and a registry in \
                 etcd ([registry.etcd]) cannot be used together; keep one"
            );
        }
        if etcd.endpoints.is_empty() {
            bail!(
                "registry.etcd.endpoints: no etcd endpoint (--etcd-endpoint URL, or endpoints \
                 in [registry.etcd])"
            );
        }
        if Duration::from(etcd.heartbeat_ttl_secs) > switchyard_director::live::MAX_HEARTBEAT_TTL {
            bail!("registry.etcd.heartbeat_ttl_secs: at most 3600");
        }
        if etcd.register {
            let missing: Vec<&str> = [
                ("machine_id", self.start.machine_id.is_none()),
                ("machine_name", self.start.machine_name.is_none()),
                ("local_address", self.live.local_address.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, missing)| missing.then_some(name))
            .collect();
            if !missing.is_empty() {
                bail!(
                    "registry.etcd.register: this machine registers itself with machine_id, \
                     machine_name and local_address; missing: {}",
                    missing.join(", ")
                );
            }
            if let Some(addr) = self.live.local_address
                && let Err(why) = switchyard_director::check_dialable(
                    addr.ip,
                    self.live.allowed_networks.as_deref(),
                )
            {
                bail!(
                    "registry.etcd.register: local_address {addr} would be registered, but \
                     registry entries there are skipped: {why}"
                );
            }
        }
        Ok(())
    }

    /// The live registry's configuration, when the registry is in etcd.
    pub fn etcd(&self) -> Option<EtcdConfig> {
        let etcd = self.start.registry.etcd.as_ref()?;
        let register = match (
            etcd.register,
            &self.start.machine_id,
            &self.start.machine_name,
            self.live.local_address,
        ) {
            (true, Some(id), Some(name), Some(addr)) => Some(Machine {
                id: id.0.clone(),
                name: name.0.clone(),
                addr,
            }),
            _ => None,
        };
        Some(EtcdConfig {
            endpoints: etcd.endpoints.iter().map(|e| e.0.clone()).collect(),
            prefix: etcd.prefix.0.clone(),
            register,
            heartbeat_ttl: etcd.heartbeat_ttl_secs.into(),
            allowed_networks: self.live.allowed_networks.clone(),
            ..EtcdConfig::default()
        })
    }

    /// Whether members without a heartbeat are down (with etcd).
    pub fn liveness(&self) -> bool {
        self.start
            .registry
            .etcd
            .as_ref()
            .is_some_and(|etcd| etcd.liveness)
    }

    /// The TLS files, once [`Settings::load`] checked that all three are set.
    pub fn tls_paths(&self) -> Option<TlsPaths> {
        let tls = self.start.tls.as_ref()?;
        Some(TlsPaths {
            cert: tls.cert.clone()?,
            key: tls.key.clone()?,
            ca: tls.ca.clone()?,
        })
    }

    /// The connection bound: configured, or three quarters of the open-file
    /// limit (the rest is for connections to machines, the local server and
    /// files), at least 16.
    pub fn max_connections(&self) -> usize {
        match self.start.max_connections {
            Some(Count(n)) => n,
            None => {
                let files =
                    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
                usize::try_from(files / 4 * 3)
                    .unwrap_or(usize::MAX)
                    .clamp(16, MAX_COUNT)
            }
        }
    }

    /// What fan-out calls may hold for their callers: configured, or a
    /// quarter of the machine's memory (2 GiB when it cannot be read), half
    /// of it per caller.
    pub fn memory_budget(&self) -> MemoryBudget {
        let total = match self.start.memory_budget {
            Some(Count(n)) => n,
            None => physical_memory().map_or(DEFAULT_MEMORY_BUDGET, |bytes| bytes / 4),
        };
        let share = self
            .start
            .memory_budget_per_caller
            .map_or(total / 2, |Count(n)| n);
        MemoryBudget::new(total, share)
    }

    /// The bounds on connections: [`Settings::max_connections`] in all, of
    /// them the configured (or derived) Unix reserve, the per-peer share (at
    /// most what TCP callers may hold) and the idle timeout.
    pub fn connection_limits(&self) -> ConnectionLimits {
        let start = &self.start;
        let derived = ConnectionLimits::new(self.max_connections());
        let unix_reserved = start
            .unix_reserved_connections
            .map_or(derived.unix_reserved, |Count(n)| n.min(derived.max - 1));
        ConnectionLimits {
            unix_reserved,
            per_peer: start
                .max_connections_per_peer
                .0
                .min(derived.max - unix_reserved),
            idle_timeout: start.idle_timeout_secs.into(),
            ..derived
        }
    }

    /// The settings that differ from `running` but only take effect on a
    /// restart: every [`StartSettings`] key whose value changed, sorted. New
    /// `[tls]` paths are applied by a reload; only turning TLS on or off
    /// needs a restart.
    pub fn needing_restart(&self, running: &Settings) -> Vec<String> {
        let keys = |s: &StartSettings| toml::Table::try_from(s).unwrap_or_default();
        let (new, old) = (keys(&self.start), keys(&running.start));
        let reloadable =
            |key: &str| key == "tls" && self.start.tls.is_some() && running.start.tls.is_some();
        let mut changed: Vec<String> = new
            .keys()
            .chain(old.keys())
            .filter(|key| !reloadable(key))
            .filter(|key| new.get(*key) != old.get(*key))
            .cloned()
            .collect();
        changed.sort();
        changed.dedup();
        changed
    }
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), in bytes.
fn physical_memory() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: usize = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Overlays `from` on `into`: tables merge key by key (a flag sets one key
/// of `[tls]` without dropping the file's others), anything else replaces.
fn overlay(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(lower)), toml::Value::Table(upper)) => overlay(lower, upper),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Parses the configuration file; errors name the setting, the line and the
/// column.
pub fn read_file(path: &Path) -> anyhow::Result<Options> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_file(&text).map_err(|e| anyhow!("{e} in config file {}", path.display()))
}

fn parse_file(text: &str) -> Result<Options, String> {
    // "line 3, column 15" of a span.
    let position = |err: &toml::de::Error| {
        err.span().map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}")
        })
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|err| {
        let message = err.message().trim_end();
        match position(&err) {
            Some(at) => format!("{message} ({at})"),
            None => message.to_owned(),
        }
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        // Named by the top-level key, as the same value given as a flag is.
        let path = err.path().to_string();
        let key = path.split(['.', '[']).next().unwrap_or_default();
        let inner = err.inner();
        let message = inner.message().trim_end();
        let mut at: Vec<String> = Vec::new();
        if path != key {
            at.push(path.clone());
        }
        at.extend(position(inner));
        let at = if at.is_empty() {
            String::new()
        } else {
            format!(" ({})", at.join(", "))
        };
        match key {
            "" | "." => format!("{message}{at}"),
            key => format!("{key}: {message}{at}"),
        }
    })
}

#[cfg(test)]
mod tests;
