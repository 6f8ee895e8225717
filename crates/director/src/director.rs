//! Routing: from a call's `machines` / `machine` metadata to the backends that
//! serve it (the Go reference's `Director`).
//!
//! | request metadata | route |
//! |---|---|
//! | no `machines` / `machine` | one-to-one → local backend |
//! | `proxy-authority` present (forwarded once already) | one-to-one → local backend (loop prevention) |
//! | `machines: A` | one-to-one → A (local backend if A is this machine); one-to-many with `always_fan_out` |
//! | `machines: A, B, …` (repeated entries and/or comma-separated) | one-to-many → each, in the given order, duplicates collapsed (still one-to-many) |
//! | `machines: *` (registry) | one-to-many → every machine |
//! | `machine: A` | one-to-one → A, no metadata injected |
//! | an empty value, a non-UTF-8 value, a value naming no machine, several `machine` values, both keys | `INVALID_ARGUMENT` naming the culprit |
//!
//! `switchyard-reply: envelope` with `machines` or `machine` makes it a
//! fan-out answered as a stream of `switchyard.v1.MachineReply` items, for
//! any method (no reply layout, so no reflection is consulted).
//!
//! `switchyard-machine-timeout` (the `grpc-timeout` syntax) bounds each
//! machine's whole answer in a fan-out; without it, fan-outs of methods with
//! one reply get [`DirectorOptions::machine_timeout`], so a machine whose
//! server never answers cannot hold a caller that set no deadline. It is
//! never forwarded.
//!
//! Which machines the values name, and which may be dialled, is the
//! `resolve` module's business; this one turns them into backends. Remote
//! backends are cached per socket address so that every call to a machine
//! shares one connection; the cache is bounded.
//!
//! Cached remotes are *forgotten*, not closed, by a flush or a registry reload:
//! calls already routed to them (even those that have not connected yet) keep
//! working on the old connection, which closes once its last call ends, while
//! new calls get a fresh backend and dial afresh. Only
//! [`MachineDirector::close`] closes connections outright.
//!
//! With a live registry the director also knows which registered machines
//! have a heartbeat ([`MachineDirector::set_liveness`]). A machine without
//! one is still named by `*`, its name, ID or address, but its backend is a
//! [`DownBackend`]: the call, or its fan-out entry, is `UNAVAILABLE` at once
//! and nothing is dialled. Resolution itself ignores liveness, so a caller
//! sees the whole cluster, down machines included, in one reply.
//!
//! A registry is applied through the same address rule as caller-written
//! addresses ([`check_dialable`] with `allowed_networks`): whoever can edit
//! the registry (a file, etcd) must not make this machine dial its own
//! loopback or IPv4 space. An entry the rule refuses is left out whole,
//! logged once, and comes back when `allowed_networks` admits it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV6;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName};
use ipnet::Ipv6Net;
use switchyard_engine::{Backend, ChannelConfig, ChannelState, Director, Mode, ReplyShape, Route};
use tonic::Status;

use crate::addr::{MachineAddr, check_dialable};
use crate::authz::{Caller, Policy};
use crate::catalog::{FIRST_DISCOVERY_WAIT, MethodCatalog, MethodFacts};
use crate::down::{DownBackend, NO_HEARTBEAT};
use crate::local::LocalBackend;
use crate::registry::Registry;
use crate::remote::{PROXY_AUTHORITY, RemoteBackend};
use crate::resolve::{Destination, Resolver};
use crate::streamed::StreamedMethods;
use crate::tag::MachineInfo;

/// The port every machine's Switchyard listens on for other machines, unless
/// configured otherwise (the reference's port).
pub const DEFAULT_REMOTE_PORT: u16 = 51000;

