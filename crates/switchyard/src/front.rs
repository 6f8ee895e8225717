//! What a listener serves: Switchyard's own API in front of the proxy.
//!
//! `switchyard.v1.Cluster` ([`ClusterApi`]) is answered by the Switchyard
//! that receives it, whatever `machines` or `machine` metadata the call
//! carries; reflection of this machine ([`OwnReflection`]) knows
//! Switchyard's own API besides the local server's; every other call goes to
//! the [`TransparentProxy`]. A proxied call pays two string checks and
//! nothing else: its future and body are the proxy's, wrapped in an enum,
//! never boxed again.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::TryFutureExt as _;
use futures_util::future::{BoxFuture, Either, MapOk};
use http::{Request, Response};
use http_body_util::Either as EitherBody;
use switchyard_director::pb::switchyard::v1::cluster_server::ClusterServer;
use switchyard_director::{
    CLUSTER_PATH_PREFIX, ClusterApi, MachineDirector, OwnReflection, REFLECTION_INFO_PATH,
};
use switchyard_engine::{ResponseBody, TransparentProxy};
use tonic_reflection::pb::v1::server_reflection_server::ServerReflectionServer;
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
    reflection: ServerReflectionServer<OwnReflection>,
    director: Arc<MachineDirector>,
}

impl Front {
    /// `proxy` behind the own API answered from `director`.
    pub fn new(proxy: TransparentProxy, director: Arc<MachineDirector>) -> Self {
        Self {
            proxy,
            own: ClusterApi::new(director.clone()).into_server(),
            reflection: OwnReflection::new(director.local_socket()).into_server(),
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
        let path = request.uri().path();
        let own = path.starts_with(CLUSTER_PATH_PREFIX);
        let reflection =
            path == REFLECTION_INFO_PATH && MachineDirector::is_local_call(request.headers());
        if !own && !reflection {
            let left: fn(Response<ResponseBody>) -> Proxied = |r| r.map(EitherBody::Left);
            return Either::Left(self.proxy.call(request).map_ok(left));
        }
        let (mut parts, body) = request.into_parts();
        let admitted = self.director.admit(&mut parts);
        let request = Request::from_parts(parts, body);
        let response = match (admitted, own) {
            (Err(status), _) => Either::Left(std::future::ready(Ok(status.into_http()))),
            (Ok(_), true) => Either::Right(Either::Left(self.own.clone().call(request))),
            (Ok(_), false) => Either::Right(Either::Right(self.reflection.clone().call(request))),
        };
        Either::Right(Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(EitherBody::Right))
        }))
    }
}
