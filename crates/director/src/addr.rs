//! Machine addresses: an IPv6 address, optionally with the port the machine's
//! Switchyard listens on.
//!
//! Machines of a cluster are reached over an IPv6 mesh, so an address is IPv6
//! only (the Go reference's `NewRemoteBackend` rejects anything else). A port
//! is only written when a machine does not listen on the cluster's default
//! remote port — e.g. several machines sharing `::1` in a demo.
//!
//! [`check_dialable`] is the one rule for which addresses Switchyard may dial,
//! whoever wrote them: a caller (`machines` metadata without a registry) or
//! anyone who can edit the registry (the file, or etcd). Only *mesh*
//! addresses pass by default; the others reach this host, its link, or IPv4
//! space through a translator (a registry entry `::ffff:127.0.0.1` would be
//! dialled over IPv4 loopback), so they need `allowed_networks` to admit them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

use ipnet::Ipv6Net;

/// An IPv6 machine address with an optional port: `fd00::1`, `[fd00::1]` or
/// `[fd00::1]:51001`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct MachineAddr {
    /// The machine's IPv6 address.
    pub ip: Ipv6Addr,
    /// The port its Switchyard listens on, when not the default remote port.
    pub port: Option<u16>,
}

/// Why a string is not a [`MachineAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a machine address: {reason}")]
pub struct AddrError {
    /// The rejected value, as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why an address may not be dialled ([`check_dialable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotDialable {
    /// `allowed_networks` is set and does not contain it.
    #[error("it is outside allowed_networks")]
    OutsideAllowedNetworks,
    /// Without `allowed_networks`: not a mesh address; the kind it is.
    #[error("it is a {0} address, not a mesh address (allowed_networks can admit it)")]
    NotMesh(&'static str),
}

/// Whether Switchyard may dial `ip`: with `allowed_networks`, only inside
/// them (they decide alone); without, any address that is not of a
/// [`non_mesh_kind`].
pub fn check_dialable(
    ip: Ipv6Addr,
    allowed_networks: Option<&[Ipv6Net]>,
) -> Result<(), NotDialable> {
    match allowed_networks {
        Some(networks) if networks.iter().any(|n| n.contains(&ip)) => Ok(()),
        Some(_) => Err(NotDialable::OutsideAllowedNetworks),
        None => match non_mesh_kind(ip) {
            Some(kind) => Err(NotDialable::NotMesh(kind)),
            None => Ok(()),
        },
    }
}

/// The kind of `ip` when it is not a mesh address: it reaches this host
/// (loopback, unspecified), its link (link-local, multicast), or IPv4 space
/// (addresses that embed an IPv4 address and are dialled over IPv4 or through
/// a translator or relay).
pub fn non_mesh_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_unicast_link_local() {
        Some("link-local")
    } else if ip.to_ipv4_mapped().is_some() {
        Some("IPv4-mapped") // ::ffff:0:0/96
    } else if s[..6] == [0; 6] {
        Some("IPv4-compatible") // ::/96
    } else if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        Some("IPv4-translated") // ::ffff:0:0:0/96 (SIIT)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some("NAT64") // 64:ff9b::/96
    } else if s[..3] == [0x64, 0xff9b, 1] {
        Some("local-use NAT64") // 64:ff9b:1::/48
    } else if s[0] == 0x2002 {
        Some("6to4") // 2002::/16
    } else if s[..2] == [0x2001, 0] {
        Some("Teredo") // 2001::/32
    } else {
        None
    }
}

impl MachineAddr {
    /// An address without an explicit port.
    pub fn new(ip: Ipv6Addr) -> Self {
        Self { ip, port: None }
    }

    /// The socket address to dial, using `default_port` when none is given.
    pub fn socket_addr(&self, default_port: u16) -> SocketAddrV6 {
        SocketAddrV6::new(self.ip, self.port.unwrap_or(default_port), 0, 0)
    }

    /// The canonical text for the machine at `socket`: the bare address when it
    /// listens on `default_port`, `[ip]:port` otherwise.
    pub fn label(socket: SocketAddrV6, default_port: u16) -> String {
        if socket.port() == default_port {
            socket.ip().to_string()
        } else {
            socket.to_string()
        }
    }
}

impl fmt::Display for MachineAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            None => write!(f, "{}", self.ip),
            Some(port) => write!(f, "[{}]:{port}", self.ip),
        }
    }
}

impl FromStr for MachineAddr {
    type Err = AddrError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let fail = |reason| AddrError {
            value: value.to_owned(),
            reason,
        };
        if value.is_empty() {
            return Err(fail("it is empty"));
        }
        let usable = |ip: Ipv6Addr| {
            if ip.is_unspecified() {
                Err(fail("the unspecified address names no machine"))
            } else if ip.is_multicast() {
                Err(fail("a multicast address names no machine"))
            } else {
                Ok(ip)
            }
        };
        let Some(rest) = value.strip_prefix('[') else {
            return match value.parse::<Ipv6Addr>() {
                Ok(ip) => Ok(Self::new(usable(ip)?)),
                Err(_)
                    if value.parse::<Ipv4Addr>().is_ok()
                        || value.parse::<SocketAddrV4>().is_ok() =>
                {
                    Err(fail("machines are addressed by IPv6, not IPv4"))
                }
                Err(_) => Err(fail(
                    "expected an IPv6 address such as fd00::1 or [fd00::1]:51000",
                )),
            };
        };
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| fail("missing the closing `]`"))?;
        let ip = host
            .parse::<Ipv6Addr>()
            .map_err(|_| fail("the part in brackets is not an IPv6 address"))
            .and_then(usable)?;
        let port = match after {
            "" => None,
            _ => {
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| fail("expected `:port` after `]`"))?
                    .parse::<u16>()
                    .map_err(|_| fail("the port is not a number in 1..=65535"))?;
                if port == 0 {
                    return Err(fail("the port is not a number in 1..=65535"));
                }
                Some(port)
            }
        };
        Ok(Self { ip, port })
    }
}

