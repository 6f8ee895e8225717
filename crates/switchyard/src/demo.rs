//! `switchyard demo`: a three-machine cluster on IPv6 loopback in one
//! process, each machine with its own `machine-info` service on a Unix
//! socket and its own Switchyard, and a tour of what a client can ask.
//! Runs as any user: machines share `::1` and differ by port.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use machine_info::pb::machine_info_client::MachineInfoClient;
use machine_info::pb::{DescribeRequest, Description, Metadata, WatchRequest};
use switchyard_director::{Machine, Registry};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::config::Settings;
use crate::daemon::Daemon;
use crate::listen::ListenAddr;

/// Flags of `switchyard demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Directory for the machines' Unix sockets [default: a fresh temporary one].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The streamed method of the sample API.
pub const WATCH: &str = "/machineinfo.v1.MachineInfo/Watch";

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// One simulated machine.
struct DemoMachine {
    name: &'static str,
    addr: SocketAddr,
    service: Option<machine_info::Server>,
    proxy: Option<Daemon>,
}

/// Runs the demo, printing what each call returned.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = tour(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn tour(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut machines = start_cluster(dir).await?;
    println!(
        "A cluster of {} machines on [::1], each with a machine-info service and a Switchyard:",
        machines.len()
    );
    for (i, m) in machines.iter().enumerate() {
        println!(
            "  m{} {:6} switchyard at {}  service at unix:{}",
            i + 1,
            m.name,
            m.addr,
            dir.join(format!("{}.sock", m.name)).display()
        );
    }
    let entry = machines[0].addr;
    let mut client = MachineInfoClient::new(channel(entry)?);

    section(&format!(
        "1. No routing metadata: machine alpha ({entry}) answers itself"
    ));
    let reply = client.describe(DescribeRequest {}).await?.into_inner();
    print_descriptions(&reply.messages);

    section("2. machines: beta (one machine, two hops: alpha's Switchyard forwards to beta's)");
    let reply = client
        .describe(with_machines(&["beta"]))
        .await?
        .into_inner();
    print_descriptions(&reply.messages);

    section(
        "3. machines: alpha, beta, gamma (fan-out; replies tagged with each machine, in target order)",
    );
    let reply = client
        .describe(with_machines(&["alpha", "beta", "gamma"]))
        .await?
        .into_inner();
    print_descriptions(&reply.messages);

    let proxy = machines[0].proxy.as_ref().expect("alpha runs");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !proxy.discovered_streamed_methods().contains(WATCH) {
        if Instant::now() > deadline {
            bail!("alpha did not learn that {WATCH} streams");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    section(
        "4. Streaming fan-out: Watch on machines: * (all), 3 ticks each, interleaved as they arrive",
    );
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
    if let Some(service) = machines[2].service.take() {
        service.stop();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = client.describe(with_machines(&["*"])).await?.into_inner();
    print_descriptions(&reply.messages);

    section("6. gamma's Switchyard stops too: UNAVAILABLE entry, bounded, no stall for the others");
    if let Some(proxy) = machines[2].proxy.take() {
        proxy.shutdown().await?;
    }
    let started = Instant::now();
    let reply = client.describe(with_machines(&["*"])).await?.into_inner();
    print_descriptions(&reply.messages);
    println!("  (answered in {:?})", started.elapsed());

    for m in &mut machines {
        m.service.take();
        if let Some(proxy) = m.proxy.take() {
            proxy.shutdown().await?;
        }
    }
    println!("\nDone.");
    Ok(())
}

async fn start_cluster(dir: &std::path::Path) -> anyhow::Result<Vec<DemoMachine>> {
    let mut listeners = Vec::new();
    for _ in NAMES {
        let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
            .await
            .context("the demo needs IPv6 loopback ([::1]); is IPv6 disabled?")?;
        listeners.push(listener);
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let registry = Registry::new(
        NAMES
            .iter()
            .zip(&addrs)
            .enumerate()
            .map(|(i, (name, addr))| {
                Ok(Machine {
                    id: format!("m{}", i + 1),
                    name: (*name).to_owned(),
                    addr: addr.to_string().parse()?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?,
    )?;
    let mut machines = Vec::new();
    for ((name, addr), listener) in NAMES.into_iter().zip(addrs).zip(listeners) {
        let socket = dir.join(format!("{name}.sock"));
        let service = machine_info::Server::spawn_unix(name, &socket)
            .with_context(|| format!("cannot start machine-info of {name}"))?;
        let settings = Settings {
            listen: vec![ListenAddr::Tcp(addr)],
            local_socket: socket,
            remote_port: switchyard_director::DEFAULT_REMOTE_PORT,
            local_address: Some(addr.to_string().parse()?),
            socket_mode: 0o660,
            max_message_size: switchyard_engine::proxy::DEFAULT_MAX_MESSAGE_SIZE,
            // Learned from each machine's own service (gRPC reflection).
            streamed_methods: Vec::new(),
            detect_streamed_methods: true,
            always_fan_out: false,
            connect_timeout: Duration::from_secs(2),
            grace_period: Duration::from_secs(1),
            worker_threads: crate::config::DEFAULT_WORKER_THREADS,
            registry: Some(registry.clone()),
        };
        let proxy = Daemon::with_listeners(&settings, vec![listener.into()]);
        machines.push(DemoMachine {
            name,
            addr,
            service: Some(service),
            proxy: Some(proxy),
        });
    }
    if machines.len() != NAMES.len() {
        bail!("not every machine started");
    }
    Ok(machines)
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
