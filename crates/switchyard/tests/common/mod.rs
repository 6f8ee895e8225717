//! End-to-end harness for the `switchyard` daemon: machines made of a
//! `machine-info` service on a Unix socket plus a Switchyard on a real TCP
//! socket, run in-process (like `switchyard demo`), and the real binary run
//! as a child process.
//!
//! Every wait is bounded: a hang fails the test with a message instead of
//! stalling the suite.

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use machine_info::pb::machine_info_client::MachineInfoClient;
use machine_info::pb::{
    DescribeRequest, DescribeResponse, Description, Metadata, Tick, WatchRequest,
};
use switchyard::cert::{CertAuthority, CertPem, MachineSpec, Validity};
use switchyard::cluster::{LoopbackCluster, LoopbackMachine};
use switchyard::config::{EtcdSettings, MethodName, Secs, Settings};
use switchyard::daemon::Daemon;
use switchyard_director::{DEFAULT_REMOTE_PORT, Registry};
use switchyard_engine::tls::{PeerName, TlsConfigs, TlsPaths};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

pub use switchyard::cluster::machine_settings;
pub use switchyard_testkit::client::with_meta;
#[allow(unused_imports)]
pub use switchyard_testkit::wait::{WAIT, bounded, bounded_for, eventually, socket_dir};

/// The streamed method of the sample API.
pub const WATCH: &str = switchyard::demo::WATCH;

/// Connect bound the in-process machines use for each other.
pub const CONNECT_BOUND: Duration = Duration::from_secs(10);

/// Names of the three machines of a [`Cluster`].
pub const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

// ---------------------------------------------------------------------------
// Clients and requests

/// A client of the Switchyard (or any gRPC server) at `http://addr`.
pub fn tcp_client(addr: SocketAddr) -> MachineInfoClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .expect("a socket address makes a URI")
        .connect_timeout(Duration::from_secs(5));
    MachineInfoClient::new(endpoint.connect_lazy())
}

/// A client of the server on the Unix socket `path` (authority `localhost`).
pub fn unix_client(path: &Path) -> MachineInfoClient<Channel> {
    MachineInfoClient::new(switchyard_testkit::client::unix_channel(path))
}

/// A `Describe` request with metadata.
pub fn describe(meta: &[(&str, &str)]) -> Request<DescribeRequest> {
    with_meta(DescribeRequest {}, meta)
}

/// A `Watch` request for `count` ticks every `interval_ms`, with metadata.
pub fn watch(count: u32, interval_ms: u32, meta: &[(&str, &str)]) -> Request<WatchRequest> {
    with_meta(WatchRequest { count, interval_ms }, meta)
}

/// `Describe` through `client`, bounded.
pub async fn call_describe(
    client: &mut MachineInfoClient<Channel>,
    meta: &[(&str, &str)],
) -> Result<DescribeResponse, Status> {
    bounded(
        &format!("Describe {meta:?}"),
        client.describe(describe(meta)),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// Starts a `Watch` through `client`, bounded.
pub async fn start_watch(
    client: &mut MachineInfoClient<Channel>,
    count: u32,
    interval_ms: u32,
    meta: &[(&str, &str)],
) -> Streaming<Tick> {
    bounded(
        &format!("Watch {meta:?}"),
        client.watch(watch(count, interval_ms, meta)),
    )
    .await
    .unwrap_or_else(|s| panic!("Watch {meta:?} refused: {s:?}"))
    .into_inner()
}

/// The next tick of `stream`, bounded; `None` at the end.
pub async fn next_tick(stream: &mut Streaming<Tick>) -> Option<Tick> {
    bounded("next Watch tick", stream.message())
        .await
        .unwrap_or_else(|s| panic!("Watch stream failed: {s:?}"))
}

/// Every remaining tick of `stream` until it ends OK.
pub async fn rest_of(stream: &mut Streaming<Tick>) -> Vec<Tick> {
    let mut ticks = Vec::new();
    while let Some(tick) = next_tick(stream).await {
        ticks.push(tick);
    }
    ticks
}

/// The error of a fan-out entry: its code and message, `None` when it is an
/// answer.
pub fn entry_error(metadata: Option<&Metadata>) -> Option<(Code, String)> {
    let m = metadata?;
    if m.error.is_empty() && m.status.is_none() {
        return None;
    }
    let code = m
        .status
        .as_ref()
        .map_or(Code::Unknown, |s| Code::from_i32(s.code));
    Some((code, m.error.clone()))
}

/// Panics unless `status` is `code` and its message contains every needle.
pub fn assert_status(status: &Status, code: Code, needles: &[&str]) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    for needle in needles {
        assert!(
            status.message().contains(needle),
            "status message {:?} does not mention {needle:?}",
            status.message()
        );
    }
}

/// The `machine_addr` a fan-out reply carries for the machine at `addr`:
/// the bare IP on the default remote port, `[ip]:port` otherwise.
pub fn label(addr: SocketAddr, remote_port: u16) -> String {
    if addr.port() == remote_port {
        addr.ip().to_string()
    } else {
        addr.to_string()
    }
}

/// Panics unless `d` is an untagged answer of machine `name`.
pub fn assert_untagged(d: &Description, name: &str) {
    assert!(d.metadata.is_none(), "reply should be untagged: {d:?}");
    assert_eq!(d.name, name, "answered by the wrong machine: {d:?}");
}

// ---------------------------------------------------------------------------
// In-process cluster

/// One machine: its `machine-info` service and its Switchyard.
pub type Node = LoopbackMachine;

/// Three machines on `[::1]`, differing by port, with a registry naming them
/// `alpha` (m1), `beta` (m2), `gamma` (m3).
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The registry of all three machines.
    pub registry: Registry,
    dir: tempfile::TempDir,
    /// With TLS: the certificate [`Cluster::client`] presents.
    tls_client: Option<TlsPaths>,
}

