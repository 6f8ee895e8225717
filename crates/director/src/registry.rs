//! An optional list of the cluster's machines.
//!
//! Without it, clients name machines by IPv6 address. With it they may use
//! names, IDs or `*` (every machine), replies carry `machine_id` and
//! `machine_name` too, and only listed machines can be reached — the list
//! doubles as an allowlist. IDs and names share one namespace so that a value
//! always means exactly one machine.

use std::collections::HashMap;
use std::net::SocketAddrV6;

use crate::addr::MachineAddr;

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Stable identifier, e.g. the machine's ID in the cluster store.
    pub id: String,
    /// Human-friendly name.
    pub name: String,
    /// Where its Switchyard listens: `fd00::1`, or `[fd00::1]:51001` on a
    /// non-default port.
    pub addr: MachineAddr,
}

/// Why a list of machines is not a valid registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// An ID or name that could not be told apart from other values.
    #[error("machine {index} ({value:?}): invalid {what}: {reason}")]
    InvalidIdentifier {
        /// 1-based position in the registry.
        index: usize,
        /// `id` or `name`.
        what: &'static str,
        /// The value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two machines with the same ID, name or address, or one's ID equal to
    /// another's name.
    #[error("machines {first} and {second} both use {value:?} (as {what})")]
    Duplicate {
        /// 1-based position of the first machine.
        first: usize,
        /// 1-based position of the second machine.
        second: usize,
        /// `id`, `name`, `id and name` or `address`.
        what: &'static str,
        /// The shared value.
        value: String,
    },
}

/// A validated list of machines: IDs, names and addresses are unique and
/// every ID and name names exactly one machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "Vec<Machine>", into = "Vec<Machine>")]
pub struct Registry {
    machines: Vec<Machine>,
    /// ID or name → index into `machines`.
    by_identifier: HashMap<String, usize>,
    /// Address as registered → index into `machines`.
    by_addr: HashMap<MachineAddr, usize>,
}

impl TryFrom<Vec<Machine>> for Registry {
    type Error = RegistryError;

    fn try_from(machines: Vec<Machine>) -> Result<Self, Self::Error> {
        Self::new(machines)
    }
}

impl From<Registry> for Vec<Machine> {
    fn from(registry: Registry) -> Self {
        registry.machines
    }
}

impl Registry {
    /// Validates `machines`.
    pub fn new(machines: Vec<Machine>) -> Result<Self, RegistryError> {
        let mut by_identifier: HashMap<String, usize> = HashMap::new();
        let mut by_addr: HashMap<MachineAddr, usize> = HashMap::new();
        for (i, machine) in machines.iter().enumerate() {
            check_identifier(i + 1, "id", &machine.id)?;
            check_identifier(i + 1, "name", &machine.name)?;
            for (what, value) in [("id", &machine.id), ("name", &machine.name)] {
                match by_identifier.get(value) {
                    Some(&j) if j == i => {} // a machine whose name is its ID
                    Some(&j) => {
                        let other_what = if &machines[j].id == value {
                            "id"
                        } else {
                            "name"
                        };
                        return Err(RegistryError::Duplicate {
                            first: j + 1,
                            second: i + 1,
                            what: if other_what == what {
                                what
                            } else {
                                "id and name"
                            },
                            value: value.clone(),
                        });
                    }
                    None => {
                        by_identifier.insert(value.clone(), i);
                    }
                }
            }
            if let Some(&j) = by_addr.get(&machine.addr) {
                return Err(RegistryError::Duplicate {
                    first: j + 1,
                    second: i + 1,
                    what: "address",
                    value: machine.addr.to_string(),
                });
            }
            by_addr.insert(machine.addr, i);
        }
        Ok(Self {
            machines,
            by_identifier,
            by_addr,
        })
    }

    /// The machines `keep` keeps, in registry order (a part of a valid
    /// registry is valid).
    pub fn subset(&self, mut keep: impl FnMut(&Machine) -> bool) -> Self {
        let machines: Vec<Machine> = self.machines.iter().filter(|m| keep(m)).cloned().collect();
        let mut by_identifier = HashMap::with_capacity(machines.len() * 2);
        let mut by_addr = HashMap::with_capacity(machines.len());
        for (i, m) in machines.iter().enumerate() {
            by_identifier.insert(m.id.clone(), i);
            by_identifier.insert(m.name.clone(), i);
            by_addr.insert(m.addr, i);
        }
        Self {
            machines,
            by_identifier,
            by_addr,
        }
    }

    /// The machines, in registry order.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// The machine `value` names, the one rule every lookup follows: its ID,
    /// its name, or an address that reaches the same socket as the machine's
    /// (a machine registered as `fd00::3` is also `[fd00::3]` and
    /// `[fd00::3]:<remote_port>`, but not `[fd00::3]:<another port>`).
    pub fn find(&self, value: &str, remote_port: u16) -> Option<&Machine> {
        if let Some(&i) = self.by_identifier.get(value) {
            return Some(&self.machines[i]);
        }
        let socket = value.parse::<MachineAddr>().ok()?.socket_addr(remote_port);
        self.at(socket, remote_port)
    }

    /// The machine reached at `socket`: registered with that port, or
    /// without one when `socket`'s port is `remote_port`.
    pub fn at(&self, socket: SocketAddrV6, remote_port: u16) -> Option<&Machine> {
        let ip = *socket.ip();
        let exact = MachineAddr {
            ip,
            port: Some(socket.port()),
        };
        let default = MachineAddr { ip, port: None };
        self.by_addr
            .get(&exact)
            .or_else(|| (socket.port() == remote_port).then(|| self.by_addr.get(&default))?)
            .map(|&i| &self.machines[i])
    }
}

