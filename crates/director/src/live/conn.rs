//! Connection plumbing shared by the watcher and the registrar: connecting,
//! retry delays, and logging reachability changes once instead of per attempt.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tracing::{debug, info, warn};

use crate::live::config::EtcdConfig;
use crate::live::error::{Error, bounded};

/// HTTP/2 ping interval on etcd connections. etcd's default
/// `--grpc-keepalive-min-time` is 5 s; pinging more often gets the connection
/// closed with `too_many_pings`.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(10);

/// Largest gRPC message accepted from etcd. A watch response after a long
/// disconnection can carry many revisions; tonic's 4 MiB default would fail
/// it on every retry.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Creates a client for the configured endpoints.
///
/// The client connects lazily and balances over the endpoints, so an etcd
/// that is down shows up as requests timing out, which every caller bounds.
pub(crate) async fn connect(cfg: &EtcdConfig) -> Result<Client, Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(cfg.connect_timeout)
        .with_keep_alive(HTTP2_KEEPALIVE, cfg.request_timeout);
    bounded(
        "connect",
        cfg.connect_timeout,
        Client::connect(&cfg.endpoints, Some(options)),
    )
    .await
}

/// Exponential retry delays with jitter, so that machines restarted together
/// do not hammer etcd in lockstep.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub(crate) fn new(cfg: &EtcdConfig) -> Self {
        Self {
            min: cfg.backoff_min,
            max: cfg.backoff_max,
            next: cfg.backoff_min,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The delay before the next attempt: between half and all of the
    /// current step, which then doubles up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        self.draws += 1;
        let fraction = (self.random.hash_one(self.draws) % 1024) as u32;
        step / 2 + step / 2 * fraction / 1024
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Logs when etcd becomes unreachable and when it is back — once each, not
/// on every retry.
#[derive(Debug)]
pub(crate) struct Reachability {
    task: &'static str,
    down: bool,
}

impl Reachability {
    pub(crate) fn new(task: &'static str) -> Self {
        Self { task, down: false }
    }

    pub(crate) fn failed(&mut self, error: &Error) {
        if self.down {
            debug!(task = self.task, %error, "registry: etcd still unreachable");
        } else {
            warn!(task = self.task, %error, "registry: etcd unreachable; keeping the last known registry and retrying");
            self.down = true;
        }
    }

    pub(crate) fn succeeded(&mut self) {
        if self.down {
            info!(task = self.task, "registry: etcd reachable again");
            self.down = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        let cfg = EtcdConfig {
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_millis(1_000),
            ..EtcdConfig::default()
        };
        let mut b = Backoff::new(&cfg);
        let steps = [200, 400, 800, 1_000, 1_000];
        for max in steps {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(max / 2) && d <= Duration::from_millis(max));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }
}
