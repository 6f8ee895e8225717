//! The upstream side of a call: the connection handle a backend provides, the
//! request built for it, and sending it. Shared by both forwarding modes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use tokio::time::Instant;
use tonic::Status;

use crate::BoxError;
use crate::codec::timeout;
use crate::names::{GRPC_ACCEPT_ENCODING, GRPC_TIMEOUT};
use crate::status::{self, GRPC_CONTENT_TYPE};

/// Request body type of every upstream call.
pub type UpstreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// Handle to a shared upstream HTTP/2 connection.
pub type SendRequest = hyper::client::conn::http2::SendRequest<UpstreamBody>;

/// Where and how to send one call upstream.
#[derive(Debug)]
pub struct Upstream {
    /// The HTTP/2 connection (shared by every call to the same backend).
    pub connection: SendRequest,
    /// `:scheme` of the upstream request.
    pub scheme: Scheme,
    /// `:authority` of the upstream request.
    pub authority: Authority,
    /// Request headers (gRPC metadata) to send; `None` sends the caller's
    /// as they came, without a copy on the one-to-one path. Either way the
    /// engine drops connection-specific headers (`host` among them) and adds
    /// `te`, `grpc-timeout` (what is left of the caller's deadline) and, in
    /// fan-out mode, `grpc-accept-encoding`.
    pub headers: Option<HeaderMap>,
}

/// Headers that HTTP/2 forbids or that describe one hop only.
/// `content-length` is not one: the body goes upstream unchanged, and h2
/// checked it against the body as it arrived.
const HOP_BY_HOP: [header::HeaderName; 5] = [
    header::CONNECTION,
    header::HOST,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HeaderName::from_static("keep-alive"),
];

/// The upstream request for `upstream`, carrying `body`, with `caller`'s
/// headers unless the backend chose its own.
///
/// `grpc-timeout` is replaced by what is left of the caller's deadline.
/// `identity_replies` asks the backend not to compress (fan-out edits replies).
/// Headers over `max_metadata` (HTTP/2's measure) fail the call here: the
/// backend would answer them by closing the connection all callers share.
pub(crate) fn request(
    upstream: Upstream,
    caller: impl FnOnce() -> HeaderMap,
    path: &http::uri::PathAndQuery,
    deadline: Option<Instant>,
    identity_replies: bool,
    max_metadata: usize,
    body: UpstreamBody,
) -> Result<(SendRequest, Request<UpstreamBody>), Status> {
    let Upstream {
        connection,
        scheme,
        authority,
        headers,
    } = upstream;
    let mut headers = headers.unwrap_or_else(caller);
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path.clone())
        .build()
        .map_err(|e| Status::internal(format!("cannot build upstream URI: {e}")))?;
    prepare_headers(&mut headers, deadline, identity_replies);
    let size = header_list_size(&headers, &uri);
    if size > max_metadata {
        return Err(Status::resource_exhausted(format!(
            "request metadata of {size} bytes is over the {max_metadata} bytes a backend accepts"
        )));
    }
    let mut request = Request::new(body);
    *request.uri_mut() = uri;
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = headers;
    Ok((connection, request))
}

/// The size of a request's header list as HTTP/2 counts it against
/// `SETTINGS_MAX_HEADER_LIST_SIZE` (RFC 9113 §6.5.2): each field's name
/// and value plus 32, pseudo-header fields included.
fn header_list_size(headers: &HeaderMap, uri: &Uri) -> usize {
    const ENTRY: usize = 32;
    let pseudo = [
        ":method".len() + "POST".len(),
        ":scheme".len() + uri.scheme_str().map_or(0, str::len),
        ":authority".len() + uri.authority().map_or(0, |a| a.as_str().len()),
        ":path".len() + uri.path_and_query().map_or(0, |p| p.as_str().len()),
    ];
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ENTRY)
        .sum();
    pseudo.iter().map(|n| n + ENTRY).sum::<usize>() + fields
}

