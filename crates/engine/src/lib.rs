//! A schema-agnostic gRPC proxy engine on hyper's HTTP/2.
//!
//! [`TransparentProxy`] is a `tower::Service` that accepts any
//! `/package.Service/Method`, asks a [`Director`] where the call goes, and
//! forwards it without knowing any protobuf schema:
//!
//! - [`Mode::OneToOne`]: request and response frames, headers and trailers
//!   pass through untouched, in both directions at once; deadlines
//!   (`grpc-timeout`) and cancellation propagate.
//! - [`Mode::OneToMany`]: the call goes to every backend concurrently; each
//!   reply message is tagged by its [`Backend`], and unary replies are merged
//!   into one message (in the director's order) while streamed replies are
//!   interleaved ([`ReplyShape`]). A failing backend becomes an error entry
//!   instead of failing the call.
//!
//! The engine knows HTTP/2 and gRPC framing; what a backend *is* (a machine,
//! a socket) is the director's business.
//!
//! # Serving
//!
//! Directly with hyper, on TCP or a Unix socket ([`server::serve`]), or as
//! the fallback of a tonic server, so an application can serve its own
//! services and proxy everything else (see the `examples/` of this crate).

#![warn(missing_docs)]

//!
//! # Modules
//!
//! - [`proxy`]: the service; it hands each call to `one_to_one` (bodies in
//!   `passthrough`) or `fan_out`, which build requests with [`upstream`];
//!   [`ResponseBody`] is the one body type of every answer;
//! - [`director`] and [`backend`]: what an application plugs in;
//! - [`channel`] and [`address`]: upstream connections; [`server`]: serving,
//!   with a bounded handshake (`handshake`) and [`tls`]; [`peer`]: who calls;
//! - [`config`]: every tunable; [`codec`]: pure wire functions;
//!   [`status`]: errors as gRPC statuses; [`log_limit`]: rate-limited logs;
//!   [`observe`]: what the engine reports (metrics, access logs).

pub mod address;
pub mod admission;
pub mod backend;
pub mod backoff;
mod body;
pub mod budget;
pub mod channel;
pub mod codec;
pub mod config;
pub mod director;
mod fan_out;
mod handshake;
pub mod log_limit;
mod names;
pub mod observe;
mod one_to_one;
mod passthrough;
pub mod peer;
pub mod proxy;
pub mod server;
pub mod status;
pub mod tls;
pub mod upstream;

pub use address::Address;
pub use backend::{Backend, ChannelBackend, ReplyShape};
pub use backoff::Backoff;
pub use body::{ResponseBody, error_response};
pub use channel::{Channel, ChannelState, ConnectError};
pub use config::{ChannelConfig, Http2Settings, ProxyConfig, ServerConfig};
pub use director::{Director, Mode, Route, StaticDirector};
pub use peer::{Peer, PeerAddr};
pub use proxy::TransparentProxy;
pub use upstream::Upstream;

/// Boxed error used in body types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
