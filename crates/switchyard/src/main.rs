//! `switchyard`: one gRPC endpoint per machine that answers for this
//! machine, another one, or all of them at once.

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use switchyard::cert::CertArgs;
use switchyard::client::{CallArgs, ClientCommand, DescribeArgs, ListArgs, MachinesArgs};
use switchyard::config::Options;
use switchyard::demo::DemoArgs;

/// jemalloc with background purging: memory freed after a burst of calls
/// goes back to the system within seconds (glibc keeps it), and calls cost
/// less CPU (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(version = switchyard::VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy daemon of this machine.
    Serve(Box<Options>),
    /// Start a three-machine cluster on loopback and show fan-out calls.
    Demo(DemoArgs),
    /// Make certificates for mutual TLS: the cluster CA, machines, callers.
    Cert(CertArgs),
    /// Call a gRPC method on this machine, another, or several at once.
    Call(Box<CallArgs>),
    /// List the services of a machine, or a service's methods with their types.
    List(Box<ListArgs>),
    /// Print a service, method, message, enum or field as proto source.
    Describe(Box<DescribeArgs>),
    /// The machines a Switchyard knows, up or down.
    Machines(Box<MachinesArgs>),
}

fn main() -> ExitCode {
    let cli = match command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(err) => return usage_error(err),
    };
    if !matches!(cli.command, Command::Serve(_)) {
        // `serve` sets up logging once its settings (the format) are read.
        switchyard::logging::init(switchyard::config::LogFormat::Text, "error");
    }
    let result = match cli.command {
        Command::Call(args) => return switchyard::client::main(ClientCommand::Call(*args)),
        Command::List(args) => return switchyard::client::main(ClientCommand::List(*args)),
        Command::Describe(args) => {
            return switchyard::client::main(ClientCommand::Describe(*args));
        }
        Command::Machines(args) => {
            return switchyard::client::main(ClientCommand::Machines(*args));
        }
        Command::Serve(options) => switchyard::serve::main(*options),
        Command::Demo(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(switchyard::demo::run(args))),
        Command::Cert(args) => switchyard::cert::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchyard: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, `serve`'s help showing the settings' defaults.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", switchyard::config::with_defaults)
}

/// Prints a command-line error; a bad flag value is named by its setting
/// (`remote_port`), as the same value in the config file would be.
fn usage_error(err: clap::Error) -> ExitCode {
    let setting = matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    )
    .then(|| err.get(ContextKind::InvalidArg))
    .flatten()
    .and_then(|arg| match arg {
        ContextValue::String(arg) => setting_of(arg),
        _ => None,
    });
    match setting {
        Some(setting) => {
            let rendered = err.render().to_string();
            let message = rendered.trim_start_matches("error: ").trim_end();
            eprintln!("switchyard: {setting}: {message}");
            ExitCode::from(2)
        }
        None => {
            let _ = err.print();
            ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
        }
    }
}

/// The setting behind a flag as clap prints it (`--remote-port <PORT>`).
fn setting_of(arg: &str) -> Option<String> {
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let command = Cli::command();
    command
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .map(|a| a.get_id().to_string())
}