/// Settings of a test machine: [`machine_settings`] with `Watch` configured
/// as streamed (deterministic: tests/cluster_streams.rs covers discovery).
pub fn node_settings(addr: SocketAddr, socket: PathBuf, registry: Option<Registry>) -> Settings {
    let mut settings = machine_settings(addr, socket, registry);
    test_defaults(&mut settings);
    settings
}

fn test_defaults(settings: &mut Settings) {
    let start = &mut settings.start;
    start.streamed_methods = vec![MethodName(WATCH.to_owned())];
    start.detect_streamed_methods = false;
    start.connect_timeout_secs = Secs(CONNECT_BOUND);
    start.shutdown_grace_secs = Secs(Duration::from_secs(5));
}

/// A listener on `[::1]`, free port.
pub async fn loopback_listener() -> TcpListener {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
        .await
        .expect("these tests need IPv6 loopback ([::1])")
}

impl Cluster {
    /// Starts the three machines with [`node_settings`].
    pub async fn start(tag: &str) -> Self {
        Self::start_with(tag, |_, _| {}).await
    }

    /// Starts the three machines, `tweak`ing the settings of machine `i`
    /// before its Switchyard starts.
    pub async fn start_with(tag: &str, tweak: impl Fn(usize, &mut Settings)) -> Self {
        Self::start_in(socket_dir(tag), None, tweak).await
    }

    /// Starts the three machines with mutual TLS: a CA and certificates in
    /// `<dir>/tls` (machines named by `::1` and their name), and clients
    /// that present the `admin` certificate.
    pub async fn start_tls(
        tag: &str,
        tweak: impl Fn(usize, &mut Settings, &Certs),
    ) -> (Self, Certs) {
        let dir = socket_dir(tag);
        let certs = Certs::create(&dir.path().join("tls"));
        let admin = certs.client("admin", &["admin"]);
        let cluster = Self::start_in(dir, Some(admin), |i, settings| {
            settings.start.tls = Some(certs.machine(NAMES[i]).into());
            tweak(i, settings, &certs);
        })
        .await;
        (cluster, certs)
    }

    /// Starts the three machines with the registry in etcd: each registers
    /// itself as `etcd` says; returns once every machine answers and sees
    /// all three alive.
    pub async fn start_etcd(
        dir: tempfile::TempDir,
        etcd: &EtcdSettings,
        tweak: impl Fn(usize, &mut Settings),
    ) -> Self {
        let cluster = Self::start_in_with(dir, None, Some(etcd), tweak).await;
        cluster.wait_liveness(&NAMES).await;
        cluster
    }

