//! The four client commands: each connects, finds its schema, does its one
//! thing and prints, streaming what streams.

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use futures_util::StreamExt as _;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use switchyard_director::pb::switchyard::v1::cluster_client::ClusterClient;
use switchyard_director::pb::switchyard::v1::machine_status::State;
use switchyard_director::{ReflectionError, pb};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::transport::Channel;

use super::args::{ConnectArgs, Format, MachineArgs, SchemaArgs};
use super::connect::{ConnectError, connect, diagnose, resolve_via};
use super::describe::describe;
use super::invoke::{CallError, CallOptions, MACHINE_TIMEOUT, call, call_envelope};
use super::output::table::clean;
use super::output::{self, Entry, Envelope, JsonOptions, Machine, Shape, TableStream, envelope};
use super::request::{RequestOptions, read_data, requests_for};
use super::resolve::{MethodName, Symbol, resolve_method, resolve_symbol};
use super::schema::{Reflector, SchemaError, SchemaSource, load_protosets};
use super::targets::{Targets, targets};
use super::{CallArgs, ClientCommand, ClientError, DescribeArgs, ListArgs, MachinesArgs};

/// Bound of each step (connecting, reflection, a call that does not
/// stream its replies) unless `--timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `command`: `Ok(true)` when everything succeeded, `Ok(false)` when
/// it ran but a machine's entry (or the call) failed.
pub async fn run(command: ClientCommand) -> Result<bool, ClientError> {
    let connect_args = match &command {
        ClientCommand::Call(args) => args.connect.clone(),
        ClientCommand::List(args) => args.connect.clone(),
        ClientCommand::Describe(args) => args.connect.clone(),
        ClientCommand::Machines(args) => args.connect.clone(),
    };
    let result = match command {
        ClientCommand::Call(args) => call_command(args).await,
        ClientCommand::List(args) => list(args).await.map(|()| true),
        ClientCommand::Describe(args) => describe_command(args).await.map(|()| true),
        ClientCommand::Machines(args) => machines(args).await.map(|()| true),
    };
    match result {
        Err(error) => Err(explain(error, &connect_args).await),
        ok => ok,
    }
}

/// `error`, with the reason when TLS set up wrong explains it
/// ([`diagnose`]). Only failures of the connection itself are looked into:
/// what a server answered (`PERMISSION_DENIED`, a machine down) is its own
/// explanation.
async fn explain(error: ClientError, connect_args: &ConnectArgs) -> ClientError {
    if !transport_failure(&error) {
        return error;
    }
    let via = resolve_via(
        connect_args.via.as_deref(),
        connect_args.config.as_deref(),
        &connect_args.tls,
    );
    match via {
        Ok(via) => match diagnose(&via).await {
            Some(clue) => ClientError::Explained {
                error: Box::new(error),
                clue,
            },
            None => error,
        },
        Err(_) => error,
    }
}

/// Whether `error` is the connection failing, not a server's answer: tonic
/// keeps the cause of the statuses it makes from transport errors, and a
/// status from a server has none.
fn transport_failure(error: &ClientError) -> bool {
    let from_transport = |status: &tonic::Status| {
        std::error::Error::source(status).is_some()
            || status.message().starts_with("connection not ready")
    };
    match error {
        ClientError::Connect(ConnectError::Failed { .. } | ConnectError::Timeout(..)) => true,
        ClientError::Call(CallError::Status(status))
        | ClientError::Schema(SchemaError::Reflection(ReflectionError::Status(status))) => {
            from_transport(status)
        }
        _ => false,
    }
}

/// What every schema-using command sets up: targets, connection, schema.
struct Session {
    targets: Targets,
    channel: Option<Channel>,
    schema: SchemaSource,
}

