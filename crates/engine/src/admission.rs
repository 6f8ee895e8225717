//! Who gets one of the process's connection slots, and who gives one up.
//!
//! Connection slots (file descriptors) are shared by every caller, so the
//! rules are about what one caller can take from the others:
//!
//! - A connection counts as *established* only once it has sent its first
//!   request. Until then (TLS, the HTTP/2 preface, or silence) it holds a
//!   slot on credit, and is the first to give it up at the cap.
//! - At the cap a new connection takes the slot of the oldest connection
//!   that is not established, else of the oldest established one with no
//!   open stream (closed gracefully: GOAWAY). It is refused only when every
//!   slot holds a connection with a call running.
//! - A few slots are kept for the Unix listeners ([`ConnectionLimits::unix_reserved`]):
//!   no TCP caller can take them, so the machine's operators always get in.
//! - One peer (an IP address; with TLS also a client certificate) holds at
//!   most [`ConnectionLimits::per_peer`] slots; past it, its own oldest
//!   idle connection gives way, or the new one is refused.
//! - A connection with no open stream for [`ConnectionLimits::idle_timeout`]
//!   is closed gracefully (a reaper looks every half period).
//!
//! The bookkeeping is one mutex taken per connection event (accept, close,
//! reaper scan), never per call: calls only bump a connection's atomic
//! [`Activity`] counters, which eviction and the reaper read.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;

/// Most connections one peer may hold unless configured.
pub const DEFAULT_PER_PEER: usize = 128;

/// Most slots kept for Unix listeners unless configured.
pub const DEFAULT_UNIX_RESERVED: usize = 64;

/// How long a connection may stay without an open stream unless configured.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The bounds on connections, shared by every listener of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, on every listener together.
    pub max: usize,
    /// Of those, slots only Unix-listener connections may take.
    pub unix_reserved: usize,
    /// Connections one peer may hold: one IP address, and with TLS one
    /// client certificate.
    pub per_peer: usize,
    /// A connection without an open stream for this long is closed.
    pub idle_timeout: Duration,
}

impl ConnectionLimits {
    /// `max` connections, with the defaults for the rest: 1/16 of them kept
    /// for Unix listeners (at most [`DEFAULT_UNIX_RESERVED`]), at most
    /// [`DEFAULT_PER_PEER`] per peer, closed after [`DEFAULT_IDLE_TIMEOUT`]
    /// without a stream.
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        let unix_reserved = (max / 16).min(DEFAULT_UNIX_RESERVED);
        Self {
            max,
            unix_reserved,
            per_peer: DEFAULT_PER_PEER.min(max - unix_reserved).max(1),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }

    /// Slots TCP connections may take.
    fn tcp_max(&self) -> usize {
        self.max.saturating_sub(self.unix_reserved).max(1)
    }
}

/// A bound on open connections, shared by every listener served with the
/// same [`ServerConfig`](crate::ServerConfig) (clones share it): file
/// descriptors are a process resource.
#[derive(Debug, Clone)]
pub struct ConnectionLimit(pub(crate) Arc<Admission>);

impl ConnectionLimit {
    /// At most `max` connections open at once, the other bounds at their
    /// defaults ([`ConnectionLimits::new`]).
    pub fn new(max: usize) -> Self {
        Self::with(ConnectionLimits::new(max))
    }

    /// The given bounds.
    pub fn with(limits: ConnectionLimits) -> Self {
        Self(Arc::new(Admission::new(limits)))
    }

    /// The bounds.
    pub fn limits(&self) -> ConnectionLimits {
        self.0.limits
    }

    /// The total bound.
    pub fn max(&self) -> usize {
        self.0.limits.max
    }
}

/// Who a connection counts against for the per-peer bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerKey {
    /// A TCP peer's address (IPv4-mapped addresses as IPv4).
    Ip(IpAddr),
    /// A TLS client certificate (a hash of the leaf's DER).
    Certificate(u64),
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot it may take holds a connection with a call running.
    Full,
    /// Its peer holds its share, every one of them with a call running.
    PeerFull,
}

/// What a connection's calls do, for eviction and the idle reaper: bumped
/// per call without a lock.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Requests received so far.
    calls: AtomicU64,
    /// Requests whose response has not ended.
    active: AtomicUsize,
}

impl Activity {
    /// A request arrived; the guard marks its end when dropped.
    pub(crate) fn call_started(self: &Arc<Self>) -> ActiveCall {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveCall(self.clone())
    }

