//! `switchyard demo`: a three-machine cluster on IPv6 loopback in one
//! process, each machine with its own `machine-info` service on a Unix
//! socket and its own Switchyard, and a tour of what a client can ask.
//! Runs as any user: machines share `::1` and differ by port.
//!
//! Each step prints the `switchyard call` command that asks the same, so
//! that, with `--keep` (the cluster keeps running until ctrl-c), a user can
//! repeat it by hand and go on from there.
//!
//! With `--etcd` the registry is in a loopback etcd the demo starts: the
//! machines register themselves, a fourth machine joins as a real
//! `switchyard serve` process, is killed, and goes down by heartbeat.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use machine_info::pb::machine_info_client::MachineInfoClient;
use machine_info::pb::{DescribeRequest, Description, Metadata, WatchRequest};
use switchyard_director::pb::ListMachinesRequest;
use switchyard_director::pb::switchyard::v1::cluster_client::ClusterClient;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::LoopbackCluster;
use crate::config::{EtcdEndpoint, EtcdSettings, Secs};
use crate::daemon::Daemon;
use crate::etcd::LocalEtcd;

/// Flags of `switchyard demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where to create the demo's own directory for the machines' Unix
    /// sockets (removed at the end; nothing else in DIR is touched)
    /// [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// After the tour, keep the cluster running (every machine up again)
    /// until ctrl-c, to try `switchyard call` against it by hand.
    #[arg(long)]
    pub keep: bool,
    /// Keep the machine registry in etcd: start an etcd on loopback (needs
    /// the `etcd` binary, Debian's etcd-server), let the machines register
    /// themselves, and show a machine going down by heartbeat.
    #[arg(long)]
    pub etcd: bool,
}

/// The streamed method of the sample API.
pub const WATCH: &str = "/machineinfo.v1.MachineInfo/Watch";

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Heartbeat TTL of the demo's machines: short, so that a crash shows soon.
const HEARTBEAT_TTL: Duration = Duration::from_secs(2);

/// Runs the demo, printing what each call returned.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let parent = args.dir.unwrap_or_else(std::env::temp_dir);
    // A fresh directory of our own: removing it at the end removes nothing
    // the user had.
    let dir = tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    let etcd = match args.etcd {
        true => Some(LocalEtcd::start(dir.path()).await?),
        false => None,
    };
    tour(dir.path(), etcd.as_ref(), args.keep).await
}

