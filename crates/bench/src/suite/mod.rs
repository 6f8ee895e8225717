//! The benchmark suite: one command that starts the sample backends, one
//! Switchyard daemon per simulated machine (each a child process on `[::1]`
//! with its own port, all knowing each other through a registry), nginx as
//! the reference one-to-one proxy, and the load generator; measures every
//! scenario at concurrency 1 and 32, interleaved, several repetitions; and
//! writes `docs/PERFORMANCE.md` with a chart.
//!
//! Scenarios (unary calls echo a small payload; streams are 64 KiB × 200):
//!
//! | key | path of a call |
//! |---|---|
//! | `direct` | generator → backend (Unix socket): the limit |
//! | `local` | generator → Switchyard m0 → backend m0 (no metadata: one-to-one) |
//! | `two-hops` | generator → Switchyard m0 → Switchyard m1 → backend m1 (`machine: m1`) |
//! | `nginx` | generator → nginx `grpc_pass` → backend m0 |
//! | `relay-h2`, `relay-hyper` | generator → bare relay (`switchyard-bench relay`) on h2 or on hyper → backend m0: what any HTTP/2 hop, and hyper's layers, cost |
//! | `local-metrics` | as `local`, through a daemon that serves metrics (records every call) |
//! | `fanout-N` | generator → Switchyard m0 → m0…m(N-1) (`machines: m0 … m(N-1)`) |
//! | `two-hops-tls`, `fanout-N-tls` | as their plaintext twins, every hop mutual TLS (daemons `t0…`) |
//! | `fanout-N-envelope` | as `fanout-N`, answered in the envelope (`switchyard-reply: envelope`) |
//! | `stream-*` | server streaming, direct / local / two hops |
//!
//! Besides calls/s and latency, each run reads the CPU time of the daemon
//! the calls enter (`/proc/<pid>/stat`), per call; and the memory of m0's
//! daemon is read before the load and a while after it.
//!
//! Repetitions are interleaved (every scenario once, then again), so a
//! disturbance of the machine hits all of them alike; the document reports
//! medians and every repetition's raw figure.

mod chart;
mod doc;
mod procs;
mod quiet;
mod rss;
mod sysinfo;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::client::CallKind;
use crate::report::{Report, micros};
use procs::{Binaries, Certs, Machine, Variant};
use rss::MemoryFigures;
use switchyard_engine::Address;
use sysinfo::MachineDescription;

/// Flags of `switchyard-bench suite`.
#[derive(Debug, Clone, clap::Args)]
pub struct SuiteArgs {
    /// Smoke mode for CI: few scenarios, one short repetition, a small
    /// memory test; figures go to the run directory, not to docs/.
    #[arg(long)]
    pub quick: bool,
    /// Repetitions of every scenario [default: 3, quick: 1].
    #[arg(long)]
    pub reps: Option<usize>,
    /// Seconds measured per run [default: 4, quick: 0.5].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of warm-up per run [default: 1, quick: 0.2].
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Payload of unary calls, in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// HTTP/2 connections of the generator at concurrency 32.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub load_threads: usize,
    /// Open streams of the memory measurement [default: 1000, quick: 100].
    #[arg(long)]
    pub streams: Option<usize>,
    /// Skip nginx.
    #[arg(long)]
    pub no_nginx: bool,
    /// Never install nginx with apt-get (it is used only if present).
    #[arg(long)]
    pub no_install: bool,
    /// Where PERFORMANCE.md and performance.png go [default: the workspace's
    /// docs/, or the run directory with --quick].
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// The switchyard binary [default: next to this one, built with cargo if
    /// missing].
    #[arg(long, value_name = "PATH")]
    pub switchyard: Option<PathBuf>,
    /// Keep the run directory (sockets, configs, logs, every report).
    #[arg(long)]
    pub keep: bool,
}

/// Which table and chart panel a scenario belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    Unary,
    FanOut,
    Stream,
}

