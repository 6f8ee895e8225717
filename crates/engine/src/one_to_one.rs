//! Transparent forwarding to one backend: the request goes up as it arrives,
//! the response comes back as it arrives, both at once ([`crate::passthrough`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::Response;
use http_body::Body;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tonic::Status;

use crate::backend::Backend;
use crate::config::ProxyConfig;
use crate::names::GRPC_STATUS;
use crate::passthrough::{CallState, Live, PassthroughBody, RequestBody};
use crate::upstream::UpstreamBody;
use crate::{BoxError, upstream};

/// Forwards one call to `backend`; an error is the status to answer with.
pub(crate) async fn forward<B>(
    config: &ProxyConfig,
    backend: Arc<dyn Backend>,
    mut parts: http::request::Parts,
    body: B,
    deadline: Option<Instant>,
    bytes_in: Option<Arc<AtomicU64>>,
) -> Result<Response<PassthroughBody>, Status>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let call_state = Arc::new(CallState::default());
    let (cancel, cancelled) = oneshot::channel();
    let request_body = RequestBody::new(
        body,
        config.max_message_size,
        cancelled,
        call_state.clone(),
        bytes_in,
    );
    let call = async {
        let upstream = backend.connect(&parts).await?;
        let path = parts.uri.path_and_query().expect("checked gRPC path");
        let (connection, request) = upstream::request(
            upstream,
            || std::mem::take(&mut parts.headers),
            path,
            deadline,
            false,
            config.max_upstream_metadata,
            UpstreamBody::new(request_body),
        )?;
        upstream::send(connection, request, &backend).await
    };
    let expired = || {
        Status::deadline_exceeded(format!(
            "deadline expired before backend {backend} answered"
        ))
    };
    let outcome = match deadline {
        Some(at) => tokio::time::timeout_at(at, call)
            .await
            .unwrap_or_else(|_| Err(expired())),
        None => call.await,
    };
    // An answer after the deadline is too late whatever it says: the
    // backend's own timer may have won the race against ours.
    let late = deadline.is_some_and(|at| Instant::now() >= at);
    let (connection, response) = match outcome {
        Ok(_) if late => return Err(expired()),
        Ok(ok) => ok,
        // A failure of the request side is the real cause of an upstream reset.
        Err(status) => return Err(call_state.failure.get().cloned().unwrap_or(status)),
    };
    call_state.answered.store(true, Ordering::Release);
    let (head, inner) = response.into_parts();
    let trailers_only = head.headers.contains_key(GRPC_STATUS);
    let live = Live {
        inner,
        deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
        _cancel: cancel,
        _connection: connection,
    };
    let body = PassthroughBody::new(
        live,
        config.max_message_size,
        trailers_only,
        call_state,
        backend,
    );
    Ok(Response::from_parts(head, body))
}