    fn established(&self) -> bool {
        self.calls.load(Ordering::Relaxed) > 0
    }

    fn idle(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0
    }
}

/// One request of a connection, until its response ends.
#[derive(Debug)]
pub(crate) struct ActiveCall(Arc<Activity>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection is asked to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Close {
    /// Its slot went to a new connection at the cap.
    Evicted = 1,
    /// It had no open stream for the idle timeout.
    Idle = 2,
    /// The server is shutting down.
    Shutdown = 3,
}

/// Tells one connection to close, and why.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    notify: Notify,
    reason: AtomicU8,
}

impl Signal {
    /// Asks the connection to close; the first reason given stays.
    fn send(&self, reason: Close) {
        if self
            .reason
            .compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.notify.notify_one();
        }
    }

    /// Resolves once the connection is asked to close.
    pub(crate) async fn closing(&self) -> Close {
        self.notify.notified().await;
        self.reason()
    }

    fn reason(&self) -> Close {
        match self.reason.load(Ordering::Acquire) {
            1 => Close::Evicted,
            2 => Close::Idle,
            _ => Close::Shutdown,
        }
    }
}

/// The open connections.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) limits: ConnectionLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    open_tcp: usize,
    /// Every open connection by ID, so oldest first.
    slots: BTreeMap<u64, Slot>,
    /// Slots held per peer.
    peers: HashMap<PeerKey, usize>,
    /// Whether the idle reaper runs.
    reaping: bool,
}

#[derive(Debug)]
struct Slot {
    listener: u64,
    unix: bool,
    keys: Vec<PeerKey>,
    activity: Arc<Activity>,
    signal: Arc<Signal>,
    /// Asked to close already: not picked again.
    closing: bool,
    /// `activity.calls` at the reaper's last look, and how many looks in a
    /// row found it idle and unchanged.
    seen_calls: u64,
    idle_looks: u8,
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    /// Its calls.
    pub(crate) activity: Arc<Activity>,
    /// How it hears that it must close.
    pub(crate) signal: Arc<Signal>,
}

impl Admission {
    fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection on `listener` (a Unix one when `unix`)
    /// from `key`; `true` with it when another connection was asked to give
    /// up its slot for it.
    pub(crate) fn admit(
        self: &Arc<Self>,
        listener: u64,
        unix: bool,
        key: Option<PeerKey>,
    ) -> Result<(Ticket, bool), Refusal> {
        let mut state = self.state();
        let mut evicted = false;
        if let Some(key) = key {
            evicted |= self.make_room_for_peer(&mut state, key)?;
        }
        let full = if unix {
            state.slots.len() >= self.limits.max
        } else {
            state.open_tcp >= self.limits.tcp_max() || state.slots.len() >= self.limits.max
        };
        if full {
            // A TCP connection can only take another TCP connection's slot.
            let victim = state
                .victim(|slot| unix || !slot.unix)
                .ok_or(Refusal::Full)?;
            state.close(victim, Close::Evicted);
            evicted = true;
        }
        state.next_id += 1;
        let id = state.next_id;
        let activity = Arc::new(Activity::default());
        let signal = Arc::new(Signal::default());
        if !unix {
            state.open_tcp += 1;
        }
        let keys: Vec<PeerKey> = key.into_iter().collect();
        for key in &keys {
            *state.peers.entry(*key).or_default() += 1;
        }
        state.slots.insert(
            id,
            Slot {
                listener,
                unix,
                keys,
                activity: activity.clone(),
                signal: signal.clone(),
                closing: false,
                seen_calls: 0,
                idle_looks: 0,
            },
        );
        let ticket = Ticket {
            admission: self.clone(),
            id,
            activity,
            signal,
        };
        Ok((ticket, evicted))
    }

    /// Counts `ticket`'s connection against `key` too (its client
    /// certificate, known once TLS is done); `true` when another of that
    /// peer's connections was asked to give way.
    pub(crate) fn identify(&self, ticket: &Ticket, key: PeerKey) -> Result<bool, Refusal> {
        let mut state = self.state();
        let evicted = self.make_room_for_peer(&mut state, key)?;
        if let Some(slot) = state.slots.get_mut(&ticket.id) {
            slot.keys.push(key);
            *state.peers.entry(key).or_default() += 1;
        }
        Ok(evicted)
    }

