//! Runs one `machine-info` service on a Unix socket until SIGINT or
//! SIGTERM, then removes its socket, so that the next run (or a Switchyard
//! dialling it) does not find a dead one:
//!
//! ```text
//! cargo run -p machine-info -- /tmp/machine-info.sock my-machine
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// Serves the sample `machineinfo.v1.MachineInfo` API, with gRPC server
/// reflection, on a Unix socket until SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "machine-info", version)]
struct Args {
    /// The Unix socket to serve on (a stale socket there is replaced; any
    /// other file is left alone and refused).
    #[arg(value_name = "SOCKET_PATH")]
    socket: PathBuf,
    /// The machine name the service answers with.
    #[arg(value_name = "NAME", default_value = "machine")]
    name: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("machine-info: {}: {err}", args.socket.display());
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &Args) -> std::io::Result<()> {
    // Handlers first: a signal right after the socket appears is not lost.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let server = machine_info::Server::spawn_unix(&args.name, &args.socket)?;
    println!(
        "machine-info {:?} serving on unix:{}",
        args.name,
        args.socket.display()
    );
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    server.stop();
    remove_socket(&args.socket)
}

fn remove_socket(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}
