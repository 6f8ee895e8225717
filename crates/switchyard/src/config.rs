//! Daemon settings: a TOML file and command-line flags (flags win), checked
//! once into [`Settings`]. Every rejected value names its setting.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::Deserialize;
use switchyard_director::{DEFAULT_REMOTE_PORT, Machine, MachineAddr, Registry};

use crate::listen::ListenAddr;

/// Runtime threads unless configured: one thread avoids cross-thread wakeups
/// and work stealing, which cost more than they give on the small machines
/// a management proxy shares with its workload (see docs/PERFORMANCE.md).
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// A bound that catches typos such as `worker_threads = 1000`.
const MAX_WORKER_THREADS: usize = 256;

/// Flags of `switchyard serve` (each overrides the same setting of the file).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (same settings as the flags, plus `[[machines]]`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where to listen: `unix:/path`, `[ipv6]:port` or `ipv4:port`; repeatable.
    /// Default: `[::]:<remote-port>`.
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Unix socket of this machine's own gRPC server.
    #[arg(long, value_name = "PATH")]
    pub local_socket: Option<PathBuf>,
    /// Port of the other machines' Switchyards [default: 51000].
    #[arg(long, value_name = "PORT")]
    pub remote_port: Option<u16>,
    /// This machine's IPv6 address (calls for it are served locally).
    #[arg(long, value_name = "IPV6")]
    pub local_address: Option<String>,
    /// Permissions of Unix listener sockets, octal [default: 0660].
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
    /// Largest gRPC message accepted, in bytes, each way [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// A method whose replies stream (`/pkg.Service/Method`); repeatable.
    #[arg(long = "streamed-method", value_name = "METHOD")]
    pub streamed_methods: Vec<String>,
    /// Answer `machines` one-to-many even for a single machine.
    #[arg(long)]
    pub always_fan_out: bool,
    /// Do not ask the local server's gRPC reflection which methods stream.
    #[arg(long)]
    pub no_detect_streamed_methods: bool,
    /// Bound of one connection attempt to another machine, in seconds [default: 10].
    #[arg(long, value_name = "SECS")]
    pub connect_timeout_secs: Option<u64>,
    /// After SIGTERM, how long running calls may take to finish, in seconds [default: 10].
    #[arg(long, value_name = "SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Threads that run calls [default: 1; one core serves tens of thousands
    /// of calls per second, and a single thread needs no cross-thread wakeups].
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<Vec<String>>,
    local_socket: Option<PathBuf>,
    remote_port: Option<u16>,
    local_address: Option<String>,
    socket_mode: Option<String>,
    max_message_size: Option<usize>,
    streamed_methods: Option<Vec<String>>,
    always_fan_out: Option<bool>,
    detect_streamed_methods: Option<bool>,
    connect_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    worker_threads: Option<usize>,
    machines: Option<Vec<Machine>>,
}

/// Checked, effective settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listener addresses.
    pub listen: Vec<ListenAddr>,
    /// This machine's gRPC server.
    pub local_socket: PathBuf,
    /// Port of other machines' Switchyards.
    pub remote_port: u16,
    /// This machine's address.
    pub local_address: Option<MachineAddr>,
    /// Unix socket permissions.
    pub socket_mode: u32,
    /// Message size limit.
    pub max_message_size: usize,
    /// Methods whose replies stream.
    pub streamed_methods: Vec<String>,
    /// `machines` always fans out.
    pub always_fan_out: bool,
    /// Learn streamed methods from the local server's gRPC reflection.
    pub detect_streamed_methods: bool,
    /// Connect bound for other machines.
    pub connect_timeout: Duration,
    /// Shutdown grace period.
    pub grace_period: Duration,
    /// Runtime threads.
    pub worker_threads: usize,
    /// The machine registry, if any.
    pub registry: Option<Registry>,
}

