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

/// Routes every call to the same backends in the same mode: the simplest
/// director, for a plain forwarding proxy or a fixed fan-out.
#[derive(Debug, Clone)]
pub struct StaticDirector {
    mode: Mode,
    backends: Vec<Arc<dyn Backend>>,
}

impl StaticDirector {
    /// Every call goes to `backends` in `mode`.
    pub fn new(mode: Mode, backends: Vec<Arc<dyn Backend>>) -> Self {
        Self { mode, backends }
    }

    /// Every call goes to `backend`, one-to-one.
    pub fn one(backend: impl Backend) -> Self {
        Self::new(Mode::OneToOne, vec![Arc::new(backend)])
    }
}

impl Director for StaticDirector {
    fn route<'a>(
        &'a self,
        _method: &'a str,
        _request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        Box::pin(std::future::ready(Ok((self.mode, self.backends.clone()))))
    }
}
