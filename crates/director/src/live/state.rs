//! The watcher's view of the registry keys, kept apart from etcd I/O so that
//! its rules (skip bad entries, resolve conflicts, cap sizes) are unit-tested.
//!
//! Anyone who can write under the prefix can add entries, so no entry may
//! take the place of a machine that is really there:
//!
//! - **Conflicts** (two entries with the same ID, name or address) go to this
//!   machine's own entry (as it registers it; another value written under
//!   its ID is any entry), then to a member with a heartbeat (an `alive/<id>`
//!   key), then to the first by ID. The order depends only on the keys, so
//!   every machine computes the same registry (each one's own entry aside).
//! - **The cap** (`max_members`) keeps this machine and members with a
//!   heartbeat first: one arriving at a full registry takes the place of the
//!   member without a heartbeat that sorts last. Entries without a heartbeat
//!   only fill the room left, so junk cannot push live members out, whatever
//!   its IDs. A full read takes the heartbeats first for this, and skips from
//!   one wanted member to the next once the registry is full.
//! - **Addresses** pass [`check_dialable`], as caller-written ones do: an
//!   entry naming loopback or IPv4 space is skipped unless `allowed_networks`
//!   admits it.
//!
//! Skipped entries are logged with their key, at most [`SKIPS_NAMED`] a
//! minute; beyond that they are counted, so a flood of junk costs a few lines.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use ipnet::Ipv6Net;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::addr::{MachineAddr, check_dialable};
use crate::live::config::{EtcdConfig, Keys};
use crate::live::error::EntryError;
use crate::live::model::{Snapshot, check_identifier, parse_member};
use crate::registry::Machine;

/// Skipped entries named in a log line per [`SKIP_WINDOW`].
pub(crate) const SKIPS_NAMED: u32 = 32;
const SKIP_WINDOW: Duration = Duration::from_secs(60);

/// Most IDs remembered as dropped for the cap (beyond, any new heartbeat of
/// a non-member calls for a re-read).
const DROPPED_TRACKED: usize = 1024;

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
    /// This machine's ID, when it registers: kept first for the cap.
    own_id: Option<String>,
    /// This machine's entry as it registers it: wins every conflict (an
    /// entry someone else wrote under its ID is not it).
    own: Option<Machine>,
    allowed_networks: Option<Vec<Ipv6Net>>,
    /// Valid member entries by ID (so iteration is in ID order).
    members: BTreeMap<String, Machine>,
    alive: BTreeSet<String>,
    revision: i64,
    /// An entry was refused (or dropped) for a cap; room made later can only
    /// be filled by a full re-read, since the value was not kept.
    overflowed: bool,
    needs_resync: bool,
    /// Member IDs refused or dropped for the cap, so that a heartbeat
    /// appearing for one brings its entry back (by a re-read).
    dropped: HashSet<String>,
    /// More IDs were dropped than `dropped` holds.
    dropped_untracked: bool,
    /// IDs left out of the last snapshot for a conflict, so each is logged once.
    conflicts: HashSet<String>,
    skips: SkipLog,
}

impl RegistryState {
    pub(crate) fn new(cfg: &EtcdConfig) -> Self {
        Self {
            keys: cfg.keys(),
            max_value_bytes: cfg.max_value_bytes,
            max_members: cfg.max_members,
            own_id: cfg.register.as_ref().map(|m| m.id.clone()),
            own: cfg.register.clone(),
            allowed_networks: cfg.allowed_networks.clone(),
            members: BTreeMap::new(),
            alive: BTreeSet::new(),
            revision: 0,
            overflowed: false,
            needs_resync: false,
            dropped: HashSet::new(),
            dropped_untracked: false,
            conflicts: HashSet::new(),
            skips: SkipLog::default(),
        }
    }

    /// Takes over `old`'s log budget, so that re-reading does not log the
    /// same bad entries afresh.
    pub(crate) fn inherit_logs(&mut self, old: &mut Self) {
        self.skips = std::mem::take(&mut old.skips);
    }

    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// Records that everything up to `revision` has been applied.
    pub(crate) fn set_revision(&mut self, revision: i64) {
        self.revision = self.revision.max(revision);
    }

