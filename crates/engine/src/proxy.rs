//! [`TransparentProxy`]: the `tower::Service` that accepts any gRPC method,
//! asks the [`Director`] where it goes, and hands it to the one-to-one or
//! one-to-many forwarder.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version, header};
use http_body::Body;
use tokio::time::Instant;
use tonic::Status;

use crate::body::{Record, ResponseBody};
use crate::body::{error_response, error_with_headers, http_error};
use crate::budget::Holder;
use crate::codec::timeout;
use crate::config::ProxyConfig;
use crate::director::{Director, Mode, Route};
use crate::fan_out::{self, Answer};
use crate::names::GRPC_TIMEOUT;
use crate::peer::Peer;
use crate::{BoxError, one_to_one};

/// A gRPC proxy for any method, as a `tower::Service`.
///
/// Cloning is cheap; clones share the director and configuration.
#[derive(Clone)]
pub struct TransparentProxy {
    shared: Arc<Shared>,
}

struct Shared {
    director: Box<dyn Director>,
    config: ProxyConfig,
}

impl fmt::Debug for TransparentProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransparentProxy")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl TransparentProxy {
    /// A proxy with the default configuration.
    pub fn new(director: impl Director) -> Self {
        Self::with_config(director, ProxyConfig::default())
    }

    /// A proxy with `config`.
    pub fn with_config(director: impl Director, config: ProxyConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                director: Box::new(director),
                config,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// Proxies one call. Every failure becomes a gRPC (or, for requests that
    /// are not gRPC, HTTP) error response; this never fails.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        if let Some(rejection) = reject_non_grpc(&parts) {
            return rejection;
        }
        let observer = match &self.shared.config.observer {
            Some(observer) if observer.observes_calls() => observer,
            _ => return self.forward(parts, body, None).await,
        };
        let mut record = Record::new(observer.clone(), &parts, Instant::now());
        let response = self.forward(parts, body, Some(&mut record)).await;
        ResponseBody::recorded(response, record)
    }

    /// Routes and forwards one gRPC call; `record` hears how it was routed.
    async fn forward<B>(
        &self,
        mut parts: http::request::Parts,
        body: B,
        record: Option<&mut Record>,
    ) -> Response<ResponseBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let deadline = match deadline(&parts.headers) {
            Ok(deadline) => deadline,
            Err(status) => return error_response(&status),
        };
        let config = &self.shared.config;
        let route = self.shared.director.route(&mut parts);
        let route = match deadline {
            Some(at) => tokio::time::timeout_at(at, route)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded("deadline expired while routing"))
                }),
            None => route.await,
        };
        let method = parts.uri.path();
        let Route {
            mode,
            backends,
            leg_timeout,
        } = match route {
            Ok(route) => route,
            Err(status) => {
                tracing::debug!(method, code = ?status.code(), status_message = status.message(), "director refused the call");
                return error_response(&status);
            }
        };
        tracing::debug!(method, ?mode, backends = ?backends.iter().map(ToString::to_string).collect::<Vec<_>>(), "proxying call");
        let (bytes_in, legs) = match record {
            Some(record) => record.routed(mode, &backends),
            None => (None, None),
        };
        match (mode, backends.len()) {
            (_, 0) => error_response(&Status::unavailable(format!("no backend for {method}"))),
            (Mode::OneToOne, 1) => {
                let backend = backends.into_iter().next().expect("one backend");
                match one_to_one::forward(config, backend, parts, body, deadline, bytes_in).await {
                    Ok(response) => response.map(ResponseBody::passthrough),
                    Err(status) => error_response(&status),
                }
            }
            (Mode::OneToOne, n) => error_response(&Status::internal(format!(
                "director chose {n} backends for a one-to-one call to {method}"
            ))),
            (Mode::OneToMany(shape), _) => {
                let memory = config.memory.clone().map(|budget| {
                    let peer = parts.extensions.get::<Arc<Peer>>().map(|p| &**p);
                    (budget, Holder::of(peer))
                });
                let call = fan_out::Request {
                    parts,
                    body,
                    deadline,
                    shape,
                    bytes_in,
                    legs,
                    memory,
                    leg_timeout,
                };
                match fan_out::forward(config, backends, call).await {
                    Answer::Merged {
                        headers,
                        message,
                        trailers,
                        hold,
                    } => {
                        let body = ResponseBody::held_chunks(message, trailers, hold);
                        let mut response = Response::new(body);
                        *response.headers_mut() = headers;
                        response
                    }
                    Answer::Streamed { headers, body } => {
                        let mut response = Response::new(ResponseBody::streamed(body));
                        *response.headers_mut() = headers;
                        response
                    }
                    Answer::Failed { headers, status } => error_with_headers(&status, headers),
                }
            }
        }
    }
}

