//! Support for the tests of the machine registry in etcd: a real etcd on
//! loopback ([`switchyard::etcd::LocalEtcd`]), a cuttable TCP proxy standing
//! in for a network partition, writes shaped like an operator's `etcdctl
//! put`, and a black hole to prove that a machine was not dialled.
//!
//! The tests need the `etcd` binary (Debian's `etcd-server`). Without it
//! they skip with a message, except under CI (`CI` set), where it is
//! installed and a missing binary is a failure.

#![allow(dead_code, unreachable_pub)]

use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use switchyard::config::{EtcdEndpoint, EtcdPrefix, EtcdSettings, Secs};
use switchyard::etcd::LocalEtcd;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The key prefix the tests use (not the default, to prove it is honoured).
pub const PREFIX: &str = "/sy-test/";

/// Starts etcd with its data in `dir`, or returns `None` (after saying why)
/// when etcd is not installed and this is not CI.
pub async fn etcd_or_skip(dir: &Path) -> Option<LocalEtcd> {
    if switchyard::etcd::binary().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd is not installed, but CI must run these tests (apt-get install etcd-server)"
        );
        eprintln!("skipping: etcd is not installed (apt-get install etcd-server etcd-client)");
        return None;
    }
    Some(LocalEtcd::start(dir).await.expect("cannot start etcd"))
}

/// Registry settings for machines using `endpoint`, with a short heartbeat.
pub fn etcd_settings(endpoint: &str, ttl: Duration) -> EtcdSettings {
    EtcdSettings {
        endpoints: vec![EtcdEndpoint(endpoint.to_owned())],
        prefix: EtcdPrefix(PREFIX.to_owned()),
        heartbeat_ttl_secs: Secs(ttl),
        ..EtcdSettings::default()
    }
}

/// A member value as an operator writes it.
pub fn member_json(id: &str, name: &str, addr: &str) -> String {
    format!(r#"{{"id":"{id}","name":"{name}","addr":"{addr}"}}"#)
}

/// `etcdctl put <prefix>machines/<id> <json>`.
pub async fn put_member(client: &mut Client, id: &str, name: &str, addr: &str) {
    put(
        client,
        &format!("machines/{id}"),
        &member_json(id, name, addr),
    )
    .await;
}

/// `etcdctl put <prefix><key> <value>`.
pub async fn put(client: &mut Client, key: &str, value: &str) {
    client
        .put(format!("{PREFIX}{key}"), value, None)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"));
}

/// `etcdctl del <prefix><key>`.
pub async fn delete(client: &mut Client, key: &str) {
    client
        .delete(format!("{PREFIX}{key}"), None)
        .await
        .unwrap_or_else(|e| panic!("delete {key}: {e}"));
}

/// The current revision of the store.
pub async fn revision(client: &mut Client) -> i64 {
    let resp = client
        .get("/", Some(GetOptions::new().with_count_only()))
        .await
        .expect("get revision");
    resp.header().expect("header").revision()
}

/// A free port on `[::1]` (free now; a test binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("these tests need IPv6 loopback ([::1])")
        .port()
}

/// A loopback TCP proxy to etcd that can cut every connection and refuse
/// new ones: a network partition between one machine and etcd.
pub struct Proxy {
    port: u16,
    enabled: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (enabled, _) = watch::channel(true);
        let enabled_rx = enabled.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut enabled = enabled_rx.clone();
                if !*enabled.borrow() {
                    continue; // dropping `inbound` refuses the connection
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = enabled.wait_for(|on| !*on) => {}
                    }
                });
            }
        });
        Self {
            port,
            enabled,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.send_replace(on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set_enabled(false);
        self.task.abort();
    }
}

/// A listener at `addr` that accepts connections, holds them and never
/// answers, counting them: any dial to it shows, and would hang.
pub struct Blackhole {
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Blackhole {
    pub async fn bind(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot bind a black hole at {addr}: {e}"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self { accepted, task }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