    /// Waits until every running machine sees the machines named in
    /// `alive` registered with a heartbeat, and the others without one.
    pub async fn wait_liveness(&self, alive: &[&str]) {
        eventually(
            WAIT,
            &format!("every machine sees {alive:?} alive"),
            || async {
                self.nodes
                    .iter()
                    .all(|node| {
                        let Some(registry) = node.daemon.as_ref().and_then(Daemon::etcd_registry)
                        else {
                            return true;
                        };
                        let snapshot = registry.snapshot().borrow().clone();
                        registry.fresh()
                            && self.nodes.iter().all(|other| {
                                let beating = snapshot.is_alive(&other.id);
                                if alive.contains(&other.name.as_str()) {
                                    snapshot.machine(&other.id).is_some() && beating
                                } else {
                                    !beating
                                }
                            })
                    })
                    .then_some(())
            },
        )
        .await;
    }

    async fn start_in(
        dir: tempfile::TempDir,
        tls_client: Option<TlsPaths>,
        tweak: impl Fn(usize, &mut Settings),
    ) -> Self {
        Self::start_in_with(dir, tls_client, None, tweak).await
    }

    async fn start_in_with(
        dir: tempfile::TempDir,
        tls_client: Option<TlsPaths>,
        etcd: Option<&EtcdSettings>,
        tweak: impl Fn(usize, &mut Settings),
    ) -> Self {
        let configure = |i: usize, settings: &mut Settings| {
            test_defaults(settings);
            tweak(i, settings);
        };
        let cluster = match etcd {
            None => LoopbackCluster::start(dir.path(), &NAMES, configure).await,
            Some(etcd) => {
                LoopbackCluster::start_with_etcd(dir.path(), &NAMES, etcd, configure).await
            }
        }
        .expect("cannot start the loopback cluster");
        let cluster = Self {
            nodes: cluster.machines,
            registry: cluster.registry,
            dir,
            tls_client,
        };
        for i in 0..NAMES.len() {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Waits until machine `i` answers a local call through its Switchyard.
    pub async fn wait_ready(&self, i: usize) {
        let name = self.nodes[i].name.clone();
        if self.tls_client.is_some() {
            // A machine may present a certificate the test client refuses:
            // its service being up is enough (its listener is bound).
            let socket = self.nodes[i].socket.clone();
            eventually(WAIT, &format!("machine {name}'s service up"), || {
                let socket = socket.clone();
                async move { tokio::net::UnixStream::connect(&socket).await.ok() }
            })
            .await;
            return;
        }
        let client = self.client(i);
        eventually(WAIT, &format!("machine {name} up"), || {
            let mut client = client.clone();
            async move { client.describe(describe(&[])).await.ok() }
        })
        .await;
    }

    /// The index of machine `name`.
    pub fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no machine {name}"))
    }

    /// A client of machine `i`'s Switchyard (TCP; with TLS, as `admin`).
    pub fn client(&self, i: usize) -> MachineInfoClient<Channel> {
        match &self.tls_client {
            Some(paths) => tls_client(self.nodes[i].addr, paths),
            None => tcp_client(self.nodes[i].addr),
        }
    }

    /// A client of machine `i`'s `machine-info` service, bypassing Switchyard.
    pub fn direct(&self, i: usize) -> MachineInfoClient<Channel> {
        unix_client(&self.nodes[i].socket)
    }

    /// Machine `i`'s Switchyard.
    pub fn daemon(&self, i: usize) -> &Daemon {
        self.nodes[i].daemon.as_ref().expect("daemon running")
    }

    /// The metadata fan-out replies of machine `i` carry.
    pub fn meta(&self, i: usize) -> Metadata {
        let node = &self.nodes[i];
        Metadata {
            machine_addr: label(node.addr, DEFAULT_REMOTE_PORT),
            machine_id: node.id.clone(),
            machine_name: node.name.clone(),
            ..Metadata::default()
        }
    }

    /// How many calls machine `i`'s service has answered, this direct one
    /// included.
    pub async fn calls(&self, i: usize) -> u64 {
        let reply = call_describe(&mut self.direct(i), &[])
            .await
            .unwrap_or_else(|s| panic!("direct call to {} failed: {s:?}", self.nodes[i].name));
        reply.messages[0].calls
    }

    /// A registry of the machines named in `names` (from the cluster's).
    pub fn registry_of(&self, names: &[&str]) -> Registry {
        Registry::new(
            self.registry
                .machines()
                .iter()
                .filter(|m| names.contains(&m.name.as_str()))
                .cloned()
                .collect(),
        )
        .unwrap()
    }

    /// Stops machine `i`'s service and waits until its socket refuses
    /// connections.
    pub async fn stop_service(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.service.take().expect("service running").stop();
        let socket = node.socket.clone();
        eventually(WAIT, "machine-info socket refusing", || {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(&socket).await.err() }
        })
        .await;
    }

