//! The sample backend of the benchmarks: the testkit's `TestService` and
//! `MultiService` (payload echo, `PingList`, `PingStream`) on a tonic server
//! bound to a Unix socket, run as its own process by
//! `switchyard-bench backend`.
//!
//! It is the same handler the integration tests use; only the HTTP/2
//! settings are set here, to the values Switchyard uses itself (2 MiB stream
//! window, 8 MiB connection window, no per-connection stream cap below the
//! 1,000 streams of the memory measurement), so that the direct baseline is
//! not handicapped by smaller windows than the proxied paths.

use std::path::Path;

use anyhow::Context as _;
use switchyard_testkit::{Probe, TestHandler};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// Serves the test services as `name` on the Unix socket `path` until
/// `shutdown` resolves. A stale socket file at `path` is replaced.
pub async fn serve(
    name: &str,
    path: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("cannot replace {}", path.display())),
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot listen on unix:{}", path.display()))?;
    let handler = TestHandler::new(name, Probe::new());
    tonic::transport::Server::builder()
        .initial_stream_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024)
        .max_concurrent_streams(4096)
        .max_frame_size(64 * 1024)
        .layer(handler.trailer_layer())
        .add_service(handler.test_service())
        .add_service(handler.multi_service())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("the backend server failed")?;
    let _ = std::fs::remove_file(path);
    Ok(())
}
