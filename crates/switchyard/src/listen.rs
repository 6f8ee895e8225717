//! Binding listener addresses, including the care a Unix socket file needs:
//! a stale file left by a crash is replaced, a live one or a non-socket file
//! is never clobbered.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use switchyard_engine::Address;
use switchyard_engine::server::Listener;

/// Binds `addr` (within a Tokio runtime); a Unix socket file gets `mode`
/// permissions and, when given, belongs to `group`.
pub fn bind(addr: &Address, mode: u32, group: Option<u32>) -> anyhow::Result<Listener> {
    match addr {
        Address::Tcp(addr) => {
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| {
                    l.set_nonblocking(true)?;
                    tokio::net::TcpListener::from_std(l)
                })
                .with_context(|| format!("cannot listen on {addr}"))?;
            Ok(listener.into())
        }
        Address::Unix(path) => {
            remove_stale_socket(path)?;
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on unix:{}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))?;
            if let Some(gid) = group {
                std::os::unix::fs::chown(path, None, Some(gid))
                    .with_context(|| format!("cannot give {} to group {gid}", path.display()))?;
            }
            Ok(listener.into())
        }
    }
}

/// The ID of group `group`: a number, or a name from the system's groups.
pub fn group_id(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        Ok(None) => bail!("socket_group: no group named {group:?}"),
        Err(err) => bail!("socket_group: cannot look up {group:?}: {err}"),
    }
}

/// Removes `path` if it is a socket nobody listens on any more.
fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "refusing to replace {}: it exists and is not a socket",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "another server is already listening on unix:{}",
            path.display()
        ),
        Err(_) => {
            tracing::info!(path = %path.display(), "replacing stale socket file");
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_sockets_are_replaced_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let addr = Address::Unix(path.clone());

        // A live listener is not clobbered.
        let live = bind(&addr, 0o660, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = bind(&addr, 0o660, None).unwrap_err().to_string();
        assert!(err.contains("already listening"), "{err}");

        // Once it is gone, the stale file is replaced.
        drop(live);
        bind(&addr, 0o600, Some(0)).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&path).unwrap()),
            0
        );

        // A regular file is never removed.
        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, b"data").unwrap();
        let err = bind(&Address::Unix(file.clone()), 0o660, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"data");
    }
}