impl Session {
    /// Connects unless a protoset makes the connection unneeded
    /// (`need_channel` false: list and describe).
    async fn open(
        connect_args: &ConnectArgs,
        machines: &MachineArgs,
        schema: &SchemaArgs,
        need_channel: bool,
    ) -> Result<Self, ClientError> {
        let targets = targets(
            &machines.machines,
            machines.machine.as_deref(),
            &connect_args.headers,
        )?;
        let protoset = (!schema.protoset.is_empty())
            .then(|| load_protosets(&schema.protoset))
            .transpose()?;
        let bound = connect_args.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let open = || async {
            let via = resolve_via(
                connect_args.via.as_deref(),
                connect_args.config.as_deref(),
                &connect_args.tls,
            )?;
            Ok::<_, ClientError>(connect(&via, bound).await?)
        };
        let (schema, channel) = match protoset {
            Some(pool) if !need_channel => (SchemaSource::Protoset(pool), None),
            Some(pool) => (SchemaSource::Protoset(pool), Some(open().await?)),
            None => {
                let channel = open().await?;
                let reflector = Reflector {
                    channel: channel.clone(),
                    candidates: targets.reflection.clone(),
                    deadline: tokio::time::Instant::now() + bound,
                };
                (SchemaSource::Reflection(reflector), Some(channel))
            }
        };
        Ok(Self {
            targets,
            channel,
            schema,
        })
    }
}

async fn call_command(args: CallArgs) -> Result<bool, ClientError> {
    // Usage errors first, before anything is dialled.
    let name = MethodName::parse(&args.method)?;
    let text = read_data(args.data.as_deref(), std::io::stdin())?;
    let session = Session::open(&args.connect, &args.machines, &args.schema, true).await?;
    let pool = session.schema.pool_for_method(&name).await?;
    let method = resolve_method(&pool, &args.method)?;
    let requests = requests_for(
        &method,
        &text,
        RequestOptions {
            allow_unknown_fields: args.allow_unknown_fields,
        },
    )?;
    let timeout = args
        .connect
        .timeout
        .or((!method.is_server_streaming()).then_some(DEFAULT_TIMEOUT));
    let fan_out = session.targets.fan_out;
    let mut metadata = session.targets.call.clone();
    if fan_out {
        machine_timeout(&mut metadata, args.machine_timeout, timeout);
    } else if let Some(bound) = args.machine_timeout {
        metadata.insert(MACHINE_TIMEOUT, grpc_timeout(bound));
    }
    let options = CallOptions {
        metadata,
        timeout,
        max_message_size: args.max_message_size.map(|size| size.0),
    };
    let channel = session
        .channel
        .ok_or_else(|| ClientError::Usage("no connection to call through".into()))?;
    let format = args.output.unwrap_or_else(default_format);
    let envelope = Envelope::new(method.output());
    // `-o json` of a merged reply is one document, as the tagged shape's
    // is: its entries wait for the end of the call.
    let document = (fan_out
        && format == Format::Json
        && *envelope.shape() == Shape::Merged
        && !method.is_server_streaming())
    .then(|| method.output());
    let mut printer = Printer {
        format,
        json: JsonOptions {
            emit_defaults: args.emit_defaults,
        },
        // A fan-out's rows print as its machines answer.
        streamed: fan_out || method.is_server_streaming(),
        targets: &session.targets,
        entries: Vec::new(),
        document,
        failed: false,
        table: TableStream::new(fan_out),
        out: std::io::stdout().lock(),
    };
    let result = if fan_out {
        invoke_envelope(channel, &method, requests, &options, envelope, &mut printer).await
    } else {
        invoke(channel, &method, requests, &options, &mut printer).await
    };
    printer.finish()?;
    result?;
    Ok(!printer.failed)
}

/// Sets the fan-out's `switchyard-machine-timeout`: `--machine-timeout`;
/// else, unless `-H` gave one, a little less than the call's own bound, so
/// that a machine that never answers is its own `DEADLINE_EXCEEDED` row
/// before the call as a whole runs out of time. Without either, the daemon
/// decides (its `machine_timeout_secs`).
fn machine_timeout(
    metadata: &mut MetadataMap,
    flag: Option<Duration>,
    call_timeout: Option<Duration>,
) {
    let bound = match (flag, call_timeout) {
        (Some(bound), _) => bound,
        (None, _) if metadata.contains_key(MACHINE_TIMEOUT) => return,
        (None, Some(timeout)) => timeout - (timeout / 10).min(Duration::from_secs(1)),
        (None, None) => return,
    };
    metadata.insert(MACHINE_TIMEOUT, grpc_timeout(bound));
}

