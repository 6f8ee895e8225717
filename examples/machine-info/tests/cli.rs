//! The `machine-info` binary as a person runs it: `--help` answers and
//! exits, and a signal stops the server and removes its socket. Every wait
//! is bounded.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_machine-info");
const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` every 20 ms until it holds, panicking after [`WAIT`].
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for `child` to exit.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let mut status = None;
    eventually("machine-info exits", || {
        status = child.try_wait().expect("wait");
        status.is_some()
    });
    status.expect("exited")
}

/// Kills the child if a test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `machine-info args` to its exit (bounded): status, stdout, stderr.
fn run(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Running(
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs"),
    );
    let status = wait_exit(&mut child.0);
    let read = |pipe: Option<&mut dyn std::io::Read>| {
        let mut text = String::new();
        pipe.expect("piped").read_to_string(&mut text).unwrap();
        text
    };
    let stdout = read(child.0.stdout.as_mut().map(|p| p as _));
    let stderr = read(child.0.stderr.as_mut().map(|p| p as _));
    (status, stdout, stderr)
}

#[test]
fn help_prints_usage_and_exits() {
    let (status, stdout, _) = run(&["--help"]);
    assert!(status.success(), "{status:?}");
    assert!(stdout.contains("Usage: machine-info"), "{stdout}");
    assert!(stdout.contains("SOCKET_PATH"), "{stdout}");
    assert!(!Path::new("--help").exists(), "no socket named --help");
}

#[test]
fn a_missing_socket_path_is_a_usage_error() {
    let (status, _, stderr) = run(&[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("SOCKET_PATH"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_socket_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let mut child = Running(
        Command::new(BIN)
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs"),
    );
    let status = wait_exit(&mut child.0);
    assert_eq!(status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

fn stops_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mi.sock");
    let mut child = Running(
        Command::new(BIN)
            .arg(&socket)
            .arg("alpha")
            .stdout(Stdio::null())
            .spawn()
            .expect("runs"),
    );
    eventually("the socket accepts", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let kill = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.0.id().to_string())
        .status()
        .expect("kill(1)");
    assert!(kill.success());
    let status = wait_exit(&mut child.0);
    assert!(status.success(), "{signal}: {status:?}");
    assert!(!socket.exists(), "{signal}: the socket is left behind");
}

#[test]
fn sigterm_removes_the_socket() {
    stops_on("TERM");
}

#[test]
fn sigint_removes_the_socket() {
    stops_on("INT");
}
