//! Who may call what.
//!
//! A caller's roles come from how it reached this machine: the Organization
//! values of its TLS client certificate ([`crate::identity`]), or the
//! configured `unix_roles` on the Unix socket, whose trust is the socket
//! file's permissions. A call forwarded by another machine carries the
//! original caller's roles in `switchyard-roles`, which is honoured only from
//! a peer whose certificate has the `machine` role; from anyone else it is
//! dropped, and with TLS on so is `proxy-authority` (only machines forward
//! calls). Every machine enforces the rules itself, so a role cannot reach a
//! method on any machine by any route that its rules do not allow.
//!
//! Rules: callers holding any of a rule's roles may call any of its methods
//! (`*`, `/pkg.Service/*` or `/pkg.Service/Method`). Without rules every
//! caller may call everything; with them, what no rule allows is refused with
//! `PERMISSION_DENIED` before anything is dialled. `fan_out_methods`, when
//! set, limits which methods may fan out.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use switchyard_engine::log_limit::LogLimit;
use switchyard_engine::{Peer, PeerAddr};
use tonic::Status;

use crate::identity::Identity;
use crate::remote::PROXY_AUTHORITY;

/// Metadata carrying the original caller's roles from machine to machine.
pub const ROLES_HEADER: HeaderName = HeaderName::from_static("switchyard-roles");

/// Most roles one caller is granted from a forwarded header.
const MAX_ROLES: usize = 64;

/// A set of gRPC methods: `*`, a service's `/pkg.Service/*`, or one
/// `/pkg.Service/Method`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct MethodPattern(Pattern);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Pattern {
    Any,
    /// `/pkg.Service/`, prefix of every method of the service.
    Service(String),
    Method(String),
}

impl MethodPattern {
    /// Whether `method` (`/pkg.Service/Method`) is in the set.
    pub fn matches(&self, method: &str) -> bool {
        match &self.0 {
            Pattern::Any => true,
            Pattern::Service(prefix) => method
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
            Pattern::Method(exact) => method == exact,
        }
    }
}

impl FromStr for MethodPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self(Pattern::Any));
        }
        let invalid = || {
            format!(
                "{s:?} is not a method pattern such as /pkg.Service/Method, /pkg.Service/* or *"
            )
        };
        let (service, method) = s
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(invalid)?;
        if service.is_empty() || method.is_empty() || method.contains('/') || service.contains('*')
        {
            return Err(invalid());
        }
        match method {
            "*" => Ok(Self(Pattern::Service(format!("/{service}/")))),
            _ if method.contains('*') => Err(invalid()),
            _ => Ok(Self(Pattern::Method(s.to_owned()))),
        }
    }
}

impl fmt::Display for MethodPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Pattern::Any => f.write_str("*"),
            Pattern::Service(prefix) => write!(f, "{prefix}*"),
            Pattern::Method(method) => f.write_str(method),
        }
    }
}

impl TryFrom<String> for MethodPattern {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<MethodPattern> for String {
    fn from(p: MethodPattern) -> String {
        p.to_string()
    }
}

/// Callers holding any of `roles` may call any of `methods`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// The roles this rule grants to.
    pub roles: Vec<String>,
    /// The methods it grants.
    pub methods: Vec<MethodPattern>,
}

/// Who may call what; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// TCP callers are authenticated by TLS client certificates: then only
    /// machines may send `proxy-authority` and `switchyard-roles`.
    pub tls: bool,
    /// Roles of callers on the Unix socket.
    pub unix_roles: Arc<[String]>,
    /// The rules; none means every caller may call everything.
    pub rules: Vec<AuthzRule>,
    /// When set, only these methods may fan out.
    pub fan_out_methods: Option<Vec<MethodPattern>>,
}

/// The caller of one call, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Where it connected from.
    pub peer: Option<PeerAddr>,
    /// Its certificate's identity, on a TLS connection.
    pub identity: Option<Arc<Identity>>,
    /// The roles the call runs with (a forwarding machine's caller's).
    pub roles: Arc<[String]>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.peer {
            Some(peer) => write!(f, "{peer}")?,
            None => f.write_str("(unknown peer)")?,
        }
        if let Some(identity) = &self.identity {
            write!(f, " {identity}")?;
        }
        write!(f, " roles=[{}]", self.roles.join(","))
    }
}