async fn tour(dir: &Path, etcd: Option<&LocalEtcd>, keep: bool) -> anyhow::Result<()> {
    // Streamed methods are learned from each machine's own service (gRPC
    // reflection).
    let tweak = |_: usize, settings: &mut crate::config::Settings| {
        settings.start.connect_timeout_secs = Secs(Duration::from_secs(2));
        settings.start.shutdown_grace_secs = Secs(Duration::from_secs(1));
    };
    let mut cluster = match etcd {
        None => LoopbackCluster::start(dir, &NAMES, tweak).await?,
        Some(etcd) => {
            let settings = EtcdSettings {
                endpoints: vec![EtcdEndpoint(etcd.endpoint())],
                heartbeat_ttl_secs: Secs(HEARTBEAT_TTL),
                ..EtcdSettings::default()
            };
            let cluster = LoopbackCluster::start_with_etcd(dir, &NAMES, &settings, tweak).await?;
            cluster
                .wait_for_liveness(&NAMES, Duration::from_secs(30))
                .await?;
            cluster
        }
    };
    let machines = &mut cluster.machines;
    println!(
        "A cluster of {} machines on [::1], each with a machine-info service and a Switchyard:",
        machines.len()
    );
    if let Some(etcd) = etcd {
        println!(
            "(registry in etcd at {}: each machine put its entry under /switchyard/machines/ \
             and keeps /switchyard/alive/<id> on a {HEARTBEAT_TTL:?} lease)",
            etcd.endpoint()
        );
    }
    for m in machines.iter() {
        println!(
            "  {} {:6} switchyard at {}  service at unix:{}",
            m.id,
            m.name,
            m.addr,
            m.socket.display()
        );
    }
    let entry = machines[0].addr;
    let mut client = MachineInfoClient::new(channel(entry)?);
    let shell = Shell { via: entry };
    println!(
        "Each step shows the `switchyard call` that asks the same; `switchyard demo --keep` \
         keeps the cluster running to try them."
    );

    section(&format!(
        "1. No routing metadata: machine alpha ({entry}) answers itself"
    ));
    shell.call(&[DESCRIBE]);
    let reply = client.describe(DescribeRequest {}).await?.into_inner();
    print_descriptions(&reply.messages);

    section("2. machines: beta (one machine, two hops: alpha's Switchyard forwards to beta's)");
    shell.call(&["-m", "beta", DESCRIBE]);
    let reply = client
        .describe(with_machines(&["beta"]))
        .await?
        .into_inner();
    print_descriptions(&reply.messages);

    section(
        "3. machines: alpha, beta, gamma (fan-out; replies tagged with each machine, in target order)",
    );
    shell.call(&["-m", "alpha,beta,gamma", DESCRIBE]);
    let reply = client
        .describe(with_machines(&["alpha", "beta", "gamma"]))
        .await?
        .into_inner();
    print_descriptions(&reply.messages);

    section(
        "4. Streaming fan-out: Watch on machines: * (all), 3 ticks each, interleaved as they arrive",
    );
    shell.call(&[
        "-m",
        "'*'",
        WATCH,
        "-d",
        r#"'{"count": 3, "intervalMs": 100}'"#,
    ]);
    let mut request = tonic::Request::new(WatchRequest {
        count: 3,
        interval_ms: 100,
    });
    request.metadata_mut().insert("machines", "*".parse()?);
    println!("  (each Switchyard learned from its service's gRPC reflection that {WATCH} streams)");
    let mut ticks = client.watch(request).await?.into_inner();
    while let Some(tick) = ticks.message().await? {
        println!(
            "  {:28} tick {} from {}",
            machine_label(tick.metadata.as_ref()),
            tick.seq,
            tick.name
        );
    }

    section(
        "5. gamma's machine-info service stops: gamma becomes an error entry, the others still answer",
    );
    shell.call(&["-m", "'*'", DESCRIBE]);
    if let Some(service) = machines[2].service.take() {
        service.stop();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = client.describe(with_machines(&["*"])).await?.into_inner();
    print_descriptions(&reply.messages);

    if let Some(etcd) = etcd {
        let alpha = machines[0].daemon.as_ref().expect("alpha runs");
        heartbeats(dir, etcd, alpha, &mut client).await?;
        section("8. gamma's Switchyard stops: it revokes its heartbeat, so it is down at once");
    } else {
        section(
            "6. gamma's Switchyard stops too: UNAVAILABLE entry, bounded, no stall for the others",
        );
    }
    shell.call(&["-m", "'*'", DESCRIBE]);
    if let Some(proxy) = machines[2].daemon.take() {
        proxy.shutdown().await?;
    }
    if etcd.is_some() {
        let alpha = machines[0].daemon.as_ref().expect("alpha runs");
        wait_until(
            alpha,
            Duration::from_secs(10),
            "gamma's heartbeat revoked",
            |s| !s.is_alive("m3"),
        )
        .await?;
    }
    let started = Instant::now();
    let reply = client.describe(with_machines(&["*"])).await?.into_inner();
    print_descriptions(&reply.messages);
    println!("  (answered in {:?})", started.elapsed());

    section(&format!(
        "{}. What alpha's Switchyard knows of the machines (answered by alpha itself)",
        if etcd.is_some() { 9 } else { 7 }
    ));
    println!("  $ switchyard machines --via '{entry}'");
    let known = ClusterClient::new(channel(entry)?)
        .list_machines(ListMachinesRequest {})
        .await?
        .into_inner();
    for m in &known.machines {
        let state = format!("{:?}", m.state()).to_lowercase();
        let local = if m.local { " (local)" } else { "" };
        println!(
            "  {} {:6} {:18} {state}{local} {}",
            m.id, m.name, m.addr, m.last_error
        );
    }

    if keep {
        keep_running(&mut cluster).await?;
    }
    cluster.shutdown().await?;
    println!("\nDone.");
    Ok(())
}

/// The describe method of the sample API.
const DESCRIBE: &str = "/machineinfo.v1.MachineInfo/Describe";

/// Prints the shell commands equivalent to the calls the demo makes.
struct Shell {
    via: SocketAddr,
}

impl Shell {
    fn call(&self, args: &[&str]) {
        println!(
            "  $ switchyard call --via '{}' -o table {}",
            self.via,
            args.join(" ")
        );
    }
}

/// Brings every machine up again and serves until ctrl-c.
async fn keep_running(cluster: &mut LoopbackCluster) -> anyhow::Result<()> {
    for m in &mut cluster.machines {
        if m.service.is_none() {
            m.service = Some(
                machine_info::Server::spawn_unix(&m.name, &m.socket)
                    .with_context(|| format!("cannot restart machine-info of {}", m.name))?,
            );
        }
        if m.daemon.is_none() {
            m.daemon = Some(
                crate::daemon::Daemon::start(&m.settings)
                    .await
                    .with_context(|| format!("cannot restart the Switchyard of {}", m.name))?,
            );
        }
    }
    println!("\nThe cluster keeps running (every machine up again) until ctrl-c:");
    for m in &cluster.machines {
        println!(
            "  {} {:6} --via '{}'   service at unix:{}",
            m.id,
            m.name,
            m.addr,
            m.socket.display()
        );
    }
    println!(
        "Try: switchyard machines --via '{}'   (another machine's connection state shows once it was called)",
        cluster.machines[0].addr
    );
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for ctrl-c")?;
    println!("Stopping.");
    Ok(())
}

/// Steps 6 and 7 with etcd: a machine joins as a process of its own, then is
/// killed and goes down by heartbeat.
async fn heartbeats(
    dir: &Path,
    etcd: &LocalEtcd,
    alpha: &Daemon,
    client: &mut MachineInfoClient<Channel>,
) -> anyhow::Result<()> {
    section(
        "6. delta joins: a `switchyard serve` process registers itself in etcd; no restart, no reload",
    );
    let socket = dir.join("delta.sock");
    let _service = machine_info::Server::spawn_unix("delta", &socket)
        .context("cannot start machine-info of delta")?;
    let port = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0))?
        .local_addr()?
        .port();
    let addr = format!("[::1]:{port}");
    let binary = std::env::current_exe().context("cannot find the switchyard binary")?;
    let log = std::fs::File::create(dir.join("delta.log"))?;
    let ttl = HEARTBEAT_TTL.as_secs().to_string();
    let mut delta = tokio::process::Command::new(binary)
        .args(["serve", "--listen", &addr, "--local-address", &addr])
        .arg("--local-socket")
        .arg(&socket)
        .args(["--machine-id", "m4", "--machine-name", "delta"])
        // Loopback is no mesh address: the machines share `::1` only here.
        .args(["--allowed-network", "::1/128"])
        .args(["--etcd-endpoint", &etcd.endpoint(), "--etcd-register"])
        .args(["--etcd-heartbeat-ttl-secs", &ttl])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start delta's switchyard")?;
    let started = Instant::now();
    wait_until(
        alpha,
        Duration::from_secs(30),
        "delta registered and alive",
        |s| s.is_alive("m4"),
    )
    .await?;
    println!(
        "  (pid {}, at {addr}; alpha saw it after {:?})",
        delta.id().unwrap_or_default(),
        started.elapsed()
    );
    let reply = call_until_ok(client, "delta").await?;
    print_descriptions(&reply.messages);
    println!("  and in a fan-out to every machine:");
    let reply = client.describe(with_machines(&["*"])).await?.into_inner();
    print_descriptions(&reply.messages);

    section(
        "7. delta is killed (SIGKILL, no goodbye): within its heartbeat TTL it is down, answered without dialling",
    );
    delta.kill().await.context("cannot kill delta")?;
    let killed = Instant::now();
    println!("  right after the kill, delta still has a heartbeat, so alpha dials it:");
    print_one(client.describe(with_machines(&["delta"])).await);
    wait_until(
        alpha,
        HEARTBEAT_TTL * 10,
        "delta's heartbeat expired",
        |s| !s.is_alive("m4"),
    )
    .await?;
    println!(
        "  {:?} after the kill, etcd dropped delta's liveness key (TTL {HEARTBEAT_TTL:?}); now:",
        killed.elapsed()
    );
    let started = Instant::now();
    print_one(client.describe(with_machines(&["delta"])).await);
    let reply = client.describe(with_machines(&["*"])).await?.into_inner();
    print_descriptions(&reply.messages);
    println!("  (both answered in {:?})", started.elapsed());
    for status in alpha.director().machines() {
        if let switchyard_engine::ChannelState::Down { cause } = &status.state {
            println!("  alpha's view: {} is down ({cause})", status.info.name);
        }
    }
    Ok(())
}