/// Metadata key for fan-out: one or more machines.
pub const MACHINES: HeaderName = HeaderName::from_static("machines");
/// Metadata key for an explicit single target.
pub const MACHINE: HeaderName = HeaderName::from_static("machine");
/// Metadata key choosing the reply shape of a fan-out: `envelope` for the
/// `switchyard.v1.MachineReply` stream, any method, any reply type.
pub const REPLY: HeaderName = HeaderName::from_static("switchyard-reply");
/// Metadata key bounding each machine's answer in a fan-out.
pub const MACHINE_TIMEOUT: HeaderName = HeaderName::from_static("switchyard-machine-timeout");

/// Default of [`DirectorOptions::machine_timeout`]: long enough for a slow
/// but working machine (a disk scan, a package query), short enough that an
/// interactive caller without a deadline is not held by a hung one.
pub const DEFAULT_MACHINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Optional settings of a [`MachineDirector`].
#[derive(Debug, Clone)]
pub struct DirectorOptions {
    /// Connection settings of remote machines (default: 10 s connect bound,
    /// backoff capped at 15 s).
    pub remote_channel: ChannelConfig,
    /// Connection settings of the local socket (default:
    /// [`LocalBackend::default_config`]).
    pub local_channel: ChannelConfig,
    /// The machine registry; `None` means machines are named by address only.
    /// Entries `allowed_networks` refuses are left out.
    pub registry: Option<Registry>,
    /// Route `machines` one-to-many even for a single target, so clients get
    /// the same reply shape (with metadata) for 1 or N machines.
    pub always_fan_out: bool,
    /// This machine's address, when already known.
    pub local_address: Option<MachineAddr>,
    /// Which methods stream their replies in fan-out, besides those the
    /// local server declares (see `discover_methods`).
    pub streamed: StreamedMethods,
    /// Learn the local server's methods through its gRPC reflection
    /// ([`MethodCatalog`]): which stream, and which have a reply type that
    /// cannot fan out (refused with `FAILED_PRECONDITION`).
    pub discover_methods: bool,
    /// The only networks machines may be dialled in, whether callers name
    /// them by address or the registry lists them; `None` admits every mesh
    /// address ([`check_dialable`]: not loopback, link-local or IPv4).
    pub allowed_networks: Option<Vec<Ipv6Net>>,
    /// Most machines one call may name.
    pub max_targets: usize,
    /// Most remote machines kept in the connection cache.
    pub max_cached_machines: usize,
    /// Who may call what.
    pub policy: Policy,
    /// How long each machine may take in a fan-out of a method with one
    /// reply (unary, client-streaming) when the caller sets no
    /// `switchyard-machine-timeout`; `None`: no bound but the caller's
    /// deadline. Streamed replies get none (a watch may be idle by design).
    pub machine_timeout: Option<Duration>,
}

/// Default of [`DirectorOptions::max_targets`].
pub const DEFAULT_MAX_TARGETS: usize = 256;

impl Default for DirectorOptions {
    fn default() -> Self {
        Self {
            remote_channel: ChannelConfig::default(),
            local_channel: LocalBackend::default_config(),
            registry: None,
            always_fan_out: false,
            local_address: None,
            streamed: StreamedMethods::none(),
            discover_methods: true,
            allowed_networks: None,
            max_targets: DEFAULT_MAX_TARGETS,
            max_cached_machines: 4096,
            policy: Policy::default(),
            machine_timeout: Some(DEFAULT_MACHINE_TIMEOUT),
        }
    }
}

/// One machine as the director sees it (for `switchyard machines`, metrics
/// and readiness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineStatus {
    /// Its address, and its registry ID and name.
    pub info: MachineInfo,
    /// Whether it is this machine.
    pub local: bool,
    /// Its connection: idle (nothing known), connecting, connected, down.
    pub state: ChannelState,
}