/// Turns the caller's request metadata into the upstream request's headers.
fn prepare_headers(headers: &mut HeaderMap, deadline: Option<Instant>, identity_replies: bool) {
    // A removal hashes the name even when it is absent, which it nearly
    // always is (h2 refuses most of them): one look at the few names first.
    if headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers
        .entry(header::CONTENT_TYPE)
        .or_insert(GRPC_CONTENT_TYPE);
    match deadline {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = HeaderValue::try_from(timeout::encode(left)).expect("digits and a unit");
            headers.insert(GRPC_TIMEOUT, value);
        }
        None => {
            headers.remove(GRPC_TIMEOUT);
        }
    }
    if identity_replies {
        headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
}

/// Sends `request` and waits for the response head. `backend` names the
/// backend in errors.
pub(crate) async fn send(
    mut connection: SendRequest,
    request: Request<UpstreamBody>,
    backend: &(dyn fmt::Display + Sync),
) -> Result<(SendRequest, Response<Incoming>), Status> {
    connection
        .ready()
        .await
        .map_err(|e| status::from_upstream_error(&e, backend))?;
    let response = Lingering::new(connection.send_request(request))
        .await
        .map_err(|e| status::from_upstream_error(&e, backend))?;
    if response.status() != StatusCode::OK {
        return Err(Status::new(
            status::code_from_http(response.status()),
            format!("backend {backend} answered HTTP {}", response.status()),
        ));
    }
    Ok((connection, response))
}

/// How long a call given up before its response head arrived keeps its
/// upstream stream open before resetting it.
pub(crate) const LINGER: Duration = Duration::from_millis(100);

/// Most streams lingering at once; past it, a stream is reset at once.
const MAX_LINGERING: usize = 4096;

static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// A response on its way, whose stream, if the call gives up before the
/// response head arrives, is reset only once the head arrives or after
/// [`LINGER`].
///
/// A backend counts streams reset before it took them from its accept
/// queue, and past a few (h2 servers: 20) takes the peer for a rapid-reset
/// attacker and closes the connection: every caller's calls on it would
/// die with it. Callers that cancel quickly (tight deadlines, abandoned
/// fan-outs) would make Switchyard look like one, so their resets wait
/// until the backend has answered (it has taken the stream) or has had
/// ample time to take it. The backend's own `grpc-timeout` still ends its
/// work on time.
struct Lingering<F: Future + Send + 'static> {
    /// `None` once resolved.
    response: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> Lingering<F> {
    fn new(response: F) -> Self {
        Self {
            response: Some(Box::pin(response)),
        }
    }
}

impl<F: Future + Send + 'static> Future for Lingering<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let response = self.response.as_mut().expect("polled after completion");
        let output = ready!(response.as_mut().poll(cx));
        self.response = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for Lingering<F> {
    fn drop(&mut self) {
        let Some(response) = self.response.take() else {
            return;
        };
        if LINGERING.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING
            || tokio::runtime::Handle::try_current().is_err()
        {
            LINGERING.fetch_sub(1, Ordering::Relaxed);
            return; // dropped here: reset at once
        }
        tokio::spawn(async move {
            // The response (or its absence) is dropped at the end: reset.
            let _ = tokio::time::timeout(LINGER, response).await;
            LINGERING.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn hop_by_hop_headers_go_and_the_deadline_is_what_is_left() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "[fd00::1]:51000".parse().unwrap());
        headers.insert(header::CONNECTION, "keep-alive".parse().unwrap());
        headers.insert("grpc-timeout", "10S".parse().unwrap());
        headers.insert("x-custom", "kept".parse().unwrap());
        headers.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        headers.insert(
            header::CONTENT_TYPE,
            "application/grpc+proto".parse().unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        tokio::time::advance(Duration::from_secs(4)).await;
        prepare_headers(&mut headers, Some(deadline), true);
        assert!(headers.get(header::HOST).is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert_eq!(headers["grpc-timeout"], "6000000u");
        assert_eq!(headers["x-custom"], "kept");
        assert_eq!(headers[header::CONTENT_LENGTH], "5");
        assert_eq!(headers[header::TE], "trailers");
        assert_eq!(headers[header::CONTENT_TYPE], "application/grpc+proto");
        assert_eq!(headers["grpc-accept-encoding"], "identity");

        prepare_headers(&mut headers, None, false);
        assert!(headers.get("grpc-timeout").is_none());
    }
}
