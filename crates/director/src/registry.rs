//! An optional static list of the cluster's machines.
//!
//! Without it, clients name machines by IPv6 address. With it they may use
//! names, IDs or `*` (every machine), replies carry `machine_id` and
//! `machine_name` too, and only listed machines can be reached — the list
//! doubles as an allowlist. IDs and names share one namespace so that a value
//! always means exactly one machine.

use std::collections::HashMap;

use crate::addr::MachineAddr;

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
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

/// What a value in `machines` metadata stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// `*`: every machine, in registry order.
    All,
    /// One machine, by ID, name or address.
    Machine(&'a Machine),
}

/// Why a registry is invalid, or values do not name machines.
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
    /// Values that name no machine (every one of them).
    #[error("unknown machines: {}", quoted(.values))]
    Unknown {
        /// The unknown values, in request order.
        values: Vec<String>,
    },
    /// The registry file is not valid TOML or has the wrong shape.
    #[error("machine registry: {0}")]
    Toml(#[from] toml::de::Error),
}

/// `"a", "b"`.
pub(crate) fn quoted(values: &[String]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A validated list of machines: IDs, names and addresses are unique and
/// every ID and name names exactly one machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "RegistryFile")]
pub struct Registry {
    machines: Vec<Machine>,
    /// ID or name → index into `machines`.
    by_identifier: HashMap<String, usize>,
}

/// The on-disk shape: `[[machines]] id = … name = … addr = …`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    #[serde(default)]
    machines: Vec<Machine>,
}

impl TryFrom<RegistryFile> for Registry {
    type Error = RegistryError;

    fn try_from(file: RegistryFile) -> Result<Self, Self::Error> {
        Self::new(file.machines)
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
                        let other = &machines[j];
                        let other_what = if &other.id == value { "id" } else { "name" };
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
        })
    }

    /// Parses and validates a TOML registry: `[[machines]]` tables with `id`,
    /// `name` and `addr`.
    pub fn from_toml(text: &str) -> Result<Self, RegistryError> {
        Ok(toml::from_str(text)?)
    }

    /// The machines, in registry order.
    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// The machine with this ID or name.
    pub fn by_identifier(&self, value: &str) -> Option<&Machine> {
        self.by_identifier.get(value).map(|&i| &self.machines[i])
    }

    /// The machine with exactly this address (port included or omitted as in
    /// the registry).
    pub fn by_addr(&self, addr: &MachineAddr) -> Option<&Machine> {
        self.machines.iter().find(|m| m.addr == *addr)
    }

    /// What `value` stands for: `*`, an ID, a name or an address.
    pub fn lookup(&self, value: &str) -> Option<Selection<'_>> {
        if value == "*" {
            return Some(Selection::All);
        }
        self.by_identifier(value)
            .or_else(|| value.parse().ok().and_then(|addr| self.by_addr(&addr)))
            .map(Selection::Machine)
    }

    /// The machines `values` name, in order of first mention, each once.
    /// Unknown values are an error listing every one of them.
    pub fn resolve<'v>(
        &self,
        values: impl IntoIterator<Item = &'v str>,
    ) -> Result<Vec<&Machine>, RegistryError> {
        let mut picked: Vec<usize> = Vec::new();
        let mut unknown: Vec<String> = Vec::new();
        for value in values {
            let indices = match self.lookup(value) {
                Some(Selection::All) => (0..self.machines.len()).collect(),
                Some(Selection::Machine(m)) => vec![self.index_of(m)],
                None => {
                    if !unknown.iter().any(|u| u == value) {
                        unknown.push(value.to_owned());
                    }
                    continue;
                }
            };
            for i in indices {
                if !picked.contains(&i) {
                    picked.push(i);
                }
            }
        }
        let found = picked.into_iter().map(|i| &self.machines[i]).collect();
        if unknown.is_empty() {
            Ok(found)
        } else {
            Err(RegistryError::Unknown { values: unknown })
        }
    }

    fn index_of(&self, machine: &Machine) -> usize {
        self.machines
            .iter()
            .position(|m| std::ptr::eq(m, machine))
            .expect("machine is from this registry")
    }
}

