//! The per-machine view of a fan-out reply.
//!
//! Through Switchyard one call reaches many machines; their replies come
//! back merged by the wire contract of `switchyard/common/v1/common.proto`:
//! a unary reply is `repeated X messages = 1`, and every entry `X` carries
//! the machine's `Metadata` in field 1, naming its machine and, when the
//! machine failed, its error. A streamed reply message is itself such an
//! entry. Field numbers and kinds are the contract, names are not: an API
//! may declare its own copy of `Metadata`, under another name in its own
//! package (Talos's `common.Metadata` is one), so detection goes by number
//! and kind ([`is_metadata`]), as the daemon's check of a method does.
//! Anything else is one entry without a machine.

use prost_reflect::{
    Cardinality, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};
pub use switchyard_engine::status::code_name;

/// Which machine an entry comes from, as the proxy filled it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Machine {
    /// The machine's address as the client named it.
    pub addr: String,
    /// Its name from the machine registry (may be empty).
    pub name: String,
    /// Its ID from the machine registry (may be empty).
    pub id: String,
}

impl Machine {
    /// What to call the machine: its name, else its address, else its ID.
    pub fn label(&self) -> &str {
        [&self.name, &self.addr, &self.id]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("", String::as_str)
    }
}

/// How a machine failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// The gRPC status code (`Unknown` when only an error text was given).
    pub code: tonic::Code,
    /// The error message.
    pub message: String,
}

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

/// One machine's part of a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The machine, when the entry names one (replies straight from a
    /// server, not through Switchyard, name none).
    pub machine: Option<Machine>,
    /// The machine's failure, if it failed.
    pub error: Option<EntryError>,
    /// The entry without its metadata field.
    pub body: DynamicMessage,
}

impl Entry {
    /// The machine label, `-` when there is none.
    pub fn machine_label(&self) -> &str {
        match self.machine.as_ref().map(Machine::label) {
            Some(label) if !label.is_empty() => label,
            _ => "-",
        }
    }
}

/// How a reply type relates to the fan-out contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// `repeated X messages = 1`, X an entry: a merged unary reply.
    Merged,
    /// The message is itself an entry (field 1 is `Metadata`): a streamed
    /// reply, or one entry.
    Entry,
    /// Not fan-out shaped.
    Plain,
}

/// The shape of reply type `descriptor`.
pub fn shape(descriptor: &MessageDescriptor) -> Shape {
    if is_entry(descriptor) {
        return Shape::Entry;
    }
    match descriptor.get_field(1) {
        Some(field) if field.is_list() => match field.kind() {
            Kind::Message(entry) if is_entry(&entry) => Shape::Merged,
            _ => Shape::Plain,
        },
        _ => Shape::Plain,
    }
}

fn is_entry(descriptor: &MessageDescriptor) -> bool {
    matches!(field_kind(descriptor, 1), Some(Kind::Message(m)) if is_metadata(&m))
}

/// Whether `message` has the fields of the fan-out `Metadata`, whatever it
/// is called: `string machine_addr = 1; string error = 2;` and at least one
/// of `google.rpc.Status status = 3` (a message with `int32 code = 1` and
/// `string message = 2`), `string machine_id = 4`, `string machine_name =
/// 5`; no other field. Two strings alone are too common (a key and a
/// value) to be taken for machine tags.
pub fn is_metadata(message: &MessageDescriptor) -> bool {
    let string = |kind: Option<Kind>| matches!(kind, Some(Kind::String));
    let status = |kind: Option<Kind>| match kind {
        Some(Kind::Message(status)) => {
            matches!(field_kind(&status, 1), Some(Kind::Int32)) && string(field_kind(&status, 2))
        }
        _ => false,
    };
    let mut tagged = false;
    let fields_fit = message.fields().all(|field| {
        let kind = singular(&field);
        match field.number() {
            1 | 2 => string(kind),
            3 => {
                tagged = true;
                status(kind)
            }
            4 | 5 => {
                tagged = true;
                string(kind)
            }
            _ => false,
        }
    });
    fields_fit && tagged && string(field_kind(message, 1)) && string(field_kind(message, 2))
}

/// The kind of field `number` of `message`, if it has one and it is
/// neither repeated nor a map.
fn field_kind(message: &MessageDescriptor, number: u32) -> Option<Kind> {
    message.get_field(number).and_then(|f| singular(&f))
}

/// The kind of `field` unless it is repeated or a map.
fn singular(field: &FieldDescriptor) -> Option<Kind> {
    (field.cardinality() != Cardinality::Repeated).then(|| field.kind())
}