/// One way of making a call.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) key: String,
    pub(crate) label: String,
    pub(crate) short: String,
    pub(crate) group: Group,
    pub(crate) fanout: Option<usize>,
    pub(crate) kind: CallKind,
    pub(crate) payload: usize,
    pub(crate) count: u32,
    pub(crate) target: Address,
    pub(crate) metadata: Vec<(String, String)>,
    /// The proxy the calls enter, whose CPU time (with its child
    /// processes: nginx's workers) is measured.
    pub(crate) entry_pid: Option<u32>,
    /// The one backend the calls end at, whose CPU time is measured.
    pub(crate) backend_pid: Option<u32>,
    /// The generator's mutual TLS files `(cert, key, ca)`, for TLS targets.
    pub(crate) tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

/// Median figures of a scenario at one concurrency.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Figures {
    pub(crate) calls_per_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) mb_per_s: f64,
    pub(crate) errors: u64,
    pub(crate) cpu: CallCpu,
}

/// Where the CPU of a run went: time per call of each process (user +
/// system, in microseconds, 0 where not measured) and the machine's idle
/// share, which tells a CPU-bound run from one whose processes wait for
/// each other.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CallCpu {
    /// The entry proxy (Switchyard's entry daemon, nginx).
    pub(crate) proxy_us: f64,
    /// The backend, for scenarios that end at one.
    pub(crate) backend_us: f64,
    /// The load generator.
    pub(crate) generator_us: f64,
    /// Share of the machine's capacity left idle, 0–1.
    pub(crate) idle: f64,
}

/// Every repetition of a scenario at one concurrency, and their medians.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub(crate) scenario: Scenario,
    pub(crate) concurrency: usize,
    pub(crate) runs: Vec<Report>,
    /// Share of the machine used by other processes during each run.
    pub(crate) foreign: Vec<f64>,
    /// Where the CPU of each run went.
    pub(crate) cpu: Vec<CallCpu>,
    pub(crate) median: Figures,
}

/// How the suite ran.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    pub(crate) quick: bool,
    pub(crate) reps: usize,
    pub(crate) duration: f64,
    pub(crate) warmup: f64,
    pub(crate) payload: usize,
    pub(crate) connections: usize,
    pub(crate) load_threads: usize,
    pub(crate) stream_count: u32,
    pub(crate) stream_size: usize,
    pub(crate) machines: usize,
    pub(crate) elapsed: Duration,
}

/// Everything the document and the chart are made of.
#[derive(Debug)]
pub(crate) struct Results {
    pub(crate) outcomes: Vec<Outcome>,
    pub(crate) memory: Result<MemoryFigures, String>,
    pub(crate) loaded_peak_kib: Option<u64>,
    /// m0's daemon: RSS before any load, and RSS a while after the last run.
    pub(crate) after_load: Option<AfterLoad>,
    pub(crate) machine: MachineDescription,
    pub(crate) nginx: Result<String, String>,
    pub(crate) settings: RunSettings,
}

/// Whether a daemon gives memory back after load.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AfterLoad {
    /// RSS once started, before any load, in KiB.
    pub(crate) idle_rss_kib: u64,
    /// RSS `wait` after the last run, in KiB.
    pub(crate) after_rss_kib: u64,
    /// How long after the last run.
    pub(crate) wait: Duration,
}

impl Results {
    pub(crate) fn get(&self, key: &str, concurrency: usize) -> Option<&Outcome> {
        self.outcomes
            .iter()
            .find(|o| o.scenario.key == key && o.concurrency == concurrency)
    }

    pub(crate) fn figures(&self, key: &str, concurrency: usize) -> Option<Figures> {
        self.get(key, concurrency).map(|o| o.median)
    }
}

