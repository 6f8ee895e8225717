//! The memory a fan-out may hold on behalf of its caller, summed over every
//! call of the process, with a share per caller.
//!
//! Each call is bounded on its own (a leg holds one reply, a merged reply is
//! capped), but a caller that opens many calls and reads none of them would
//! add those bounds up until the machine runs out: a streamed fan-out whose
//! caller does not read keeps, per machine, up to an HTTP/2 stream window of
//! replies that the machine already sent. So fan-out calls take what they
//! may hold from a [`MemoryBudget`] before they start:
//!
//! - a streamed fan-out, one upstream stream window per machine, for as long
//!   as it runs;
//! - a merged (unary) fan-out, the size of the merged reply, from the moment
//!   it is complete until the caller has taken it.
//!
//! Past the daemon's budget, or past the caller's share of it, the new call
//! is refused with `RESOURCE_EXHAUSTED` (calls already running are never
//! cut), so the caller that holds the memory is the one refused. A caller is
//! its TLS certificate, else its IP address, else its Unix user.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::Status;

use crate::peer::{Peer, PeerAddr};

/// A budget for embedders that configure none: 2 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 2 << 30;

/// What one caller may hold of [`DEFAULT_MEMORY_BUDGET`]: half.
pub const DEFAULT_MEMORY_SHARE: usize = DEFAULT_MEMORY_BUDGET / 2;

/// Bytes fan-out calls may hold for their callers; clones share it.
#[derive(Debug, Clone)]
pub struct MemoryBudget(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    limit: usize,
    share: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    used: usize,
    by_holder: HashMap<Holder, usize>,
}

/// Who holds memory: one caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// A TLS client certificate (a hash of its DER).
    Certificate(u64),
    /// A TCP caller without a certificate.
    Ip(IpAddr),
    /// A Unix-socket caller, by user.
    Unix(Option<u32>),
    /// A call without a known peer (embedders that set none).
    Unknown,
}

impl Holder {
    /// The holder behind the request's peer.
    pub(crate) fn of(peer: Option<&Peer>) -> Self {
        let Some(peer) = peer else {
            return Self::Unknown;
        };
        if let Some(leaf) = peer.certificates.as_ref().and_then(|c| c.first()) {
            return Self::Certificate(certificate_key(leaf.as_ref()));
        }
        match peer.addr {
            PeerAddr::Tcp(addr) => Self::Ip(addr.ip().to_canonical()),
            PeerAddr::Unix { uid, .. } => Self::Unix(uid),
        }
    }
}

/// A short key for a certificate (its DER), for per-caller bounds.
pub(crate) fn certificate_key(der: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    der.hash(&mut hasher);
    hasher.finish()
}

/// Memory taken from the budget; given back when dropped.
#[derive(Debug)]
pub(crate) struct Hold {
    budget: Arc<Inner>,
    holder: Holder,
    bytes: usize,
}

impl MemoryBudget {
    /// `limit` bytes in all, at most `share` for one caller.
    pub fn new(limit: usize, share: usize) -> Self {
        Self(Arc::new(Inner {
            limit,
            share: share.min(limit),
            state: Mutex::new(State::default()),
        }))
    }

    /// The bound in all.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// What one caller may hold.
    pub fn share(&self) -> usize {
        self.0.share
    }

    /// Bytes held now, in all.
    pub fn used(&self) -> usize {
        self.0.state().used
    }

    /// Takes `bytes` for `holder`, or says which bound it would pass.
    pub(crate) fn hold(&self, holder: Holder, bytes: usize) -> Result<Hold, Status> {
        let mut state = self.0.state();
        let held = state.by_holder.get(&holder).copied().unwrap_or(0);
        if held + bytes > self.0.share {
            return Err(Status::resource_exhausted(format!(
                "this caller's fan-out calls hold {held} bytes of its share of {} ({bytes} more \
                 needed): read or end them first",
                self.0.share
            )));
        }
        if state.used + bytes > self.0.limit {
            return Err(Status::resource_exhausted(format!(
                "fan-out calls hold the memory budget of this Switchyard ({} bytes); try again \
                 later",
                self.0.limit
            )));
        }
        state.used += bytes;
        *state.by_holder.entry(holder).or_default() += bytes;
        Ok(Hold {
            budget: self.0.clone(),
            holder,
            bytes,
        })
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = self.budget.state();
        state.used -= self.bytes;
        if let Some(held) = state.by_holder.get_mut(&self.holder) {
            *held -= self.bytes;
            if *held == 0 {
                state.by_holder.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_hold_their_share_and_the_daemon_its_budget() {
        let budget = MemoryBudget::new(100, 40);
        let a = Holder::Ip([10, 0, 0, 1].into());
        let b = Holder::Unix(Some(0));
        let c = Holder::Certificate(7);
        let a1 = budget.hold(a, 30).unwrap();
        let err = budget.hold(a, 11).unwrap_err();
        assert!(err.message().contains("share"), "{err:?}");
        let _b1 = budget.hold(b, 40).unwrap();
        let _c1 = budget.hold(c, 30).unwrap();
        // 100 in all: the daemon's bound now, whoever asks.
        let err = budget.hold(Holder::Unknown, 1).unwrap_err();
        assert!(err.message().contains("budget"), "{err:?}");
        drop(a1);
        assert_eq!(budget.used(), 70);
        let _a2 = budget.hold(a, 30).unwrap();
        assert_eq!(budget.used(), 100);
    }
}
