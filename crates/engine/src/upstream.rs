//! Building and sending the upstream request of a call; shared by both modes.

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use tokio::time::Instant;
use tonic::Status;

use crate::backend::{Backend, Upstream};
use crate::client::{SendRequest, UpstreamBody};
use crate::codec::timeout;
use crate::status::{self, GRPC_CONTENT_TYPE};

/// Headers that HTTP/2 forbids or that describe one hop only.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::HeaderName::from_static("keep-alive"),
];

/// The upstream request for `upstream`, carrying `body`.
///
/// `grpc-timeout` is replaced by what is left of the caller's deadline.
/// `identity_replies` asks the backend not to compress (fan-out edits replies).
pub(crate) fn request(
    upstream: Upstream,
    path: &http::uri::PathAndQuery,
    deadline: Option<Instant>,
    identity_replies: bool,
    body: UpstreamBody,
) -> Result<(SendRequest, Request<UpstreamBody>), Status> {
    let Upstream {
        connection,
        scheme,
        authority,
        mut headers,
    } = upstream;
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path.clone())
        .build()
        .map_err(|e| Status::internal(format!("cannot build upstream URI: {e}")))?;
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers
        .entry(header::CONTENT_TYPE)
        .or_insert(GRPC_CONTENT_TYPE);
    if let Some(deadline) = deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let value = HeaderValue::try_from(timeout::encode(left)).expect("digits and a unit");
        headers.insert("grpc-timeout", value);
    }
    if identity_replies {
        headers.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
    }
    let mut request = Request::new(body);
    *request.uri_mut() = uri;
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = headers;
    Ok((connection, request))
}

/// Sends `request` and waits for the response head.
pub(crate) async fn send(
    mut connection: SendRequest,
    request: Request<UpstreamBody>,
    backend: &dyn Backend,
) -> Result<(SendRequest, Response<Incoming>), Status> {
    connection
        .ready()
        .await
        .map_err(|e| status::from_upstream_error(&e, &backend))?;
    let response = connection
        .send_request(request)
        .await
        .map_err(|e| status::from_upstream_error(&e, &backend))?;
    if response.status() != StatusCode::OK {
        return Err(Status::new(
            status::code_from_http(response.status()),
            format!("backend {backend} answered HTTP {}", response.status()),
        ));
    }
    Ok((connection, response))
}
