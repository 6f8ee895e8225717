//! The watcher's view of the registry keys, kept apart from etcd I/O so that
//! its rules (skip bad entries, resolve conflicts, cap sizes) are unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::{debug, warn};

use crate::addr::MachineAddr;
use crate::live::config::{EtcdConfig, Keys};
use crate::live::error::EntryError;
use crate::live::model::{Snapshot, check_identifier, parse_member};
use crate::registry::Machine;

/// What a key under the prefix stands for.
enum Slot<'a> {
    Member(&'a str),
    Alive(&'a str),
    Other,
}

/// Registry entries as applied so far, each already validated on its own.
#[derive(Debug)]
pub(crate) struct RegistryState {
    keys: Keys,
    max_value_bytes: usize,
    max_members: usize,
    /// Valid member entries by ID (so iteration is in ID order).
    members: BTreeMap<String, Machine>,
    alive: HashSet<String>,
    revision: i64,
    /// An entry was refused for a cap; room made later can only be filled by
    /// a full re-read, since the refused value was not kept.
    overflowed: bool,
    needs_resync: bool,
    /// IDs left out of the last snapshot for a conflict, so each is logged once.
    conflicts: HashSet<String>,
}

impl RegistryState {
    pub(crate) fn new(cfg: &EtcdConfig) -> Self {
        Self {
            keys: cfg.keys(),
            max_value_bytes: cfg.max_value_bytes,
            max_members: cfg.max_members,
            members: BTreeMap::new(),
            alive: HashSet::new(),
            revision: 0,
            overflowed: false,
            needs_resync: false,
            conflicts: HashSet::new(),
        }
    }

    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// Records that everything up to `revision` has been applied.
    pub(crate) fn set_revision(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    /// True once room appeared after entries were refused for a cap.
    pub(crate) fn needs_resync(&self) -> bool {
        self.needs_resync
    }

    /// True while entries are being refused for a cap.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Applies a put; returns whether the registry content may have changed.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> bool {
        match self.slot(key) {
            Ok(Slot::Member(id)) => {
                let id = id.to_owned();
                match parse_member(&id, value, self.max_value_bytes) {
                    Ok(machine) => self.insert_member(key, id, machine),
                    Err(e) => {
                        skip(key, &e);
                        // The key no longer holds a usable member.
                        self.members.remove(&id).is_some()
                    }
                }
            }
            Ok(Slot::Alive(id)) => {
                if self.alive.contains(id) {
                    return false;
                }
                if self.alive.len() >= self.max_members {
                    self.overflow(key);
                    return false;
                }
                self.alive.insert(id.to_owned())
            }
            Ok(Slot::Other) => false,
            Err(e) => {
                skip(key, &e);
                false
            }
        }
    }

    /// Applies a delete; returns whether the registry content may have changed.
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        let removed = match self.slot(key) {
            Ok(Slot::Member(id)) => self.members.remove(id).is_some(),
            Ok(Slot::Alive(id)) => self.alive.remove(id),
            Ok(Slot::Other) | Err(_) => false,
        };
        if removed && self.overflowed {
            self.needs_resync = true;
        }
        removed
    }

    /// The director's view: members in ID order, minus those whose ID, name
    /// or address an earlier member already uses (the director refuses a
    /// registry with such duplicates, so the first by ID wins and the other
    /// is skipped, logged once).
    pub(crate) fn snapshot(&mut self) -> Snapshot {
        let mut identifiers: HashMap<&str, &str> = HashMap::new(); // ID or name -> owner ID
        let mut addrs: HashMap<MachineAddr, &str> = HashMap::new(); // addr -> owner ID
        let mut machines = Vec::with_capacity(self.members.len());
        let mut conflicts = HashSet::new();
        for m in self.members.values() {
            let clash = [("id", m.id.as_str()), ("name", m.name.as_str())]
                .into_iter()
                .find_map(|(what, value)| {
                    identifiers
                        .get(value)
                        .map(|owner| (what, value.to_owned(), *owner))
                })
                .or_else(|| {
                    addrs
                        .get(&m.addr)
                        .map(|owner| ("addr", m.addr.to_string(), *owner))
                });
            if let Some((what, value, owner)) = clash {
                if !self.conflicts.contains(&m.id) {
                    warn!(
                        key = %self.keys.member(&m.id),
                        "registry: skipping entry: {what} {value:?} is already used by member {owner:?}"
                    );
                }
                conflicts.insert(m.id.clone());
                continue;
            }
            identifiers.insert(&m.id, &m.id);
            identifiers.insert(&m.name, &m.id);
            addrs.insert(m.addr, &m.id);
            machines.push(m.clone());
        }
        self.conflicts = conflicts;
        Snapshot {
            machines,
            alive: self.alive.clone(),
            revision: self.revision,
        }
    }

    fn insert_member(&mut self, key: &[u8], id: String, machine: Machine) -> bool {
        let full = self.members.len() >= self.max_members;
        match self.members.get_mut(&id) {
            Some(old) if *old == machine => false,
            Some(old) => {
                *old = machine;
                true
            }
            None if full => {
                self.overflow(key);
                false
            }
            None => {
                self.members.insert(id, machine);
                true
            }
        }
    }

    /// Logs the first refusal for a cap; the rest would only repeat it.
    fn overflow(&mut self, key: &[u8]) {
        if !self.overflowed {
            warn!(
                key = %String::from_utf8_lossy(key),
                max = self.max_members,
                "registry: too many entries; ignoring this and further new ones"
            );
        }
        self.overflowed = true;
    }

    fn slot<'k>(&self, key: &'k [u8]) -> Result<Slot<'k>, EntryError> {
        let Some((rest, member)) = key
            .strip_prefix(self.keys.machines.as_bytes())
            .map(|r| (r, true))
            .or_else(|| {
                key.strip_prefix(self.keys.alive.as_bytes())
                    .map(|r| (r, false))
            })
        else {
            debug!(key = %String::from_utf8_lossy(key), "registry: ignoring unknown key");
            return Ok(Slot::Other);
        };
        let id = std::str::from_utf8(rest).map_err(|_| EntryError::NotUtf8)?;
        check_identifier("id", id)?;
        Ok(if member {
            Slot::Member(id)
        } else {
            Slot::Alive(id)
        })
    }
}