    /// At `key`'s share, asks its oldest connection that can give way to.
    fn make_room_for_peer(&self, state: &mut State, key: PeerKey) -> Result<bool, Refusal> {
        if state.peers.get(&key).copied().unwrap_or(0) < self.limits.per_peer {
            return Ok(false);
        }
        let victim = state
            .victim(|slot| slot.keys.contains(&key))
            .ok_or(Refusal::PeerFull)?;
        state.close(victim, Close::Evicted);
        Ok(true)
    }

    /// Asks every connection of `listener` to close (shutdown).
    pub(crate) fn close_listener(&self, listener: u64) {
        let mut state = self.state();
        let ids: Vec<u64> = state
            .slots
            .iter()
            .filter(|(_, slot)| slot.listener == listener)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            state.close(id, Close::Shutdown);
        }
    }

    /// One look of the idle reaper: a connection seen without an open
    /// stream and without a new request at two looks in a row is closed.
    /// How many were.
    pub(crate) fn reap_idle(&self) -> usize {
        let mut state = self.state();
        let mut idle = Vec::new();
        for (id, slot) in state.slots.iter_mut().filter(|(_, s)| !s.closing) {
            let calls = slot.activity.calls.load(Ordering::Relaxed);
            if slot.activity.idle() && calls == slot.seen_calls {
                slot.idle_looks += 1;
                if slot.idle_looks >= 2 {
                    idle.push(*id);
                }
            } else {
                slot.seen_calls = calls;
                slot.idle_looks = 0;
            }
        }
        for id in &idle {
            state.close(*id, Close::Idle);
        }
        idle.len()
    }

    /// Starts the idle reaper once (it ends with the admission).
    pub(crate) fn start_reaper(self: &Arc<Self>) {
        let mut state = self.state();
        if std::mem::replace(&mut state.reaping, true) {
            return;
        }
        let admission: Weak<Self> = Arc::downgrade(self);
        let period = (self.limits.idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(admission) = admission.upgrade() else {
                    return;
                };
                admission.reap_idle();
            }
        });
    }
}

impl State {
    /// The connection to ask for its slot among those `eligible`: the oldest
    /// not established, else the oldest without an open stream.
    fn victim(&self, eligible: impl Fn(&Slot) -> bool) -> Option<u64> {
        let open = || {
            self.slots
                .iter()
                .filter(|(_, slot)| !slot.closing && eligible(slot))
        };
        open()
            .find(|(_, slot)| !slot.activity.established())
            .or_else(|| open().find(|(_, slot)| slot.activity.idle()))
            .map(|(id, _)| *id)
    }

    fn close(&mut self, id: u64, reason: Close) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.closing = true;
            slot.signal.send(reason);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        let Some(slot) = state.slots.remove(&self.id) else {
            return;
        };
        if !slot.unix {
            state.open_tcp -= 1;
        }
        for key in &slot.keys {
            if let Some(count) = state.peers.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    state.peers.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, unix_reserved: usize, per_peer: usize) -> Arc<Admission> {
        Arc::new(Admission::new(ConnectionLimits {
            max,
            unix_reserved,
            per_peer,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }))
    }

    fn ip(last: u8) -> Option<PeerKey> {
        Some(PeerKey::Ip(IpAddr::from([10, 0, 0, last])))
    }

    fn asked(ticket: &Ticket) -> Option<Close> {
        (ticket.signal.reason.load(Ordering::Acquire) != 0).then(|| ticket.signal.reason())
    }

    #[test]
    fn the_cap_takes_handshakes_then_idle_connections_then_refuses() {
        let admission = limits(3, 0, 10);
        let (busy, _) = admission.admit(0, false, ip(1)).unwrap();
        let _call = busy.activity.call_started();
        let (idle, _) = admission.admit(0, false, ip(2)).unwrap();
        drop(idle.activity.call_started()); // established, call over
        let (silent, _) = admission.admit(0, false, ip(3)).unwrap();
        // At the cap: the connection that never sent a request goes first…
        let (next, evicted) = admission.admit(0, false, ip(4)).unwrap();
        assert!(evicted);
        assert_eq!(asked(&silent), Some(Close::Evicted));
        assert_eq!((asked(&busy), asked(&idle)), (None, None));
        drop(silent);
        let _next_call = next.activity.call_started();
        // …then the established one without an open stream…
        let (last, evicted) = admission.admit(0, false, ip(5)).unwrap();
        assert!(evicted);
        let _last_call = last.activity.call_started();
        assert_eq!(asked(&idle), Some(Close::Evicted));
        drop(idle);
        // …and with every slot running a call, the next one is refused.
        assert_eq!(admission.admit(0, false, ip(6)).unwrap_err(), Refusal::Full);
        assert_eq!(asked(&busy), None);
    }

