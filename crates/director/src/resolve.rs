//! Which machines the values of `machines` / `machine` metadata name: one
//! flat resolver, a pure function of this machine's address, the registry,
//! the address policy and the remote port, so it is tested without sockets.
//!
//! The rule: with a registry, a value names a registered machine by its ID,
//! its name or an address reaching the same socket ([`Registry::find`]), or
//! this machine by its own address; `*` names every registered machine, and
//! nothing else is reachable. Without a registry, a value is an IPv6 address
//! without a port (machines listen on the remote port; a caller never chooses
//! one), and only an address [`check_dialable`] admits: a *mesh* address
//! (not loopback, link-local, nor one that embeds IPv4: mapped, compatible,
//! NAT64, 6to4, …) unless `allowed_networks` admits it, and with
//! `allowed_networks` set only addresses inside it. A registry passed the
//! same rule when it was applied (the director drops entries it refuses).
//! Either way a machine named twice counts once, in the order of first
//! mention, and a call names at most `max_targets` machines.
//!
//! Error messages name the first few culprits only, each shortened, so a
//! caller cannot make the proxy echo a huge header back.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddrV6;

use ipnet::Ipv6Net;

use crate::addr::{MachineAddr, check_dialable};
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
    /// Without a registry: why values are not machines this proxy may dial.
    NotAllowed(Vec<String>),
    /// `*` with an empty registry.
    EmptyRegistry,
    /// More machines than a call may name.
    TooMany {
        /// How many were named.
        named: usize,
        /// The bound.
        max: usize,
    },
}

/// How many culprits an error names before "and N more".
const CULPRITS: usize = 5;
/// How much of one culprit an error shows.
const CULPRIT_CHARS: usize = 64;

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(values) => {
                let quoted: Vec<String> =
                    values.iter().map(|v| format!("{:?}", short(v))).collect();
                write!(f, "names unknown machines: {}", culprits(&quoted, ", "))
            }
            Self::NotAllowed(errors) => write!(
                f,
                "is refused: {} (machine names, IDs and \"*\" need a machine registry)",
                culprits(errors, "; ")
            ),
            Self::EmptyRegistry => {
                f.write_str("\"*\" matches no machine: the machine registry is empty")
            }
            Self::TooMany { named, max } => write!(
                f,
                "names {named} machines; a call may name at most {max} (max_targets)"
            ),
        }
    }
}

/// The first [`CULPRITS`] items joined by `separator`, then "and N more".
fn culprits(items: &[String], separator: &str) -> String {
    let mut text = items
        .iter()
        .take(CULPRITS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(separator);
    if items.len() > CULPRITS {
        text.push_str(&format!(" and {} more", items.len() - CULPRITS));
    }
    text
}

/// `value` cut to [`CULPRIT_CHARS`] characters.
fn short(value: &str) -> String {
    match value.char_indices().nth(CULPRIT_CHARS) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

/// `"a", "b"`.
pub(crate) fn quoted<S: AsRef<str>>(values: &[S]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| format!("{:?}", short(v.as_ref())))
        .collect();
    culprits(&items, ", ")
}

/// A snapshot of what names mean and which addresses may be dialled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resolver<'a> {
    /// This machine's address, if known.
    pub(crate) local: Option<MachineAddr>,
    /// The registry, if any.
    pub(crate) registry: Option<&'a Registry>,
    /// The port every machine's Switchyard listens on.
    pub(crate) remote_port: u16,
    /// Without a registry: the only networks dialled, when set.
    pub(crate) allowed_networks: Option<&'a [Ipv6Net]>,
    /// Most machines one call may name.
    pub(crate) max_targets: usize,
}

impl Resolver<'_> {
    /// The machines `values` name.
    pub(crate) fn resolve(&self, values: &[&str]) -> Result<Resolved, ResolveError> {
        let too_many = |named| ResolveError::TooMany {
            named,
            max: self.max_targets,
        };
        if values.len() > self.max_targets {
            return Err(too_many(values.len()));
        }
        let mut destinations: Vec<Destination> = Vec::new();
        let mut wildcard = false;
        let mut failed: Vec<String> = Vec::new();
        // A machine is its socket: named twice (by name, ID, address or
        // `*`), it is called once.
        let mut seen: HashSet<Option<SocketAddrV6>> = HashSet::new();
        let mut push = |destination: Destination| {
            let socket = match &destination {
                Destination::Local => None,
                Destination::Remote(socket, _) => Some(*socket),
            };
            if seen.insert(socket) {
                destinations.push(destination);
            }
        };
        for &value in values {
            match self.registry {
                Some(registry) if value == "*" => {
                    // Refused before anything is built for each machine.
                    if registry.machines().len() > self.max_targets {
                        return Err(too_many(registry.machines().len()));
                    }
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
                None => match self.dialable(value) {
                    Ok(destination) => push(destination),
                    Err(err) => failed.push(err),
                },
            }
        }
        match self.registry {
            _ if !failed.is_empty() && self.registry.is_some() => {
                Err(ResolveError::Unknown(failed))
            }
            _ if !failed.is_empty() => Err(ResolveError::NotAllowed(failed)),
            _ if destinations.is_empty() => Err(ResolveError::EmptyRegistry),
            _ if destinations.len() > self.max_targets => Err(too_many(destinations.len())),
            _ => Ok(Resolved {
                destinations,
                wildcard,
            }),
        }
    }

    /// Without a registry: the destination `value` names, if it is one this
    /// proxy may dial.
    fn dialable(&self, value: &str) -> Result<Destination, String> {
        let shown = short(value);
        let addr = value
            .parse::<MachineAddr>()
            .map_err(|e| format!("{:?} is not a machine address: {}", shown, e.reason))?;
        if self.is_local(value) {
            return Ok(Destination::Local);
        }
        if addr.port.is_some() {
            return Err(format!(
                "{shown:?} has a port: machines are reached on the remote port, name them by address only"
            ));
        }
        check_dialable(addr.ip, self.allowed_networks)
            .map_err(|why| format!("{shown:?} may not be dialled: {why}"))?;
        Ok(self.address(addr.socket_addr(self.remote_port)))
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
    /// is not a remote machine any more (it is this one, not registered, or
    /// no longer allowed).
    pub(crate) fn remote_info(&self, socket: SocketAddrV6) -> Option<MachineInfo> {
        match self.address(socket) {
            Destination::Local => None,
            Destination::Remote(..) if self.registry.is_some() => {
                self.registered(socket).map(|m| self.info(m))
            }
            Destination::Remote(_, info) => self
                .dialable(&info.addr)
                .ok()
                .filter(|d| *d != Destination::Local)
                .map(|_| info),
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
        self.registry?.at(socket, self.remote_port)
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
mod tests;