/// `bound` in the `grpc-timeout` syntax.
fn grpc_timeout(bound: Duration) -> AsciiMetadataValue {
    AsciiMetadataValue::try_from(switchyard_engine::codec::timeout::encode(bound))
        .expect("digits and a unit are ASCII")
}

/// Calls and prints each reply as it arrives.
async fn invoke(
    channel: Channel,
    method: &MethodDescriptor,
    requests: Vec<DynamicMessage>,
    options: &CallOptions,
    printer: &mut Printer<'_, impl Write>,
) -> Result<(), ClientError> {
    let mut reply = call(
        channel,
        method,
        futures_util::stream::iter(requests),
        options,
    )
    .await?;
    while let Some(message) = reply.messages.next().await {
        let message: DynamicMessage = message.map_err(ClientError::Call)?;
        printer.print(&message)?;
    }
    Ok(())
}

/// Calls a fan-out in the envelope and prints each machine's entries as
/// they arrive.
async fn invoke_envelope(
    channel: Channel,
    method: &MethodDescriptor,
    requests: Vec<DynamicMessage>,
    options: &CallOptions,
    mut envelope: Envelope,
    printer: &mut Printer<'_, impl Write>,
) -> Result<(), ClientError> {
    let mut items = call_envelope(
        channel,
        method,
        futures_util::stream::iter(requests),
        options,
    )
    .await?;
    while let Some(item) = items.next().await {
        let entries = envelope.entries(&item.map_err(ClientError::Call)?);
        printer.print_entries(entries, &envelope)?;
    }
    Ok(())
}

/// Table on a terminal, grpcurl's JSON for pipes and files.
fn default_format() -> Format {
    if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Json
    }
}

/// Prints replies in one format.
struct Printer<'a, W: Write> {
    format: Format,
    json: JsonOptions,
    /// Whether rows print as they come (a stream, a fan-out) or as one
    /// aligned table at the end.
    streamed: bool,
    targets: &'a Targets,
    /// The entries printed at the end: those of a unary table, or of the
    /// one JSON document of a fan-out (nothing else is kept: a stream may
    /// run for ever).
    entries: Vec<Entry>,
    /// The reply type of the one JSON document of a fan-out, if it is one.
    document: Option<MessageDescriptor>,
    /// Some machine's entry was an error (exit status 1).
    failed: bool,
    table: TableStream,
    out: W,
}

