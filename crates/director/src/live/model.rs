//! The registry's data: members as stored in etcd, the snapshot handed to the
//! director, and the checks that decide whether one entry is usable.
//!
//! Entries are validated one by one so that a single bad value (hand-edited,
//! written by a buggy or newer machine) costs only that entry, never the
//! registry.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::addr::MachineAddr;
use crate::live::error::EntryError;
use crate::registry::{Machine, Registry, RegistryError};

/// A member value as stored under `<prefix>machines/<id>`:
/// `{"id":"m1","name":"alpha","addr":"fd00::1"}`. Unknown fields are
/// ignored so that newer machines can add some; the address is checked
/// apart so that its error names it.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MemberJson {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) addr: String,
}

impl From<&Machine> for MemberJson {
    fn from(machine: &Machine) -> Self {
        Self {
            id: machine.id.clone(),
            name: machine.name.clone(),
            addr: machine.addr.to_string(),
        }
    }
}

/// The registry as of one etcd revision. Swapped whole by the consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Valid members, sorted by ID, without conflicting entries.
    pub machines: Vec<Machine>,
    /// IDs that have a liveness key (whether or not they are members).
    pub alive: HashSet<String>,
    /// The etcd revision this content was read at; 0 before the first read.
    pub revision: i64,
}

impl Snapshot {
    /// The member with this ID.
    pub fn machine(&self, id: &str) -> Option<&Machine> {
        self.machines
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.machines[i])
    }

    /// Whether this ID currently has a liveness key.
    pub fn is_alive(&self, id: &str) -> bool {
        self.alive.contains(id)
    }

    /// Same members and liveness, whatever the revision.
    pub fn same_content(&self, other: &Self) -> bool {
        self.machines == other.machines && self.alive == other.alive
    }

    /// The members as the director's registry. Conflicts were left out
    /// when the snapshot was made, so this only fails on a bug.
    pub fn registry(&self) -> Result<Registry, RegistryError> {
        Registry::new(self.machines.clone())
    }
}

/// Whether the published snapshot reflects etcd right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Nothing read yet: the snapshot is empty.
    Starting,
    /// Watching etcd: the snapshot follows every change.
    Fresh,
    /// etcd is unreachable (or the watcher stopped): the last snapshot stays
    /// in force but may be out of date.
    Stale,
}

impl Health {
    /// True while the snapshot follows etcd.
    pub fn is_fresh(self) -> bool {
        self == Self::Fresh
    }
}

/// Longest accepted ID or name, in bytes.
const MAX_IDENTIFIER_LEN: usize = 128;

/// Longest excerpt of a bad value in a log line.
const SHOWN_CHARS: usize = 64;

/// What keeps `value` from being an ID or a name in etcd: the registry's
/// rules ([`Registry::new`]), plus a bounded length and no `/` or control
/// character, since an ID is a key segment.
pub fn identifier_problem(value: &str) -> Option<&'static str> {
    if let Some(reason) = crate::registry::identifier_problem(value) {
        Some(reason)
    } else if value.len() > MAX_IDENTIFIER_LEN {
        Some("it is longer than 128 bytes")
    } else if value.chars().any(|c| c.is_control() || c == '/') {
        Some("it contains `/` or a control character")
    } else {
        None
    }
}

pub(crate) fn check_identifier(what: &'static str, value: &str) -> Result<(), EntryError> {
    match identifier_problem(value) {
        Some(reason) => Err(EntryError::Identifier {
            what,
            value: shown(value),
            reason,
        }),
        None => Ok(()),
    }
}

/// `value` cut short for a log line.
fn shown(value: &str) -> String {
    value.chars().take(SHOWN_CHARS).collect()
}

/// Decodes and checks the value stored for member `key_id`.
pub(crate) fn parse_member(
    key_id: &str,
    value: &[u8],
    max_value_bytes: usize,
) -> Result<Machine, EntryError> {
    if value.len() > max_value_bytes {
        return Err(EntryError::TooLarge {
            len: value.len(),
            max: max_value_bytes,
        });
    }
    // serde_json quotes offending input, which may be multi-byte: cut by
    // characters, never in the middle of one.
    let member: MemberJson =
        serde_json::from_slice(value).map_err(|e| EntryError::Json(shown(&e.to_string())))?;
    if member.id != key_id {
        return Err(EntryError::IdMismatch {
            key_id: key_id.to_owned(),
            value_id: shown(&member.id),
        });
    }
    check_identifier("name", &member.name)?;
    let addr = member
        .addr
        .parse::<MachineAddr>()
        .map_err(|e| EntryError::Addr {
            addr: shown(&member.addr),
            reason: e.reason,
        })?;
    Ok(Machine {
        id: member.id,
        name: member.name,
        addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members() {
        let ok = br#"{"id":"m1","name":"alpha","addr":"[fd00::1]:51001","extra":1}"#;
        let m = parse_member("m1", ok, 1024).unwrap();
        assert_eq!(m.name, "alpha");
        assert_eq!(m.addr.port, Some(51001));
        assert!(matches!(
            parse_member("m2", ok, 1024),
            Err(EntryError::IdMismatch { .. })
        ));
        assert!(matches!(
            parse_member("m1", ok, 10),
            Err(EntryError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_member("m1", b"{", 1024),
            Err(EntryError::Json(_))
        ));
        for bad_addr in ["10.0.0.1", "host", "[fd00::1]:0", ""] {
            let value = format!(r#"{{"id":"m1","name":"alpha","addr":"{bad_addr}"}}"#);
            assert!(
                matches!(
                    parse_member("m1", value.as_bytes(), 1024),
                    Err(EntryError::Addr { .. })
                ),
                "{bad_addr}"
            );
        }
        for bad_name in ["*", "fd00::9", "a,b", "", "a/b"] {
            let value = format!(r#"{{"id":"m1","name":"{bad_name}","addr":"fd00::1"}}"#);
            assert!(
                matches!(
                    parse_member("m1", value.as_bytes(), 1024),
                    Err(EntryError::Identifier { what: "name", .. })
                ),
                "{bad_name}"
            );
        }
    }

    #[test]
    fn snapshot_lookup_and_registry() {
        let machine = |id: &str, addr: &str| Machine {
            id: id.into(),
            name: format!("n{id}"),
            addr: addr.parse().unwrap(),
        };
        let s = Snapshot {
            machines: vec![machine("a", "fd00::1"), machine("b", "fd00::2")],
            alive: HashSet::from(["b".to_owned()]),
            revision: 7,
        };
        assert_eq!(s.machine("b").map(|m| m.name.as_str()), Some("nb"));
        assert!(s.machine("c").is_none());
        assert!(s.is_alive("b") && !s.is_alive("a"));
        assert_eq!(s.registry().unwrap().machines().len(), 2);
        let other = Snapshot {
            revision: 9,
            ..s.clone()
        };
        assert!(s.same_content(&other) && s != other);
    }
}
