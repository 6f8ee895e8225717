//! Follows the registry in etcd and publishes it as whole snapshots.
//!
//! One full read, then a watch from the next revision: the consumer gets a
//! new [`Snapshot`] for every change and swaps it atomically. The watch is
//! resumed from the last revision applied after any failure, so nothing is
//! missed or applied twice; when etcd has compacted that revision away (or
//! its history went backwards, e.g. restored from a backup) the registry is
//! read again in full instead. While etcd is unreachable the last snapshot
//! stays in force and [`Health`] says it is stale.
//!
//! A full read takes the heartbeats before the members, so that the cap
//! knows which members to keep first, and once the registry is full it
//! jumps from one member still wanted to the next instead of paging through
//! every entry (junk entries ahead of a live member cannot hide it).
//! New `allowed_networks` are applied by reading the registry again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ipnet::Ipv6Net;

use etcd_client::{
    Client, Event, EventType, GetOptions, WatchOptions, WatchRequestSender, WatchResponse,
    WatchResponseStream,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep};
use tracing::{info, warn};

use crate::live::config::{EtcdConfig, prefix_end};
use crate::live::conn::{Backoff, MAX_MESSAGE_BYTES, Reachability, connect};
use crate::live::error::{Error, bounded};
use crate::live::model::{Health, Snapshot};
use crate::live::state::RegistryState;

/// Keys fetched per range request of a full read.
const PAGE_SIZE: i64 = 500;

/// Resyncs in a row after which they are spaced out like failures.
const FREE_RESYNCS: u32 = 2;

/// Handle on the task that follows the registry.
///
/// Dropping it stops the task; [`shutdown`](Self::shutdown) does the same and
/// waits for it.
#[derive(Debug)]
pub struct RegistryWatcher {
    snapshot: watch::Receiver<Arc<Snapshot>>,
    health: watch::Receiver<Health>,
    full_reads: Arc<AtomicU64>,
    networks: watch::Sender<Option<Vec<Ipv6Net>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RegistryWatcher {
    /// Starts following the registry. Must be called within a Tokio runtime.
    pub fn spawn(cfg: &EtcdConfig) -> Result<Self, Error> {
        cfg.validate()?;
        let (snapshot_tx, snapshot) = watch::channel(Arc::new(Snapshot::default()));
        let (health_tx, health) = watch::channel(Health::Starting);
        let (stop, stop_rx) = oneshot::channel();
        let full_reads = Arc::new(AtomicU64::new(0));
        let (networks, networks_rx) = watch::channel(cfg.allowed_networks.clone());
        let task = WatchTask {
            state: RegistryState::new(cfg),
            cfg: cfg.clone(),
            snapshot_tx,
            health: HealthTx(health_tx),
            full_reads: full_reads.clone(),
            client: None,
            synced: false,
        };
        Ok(Self {
            snapshot,
            health,
            full_reads,
            networks,
            stop: Some(stop),
            task: tokio::spawn(task.run(stop_rx, networks_rx)),
        })
    }

    /// Replaces the networks member addresses must be in (a reload): the
    /// registry is read again with them, so members they now admit come in
    /// and those they refuse go.
    pub fn set_allowed_networks(&self, networks: Option<Vec<Ipv6Net>>) {
        self.networks.send_if_modified(|current| {
            let changed = *current != networks;
            *current = networks;
            changed
        });
    }

    /// The registry; a new value is published for every change of content.
    pub fn snapshot(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Whether the snapshot currently follows etcd.
    pub fn health(&self) -> watch::Receiver<Health> {
        self.health.clone()
    }

    /// How many times the registry was read in full (start, compaction,
    /// history reset); for metrics and tests.
    pub fn full_reads(&self) -> u64 {
        self.full_reads.load(Ordering::Relaxed)
    }

    /// Stops the task and waits for it to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The task only ends by itself when stopped, so this is quick; a
        // panic has already been reported by the runtime.
        let _ = (&mut self.task).await;
    }
}

impl Drop for RegistryWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes health; marks it stale when the task ends, however it ends
/// (stopped, aborted or panicked), so readiness never trusts a dead watcher.
#[derive(Debug)]
struct HealthTx(watch::Sender<Health>);

impl HealthTx {
    fn set(&self, health: Health) {
        self.0.send_if_modified(|current| {
            let changed = *current != health;
            *current = health;
            changed
        });
    }

