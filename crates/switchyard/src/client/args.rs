//! The flags of `switchyard call`, `list`, `describe` and `machines`,
//! declared once and shared.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::config::{MessageSize, TlsOptions};

/// Which Switchyard to talk to, and how.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
    /// The Switchyard to talk to: unix:/path, [ipv6]:port, ipv4:port or an
    /// IP (port 51000) [default: the first unix: listener of the config
    /// file, else unix:/run/switchyard/switchyard.sock].
    #[arg(long, value_name = "ADDR")]
    pub via: Option<String>,
    /// Configuration file for the defaults of --via and TLS [default:
    /// /etc/switchyard.toml when it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TLS over TCP (the config file's `[tls]`, key by key).
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Bound of connecting, of asking for the schema, and of the call with
    /// all its replies: 10s, 500ms, 2m, or seconds [default: 10s for all
    /// but streaming calls, which run until they end].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Request metadata `name=value` (or `name: value`); repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
}

/// Which machines a call goes to.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MachineArgs {
    /// Machines to ask at once (fan-out): names, IDs or addresses,
    /// comma-separated or repeated, or `*` for every machine. Any method
    /// fans out: the call asks for the envelope, and each machine's replies
    /// print, tagged with it, as it answers. [default: the Switchyard's own
    /// machine]
    #[arg(
        short = 'm',
        long = "machines",
        value_name = "MACHINES",
        value_delimiter = ','
    )]
    pub machines: Vec<String>,
    /// Exactly one machine; its reply is not tagged.
    #[arg(long, value_name = "MACHINE", conflicts_with = "machines")]
    pub machine: Option<String>,
}

/// Where schemas come from, when not from reflection.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SchemaArgs {
    /// Encoded FileDescriptorSet to use instead of server reflection
    /// (`protoc --include_imports --descriptor_set_out`); repeatable.
    #[arg(long, value_name = "FILE")]
    pub protoset: Vec<PathBuf>,
}

/// How replies are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One row per machine (per reply entry), columns from the reply's
    /// scalar fields (default on a terminal).
    Table,
    /// Each reply message exactly as grpcurl prints it (default otherwise).
    Json,
    /// One compact JSON line per entry, tagged with its machine, as
    /// replies arrive.
    Jsonl,
}

/// Flags of `switchyard call`.
#[derive(Debug, Clone, clap::Args)]
pub struct CallArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
    #[command(flatten)]
    pub(crate) machines: MachineArgs,
    #[command(flatten)]
    pub(crate) schema: SchemaArgs,
    /// The request as JSON, @FILE, or @- for stdin; several objects (or an
    /// array) for client streams [default: {}].
    #[arg(short = 'd', long = "data", value_name = "JSON")]
    pub data: Option<String>,
    /// Output form [default: table on a terminal, json otherwise].
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
    /// Also print fields at their default value (json and jsonl).
    #[arg(long)]
    pub emit_defaults: bool,
    /// Ignore request fields the method's input type does not have.
    #[arg(long)]
    pub allow_unknown_fields: bool,
    /// Largest reply message accepted, in bytes (in a fan-out, one
    /// machine's reply in its envelope item) [default: 33554432, the
    /// daemon's `max_message_size`].
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<MessageSize>,
    /// Bound of each machine's whole answer in a fan-out (-m): 2s, 500ms,
    /// 1m; a machine later than that is a DEADLINE_EXCEEDED row while the
    /// others' rows print [default: a tenth (at most 1s) less than the
    /// call's --timeout when it has one, else the daemon's
    /// `machine_timeout_secs` for methods with one reply].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub machine_timeout: Option<Duration>,
    /// The method: /pkg.Service/Method, pkg.Service.Method, pkg.Service/Method,
    /// or Service/Method when the short name is unique.
    #[arg(value_name = "METHOD")]
    pub method: String,
}

/// Flags of `switchyard list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
    #[command(flatten)]
    pub(crate) machines: MachineArgs,
    #[command(flatten)]
    pub(crate) schema: SchemaArgs,
    /// A service (full or short name): list its methods with their types.
    #[arg(value_name = "SERVICE")]
    pub service: Option<String>,
}

/// Flags of `switchyard describe`.
#[derive(Debug, Clone, clap::Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
    #[command(flatten)]
    pub(crate) machines: MachineArgs,
    #[command(flatten)]
    pub(crate) schema: SchemaArgs,
    /// A service, method, message, enum or field (full or unique short
    /// name) [default: every service].
    #[arg(value_name = "SYMBOL")]
    pub symbol: Option<String>,
}

/// Flags of `switchyard machines`.
#[derive(Debug, Clone, clap::Args)]
pub struct MachinesArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
    /// Output form [default: table on a terminal, json otherwise].
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<Format>,
}

/// A duration: `10s`, `500ms`, `2m`, or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("invalid duration `{text}`: use 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("invalid duration unit in `{text}`: use ms, s or m")),
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!("invalid duration `{text}`: must be above zero")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "5h", "0", "-1s", "x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