static DENIED: LogLimit = LogLimit::new(Duration::from_secs(1));

impl Default for Policy {
    /// No TLS, no rules (everything allowed), Unix callers are `admin`.
    fn default() -> Self {
        Self {
            tls: false,
            unix_roles: Arc::from(["admin".to_owned()]),
            rules: Vec::new(),
            fan_out_methods: None,
        }
    }
}

impl Policy {
    /// Identifies the caller of `request`, drops the metadata it may not
    /// send, records its roles for the next hop in `switchyard-roles`, and
    /// refuses the call when no rule allows its method.
    pub fn admit(&self, request: &mut http::request::Parts) -> Result<Caller, Status> {
        let peer = request.extensions.get::<Arc<Peer>>().cloned();
        let identity = peer.as_deref().and_then(identity_of);
        let machine = identity.as_deref().is_some_and(Identity::is_machine);
        let headers = &mut request.headers;
        let forwarded = headers.remove(ROLES_HEADER);
        if self.tls && !machine {
            headers.remove(PROXY_AUTHORITY);
        }
        let roles: Arc<[String]> = match (&forwarded, machine, &identity) {
            (Some(value), true, _) => parse_roles(value),
            (_, _, Some(identity)) => identity.roles.clone(),
            _ => match peer.as_ref().map(|p| p.addr) {
                Some(PeerAddr::Unix { .. }) => self.unix_roles.clone(),
                _ => Arc::from([]),
            },
        };
        if !roles.is_empty()
            && let Ok(value) = HeaderValue::from_str(&roles.join(","))
        {
            headers.insert(ROLES_HEADER, value);
        }
        let caller = Caller {
            peer: peer.map(|p| p.addr),
            identity,
            roles,
        };
        let method = request.uri.path();
        if self.allows(&caller.roles, method) {
            Ok(caller)
        } else {
            if let Some(suppressed) = DENIED.check() {
                tracing::warn!(%caller, method, suppressed, "call refused: no rule allows it");
            }
            // A machine calling on its own (not forwarding) has only the
            // `machine` role: say what it is for.
            let why = if machine && forwarded.is_none() {
                ": the machine role is for Switchyard-to-Switchyard forwarding; \
                 call with a client certificate (`switchyard cert client`)"
            } else {
                ""
            };
            Err(Status::permission_denied(format!(
                "{method} is not allowed for roles [{}]{why}",
                caller.roles.join(", ")
            )))
        }
    }

    /// Whether callers with `roles` may call `method`.
    pub fn allows(&self, roles: &[String], method: &str) -> bool {
        self.rules.is_empty()
            || self.rules.iter().any(|rule| {
                rule.roles.iter().any(|r| roles.contains(r))
                    && rule.methods.iter().any(|m| m.matches(method))
            })
    }

    /// Refuses a fan-out of `method` outside `fan_out_methods`.
    pub fn check_fan_out(&self, method: &str) -> Result<(), Status> {
        match &self.fan_out_methods {
            Some(allowed) if !allowed.iter().any(|m| m.matches(method)) => Err(
                Status::permission_denied(format!("{method} may not fan out (fan_out_methods)")),
            ),
            _ => Ok(()),
        }
    }
}

/// The identity in a TLS peer's certificate, read once per connection
/// (`None` without TLS or a readable certificate).
pub fn identity_of(peer: &Peer) -> Option<Arc<Identity>> {
    peer.derived(|peer| {
        let leaf = peer.certificates.as_ref()?.first()?;
        match Identity::from_der(leaf) {
            Ok(identity) => Some(Arc::new(identity)),
            Err(err) => {
                tracing::warn!(peer = %peer.addr, error = %err, "unreadable client certificate: no roles");
                None
            }
        }
    })
}

/// Roles from a `switchyard-roles` value: comma-separated, bounded.
fn parse_roles(value: &HeaderValue) -> Arc<[String]> {
    let Ok(text) = value.to_str() else {
        return Arc::from([]);
    };
    text.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .take(MAX_ROLES)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests;