    /// Fresh becomes stale; before the first read it stays `Starting`.
    fn degrade(&self) {
        if *self.0.borrow() == Health::Fresh {
            self.set(Health::Stale);
        }
    }
}

impl Drop for HealthTx {
    fn drop(&mut self) {
        self.set(Health::Stale);
    }
}

/// Why a watch ended without an error.
enum WatchEnd {
    /// The registry must be read again in full.
    Resync,
}

struct WatchTask {
    cfg: EtcdConfig,
    state: RegistryState,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    health: HealthTx,
    full_reads: Arc<AtomicU64>,
    client: Option<Client>,
    /// `state` holds a complete read that the watch continues.
    synced: bool,
}

/// What ended one attempt of the watch task.
enum Step {
    Stop,
    Ended(Result<WatchEnd, Error>),
    NewNetworks,
}

impl WatchTask {
    async fn run(
        mut self,
        mut stop: oneshot::Receiver<()>,
        mut networks: watch::Receiver<Option<Vec<Ipv6Net>>>,
    ) {
        let mut backoff = Backoff::new(&self.cfg);
        let mut reach = Reachability::new("watcher");
        let mut resyncs = 0u32;
        loop {
            let attempt = self.attempt(&mut backoff, &mut reach, &mut resyncs);
            let step = tokio::select! {
                _ = &mut stop => Step::Stop,
                result = attempt => Step::Ended(result),
                Ok(()) = networks.changed() => Step::NewNetworks,
            };
            let result = match step {
                Step::Stop => return,
                Step::Ended(result) => result,
                Step::NewNetworks => {
                    self.cfg.allowed_networks = networks.borrow_and_update().clone();
                    info!("registry: allowed_networks changed; reading again");
                    self.synced = false;
                    continue;
                }
            };
            match result {
                Ok(WatchEnd::Resync) => {
                    self.synced = false;
                    resyncs += 1;
                    if resyncs <= FREE_RESYNCS {
                        continue;
                    }
                }
                Err(error) => {
                    self.client = None;
                    reach.failed(&error);
                    self.health.degrade();
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                () = sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Connects if needed, reads if needed, then watches until something
    /// goes wrong.
    async fn attempt(
        &mut self,
        backoff: &mut Backoff,
        reach: &mut Reachability,
        resyncs: &mut u32,
    ) -> Result<WatchEnd, Error> {
        let client = match &self.client {
            Some(client) => client.clone(),
            None => {
                let client = connect(&self.cfg).await?;
                self.client = Some(client.clone());
                client
            }
        };
        if !self.synced {
            self.full_read(&client).await?;
        }
        let Some(mut watch) = self.start_watch(&client).await? else {
            return Ok(WatchEnd::Resync);
        };
        reach.succeeded();
        backoff.reset();
        self.health.set(Health::Fresh);
        self.follow(&mut watch, resyncs).await
    }

    /// Reads the whole registry at one revision, in pages: heartbeats first,
    /// so that the cap knows which members to keep.
    async fn full_read(&mut self, client: &Client) -> Result<(), Error> {
        let keys = self.cfg.keys();
        let mut state = RegistryState::new(&self.cfg);
        state.inherit_logs(&mut self.state);
        let mut revision = 0;
        // Liveness values are irrelevant: fetch keys only.
        self.read_range(client, &keys.alive, true, &mut revision, &mut state)
            .await?;
        self.read_range(client, &keys.machines, false, &mut revision, &mut state)
            .await?;
        state.set_revision(revision);
        self.state = state;
        self.synced = true;
        self.full_reads.fetch_add(1, Ordering::Relaxed);
        info!(revision, "registry: read in full");
        self.publish();
        Ok(())
    }

    /// Feeds the keys under `prefix` into `state`. The first request fixes
    /// `revision` (when 0) and later pages read at it, so the pages form one
    /// consistent view. Liveness keys stop at the cap; members, once the
    /// registry is full (or the page budget is spent), go on only from one
    /// member still wanted to the next.
    async fn read_range(
        &self,
        client: &Client,
        prefix: &str,
        keys_only: bool,
        revision: &mut i64,
        state: &mut RegistryState,
    ) -> Result<(), Error> {
        let timeout = self.cfg.request_timeout;
        let mut kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let end = prefix_end(prefix.as_bytes());
        let mut from = prefix.as_bytes().to_vec();
        // Bad entries take room in pages too; read every key for at most a
        // generous multiple of the cap rather than an unbounded prefix. Each
        // jump after that passes at least one wanted member (one alive, or
        // this machine's own).
        let max_pages = (self.cfg.max_members as i64 / PAGE_SIZE + 1) * 4;
        let max_jumps = if keys_only {
            0
        } else {
            state.wanted_count() as i64
        };
        let mut warned = false;
        for page in 0..max_pages + max_jumps {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_SIZE);
            if *revision > 0 {
                options = options.with_revision(*revision);
            }
            if keys_only {
                options = options.with_keys_only();
            }
            let resp = bounded("range", timeout, kv.get(from.clone(), Some(options))).await?;
            if *revision == 0 {
                *revision = resp.header().map(|h| h.revision()).ok_or(Error::Protocol {
                    op: "range",
                    what: "no header",
                })?;
            }
            for kv in resp.kvs() {
                state.put(kv.key(), if keys_only { &[] } else { kv.value() });
            }
            let Some(last) = resp.kvs().last().filter(|_| resp.more()) else {
                return Ok(());
            };
            if keys_only && state.overflowed() {
                return Ok(());
            }
            let exhausted = page + 1 >= max_pages;
            if exhausted && !warned {
                warned = true;
                warn!(
                    prefix,
                    "registry: too many keys under the prefix; reading only members with a heartbeat from here"
                );
            }
            if keys_only || !(state.full() || exhausted) {
                from = last.key().to_vec();
                from.push(0); // the next key after `last`
                continue;
            }
            if state.full() {
                // The entries jumped over would have been refused.
                state.skipped_for_cap();
            }
            match state.next_wanted_after(last.key()) {
                Some(id) => from = self.cfg.keys().member(&id).into_bytes(),
                None => return Ok(()),
            }
        }
        warn!(
            prefix,
            "registry: too many keys under the prefix; read stopped early"
        );
        Ok(())
    }

    /// Opens a watch from the revision after the last one applied and waits
    /// for etcd to confirm it.
    async fn start_watch(&mut self, client: &Client) -> Result<Option<ActiveWatch>, Error> {
        let timeout = self.cfg.request_timeout;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.state.revision() + 1);
        let mut watch_client = client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let stream = bounded(
            "watch",
            timeout,
            watch_client.watch(self.cfg.prefix.clone(), Some(options)),
        )
        .await?;
        let (requests, mut responses) = stream.split();
        let created = bounded("watch", timeout, responses.message())
            .await?
            .ok_or_else(|| ended("closed before it was created"))?;
        if !created.created() {
            return Err(ended("first answer is not a creation"));
        }
        // etcd 3.4 confirms a watch on a compacted revision and cancels it
        // right after, but check the confirmation too.
        if must_resync(&created)? {
            return Ok(None);
        }
        if let Some(header) = created.header()
            && header.revision() < self.state.revision()
        {
            warn!(
                was = self.state.revision(),
                now = header.revision(),
                "registry: etcd's revision went backwards (restored or replaced); reading again"
            );
            return Ok(None);
        }
        Ok(Some(ActiveWatch {
            requests,
            responses,
        }))
    }

    /// Applies watch responses until the stream fails or a re-read is due.
    ///
    /// A stream can also die silently (half-open connection), so progress is
    /// requested every request timeout and silence for two is a failure.
    async fn follow(
        &mut self,
        watch: &mut ActiveWatch,
        resyncs: &mut u32,
    ) -> Result<WatchEnd, Error> {
        let every = self.cfg.request_timeout;
        let mut ticker = interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if last_heard.elapsed() > every * 2 {
                        return Err(Error::Timeout { op: "watch", timeout: every * 2 });
                    }
                    bounded("watch progress", every, watch.requests.request_progress()).await?;
                }
                message = watch.responses.message() => {
                    last_heard = Instant::now();
                    let resp = message
                        .map_err(|source| Error::Etcd { op: "watch", source })?
                        .ok_or_else(|| ended("closed by etcd"))?;
                    if must_resync(&resp)? {
                        return Ok(WatchEnd::Resync);
                    }
                    *resyncs = 0; // the watch works: later resyncs are free again
                    // Progress answers carry no events. etcd 3.4.23 may send
                    // them ahead of events still queued for a slow watcher,
                    // so their revision is never taken as applied.
                    if resp.events().is_empty() {
                        continue;
                    }
                    if self.apply(resp.events()) {
                        self.publish();
                    }
                    if self.state.needs_resync() {
                        info!("registry: room freed below the cap; reading again");
                        return Ok(WatchEnd::Resync);
                    }
                }
            }
        }
    }

