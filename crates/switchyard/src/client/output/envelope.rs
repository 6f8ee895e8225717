//! The per-machine view of a fan-out answered in the envelope.
//!
//! In the envelope (`switchyard-reply: envelope`) each machine's replies come
//! back byte for byte, each in a `switchyard.v1.MachineReply` naming the
//! machine, and every machine ends with one `last` item holding its status.
//! [`Envelope`] turns the items into the same [`Entry`]s a tagged reply
//! splits into ([`super::fanout`]), so the table and jsonl printers need
//! nothing new, any method fans out (the reply needs no layout), and each
//! entry is printed as its machine answers. [`tagged`] and [`merged`] go the
//! other way, writing the tags back into the reply's own `Metadata` field,
//! so that `-o json` keeps the documented tagged shape where the reply type
//! has one.

use std::collections::HashSet;

use prost_reflect::{DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};
use switchyard_director::pb::{MachineReply, Metadata};

use super::fanout::{Entry, EntryError, Machine, Shape, is_metadata, shape, split};

/// Turns the items of one enveloped call into entries.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The method's output type: each item's message is one.
    output: MessageDescriptor,
    shape: Shape,
    /// Machines that sent a reply message and are not done yet.
    answered: HashSet<Machine>,
}

impl Envelope {
    /// The items of a call of a method whose replies are `output`.
    pub fn new(output: MessageDescriptor) -> Self {
        Self {
            shape: shape(&output),
            output,
            answered: HashSet::new(),
        }
    }

    /// How the method's reply type relates to the fan-out layout.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The method's output type.
    pub fn output(&self) -> &MessageDescriptor {
        &self.output
    }

    /// The type of an entry's body: a merged reply's entry type, else the
    /// reply type itself.
    pub fn entry_type(&self) -> MessageDescriptor {
        match (&self.shape, self.output.get_field(1).map(|f| f.kind())) {
            (Shape::Merged, Some(Kind::Message(entry))) => entry,
            _ => self.output.clone(),
        }
    }

    /// The entries `item` adds: a reply's entries, tagged with the machine;
    /// for a last item, the machine's error if it failed, an entry without
    /// fields if it succeeded without sending any reply, else none (its
    /// replies were its entries).
    pub fn entries(&mut self, item: &MachineReply) -> Vec<Entry> {
        let machine = machine(item.metadata.as_ref());
        if item.last {
            let had_replies = self.answered.remove(&machine);
            return match final_error(item.metadata.as_ref()) {
                Some(error) => vec![self.empty(machine, Some(error))],
                None if had_replies => Vec::new(),
                None => vec![self.empty(machine, None)],
            };
        }
        self.answered.insert(machine.clone());
        match DynamicMessage::decode(self.output.clone(), item.message.as_slice()) {
            Ok(reply) => {
                let mut entries = split(&reply);
                for entry in entries.iter_mut().filter(|e| e.machine.is_none()) {
                    entry.machine = Some(machine.clone());
                }
                entries
            }
            Err(e) => vec![self.empty(
                machine,
                Some(EntryError {
                    code: tonic::Code::Internal,
                    message: format!(
                        "its reply does not decode as {}: {e}",
                        self.output.full_name()
                    ),
                }),
            )],
        }
    }

    fn empty(&self, machine: Machine, error: Option<EntryError>) -> Entry {
        Entry {
            machine: Some(machine),
            error,
            body: DynamicMessage::new(self.entry_type()),
        }
    }
}

/// The machine an item names.
fn machine(metadata: Option<&Metadata>) -> Machine {
    metadata.map_or_else(Machine::default, |m| Machine {
        addr: m.machine_addr.clone(),
        name: m.machine_name.clone(),
        id: m.machine_id.clone(),
    })
}

/// A last item's failure: its status when not OK (its error text when the
/// status has none), or its error text alone as UNKNOWN.
fn final_error(metadata: Option<&Metadata>) -> Option<EntryError> {
    let metadata = metadata?;
    let (code, message) = metadata
        .status
        .as_ref()
        .map_or((0, ""), |s| (s.code, s.message.as_str()));
    if code == 0 && metadata.error.is_empty() {
        return None;
    }
    let code = match tonic::Code::from(code) {
        tonic::Code::Ok => tonic::Code::Unknown,
        code => code,
    };
    let message = if message.is_empty() {
        metadata.error.clone()
    } else {
        message.to_owned()
    };
    Some(EntryError { code, message })
}

/// `entry` as the tagged shape has it: its body with the machine (and its
/// error) written into its `Metadata` field 1; `None` when the body's type
/// has no such field.
pub fn tagged(entry: &Entry) -> Option<DynamicMessage> {
    let field = entry.body.descriptor().get_field(1)?;
    let Kind::Message(metadata_type) = field.kind() else {
        return None;
    };
    if field.is_list() || !is_metadata(&metadata_type) {
        return None;
    }
    let mut metadata = DynamicMessage::new(metadata_type);
    let machine = entry.machine.clone().unwrap_or_default();
    // `is_metadata` checked the kinds; fields a copy leaves out stay out.
    let set = |message: &mut DynamicMessage, number: u32, value: Value| {
        if message.descriptor().get_field(number).is_some() {
            let _ = message.try_set_field_by_number(number, value);
        }
    };
    set(&mut metadata, 1, Value::String(machine.addr));
    set(&mut metadata, 4, Value::String(machine.id));
    set(&mut metadata, 5, Value::String(machine.name));
    if let Some(error) = &entry.error {
        set(&mut metadata, 2, Value::String(error.message.clone()));
        if let Some(Kind::Message(status_type)) =
            metadata.descriptor().get_field(3).map(|f| f.kind())
        {
            let mut status = DynamicMessage::new(status_type);
            set(&mut status, 1, Value::I32(error.code as i32));
            set(&mut status, 2, Value::String(error.message.clone()));
            set(&mut metadata, 3, Value::Message(status));
        }
    }
    let mut message = entry.body.clone();
    message.set_field(&field, Value::Message(metadata));
    Some(message)
}