/// Splits `reply` into one entry per machine (see [`Shape`]).
pub fn split(reply: &DynamicMessage) -> Vec<Entry> {
    match shape(&reply.descriptor()) {
        Shape::Merged => reply
            .get_field_by_number(1)
            .and_then(|list| {
                list.as_list().map(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_message)
                        .map(entry)
                        .collect()
                })
            })
            .unwrap_or_default(),
        Shape::Entry => vec![entry(reply)],
        Shape::Plain => vec![Entry {
            machine: None,
            error: None,
            body: reply.clone(),
        }],
    }
}

fn entry(message: &DynamicMessage) -> Entry {
    let mut body = message.clone();
    let metadata = body.take_field_by_number(1);
    let (machine, error) = match metadata.as_ref().and_then(Value::as_message) {
        Some(metadata) => (Some(machine(metadata)), entry_error(metadata)),
        None => (None, None),
    };
    Entry {
        machine,
        error,
        body,
    }
}

fn string_field(message: &DynamicMessage, number: u32) -> String {
    message
        .get_field_by_number(number)
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn machine(metadata: &DynamicMessage) -> Machine {
    Machine {
        addr: string_field(metadata, 1),
        name: string_field(metadata, 5),
        id: string_field(metadata, 4),
    }
}

/// The failure a `Metadata` reports: its `status` (`google.rpc.Status`:
/// `code = 1`, `message = 2`) when set with a non-OK code, else its `error`
/// text as UNKNOWN.
fn entry_error(metadata: &DynamicMessage) -> Option<EntryError> {
    let text = string_field(metadata, 2);
    let status = metadata
        .has_field_by_number(3)
        .then(|| metadata.get_field_by_number(3))
        .flatten();
    let (code, status_message) = match status.as_deref().and_then(Value::as_message) {
        Some(status) => (
            status
                .get_field_by_number(1)
                .and_then(|v| v.as_i32())
                .unwrap_or(0),
            string_field(status, 2),
        ),
        None => (0, String::new()),
    };
    if code == 0 && text.is_empty() {
        return None;
    }
    let code = match tonic::Code::from(code) {
        tonic::Code::Ok => tonic::Code::Unknown,
        code => code,
    };
    let message = if status_message.is_empty() {
        text
    } else {
        status_message
    };
    Some(EntryError { code, message })
}

/// 0 when no entry failed, 1 when any did: the exit status of a call whose
/// own RPC succeeded.
pub fn exit_code(entries: &[Entry]) -> i32 {
    i32::from(entries.iter().any(|e| e.error.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    /// The messages of `source` (a proto3 file of package `t`, which may
    /// import `google/rpc/status.proto`).
    fn pool(source: &str) -> DescriptorPool {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.proto"), source).unwrap();
        let contract = concat!(env!("CARGO_MANIFEST_DIR"), "/../director/proto");
        let set = protox::compile(["t.proto"], [dir.path().to_str().unwrap(), contract]).unwrap();
        DescriptorPool::from_file_descriptor_set(set).unwrap()
    }

    #[test]
    fn metadata_is_known_by_its_field_numbers_and_kinds() {
        let pool = pool(
            r#"syntax = "proto3"; package t; import "google/rpc/status.proto";
            message Contract { string machine_addr = 1; string error = 2;
              google.rpc.Status status = 3; string machine_id = 4; string machine_name = 5; }
            message Talos { string hostname = 1; string error = 2; google.rpc.Status status = 3; }
            message Named { string a = 1; string b = 2; string name = 5; }
            message Pair { string key = 1; string value = 2; }
            message More { string a = 1; string b = 2; string c = 4; int32 extra = 6; }
            message WrongKind { string a = 1; string b = 2; int64 id = 4; }
            message Listed { string a = 1; repeated string b = 2; string c = 4; }
            message NotStatus { string a = 1; string b = 2; Pair status = 3; }
            message NoError { string a = 1; string c = 4; }
            message Entry { Talos tags = 1; string name = 2; }
            message Merged { repeated Entry messages = 1; }
            message Tagged { repeated Talos tags = 1; }
            message PairEntry { Pair pair = 1; }"#,
        );
        let message = |name: &str| pool.get_message_by_name(&format!("t.{name}")).unwrap();
        for fits in ["Contract", "Talos", "Named"] {
            assert!(is_metadata(&message(fits)), "{fits}");
        }
        for unfit in [
            "Pair",
            "More",
            "WrongKind",
            "Listed",
            "NotStatus",
            "NoError",
        ] {
            assert!(!is_metadata(&message(unfit)), "{unfit}");
        }
        assert_eq!(shape(&message("Entry")), Shape::Entry);
        assert_eq!(shape(&message("Merged")), Shape::Merged);
        assert_eq!(shape(&message("Tagged")), Shape::Plain);
        assert_eq!(shape(&message("PairEntry")), Shape::Plain);
    }
}