    /// Applies one response's events; returns whether content may have changed.
    fn apply(&mut self, events: &[Event]) -> bool {
        let mut changed = false;
        for event in events {
            let Some(kv) = event.kv() else { continue };
            changed |= match event.event_type() {
                EventType::Put => self.state.put(kv.key(), kv.value()),
                EventType::Delete => self.state.delete(kv.key()),
            };
            // A response holds whole revisions, so this is a safe resume point.
            self.state.set_revision(kv.mod_revision());
        }
        changed
    }

    /// Publishes the current state if its content differs from the last one.
    fn publish(&mut self) {
        let snapshot = self.state.snapshot();
        self.snapshot_tx.send_if_modified(|current| {
            let changed = current.revision == 0 || !current.same_content(&snapshot);
            if changed {
                *current = Arc::new(snapshot);
            }
            changed
        });
    }
}

/// A watch etcd has confirmed.
#[derive(Debug)]
struct ActiveWatch {
    requests: WatchRequestSender,
    responses: WatchResponseStream,
}

/// Whether etcd canceled the watch because its start revision is compacted
/// (then the registry is read again); other cancellations are errors.
fn must_resync(resp: &WatchResponse) -> Result<bool, Error> {
    if resp.compact_revision() > 0 {
        info!(
            compacted = resp.compact_revision(),
            "registry: watch revision was compacted; reading again"
        );
        return Ok(true);
    }
    if resp.canceled() {
        return Err(ended(resp.cancel_reason()));
    }
    Ok(false)
}

fn ended(reason: &str) -> Error {
    Error::StreamEnded {
        op: "watch",
        reason: reason.to_owned(),
    }
}