/// Routes calls to machines from their metadata; implements the engine's
/// [`Director`]. All methods are safe to call while serving.
#[derive(Debug)]
pub struct MachineDirector {
    local: Arc<LocalBackend>,
    remote_port: u16,
    remote_channel: ChannelConfig,
    always_fan_out: bool,
    streamed: StreamedMethods,
    machine_timeout: Option<Duration>,
    /// The local server's methods, when `discover_methods`.
    catalog: Option<Arc<MethodCatalog>>,
    local_socket: PathBuf,
    max_targets: usize,
    max_cached_machines: usize,
    /// Lock order: `state`, then `remotes`.
    state: RwLock<State>,
    remotes: Mutex<HashMap<SocketAddrV6, Arc<RemoteBackend>>>,
}

#[derive(Debug, Default)]
struct State {
    local_addr: Option<MachineAddr>,
    /// The registry as given.
    given: Option<Arc<Registry>>,
    /// `given` minus the entries `allowed_networks` refuses: the one in force.
    registry: Option<Arc<Registry>>,
    /// IDs of the entries left out last time, so that each is logged once.
    refused: HashSet<String>,
    allowed_networks: Option<Vec<Ipv6Net>>,
    policy: Arc<Policy>,
    /// IDs of the registered machines that have a heartbeat; `None` when
    /// liveness is not known (every machine counts as up).
    alive: Option<Arc<HashSet<String>>>,
    closed: bool,
}

/// How many refused registry entries one application logs by name.
const REFUSED_NAMED: usize = 8;

impl State {
    /// Sets [`State::registry`] from the registry given and the networks
    /// allowed, logging the entries newly left out.
    fn admit_registry(&mut self) {
        let Some(given) = self.given.clone() else {
            self.registry = None;
            self.refused.clear();
            return;
        };
        let allowed = self.allowed_networks.as_deref();
        let refused: Vec<_> = given
            .machines()
            .iter()
            .filter_map(|m| check_dialable(m.addr.ip, allowed).err().map(|why| (m, why)))
            .collect();
        let mut new = refused
            .iter()
            .filter(|(m, _)| !self.refused.contains(&m.id))
            .peekable();
        if new.peek().is_some() {
            let mut count = 0;
            for (m, why) in new {
                if count < REFUSED_NAMED {
                    tracing::warn!(
                        id = %m.id,
                        addr = %m.addr,
                        "registry: skipping entry: its address may not be dialled: {why}"
                    );
                }
                count += 1;
            }
            if count > REFUSED_NAMED {
                tracing::warn!(
                    more = count - REFUSED_NAMED,
                    "registry: skipping more entries whose address may not be dialled"
                );
            }
        }
        self.refused = refused.iter().map(|(m, _)| m.id.clone()).collect();
        self.registry = Some(if refused.is_empty() {
            given
        } else {
            Arc::new(given.subset(|m| !self.refused.contains(&m.id)))
        });
    }

    /// Whether the registered machine `info` is down: liveness is known and
    /// it has no heartbeat.
    fn is_down(&self, info: &MachineInfo) -> bool {
        self.registry.is_some()
            && !info.id.is_empty()
            && self
                .alive
                .as_ref()
                .is_some_and(|alive| !alive.contains(&info.id))
    }
}

impl MachineDirector {
    /// A director for the machine whose gRPC server listens on
    /// `local_socket_path`, reaching other machines on `remote_port`.
    pub fn new(
        local_socket_path: impl Into<PathBuf>,
        remote_port: u16,
        options: DirectorOptions,
    ) -> Self {
        let local_socket = local_socket_path.into();
        let director = Self {
            local: Arc::new(LocalBackend::new(
                local_socket.clone(),
                MachineInfo::default(),
                options.local_channel,
            )),
            remote_port,
            remote_channel: options.remote_channel,
            always_fan_out: options.always_fan_out,
            streamed: options.streamed,
            machine_timeout: options.machine_timeout,
            catalog: options
                .discover_methods
                .then(|| Arc::new(MethodCatalog::default())),
            local_socket,
            max_targets: options.max_targets,
            max_cached_machines: options.max_cached_machines.max(1),
            state: RwLock::new(State {
                local_addr: options.local_address,
                given: options.registry.map(Arc::new),
                allowed_networks: options.allowed_networks,
                policy: Arc::new(options.policy),
                ..State::default()
            }),
            remotes: Mutex::new(HashMap::new()),
        };
        director
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .admit_registry();
        let info = director.resolver(&director.state()).local_info();
        director.local.set_info(info);
        director
    }

