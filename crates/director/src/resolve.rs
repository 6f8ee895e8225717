//! Which machines the values of `machines` / `machine` metadata name: one
//! flat resolver, a pure function of this machine's address, the registry
//! and the remote port, so it is tested without sockets.
//!
//! The rule: with a registry, a value names a registered machine by its ID,
//! its name or an address reaching the same socket ([`Registry::find`]), or
//! this machine by its own address; `*` names every registered machine.
//! Without a registry, a value is an address. Either way a machine named
//! twice counts once, in the order of first mention.

use std::fmt;
use std::net::SocketAddrV6;

use crate::addr::MachineAddr;
use crate::registry::{Machine, Registry};
use crate::tag::MachineInfo;

/// Where one resolved machine is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    /// This machine: its own gRPC server.
    Local,
    /// Another machine's Switchyard, and what its replies are tagged with.
    Remote(SocketAddrV6, MachineInfo),
}

/// The machines a list of values names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Each machine once, in order of first mention.
    pub(crate) destinations: Vec<Destination>,
    /// Whether `*` was among the values.
    pub(crate) wildcard: bool,
}

/// Why values name no machines. Displayed after `"machines" metadata `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResolveError {
    /// With a registry: values it does not know (each once, in order).
    Unknown(Vec<String>),
    /// Without a registry: values that are not machine addresses.
    NotAddresses(Vec<String>),
    /// `*` with an empty registry.
    EmptyRegistry,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(values) => write!(f, "names unknown machines: {}", quoted(values)),
            Self::NotAddresses(errors) => write!(
                f,
                ": {} (machine names, IDs and \"*\" need a machine registry)",
                errors.join("; ")
            ),
            Self::EmptyRegistry => {
                f.write_str("\"*\" matches no machine: the machine registry is empty")
            }
        }
    }
}

