//! The Switchyard daemon and CLI, as a library so tests can run it in-process.
//!
//! - [`config`]: settings from a TOML file and flags;
//! - [`listen`]: binding listeners and their socket files;
//! - [`daemon`]: director + engine + listeners, wired together;
//! - [`live`]: the machine registry in etcd, fed to the director;
//! - [`etcd`]: an etcd server on loopback (demo and tests);
//! - [`reflect`]: streamed methods learned from the local server's reflection;
//! - [`serve`]: the `serve` command (signals, reload, shutdown);
//! - [`cert`]: the `cert` command, certificates for mutual TLS;
//! - [`cluster`]: machines on loopback in one process (demo and tests);
//! - [`demo`]: the `demo` command, a three-machine cluster in one process.

pub mod cert;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod etcd;
pub mod listen;
pub mod live;
pub mod reflect;
pub mod serve;