    /// The backend of this machine's own gRPC server.
    pub fn local_backend(&self) -> &Arc<LocalBackend> {
        &self.local
    }

    /// The local server's methods as learned so far (`None` without
    /// `discover_methods`). Learning starts with the first call, or
    /// [`MachineDirector::discover_methods`].
    pub fn catalog(&self) -> Option<&Arc<MethodCatalog>> {
        self.catalog.as_ref()
    }

    /// Starts learning the local server's methods now (within a Tokio
    /// runtime), or asks again if already started (configuration reload).
    pub fn discover_methods(&self) {
        if let Some(catalog) = &self.catalog {
            // A task that is just starting asks anyway.
            if catalog.is_running() {
                catalog.refresh();
            } else {
                catalog.start(&self.local_socket);
            }
        }
    }

    /// The port other machines' Switchyards listen on.
    pub fn remote_port(&self) -> u16 {
        self.remote_port
    }

    /// This machine's address, if known.
    pub fn local_address(&self) -> Option<MachineAddr> {
        self.state().local_addr
    }

    /// The machine registry in force, if any: the one given minus the
    /// entries whose address `allowed_networks` refuses.
    pub fn registry(&self) -> Option<Arc<Registry>> {
        self.state().registry.clone()
    }

    /// Every machine this director knows: this one, the registry's (or,
    /// without a registry, those called so far), with their connection
    /// state.
    pub fn machines(&self) -> Vec<MachineStatus> {
        let state = self.state();
        let resolver = self.resolver(&state);
        let remotes = self.remotes();
        let mut machines = vec![MachineStatus {
            info: resolver.local_info(),
            local: true,
            state: self.local.state(),
        }];
        let remote = |socket: SocketAddrV6, info: MachineInfo| MachineStatus {
            state: if state.is_down(&info) {
                ChannelState::Down {
                    cause: NO_HEARTBEAT.to_owned(),
                }
            } else {
                remotes
                    .get(&socket)
                    .map_or(ChannelState::Idle, |backend| backend.state())
            },
            info,
            local: false,
        };
        match state.registry.as_deref() {
            Some(registry) => {
                // The registry may name this machine too.
                for machine in registry.machines() {
                    let socket = machine.addr.socket_addr(self.remote_port);
                    if let Some(info) = resolver.remote_info(socket) {
                        machines.push(remote(socket, info));
                    }
                }
            }
            None => {
                let mut sockets: Vec<_> = remotes.keys().copied().collect();
                sockets.sort();
                for socket in sockets {
                    machines.push(remote(socket, (*remotes[&socket].info()).clone()));
                }
            }
        }
        machines
    }

    /// The local server's Unix socket.
    pub fn local_socket(&self) -> &std::path::Path {
        &self.local_socket
    }

    /// Whether a call with these headers is for this machine itself: no
    /// `machines`/`machine`, or already forwarded once.
    pub fn is_local_call(headers: &HeaderMap) -> bool {
        !(headers.contains_key(MACHINES) || headers.contains_key(MACHINE))
            || headers.contains_key(PROXY_AUTHORITY)
    }

    /// Admits a call this Switchyard answers itself (its own API), as
    /// [`Director::route`] admits routed ones: roles, forged metadata,
    /// authorization.
    pub fn admit(&self, request: &mut http::request::Parts) -> Result<Caller, Status> {
        let policy = self.state().policy.clone();
        policy.admit(request)
    }

