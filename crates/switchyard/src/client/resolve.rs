//! Finding the method (or any symbol) a person named.
//!
//! People type method names the way their last tool wanted them:
//! `/pkg.Service/Method` (the HTTP/2 path), `pkg.Service.Method` (grpcurl),
//! `pkg.Service/Method`, or just `Service/Method` / `Service.Method`. All are
//! accepted; a short service name must be unique in the schema. When nothing
//! matches, the error lists what is close, or what exists, so the next try
//! can succeed.

use prost_reflect::{
    DescriptorPool, EnumDescriptor, EnumValueDescriptor, FieldDescriptor, MessageDescriptor,
    MethodDescriptor, ServiceDescriptor,
};

/// Why a name resolved to nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The text is not a method name at all.
    #[error(
        "`{0}` is not a method name: use /pkg.Service/Method, pkg.Service/Method, pkg.Service.Method or Service/Method"
    )]
    Malformed(String),
    /// No service has that name.
    #[error("unknown service `{service}`{}", hint(.candidates, "Did you mean", .known, "Known services"))]
    UnknownService {
        /// The service as given.
        service: String,
        /// Close names.
        candidates: Vec<String>,
        /// Every service of the schema.
        known: Vec<String>,
    },
    /// The service has no such method.
    #[error("service `{service}` has no method `{method}`{}", hint(.candidates, "Did you mean", .known, "Its methods"))]
    UnknownMethod {
        /// The service's full name.
        service: String,
        /// The method as given.
        method: String,
        /// Close names.
        candidates: Vec<String>,
        /// Every method of the service.
        known: Vec<String>,
    },
    /// A short name matches several things.
    #[error("`{name}` is ambiguous: it matches {}. Give the full name", .matches.join(", "))]
    Ambiguous {
        /// The name as given.
        name: String,
        /// The full names it matches.
        matches: Vec<String>,
    },
    /// No symbol has that name.
    #[error("unknown symbol `{name}`{}", hint(.candidates, "Did you mean", &[], ""))]
    UnknownSymbol {
        /// The name as given.
        name: String,
        /// Close full names.
        candidates: Vec<String>,
    },
}

fn hint(candidates: &[String], lead: &str, known: &[String], known_lead: &str) -> String {
    let mut out = String::new();
    if !candidates.is_empty() {
        out.push_str(&format!(". {lead} {}?", quoted(candidates, " or ")));
    }
    if !known_lead.is_empty() {
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        let separator = if candidates.is_empty() { "." } else { "" };
        out.push_str(&format!("{separator} {known_lead}: {known}"));
    }
    out
}

fn quoted(names: &[String], separator: &str) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(separator)
}

/// A method name split into its service and method parts, as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodName {
    /// The service, full (`pkg.Service`) or short (`Service`).
    pub service: String,
    /// The method.
    pub method: String,
}

impl MethodName {
    /// Splits any accepted form.
    pub fn parse(text: &str) -> Result<Self, ResolveError> {
        let malformed = || ResolveError::Malformed(text.to_owned());
        let trimmed = text.trim().trim_start_matches('/').trim_start_matches('.');
        let (service, method) = trimmed
            .rsplit_once('/')
            .or_else(|| trimmed.rsplit_once('.'))
            .ok_or_else(malformed)?;
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        };
        if !valid(service) || !valid(method) || method.contains('.') {
            return Err(malformed());
        }
        Ok(Self {
            service: service.to_owned(),
            method: method.to_owned(),
        })
    }

    /// Whether the service part is a full name (has a package).
    pub fn is_qualified(&self) -> bool {
        self.service.contains('.')
    }
}

/// The method of `pool` that `text` names.
pub fn resolve_method(pool: &DescriptorPool, text: &str) -> Result<MethodDescriptor, ResolveError> {
    let name = MethodName::parse(text)?;
    let service = resolve_service(pool, &name.service)?;
    if let Some(method) = service.methods().find(|m| m.name() == name.method) {
        return Ok(method);
    }
    let known: Vec<String> = service.methods().map(|m| m.name().to_owned()).collect();
    Err(ResolveError::UnknownMethod {
        service: service.full_name().to_owned(),
        candidates: close(&name.method, known.iter().map(String::as_str)),
        method: name.method,
        known,
    })
}

fn resolve_service(pool: &DescriptorPool, name: &str) -> Result<ServiceDescriptor, ResolveError> {
    if let Some(service) = pool.get_service_by_name(name) {
        return Ok(service);
    }
    let matches: Vec<ServiceDescriptor> = pool.services().filter(|s| s.name() == name).collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            let known: Vec<String> = pool.services().map(|s| s.full_name().to_owned()).collect();
            // Compare short to short and full to full.
            let candidates = pool
                .services()
                .filter(|s| {
                    let other = if name.contains('.') {
                        s.full_name()
                    } else {
                        s.name()
                    };
                    is_close(name, other)
                })
                .map(|s| s.full_name().to_owned())
                .collect();
            Err(ResolveError::UnknownService {
                service: name.to_owned(),
                candidates,
                known,
            })
        }
        many => Err(ResolveError::Ambiguous {
            name: name.to_owned(),
            matches: many.iter().map(|s| s.full_name().to_owned()).collect(),
        }),
    }
}

/// Anything `describe` can show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Symbol {
    /// A service.
    Service(ServiceDescriptor),
    /// A method.
    Method(MethodDescriptor),
    /// A message.
    Message(MessageDescriptor),
    /// An enum.
    Enum(EnumDescriptor),
    /// A field of a message.
    Field(FieldDescriptor),
    /// A value of an enum.
    EnumValue(EnumValueDescriptor),
}

