//! Running the independent gRPC client of `tests/interop/client.py` (Python
//! grpcio), as the interop tests of every crate do.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

/// The Python interpreter with `grpcio` and `grpcio-tools`
/// (`tests/interop/requirements.txt`): `SWITCHYARD_PYTHON`, or `python3`.
/// `None` (after printing why) when it lacks them, except under CI (`CI`
/// set), where that is a failure.
///
/// # Panics
///
/// Under CI, when the interpreter lacks grpcio.
pub fn python() -> Option<String> {
    let python = std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_grpc = std::process::Command::new(&python)
        .args(["-c", "import grpc, grpc_tools"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_grpc {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must install tests/interop/requirements.txt for {python}"
    );
    eprintln!(
        "skipped: {python} lacks grpcio/grpcio-tools (pip install -r tests/interop/requirements.txt)"
    );
    None
}

/// Runs `tests/interop/client.py` with `args` (bounded to two minutes) and
/// panics, with its output, unless every check passed. Returns its stdout.
///
/// # Panics
///
/// When the client fails, cannot start, or hangs.
pub async fn run_client(python: &str, args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/client.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .args(args)
        .kill_on_drop(true)
        .output();
    let Output {
        status,
        stdout,
        stderr,
    } = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("python client timed out")
        .expect("python client did not start");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        status.success(),
        "python client {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&stderr)
    );
    stdout
}
