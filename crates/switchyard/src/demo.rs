//! `switchyard demo`: a three-machine cluster on IPv6 loopback in one
//! process, each machine with its own `machine-info` service on a Unix
//! socket and its own Switchyard, and a tour of what a client can ask.
//! Runs as any user: machines share `::1` and differ by port.
//!
//! Each step prints the `switchyard call` command that asks the same, so
//! that, with `--keep` (the cluster keeps running until ctrl-c), a user can
//! repeat it by hand and go on from there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use machine_info::pb::machine_info_client::MachineInfoClient;
use machine_info::pb::{DescribeRequest, Description, Metadata, WatchRequest};
use switchyard_director::pb::ListMachinesRequest;
use switchyard_director::pb::switchyard::v1::cluster_client::ClusterClient;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::cluster::LoopbackCluster;
use crate::config::Secs;

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
}

/// The streamed method of the sample API.
pub const WATCH: &str = "/machineinfo.v1.MachineInfo/Watch";

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Runs the demo, printing what each call returned.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let parent = args.dir.unwrap_or_else(std::env::temp_dir);
    // A fresh directory of our own: removing it at the end removes nothing
    // the user had.
    let dir = tempfile::Builder::new()
        .prefix("switchyard-demo-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
    tour(dir.path(), args.keep).await
}

async fn tour(dir: &std::path::Path, keep: bool) -> anyhow::Result<()> {
    let mut cluster = LoopbackCluster::start(dir, &NAMES, |_, settings| {
        // Learned from each machine's own service (gRPC reflection).
        settings.start.connect_timeout_secs = Secs(Duration::from_secs(2));
        settings.start.shutdown_grace_secs = Secs(Duration::from_secs(1));
    })
    .await?;
    let machines = &mut cluster.machines;
    println!(
        "A cluster of {} machines on [::1], each with a machine-info service and a Switchyard:",
        machines.len()
    );
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

    section("6. gamma's Switchyard stops too: UNAVAILABLE entry, bounded, no stall for the others");
    shell.call(&["-m", "'*'", DESCRIBE]);
    if let Some(proxy) = machines[2].daemon.take() {
        proxy.shutdown().await?;
    }
    let started = Instant::now();
    let reply = client.describe(with_machines(&["*"])).await?.into_inner();
    print_descriptions(&reply.messages);
    println!("  (answered in {:?})", started.elapsed());

    section("7. What alpha's Switchyard knows of the machines (answered by alpha itself)");
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
