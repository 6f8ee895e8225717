//! The processes of a benchmark run: sample backends, Switchyard daemons and
//! nginx, each a child process with its log in the run's directory, stopped
//! with SIGTERM (then SIGKILL after a bound) when dropped.

use std::fs::File;
use std::net::{Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use switchyard_engine::Address;

/// Methods whose replies stream, for the daemons' fan-out.
const STREAMED: [&str; 4] = [
    "/switchyard.test.v1.TestService/PingList",
    "/switchyard.test.v1.TestService/PingStream",
    "/switchyard.test.v1.MultiService/PingList",
    "/switchyard.test.v1.MultiService/PingStream",
];

/// A child process, stopped when dropped.
#[derive(Debug)]
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `command`, its stdout and stderr going to `<dir>/<name>.log`.
    pub(crate) fn spawn(name: &str, dir: &Path, mut command: Command) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the log's tail if the process has exited.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Waits until `target` accepts connections (10 s at most).
    pub(crate) fn wait_ready(&mut self, target: &Address) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            let ok = match target {
                Address::Tcp(addr) => std::net::TcpStream::connect(addr).is_ok(),
                Address::Unix(path) => std::os::unix::net::UnixStream::connect(path).is_ok(),
            };
            if ok {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!(
                    "{} does not accept connections on {target} after 10 s",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if the process is still there after 5 s.
    pub(crate) fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `count` distinct free TCP ports on `[::1]`.
pub(crate) fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv6Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot bind [::1]: the suite needs IPv6 loopback")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The binaries the suite runs.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    /// `switchyard-bench` itself (backend and load generator).
    pub(crate) bench: PathBuf,
    /// The `switchyard` daemon.
    pub(crate) switchyard: PathBuf,
}

/// One simulated machine: its backend on a Unix socket and its Switchyard on
/// `[::1]:port`.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) socket: PathBuf,
    pub(crate) daemon: Proc,
    pub(crate) backend: Proc,
}

impl Machine {
    pub(crate) fn proxy_target(&self) -> Address {
        loopback(self.port)
    }

    pub(crate) fn backend_target(&self) -> Address {
        Address::Unix(self.socket.clone())
    }
}

/// Starts a backend on `socket`.
pub(crate) fn start_backend(
    bins: &Binaries,
    dir: &Path,
    name: &str,
    socket: &Path,
) -> anyhow::Result<Proc> {
    let mut command = Command::new(&bins.bench);
    command
        .arg("backend")
        .arg("--listen")
        .arg(socket)
        .args(["--name", name]);
    let mut proc = Proc::spawn(&format!("backend-{name}"), dir, command)?;
    proc.wait_ready(&Address::Unix(socket.to_owned()))?;
    Ok(proc)
}

/// `[::1]:port`, where every process of the suite listens on TCP.
pub(crate) fn loopback(port: u16) -> Address {
    Address::Tcp(SocketAddr::from((Ipv6Addr::LOCALHOST, port)))
}

/// A bare relay (`switchyard-bench relay`) in front of a backend.
#[derive(Debug)]
pub(crate) struct Relay {
    /// Its `--stack`.
    pub(crate) stack: &'static str,
    pub(crate) port: u16,
    pub(crate) proc: Proc,
}

/// Starts a bare relay on `stack` on `[::1]:port` in front of the backend on
/// `socket`.
pub(crate) fn start_relay(
    bins: &Binaries,
    dir: &Path,
    socket: &Path,
    stack: &'static str,
    port: u16,
) -> anyhow::Result<Relay> {
    let mut command = Command::new(&bins.bench);
    command
        .arg("relay")
        .arg("--listen")
        .arg(format!("[::1]:{port}"))
        .arg("--backend")
        .arg(socket)
        .args(["--stack", stack]);
    let mut proc = Proc::spawn(&format!("relay-{stack}"), dir, command)?;
    proc.wait_ready(&loopback(port))?;
    Ok(Relay { stack, port, proc })
}

/// Writes the config of a daemon listening on `[::1]:port` for the backend
/// on `socket`, with `registry` as its `[[machines]]` and `extra` (TOML
/// keys, then tables) in between, and starts it.
pub(crate) fn start_daemon(
    bins: &Binaries,
    dir: &Path,
    name: &str,
    port: u16,
    socket: &Path,
    registry: &[(String, u16)],
    extra: &str,
) -> anyhow::Result<Proc> {
    let mut toml = String::new();
    toml.push_str(&format!("listen = [\"[::1]:{port}\"]\n"));
    toml.push_str(&format!(
        "local_socket = {:?}\n",
        socket.display().to_string()
    ));
    toml.push_str(&format!("local_address = \"[::1]:{port}\"\n"));
    toml.push_str("always_fan_out = true\n");
    toml.push_str("connect_timeout_secs = 2\n");
    toml.push_str("shutdown_grace_secs = 1\n");
    toml.push_str(&format!("streamed_methods = {STREAMED:?}\n"));
    // The machines are on loopback, which only an allowed network admits.
    toml.push_str("allowed_networks = [\"::1/128\"]\n");
    toml.push_str(extra);
    for (machine, machine_port) in registry {
        toml.push_str(&format!(
            "\n[[machines]]\nid = \"{machine}\"\nname = \"{machine}\"\naddr = \"[::1]:{machine_port}\"\n"
        ));
    }
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).with_context(|| format!("cannot write {}", config.display()))?;
    let mut command = Command::new(&bins.switchyard);
    command.arg("serve").arg("--config").arg(&config);
    command.env("RUST_LOG", "warn");
    let mut proc = Proc::spawn(&format!("switchyard-{name}"), dir, command)?;
    proc.wait_ready(&loopback(port))?;
    Ok(proc)
}