impl Settings {
    /// Reads the file named by `args` (if any) and applies the flags.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// Flags over file over defaults. Both sources are checked in full, so a
    /// bad value in the file is reported even where a flag overrides it.
    fn merge(args: &ServeArgs, file: FileConfig) -> anyhow::Result<Self> {
        let flags = Layer::check(Layer {
            listen: (!args.listen.is_empty()).then(|| args.listen.clone()),
            local_socket: args.local_socket.clone(),
            remote_port: args.remote_port,
            local_address: args.local_address.clone(),
            socket_mode: args.socket_mode.clone(),
            max_message_size: args.max_message_size,
            streamed_methods: (!args.streamed_methods.is_empty())
                .then(|| args.streamed_methods.clone()),
            always_fan_out: args.always_fan_out.then_some(true),
            detect_streamed_methods: args.no_detect_streamed_methods.then_some(false),
            connect_timeout_secs: args.connect_timeout_secs,
            shutdown_grace_secs: args.shutdown_grace_secs,
            worker_threads: args.worker_threads,
        })?;
        let registry = file
            .machines
            .map(|machines| Registry::new(machines).map_err(|e| anyhow!("machines: {e}")))
            .transpose()?;
        let file = Layer::check(Layer {
            listen: file.listen,
            local_socket: file.local_socket,
            remote_port: file.remote_port,
            local_address: file.local_address,
            socket_mode: file.socket_mode,
            max_message_size: file.max_message_size,
            streamed_methods: file.streamed_methods,
            always_fan_out: file.always_fan_out,
            detect_streamed_methods: file.detect_streamed_methods,
            connect_timeout_secs: file.connect_timeout_secs,
            shutdown_grace_secs: file.shutdown_grace_secs,
            worker_threads: file.worker_threads,
        })?;
        let remote_port = flags
            .remote_port
            .or(file.remote_port)
            .unwrap_or(DEFAULT_REMOTE_PORT);
        let listen = flags.listen.or(file.listen).unwrap_or_else(|| {
            vec![ListenAddr::Tcp(
                (std::net::Ipv6Addr::UNSPECIFIED, remote_port).into(),
            )]
        });
        let local_socket = flags.local_socket.or(file.local_socket).ok_or_else(|| {
            anyhow!(
                "local_socket: not set (--local-socket PATH, or local_socket in the config file)"
            )
        })?;
        Ok(Self {
            listen,
            local_socket,
            remote_port,
            local_address: flags.local_address.or(file.local_address),
            socket_mode: flags.socket_mode.or(file.socket_mode).unwrap_or(0o660),
            max_message_size: flags
                .max_message_size
                .or(file.max_message_size)
                .unwrap_or(switchyard_engine::proxy::DEFAULT_MAX_MESSAGE_SIZE),
            streamed_methods: flags
                .streamed_methods
                .or(file.streamed_methods)
                .unwrap_or_default(),
            always_fan_out: flags
                .always_fan_out
                .or(file.always_fan_out)
                .unwrap_or(false),
            detect_streamed_methods: flags
                .detect_streamed_methods
                .or(file.detect_streamed_methods)
                .unwrap_or(true),
            connect_timeout: flags
                .connect_timeout
                .or(file.connect_timeout)
                .unwrap_or(Duration::from_secs(10)),
            grace_period: flags
                .grace_period
                .or(file.grace_period)
                .unwrap_or(Duration::from_secs(10)),
            worker_threads: flags
                .worker_threads
                .or(file.worker_threads)
                .unwrap_or(DEFAULT_WORKER_THREADS),
            registry,
        })
    }

    /// The settings that differ from `running` but only take effect on a
    /// restart (a reload applies the registry and the local address only).
    pub fn needing_restart(&self, running: &Settings) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                changed.push(name);
            }
        };
        check("listen", self.listen != running.listen);
        check("local_socket", self.local_socket != running.local_socket);
        check("remote_port", self.remote_port != running.remote_port);
        check("socket_mode", self.socket_mode != running.socket_mode);
        check(
            "max_message_size",
            self.max_message_size != running.max_message_size,
        );
        check(
            "streamed_methods",
            self.streamed_methods != running.streamed_methods,
        );
        check(
            "always_fan_out",
            self.always_fan_out != running.always_fan_out,
        );
        check(
            "detect_streamed_methods",
            self.detect_streamed_methods != running.detect_streamed_methods,
        );
        check(
            "connect_timeout_secs",
            self.connect_timeout != running.connect_timeout,
        );
        check(
            "shutdown_grace_secs",
            self.grace_period != running.grace_period,
        );
        check(
            "worker_threads",
            self.worker_threads != running.worker_threads,
        );
        changed
    }
}