/// The concurrencies every scenario runs at.
pub(crate) const CONCURRENCY: [usize; 2] = [1, 32];
/// Before a run, wait until other processes use less than this share of
/// the machine…
const QUIET: f64 = 0.05;
/// …for at most this long;
const QUIET_WAIT: Duration = Duration::from_secs(30);
/// and for at most this long over the whole suite.
const QUIET_BUDGET: Duration = Duration::from_secs(600);
/// A run during which other processes used more than this share of the
/// machine is measured again (twice at most).
const DISTURBED: f64 = 0.10;
/// The stacks of the bare relays (`switchyard-bench relay --stack`).
const RELAYS: [&str; 2] = ["h2", "hyper"];
/// Fan-out widths.
const FANOUT_FULL: [usize; 5] = [1, 3, 4, 8, 16];
const FANOUT_QUICK: [usize; 2] = [1, 3];
/// Fan-out widths also measured in the envelope, beside the tagged shape.
const ENVELOPE_FULL: [usize; 2] = [4, 16];
const ENVELOPE_QUICK: [usize; 1] = [3];
/// Machines with mutual TLS (their fan-out width).
const TLS_FULL: usize = 4;
const TLS_QUICK: usize = 3;
/// How long after the last run m0's memory is read again.
const AFTER_LOAD_FULL: Duration = Duration::from_secs(60);
const AFTER_LOAD_QUICK: Duration = Duration::from_secs(3);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Finds (or builds) the `switchyard` binary of the same profile as this one.
fn binaries(args: &SuiteArgs) -> anyhow::Result<Binaries> {
    let bench = std::env::current_exe().context("cannot locate switchyard-bench")?;
    if let Some(path) = &args.switchyard {
        return Ok(Binaries {
            bench,
            switchyard: path.clone(),
        });
    }
    let dir = bench
        .parent()
        .context("switchyard-bench has no directory")?;
    let switchyard = dir.join("switchyard");
    // Under cargo, make sure the daemon is fresh; otherwise use what is there.
    let cargo = std::env::var_os("CARGO");
    if cargo.is_some() || !switchyard.exists() {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(cargo.unwrap_or_else(|| "cargo".into()));
        build.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            "switchyard",
            "--bin",
            "switchyard",
        ]);
        if release {
            build.arg("--release");
        }
        eprintln!("suite: building the switchyard daemon ({build:?})");
        let status = build.status().context("cannot run cargo")?;
        if !status.success() {
            bail!("building the switchyard daemon failed");
        }
    }
    if !switchyard.exists() {
        bail!(
            "no switchyard binary at {}; pass --switchyard PATH",
            switchyard.display()
        );
    }
    Ok(Binaries { bench, switchyard })
}

/// The daemons a run drives, besides the machines.
struct Extras<'a> {
    nginx: Option<&'a procs::Nginx>,
    relays: &'a [procs::Relay],
    metrics: Option<&'a Variant>,
    tls: Option<(&'a [Variant], &'a Certs)>,
}

