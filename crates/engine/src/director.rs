//! Routing: which backends serve a call, and how.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::Status;

use crate::backend::{Backend, ReplyShape};

/// How a call is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Transparent forwarding to exactly one backend: messages, headers and
    /// trailers pass untouched.
    OneToOne,
    /// The call goes to every backend; replies are tagged with
    /// [`Backend::tag_reply`] and merged into one message or forwarded as
    /// they arrive, as the [`ReplyShape`] says.
    OneToMany(ReplyShape),
}

/// The backends chosen for one call, and how they are used.
#[derive(Debug, Clone)]
pub struct Route {
    /// How the call is forwarded.
    pub mode: Mode,
    /// Where: exactly one backend for [`Mode::OneToOne`], any number for
    /// [`Mode::OneToMany`] (replies keep this order).
    pub backends: Vec<Arc<dyn Backend>>,
    /// One-to-many: how long each backend may take for its whole answer;
    /// a backend still answering then is stopped and becomes a
    /// `DEADLINE_EXCEEDED` error entry, the others go on.
    pub leg_timeout: Option<Duration>,
}

impl Route {
    /// `backends` in `mode`, without a per-backend timeout.
    pub fn new(mode: Mode, backends: Vec<Arc<dyn Backend>>) -> Self {
        Self {
            mode,
            backends,
            leg_timeout: None,
        }
    }
}

/// Decides where each call goes.
pub trait Director: Send + Sync + 'static {
    /// Routes a call given its request head; the method is the URI's path
    /// (`/package.Service/Method`). The director may rewrite the head (for
    /// example drop metadata the caller may not send); backends see the
    /// result. An error status reaches the client unchanged (code, message
    /// and details).
    fn route<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>>;
}

impl<D: Director + ?Sized> Director for Arc<D> {
    fn route<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        (**self).route(request)
    }
}

/// Routes every call to the same backends in the same mode: the simplest
/// director, for a plain forwarding proxy or a fixed fan-out.
#[derive(Debug, Clone)]
pub struct StaticDirector {
    route: Route,
}

impl StaticDirector {
    /// Every call goes to `backends` in `mode`.
    pub fn new(mode: Mode, backends: Vec<Arc<dyn Backend>>) -> Self {
        Self {
            route: Route::new(mode, backends),
        }
    }

    /// Every call goes to `backend`, one-to-one.
    pub fn one(backend: impl Backend) -> Self {
        Self::new(Mode::OneToOne, vec![Arc::new(backend)])
    }
}

impl Director for StaticDirector {
    fn route<'a>(
        &'a self,
        _request: &'a mut http::request::Parts,
    ) -> BoxFuture<'a, Result<Route, Status>> {
        Box::pin(std::future::ready(Ok(self.route.clone())))
    }
}