/// Starts `count` machines `m0…`, every daemon knowing every machine.
pub(crate) fn start_machines(
    bins: &Binaries,
    dir: &Path,
    count: usize,
) -> anyhow::Result<Vec<Machine>> {
    let ports = free_ports(count)?;
    let registry: Vec<(String, u16)> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| (format!("m{i}"), *port))
        .collect();
    let mut backends = Vec::with_capacity(count);
    for (name, _) in &registry {
        let socket = dir.join(format!("{name}.sock"));
        backends.push((start_backend(bins, dir, name, &socket)?, socket));
    }
    let mut machines = Vec::with_capacity(count);
    for ((name, port), (backend, socket)) in registry.iter().zip(backends) {
        let daemon = start_daemon(bins, dir, name, *port, &socket, &registry, "")?;
        machines.push(Machine {
            name: name.clone(),
            port: *port,
            socket,
            daemon,
            backend,
        });
    }
    Ok(machines)
}

/// A Switchyard daemon in front of another machine's backend (a variant
/// of that machine: with metrics, with TLS).
#[derive(Debug)]
pub(crate) struct Variant {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) daemon: Proc,
}

impl Variant {
    pub(crate) fn target(&self) -> Address {
        loopback(self.port)
    }
}

/// A daemon like m0's, in front of m0's backend, that also serves metrics
/// (and so records every call).
pub(crate) fn start_metrics_daemon(
    bins: &Binaries,
    dir: &Path,
    m0: &Machine,
) -> anyhow::Result<Variant> {
    let ports = free_ports(2)?;
    let extra = format!("metrics_listen = \"[::1]:{}\"\n", ports[1]);
    let daemon = start_daemon(bins, dir, "metrics", ports[0], &m0.socket, &[], &extra)?;
    Ok(Variant {
        name: "metrics".into(),
        port: ports[0],
        daemon,
    })
}

/// The certificates of a TLS run: the CA, one per TLS machine (naming
/// `::1`), and the load generator's client certificate.
#[derive(Debug, Clone)]
pub(crate) struct Certs {
    pub(crate) dir: PathBuf,
}

impl Certs {
    /// `(cert, key, ca)` of `name`.
    pub(crate) fn files(&self, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
            self.dir.join("ca.crt"),
        )
    }
}