fn scenarios(
    machines: &[Machine],
    extras: &Extras<'_>,
    quick: bool,
    payload: usize,
    stream: (u32, usize),
) -> Vec<Scenario> {
    let m0 = &machines[0];
    let m0_pid = Some(m0.daemon.pid());
    let (b0, b1) = (Some(m0.backend.pid()), Some(machines[1].backend.pid()));
    let unary = |key: &str, label: &str, short: &str, target: Address, metadata| Scenario {
        key: key.into(),
        label: label.into(),
        short: short.into(),
        group: Group::Unary,
        fanout: None,
        kind: CallKind::Unary,
        payload,
        count: 1,
        target,
        metadata,
        entry_pid: m0_pid,
        backend_pid: b0,
        tls: None,
    };
    let fan_out = |mut s: Scenario, n: usize| {
        s.group = Group::FanOut;
        s.fanout = Some(n);
        s.backend_pid = None;
        s
    };
    let mut direct = unary(
        "direct",
        "direct to the backend (Unix socket)",
        "direct",
        m0.backend_target(),
        vec![],
    );
    direct.entry_pid = None;
    let mut two_hops = unary(
        "two-hops",
        "Switchyard, two hops (machine: m1)",
        "2 hops",
        m0.proxy_target(),
        vec![("machine".into(), machines[1].name.clone())],
    );
    two_hops.backend_pid = b1;
    let mut out = vec![
        direct,
        unary(
            "local",
            "Switchyard, local one-to-one",
            "local",
            m0.proxy_target(),
            vec![],
        ),
        two_hops,
    ];
    if let Some(nginx) = extras.nginx {
        let mut s = unary(
            "nginx",
            "nginx grpc_pass (one-to-one)",
            "nginx",
            nginx.target(),
            vec![],
        );
        s.entry_pid = Some(nginx.pid());
        out.push(s);
    }
    for relay in extras.relays {
        let mut s = unary(
            &format!("relay-{}", relay.stack),
            &format!("bare {} relay (no proxy logic)", relay.stack),
            relay.stack,
            procs::loopback(relay.port),
            vec![],
        );
        s.entry_pid = Some(relay.proc.pid());
        out.push(s);
    }
    if let Some(metrics) = extras.metrics {
        let mut s = unary(
            "local-metrics",
            "Switchyard, local one-to-one, metrics on",
            "metrics",
            metrics.target(),
            vec![],
        );
        s.entry_pid = Some(metrics.daemon.pid());
        out.push(s);
    }
    if let Some((tls, certs)) = extras.tls {
        let files = certs.files("bench");
        let mut s = unary(
            "two-hops-tls",
            "Switchyard, two hops, mutual TLS on both",
            "2 hops TLS",
            tls[0].target(),
            vec![("machine".into(), tls[1].name.clone())],
        );
        s.entry_pid = Some(tls[0].daemon.pid());
        s.backend_pid = b1;
        s.tls = Some(files.clone());
        out.push(s);
    }
    let widths: &[usize] = if quick { &FANOUT_QUICK } else { &FANOUT_FULL };
    for &n in widths.iter().filter(|&&n| n <= machines.len()) {
        let s = unary(
            &format!("fanout-{n}"),
            &format!(
                "Switchyard, fan-out to {n} machine{}",
                if n == 1 { "" } else { "s" }
            ),
            &format!("fan {n}"),
            m0.proxy_target(),
            machines[..n]
                .iter()
                .map(|m| ("machines".to_owned(), m.name.clone()))
                .collect(),
        );
        out.push(fan_out(s, n));
    }
    // Kept out of the fan-out group: its scaling table and per-machine CPU
    // are the tagged shape's; these rows stand beside them in the main one.
    let envelope: &[usize] = if quick {
        &ENVELOPE_QUICK
    } else {
        &ENVELOPE_FULL
    };
    for &n in envelope.iter().filter(|&&n| n <= machines.len()) {
        let mut metadata: Vec<(String, String)> = machines[..n]
            .iter()
            .map(|m| ("machines".to_owned(), m.name.clone()))
            .collect();
        metadata.push(("switchyard-reply".into(), "envelope".into()));
        let mut s = unary(
            &format!("fanout-{n}-envelope"),
            &format!("Switchyard, fan-out to {n} machines, envelope"),
            &format!("fan {n} env"),
            m0.proxy_target(),
            metadata,
        );
        s.fanout = Some(n);
        s.backend_pid = None;
        out.push(s);
    }
    if let Some((tls, certs)) = extras.tls {
        let n = tls.len();
        let mut s = unary(
            &format!("fanout-{n}-tls"),
            &format!("Switchyard, fan-out to {n} machines, mutual TLS"),
            &format!("fan {n} TLS"),
            tls[0].target(),
            tls.iter()
                .map(|t| ("machines".to_owned(), t.name.clone()))
                .collect(),
        );
        s.entry_pid = Some(tls[0].daemon.pid());
        s.tls = Some(certs.files("bench"));
        out.push(fan_out(s, n));
    }
    let (count, size) = stream;
    let streamed = |key: &str, label: &str, short: &str, target: Address, metadata| Scenario {
        key: key.into(),
        label: label.into(),
        short: short.into(),
        group: Group::Stream,
        fanout: None,
        kind: CallKind::ServerStream,
        payload: size,
        count,
        target,
        metadata,
        entry_pid: m0_pid,
        backend_pid: b0,
        tls: None,
    };
    let mut stream_direct = streamed(
        "stream-direct",
        "stream, direct (Unix socket)",
        "direct",
        m0.backend_target(),
        vec![],
    );
    stream_direct.entry_pid = None;
    out.push(stream_direct);
    out.push(streamed(
        "stream-local",
        "stream, Switchyard local",
        "local",
        m0.proxy_target(),
        vec![],
    ));
    if !quick {
        let mut s = streamed(
            "stream-two-hops",
            "stream, Switchyard two hops",
            "2 hops",
            m0.proxy_target(),
            vec![("machine".into(), machines[1].name.clone())],
        );
        s.backend_pid = b1;
        out.push(s);
    }
    out
}