    /// Shuts machine `i`'s Switchyard down (bounded) and waits until its
    /// port refuses connections.
    pub async fn stop_daemon(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let daemon = node.daemon.take().expect("daemon running");
        bounded("Switchyard shutdown", daemon.shutdown())
            .await
            .unwrap();
        let addr = node.addr;
        eventually(WAIT, "Switchyard port refusing", || async move {
            tokio::net::TcpStream::connect(addr).await.err()
        })
        .await;
    }

    /// Stops machine `i`'s Switchyard and puts in its place a listener that
    /// accepts TCP connections and never speaks HTTP/2 (a hung machine);
    /// it holds them until the returned handle is aborted or dropped.
    pub async fn blackhole_daemon(&mut self, i: usize) -> tokio_util::task::AbortOnDropHandle<()> {
        self.stop_daemon(i).await;
        let hole = TcpListener::bind(self.nodes[i].addr)
            .await
            .expect("rebind the machine's port");
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = hole.accept().await {
                held.push(stream);
            }
        }))
    }

    /// Shuts every Switchyard down, bounded.
    pub async fn shutdown(mut self) {
        for node in &mut self.nodes {
            if let Some(daemon) = node.daemon.take() {
                bounded("Switchyard shutdown", daemon.shutdown())
                    .await
                    .unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Mutual TLS

/// A cluster CA and certificates, in one directory.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: CertAuthority,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs").field("dir", &self.dir).finish()
    }
}

impl Certs {
    /// A new CA in `dir` (`ca.crt`, `ca.key`) and a certificate per machine
    /// of [`NAMES`], naming `::1` and the machine's name.
    pub fn create(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ca = CertAuthority::generate("test CA", Validity::days(1).unwrap()).unwrap();
        ca.to_pem()
            .write(&dir.join("ca.crt"), &dir.join("ca.key"))
            .unwrap();
        let certs = Self {
            dir: dir.to_owned(),
            ca,
        };
        for name in NAMES {
            certs.issue_machine(name, &["::1"], Some(name));
        }
        certs
    }

    /// Writes `<dir>/<file>.crt|.key`: a machine certificate naming `ips`
    /// and `name`.
    pub fn issue_machine(&self, file: &str, ips: &[&str], name: Option<&str>) -> TlsPaths {
        let spec = MachineSpec {
            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            name: name.map(str::to_owned),
        };
        let pem = self
            .ca
            .issue_machine(&spec, Validity::days(1).unwrap())
            .unwrap();
        self.write(file, &pem)
    }

    /// The files of machine `name`'s certificate.
    pub fn machine(&self, name: &str) -> TlsPaths {
        self.paths(name)
    }

    /// Writes `<dir>/<name>.crt|.key`: a caller certificate with `roles`.
    pub fn client(&self, name: &str, roles: &[&str]) -> TlsPaths {
        let pem = self
            .ca
            .issue_client(name, roles, Validity::days(1).unwrap())
            .unwrap();
        self.write(name, &pem)
    }

    /// A caller certificate that expired yesterday.
    pub fn expired_client(&self, name: &str) -> TlsPaths {
        let now = std::time::SystemTime::now();
        let validity = Validity {
            not_before: now - Duration::from_secs(10 * 86_400),
            not_after: now - Duration::from_secs(86_400),
        };
        let pem = self.ca.issue_client(name, &["admin"], validity).unwrap();
        self.write(name, &pem)
    }

    fn write(&self, name: &str, pem: &CertPem) -> TlsPaths {
        let paths = self.paths(name);
        pem.write(&paths.cert, &paths.key).unwrap();
        paths
    }

    fn paths(&self, name: &str) -> TlsPaths {
        TlsPaths {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
            ca: self.dir.join("ca.crt"),
        }
    }
}

/// A client of the Switchyard at `addr` over mutual TLS, presenting the
/// certificate of `paths` and trusting its CA; the server must be named by
/// its IP.
pub fn tls_client(addr: SocketAddr, paths: &TlsPaths) -> MachineInfoClient<Channel> {
    let client = TlsConfigs::load(paths)
        .expect("client TLS files")
        .client()
        .clone();
    let peer = PeerName::new(addr.ip(), None).unwrap();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
        let (client, peer) = (client.clone(), peer.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let tls = client.connect(&peer, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    }));
    MachineInfoClient::new(channel)
}