/// One reply of type `output` (the merged shape: `repeated X messages = 1`)
/// holding `entries`, tagged.
pub fn merged(output: &MessageDescriptor, entries: &[Entry]) -> DynamicMessage {
    let mut reply = DynamicMessage::new(output.clone());
    let items: Vec<Value> = entries
        .iter()
        .filter_map(tagged)
        .map(Value::Message)
        .collect();
    let _ = reply.try_set_field_by_number(1, Value::List(items));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use prost_reflect::DescriptorPool;
    use switchyard_director::pb::RpcStatus;

    fn pool() -> DescriptorPool {
        DescriptorPool::decode(machine_info::pb::FILE_DESCRIPTOR_SET).unwrap()
    }

    fn metadata(name: &str, code: i32) -> Option<Metadata> {
        Some(Metadata {
            machine_addr: format!("[fd00::{}]:51000", name.len()),
            machine_name: name.to_owned(),
            status: (code != 0).then(|| RpcStatus {
                code,
                message: format!("{name} is down"),
                details: Vec::new(),
            }),
            ..Metadata::default()
        })
    }

    fn reply(name: &str, message: Vec<u8>) -> MachineReply {
        MachineReply {
            metadata: metadata(name, 0),
            message,
            ..MachineReply::default()
        }
    }

    fn last(name: &str, code: i32) -> MachineReply {
        MachineReply {
            metadata: metadata(name, code),
            last: true,
            ..MachineReply::default()
        }
    }

    #[test]
    fn items_become_the_entries_of_the_tagged_shape() {
        let output = pool()
            .get_message_by_name("machineinfo.v1.DescribeResponse")
            .unwrap();
        let mut envelope = Envelope::new(output.clone());
        assert_eq!(*envelope.shape(), Shape::Merged);
        let describe = machine_info::pb::DescribeResponse {
            messages: vec![machine_info::pb::Description {
                name: "alpha".into(),
                calls: 2,
                ..Default::default()
            }],
        };
        let mut entries = envelope.entries(&reply("alpha", describe.encode_to_vec()));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].machine_label(), "alpha");
        assert_eq!(entries[0].error, None);
        assert_eq!(
            entries[0].body.descriptor().full_name(),
            "machineinfo.v1.Description"
        );
        // Done after its replies: nothing more to show.
        assert!(envelope.entries(&last("alpha", 0)).is_empty());
        // Done without a reply: a row of its own, empty.
        let beta = envelope.entries(&last("beta", 0));
        assert_eq!(beta.len(), 1);
        assert_eq!((beta[0].machine_label(), &beta[0].error), ("beta", &None));
        // Failed: its error, in an entry of the entry type.
        let gamma = envelope.entries(&last("gamma", tonic::Code::Unavailable as i32));
        assert_eq!(
            gamma[0].error,
            Some(EntryError {
                code: tonic::Code::Unavailable,
                message: "gamma is down".into()
            })
        );
        assert_eq!(
            gamma[0].body.descriptor().full_name(),
            "machineinfo.v1.Description"
        );
        // A reply that is not the method's type is that machine's error.
        let bad = envelope.entries(&reply("delta", vec![0xff, 0xff]));
        assert_eq!(bad[0].error.as_ref().unwrap().code, tonic::Code::Internal);

        // Back to the tagged shape: one merged reply, each entry tagged.
        entries.extend(gamma);
        let merged = merged(&output, &entries);
        let decoded = machine_info::pb::DescribeResponse::decode(
            prost::Message::encode_to_vec(&merged).as_slice(),
        )
        .unwrap();
        let tags: Vec<_> = decoded
            .messages
            .iter()
            .map(|d| {
                let m = d.metadata.clone().unwrap();
                (m.machine_name, m.error, m.status.map(|s| s.code))
            })
            .collect();
        assert_eq!(
            tags,
            [
                ("alpha".to_owned(), String::new(), None),
                ("gamma".to_owned(), "gamma is down".to_owned(), Some(14)),
            ]
        );
        assert_eq!(decoded.messages[0].calls, 2);
    }

    #[test]
    fn a_reply_type_without_the_layout_is_one_untagged_entry_per_reply() {
        let pool = DescriptorPool::decode(switchyard_director::pb::FILE_DESCRIPTOR_SET).unwrap();
        let output = pool
            .get_message_by_name("switchyard.v1.ListMachinesResponse")
            .unwrap();
        let mut envelope = Envelope::new(output);
        assert_eq!(*envelope.shape(), Shape::Plain);
        let list = switchyard_director::pb::ListMachinesResponse {
            machines: vec![switchyard_director::pb::MachineStatus {
                name: "m".into(),
                ..Default::default()
            }],
        };
        let entries = envelope.entries(&reply("alpha", list.encode_to_vec()));
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].machine_label(), "alpha");
        assert_eq!(
            entries[0].body.descriptor().full_name(),
            "switchyard.v1.ListMachinesResponse"
        );
        assert!(tagged(&entries[0]).is_none());
    }
}