/// Runs the load generator as a child process and reads its JSON line.
fn run_load(
    bins: &Binaries,
    settings: &RunSettings,
    scenario: &Scenario,
    concurrency: usize,
) -> anyhow::Result<Report> {
    let connections = if concurrency == 1 {
        1
    } else {
        settings.connections.min(concurrency)
    };
    let mut command = Command::new(&bins.bench);
    command
        .arg("load")
        .arg("--target")
        .arg(scenario.target.to_string())
        .args(["--kind", kind_arg(scenario.kind)])
        .args(["--payload", &scenario.payload.to_string()])
        .args(["--count", &scenario.count.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--connections", &connections.to_string()])
        .args(["--warmup", &settings.warmup.to_string()])
        .args(["--duration", &settings.duration.to_string()])
        .args(["--threads", &settings.load_threads.to_string()])
        .args(["--format", "json"]);
    if let Some((cert, key, ca)) = &scenario.tls {
        command
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .arg("--tls-ca")
            .arg(ca);
    }
    for (key, value) in &scenario.metadata {
        match key.as_str() {
            "machines" => command.args(["--machines", value]),
            "machine" => command.args(["--machine", value]),
            _ => command.args(["--metadata", &format!("{key}={value}")]),
        };
    }
    let bound = Duration::from_secs_f64(settings.warmup + settings.duration + 60.0);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the load generator")?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the load generator ran past {bound:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "load generator failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the load generator printed no JSON line")?;
    serde_json::from_str(line).context("unreadable JSON line from the load generator")
}

fn kind_arg(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Unary => "unary",
        CallKind::ServerStream => "server-stream",
        CallKind::Bidi => "bidi",
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn medians(runs: &[Report], cpu: &[CallCpu]) -> Figures {
    let m = |f: fn(&Report) -> f64| median(runs.iter().map(f).collect());
    let c = |f: fn(&CallCpu) -> f64| median(cpu.iter().map(f).collect());
    Figures {
        calls_per_s: m(|r| r.calls_per_s),
        p50_us: m(|r| r.p50_us),
        p99_us: m(|r| r.p99_us),
        mb_per_s: m(|r| r.mb_per_s),
        errors: runs.iter().map(|r| r.errors).sum(),
        cpu: CallCpu {
            proxy_us: c(|c| c.proxy_us),
            backend_us: c(|c| c.backend_us),
            generator_us: c(|c| c.generator_us),
            idle: c(|c| c.idle),
        },
    }
}

/// Runs the suite.
pub fn run(args: &SuiteArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let quick = args.quick;
    let bins = binaries(args)?;
    let dir = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(args, &bins, &dir, started);
    if args.keep || quick {
        eprintln!("suite: run directory kept at {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(args: &SuiteArgs, bins: &Binaries, dir: &Path, started: Instant) -> anyhow::Result<()> {
    let quick = args.quick;
    let (stream_count, stream_size) = if quick {
        (20, 64 * 1024)
    } else {
        (200, 64 * 1024)
    };
    let mut settings = RunSettings {
        quick,
        reps: args.reps.unwrap_or(if quick { 1 } else { 3 }).max(1),
        duration: args.duration.unwrap_or(if quick { 0.5 } else { 4.0 }),
        warmup: args.warmup.unwrap_or(if quick { 0.2 } else { 1.0 }),
        payload: args.payload,
        connections: args.connections.max(1),
        load_threads: args.load_threads.max(1),
        stream_count,
        stream_size,
        machines: if quick { 3 } else { 16 },
        elapsed: Duration::ZERO,
    };
    let machine = sysinfo::describe();
    let nginx_version = if args.no_nginx {
        Err("skipped (--no-nginx)".to_owned())
    } else {
        procs::ensure_nginx(!args.no_install && !quick)
    };
    if let Err(why) = &nginx_version {
        eprintln!("suite: nginx: {why}");
    }

    eprintln!(
        "suite: starting {} machines (backend + switchyard each) in {}",
        settings.machines,
        dir.display()
    );
    let mut machines = procs::start_machines(bins, dir, settings.machines)?;
    let nginx = match &nginx_version {
        Ok(version) => {
            let port = procs::free_ports(1)?[0];
            match procs::start_nginx(dir, version.clone(), &machines[0].socket, port) {
                Ok(nginx) => Some(nginx),
                Err(err) => {
                    eprintln!("suite: nginx did not start: {err:#}");
                    None
                }
            }
        }
        Err(_) => None,
    };
    let nginx_status = match (&nginx, nginx_version) {
        (Some(n), _) => Ok(n.version.clone()),
        (None, Ok(_)) => Err("installed but did not start (see the suite's output)".into()),
        (None, Err(why)) => Err(why),
    };

    let mut relays = Vec::new();
    for (stack, port) in RELAYS.into_iter().zip(procs::free_ports(RELAYS.len())?) {
        relays.push(procs::start_relay(
            bins,
            dir,
            &machines[0].socket,
            stack,
            port,
        )?);
    }
    let mut metrics = procs::start_metrics_daemon(bins, dir, &machines[0])?;
    let tls_count = if quick { TLS_QUICK } else { TLS_FULL }.min(machines.len());
    let (mut tls, certs) = procs::start_tls_machines(bins, dir, &machines, tls_count)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss_kib = sysinfo::memory_kib(machines[0].daemon.pid())
        .ok()
        .map(|(rss, _)| rss);
    let extras = Extras {
        nginx: nginx.as_ref(),
        relays: &relays,
        metrics: Some(&metrics),
        tls: Some((&tls, &certs)),
    };
    let scenarios = scenarios(
        &machines,
        &extras,
        quick,
        settings.payload,
        (stream_count, stream_size),
    );
    let mut outcomes: Vec<Outcome> = scenarios
        .iter()
        .flat_map(|s| {
            CONCURRENCY.iter().map(|&c| Outcome {
                scenario: s.clone(),
                concurrency: c,
                runs: Vec::new(),
                foreign: Vec::new(),
                cpu: Vec::new(),
                median: Figures::default(),
            })
        })
        .collect();
    let total = outcomes.len() * settings.reps;
    let mut done = 0;
    let mut quiet_budget = if quick {
        Duration::from_secs(5)
    } else {
        QUIET_BUDGET
    };
    for rep in 1..=settings.reps {
        for outcome in &mut outcomes {
            for m in &mut machines {
                m.daemon.check_alive()?;
                m.backend.check_alive()?;
            }
            for v in std::iter::once(&mut metrics).chain(&mut tls) {
                v.daemon.check_alive()?;
            }
            for relay in &mut relays {
                relay.proc.check_alive()?;
            }
            done += 1;
            let mut retries = 0;
            let (report, foreign, cpu) = loop {
                let bound = QUIET_WAIT.min(quiet_budget);
                let waited = Instant::now();
                quiet::wait_quiet(QUIET, bound);
                quiet_budget = quiet_budget.saturating_sub(waited.elapsed());
                let before = quiet::sample();
                let pids = [outcome.scenario.entry_pid, outcome.scenario.backend_pid];
                let cpu_before = sysinfo::trees_cpu_seconds(pids);
                let report = run_load(bins, &settings, &outcome.scenario, outcome.concurrency)
                    .with_context(|| {
                        format!(
                            "{} at concurrency {}",
                            outcome.scenario.key, outcome.concurrency
                        )
                    })?;
                let after = quiet::sample();
                let foreign = quiet::foreign_share(before, after, report.generator_cpu_s);
                if foreign > DISTURBED && retries < 2 && !quiet_budget.is_zero() && !quick {
                    retries += 1;
                    eprintln!(
                        "[{done:>3}/{total}] rep {rep} {:<16} c={:<3} disturbed: other processes used {:.0}% of the machine; measuring again",
                        outcome.scenario.key,
                        outcome.concurrency,
                        foreign * 100.0
                    );
                    continue;
                }
                // Warm-up calls ran too: count them at the measured rate.
                let calls = report.calls_per_s * (settings.warmup + settings.duration);
                let per_call = |seconds: f64| {
                    if calls > 0.0 {
                        seconds * 1e6 / calls
                    } else {
                        0.0
                    }
                };
                let cpu_after = sysinfo::trees_cpu_seconds(pids);
                let used = |i: usize| match (cpu_before[i], cpu_after[i]) {
                    (Some(a), Some(b)) => per_call(b - a),
                    _ => 0.0,
                };
                let cpu = CallCpu {
                    proxy_us: used(0),
                    backend_us: used(1),
                    generator_us: per_call(report.generator_cpu_s),
                    idle: quiet::idle_share(before, after),
                };
                break (report, foreign, cpu);
            };
            eprintln!(
                "[{done:>3}/{total}] rep {rep} {:<16} c={:<3} {:>9.0} calls/s  p50 {:>9}  p99 {:>9}  {:>8.1} MB/s  {} error(s)  proxy CPU {:>6.1} µs/call  idle {:>3.0}%  other CPU {:>3.0}%",
                outcome.scenario.key,
                outcome.concurrency,
                report.calls_per_s,
                micros(report.p50_us),
                micros(report.p99_us),
                report.mb_per_s,
                report.errors,
                cpu.proxy_us,
                cpu.idle * 100.0,
                foreign * 100.0
            );
            outcome.runs.push(report);
            outcome.foreign.push(foreign);
            outcome.cpu.push(cpu);
        }
    }
    for outcome in &mut outcomes {
        outcome.median = medians(&outcome.runs, &outcome.cpu);
    }
    let m0 = machines[0].daemon.pid();
    let loaded_peak_kib = sysinfo::memory_kib(m0).ok().map(|(_, hwm)| hwm);
    let wait = if quick {
        AFTER_LOAD_QUICK
    } else {
        AFTER_LOAD_FULL
    };
    eprintln!("suite: m0's memory {} s after the load", wait.as_secs());
    std::thread::sleep(wait);
    let after_load = match (idle_rss_kib, sysinfo::memory_kib(m0)) {
        (Some(idle_rss_kib), Ok((after_rss_kib, _))) => Some(AfterLoad {
            idle_rss_kib,
            after_rss_kib,
            wait,
        }),
        _ => None,
    };

    let streams = args.streams.unwrap_or(if quick { 100 } else { 1000 });
    eprintln!("suite: memory of a fresh daemon, idle and with {streams} open streams");
    let memory =
        rss::measure(bins, dir, &machines[0].socket, streams).map_err(|e| format!("{e:#}"));
    if let Err(err) = &memory {
        eprintln!("suite: memory measurement failed: {err}");
    }
    drop(nginx);
    drop((metrics, tls));
    drop(machines);

    settings.elapsed = started.elapsed();
    let results = Results {
        outcomes,
        memory,
        loaded_peak_kib,
        after_load,
        machine,
        nginx: nginx_status,
        settings,
    };
    println!("{}", doc::summary(&results));

    let out_dir = match &args.out_dir {
        Some(dir) => dir.clone(),
        None if quick => dir.to_owned(),
        None => workspace_root().join("docs"),
    };
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let chart = out_dir.join("performance.png");
    chart::draw(&results, &chart).context("cannot draw the chart")?;
    let doc_path = out_dir.join("PERFORMANCE.md");
    doc::write(&results, &doc_path, "performance.png")?;
    let raw = out_dir.join("performance-runs.jsonl");
    let lines: Vec<String> = results
        .outcomes
        .iter()
        .flat_map(|o| o.runs.iter().map(Report::json_line))
        .collect();
    std::fs::write(&raw, lines.join("\n") + "\n")?;
    eprintln!(
        "suite: wrote {}, {} and {} in {:.0} s",
        doc_path.display(),
        chart.display(),
        raw.display(),
        results.settings.elapsed.as_secs_f64()
    );

    let broken: Vec<String> = results
        .outcomes
        .iter()
        .filter(|o| o.median.errors > 0 || o.runs.iter().any(|r| r.calls == 0))
        .map(|o| format!("{} c={}", o.scenario.key, o.concurrency))
        .collect();
    if !broken.is_empty() {
        bail!(
            "calls failed or none succeeded in: {} (see the reports above)",
            broken.join(", ")
        );
    }
    Ok(())
}