/// Makes the certificates with `switchyard cert`.
fn make_certs(bins: &Binaries, dir: &Path, machines: &[String]) -> anyhow::Result<Certs> {
    let tls = dir.join("tls");
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new(&bins.switchyard)
            .arg("cert")
            .args(args)
            .output()
            .context("cannot run switchyard cert")?;
        if !out.status.success() {
            bail!(
                "switchyard cert {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    let out = tls.to_str().context("run directory is not UTF-8")?;
    run(&["ca", "--out", out])?;
    for name in machines {
        run(&[
            "machine", "--ca", out, "--out", out, "--name", name, "--addr", "::1",
        ])?;
    }
    run(&[
        "client", "--ca", out, "--out", out, "--name", "bench", "--role", "admin",
    ])?;
    Ok(Certs { dir: tls })
}

/// `count` daemons `t0…` with mutual TLS between them, each in front of the
/// backend of the machine of the same index, knowing each other.
pub(crate) fn start_tls_machines(
    bins: &Binaries,
    dir: &Path,
    machines: &[Machine],
    count: usize,
) -> anyhow::Result<(Vec<Variant>, Certs)> {
    let ports = free_ports(count)?;
    let registry: Vec<(String, u16)> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| (format!("t{i}"), *port))
        .collect();
    let names: Vec<String> = registry.iter().map(|(n, _)| n.clone()).collect();
    let certs = make_certs(bins, dir, &names)?;
    let mut out = Vec::with_capacity(count);
    for ((name, port), machine) in registry.iter().zip(machines) {
        let (cert, key, ca) = certs.files(name);
        let extra = format!(
            "\n[tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
            cert.display().to_string(),
            key.display().to_string(),
            ca.display().to_string()
        );
        let daemon = start_daemon(bins, dir, name, *port, &machine.socket, &registry, &extra)?;
        out.push(Variant {
            name: name.clone(),
            port: *port,
            daemon,
        });
    }
    Ok((out, certs))
}

/// nginx as a gRPC reverse proxy (`grpc_pass`) in front of a backend.
#[derive(Debug)]
pub(crate) struct Nginx {
    pub(crate) port: u16,
    pub(crate) version: String,
    proc: Proc,
}

impl Nginx {
    pub(crate) fn target(&self) -> Address {
        loopback(self.port)
    }

    /// The master process, whose children are the workers.
    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// Where Debian puts nginx.
const NGINX: &str = "/usr/sbin/nginx";

/// The nginx version, if nginx is installed.
fn nginx_version() -> Option<String> {
    let out = Command::new(NGINX).arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.trim()
        .strip_prefix("nginx version: ")
        .map(str::to_owned)
        .or_else(|| out.status.success().then(|| text.trim().to_owned()))
}

/// Runs `command`, killing it after `bound`; whether it succeeded.
fn run_bounded(mut command: Command, bound: Duration) -> anyhow::Result<bool> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Installs Debian's nginx with apt-get when it is missing and `install` is
/// set. Returns the version, or why there is none.
pub(crate) fn ensure_nginx(install: bool) -> Result<String, String> {
    if let Some(version) = nginx_version() {
        return Ok(version);
    }
    if !install {
        return Err("nginx is not installed (the full suite installs it with apt-get)".into());
    }
    eprintln!("suite: nginx is missing; installing Debian's nginx with apt-get");
    let pid_before = std::fs::read_to_string("/run/nginx.pid").ok();
    let mut update = Command::new("apt-get");
    update.arg("update");
    if !run_bounded(update, Duration::from_secs(300)).unwrap_or(false) {
        return Err("`apt-get update` failed; nginx was skipped".into());
    }
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends", "nginx"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    if !run_bounded(install, Duration::from_secs(600)).unwrap_or(false) {
        return Err("`apt-get install nginx` failed; nginx was skipped".into());
    }
    // The package may have started its default server (port 80); stop the
    // instance the installation started, and only that one.
    if let Ok(pid) = std::fs::read_to_string("/run/nginx.pid")
        && Some(&pid) != pid_before.as_ref()
    {
        let _ = Command::new(NGINX).args(["-s", "quit"]).status();
    }
    nginx_version().ok_or_else(|| "nginx was installed but does not run".into())
}

/// Starts nginx on `[::1]:port` with `grpc_pass` to the Unix socket `backend`.
pub(crate) fn start_nginx(
    dir: &Path,
    version: String,
    backend: &Path,
    port: u16,
) -> anyhow::Result<Nginx> {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let p = |name: &str| prefix.join(name).display().to_string();
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        });
    let conf = format!(
        r#"# Written by switchyard-bench suite: nginx as a gRPC proxy in front of the
# sample backend, tuned as a production gRPC front would be (upstream
# keepalive, no access log, one worker per core).
{user}worker_processes auto;
daemon off;
master_process on;
pid {pid};
error_log {error_log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream backend {{
        server unix:{backend};
        keepalive 128;
        keepalive_requests 1000000;
    }}
    server {{
        listen [::1]:{port} http2;
        http2_max_concurrent_streams 1024;
        keepalive_requests 1000000;
        client_max_body_size 0;
        location / {{
            grpc_pass grpc://backend;
            grpc_read_timeout 120s;
            grpc_send_timeout 120s;
        }}
    }}
}}
"#,
        user = if root { "user root;\n" } else { "" },
        pid = p("nginx.pid"),
        error_log = p("error.log"),
        tmp = p("tmp"),
        backend = backend.display(),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut command = Command::new(NGINX);
    command
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(prefix.join("error.log"));
    let mut proc = Proc::spawn("nginx", dir, command)?;
    proc.wait_ready(&loopback(port))?;
    Ok(Nginx {
        port,
        version,
        proc,
    })
}
