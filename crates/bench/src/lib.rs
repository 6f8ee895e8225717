//! Switchyard's performance tooling: a gRPC load generator, the benchmark
//! suite that measures Switchyard against a direct connection and nginx, and
//! the sample backend both drive.
//!
//! The load generator speaks HTTP/2 through hyper directly (no tonic client
//! stack on the measuring side), so what it measures is the target, not the
//! client. Every call is checked like a real client would: a call whose
//! trailers carry a non-zero `grpc-status` is an error, counted by status.
//!
//! Module map:
//! - `Address` (the engine's): what a load run connects to (`unix:/path`, `[ip]:port`);
//! - [`client`]: HTTP/2 connections and one gRPC call of each kind;
//! - [`load`]: N concurrent calls over M connections for a duration or a
//!   call count, latencies in an HDR histogram;
//! - [`report`]: the figures of one run, as a table and as one JSON line;
//! - [`backend`]: the sample backend (the testkit's `TestService` and
//!   `MultiService`) served on a Unix socket, as its own process;
//! - [`relay`]: a bare HTTP/2 relay on `h2`, the suite's floor for what
//!   any proxy hop costs here;
//! - [`suite`]: the whole benchmark: processes, scenarios, medians,
//!   `docs/PERFORMANCE.md` and its chart.

// The bench measures wall-clock time of real processes; it never pauses
// tokio's clock, so std's `Instant` is the right one here.
#![allow(clippy::disallowed_types)]
#![warn(missing_docs)]

pub mod backend;
pub mod client;
pub mod load;
pub mod relay;
pub mod report;
pub mod suite;

pub use client::CallKind;
pub use load::{LoadSpec, Stop};
pub use report::Report;
pub use switchyard_engine::Address;