impl<W: Write> Printer<'_, W> {
    /// Prints a reply of a call that does not fan out.
    fn print(&mut self, message: &DynamicMessage) -> Result<(), ClientError> {
        let mut split = output::split(message);
        // An untagged reply is the one machine's that was asked.
        if let Some(single) = &self.targets.single {
            for entry in split.iter_mut().filter(|e| e.machine.is_none()) {
                entry.machine = Some(Machine {
                    name: single.clone(),
                    ..Machine::default()
                });
            }
        }
        match self.format {
            Format::Json => writeln!(self.out, "{}", output::format_json(message, self.json))?,
            Format::Jsonl => {
                for entry in &split {
                    writeln!(self.out, "{}", output::format_jsonl(entry, self.json))?;
                }
            }
            Format::Table if self.streamed => {
                for entry in &split {
                    write!(self.out, "{}", self.table.lines(entry))?;
                }
            }
            Format::Table => {}
        }
        self.out.flush()?;
        self.failed |= output::exit_code(&split) != 0;
        if self.format == Format::Table && !self.streamed {
            self.entries.extend(split);
        }
        Ok(())
    }

    /// Prints the entries of an item of a fan-out. JSON keeps the tagged
    /// shape: a merged reply's entries, tagged, in one document at the end
    /// (one per reply message of a stream); an entry type's messages tagged
    /// one by one; a reply type without the layout as `{"machine": …,
    /// "reply": …}` documents, jsonl's objects indented.
    fn print_entries(
        &mut self,
        entries: Vec<Entry>,
        envelope: &Envelope,
    ) -> Result<(), ClientError> {
        self.failed |= output::exit_code(&entries) != 0;
        match self.format {
            Format::Jsonl => {
                for entry in &entries {
                    writeln!(self.out, "{}", output::format_jsonl(entry, self.json))?;
                }
            }
            Format::Table => {
                for entry in &entries {
                    write!(self.out, "{}", self.table.lines(entry))?;
                }
            }
            Format::Json if self.document.is_some() => self.entries.extend(entries),
            Format::Json => match envelope.shape() {
                Shape::Merged if entries.is_empty() => {}
                Shape::Merged => {
                    let reply = envelope::merged(envelope.output(), &entries);
                    writeln!(self.out, "{}", output::format_json(&reply, self.json))?;
                }
                Shape::Entry | Shape::Plain => {
                    for entry in &entries {
                        let text = match envelope::tagged(entry) {
                            Some(message) => output::format_json(&message, self.json),
                            None => output::to_jsonl(entry, self.json).to_indented(),
                        };
                        writeln!(self.out, "{text}")?;
                    }
                }
            },
        }
        self.out.flush()?;
        Ok(())
    }

    /// Prints what waited for the end of the call (a unary table, a
    /// fan-out's JSON document).
    fn finish(&mut self) -> Result<(), ClientError> {
        if self.format == Format::Table && !self.streamed {
            write!(
                self.out,
                "{}",
                output::format_table(&self.entries, self.targets.fan_out)
            )?;
        }
        if let Some(reply_type) = &self.document {
            let reply = envelope::merged(reply_type, &self.entries);
            writeln!(self.out, "{}", output::format_json(&reply, self.json))?;
        }
        self.out.flush()?;
        Ok(())
    }
}

