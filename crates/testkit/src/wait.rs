//! Bounded waits for tests: a hang fails the test with a message naming what
//! was awaited instead of stalling the suite.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Bound of any single network wait in a test (a call, a message, a process
/// exit): generous, for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// `fut`, or a panic naming `what` after [`WAIT`].
pub async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    bounded_for(WAIT, what, fut).await
}

/// `fut`, or a panic naming `what` after `limit`.
pub async fn bounded_for<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        let remaining = limit.saturating_sub(started.elapsed());
        if let Ok(Some(value)) = tokio::time::timeout(remaining, check()).await {
            return value;
        }
        if started.elapsed() >= limit {
            panic!("{what}: still not the case after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh temporary directory for Unix sockets, removed on drop. Created
/// under `/tmp` when the system temp dir has a long path, since a socket path
/// must fit in 108 bytes.
pub fn socket_dir(tag: &str) -> tempfile::TempDir {
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 40 {
        base = "/tmp".into();
    }
    tempfile::Builder::new()
        .prefix(&format!("sy-{tag}-"))
        .tempdir_in(base)
        .expect("cannot create a temporary directory")
}
