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
//!   interleaved. A failing backend becomes an error entry instead of failing
//!   the call.
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

pub mod backend;
pub mod backoff;
mod body;
pub mod client;
pub mod codec;
pub mod director;
mod one_to_many;
mod one_to_one;
pub mod proxy;
pub mod server;
pub mod status;
pub mod streamed;
mod upstream;

pub use backend::{Backend, ChannelBackend, Upstream};
pub use backoff::Backoff;
pub use body::ResponseBody;
pub use client::{Channel, ChannelConfig, ConnectError, Target};
pub use director::{Director, Mode, Route, StaticDirector};
pub use proxy::{ProxyConfig, TransparentProxy};
pub use streamed::StreamedMethods;

/// Boxed error used in body types.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