impl From<MachineAddr> for String {
    fn from(addr: MachineAddr) -> String {
        addr.to_string()
    }
}

impl TryFrom<String> for MachineAddr {
    type Error = AddrError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MachineAddr, AddrError> {
        s.parse()
    }

    #[test]
    fn accepts_ipv6_with_and_without_port() {
        let ip: Ipv6Addr = "fd00::1".parse().unwrap();
        assert_eq!(parse("fd00::1").unwrap(), MachineAddr::new(ip));
        assert_eq!(parse("[fd00::1]").unwrap(), MachineAddr::new(ip));
        assert_eq!(parse("FD00:0::1").unwrap(), MachineAddr::new(ip));
        let with_port = parse("[fd00::1]:51001").unwrap();
        assert_eq!(with_port.port, Some(51001));
        assert_eq!(with_port.to_string(), "[fd00::1]:51001");
        assert_eq!(parse("FD00::0:1").unwrap().to_string(), "fd00::1");
    }

    #[test]
    fn rejects_everything_else_naming_the_value() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:51000",
            "example.com",
            "[fd00::1",
            "[fd00::1]51000",
            "[fd00::1]:",
            "[fd00::1]:0",
            "[fd00::1]:70000",
            "[example.com]:1",
            " fd00::1",
            "fe80::1%eth0",
            "::",
            "[::]:51000",
            "ff02::1",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.value, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(parse("10.0.0.1").unwrap_err().to_string().contains("IPv4"));
    }

    #[test]
    fn only_mesh_addresses_are_dialable_by_default() {
        let ip = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        for (addr, kind) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("ff02::1", "multicast"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("::ffff:127.0.0.1", "IPv4-mapped"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("::ffff:0:127.0.0.1", "IPv4-translated"),
            ("64:ff9b::127.0.0.1", "NAT64"),
            ("64:ff9b::a00:1", "NAT64"),
            ("64:ff9b:1::7f00:1", "local-use NAT64"),
            ("64:ff9b:1:ffff::1", "local-use NAT64"),
            ("2002:7f00:1::1", "6to4"),
            ("2002::", "6to4"),
            ("2001:0:4136:e378::1", "Teredo"),
        ] {
            assert_eq!(non_mesh_kind(ip(addr)), Some(kind), "{addr}");
            let err = check_dialable(ip(addr), None).unwrap_err();
            assert_eq!(err, NotDialable::NotMesh(kind));
            assert!(err.to_string().contains("allowed_networks can admit it"));
        }
        for mesh in [
            "fd00::1",
            "2001:db8::1",
            "2001:1::1",
            "2003::1",
            "64:ff9b:2::1",
            "64:ff9a::7f00:1",
            "fec0::1",
            "::1:0:0:1",
        ] {
            assert_eq!(non_mesh_kind(ip(mesh)), None, "{mesh}");
            assert_eq!(check_dialable(ip(mesh), None), Ok(()), "{mesh}");
        }
    }

    #[test]
    fn allowed_networks_decide_alone() {
        let ip = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let networks: Vec<Ipv6Net> = vec!["::1/128".parse().unwrap(), "fd00::/64".parse().unwrap()];
        let allowed = Some(networks.as_slice());
        assert_eq!(check_dialable(ip("::1"), allowed), Ok(()));
        assert_eq!(check_dialable(ip("fd00::9"), allowed), Ok(()));
        for outside in [
            "fd01::1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
        ] {
            assert_eq!(
                check_dialable(ip(outside), allowed),
                Err(NotDialable::OutsideAllowedNetworks),
                "{outside}"
            );
        }
        let nat64: Vec<Ipv6Net> = vec!["64:ff9b::/96".parse().unwrap()];
        assert_eq!(check_dialable(ip("64:ff9b::a00:1"), Some(&nat64)), Ok(()));
    }

    #[test]
    fn socket_addr_and_label_use_the_default_port() {
        let a = parse("fd00::1").unwrap();
        assert_eq!(a.socket_addr(51000).to_string(), "[fd00::1]:51000");
        let b = parse("[fd00::1]:51001").unwrap();
        assert_eq!(b.socket_addr(51000).port(), 51001);
        assert_eq!(MachineAddr::label(a.socket_addr(51000), 51000), "fd00::1");
        assert_eq!(
            MachineAddr::label(b.socket_addr(51000), 51000),
            "[fd00::1]:51001"
        );
    }
}
