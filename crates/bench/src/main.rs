//! `switchyard-bench`: the load generator (`load`), the benchmark suite
//! (`suite`) and the sample backend they drive (`backend`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use switchyard_bench::client::ConnSettings;
use switchyard_bench::suite::SuiteArgs;
use switchyard_bench::{Address, CallKind, LoadSpec, Stop};
use switchyard_engine::tls::{ClientTls, TlsConfigs, TlsPaths};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive one gRPC target and report calls/s, latency percentiles, MB/s
    /// and errors by grpc-status.
    Load(LoadArgs),
    /// Run the whole benchmark: backends, Switchyard daemons, nginx, every
    /// scenario, and write docs/PERFORMANCE.md with its chart.
    Suite(SuiteArgs),
    /// Serve the sample backend (TestService, MultiService) on a Unix socket.
    Backend(BackendArgs),
    /// Relay HTTP/2 from a TCP port to a backend's Unix socket with nothing
    /// else (the suite's floor; not a proxy to deploy).
    Relay(RelayArgs),
}

/// Output of a load run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The human table.
    Table,
    /// One JSON line.
    Json,
    /// The table, then the JSON line.
    Both,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// What to drive: `unix:/path`, `[ipv6]:port` or `ipv4:port`.
    #[arg(long, short)]
    target: Address,
    /// Kind of call.
    #[arg(long, value_enum, default_value = "unary")]
    kind: CallKind,
    /// gRPC method [default: MultiService/Ping, TestService/PingList or
    /// TestService/PingStream of the sample backend, by kind].
    #[arg(long)]
    method: Option<String>,
    /// Payload bytes per message (echoed by the sample backend).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Messages per call: replies of a server stream, round trips of a bidi call.
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Concurrent calls.
    #[arg(long, short, default_value_t = 1)]
    concurrency: usize,
    /// HTTP/2 connections the calls share (call i uses connection i mod M).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds of calls before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to measure.
    #[arg(long, default_value_t = 5.0, conflicts_with = "calls")]
    duration: f64,
    /// Measure this many calls instead of a duration.
    #[arg(long)]
    calls: Option<u64>,
    /// A `machines` metadata value (fan-out through Switchyard); repeatable.
    #[arg(long = "machines", value_name = "MACHINE")]
    machines: Vec<String>,
    /// The `machine` metadata value (exactly one target through Switchyard).
    #[arg(long)]
    machine: Option<String>,
    /// Any other request metadata, `key=value`; repeatable.
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// Bound of one call, in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Runtime worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// What to print.
    #[arg(long, value_enum, default_value = "both")]
    format: Format,
    /// Mutual TLS to a TCP target: the client certificate (PEM)…
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// …its key…
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// …and the CA the server's certificate chains to.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct BackendArgs {
    /// Unix socket to serve on (`unix:/path` or `/path`).
    #[arg(long)]
    listen: String,
    /// Server name put in every reply.
    #[arg(long, default_value = "backend")]
    name: String,
}

#[derive(Debug, clap::Args)]
struct RelayArgs {
    /// TCP address to listen on, e.g. `[::1]:7000`.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The backend's Unix socket.
    #[arg(long)]
    backend: PathBuf,
    /// The HTTP/2 implementation to relay with.
    #[arg(long, value_enum, default_value = "h2")]
    stack: switchyard_bench::relay::Stack,
}

fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("--{name}: {s} is not a duration"))
}

fn load_spec(args: &LoadArgs) -> anyhow::Result<LoadSpec> {
    let mut metadata: Vec<(String, String)> = args
        .machines
        .iter()
        .map(|m| ("machines".to_owned(), m.clone()))
        .collect();
    if let Some(machine) = &args.machine {
        metadata.push(("machine".into(), machine.clone()));
    }
    for kv in &args.metadata {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--metadata {kv:?}: expected key=value"))?;
        metadata.push((k.to_ascii_lowercase(), v.to_owned()));
    }
    Ok(LoadSpec {
        target: args.target.clone(),
        kind: args.kind,
        method: args
            .method
            .clone()
            .unwrap_or_else(|| args.kind.default_method().to_owned()),
        payload: args.payload,
        count: if args.kind == CallKind::Unary {
            1
        } else {
            args.count
        },
        concurrency: args.concurrency,
        connections: args.connections,
        warmup: seconds("warmup", args.warmup)?,
        stop: match args.calls {
            Some(n) => Stop::Calls(n),
            None => Stop::Duration(seconds("duration", args.duration)?),
        },
        metadata,
        timeout: seconds("timeout", args.timeout)?,
        conn: ConnSettings {
            tls: client_tls(args)?,
            ..ConnSettings::default()
        },
    })
}

/// The client side of `--tls-*`, if given.
fn client_tls(args: &LoadArgs) -> anyhow::Result<Option<ClientTls>> {
    let (Some(cert), Some(key), Some(ca)) = (&args.tls_cert, &args.tls_key, &args.tls_ca) else {
        return Ok(None);
    };
    let paths = TlsPaths {
        cert: cert.clone(),
        key: key.clone(),
        ca: ca.clone(),
    };
    let configs = TlsConfigs::load(&paths).context("--tls-cert/--tls-key/--tls-ca")?;
    Ok(Some(configs.client().clone()))
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    Ok(runtime)
}

fn load(args: &LoadArgs) -> anyhow::Result<()> {
    let spec = load_spec(args)?;
    let report = runtime(args.threads)?.block_on(switchyard_bench::load::run(&spec))?;
    match args.format {
        Format::Table => print!("{}", report.table()),
        Format::Json => println!("{}", report.json_line()),
        Format::Both => {
            print!("{}", report.table());
            println!("{}", report.json_line());
        }
    }
    Ok(())
}

fn backend(args: &BackendArgs) -> anyhow::Result<()> {
    let path = PathBuf::from(args.listen.strip_prefix("unix:").unwrap_or(&args.listen));
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    runtime(threads)?.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        switchyard_bench::backend::serve(&args.name, &path, shutdown).await
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Load(args) => load(args),
        Command::Suite(args) => switchyard_bench::suite::run(args),
        Command::Backend(args) => backend(args),
        Command::Relay(args) => runtime(1).and_then(|rt| {
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(args.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.listen))?;
                switchyard_bench::relay::run(listener, &args.backend, args.stack).await
            })
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchyard-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