async fn list(args: ListArgs) -> Result<(), ClientError> {
    let session = Session::open(&args.connect, &args.machines, &args.schema, false).await?;
    let pool = session.schema.pool_for_all_services().await?;
    let mut out = std::io::stdout().lock();
    match &args.service {
        None => {
            let mut names: Vec<String> =
                pool.services().map(|s| s.full_name().to_owned()).collect();
            names.sort_unstable();
            for name in names {
                writeln!(out, "{name}")?;
            }
        }
        Some(service) => {
            let Symbol::Service(service) = resolve_symbol(&pool, service)? else {
                return Err(ClientError::Usage(format!(
                    "`{service}` is not a service (try `switchyard describe {service}`)"
                )));
            };
            for method in service.methods() {
                writeln!(out, "{}", signature(&method))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `/pkg.Service/Method(pkg.Request) returns (stream pkg.Reply)`: the path
/// `call` takes and the daemon's settings name, and the types.
fn signature(method: &MethodDescriptor) -> String {
    let stream = |yes: bool| if yes { "stream " } else { "" };
    format!(
        "/{}/{}({}{}) returns ({}{})",
        method.parent_service().full_name(),
        method.name(),
        stream(method.is_client_streaming()),
        method.input().full_name(),
        stream(method.is_server_streaming()),
        method.output().full_name()
    )
}

async fn describe_command(args: DescribeArgs) -> Result<(), ClientError> {
    let session = Session::open(&args.connect, &args.machines, &args.schema, false).await?;
    let pool = session.schema.pool_for_all_services().await?;
    let symbols = match &args.symbol {
        Some(symbol) => match resolve_symbol(&pool, symbol) {
            Ok(found) => vec![found],
            // Not reachable from any service (Switchyard's MachineReply, a
            // type only some clients use): asked for by name.
            Err(err) => match session.schema.pool_for_symbol(symbol).await {
                Ok(pool) => vec![resolve_symbol(&pool, symbol).map_err(|_| err)?],
                Err(_) => return Err(err.into()),
            },
        },
        None => pool.services().map(Symbol::Service).collect(),
    };
    let mut out = std::io::stdout().lock();
    for symbol in &symbols {
        write!(out, "{}", describe(symbol))?;
    }
    out.flush()?;
    Ok(())
}

async fn machines(args: MachinesArgs) -> Result<(), ClientError> {
    let targets = targets(&[], None, &args.connect.headers)?;
    let bound = args.connect.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let via = resolve_via(
        args.connect.via.as_deref(),
        args.connect.config.as_deref(),
        &args.connect.tls,
    )?;
    let channel = connect(&via, bound).await?;
    let mut request = tonic::Request::new(pb::ListMachinesRequest {});
    *request.metadata_mut() = targets.call;
    request.set_timeout(bound);
    let reply = tokio::time::timeout(bound, ClusterClient::new(channel).list_machines(request))
        .await
        .map_err(|_| CallError::Timeout(bound))?
        .map_err(CallError::Status)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    match args.output.unwrap_or_else(default_format) {
        Format::Table => write!(out, "{}", machines_table(&reply.machines))?,
        format => {
            let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
                .map_err(|e| ClientError::Usage(format!("built-in schema: {e}")))?;
            let descriptor = pool
                .get_message_by_name("switchyard.v1.ListMachinesResponse")
                .ok_or_else(|| {
                    ClientError::Usage("built-in schema: no ListMachinesResponse".into())
                })?;
            let message = DynamicMessage::decode(descriptor, reply.encode_to_vec().as_slice())
                .map_err(|e| ClientError::Usage(format!("built-in schema: {e}")))?;
            let json = JsonOptions::default();
            if format == Format::Json {
                writeln!(out, "{}", output::format_json(&message, json))?;
            } else if let Some(list) = message.get_field_by_number(1) {
                for machine in list.as_list().unwrap_or_default() {
                    if let Some(machine) = machine.as_message() {
                        writeln!(out, "{}", output::to_json(machine, json).to_compact())?;
                    }
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `switchyard machines` for people: one row per machine.
fn machines_table(machines: &[pb::MachineStatus]) -> String {
    // Every field comes from the server: shown on one line, without
    // control characters.
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            clean(s)
        }
    };
    let mut rows = vec![["NAME", "ID", "ADDRESS", "STATE", "ERROR"].map(str::to_owned)];
    for m in machines {
        let state = match m.state() {
            State::Up => "up",
            State::Down => "down",
            State::Unknown => "unknown",
        };
        let state = if m.local {
            format!("{state} (local)")
        } else {
            state.to_owned()
        };
        rows.push([
            dash(&m.name),
            dash(&m.id),
            dash(&m.addr),
            state,
            clean(&m.last_error),
        ]);
    }
    let mut widths = [0usize; 5];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_rows() {
        let machines = [
            pb::MachineStatus {
                id: "m1".into(),
                name: "alpha".into(),
                addr: "fd00::1".into(),
                state: State::Up.into(),
                last_error: String::new(),
                local: true,
            },
            pb::MachineStatus {
                id: "m3".into(),
                name: "gamma".into(),
                addr: "[fd00::3]:51001".into(),
                state: State::Down.into(),
                last_error: "connection refused".into(),
                local: false,
            },
        ];
        assert_eq!(
            machines_table(&machines),
            "NAME    ID   ADDRESS           STATE        ERROR\n\
             alpha   m1   fd00::1           up (local)\n\
             gamma   m3   [fd00::3]:51001   down         connection refused\n"
        );
        // What a server sends cannot break the table or steer the terminal.
        let hostile = [pb::MachineStatus {
            id: "m4".into(),
            name: "\u{1b}[2Jdelta".into(),
            addr: "fd00::4".into(),
            state: State::Down.into(),
            last_error: "refused\nby peer".into(),
            local: false,
        }];
        assert_eq!(
            machines_table(&hostile),
            "NAME        ID   ADDRESS   STATE   ERROR\n\
             ?[2Jdelta   m4   fd00::4   down    refused\\nby peer\n"
        );
    }

    #[test]
    fn signatures_are_paths_with_types() {
        let pool = DescriptorPool::decode(machine_info::pb::FILE_DESCRIPTOR_SET).unwrap();
        let watch = resolve_method(&pool, "MachineInfo/Watch").unwrap();
        assert_eq!(
            signature(&watch),
            "/machineinfo.v1.MachineInfo/Watch(machineinfo.v1.WatchRequest) returns (stream machineinfo.v1.Tick)"
        );
    }
}
