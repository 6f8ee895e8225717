//! Registers this machine and keeps its liveness key alive.
//!
//! The member entry is a plain key, written after the liveness key (a full
//! registry makes room only for members with a heartbeat); the liveness key
//! is bound to a lease renewed every third of its TTL, so it disappears by
//! itself within the TTL when this process dies or loses etcd for that long. A lease found gone on
//! reconnection (or reported gone by a keep-alive) is replaced and both keys
//! are written again. A graceful [`Registrar::shutdown`] revokes the lease so
//! other machines see this one gone at once.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, LeaseClient, PutOptions};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep};
use tracing::{info, warn};

use crate::live::config::{EtcdConfig, Keys};
use crate::live::conn::{Backoff, Reachability, connect};
use crate::live::error::{Error, bounded};
use crate::live::model::MemberJson;
use crate::registry::Machine;

/// Where this machine's registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Not registered yet.
    Pending,
    /// Registered; the liveness key is held by this lease.
    Active {
        /// The etcd lease ID.
        lease: i64,
    },
    /// etcd is unreachable or the lease was lost; retrying.
    Retrying,
    /// The task has ended.
    Stopped,
}

/// Handle on the task that keeps this machine registered.
///
/// [`shutdown`](Self::shutdown) revokes the lease. Dropping the handle stops
/// the task without revoking, as a crash would: the liveness key then expires
/// after the TTL.
#[derive(Debug)]
pub struct Registrar {
    status: watch::Receiver<Registration>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), Error>>,
}

impl Registrar {
    /// Starts registering the machine `cfg.register` names. Must be called
    /// within a Tokio runtime.
    pub fn spawn(cfg: &EtcdConfig) -> Result<Self, Error> {
        cfg.validate()?;
        let member = cfg
            .register
            .clone()
            .ok_or_else(|| Error::Config("no machine to register".into()))?;
        let member_json = serde_json::to_string(&MemberJson::from(&member))
            .map_err(|e| Error::Config(format!("cannot encode member: {e}")))?;
        let (status_tx, status) = watch::channel(Registration::Pending);
        let (stop, stop_rx) = oneshot::channel();
        let task = RegisterTask {
            keys: cfg.keys(),
            cfg: cfg.clone(),
            member,
            member_json,
            client: None,
            lease: None,
            status: StatusTx(status_tx),
        };
        Ok(Self {
            status,
            stop: Some(stop),
            task: tokio::spawn(task.run(stop_rx)),
        })
    }

    /// Where the registration stands.
    pub fn status(&self) -> watch::Receiver<Registration> {
        self.status.clone()
    }

    /// Stops renewing and revokes the lease, so the liveness key disappears
    /// now rather than after the TTL. Bounded by the request timeouts.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap_or(Err(Error::TaskEnded))
    }
}

impl Drop for Registrar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes the registration status; `Stopped` once the task is gone.
#[derive(Debug)]
struct StatusTx(watch::Sender<Registration>);

impl StatusTx {
    fn set(&self, status: Registration) {
        self.0.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }
}

impl Drop for StatusTx {
    fn drop(&mut self) {
        self.set(Registration::Stopped);
    }
}

struct RegisterTask {
    cfg: EtcdConfig,
    keys: Keys,
    member: Machine,
    member_json: String,
    client: Option<Client>,
    /// The lease believed to hold our liveness key.
    lease: Option<i64>,
    status: StatusTx,
}

impl RegisterTask {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Result<(), Error> {
        let mut backoff = Backoff::new(&self.cfg);
        let mut reach = Reachability::new("registrar");
        loop {
            let session = self.session(&mut backoff, &mut reach);
            let error = tokio::select! {
                _ = &mut stop => break,
                Err(error) = session => error,
            };
            self.status.set(Registration::Retrying);
            if let Error::LeaseLost(lease) = error {
                // etcd answered, so this is no reachability change.
                warn!(lease, "registry: liveness lease lost; registering again");
                self.lease = None;
            } else {
                self.client = None;
                reach.failed(&error);
            }
            tokio::select! {
                _ = &mut stop => break,
                () = sleep(backoff.next_delay()) => {}
            }
        }
        self.revoke().await
    }