/// One source of settings (flags or file), raw then checked.
#[derive(Debug, Default)]
struct Layer {
    listen: Option<Vec<String>>,
    local_socket: Option<PathBuf>,
    remote_port: Option<u16>,
    local_address: Option<String>,
    socket_mode: Option<String>,
    max_message_size: Option<usize>,
    streamed_methods: Option<Vec<String>>,
    always_fan_out: Option<bool>,
    detect_streamed_methods: Option<bool>,
    connect_timeout_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    worker_threads: Option<usize>,
}

/// A [`Layer`] whose values are all valid.
#[derive(Debug)]
struct Checked {
    listen: Option<Vec<ListenAddr>>,
    local_socket: Option<PathBuf>,
    remote_port: Option<u16>,
    local_address: Option<MachineAddr>,
    socket_mode: Option<u32>,
    max_message_size: Option<usize>,
    streamed_methods: Option<Vec<String>>,
    always_fan_out: Option<bool>,
    detect_streamed_methods: Option<bool>,
    connect_timeout: Option<Duration>,
    grace_period: Option<Duration>,
    worker_threads: Option<usize>,
}

impl Layer {
    fn check(self) -> anyhow::Result<Checked> {
        if self.remote_port == Some(0) {
            bail!("remote_port: 0 is not a port");
        }
        let listen = self
            .listen
            .map(|all| {
                all.iter()
                    .map(|l| l.parse().map_err(|e| anyhow!("listen: {e}")))
                    .collect::<anyhow::Result<Vec<ListenAddr>>>()
            })
            .transpose()?;
        if listen.as_ref().is_some_and(Vec::is_empty) {
            bail!("listen: the list is empty");
        }
        let local_address = self
            .local_address
            .map(|a| {
                a.parse::<MachineAddr>()
                    .map_err(|e| anyhow!("local_address: {e}"))
            })
            .transpose()?;
        let socket_mode = self
            .socket_mode
            .map(|text| {
                u32::from_str_radix(text.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        anyhow!("socket_mode: {text:?} is not an octal mode such as 0660")
                    })
            })
            .transpose()?;
        if let Some(size) = self.max_message_size
            && (size == 0 || size > u32::MAX as usize)
        {
            bail!("max_message_size: {size} is not between 1 and {}", u32::MAX);
        }
        for method in self.streamed_methods.iter().flatten() {
            let valid = method
                .strip_prefix('/')
                .and_then(|m| m.split_once('/'))
                .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'));
            if !valid {
                bail!(
                    "streamed_methods: {method:?} is not a full method name such as /pkg.Service/Method"
                );
            }
        }
        if let Some(n) = self.worker_threads
            && !(1..=MAX_WORKER_THREADS).contains(&n)
        {
            bail!("worker_threads: {n} is not between 1 and {MAX_WORKER_THREADS}");
        }
        let seconds = |name: &str, value: Option<u64>| -> anyhow::Result<Option<Duration>> {
            match value {
                Some(0) => bail!("{name}: must be at least 1 second"),
                other => Ok(other.map(Duration::from_secs)),
            }
        };
        Ok(Checked {
            listen,
            local_socket: self.local_socket,
            remote_port: self.remote_port,
            local_address,
            socket_mode,
            max_message_size: self.max_message_size,
            streamed_methods: self.streamed_methods,
            always_fan_out: self.always_fan_out,
            detect_streamed_methods: self.detect_streamed_methods,
            connect_timeout: seconds("connect_timeout_secs", self.connect_timeout_secs)?,
            grace_period: seconds("shutdown_grace_secs", self.shutdown_grace_secs)?,
            worker_threads: self.worker_threads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            local_socket: Some("/run/api.sock".into()),
            ..Default::default()
        }
    }

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    fn error(args: &ServeArgs, text: &str) -> String {
        Settings::merge(args, file(text)).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let s = Settings::merge(&args(), FileConfig::default()).unwrap();
        assert_eq!(s.remote_port, 51000);
        assert_eq!(s.listen, [ListenAddr::Tcp("[::]:51000".parse().unwrap())]);
        assert_eq!(s.socket_mode, 0o660);
        assert_eq!(s.max_message_size, 32 * 1024 * 1024);
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert!(s.registry.is_none() && !s.always_fan_out);
        assert_eq!(s.worker_threads, 1);
    }

