//! Routing: from a call's `machines` / `machine` metadata to the backends that
//! serve it (the Go reference's `Director`).
//!
//! | request metadata | route |
//! |---|---|
//! | no `machines` / `machine` | one-to-one → local backend |
//! | `proxy-authority` present (forwarded once already) | one-to-one → local backend (loop prevention) |
//! | `machines: A` | one-to-one → A (local backend if A is this machine); one-to-many with `always_fan_out` |
//! | `machines: A, B, …` (repeated entries and/or comma-separated) | one-to-many → each, in the given order, duplicates collapsed |
//! | `machines: *` (registry) | one-to-many → every machine |
//! | `machine: A` | one-to-one → A, no metadata injected |
//! | an empty value, a non-UTF-8 value, a value naming no machine, several `machine` values, both keys | `INVALID_ARGUMENT` naming the culprit |
//!
//! Without a registry a machine is named by its IPv6 address; with one, by
//! name, ID, address or `*`, and only registered machines (plus this machine)
//! are reachable. Remote backends are cached per socket address so that every
//! call to a machine shares one connection.
//!
//! Cached remotes are *forgotten*, not closed, by a flush or a registry reload:
//! calls already routed to them (even those that have not connected yet) keep
//! working on the old connection, which closes once its last call ends, while
//! new calls get a fresh backend and dial afresh. Only [`Director::close`]
//! closes connections outright.

use std::collections::HashMap;
use std::net::SocketAddrV6;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures_util::future::BoxFuture;
use http::HeaderMap;
use switchyard_engine::{Backend, ChannelConfig, Mode, Route};
use tonic::Status;

use crate::addr::MachineAddr;
use crate::error::DirectorError;
use crate::local::LocalBackend;
use crate::registry::{self, Machine, Registry};
use crate::remote::{PROXY_AUTHORITY, RemoteBackend};
use crate::responder::MachineInfo;

/// The port every machine's Switchyard listens on for other machines, unless
/// configured otherwise (the reference's port).
pub const DEFAULT_REMOTE_PORT: u16 = 51000;

/// Metadata key for fan-out: one or more machines.
const MACHINES: &str = "machines";
/// Metadata key for an explicit single target.
const MACHINE: &str = "machine";

/// Optional settings of a [`Director`].
#[derive(Debug, Clone)]
pub struct DirectorOptions {
    /// Connection settings of remote machines (default: 10 s connect bound,
    /// backoff capped at 15 s).
    pub remote_channel: ChannelConfig,
    /// Connection settings of the local socket (default:
    /// [`LocalBackend::default_config`]).
    pub local_channel: ChannelConfig,
    /// The machine registry; `None` means machines are named by address only.
    pub registry: Option<Registry>,
    /// Route `machines` one-to-many even for a single target, so clients get
    /// the same reply shape (with metadata) for 1 or N machines.
    pub always_fan_out: bool,
    /// This machine's address, when already known.
    pub local_address: Option<MachineAddr>,
}

impl Default for DirectorOptions {
    fn default() -> Self {
        Self {
            remote_channel: ChannelConfig::default(),
            local_channel: LocalBackend::default_config(),
            registry: None,
            always_fan_out: false,
            local_address: None,
        }
    }
}

/// Routes calls to machines from their metadata; implements the engine's
/// [`Director`](switchyard_engine::Director). All methods are safe to call
/// while serving.
#[derive(Debug)]
pub struct Director {
    local: Arc<LocalBackend>,
    remote_port: u16,
    remote_channel: ChannelConfig,
    always_fan_out: bool,
    /// Lock order: `state`, then `remotes`.
    state: RwLock<State>,
    remotes: Mutex<HashMap<SocketAddrV6, Arc<RemoteBackend>>>,
}

#[derive(Debug, Default)]
struct State {
    local_addr: Option<MachineAddr>,
    registry: Option<Arc<Registry>>,
    closed: bool,
}

/// One resolved target of a call.
#[derive(Debug, PartialEq)]
enum Target {
    Local,
    Remote(SocketAddrV6, MachineInfo),
}

impl Target {
    fn key(&self) -> Option<SocketAddrV6> {
        match self {
            Self::Local => None,
            Self::Remote(socket, _) => Some(*socket),
        }
    }
}

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

