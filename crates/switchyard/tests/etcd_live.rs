//! The director's live registry on its own (`switchyard_director::live`),
//! against a real etcd on loopback: registration and heartbeats through a
//! crash, a revoked lease and a partition longer than the TTL; a watcher
//! that starts while etcd is unreachable; configurations refused up front.

mod etcd_common;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use switchyard_director::Machine;
use switchyard_director::live::{
    EtcdConfig, Health, LiveRegistry, Registrar, Registration, RegistryWatcher, Snapshot,
};
use switchyard_testkit::wait::WAIT;
use tokio::sync::watch;
use tokio::time::Instant;

use etcd_common::*;

/// A tight configuration for tests, under [`PREFIX`].
fn config(endpoint: String) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![endpoint],
        prefix: PREFIX.into(),
        heartbeat_ttl: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..EtcdConfig::default()
    }
}

/// [`config`] for a machine that registers itself.
fn machine(endpoint: String, id: &str, name: &str, addr: &str) -> EtcdConfig {
    EtcdConfig {
        register: Some(Machine {
            id: id.into(),
            name: name.into(),
            addr: addr.parse().unwrap(),
        }),
        ..config(endpoint)
    }
}

/// Waits (bounded) until `pred` holds for the channel's value.
async fn wait_for<T: Debug>(rx: &mut watch::Receiver<T>, what: &str, pred: impl FnMut(&T) -> bool) {
    let outcome = tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .map(|r| r.is_ok());
    match outcome {
        Ok(true) => {}
        Ok(false) => panic!("{what}: channel closed"),
        Err(_) => panic!("{what}: not within {WAIT:?}; last: {:?}", *rx.borrow()),
    }
}

async fn wait_snapshot(
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    what: &str,
    mut pred: impl FnMut(&Snapshot) -> bool,
) {
    wait_for(rx, what, |s| pred(s)).await;
}

fn ids(s: &Snapshot) -> Vec<&str> {
    s.machines.iter().map(|m| m.id.as_str()).collect()
}

fn active_lease(status: &watch::Receiver<Registration>) -> i64 {
    match *status.borrow() {
        Registration::Active { lease } => lease,
        other => panic!("not registered: {other:?}"),
    }
}

#[tokio::test]
async fn heartbeats_through_a_crash_a_revoked_lease_and_a_clean_stop() {
    let dir = switchyard_testkit::wait::socket_dir("live-reg");
    let Some(etcd) = etcd_or_skip(dir.path()).await else {
        return;
    };
    let ep = etcd.endpoint();
    let crashing = Registrar::spawn(&machine(ep.clone(), "a", "alpha", "fd00::a")).unwrap();
    // A long TTL for b, so that revocation is clearly not expiry.
    let graceful_config = EtcdConfig {
        heartbeat_ttl: Duration::from_secs(30),
        ..machine(ep.clone(), "b", "beta", "[fd00::b]:51001")
    };
    let graceful = Registrar::spawn(&graceful_config).unwrap();
    let watcher = RegistryWatcher::spawn(&config(ep)).unwrap();
    let mut snap = watcher.snapshot();
    wait_snapshot(&mut snap, "both registered and alive", |s| {
        ids(s) == ["a", "b"] && s.is_alive("a") && s.is_alive("b")
    })
    .await;
    assert_eq!(
        snap.borrow().machine("b").unwrap().addr.to_string(),
        "[fd00::b]:51001"
    );

    // Crash: keep-alives stop, nothing is revoked; the key expires.
    let crashed_at = Instant::now();
    drop(crashing);
    wait_snapshot(&mut snap, "a expired", |s| !s.is_alive("a")).await;
    let expired_after = crashed_at.elapsed();
    assert!(
        expired_after > Duration::from_millis(500),
        "expiry after {expired_after:?} for a 2 s TTL"
    );
    let s = snap.borrow().clone();
    assert!(
        s.machine("a").is_some(),
        "the entry stays; only the heartbeat goes"
    );
    assert!(s.is_alive("b"));

    // Lease loss: someone revokes b's lease; b notices and registers again.
    let mut status = graceful.status();
    wait_for(&mut status, "b active", |r| {
        matches!(r, Registration::Active { .. })
    })
    .await;
    let old = active_lease(&status);
    let mut kv = etcd.client().await.unwrap();
    kv.lease_revoke(old).await.expect("revoke b's lease");
    wait_snapshot(&mut snap, "b gone with its lease", |s| !s.is_alive("b")).await;
    wait_for(
        &mut status,
        "b on a new lease",
        |r| matches!(r, Registration::Active { lease } if *lease != old),
    )
    .await;
    wait_snapshot(&mut snap, "b alive again", |s| s.is_alive("b")).await;

    // Clean stop: the lease is revoked, b is gone at once.
    let stopped_at = Instant::now();
    graceful.shutdown().await.expect("revoke");
    wait_snapshot(&mut snap, "b revoked", |s| !s.is_alive("b")).await;
    let gone_after = stopped_at.elapsed();
    assert!(
        gone_after < Duration::from_secs(10),
        "revocation took {gone_after:?} (TTL 30 s)"
    );
    watcher.shutdown().await;
}