    /// True once room appeared after entries were refused for a cap, or a
    /// heartbeat appeared for a member whose entry was refused for it.
    pub(crate) fn needs_resync(&self) -> bool {
        self.needs_resync
    }

    /// True while entries are being refused for a cap.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// True when a new member without a heartbeat would be refused.
    pub(crate) fn full(&self) -> bool {
        self.members.len() >= self.max_members
    }

    /// For a full read that stops reading every key once the registry is
    /// full: the next member ID after the member key `after` that would
    /// still get in (this machine's, or one with a heartbeat) and is not in
    /// yet.
    pub(crate) fn next_wanted_after(&self, after: &[u8]) -> Option<String> {
        let after = after.strip_prefix(self.keys.machines.as_bytes())?;
        self.own_id
            .iter()
            .chain(&self.alive)
            .filter(|id| id.as_bytes() > after && !self.members.contains_key(*id))
            .min()
            .cloned()
    }

    /// Records that a full read jumped over entries a full registry would
    /// have refused: room made later calls for a re-read, as after a refusal.
    pub(crate) fn skipped_for_cap(&mut self) {
        self.overflowed = true;
        self.dropped_untracked = true;
    }

    /// How many members could be wanted by [`Self::next_wanted_after`]: an
    /// upper bound on the jumps of a full read.
    pub(crate) fn wanted_count(&self) -> usize {
        self.alive.len() + usize::from(self.own_id.is_some())
    }

    /// Whether `id` is kept first: this machine, or one with a heartbeat.
    fn preferred(&self, id: &str) -> bool {
        self.own_id.as_deref() == Some(id) || self.alive.contains(id)
    }

    /// Applies a put; returns whether the registry content may have changed.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> bool {
        match self.slot(key) {
            Ok(Slot::Member(id)) => {
                let id = id.to_owned();
                match self.member(&id, value) {
                    Ok(machine) => self.insert_member(key, id, machine),
                    Err(e) => {
                        self.skips.skip(key, &e);
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
                if !self.members.contains_key(id)
                    && (self.dropped.contains(id) || self.dropped_untracked)
                {
                    // Its entry was refused for the cap and is now wanted.
                    self.needs_resync = true;
                }
                self.alive.insert(id.to_owned())
            }
            Ok(Slot::Other) => false,
            Err(e) => {
                self.skips.skip(key, &e);
                false
            }
        }
    }

    /// Applies a delete; returns whether the registry content may have changed.
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        let removed = match self.slot(key) {
            Ok(Slot::Member(id)) => {
                self.dropped.remove(id);
                self.members.remove(id).is_some()
            }
            Ok(Slot::Alive(id)) => self.alive.remove(id),
            Ok(Slot::Other) | Err(_) => false,
        };
        if removed && self.overflowed {
            self.needs_resync = true;
        }
        removed
    }