impl Director {
    /// A director for the machine whose gRPC server listens on
    /// `local_socket_path`, reaching other machines on `remote_port`.
    pub fn new(local_socket_path: impl Into<PathBuf>, remote_port: u16) -> Self {
        Self::with_options(local_socket_path, remote_port, DirectorOptions::default())
    }

    /// A director with explicit [`DirectorOptions`].
    pub fn with_options(
        local_socket_path: impl Into<PathBuf>,
        remote_port: u16,
        options: DirectorOptions,
    ) -> Self {
        let director = Self {
            local: Arc::new(LocalBackend::with_config(
                local_socket_path,
                MachineInfo::default(),
                options.local_channel,
            )),
            remote_port,
            remote_channel: options.remote_channel,
            always_fan_out: options.always_fan_out,
            state: RwLock::new(State {
                local_addr: options.local_address,
                registry: options.registry.map(Arc::new),
                closed: false,
            }),
            remotes: Mutex::new(HashMap::new()),
        };
        director
            .local
            .set_info(director.local_info(&director.state()));
        director
    }

    /// The backend of this machine's own gRPC server.
    pub fn local_backend(&self) -> &Arc<LocalBackend> {
        &self.local
    }

    /// The port other machines' Switchyards listen on.
    pub fn remote_port(&self) -> u16 {
        self.remote_port
    }

    /// This machine's address, if known.
    pub fn local_address(&self) -> Option<MachineAddr> {
        self.state().local_addr
    }