    /// The machines with a cached remote backend.
    pub fn cached_remotes(&self) -> Vec<SocketAddrV6> {
        let mut sockets: Vec<_> = self.remotes().keys().copied().collect();
        sockets.sort();
        sockets
    }

    /// Sets which address means "this machine" (and what local replies carry
    /// in fan-out); `None` makes it unknown.
    pub fn set_local_address(&self, addr: Option<MachineAddr>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.local_addr = addr;
        self.apply(&state);
        tracing::info!(local_address = ?addr.map(|a| a.to_string()), "local address updated");
    }

    /// Replaces the machine registry (e.g. on config reload). Cached remote
    /// backends of machines that are gone or changed are forgotten; calls
    /// already running on them finish. Entries whose address
    /// `allowed_networks` refuses are left out, each logged once.
    pub fn set_registry(&self, registry: Option<Registry>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.given = registry.map(Arc::new);
        state.admit_registry();
        self.apply(&state);
    }

    /// Sets which registered machines have a heartbeat (by ID); `None`
    /// means liveness is not known and every machine counts as up. Calls for
    /// a machine without a heartbeat are answered `UNAVAILABLE` at once, and
    /// its cached connection is forgotten (running calls finish on it).
    pub fn set_liveness(&self, alive: Option<HashSet<String>>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.alive = alive.map(Arc::new);
        self.apply(&state);
    }

