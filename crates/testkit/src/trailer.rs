//! A tower layer that adds a custom trailer to every successful gRPC response.
//!
//! tonic writes the trailers of a unary response itself (`grpc-status: 0`
//! only) and offers no way for a handler to add metadata to them, so the
//! test servers wrap their routes in [`TrailerLayer`], which edits the
//! trailers frame of every response on its way out.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

/// Adds `name: value` to the trailers of every response whose trailers say
/// `grpc-status: 0`. Trailers-Only responses (errors) and failed calls are
/// left alone.
#[derive(Debug, Clone)]
pub struct TrailerLayer {
    name: HeaderName,
    value: HeaderValue,
}

impl TrailerLayer {
    /// A layer adding `name: value`.
    pub fn new(name: HeaderName, value: HeaderValue) -> Self {
        Self { name, value }
    }
}

impl<S> Layer<S> for TrailerLayer {
    type Service = TrailerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TrailerService {
            inner,
            name: self.name.clone(),
            value: self.value.clone(),
        }
    }
}

/// The service made by [`TrailerLayer`].
#[derive(Debug, Clone)]
pub struct TrailerService<S> {
    inner: S,
    name: HeaderName,
    value: HeaderValue,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for TrailerService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<TrailerBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let future = self.inner.call(request);
        let name = self.name.clone();
        let value = self.value.clone();
        Box::pin(async move {
            let response = future.await?;
            Ok(response.map(|inner| TrailerBody { inner, name, value }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body whose OK trailers get one more entry.
    pub struct TrailerBody<B> {
        #[pin]
        inner: B,
        name: HeaderName,
        value: HeaderValue,
    }
}

impl<B> fmt::Debug for TrailerBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrailerBody")
            .field("name", &self.name)
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for TrailerBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        Poll::Ready(frame.map(|frame| {
            frame.map(|mut frame| {
                if let Some(trailers) = frame.trailers_mut()
                    && trailers.get("grpc-status").is_some_and(|s| s == "0")
                {
                    trailers.insert(this.name.clone(), this.value.clone());
                }
                frame
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
