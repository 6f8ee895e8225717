//! `switchyard call`, `list`, `describe` and `machines`: a gRPC client that
//! is grpcurl and talosctl in one, talking to a Switchyard.
//!
//! Like grpcurl it calls any method with nothing generated at build time:
//! the schema comes from the target machine's server reflection, through
//! Switchyard, or from protoset files ([`schema`]); the method from a loosely
//! typed name ([`resolve`]); the request from JSON ([`request`]); the call
//! goes through tonic with a descriptor-driven codec ([`invoke`],
//! [`codec`]). `-o json` prints byte for byte what grpcurl prints
//! ([`output::json`]).
//!
//! Like talosctl it understands Switchyard's fan-out replies: one entry per
//! machine, each tagged with its machine and its error ([`output::fanout`]),
//! shown as a table or JSON lines as they arrive, and an exit status that
//! says whether every machine answered. A fan-out asks for the envelope
//! ([`invoke::call_envelope`], [`output::envelope`]), so any method fans
//! out and each machine's entries show as it answers.
//!
//! Exit status: 0 when the call and every machine's entry succeeded; 1 when
//! the call failed or any entry is an error (the others are still printed);
//! 2 when the command cannot be run as given (unknown method, bad JSON, bad
//! flags, no schema), with a message saying what to change.
//!
//! - [`args`]: the flags; [`connect`]: `--via`, the config file, TLS;
//! - [`targets`]: `-m`/`--machine` as metadata;
//! - [`commands`]: the four commands; [`describe`]: proto source.

pub mod args;
pub mod codec;
pub mod commands;
pub mod connect;
pub mod describe;
pub mod imports;
pub mod invoke;
pub mod output;
pub mod request;
pub mod resolve;
pub mod schema;
pub mod targets;

use std::process::ExitCode;

pub use args::{CallArgs, DescribeArgs, Format, ListArgs, MachinesArgs};

/// A client command.
#[derive(Debug, Clone)]
pub enum ClientCommand {
    /// `switchyard call`.
    Call(CallArgs),
    /// `switchyard list`.
    List(ListArgs),
    /// `switchyard describe`.
    Describe(DescribeArgs),
    /// `switchyard machines`.
    Machines(MachinesArgs),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The method or symbol names nothing usable.
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    /// The request data does not fit the method.
    #[error(transparent)]
    Request(#[from] request::RequestError),
    /// A `-H` header (or a machine name) is unusable.
    #[error(transparent)]
    Header(#[from] invoke::HeaderError),
    /// No schema.
    #[error(transparent)]
    Schema(#[from] schema::SchemaError),
    /// No connection.
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    /// The call failed.
    #[error(transparent)]
    Call(#[from] invoke::CallError),
    /// The command asks for something that is not there (`list` of a
    /// message, …).
    #[error("{0}")]
    Usage(String),
    /// The output could not be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// A failure that TLS set up wrong explains ([`connect::diagnose`]).
    #[error("{clue} ({error})")]
    Explained {
        /// The failure as it came.
        error: Box<ClientError>,
        /// What is wrong.
        clue: connect::Clue,
    },
}

impl ClientError {
    /// The exit status: 2 when the command must change, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        let usage = match self {
            Self::Resolve(_) | Self::Request(_) | Self::Header(_) | Self::Usage(_) => true,
            Self::Schema(err) => err.is_usage(),
            Self::Connect(err) => err.is_usage(),
            Self::Call(_) | Self::Output(_) => false,
            // The TLS files or flags must change.
            Self::Explained { .. } => true,
        };
        if usage { 2 } else { 1 }
    }
}

/// Runs `command` on a runtime of its own, printing errors to stderr;
/// returns the exit status.
pub fn main(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("switchyard: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // Whoever reads our output left (`| head`): nothing to say.
        Err(ClientError::Output(err)) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("switchyard: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
