//! Test support for Switchyard's integration tests: real gRPC servers, run
//! in-process, that a proxy under test can forward to.
//!
//! - [`pb`]: the `switchyard.test.v1` protos (`TestService`, and the fan-out
//!   shaped `MultiService`), compiled at build time without `protoc`.
//! - [`server`]: [`TestServer`], serving both services on TCP or a Unix
//!   socket, with a [`Probe`] that records what the server saw (request
//!   metadata, calls, cancelled handlers).
//! - [`backend`]: [`TestBackend`], a [`switchyard_engine::Backend`] that
//!   tags fan-out replies with the `Metadata` of the reply contract.
//! - [`client`]: tonic channels and clients for TCP and Unix sockets.
//! - [`blackhole()`]: a TCP listener that accepts and then never answers.
//! - [`interop`]: the independent Python grpcio client.
//! - [`raw_h2`]: an HTTP/2 client that sends any header field, for requests
//!   no client library can make.
//! - [`wait`]: bounded waits (`bounded`, `eventually`) and socket temp dirs.
//!
//! ```no_run
//! # async fn demo() {
//! use switchyard_testkit::{client, pb, TestServer};
//!
//! let (addr, server) = TestServer::spawn_tcp("alpha").await;
//! let mut ping = client::test_client(client::tcp_channel(addr));
//! let reply = ping
//!     .ping(pb::PingRequest { value: "hi".into(), ..Default::default() })
//!     .await
//!     .unwrap();
//! assert_eq!(reply.get_ref().server, "alpha");
//! assert_eq!(server.probe().calls(), 1);
//! # }
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod blackhole;
pub mod client;
pub mod interop;
pub mod pb;
pub mod raw_h2;
pub mod server;
pub mod trailer;
pub mod wait;

pub use backend::TestBackend;
pub use blackhole::{Blackhole, blackhole};
pub use server::{Probe, SeenCall, TestHandler, TestServer};
pub use trailer::TrailerLayer;

/// Largest message the test servers and clients accept or send (64 MiB).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

#[cfg(test)]
mod tests;