    /// The director's view: members in ID order, minus those whose ID, name
    /// or address a member ranked before already uses (the director refuses
    /// a registry with such duplicates). This machine ranks first, then
    /// members with a heartbeat, then the rest, each by ID; a member left
    /// out is logged once.
    pub(crate) fn snapshot(&mut self) -> Snapshot {
        let mut ranked: Vec<&Machine> = self.members.values().collect();
        // Stable: ID order within a rank.
        ranked.sort_by_key(|m| {
            if self.own.as_ref() == Some(*m) {
                0
            } else if self.alive.contains(&m.id) {
                1
            } else {
                2
            }
        });
        let mut identifiers: HashMap<&str, &str> = HashMap::new(); // ID or name -> owner ID
        let mut addrs: HashMap<MachineAddr, &str> = HashMap::new(); // addr -> owner ID
        let mut machines = Vec::with_capacity(ranked.len());
        let mut conflicts = HashSet::new();
        for m in ranked {
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
                    let error = EntryError::Conflict {
                        what,
                        value,
                        owner: owner.to_owned(),
                    };
                    self.skips.skip(self.keys.member(&m.id).as_bytes(), &error);
                }
                conflicts.insert(m.id.clone());
                continue;
            }
            identifiers.insert(&m.id, &m.id);
            identifiers.insert(&m.name, &m.id);
            addrs.insert(m.addr, &m.id);
            machines.push(m.clone());
        }
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        self.conflicts = conflicts;
        Snapshot {
            machines,
            alive: self.alive.iter().cloned().collect(),
            revision: self.revision,
        }
    }

    /// Decodes member `id`'s value and checks its address may be dialled.
    fn member(&self, id: &str, value: &[u8]) -> Result<Machine, EntryError> {
        let machine = parse_member(id, value, self.max_value_bytes)?;
        check_dialable(machine.addr.ip, self.allowed_networks.as_deref()).map_err(|reason| {
            EntryError::NotDialable {
                addr: machine.addr.to_string(),
                reason,
            }
        })?;
        Ok(machine)
    }

    fn insert_member(&mut self, key: &[u8], id: String, machine: Machine) -> bool {
        if let Some(old) = self.members.get_mut(&id) {
            if *old == machine {
                return false;
            }
            *old = machine;
            return true;
        }
        if self.full() {
            // Only this machine or a member with a heartbeat may take the
            // place of one without; the last such by ID gives way.
            let victim = self
                .preferred(&id)
                .then(|| {
                    self.members
                        .keys()
                        .rev()
                        .find(|other| !self.preferred(other))
                        .cloned()
                })
                .flatten();
            self.overflow(key);
            let Some(victim) = victim else {
                self.remember_dropped(id);
                return false;
            };
            self.members.remove(&victim);
            self.remember_dropped(victim);
        }
        self.members.insert(id, machine);
        true
    }

    fn remember_dropped(&mut self, id: String) {
        if self.dropped.len() < DROPPED_TRACKED {
            self.dropped.insert(id);
        } else {
            self.dropped_untracked = true;
        }
    }

    /// Logs the first refusal for a cap; the rest would only repeat it.
    fn overflow(&mut self, key: &[u8]) {
        if !self.overflowed {
            warn!(
                key = %String::from_utf8_lossy(&key[..key.len().min(512)]),
                max = self.max_members,
                "registry: too many entries; ignoring this and further new ones without a heartbeat"
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

/// One log line per skipped entry, naming its key, for the first
/// [`SKIPS_NAMED`] of a minute; later ones are counted and the count logged
/// with the next line after the minute.
#[derive(Debug, Default)]
struct SkipLog {
    since: Option<Instant>,
    named: u32,
    unnamed: u64,
}

impl SkipLog {
    fn skip(&mut self, key: &[u8], error: &EntryError) {
        let now = Instant::now();
        if self
            .since
            .is_none_or(|since| now.duration_since(since) >= SKIP_WINDOW)
        {
            if self.unnamed > 0 {
                warn!(
                    count = self.unnamed,
                    "registry: skipped more bad entries than were named in the last minute"
                );
            }
            *self = Self {
                since: Some(now),
                named: 0,
                unnamed: 0,
            };
        }
        if self.named < SKIPS_NAMED {
            self.named += 1;
            let key = String::from_utf8_lossy(&key[..key.len().min(512)]);
            warn!(%key, %error, "registry: skipping entry");
            if self.named == SKIPS_NAMED {
                warn!(
                    "registry: {SKIPS_NAMED} bad entries within a minute; further ones are counted, not named"
                );
            }
        } else {
            self.unnamed += 1;
        }
    }
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

    /// A state for the machine registered as `own`, `alpha`, `fd00::9`.
    fn own_state(max_members: usize, own: &str) -> RegistryState {
        let cfg = EtcdConfig {
            max_members,
            max_value_bytes: 256,
            register: Some(Machine {
                id: own.into(),
                name: "alpha".into(),
                addr: "fd00::9".parse().unwrap(),
            }),
            ..EtcdConfig::default()
        };
        RegistryState::new(&cfg)
    }

    fn beat(s: &mut RegistryState, id: &str) -> bool {
        s.put(format!("/switchyard/alive/{id}").as_bytes(), b"")
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
    fn conflicts_go_to_this_machine_then_heartbeats_then_the_first_by_id() {
        let mut s = own_state(10, "m9");
        put(&mut s, "m5", "alpha", "fd00::5"); // live
        beat(&mut s, "m5");
        put(&mut s, "a0", "alpha", "fd00::a"); // sorts first, no heartbeat
        put(&mut s, "a1", "other", "fd00::5"); // m5's address
        put(&mut s, "a2", "m5", "fd00::b"); // m5's ID as its name
        assert_eq!(ids(&mut s), ["m5"]);
        // Two with a heartbeat: the first by ID, as before (m5 gives way, so
        // its address and ID are free for the others).
        beat(&mut s, "a0");
        assert_eq!(ids(&mut s), ["a0", "a1", "a2"]);
        s.delete(b"/switchyard/alive/a0");
        assert_eq!(ids(&mut s), ["m5"]);
        // This machine's own entry wins even over a live member that sorts
        // first, with or without its own heartbeat (a1 and a2 only clashed
        // with m5).
        put(&mut s, "m9", "alpha", "fd00::9");
        assert_eq!(ids(&mut s), ["a1", "a2", "m9"]);
        beat(&mut s, "a0");
        assert_eq!(ids(&mut s), ["a1", "a2", "m9"]);
        // Only its entry as it registers it: one written over it is any
        // other entry.
        let mut s = own_state(10, "m9");
        put(&mut s, "m9", "alpha", "fd00::9");
        put(&mut s, "a0", "alpha", "fd00::a");
        assert_eq!(ids(&mut s), ["m9"]);
        put(&mut s, "m9", "alpha", "fd00::66");
        assert_eq!(ids(&mut s), ["a0"]);
        s.snapshot()
            .registry()
            .expect("a snapshot is a valid registry");
    }

    #[test]
    fn conflict_winners_do_not_depend_on_arrival_order() {
        let entries = [
            ("b", "alpha", "fd00::1"),
            ("a", "alpha", "fd00::2"),
            ("c", "gamma", "fd00::1"),
            ("d", "delta", "fd00::4"),
        ];
        let mut seen = HashSet::new();
        for rotation in 0..entries.len() {
            let mut s = state(10);
            for (i, (id, name, addr)) in entries.iter().cycle().skip(rotation).take(4).enumerate() {
                put(&mut s, id, name, addr);
                if i == 1 {
                    beat(&mut s, "b");
                }
            }
            beat(&mut s, "b");
            seen.insert(ids(&mut s));
        }
        assert_eq!(seen, HashSet::from([vec!["b".to_owned(), "d".to_owned()]]));
    }

    #[test]
    fn the_cap_keeps_live_members_and_this_machine_first() {
        let mut s = own_state(3, "z-own");
        for id in ["j1", "j2", "j3"] {
            put(
                &mut s,
                id,
                &format!("{id}-n"),
                &format!("fd00::{}", &id[1..]),
            );
        }
        assert!(!put(&mut s, "j4", "j4-n", "fd00::4"), "junk waits for room");
        assert!(s.overflowed());
        // A member with a heartbeat takes the place of the last junk by ID,
        // this machine's entry that of the next.
        beat(&mut s, "x-live");
        assert!(put(&mut s, "x-live", "live", "fd00::10"));
        assert!(put(&mut s, "z-own", "own", "fd00::11"));
        assert_eq!(ids(&mut s), ["j1", "x-live", "z-own"]);
        assert!(!s.needs_resync());
        // Full of members that are kept first: nothing else gets in.
        beat(&mut s, "y-live");
        beat(&mut s, "j1");
        assert!(!put(&mut s, "y-live", "y", "fd00::12"));
        assert_eq!(ids(&mut s), ["j1", "x-live", "z-own"]);
        // Room again: a re-read decides who fills it.
        s.delete(b"/switchyard/machines/j1");
        assert!(s.needs_resync());
    }

    #[test]
    fn a_heartbeat_for_a_member_refused_for_the_cap_calls_for_a_reread() {
        let mut s = state(2);
        put(&mut s, "a", "a", "fd00::1");
        put(&mut s, "a2", "a2", "fd00::3");
        assert!(!put(&mut s, "b", "b", "fd00::2"));
        assert!(!s.needs_resync());
        beat(&mut s, "c"); // never refused
        assert!(!s.needs_resync());
        beat(&mut s, "b");
        assert!(s.needs_resync(), "b's entry was dropped and is now wanted");
    }

    #[test]
    fn a_full_read_jumps_to_the_members_still_wanted() {
        let mut s = own_state(3, "m-own");
        beat(&mut s, "k-live");
        beat(&mut s, "a-live");
        put(&mut s, "a-live", "al", "fd00::1");
        put(&mut s, "b", "b", "fd00::2");
        put(&mut s, "c", "c", "fd00::3");
        assert!(s.full());
        assert_eq!(s.wanted_count(), 3);
        let after = |s: &RegistryState, key: &str| s.next_wanted_after(key.as_bytes());
        assert_eq!(
            after(&s, "/switchyard/machines/b").as_deref(),
            Some("k-live")
        );
        assert_eq!(
            after(&s, "/switchyard/machines/k-live").as_deref(),
            Some("m-own")
        );
        assert_eq!(after(&s, "/switchyard/machines/m-own"), None);
        assert_eq!(after(&s, "/switchyard/alive/x"), None);
        s.skipped_for_cap();
        assert!(s.overflowed());
        // An entry skipped over may be any member: a new heartbeat for a
        // non-member calls for a re-read.
        beat(&mut s, "q");
        assert!(s.needs_resync());
    }

    #[test]
    fn addresses_that_may_not_be_dialled_are_skipped() {
        let mut s = state(10);
        put(&mut s, "ok", "ok", "fd00::1");
        for (i, addr) in [
            "::ffff:127.0.0.1",
            "[::1]:51001",
            "::1",
            "fe80::1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::1",
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("bad{i}");
            let v = format!(r#"{{"id":"{id}","name":"n{i}","addr":"{addr}"}}"#);
            assert!(
                matches!(
                    s.member(&id, v.as_bytes()),
                    Err(EntryError::NotDialable { .. })
                ),
                "{addr}"
            );
            put(&mut s, &id, &format!("n{i}"), addr);
        }
        assert_eq!(ids(&mut s), ["ok"]);
        // An entry that becomes refused is dropped.
        assert!(put(&mut s, "ok", "ok", "::ffff:10.0.0.1"));
        assert!(ids(&mut s).is_empty());

        // allowed_networks admit what they name, and only that.
        let cfg = EtcdConfig {
            allowed_networks: Some(vec!["::1/128".parse().unwrap()]),
            ..EtcdConfig::default()
        };
        let mut s = RegistryState::new(&cfg);
        put(&mut s, "m1", "a", "[::1]:51001");
        put(&mut s, "m2", "b", "fd00::2");
        put(&mut s, "m3", "c", "::ffff:127.0.0.1");
        assert_eq!(ids(&mut s), ["m1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn skipped_entries_are_named_a_few_a_minute_then_counted() {
        let mut log = SkipLog::default();
        for _ in 0..SKIPS_NAMED + 5 {
            log.skip(b"/switchyard/machines/x", &EntryError::NotUtf8);
        }
        assert_eq!((log.named, log.unnamed), (SKIPS_NAMED, 5));
        tokio::time::advance(SKIP_WINDOW).await;
        log.skip(b"/switchyard/machines/x", &EntryError::NotUtf8);
        assert_eq!((log.named, log.unnamed), (1, 0));
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