    #[test]
    fn tcp_callers_cannot_take_the_unix_reserve() {
        let admission = limits(4, 2, 10);
        let tcp: Vec<Ticket> = (1..=2)
            .map(|i| admission.admit(0, false, ip(i)).unwrap().0)
            .collect();
        let _calls: Vec<ActiveCall> = tcp.iter().map(|t| t.activity.call_started()).collect();
        assert_eq!(admission.admit(0, false, ip(9)).unwrap_err(), Refusal::Full);
        let unix: Vec<Ticket> = (0..2)
            .map(|_| admission.admit(1, true, None).unwrap().0)
            .collect();
        assert!(unix.iter().all(|t| asked(t).is_none()));
        assert!(tcp.iter().all(|t| asked(t).is_none()));
        // A third Unix connection takes the slot of a Unix one still silent.
        let (_third, evicted) = admission.admit(1, true, None).unwrap();
        assert!(evicted);
        assert_eq!(asked(&unix[0]), Some(Close::Evicted));
    }

    #[test]
    fn one_peer_holds_its_share_and_gives_way_to_itself() {
        let admission = limits(100, 0, 2);
        let (a1, _) = admission.admit(0, false, ip(1)).unwrap();
        let (a2, _) = admission.admit(0, false, ip(1)).unwrap();
        let (b, evicted) = admission.admit(0, false, ip(2)).unwrap();
        assert!(!evicted);
        // A third from the same address: its own oldest silent one goes.
        let (a3, evicted) = admission.admit(0, false, ip(1)).unwrap();
        assert!(evicted);
        assert_eq!(
            (asked(&a1), asked(&a2), asked(&b)),
            (Some(Close::Evicted), None, None)
        );
        drop(a1);
        let _c2 = a2.activity.call_started();
        let _c3 = a3.activity.call_started();
        assert_eq!(
            admission.admit(0, false, ip(1)).unwrap_err(),
            Refusal::PeerFull
        );
        // A certificate is a peer too.
        let cert = PeerKey::Certificate(7);
        assert!(!admission.identify(&b, cert).unwrap());
        let (d, _) = admission.admit(0, false, ip(3)).unwrap();
        assert!(!admission.identify(&d, cert).unwrap());
        let (e, _) = admission.admit(0, false, ip(4)).unwrap();
        assert!(admission.identify(&e, cert).unwrap());
        assert_eq!(asked(&b), Some(Close::Evicted));
        drop((b, d, e));
        assert!(admission.state().peers.keys().all(|k| *k == ip(1).unwrap()));
    }

    #[test]
    fn idle_connections_are_reaped_at_the_second_look() {
        let admission = limits(10, 0, 10);
        let (quiet, _) = admission.admit(0, false, ip(1)).unwrap();
        let (calling, _) = admission.admit(0, false, ip(2)).unwrap();
        let (streaming, _) = admission.admit(0, false, ip(3)).unwrap();
        let _stream = streaming.activity.call_started();
        assert_eq!(admission.reap_idle(), 0);
        drop(calling.activity.call_started());
        assert_eq!(admission.reap_idle(), 1);
        assert_eq!(asked(&quiet), Some(Close::Idle));
        assert_eq!(asked(&calling), None, "it called since the last look");
        assert_eq!(admission.reap_idle(), 0);
        assert_eq!(admission.reap_idle(), 1);
        assert_eq!(asked(&calling), Some(Close::Idle));
        assert_eq!(asked(&streaming), None, "a stream is open");
    }

    #[test]
    fn shutdown_asks_one_listeners_connections() {
        let admission = limits(10, 0, 10);
        let (first, _) = admission.admit(1, false, ip(1)).unwrap();
        let (other, _) = admission.admit(2, true, None).unwrap();
        admission.close_listener(1);
        assert_eq!(
            (asked(&first), asked(&other)),
            (Some(Close::Shutdown), None)
        );
        drop((first, other));
        assert!(admission.state().slots.is_empty());
        assert_eq!(admission.state().open_tcp, 0);
    }
}