    #[test]
    fn flags_override_the_file() {
        let text = r#"
            listen = ["unix:/run/a.sock"]
            remote_port = 52000
            local_address = "fd00::1"
            local_socket = "/from/file.sock"
            streamed_methods = ["/a.B/Watch"]
            [[machines]]
            id = "m1"
            name = "alpha"
            addr = "fd00::1"
        "#;
        let mut a = ServeArgs::default();
        let s = Settings::merge(&a, file(text)).unwrap();
        assert_eq!(s.local_socket, PathBuf::from("/from/file.sock"));
        assert_eq!(s.listen, [ListenAddr::Unix("/run/a.sock".into())]);
        assert_eq!(s.remote_port, 52000);
        assert_eq!(s.streamed_methods, ["/a.B/Watch"]);
        assert_eq!(s.registry.unwrap().machines().len(), 1);
        a.remote_port = Some(53000);
        a.listen = vec!["[::1]:7000".into()];
        a.local_socket = Some("/from/flag.sock".into());
        let s = Settings::merge(&a, file(text)).unwrap();
        assert_eq!(
            (s.remote_port, s.local_socket),
            (53000, PathBuf::from("/from/flag.sock"))
        );
        assert_eq!(s.listen, [ListenAddr::Tcp("[::1]:7000".parse().unwrap())]);
    }

    #[test]
    fn every_bad_value_names_its_setting() {
        let a = args();
        assert!(error(&ServeArgs::default(), "").starts_with("local_socket:"));
        assert!(error(&a, r#"listen = ["nowhere"]"#).starts_with("listen:"));
        assert!(error(&a, "remote_port = 0").starts_with("remote_port:"));
        assert!(error(&a, r#"local_address = "10.0.0.1""#).starts_with("local_address:"));
        assert!(error(&a, r#"socket_mode = "999""#).starts_with("socket_mode:"));
        assert!(error(&a, "max_message_size = 0").starts_with("max_message_size:"));
        assert!(error(&a, r#"streamed_methods = ["Watch"]"#).starts_with("streamed_methods:"));
        assert!(error(&a, "connect_timeout_secs = 0").starts_with("connect_timeout_secs:"));
        assert!(error(&a, "shutdown_grace_secs = 0").starts_with("shutdown_grace_secs:"));
        assert!(error(&a, "worker_threads = 0").starts_with("worker_threads:"));
        assert!(error(&a, "worker_threads = 1000").starts_with("worker_threads:"));
        let dup = r#"
            [[machines]]
            id = "m1"
            name = "a"
            addr = "fd00::1"
            [[machines]]
            id = "m1"
            name = "b"
            addr = "fd00::2"
        "#;
        assert!(error(&a, dup).starts_with("machines:"));
        assert!(toml::from_str::<FileConfig>("unknown_key = 1").is_err());
        // A bad file value is reported even where a flag overrides it.
        let overriding = ServeArgs {
            listen: vec!["[::1]:7000".into()],
            ..args()
        };
        assert!(error(&overriding, r#"listen = ["localhost:80"]"#).starts_with("listen:"));
    }

    #[test]
    fn reload_names_what_needs_a_restart() {
        let running = Settings::merge(&args(), FileConfig::default()).unwrap();
        let same = Settings::merge(&args(), file(r#"local_address = "fd00::1""#)).unwrap();
        assert!(same.needing_restart(&running).is_empty());
        let changed = Settings::merge(
            &args(),
            file(
                r#"listen = ["[::1]:1"]
            streamed_methods = ["/a.B/C"]"#,
            ),
        )
        .unwrap();
        assert_eq!(
            changed.needing_restart(&running),
            ["listen", "streamed_methods"]
        );
    }
}
