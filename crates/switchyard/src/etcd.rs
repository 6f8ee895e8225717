//! A single-member etcd on `127.0.0.1`, with its own data directory, for
//! `switchyard demo --etcd` and the tests of the live registry.
//!
//! It runs the `etcd` binary (Debian's `etcd-server`) as a child process on
//! free loopback ports and can crash it and start it again on the same
//! ports and data, which is what a registry must survive. The process is
//! killed when the value is dropped.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions};
use tokio::time::Instant;

/// Where Debian installs the server.
const DEFAULT_BINARY: &str = "/usr/bin/etcd";

/// How long etcd may take to elect itself and answer (a loaded machine).
const READY_BOUND: Duration = Duration::from_secs(30);

/// The `etcd` binary to run: `$SWITCHYARD_ETCD`, else `/usr/bin/etcd` or
/// the first `etcd` on `PATH`; `None` when there is none.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHYARD_ETCD") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"));
    std::iter::once(PathBuf::from(DEFAULT_BINARY))
        .chain(on_path)
        .find(|p| p.is_file())
}

/// A running etcd; killed on drop.
#[derive(Debug)]
pub struct LocalEtcd {
    binary: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    starts: u32,
}

impl LocalEtcd {
    /// Starts etcd (found by [`binary`]) with a fresh data directory in
    /// `parent` and waits until it answers.
    pub async fn start(parent: &Path) -> anyhow::Result<Self> {
        let binary = binary().context("etcd is not installed (apt-get install etcd-server)")?;
        let dir = tempfile::Builder::new()
            .prefix("etcd-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        let mut etcd = Self {
            binary,
            child: None,
            dir,
            client_port: 0,
            peer_port: 0,
            starts: 0,
        };
        // A free port found here may be taken by someone else before etcd
        // binds it: then etcd exits, and new ports are tried.
        let mut last = None;
        for _ in 0..3 {
            etcd.client_port = free_port()?;
            etcd.peer_port = free_port()?;
            match etcd.launch().await {
                Ok(()) => return Ok(etcd),
                Err(err) => {
                    etcd.kill();
                    let _ = std::fs::remove_dir_all(etcd.data_dir());
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    /// The client URL: `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address, `127.0.0.1:<port>`.
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Its data and log directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills etcd at once (like a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same data and ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch().await
    }

    /// A client for the caller's own reads and writes.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(10));
        Ok(Client::connect([self.endpoint()], Some(options)).await?)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log_path = self.dir.path().join(format!("etcd-{}.log", self.starts));
        let log = File::create(&log_path).context("etcd log file")?;
        let child = Command::new(&self.binary)
            .args(["--name", "switchyard"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("switchyard={peer}")])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < READY_BOUND {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("etcd exited ({status}); see {}", log_path.display());
            }
            if self.answers().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "etcd did not answer within {READY_BOUND:?}; see {}",
            log_path.display()
        )
    }

    /// Whether etcd serves a read now.
    async fn answers(&self) -> bool {
        let read = async {
            let mut client = self.client().await.ok()?;
            client.get("/", None).await.ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), read).await,
            Ok(Some(_))
        )
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot bind a loopback port")?
        .port())
}