fn check_identifier(index: usize, what: &'static str, value: &str) -> Result<(), RegistryError> {
    match identifier_problem(value) {
        Some(reason) => Err(RegistryError::InvalidIdentifier {
            index,
            what,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// What keeps `value` from being a machine ID or name: a value in
/// `machines` metadata must mean exactly one thing.
pub(crate) fn identifier_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some("it is empty")
    } else if value.trim() != value {
        Some("it has leading or trailing whitespace")
    } else if value.contains(',') {
        Some("it contains `,`, which separates values in `machines` metadata")
    } else if value == "*" {
        Some("`*` means every machine")
    } else if value.parse::<MachineAddr>().is_ok() {
        Some("it looks like a machine address")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(id: &str, name: &str, addr: &str) -> Machine {
        Machine {
            id: id.into(),
            name: name.into(),
            addr: addr.parse().unwrap(),
        }
    }

    fn sample() -> Registry {
        Registry::new(vec![
            machine("m-1", "alpha", "fd00::1"),
            machine("m-2", "beta", "[fd00::2]:51001"),
            machine("m-3", "gamma", "fd00::3"),
        ])
        .unwrap()
    }

    fn found(r: &Registry, value: &str) -> Option<String> {
        r.find(value, 51000).map(|m| m.name.clone())
    }

    #[test]
    fn deserializes_from_a_list() {
        #[derive(Debug, serde::Deserialize)]
        struct File {
            machines: Registry,
        }
        let file: File = toml::from_str(
            "[[machines]]\nid = \"m-1\"\nname = \"alpha\"\naddr = \"[fd00::2]:51001\"\n",
        )
        .unwrap();
        assert_eq!(file.machines.machines()[0].addr.port, Some(51001));
        let err =
            toml::from_str::<File>("[[machines]]\nid = \"a\"\nname = \"b\"\naddr = \"10.0.0.1\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("\"10.0.0.1\""), "{err}");
        let err = toml::from_str::<File>(
            "[[machines]]\nid = \"a\"\nname = \"b\"\naddress = \"fd00::1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("address"), "{err}");
    }

    #[test]
    fn a_value_names_a_machine_by_id_name_or_socket() {
        let r = sample();
        assert_eq!(found(&r, "alpha").as_deref(), Some("alpha"));
        assert_eq!(found(&r, "m-3").as_deref(), Some("gamma"));
        // Addresses match the socket the machine is reached at: the default
        // port may be written or not, any other port is another socket.
        for value in ["fd00::3", "FD00:0::3", "[fd00::3]", "[fd00::3]:51000"] {
            assert_eq!(found(&r, value).as_deref(), Some("gamma"), "{value}");
        }
        assert_eq!(found(&r, "[fd00::3]:51001"), None);
        assert_eq!(found(&r, "[fd00::2]:51001").as_deref(), Some("beta"));
        assert_eq!(found(&r, "fd00::2"), None);
        assert_eq!(r.find("fd00::2", 51001).map(|m| m.id.as_str()), Some("m-2"));
        for unknown in ["delta", "fd00::9", "*", "", "ALPHA"] {
            assert_eq!(found(&r, unknown), None, "{unknown}");
        }
    }

    #[test]
    fn duplicates_are_rejected_naming_both_machines() {
        let cases = [
            (
                machine("a", "x", "fd00::1"),
                machine("a", "y", "fd00::2"),
                "as id",
            ),
            (
                machine("a", "x", "fd00::1"),
                machine("b", "x", "fd00::2"),
                "as name",
            ),
            (
                machine("a", "x", "fd00::1"),
                machine("b", "a", "fd00::2"),
                "as id and name",
            ),
            (
                machine("a", "x", "fd00::1"),
                machine("b", "y", "[fd00::1]"),
                "as address",
            ),
        ];
        for (first, second, what) in cases {
            let err = Registry::new(vec![first, second]).unwrap_err().to_string();
            assert!(err.contains("machines 1 and 2"), "{err}");
            assert!(err.contains(what), "{err}");
        }
        // A machine may use its ID as its name.
        assert!(Registry::new(vec![machine("a", "a", "fd00::1")]).is_ok());
    }

    #[test]
    fn a_subset_finds_only_what_it_kept() {
        let r = sample().subset(|m| m.name != "beta");
        assert_eq!(r.machines().len(), 2);
        assert_eq!(found(&r, "gamma").as_deref(), Some("gamma"));
        assert_eq!(found(&r, "m-3").as_deref(), Some("gamma"));
        assert_eq!(found(&r, "fd00::1").as_deref(), Some("alpha"));
        assert_eq!(found(&r, "beta"), None);
        assert_eq!(r.find("[fd00::2]:51001", 51000), None);
        assert_eq!(r, Registry::new(r.machines().to_vec()).unwrap());
    }

    #[test]
    fn ambiguous_identifiers_are_rejected() {
        for (id, name) in [
            ("", "x"),
            ("a", " x"),
            ("a,b", "x"),
            ("*", "x"),
            ("a", "fd00::9"),
        ] {
            let err = Registry::new(vec![Machine {
                id: id.into(),
                name: name.into(),
                addr: "fd00::1".parse().unwrap(),
            }])
            .unwrap_err();
            assert!(
                matches!(err, RegistryError::InvalidIdentifier { index: 1, .. }),
                "{err}"
            );
        }
    }
}