/// One log line per skipped entry, naming its key (etcd writers are the
/// operator's; a rate limit would hide which entries are bad).
fn skip(key: &[u8], error: &EntryError) {
    let key = String::from_utf8_lossy(&key[..key.len().min(512)]);
    warn!(%key, %error, "registry: skipping entry");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(max_members: usize) -> RegistryState {
        let cfg = EtcdConfig {
            max_members,
            max_value_bytes: 256,
            ..EtcdConfig::default()
        };
        RegistryState::new(&cfg)
    }

    fn put(s: &mut RegistryState, id: &str, name: &str, addr: &str) -> bool {
        let v = format!(r#"{{"id":"{id}","name":"{name}","addr":"{addr}"}}"#);
        s.put(
            format!("/switchyard/machines/{id}").as_bytes(),
            v.as_bytes(),
        )
    }

    fn ids(s: &mut RegistryState) -> Vec<String> {
        s.snapshot().machines.into_iter().map(|m| m.id).collect()
    }

    #[test]
    fn conflicts_keep_the_first_by_id() {
        let mut s = state(10);
        put(&mut s, "m2", "alpha", "fd00::2");
        put(&mut s, "m1", "alpha", "fd00::1"); // same name: m2 loses
        put(&mut s, "m3", "gamma", "[fd00::1]"); // same address as m1
        put(&mut s, "m4", "m1", "fd00::4"); // name equals m1's ID
        put(&mut s, "m5", "m5", "fd00::5"); // a name equal to its own ID is fine
        assert_eq!(ids(&mut s), ["m1", "m5"]);
        s.snapshot()
            .registry()
            .expect("a snapshot is a valid registry");
        s.delete(b"/switchyard/machines/m1");
        assert_eq!(ids(&mut s), ["m2", "m3", "m4", "m5"]);
        s.snapshot()
            .registry()
            .expect("a snapshot is a valid registry");
    }

    #[test]
    fn bad_update_drops_the_entry_and_unknown_keys_are_ignored() {
        let mut s = state(10);
        assert!(put(&mut s, "m1", "alpha", "fd00::1"));
        assert!(!put(&mut s, "m1", "alpha", "fd00::1"), "same value");
        assert!(s.put(b"/switchyard/machines/m1", b"not json"));
        assert!(!s.put(b"/switchyard/other", b"x"));
        assert!(!s.put(b"/switchyard/alive/a/b", b""), "bad id");
        assert!(!s.put(b"/switchyard/alive/\xff", b""), "not UTF-8");
        assert!(ids(&mut s).is_empty());
        assert!(s.put(b"/switchyard/alive/m1", b""));
        assert!(s.snapshot().is_alive("m1"));
        assert!(s.delete(b"/switchyard/alive/m1"));
        assert!(!s.snapshot().is_alive("m1"));
    }

    #[test]
    fn caps_then_resync_when_room_appears() {
        let mut s = state(2);
        put(&mut s, "m1", "a", "fd00::1");
        put(&mut s, "m2", "b", "fd00::2");
        assert!(!put(&mut s, "m3", "c", "fd00::3"));
        assert!(s.overflowed() && !s.needs_resync());
        assert!(put(&mut s, "m2", "b", "fd00::22"), "updates still apply");
        s.delete(b"/switchyard/machines/m1");
        assert!(s.needs_resync());
        for id in ["x", "y", "z"] {
            s.put(format!("/switchyard/alive/{id}").as_bytes(), b"");
        }
        assert_eq!(s.snapshot().alive.len(), 2);
    }

    #[test]
    fn revisions_only_go_forward() {
        let mut s = state(2);
        s.set_revision(5);
        s.set_revision(3);
        assert_eq!(s.revision(), 5);
        assert_eq!(s.snapshot().revision, 5);
    }
}