impl<B> tower_service::Service<Request<B>> for TransparentProxy
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

/// Rejects requests that are not gRPC calls, with the most helpful answer
/// the client can understand.
fn reject_non_grpc(parts: &http::request::Parts) -> Option<Response<ResponseBody>> {
    if parts.version != Version::HTTP_2 {
        return Some(http_error(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "this is a gRPC proxy: it serves HTTP/2 only\n",
        ));
    }
    if parts.method != Method::POST {
        return Some(http_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "gRPC calls use POST\n",
        ));
    }
    let grpc = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .is_some_and(|ct| {
            ct == b"application/grpc"
                || ct.starts_with(b"application/grpc+")
                || ct.starts_with(b"application/grpc;")
        });
    if !grpc {
        return Some(http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/grpc\n",
        ));
    }
    let path = parts.uri.path();
    let valid = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(service, method)| {
            !service.is_empty() && !method.is_empty() && !method.contains('/')
        });
    if !valid || parts.uri.query().is_some() {
        return Some(error_response(&Status::unimplemented(format!(
            "malformed method path {:?}: expected /package.Service/Method",
            parts.uri.path_and_query().map_or("", |p| p.as_str())
        ))));
    }
    None
}

fn deadline(headers: &HeaderMap) -> Result<Option<Instant>, Status> {
    headers
        .get(GRPC_TIMEOUT)
        .map(|value| {
            timeout::parse(value.as_bytes())
                .map(|d| Instant::now() + d)
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(
        version: Version,
        method: Method,
        ct: Option<&str>,
        path: &str,
    ) -> http::request::Parts {
        let mut b = Request::builder().version(version).method(method).uri(path);
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn grpc_status(res: &Response<ResponseBody>) -> Option<&str> {
        res.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap())
    }

    #[test]
    fn non_grpc_requests_get_clear_errors() {
        let ok = parts(
            Version::HTTP_2,
            Method::POST,
            Some("application/grpc"),
            "/a.B/C",
        );
        assert!(reject_non_grpc(&ok).is_none());
        let ok = parts(
            Version::HTTP_2,
            Method::POST,
            Some("application/grpc+proto"),
            "/a.B/C",
        );
        assert!(reject_non_grpc(&ok).is_none());

        let h1 = parts(
            Version::HTTP_11,
            Method::POST,
            Some("application/grpc"),
            "/a.B/C",
        );
        assert_eq!(reject_non_grpc(&h1).unwrap().status(), 505);
        let get = parts(
            Version::HTTP_2,
            Method::GET,
            Some("application/grpc"),
            "/a.B/C",
        );
        assert_eq!(reject_non_grpc(&get).unwrap().status(), 405);
        let json = parts(
            Version::HTTP_2,
            Method::POST,
            Some("application/json"),
            "/a.B/C",
        );
        assert_eq!(reject_non_grpc(&json).unwrap().status(), 415);
        let none = parts(Version::HTTP_2, Method::POST, None, "/a.B/C");
        assert_eq!(reject_non_grpc(&none).unwrap().status(), 415);
        for path in ["/", "/a.B", "/a.B/", "//C", "/a/b/c", "/a.B/C?x=1"] {
            let p = parts(
                Version::HTTP_2,
                Method::POST,
                Some("application/grpc"),
                path,
            );
            let res = reject_non_grpc(&p).unwrap();
            assert_eq!(res.status(), 200, "{path}");
            assert_eq!(grpc_status(&res), Some("12"), "{path}");
        }
    }

    #[test]
    fn bad_grpc_timeout_is_invalid_argument() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-timeout", "soon".parse().unwrap());
        assert_eq!(
            deadline(&headers).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        headers.insert("grpc-timeout", "5S".parse().unwrap());
        assert!(deadline(&headers).unwrap().is_some());
        assert!(deadline(&HeaderMap::new()).unwrap().is_none());
    }
}