/// `"a", "b"`.
pub(crate) fn quoted<S: AsRef<str>>(values: &[S]) -> String {
    values
        .iter()
        .map(|v| format!("{:?}", v.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A snapshot of what names mean.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolver<'a> {
    /// This machine's address, if known.
    pub(crate) local: Option<MachineAddr>,
    /// The registry, if any.
    pub(crate) registry: Option<&'a Registry>,
    /// The port of machines whose address has none.
    pub(crate) remote_port: u16,
}

impl Resolver<'_> {
    /// The machines `values` name.
    pub(crate) fn resolve(&self, values: &[&str]) -> Result<Resolved, ResolveError> {
        let mut destinations: Vec<Destination> = Vec::new();
        let mut wildcard = false;
        let mut failed: Vec<String> = Vec::new();
        let mut push = |destination: Destination| {
            if !destinations.contains(&destination) {
                destinations.push(destination);
            }
        };
        for &value in values {
            match self.registry {
                Some(registry) if value == "*" => {
                    wildcard = true;
                    registry
                        .machines()
                        .iter()
                        .for_each(|m| push(self.machine(m)));
                }
                Some(registry) => match registry.find(value, self.remote_port) {
                    Some(machine) => push(self.machine(machine)),
                    None if self.is_local(value) => push(Destination::Local),
                    None if failed.iter().any(|f| f == value) => {}
                    None => failed.push(value.to_owned()),
                },
                None => match value.parse::<MachineAddr>() {
                    Ok(addr) => push(self.address(addr.socket_addr(self.remote_port))),
                    Err(err) => failed.push(err.to_string()),
                },
            }
        }
        match self.registry {
            _ if failed.is_empty() && destinations.is_empty() => Err(ResolveError::EmptyRegistry),
            _ if failed.is_empty() => Ok(Resolved {
                destinations,
                wildcard,
            }),
            Some(_) => Err(ResolveError::Unknown(failed)),
            None => Err(ResolveError::NotAddresses(failed)),
        }
    }

    /// What this machine's replies are tagged with.
    pub(crate) fn local_info(&self) -> MachineInfo {
        let Some(addr) = self.local else {
            return MachineInfo::default();
        };
        let socket = addr.socket_addr(self.remote_port);
        match self.registered(socket) {
            Some(machine) => self.info(machine),
            None => MachineInfo::from_addr(self.label(socket)),
        }
    }

    /// What the machine at `socket` is tagged with, or `None` when `socket`
    /// is not a remote machine (it is this one, or not registered).
    pub(crate) fn remote_info(&self, socket: SocketAddrV6) -> Option<MachineInfo> {
        match self.address(socket) {
            Destination::Remote(_, info) if self.registry.is_none() => Some(info),
            Destination::Remote(..) => self.registered(socket).map(|m| self.info(m)),
            Destination::Local => None,
        }
    }

    fn machine(&self, machine: &Machine) -> Destination {
        match self.address(machine.addr.socket_addr(self.remote_port)) {
            Destination::Remote(socket, _) => Destination::Remote(socket, self.info(machine)),
            local => local,
        }
    }

    /// The destination at `socket`, tagged with its address only.
    fn address(&self, socket: SocketAddrV6) -> Destination {
        if self.local.map(|a| a.socket_addr(self.remote_port)) == Some(socket) {
            Destination::Local
        } else {
            Destination::Remote(socket, MachineInfo::from_addr(self.label(socket)))
        }
    }

    fn is_local(&self, value: &str) -> bool {
        value
            .parse::<MachineAddr>()
            .is_ok_and(|a| self.address(a.socket_addr(self.remote_port)) == Destination::Local)
    }

    fn registered(&self, socket: SocketAddrV6) -> Option<&Machine> {
        self.registry?
            .machines()
            .iter()
            .find(|m| m.addr.socket_addr(self.remote_port) == socket)
    }

    fn info(&self, machine: &Machine) -> MachineInfo {
        MachineInfo {
            addr: self.label(machine.addr.socket_addr(self.remote_port)),
            id: machine.id.clone(),
            name: machine.name.clone(),
        }
    }

    fn label(&self, socket: SocketAddrV6) -> String {
        MachineAddr::label(socket, self.remote_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let machine = |id: &str, name: &str, addr: &str| Machine {
            id: id.into(),
            name: name.into(),
            addr: addr.parse().unwrap(),
        };
        Registry::new(vec![
            machine("m-1", "alpha", "fd00::1"),
            machine("m-2", "beta", "[fd00::2]:51001"),
            machine("m-3", "gamma", "fd00::3"),
        ])
        .unwrap()
    }

    fn socket(s: &str) -> SocketAddrV6 {
        s.parse().unwrap()
    }

    fn remote(s: &str, info: MachineInfo) -> Destination {
        Destination::Remote(socket(s), info)
    }

    fn named(addr: &str, id: &str, name: &str) -> MachineInfo {
        MachineInfo {
            addr: addr.into(),
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn registry_values_are_ids_names_sockets_and_star() {
        let registry = registry();
        let r = Resolver {
            local: Some("fd00::1".parse().unwrap()),
            registry: Some(&registry),
            remote_port: 51000,
        };
        let got = r
            .resolve(&["gamma", "m-2", "[fd00::3]:51000", "fd00::1", "*"])
            .unwrap();
        assert_eq!(
            got.destinations,
            [
                remote("[fd00::3]:51000", named("fd00::3", "m-3", "gamma")),
                remote("[fd00::2]:51001", named("[fd00::2]:51001", "m-2", "beta")),
                Destination::Local,
            ]
        );
        assert!(got.wildcard);
        assert_eq!(
            r.resolve(&["delta", "fd00::2", "delta", "10.0.0.1"]),
            Err(ResolveError::Unknown(vec![
                "delta".into(),
                "fd00::2".into(),
                "10.0.0.1".into()
            ]))
        );
        assert_eq!(r.local_info(), named("fd00::1", "m-1", "alpha"));
        assert_eq!(r.remote_info(socket("[fd00::1]:51000")), None);
        assert_eq!(r.remote_info(socket("[fd00::9]:51000")), None);
    }

    #[test]
    fn this_machine_is_reachable_even_unregistered() {
        let registry = registry();
        let r = Resolver {
            local: Some("fd00::42".parse().unwrap()),
            registry: Some(&registry),
            remote_port: 51000,
        };
        let got = r.resolve(&["[fd00::42]", "beta"]).unwrap();
        assert_eq!(got.destinations[0], Destination::Local);
        assert_eq!(r.local_info(), MachineInfo::from_addr("fd00::42"));
    }

    #[test]
    fn without_registry_values_are_addresses() {
        let r = Resolver {
            local: Some("fd00::1".parse().unwrap()),
            registry: None,
            remote_port: 51000,
        };
        let got = r
            .resolve(&["fd00::3", "[fd00::1]:51000", "FD00::3"])
            .unwrap();
        assert_eq!(
            got.destinations,
            [
                remote("[fd00::3]:51000", MachineInfo::from_addr("fd00::3")),
                Destination::Local
            ]
        );
        assert!(!got.wildcard);
        let err = r.resolve(&["alpha", "fd00::2", "*"]).unwrap_err();
        assert!(
            matches!(&err, ResolveError::NotAddresses(e) if e.len() == 2),
            "{err:?}"
        );
        assert!(err.to_string().contains("need a machine registry"), "{err}");
    }

    #[test]
    fn star_with_an_empty_registry_names_nothing() {
        let empty = Registry::new(Vec::new()).unwrap();
        let r = Resolver {
            local: None,
            registry: Some(&empty),
            remote_port: 51000,
        };
        assert_eq!(r.resolve(&["*"]), Err(ResolveError::EmptyRegistry));
    }
}