    /// Registers (reusing the lease if it still lives) and renews the lease
    /// until something fails.
    async fn session(
        &mut self,
        backoff: &mut Backoff,
        reach: &mut Reachability,
    ) -> Result<Infallible, Error> {
        let timeout = self.cfg.request_timeout;
        let client = self.client().await?;
        let mut leases = client.lease_client();
        let lease = self.usable_lease(&mut leases).await?;
        let mut kv = client.kv_client();
        // The heartbeat first: a watcher whose registry is full keeps a new
        // member only if it already has one.
        bounded(
            "put alive",
            timeout,
            kv.put(
                self.keys.alive(&self.member.id),
                unix_seconds(),
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        bounded(
            "put member",
            timeout,
            kv.put(
                self.keys.member(&self.member.id),
                self.member_json.clone(),
                None,
            ),
        )
        .await?;
        // etcd-client sends the first keep-alive itself and fails if the
        // lease is already gone; the next session then grants a new one.
        let (mut keeper, mut responses) =
            bounded("lease keep-alive", timeout, leases.keep_alive(lease)).await?;
        self.status.set(Registration::Active { lease });
        reach.succeeded();
        backoff.reset();
        info!(lease, id = %self.member.id, "registry: registered");

        let ttl = self.cfg.heartbeat_ttl;
        let every = ttl / 3;
        // An answer later than the TTL is useless: the lease is gone by then.
        let wait = timeout.min(ttl);
        let mut ticker = interval_at(Instant::now() + every, every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            bounded("lease keep-alive", wait, keeper.keep_alive()).await?;
            let resp = bounded("lease keep-alive", wait, responses.message())
                .await?
                .ok_or_else(|| Error::StreamEnded {
                    op: "lease keep-alive",
                    reason: "closed by etcd".into(),
                })?;
            // etcd answers a keep-alive for an unknown lease with TTL 0.
            if resp.ttl() <= 0 {
                return Err(Error::LeaseLost(lease));
            }
        }
    }

    /// Our lease if etcd still has it (it survives a disconnection shorter
    /// than its TTL), else a new one.
    async fn usable_lease(&mut self, leases: &mut LeaseClient) -> Result<i64, Error> {
        let timeout = self.cfg.request_timeout;
        if let Some(id) = self.lease {
            // etcd answers TTL -1 for a lease it does not know.
            let left = bounded("lease ttl", timeout, leases.time_to_live(id, None)).await?;
            if left.ttl() > 0 {
                return Ok(id);
            }
            info!(
                lease = id,
                "registry: liveness lease expired; granting a new one"
            );
        }
        let ttl = self
            .cfg
            .heartbeat_ttl
            .as_secs()
            .try_into()
            .unwrap_or(i64::MAX);
        let granted = bounded("lease grant", timeout, leases.grant(ttl, None)).await?;
        self.lease = Some(granted.id());
        Ok(granted.id())
    }

    async fn client(&mut self) -> Result<Client, Error> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = connect(&self.cfg).await?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Revokes the lease, if any; a lease etcd no longer knows is fine.
    async fn revoke(&mut self) -> Result<(), Error> {
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        let client = self.client().await?;
        let revoked = bounded(
            "lease revoke",
            self.cfg.request_timeout,
            client.lease_client().revoke(lease),
        )
        .await;
        match revoked {
            Ok(_) => {}
            Err(Error::Etcd {
                source: etcd_client::Error::GRpcStatus(status),
                ..
            }) if status.code() == tonic::Code::NotFound => {}
            Err(error) => return Err(error),
        }
        info!(lease, id = %self.member.id, "registry: lease revoked");
        Ok(())
    }
}

/// The liveness value: when the key was written, for humans reading etcd.
fn unix_seconds() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        .to_string()
}