#[tokio::test]
async fn a_lease_expired_during_a_partition_is_replaced() {
    let dir = switchyard_testkit::wait::socket_dir("live-part");
    let Some(etcd) = etcd_or_skip(dir.path()).await else {
        return;
    };
    let proxy = Proxy::start(etcd.client_addr()).await;
    let registry = LiveRegistry::start(&machine(proxy.endpoint(), "p", "pi", "fd00::70")).unwrap();
    // Another machine's view, not partitioned.
    let watcher = RegistryWatcher::spawn(&config(etcd.endpoint())).unwrap();
    let mut snap = watcher.snapshot();
    let mut status = registry.registration().expect("registers");
    let mut own_health = registry.health();
    wait_for(&mut status, "active", |r| {
        matches!(r, Registration::Active { .. })
    })
    .await;
    let old = active_lease(&status);
    wait_snapshot(&mut snap, "registered", |s| s.is_alive("p")).await;
    wait_snapshot(&mut registry.snapshot(), "seen by itself", |s| {
        s.is_alive("p")
    })
    .await;
    wait_for(&mut own_health, "fresh", |h| *h == Health::Fresh).await;

    // Cut off for longer than the TTL: etcd expires the lease; the cut-off
    // machine keeps its last registry but says it is stale.
    proxy.set_enabled(false);
    wait_snapshot(&mut snap, "expired while partitioned", |s| !s.is_alive("p")).await;
    wait_for(&mut status, "retrying", |r| *r == Registration::Retrying).await;
    wait_for(&mut own_health, "stale", |h| *h == Health::Stale).await;
    assert_eq!(ids(&registry.snapshot().borrow()), ["p"]);

    proxy.set_enabled(true);
    wait_for(
        &mut status,
        "registered on a new lease",
        |r| matches!(r, Registration::Active { lease } if *lease != old),
    )
    .await;
    wait_snapshot(&mut snap, "alive again", |s| s.is_alive("p")).await;
    wait_for(&mut own_health, "fresh again", |h| *h == Health::Fresh).await;
    registry.shutdown().await.expect("revoke");
    wait_snapshot(&mut snap, "revoked", |s| !s.is_alive("p")).await;
    watcher.shutdown().await;
}

#[tokio::test]
async fn unreachable_at_start_then_up() {
    let dir = switchyard_testkit::wait::socket_dir("live-late");
    let Some(etcd) = etcd_or_skip(dir.path()).await else {
        return;
    };
    let proxy = Proxy::start(etcd.client_addr()).await;
    proxy.set_enabled(false);
    let watcher = RegistryWatcher::spawn(&config(proxy.endpoint())).unwrap();
    let mut health = watcher.health();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(*health.borrow(), Health::Starting);
    assert_eq!(watcher.snapshot().borrow().revision, 0, "nothing read yet");
    proxy.set_enabled(true);
    wait_for(&mut health, "fresh", |h| *h == Health::Fresh).await;
    drop(watcher);
    // Dropping stops the task: health turns stale without a shutdown call.
    wait_for(&mut health, "stale once dropped", |h| *h == Health::Stale).await;
}

#[tokio::test]
async fn bad_configurations_are_refused_before_anything_starts() {
    assert!(
        RegistryWatcher::spawn(&EtcdConfig::default()).is_err(),
        "no endpoints"
    );
    let unreachable = "http://127.0.0.1:1".to_owned();
    let mut bad_self = machine(unreachable.clone(), "m1", "alpha", "fd00::1");
    if let Some(me) = &mut bad_self.register {
        me.name = "*".into();
    }
    assert!(Registrar::spawn(&bad_self).is_err());
    assert!(
        Registrar::spawn(&config(unreachable.clone())).is_err(),
        "nothing to register"
    );
    let mut no_ttl = machine(unreachable, "m1", "alpha", "fd00::1");
    no_ttl.heartbeat_ttl = Duration::ZERO;
    assert!(LiveRegistry::start(&no_ttl).is_err());
}
