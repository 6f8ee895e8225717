//! Where a load run connects: `unix:/path`, `[ipv6]:port` or `ipv4:port`.
//!
//! Only explicit addresses are accepted (no host names), so a benchmark never
//! resolves or reaches anything it was not told to.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use http::uri::Authority;

/// A gRPC server to drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl Target {
    /// `:authority` of requests to this target.
    pub fn authority(&self) -> Authority {
        match self {
            Self::Unix(_) => Authority::from_static("localhost"),
            Self::Tcp(addr) => addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(format!("{s:?} has no socket path after unix:"));
            }
            return Ok(Self::Unix(path.into()));
        }
        s.parse()
            .map(Self::Tcp)
            .map_err(|_| format!("{s:?} is not unix:/path, [ipv6]:port or ipv4:port"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "unix:/tmp/a.sock".parse(),
            Ok(Target::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(
            "[::1]:51000".parse(),
            Ok(Target::Tcp("[::1]:51000".parse().unwrap()))
        );
        assert_eq!(
            "127.0.0.1:80".parse(),
            Ok(Target::Tcp("127.0.0.1:80".parse().unwrap()))
        );
        for bad in ["unix:", "localhost:80", "[::1]", ""] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        assert_eq!(
            "[::1]:7".parse::<Target>().unwrap().authority().as_str(),
            "[::1]:7"
        );
    }
}
