//! An independent gRPC implementation (Python grpcio) calls through the
//! proxy: unary, server streaming, bidi and an error.
//!
//! Needs `grpcio` and `grpcio-tools` (tests/interop/requirements.txt) for the
//! interpreter in `SWITCHYARD_PYTHON` (default `python3`). Without them the
//! test is skipped with a message, except under CI (`CI` set), where it fails.

mod common;

use std::sync::Arc;

use common::*;
use switchyard_engine::{Backend, Mode, ProxyConfig};
use switchyard_testkit::{TestBackend, TestServer, interop};

#[tokio::test]
async fn python_grpcio_client_through_the_proxy() {
    let Some(python) = interop::python() else {
        return;
    };
    let (addr, server) = TestServer::spawn_tcp("py-backend").await;
    let backend: Arc<dyn Backend> = Arc::new(TestBackend::tcp("py-backend", addr));
    let proxy = spawn_proxy(
        StaticDirector::new(Mode::OneToOne, vec![backend]),
        ProxyConfig::default(),
    )
    .await;
    let stdout = interop::run_client(&python, &["--target", &proxy.addr.to_string()]).await;
    for check in ["Ping", "PingList", "PingStream", "PingError"] {
        assert!(stdout.contains(check), "no {check} check in:\n{stdout}");
    }
    // The calls really went through the proxy to the backend.
    assert!(server.probe().calls() >= 4);
}
