//! The Switchyard daemon and CLI, as a library so tests can run it in-process.
//!
//! - [`config`]: settings from a TOML file and flags;
//! - [`listen`]: listener addresses and socket files;
//! - [`daemon`]: director + engine + listeners, wired together;
//! - [`reflect`]: streamed methods learned from the local server's reflection;
//! - [`serve`]: the `serve` command (signals, reload, shutdown);
//! - [`demo`]: the `demo` command, a three-machine cluster in one process.

pub mod config;
pub mod daemon;
pub mod demo;
pub mod listen;
pub mod reflect;
pub mod serve;