impl Symbol {
    /// The symbol's full name.
    pub fn full_name(&self) -> &str {
        match self {
            Self::Service(d) => d.full_name(),
            Self::Method(d) => d.full_name(),
            Self::Message(d) => d.full_name(),
            Self::Enum(d) => d.full_name(),
            Self::Field(d) => d.full_name(),
            Self::EnumValue(d) => d.full_name(),
        }
    }
}

/// The symbol of `pool` that `text` names: a full name, a method in any
/// form [`resolve_method`] accepts, or a unique short name of a service,
/// message or enum.
pub fn resolve_symbol(pool: &DescriptorPool, text: &str) -> Result<Symbol, ResolveError> {
    let name = text.trim().trim_start_matches('.');
    if let Some(found) = exact_symbol(pool, name) {
        return Ok(found);
    }
    if name.contains('/') {
        return resolve_method(pool, name).map(Symbol::Method);
    }
    let short = |full: &str| full.rsplit('.').next() == Some(name);
    let mut matches: Vec<Symbol> = pool
        .services()
        .filter(|d| short(d.full_name()))
        .map(Symbol::Service)
        .chain(
            pool.all_messages()
                .filter(|d| short(d.full_name()))
                .map(Symbol::Message),
        )
        .chain(
            pool.all_enums()
                .filter(|d| short(d.full_name()))
                .map(Symbol::Enum),
        )
        .collect();
    if matches.len() == 1 {
        return Ok(matches.remove(0));
    }
    if matches.len() > 1 {
        return Err(ResolveError::Ambiguous {
            name: name.to_owned(),
            matches: matches.iter().map(|s| s.full_name().to_owned()).collect(),
        });
    }
    if let Ok(method) = resolve_method(pool, name) {
        return Ok(Symbol::Method(method));
    }
    let all = all_names(pool);
    let candidates = all
        .iter()
        .filter(|full| {
            is_close(name, full) || full.rsplit('.').next().is_some_and(|s| is_close(name, s))
        })
        .cloned()
        .collect();
    Err(ResolveError::UnknownSymbol {
        name: name.to_owned(),
        candidates,
    })
}

fn exact_symbol(pool: &DescriptorPool, name: &str) -> Option<Symbol> {
    if let Some(d) = pool.get_service_by_name(name) {
        return Some(Symbol::Service(d));
    }
    if let Some(d) = pool.get_message_by_name(name) {
        return Some(Symbol::Message(d));
    }
    if let Some(d) = pool.get_enum_by_name(name) {
        return Some(Symbol::Enum(d));
    }
    let (parent, last) = name.rsplit_once('.')?;
    if let Some(service) = pool.get_service_by_name(parent) {
        return service
            .methods()
            .find(|m| m.name() == last)
            .map(Symbol::Method);
    }
    if let Some(message) = pool.get_message_by_name(parent) {
        return message.get_field_by_name(last).map(Symbol::Field);
    }
    // Enum values are scoped beside their enum, not inside it.
    pool.all_enums()
        .flat_map(|e| e.values().collect::<Vec<_>>())
        .find(|v| v.full_name() == name)
        .map(Symbol::EnumValue)
}

fn all_names(pool: &DescriptorPool) -> Vec<String> {
    let mut names: Vec<String> = pool
        .services()
        .flat_map(|s| {
            std::iter::once(s.full_name().to_owned())
                .chain(s.methods().map(|m| m.full_name().to_owned()))
                .collect::<Vec<_>>()
        })
        .chain(pool.all_messages().map(|m| m.full_name().to_owned()))
        .chain(pool.all_enums().map(|e| e.full_name().to_owned()))
        .collect();
    names.sort();
    names
}

/// The names among `options` close to `name`.
fn close<'a>(name: &str, options: impl Iterator<Item = &'a str>) -> Vec<String> {
    options
        .filter(|o| is_close(name, o))
        .map(str::to_owned)
        .collect()
}

/// Same ignoring case, one containing the other, or a small edit away.
fn is_close(typed: &str, known: &str) -> bool {
    let (a, b) = (typed.to_lowercase(), known.to_lowercase());
    if a == b || (a.len() >= 3 && b.contains(&a)) || (b.len() >= 3 && a.contains(&b)) {
        return true;
    }
    edit_distance(&a, &b) <= (a.chars().count().max(b.chars().count()) / 4).max(1)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = (previous + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(current + 1);
            previous = current;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let expect = |service: &str| MethodName {
            service: service.into(),
            method: "Describe".into(),
        };
        assert_eq!(
            MethodName::parse("/m.v1.Info/Describe").unwrap(),
            expect("m.v1.Info")
        );
        assert_eq!(
            MethodName::parse("m.v1.Info/Describe").unwrap(),
            expect("m.v1.Info")
        );
        assert_eq!(
            MethodName::parse("m.v1.Info.Describe").unwrap(),
            expect("m.v1.Info")
        );
        assert_eq!(MethodName::parse("Info/Describe").unwrap(), expect("Info"));
        assert_eq!(MethodName::parse("Info.Describe").unwrap(), expect("Info"));
        for bad in ["Describe", "/", "a//b", "a/b/c", "a b/c", "a./b", ""] {
            assert!(MethodName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("describe", "describe"), 0);
        assert_eq!(edit_distance("descibe", "describe"), 1);
        assert_eq!(edit_distance("watch", "match"), 1);
        assert!(is_close("Descrbe", "Describe"));
        assert!(is_close("describe", "Describe"));
        assert!(!is_close("Foo", "Describe"));
    }
}