    /// [`set_registry`](Self::set_registry) and
    /// [`set_liveness`](Self::set_liveness) at once, so that no call sees
    /// the new registry with the old liveness (a machine just added would
    /// look down).
    pub fn set_registry_and_liveness(
        &self,
        registry: Option<Registry>,
        alive: Option<HashSet<String>>,
    ) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.given = registry.map(Arc::new);
        state.admit_registry();
        state.alive = alive.map(Arc::new);
        self.apply(&state);
    }

    /// Replaces the networks machines may be dialled in (caller-written
    /// addresses and registry entries); cached remotes outside them are
    /// forgotten, registry entries they now admit come back.
    pub fn set_allowed_networks(&self, networks: Option<Vec<Ipv6Net>>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.allowed_networks = networks;
        state.admit_registry();
        self.apply(&state);
    }

    /// Replaces who may call what; calls already admitted run on.
    pub fn set_policy(&self, policy: Policy) {
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .policy = Arc::new(policy);
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

    /// Routes a call to `method` given its request metadata (what
    /// [`Director::route`] does, synchronously).
    pub fn route_metadata(&self, method: &str, headers: &HeaderMap) -> Result<Route, Status> {
        let state = self.state();
        if state.closed {
            return Err(Status::unavailable("the machine director is closed"));
        }
        let (many, one) = (
            headers.contains_key(MACHINES),
            headers.contains_key(MACHINE),
        );
        // A call another machine forwarded is for this one, whatever it names.
        if !(many || one) || headers.contains_key(PROXY_AUTHORITY) {
            return Ok(self.local_route());
        }
        let key = match (many, one) {
            (true, true) => {
                return Err(Status::invalid_argument(format!(
                    "both {MACHINE:?} and {MACHINES:?} metadata are set: use {MACHINE:?} for exactly one machine, {MACHINES:?} for fan-out"
                )));
            }
            (true, false) => MACHINES,
            _ => MACHINE,
        };
        let values = metadata_values(headers, &key)?;
        if key == MACHINE && values.len() != 1 {
            return Err(Status::invalid_argument(format!(
                "{MACHINE:?} metadata must name exactly one machine, got {}: {}; use {MACHINES:?} for fan-out",
                values.len(),
                crate::resolve::quoted(&values)
            )));
        }
        let resolved = self
            .resolver(&state)
            .resolve(&values)
            .map_err(|e| Status::invalid_argument(format!("{key:?} metadata {e}")))?;
        if key == MACHINE && resolved.destinations.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "{MACHINE:?} metadata must name exactly one machine, but {:?} matches {}; use {MACHINES:?} for fan-out",
                values[0],
                resolved.destinations.len()
            )));
        }
        let envelope = wants_envelope(headers)?;
        // A list stays a list, even when it names one machine twice.
        let fan_out = envelope
            || key == MACHINES && (values.len() > 1 || resolved.wildcard || self.always_fan_out);
        let mode = if fan_out {
            state.policy.check_fan_out(method)?;
            if envelope {
                Mode::OneToMany(ReplyShape::Envelope)
            } else {
                self.check_reply_type(method)?;
                Mode::OneToMany(self.shape(method))
            }
        } else {
            Mode::OneToOne
        };
        let mut remotes = self.remotes();
        let backends = resolved
            .destinations
            .into_iter()
            .map(|destination| match destination {
                Destination::Local => self.local.clone() as Arc<dyn Backend>,
                Destination::Remote(_, info) if state.is_down(&info) => {
                    Arc::new(DownBackend::new(info, NO_HEARTBEAT))
                }
                Destination::Remote(socket, info) => self.remote(&mut remotes, socket, info),
            })
            .collect();
        Ok(Route::new(mode, backends))
    }

    /// Refuses a fan-out whose replies cannot carry the machines' tags, as
    /// far as the local server's reflection tells: a declared reply type
    /// that does not fit, or a method the server does not declare (its
    /// reply type is unknown) unless configured as streamed.
    fn check_reply_type(&self, method: &str) -> Result<(), Status> {
        let Some(catalog) = &self.catalog else {
            return Ok(());
        };
        match catalog.get(method) {
            Some(MethodFacts {
                unfit: Some(unfit), ..
            }) => Err(Status::failed_precondition(format!(
                "{method} cannot fan out tagged: {unfit}; ask for {REPLY}: envelope"
            ))),
            None if catalog.answered() && self.streamed.shape(method) == ReplyShape::Unary => {
                Err(Status::failed_precondition(format!(
                    "{method} cannot fan out tagged: the local server does not declare it, so \
                     its reply type is unknown; ask for {REPLY}: envelope (or name it in \
                     streamed_methods if its replies are fan-out entries)"
                )))
            }
            _ => Ok(()),
        }
    }

    /// How fan-out replies of `method` reach the client: streamed when
    /// configured so or declared so by the local server.
    pub fn shape(&self, method: &str) -> ReplyShape {
        let declared = self
            .catalog
            .as_ref()
            .and_then(|c| c.get(method))
            .is_some_and(|facts| facts.streamed);
        if declared {
            ReplyShape::Streamed
        } else {
            self.streamed.shape(method)
        }
    }

    fn local_route(&self) -> Route {
        Route::new(Mode::OneToOne, vec![self.local.clone()])
    }

    fn resolver<'s>(&self, state: &'s State) -> Resolver<'s> {
        Resolver {
            local: state.local_addr,
            registry: state.registry.as_deref(),
            remote_port: self.remote_port,
            allowed_networks: state.allowed_networks.as_deref(),
            max_targets: self.max_targets,
        }
    }

    /// Brings the local backend's identity and the cache in line with `state`:
    /// cached remotes that the state no longer resolves to the same machine,
    /// or that are down, are forgotten.
    fn apply(&self, state: &State) {
        let resolver = self.resolver(state);
        self.local.set_info(resolver.local_info());
        let mut remotes = self.remotes();
        let before = remotes.len();
        remotes.retain(|&socket, backend| {
            resolver
                .remote_info(socket)
                .is_some_and(|info| *backend.info() == info && !state.is_down(&info))
        });
        if remotes.len() != before {
            tracing::debug!(
                pruned = before - remotes.len(),
                "stale remote backends forgotten"
            );
        }
    }

    /// The cached backend for `socket`, created (or replaced, when its info
    /// changed) as needed. At the cache's bound, machines without an open
    /// connection are forgotten first, then others (their running calls
    /// finish).
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
        if remotes.len() >= self.max_cached_machines {
            remotes.retain(|_, backend| backend.is_connected());
            if remotes.len() >= self.max_cached_machines
                && let Some(evicted) = remotes.keys().next().copied()
            {
                remotes.remove(&evicted);
            }
            tracing::debug!(
                cached = remotes.len(),
                "remote cache at its bound; idle machines forgotten"
            );
        }
        let backend = Arc::new(RemoteBackend::new(
            socket,
            info,
            self.remote_channel.clone(),
        ));
        remotes.insert(socket, backend.clone());
        backend
    }

    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn remotes(&self) -> MutexGuard<'_, HashMap<SocketAddrV6, Arc<RemoteBackend>>> {
        self.remotes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every value of `key`: repeated entries, each split on `,` and trimmed.
