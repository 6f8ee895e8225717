//! A request's HEADERS and its first DATA leave in one write, from the task
//! that sends the request: what `patches/hyper` (see its PATCH.md) changes.
//! Without it every upstream call with a body spawns a second task and
//! writes twice, because a new HTTP/2 stream has no send capacity until its HEADERS
//! are out.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// Spawns on tokio and counts what it is given.
#[derive(Clone, Default)]
struct CountingExecutor(Arc<AtomicUsize>);

impl<F> hyper::rt::Executor<F> for CountingExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        self.0.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(future);
    }
}

/// A stream that counts the writes made on it.
struct CountingIo {
    inner: DuplexStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncRead for CountingIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An HTTP/2 server echoing each request body.
async fn echo_server(io: DuplexStream) {
    let mut connection = h2::server::handshake(io).await.expect("server handshake");
    while let Some(accepted) = connection.accept().await {
        let (request, mut respond) = accepted.expect("request");
        tokio::spawn(async move {
            let mut body = request.into_body();
            let mut echoed = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.expect("request data");
                let _ = body.flow_control().release_capacity(chunk.len());
                echoed.extend_from_slice(&chunk);
            }
            let mut send = respond
                .send_response(http::Response::new(()), false)
                .expect("response head");
            send.send_data(Bytes::from(echoed), true)
                .expect("response data");
        });
    }
}

#[tokio::test]
async fn a_request_with_a_body_is_one_write_and_no_task() {
    const CALLS: usize = 20;
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    tokio::spawn(echo_server(server_io));
    let writes = Arc::new(AtomicUsize::new(0));
    let io = CountingIo {
        inner: client_io,
        writes: writes.clone(),
    };
    let spawned = CountingExecutor::default();
    let (mut send, connection) = hyper::client::conn::http2::Builder::new(spawned.clone())
        .handshake::<_, Full<Bytes>>(TokioIo::new(io))
        .await
        .expect("client handshake");
    tokio::spawn(connection);

    let mut call = async |i: usize| {
        send.ready().await.expect("connection ready");
        let request = http::Request::post("http://backend/echo")
            .body(Full::new(Bytes::from(format!("call {i}"))))
            .unwrap();
        let response = send.send_request(request).await.expect("response");
        let body = response.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes(), format!("call {i}").as_bytes());
    };
    // The first call also writes the preface and settings acknowledgements.
    tokio::time::timeout(Duration::from_secs(10), call(0))
        .await
        .expect("first call");
    let (writes_before, spawned_before) = (
        writes.load(Ordering::Relaxed),
        spawned.0.load(Ordering::Relaxed),
    );
    for i in 1..=CALLS {
        tokio::time::timeout(Duration::from_secs(10), call(i))
            .await
            .expect("call");
    }
    let writes = writes.load(Ordering::Relaxed) - writes_before;
    let spawned = spawned.0.load(Ordering::Relaxed) - spawned_before;
    // hyper spawns one task per request to await its response; without the
    // patch a second one pipes the body. One write per request (HEADERS and
    // DATA with END_STREAM together); without the patch there are two.
    assert_eq!(spawned, CALLS, "tasks spawned for {CALLS} requests");
    assert!(writes <= CALLS + 2, "{writes} writes for {CALLS} requests");
}
