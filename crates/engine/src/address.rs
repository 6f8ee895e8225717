//! Where the engine listens and dials: a Unix socket path or an IP socket
//! address. Host names are never accepted, so nothing is ever resolved.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use http::uri::Authority;

/// A TCP socket address or a Unix socket path: `[ipv6]:port`, `ipv4:port` or
/// `unix:/path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// Why a string is not an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not unix:/path, [ipv6]:port or ipv4:port")]
pub struct AddressError(pub String);

impl Address {
    /// `:authority` for requests sent to this address: the socket address,
    /// or `localhost` for a Unix socket (a path is not a valid authority).
    pub fn authority(&self) -> Authority {
        match self {
            Self::Tcp(addr) => addr
                .to_string()
                .parse()
                .expect("a socket address is a valid authority"),
            Self::Unix(_) => Authority::from_static("localhost"),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        let err = || AddressError(s.to_owned());
        match s.strip_prefix("unix:") {
            Some("") => Err(err()),
            Some(path) => Ok(Self::Unix(path.into())),
            None => s.parse().map(Self::Tcp).map_err(|_| err()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_every_form() {
        for (text, address) in [
            ("unix:/run/s.sock", Address::Unix("/run/s.sock".into())),
            ("[::1]:51000", Address::Tcp("[::1]:51000".parse().unwrap())),
            (
                "127.0.0.1:80",
                Address::Tcp("127.0.0.1:80".parse().unwrap()),
            ),
        ] {
            assert_eq!(text.parse::<Address>(), Ok(address.clone()));
            assert_eq!(address.to_string(), text);
        }
        for bad in ["unix:", "localhost:80", "::1:80", "[::1]", "51000", ""] {
            let err = bad.parse::<Address>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn unix_sockets_get_a_valid_authority() {
        assert_eq!(Address::Unix("/run/x.sock".into()).authority(), "localhost");
        let tcp: Address = "[fd00::1]:51000".parse().unwrap();
        assert_eq!(tcp.authority(), "[fd00::1]:51000");
    }
}
