//! Where the live registry is in etcd, how this machine takes part, and the
//! key layout that follows from the prefix.

use std::time::Duration;

use ipnet::Ipv6Net;

use crate::live::error::Error;
use crate::registry::Machine;

/// Default key prefix of the registry.
pub const DEFAULT_PREFIX: &str = "/switchyard/";

/// Default lifetime of a machine's liveness lease.
pub const DEFAULT_HEARTBEAT_TTL: Duration = Duration::from_secs(10);

/// Longest accepted liveness TTL: a machine dead for an hour is long gone.
pub const MAX_HEARTBEAT_TTL: Duration = Duration::from_secs(3600);

/// The live registry's settings.
///
/// The timing and size fields have defaults meant for production; tests
/// tighten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// etcd client URLs, e.g. `http://[::1]:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix of the registry; starts and ends with `/`.
    pub prefix: String,
    /// This machine's own entry, when it registers itself and keeps a
    /// liveness key.
    pub register: Option<Machine>,
    /// Lifetime of the liveness lease: the key vanishes this long after the
    /// machine stops renewing it. etcd rounds values below ~2 s up.
    pub heartbeat_ttl: Duration,
    /// Bound on establishing a connection to etcd.
    pub connect_timeout: Duration,
    /// Bound on every etcd request (and on the silence of a watch stream).
    pub request_timeout: Duration,
    /// First retry delay after a failure; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Largest member value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most members (and most liveness keys) kept. Members with a heartbeat
    /// and this machine's own entry are kept first; the others fill only the
    /// room left.
    pub max_members: usize,
    /// The networks member addresses must be in; `None` admits every mesh
    /// address ([`check_dialable`](crate::addr::check_dialable)). A member
    /// outside is skipped like any bad entry.
    pub allowed_networks: Option<Vec<Ipv6Net>>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: DEFAULT_PREFIX.into(),
            register: None,
            heartbeat_ttl: DEFAULT_HEARTBEAT_TTL,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
            max_value_bytes: 64 * 1024,
            max_members: 10_000,
            allowed_networks: None,
        }
    }
}

impl EtcdConfig {
    /// Rejects settings that cannot work, before any task starts.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |msg: &str| Err(Error::Config(msg.to_owned()));
        if self.endpoints.is_empty() {
            return fail("no etcd endpoints");
        }
        if let Some(problem) = prefix_problem(&self.prefix) {
            return Err(Error::Config(format!(
                "prefix {:?}: {problem}",
                self.prefix
            )));
        }
        if self.heartbeat_ttl < Duration::from_secs(1) || self.heartbeat_ttl > MAX_HEARTBEAT_TTL {
            return fail("the heartbeat TTL must be between 1 s and 1 h");
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return fail("timeouts must be positive");
        }
        if self.backoff_min.is_zero() || self.backoff_max < self.backoff_min {
            return fail("the first retry delay must be positive and at most the longest");
        }
        if self.max_value_bytes == 0 || self.max_members == 0 {
            return fail("the value and member bounds must be positive");
        }
        if let Some(me) = &self.register {
            for (what, value) in [("id", &me.id), ("name", &me.name)] {
                if let Some(reason) = crate::live::model::identifier_problem(value) {
                    return Err(Error::Config(format!(
                        "this machine's {what} {value:?}: {reason}"
                    )));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn keys(&self) -> Keys {
        Keys {
            machines: format!("{}machines/", self.prefix),
            alive: format!("{}alive/", self.prefix),
        }
    }
}

/// What is wrong with a key prefix, if anything.
pub fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if !prefix.starts_with('/') || !prefix.ends_with('/') {
        Some("it must start and end with `/`")
    } else if prefix.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if prefix.len() > 256 {
        Some("it is longer than 256 bytes")
    } else {
        None
    }
}

/// The registry's key layout.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// `<prefix>machines/`, followed by a member ID.
    pub(crate) machines: String,
    /// `<prefix>alive/`, followed by a member ID.
    pub(crate) alive: String,
}

impl Keys {
    pub(crate) fn member(&self, id: &str) -> String {
        format!("{}{id}", self.machines)
    }

    pub(crate) fn alive(&self, id: &str) -> String {
        format!("{}{id}", self.alive)
    }
}

/// The smallest key after every key starting with `prefix` (etcd's range end
/// for a prefix). `prefix` is never empty nor all `0xff` here.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // etcd's "every key"; unreachable for our `/`-prefixed keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EtcdConfig {
        EtcdConfig {
            endpoints: vec!["http://[::1]:2379".into()],
            ..EtcdConfig::default()
        }
    }

    #[test]
    fn defaults_and_validation() {
        let cfg = config();
        assert_eq!(cfg.prefix, "/switchyard/");
        assert_eq!(cfg.heartbeat_ttl, Duration::from_secs(10));
        cfg.validate().expect("valid");
        assert_eq!(cfg.keys().member("m1"), "/switchyard/machines/m1");
        assert_eq!(cfg.keys().alive("m1"), "/switchyard/alive/m1");
        for bad in [
            EtcdConfig::default(),
            EtcdConfig {
                prefix: "switchyard".into(),
                ..config()
            },
            EtcdConfig {
                heartbeat_ttl: Duration::ZERO,
                ..config()
            },
            EtcdConfig {
                register: Some(Machine {
                    id: "m/1".into(),
                    name: "alpha".into(),
                    addr: "fd00::1".parse().unwrap(),
                }),
                ..config()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
    }
}
