//! Routing: which backends serve a call, and how.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tonic::Status;

use crate::Backend;

/// How a call is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Transparent forwarding to exactly one backend: messages, headers and
    /// trailers pass untouched.
    OneToOne,
    /// The call goes to every backend; replies are tagged with
    /// [`Backend::append_info`] and merged (unary) or interleaved (streaming).
    OneToMany,
}

/// The backends chosen for one call.
pub type Route = (Mode, Vec<Arc<dyn Backend>>);

/// Decides where each call goes.
pub trait Director: Send + Sync + 'static {
    /// Routes a call to `method` (`/package.Service/Method`) given the
    /// incoming request head. An error status reaches the client unchanged
    /// (code, message and details).
    fn route<'a>(
        &'a self,
        method: &'a str,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>>;
}

impl<D: Director + ?Sized> Director for Arc<D> {
    fn route<'a>(
        &'a self,
        method: &'a str,
        request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        (**self).route(method, request)
    }
}
