//! What a listener serves: Switchyard's own API in front of the proxy.
//!
//! `switchyard.v1.Cluster` ([`ClusterApi`]) is answered by the Switchyard
//! that receives it, whatever `machines` or `machine` metadata the call
//! carries; every other call goes to the [`TransparentProxy`]. A proxied call
//! pays one string prefix check and nothing else: its future and body are
//! the proxy's, wrapped in an enum, never boxed again.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::TryFutureExt as _;
use futures_util::future::{BoxFuture, Either, MapOk};
use http::{Request, Response};
use http_body_util::Either as EitherBody;
use switchyard_director::pb::switchyard::v1::cluster_server::ClusterServer;
use switchyard_director::{CLUSTER_PATH_PREFIX, ClusterApi, MachineDirector};
use switchyard_engine::{ResponseBody, TransparentProxy};
use tower::Service;

/// A response, as the front serves it: the proxy's body or the own API's.
type Proxied = Response<EitherBody<ResponseBody, tonic::body::Body>>;

/// The proxy's future.
type ProxyFuture = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

/// Routes Switchyard's own API to its service, everything else to the proxy.
#[derive(Debug, Clone)]
pub struct Front {
    proxy: TransparentProxy,
    own: ClusterServer<ClusterApi>,
    director: Arc<MachineDirector>,
}

impl Front {
    /// `proxy` behind the own API answered from `director`.
    pub fn new(proxy: TransparentProxy, director: Arc<MachineDirector>) -> Self {
        Self {
            proxy,
            own: ClusterApi::new(director.clone()).into_server(),
            director,
        }
    }
}

impl<B> Service<Request<B>> for Front
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = Proxied;
    type Error = Infallible;
    type Future = Either<
        MapOk<ProxyFuture, fn(Response<ResponseBody>) -> Proxied>,
        BoxFuture<'static, Result<Proxied, Infallible>>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !request.uri().path().starts_with(CLUSTER_PATH_PREFIX) {
            let left: fn(Response<ResponseBody>) -> Proxied = |r| r.map(EitherBody::Left);
            return Either::Left(self.proxy.call(request).map_ok(left));
        }
        let (mut parts, body) = request.into_parts();
        let admitted = self.director.admit(&mut parts);
        let mut own = self.own.clone();
        Either::Right(Box::pin(async move {
            let response = match admitted {
                Ok(_) => match own.call(Request::from_parts(parts, body)).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                },
                Err(status) => status.into_http(),
            };
            Ok(response.map(EitherBody::Right))
        }))
    }
}
