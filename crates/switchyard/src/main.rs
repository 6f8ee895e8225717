//! `switchyard`: one gRPC endpoint per machine that answers for this
//! machine, another one, or all of them at once.

use clap::{Parser, Subcommand};
use switchyard::config::ServeArgs;
use switchyard::demo::DemoArgs;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy daemon of this machine.
    Serve(ServeArgs),
    /// Start a three-machine cluster on loopback and show fan-out calls.
    Demo(DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        Command::Demo(_) => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => switchyard::serve::main(args),
        Command::Demo(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(switchyard::demo::run(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchyard: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