    /// The machine registry, if any.
    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.state().registry.clone()
    }

    /// The machines with a cached remote backend.
    pub fn cached_remotes(&self) -> Vec<SocketAddrV6> {
        let mut sockets: Vec<_> = self.remotes().keys().copied().collect();
        sockets.sort();
        sockets
    }

    /// Sets which address means "this machine" (and what local replies carry
    /// in fan-out). An empty `addr` makes it unknown. Accepts `fd00::1` or
    /// `[fd00::1]:51001`; anything else is an error naming the value.
    pub fn update_local_address(&self, addr: &str) -> Result<(), DirectorError> {
        let addr = match addr.trim() {
            "" => None,
            addr => Some(addr.parse::<MachineAddr>()?),
        };
        self.set_local_address(addr);
        Ok(())
    }

    /// Sets which address means "this machine"; `None` makes it unknown.
    pub fn set_local_address(&self, addr: Option<MachineAddr>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.local_addr = addr;
        self.local.set_info(self.local_info(&state));
        self.prune(&state);
        tracing::info!(local_address = ?addr.map(|a| a.to_string()), "local address updated");
    }

    /// Replaces the machine registry (e.g. on config reload). Cached remote
    /// backends of machines that are gone or changed are forgotten; calls
    /// already running on them finish.
    pub fn set_registry(&self, registry: Option<Registry>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.registry = registry.map(Arc::new);
        self.local.set_info(self.local_info(&state));
        self.prune(&state);
    }

    /// Forgets every cached remote backend: new calls dial afresh, calls
    /// already running finish on their connection, which then closes.
    pub fn flush_remote_backends(&self) {
        let flushed = std::mem::take(&mut *self.remotes());
        tracing::debug!(count = flushed.len(), "remote backends flushed");
    }

    /// Closes every connection, local and remote. Running calls finish; new
    /// calls fail with `UNAVAILABLE`.
    pub fn close(&self) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.closed = true;
        for (_, remote) in self.remotes().drain() {
            remote.close();
        }
        self.local.close();
    }

    /// Routes a call given its request metadata (what
    /// [`switchyard_engine::Director::route`] does, synchronously).
    pub fn route_metadata(&self, headers: &HeaderMap) -> Result<Route, Status> {
        let state = self.state();
        if state.closed {
            return Err(Status::unavailable("the machine director is closed"));
        }
        let local = || Ok((Mode::OneToOne, vec![self.local.clone() as Arc<dyn Backend>]));
        if headers.contains_key(PROXY_AUTHORITY) {
            return local();
        }
        let (key, values) = match (
            headers.contains_key(MACHINES),
            headers.contains_key(MACHINE),
        ) {
            (false, false) => return local(),
            (true, true) => {
                return Err(invalid(format!(
                    "both {MACHINE:?} and {MACHINES:?} metadata are set: use {MACHINE:?} for exactly one machine, {MACHINES:?} for fan-out"
                )));
            }
            (true, false) => (MACHINES, metadata_values(headers, MACHINES)?),
            (false, true) => (MACHINE, metadata_values(headers, MACHINE)?),
        };
        if key == MACHINE && values.len() != 1 {
            return Err(invalid(format!(
                "{MACHINE:?} metadata must name exactly one machine, got {}: {}; use {MACHINES:?} for fan-out",
                values.len(),
                registry::quoted(&values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>())
            )));
        }
        let (targets, wildcard) = self.resolve(&state, key, &values)?;
        if targets.is_empty() {
            return Err(invalid(format!(
                "{key:?} metadata \"*\" matches no machine: the machine registry is empty"
            )));
        }
        if key == MACHINE && targets.len() > 1 {
            return Err(invalid(format!(
                "{MACHINE:?} metadata must name exactly one machine, but {:?} matches {}; use {MACHINES:?} for fan-out",
                values[0],
                targets.len()
            )));
        }
        let mode = if key == MACHINES && (targets.len() > 1 || wildcard || self.always_fan_out) {
            Mode::OneToMany
        } else {
            Mode::OneToOne
        };
        let mut remotes = self.remotes();
        let backends = targets
            .into_iter()
            .map(|target| match target {
                Target::Local => self.local.clone() as Arc<dyn Backend>,
                Target::Remote(socket, info) => self.remote(&mut remotes, socket, info),
            })
            .collect();
        Ok((mode, backends))
    }

    /// The targets `values` name, duplicates collapsed in first-mention order,
    /// and whether `*` was used.
    fn resolve(
        &self,
        state: &State,
        key: &str,
        values: &[&str],
    ) -> Result<(Vec<Target>, bool), Status> {
        let local_socket = state.local_addr.map(|a| a.socket_addr(self.remote_port));
        let mut targets: Vec<Target> = Vec::new();
        let mut wildcard = false;
        let mut push = |target: Target| {
            if !targets.iter().any(|t| t.key() == target.key()) {
                targets.push(target);
            }
        };
        match &state.registry {
            Some(registry) => {
                let mut unknown: Vec<String> = Vec::new();
                for &value in values {
                    if value == "*" {
                        wildcard = true;
                        for machine in registry.machines() {
                            push(self.machine_target(machine, local_socket));
                        }
                        continue;
                    }
                    if let Some(machine) = registry.by_identifier(value) {
                        push(self.machine_target(machine, local_socket));
                        continue;
                    }
                    let socket = value
                        .parse::<MachineAddr>()
                        .ok()
                        .map(|a| a.socket_addr(self.remote_port));
                    match socket {
                        Some(socket) => match self.registered(registry, socket) {
                            Some(machine) => push(self.machine_target(machine, local_socket)),
                            None if Some(socket) == local_socket => push(Target::Local),
                            None => unknown.push(value.to_owned()),
                        },
                        None => unknown.push(value.to_owned()),
                    }
                }
                if !unknown.is_empty() {
                    let mut listed: Vec<String> = Vec::with_capacity(unknown.len());
                    for value in unknown {
                        if !listed.contains(&value) {
                            listed.push(value);
                        }
                    }
                    return Err(invalid(format!(
                        "{key:?} metadata names unknown machines: {}",
                        registry::quoted(&listed)
                    )));
                }
            }
            None => {
                let mut errors: Vec<String> = Vec::new();
                for &value in values {
                    match value.parse::<MachineAddr>() {
                        Ok(addr) => {
                            let socket = addr.socket_addr(self.remote_port);
                            if Some(socket) == local_socket {
                                push(Target::Local);
                            } else {
                                let label = MachineAddr::label(socket, self.remote_port);
                                push(Target::Remote(socket, MachineInfo::from_addr(label)));
                            }
                        }
                        Err(err) => errors.push(err.to_string()),
                    }
                }
                if !errors.is_empty() {
                    return Err(invalid(format!(
                        "{key:?} metadata: {} (machine names, IDs and \"*\" need a machine registry)",
                        errors.join("; ")
                    )));
                }
            }
        }
        Ok((targets, wildcard))
    }

    /// The registered machine whose Switchyard listens at `socket`.
    fn registered<'r>(&self, registry: &'r Registry, socket: SocketAddrV6) -> Option<&'r Machine> {
        registry
            .machines()
            .iter()
            .find(|m| m.addr.socket_addr(self.remote_port) == socket)
    }

    fn machine_info(&self, machine: &Machine) -> MachineInfo {
        MachineInfo {
            addr: MachineAddr::label(machine.addr.socket_addr(self.remote_port), self.remote_port),
            id: machine.id.clone(),
            name: machine.name.clone(),
        }
    }

    fn machine_target(&self, machine: &Machine, local_socket: Option<SocketAddrV6>) -> Target {
        let socket = machine.addr.socket_addr(self.remote_port);
        if Some(socket) == local_socket {
            Target::Local
        } else {
            Target::Remote(socket, self.machine_info(machine))
        }
    }

    /// What the local backend's replies carry.
    fn local_info(&self, state: &State) -> MachineInfo {
        let Some(addr) = state.local_addr else {
            return MachineInfo::default();
        };
        let socket = addr.socket_addr(self.remote_port);
        match state
            .registry
            .as_deref()
            .and_then(|r| self.registered(r, socket))
        {
            Some(machine) => self.machine_info(machine),
            None => MachineInfo::from_addr(MachineAddr::label(socket, self.remote_port)),
        }
    }

    /// The info a remote backend for `socket` must carry now, or `None` when
    /// `socket` is not reachable as a remote machine any more.
    fn expected_remote_info(&self, state: &State, socket: SocketAddrV6) -> Option<MachineInfo> {
        if state.local_addr.map(|a| a.socket_addr(self.remote_port)) == Some(socket) {
            return None;
        }
        match state.registry.as_deref() {
            Some(registry) => self
                .registered(registry, socket)
                .map(|m| self.machine_info(m)),
            None => Some(MachineInfo::from_addr(MachineAddr::label(
                socket,
                self.remote_port,
            ))),
        }
    }

    /// Forgets cached remotes that no longer match the state.
    fn prune(&self, state: &State) {
        let mut remotes = self.remotes();
        let before = remotes.len();
        remotes.retain(|&socket, backend| {
            self.expected_remote_info(state, socket)
                .is_some_and(|info| *backend.info() == info)
        });
        if remotes.len() != before {
            tracing::debug!(
                pruned = before - remotes.len(),
                "stale remote backends forgotten"
            );
        }
    }

    /// The cached backend for `socket`, created (or replaced, when its info
    /// changed) as needed.
    fn remote(
        &self,
        remotes: &mut HashMap<SocketAddrV6, Arc<RemoteBackend>>,
        socket: SocketAddrV6,
        info: MachineInfo,
    ) -> Arc<dyn Backend> {
        if let Some(backend) = remotes.get(&socket)
            && *backend.info() == info
        {
            return backend.clone();
        }
        let backend = Arc::new(RemoteBackend::from_socket(
            socket,
            info,
            self.remote_channel.clone(),
        ));
        remotes.insert(socket, backend.clone());
        backend
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn remotes(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddrV6, Arc<RemoteBackend>>> {
        self.remotes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every value of `key`: repeated entries, each split on `,` and trimmed.
fn metadata_values<'h>(headers: &'h HeaderMap, key: &str) -> Result<Vec<&'h str>, Status> {
    let mut values = Vec::new();
    for raw in headers.get_all(key) {
        let text = std::str::from_utf8(raw.as_bytes())
            .map_err(|_| invalid(format!("{key:?} metadata is not valid UTF-8")))?;
        for value in text.split(',').map(str::trim) {
            if value.is_empty() {
                return Err(invalid(format!(
                    "{key:?} metadata has an empty value (in {text:?})"
                )));
            }
            values.push(value);
        }
    }
    Ok(values)
}

impl switchyard_engine::Director for Director {
    fn route<'a>(
        &'a self,
        _method: &'a str,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        Box::pin(std::future::ready(self.route_metadata(&request.headers)))
    }
}

#[cfg(test)]
mod tests;
