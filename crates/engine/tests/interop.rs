//! An independent gRPC implementation (Python grpcio) calls through the
//! proxy: unary, server streaming, bidi and an error.
//!
//! Needs `grpcio` and `grpcio-tools` (tests/interop/requirements.txt) for the
//! interpreter in `SWITCHYARD_PYTHON` (default `python3`). Without them the
//! test is skipped with a message, except under CI (`CI` set), where it fails.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use switchyard_engine::{Backend, Mode, ProxyConfig};
use switchyard_testkit::{TestBackend, TestServer};

#[tokio::test]
async fn python_grpcio_client_through_the_proxy() {
    let python = std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_grpc = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_grpc {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tests/interop/requirements.txt for {python}"
        );
        eprintln!(
            "skipped: {python} lacks grpcio/grpcio-tools (pip install -r tests/interop/requirements.txt)"
        );
        return;
    }

    let (addr, server) = TestServer::spawn_tcp("py-backend").await;
    let backend: Arc<dyn Backend> = Arc::new(TestBackend::tcp("py-backend", addr));
    let proxy = spawn_proxy(
        StaticDirector::new(Mode::OneToOne, vec![backend]),
        ProxyConfig::default(),
    )
    .await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/client.py");
    let run = tokio::process::Command::new(&python)
        .arg(script)
        .args(["--target", &proxy.addr.to_string()])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("python client timed out")
        .expect("python client did not start");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{stderr}"
    );
    for check in ["Ping", "PingList", "PingStream", "PingError"] {
        assert!(stdout.contains(check), "no {check} check in:\n{stdout}");
    }
    // The calls really went through the proxy to the backend.
    assert!(server.probe().calls() >= 4);
}
