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
//! - [`proxy`]: the service; it hands each call to `one_to_one` or
//!   `one_to_many`, which build requests with `upstream` and answer with a
//!   [`ResponseBody`];
//! - [`director`] and [`backend`]: what an application plugs in;
//! - [`channel`] and [`address`]: upstream connections; [`server`]: serving;
//! - [`config`]: every tunable; [`codec`]: pure wire functions;
//!   [`status`]: errors as gRPC statuses.

pub mod address;
pub mod backend;
pub mod backoff;
mod body;
pub mod channel;
pub mod codec;
pub mod config;
pub mod director;
mod one_to_many;
mod one_to_one;
pub mod proxy;
pub mod server;
pub mod status;
pub mod upstream;

pub use address::Address;
pub use backend::{Backend, ChannelBackend, ReplyShape};
pub use backoff::Backoff;
pub use body::ResponseBody;
pub use channel::{Channel, ConnectError};
pub use config::{ChannelConfig, Http2Settings, ProxyConfig, ServerConfig};
pub use director::{Director, Mode, Route, StaticDirector};
pub use proxy::TransparentProxy;
pub use upstream::Upstream;

/// Boxed error used in body types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