fn metadata_values<'h>(headers: &'h HeaderMap, key: &HeaderName) -> Result<Vec<&'h str>, Status> {
    let mut values = Vec::new();
    for raw in headers.get_all(key) {
        let text = std::str::from_utf8(raw.as_bytes()).map_err(|_| {
            Status::invalid_argument(format!("{key:?} metadata is not valid UTF-8"))
        })?;
        for value in text.split(',').map(str::trim) {
            if value.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "{key:?} metadata has an empty value (in {text:?})"
                )));
            }
            values.push(value);
        }
    }
    Ok(values)
}

impl Director for MachineDirector {
    /// Admits the caller ([`Policy::admit`]: roles, forged metadata,
    /// authorization), then routes by its metadata.
    fn route<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        let policy = self.state().policy.clone();
        Box::pin(async move {
            policy.admit(request)?;
            if let Some(catalog) = &self.catalog {
                // A first fan-out waits (briefly) for the first discovery,
                // so that even it is merged or streamed as it should be.
                if catalog.start(&self.local_socket)
                    && !catalog.is_settled()
                    && request.headers.contains_key(MACHINES)
                    && !request.headers.contains_key(PROXY_AUTHORITY)
                {
                    catalog.settled(FIRST_DISCOVERY_WAIT).await;
                }
            }
            let machine_timeout = take_machine_timeout(&mut request.headers)?;
            let method = request.uri.path();
            let mut route = self.route_metadata(method, &request.headers)?;
            request.headers.remove(REPLY);
            if let Mode::OneToMany(shape) = route.mode {
                // One reply per machine (by the method, whatever the shape
                // of the answer): the default bound applies.
                let one_reply = match shape {
                    ReplyShape::Unary => true,
                    ReplyShape::Streamed => false,
                    ReplyShape::Envelope => self.shape(method) == ReplyShape::Unary,
                };
                route.leg_timeout = machine_timeout.or(self.machine_timeout.filter(|_| one_reply));
            }
            Ok(route)
        })
    }
}

/// Whether `headers` ask for the envelope (`switchyard-reply: envelope`);
/// `tagged` (or none) is the tagged shape, anything else an error.
fn wants_envelope(headers: &HeaderMap) -> Result<bool, Status> {
    match headers.get(REPLY).map(http::HeaderValue::as_bytes) {
        None | Some(b"tagged") => Ok(false),
        Some(b"envelope") => Ok(true),
        Some(other) => Err(Status::invalid_argument(format!(
            "{REPLY:?} metadata must be \"envelope\" or \"tagged\", not {:?}",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Removes `switchyard-machine-timeout` from `headers` (it is for this
/// hop only), parsed.
fn take_machine_timeout(headers: &mut HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.remove(MACHINE_TIMEOUT) else {
        return Ok(None);
    };
    switchyard_engine::codec::timeout::parse(value.as_bytes())
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("{MACHINE_TIMEOUT:?} metadata: {e}")))
}

#[cfg(test)]
mod tests;