/// Waits, at most `limit`, until `daemon`'s registry from etcd satisfies
/// `check`.
async fn wait_until(
    daemon: &Daemon,
    limit: Duration,
    what: &str,
    check: impl Fn(&switchyard_director::live::Snapshot) -> bool,
) -> anyhow::Result<()> {
    let registry = daemon.etcd_registry().context("no registry in etcd")?;
    let mut snapshots = registry.snapshot();
    match tokio::time::timeout(limit, snapshots.wait_for(|s| check(s))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => bail!("{what}: the registry watcher stopped"),
        Err(_) => bail!("{what}: not within {limit:?}"),
    }
}

/// `Describe` on `machine` until it answers (its Switchyard may still be
/// binding its port), bounded.
async fn call_until_ok(
    client: &mut MachineInfoClient<Channel>,
    machine: &str,
) -> anyhow::Result<machine_info::pb::DescribeResponse> {
    let started = Instant::now();
    loop {
        match client.describe(with_machines(&[machine])).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status) if started.elapsed() > Duration::from_secs(10) => {
                bail!("{machine} does not answer: {status:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

fn with_machines(names: &[&str]) -> tonic::Request<DescribeRequest> {
    let mut request = tonic::Request::new(DescribeRequest {});
    for name in names {
        request
            .metadata_mut()
            .append("machines", name.parse().expect("ASCII machine names"));
    }
    request
}

/// Prints the answer of a one-machine call, or its error status.
fn print_one(result: Result<tonic::Response<machine_info::pb::DescribeResponse>, tonic::Status>) {
    match result {
        Ok(reply) => print_descriptions(&reply.into_inner().messages),
        Err(status) => println!(
            "  {:28} ERROR {:?}: {}",
            "(the call)",
            status.code(),
            status.message()
        ),
    }
}

fn section(title: &str) {
    println!("\n{title}");
}

fn machine_label(metadata: Option<&Metadata>) -> String {
    match metadata {
        None => "(this machine, untagged)".to_owned(),
        Some(m) if m.machine_name.is_empty() => m.machine_addr.clone(),
        Some(m) => format!("{} {} ({})", m.machine_id, m.machine_name, m.machine_addr),
    }
}

fn print_descriptions(entries: &[Description]) {
    for d in entries {
        let label = machine_label(d.metadata.as_ref());
        match d.metadata.as_ref().filter(|m| !m.error.is_empty()) {
            Some(m) => {
                let code = m
                    .status
                    .as_ref()
                    .map(|s| tonic::Code::from_i32(s.code))
                    .unwrap_or(tonic::Code::Unknown);
                println!("  {label:28} ERROR {code:?}: {}", m.error);
            }
            None => {
                let via = if d.proxy_authority.is_empty() {
                    "direct".to_owned()
                } else {
                    format!("via proxy-authority {}", d.proxy_authority)
                };
                println!(
                    "  {label:28} name={} uptime={}s calls={} {via}",
                    d.name, d.uptime_seconds, d.calls
                );
            }
        }
    }
}