// ---------------------------------------------------------------------------
// The metrics and health listener

/// A plain HTTP/1.1 GET: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    bounded(&format!("GET {path}"), async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: switchyard\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
}

/// The metrics and health listener on `127.0.0.1`, any port (see
/// [`Daemon::metrics_addr`]).
pub fn metrics_on_loopback(settings: &mut Settings) {
    settings.start.metrics_listen = Some(switchyard::config::Listen(
        switchyard_engine::Address::Tcp("127.0.0.1:0".parse().expect("an address")),
    ));
}

// ---------------------------------------------------------------------------
// The real binary

/// The `switchyard` binary run as a child process; killed on drop.
#[derive(Debug)]
pub struct Process {
    child: tokio::process::Child,
    stderr: Arc<Mutex<String>>,
    pid: u32,
}

impl Process {
    /// Runs `switchyard <args>` with `RUST_LOG=info`, capturing stderr.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    /// Runs `switchyard <args>` with `env` set over the defaults.
    pub fn spawn_with_env<S: AsRef<std::ffi::OsStr>>(args: &[S], env: &[(&str, &str)]) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied());
        Self::run(command)
    }

    /// Runs `switchyard <args>` with at most `files` open files (soft and
    /// hard limit), as on a host configured low.
    pub fn spawn_with_file_limit<S: AsRef<std::ffi::OsStr>>(files: u32, args: &[S]) -> Self {
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {files} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_switchyard"))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        Self::run(command)
    }

    fn run(mut command: tokio::process::Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run the switchyard binary");
        let pid = child.id().expect("a running child has a pid");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self { child, stderr, pid }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` (`HUP`, `TERM`, …) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid);
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits for the exit, at most `limit`; then the rest of stderr.
    pub async fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, String) {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!(
                "switchyard did not exit within {limit:?}; stderr so far:\n{}",
                self.stderr()
            ),
        };
        // Let the reader drain the pipe (closed now that the process is gone).
        let started = Instant::now();
        let mut last = self.stderr().len();
        while started.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.stderr().len();
            if now == last && now > 0 {
                break;
            }
            last = now;
        }
        (status, self.stderr())
    }

    /// Waits until stderr contains `needle`.
    pub async fn wait_log(&mut self, needle: &str) {
        let what = format!("log line {needle:?}");
        let started = Instant::now();
        while !self.stderr().contains(needle) {
            if let Some(status) = self.exited() {
                panic!(
                    "{what}: switchyard exited ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                started.elapsed() < WAIT,
                "{what}: not within {WAIT:?}; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the Unix socket `path` accepts connections.
    pub async fn wait_listening(&mut self, path: &Path) {
        let started = Instant::now();
        while tokio::net::UnixStream::connect(path).await.is_err() {
            if let Some(status) = self.exited() {
                panic!(
                    "switchyard exited ({status}) before listening on {}; stderr:\n{}",
                    path.display(),
                    self.stderr()
                );
            }
            assert!(
                started.elapsed() < WAIT,
                "switchyard not listening on {} within {WAIT:?}; stderr:\n{}",
                path.display(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Runs `switchyard <args>` to completion (bounded): exit status and stderr.
pub async fn run_to_exit<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (ExitStatus, String) {
    Process::spawn(args).wait_exit(WAIT).await
}

/// Writes `text` to `path` atomically (a reader never sees half a file).
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Serves `socket` with a gRPC server that never answers a call.
pub fn hang_on(socket: &Path) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| {
                    std::future::pending::<
                        Result<
                            http::Response<http_body_util::Empty<bytes::Bytes>>,
                            std::convert::Infallible,
                        >,
                    >()
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
}
