//! The Switchyard daemon and CLI, as a library so tests can run it in-process.
//!
//! - [`config`]: settings from a TOML file and flags;
//! - [`listen`]: binding listeners and their socket files;
//! - [`logging`]: log format and filter;
//! - [`metrics`]: Prometheus metrics and the access log;
//! - [`ops`]: the metrics and health listener;
//! - [`daemon`]: director + engine + listeners, wired together;
//! - [`front`]: the daemon's own API (`switchyard.v1.Cluster`) in front of
//!   the proxy;
//! - [`live`]: the machine registry in etcd, fed to the director;
//! - [`etcd`]: an etcd server on loopback (demo and tests);
//! - [`serve`]: the `serve` command (signals, reload, shutdown);
//! - [`cert`]: the `cert` command, certificates for mutual TLS;
//! - [`client`]: the `call`, `list`, `describe` and `machines` commands;
//! - [`cluster`]: machines on loopback in one process (demo and tests);
//! - [`demo`]: the `demo` command, a three-machine cluster in one process.

pub mod cert;
pub mod client;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod etcd;
pub mod front;
pub mod listen;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod ops;
pub mod serve;

/// The version and the git commit this binary was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SWITCHYARD_COMMIT"),
    ")"
);