fn check_identifier(index: usize, what: &'static str, value: &str) -> Result<(), RegistryError> {
    let fail = |reason| {
        Err(RegistryError::InvalidIdentifier {
            index,
            what,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        fail("it is empty")
    } else if value.trim() != value {
        fail("it has leading or trailing whitespace")
    } else if value.contains(',') {
        fail("it contains `,`, which separates values in `machines` metadata")
    } else if value == "*" {
        fail("`*` means every machine")
    } else if value.parse::<MachineAddr>().is_ok() {
        fail("it looks like a machine address")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        [[machines]]
        id = "m-1"
        name = "alpha"
        addr = "fd00::1"

        [[machines]]
        id = "m-2"
        name = "beta"
        addr = "[fd00::2]:51001"

        [[machines]]
        id = "m-3"
        name = "gamma"
        addr = "fd00::3"
    "#;

    fn sample() -> Registry {
        Registry::from_toml(SAMPLE).unwrap()
    }

    fn names(machines: &[&Machine]) -> Vec<String> {
        machines.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn parses_toml() {
        let r = sample();
        assert_eq!(r.machines().len(), 3);
        assert_eq!(r.machines()[1].addr.port, Some(51001));
        assert_eq!(r.machines()[1].addr.to_string(), "[fd00::2]:51001");
        assert!(Registry::from_toml("").unwrap().machines().is_empty());
    }

    #[test]
    fn resolves_names_ids_addresses_and_star() {
        let r = sample();
        assert_eq!(names(&r.resolve(["alpha"]).unwrap()), ["alpha"]);
        assert_eq!(
            names(&r.resolve(["m-3", "beta"]).unwrap()),
            ["gamma", "beta"]
        );
        assert_eq!(names(&r.resolve(["[fd00::2]:51001"]).unwrap()), ["beta"]);
        assert_eq!(
            names(&r.resolve(["FD00::1", "[fd00::3]"]).unwrap()),
            ["alpha", "gamma"]
        );
        assert_eq!(
            names(&r.resolve(["*"]).unwrap()),
            ["alpha", "beta", "gamma"]
        );
        assert_eq!(r.lookup("*"), Some(Selection::All));
        // The address is matched as written in the registry (port and all).
        assert!(r.lookup("fd00::2").is_none());
    }

    #[test]
    fn duplicates_collapse_keeping_first_order() {
        let r = sample();
        let got = r
            .resolve(["gamma", "m-3", "fd00::3", "alpha", "*"])
            .unwrap();
        assert_eq!(names(&got), ["gamma", "alpha", "beta"]);
    }

    #[test]
    fn unknown_values_are_all_listed() {
        let err = sample()
            .resolve(["alpha", "delta", "fd00::9", "delta", "epsilon"])
            .unwrap_err();
        assert_eq!(
            err,
            RegistryError::Unknown {
                values: vec!["delta".into(), "fd00::9".into(), "epsilon".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            r#"unknown machines: "delta", "fd00::9", "epsilon""#
        );
    }

    fn machine(id: &str, name: &str, addr: &str) -> Machine {
        Machine {
            id: id.into(),
            name: name.into(),
            addr: addr.parse().unwrap(),
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

    #[test]
    fn toml_errors_name_the_bad_value() {
        let err =
            Registry::from_toml("[[machines]]\nid = \"a\"\nname = \"b\"\naddr = \"10.0.0.1\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("\"10.0.0.1\""), "{err}");
        let err = Registry::from_toml(&format!(
            "{SAMPLE}\n[[machines]]\nid = \"m-4\"\nname = \"alpha\"\naddr = \"fd00::4\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("machines 1 and 4") && err.contains("alpha"),
            "{err}"
        );
        let err =
            Registry::from_toml("[[machines]]\nid = \"a\"\nname = \"b\"\naddress = \"fd00::1\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("address"), "{err}");
    }
}
