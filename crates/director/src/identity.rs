//! Who is calling: roles and common name from a verified peer certificate.
//!
//! A caller's roles are the Organization (O) values of its certificate's subject; a subject
//! may carry several O attributes, one per role. Machine certificates carry
//! [`MACHINE_ROLE`]. Only call this on certificates the TLS layer has already verified
//! (the engine's server does, against the cluster CA): parsing here grants nothing by
//! itself.

use std::fmt;
use std::sync::Arc;

use x509_parser::prelude::{FromDer, X509Certificate, X509Error};

/// The role carried by every machine certificate.
pub const MACHINE_ROLE: &str = "machine";

/// Why a certificate's identity could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not one DER X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Parse(#[source] X509Error),
    /// An Organization value is not a readable string (e.g. a BMPString), so the roles
    /// cannot be known; refusing beats silently dropping a role.
    #[error("subject Organization #{index} is not a readable string: {source}")]
    Role {
        /// Position of the O attribute in the subject, from 1.
        index: usize,
        /// The parse error.
        source: X509Error,
    },
}

/// The identity of a certificate holder, for authorisation (roles) and logs (common name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The first subject CN, if any readable one.
    pub common_name: Option<String>,
    /// The subject's O values, in certificate order (shared: every call of
    /// the connection runs with them).
    pub roles: Arc<[String]>,
}

impl Identity {
    /// Reads the identity from a DER certificate.
    pub fn from_der(cert_der: &[u8]) -> Result<Self, IdentityError> {
        let cert = parse(cert_der)?;
        let subject = cert.subject();
        // The CN is only for logs: an unreadable one is dropped rather than an error.
        let common_name = subject
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(Self {
            common_name,
            roles: roles(&cert)?.into(),
        })
    }

    /// Whether the identity has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether this is a machine of the cluster.
    pub fn is_machine(&self) -> bool {
        self.has_role(MACHINE_ROLE)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.common_name {
            Some(cn) => write!(f, "CN={cn:?}")?,
            None => write!(f, "(no CN)")?,
        }
        write!(f, " roles=[{}]", self.roles.join(","))
    }
}

/// The roles (subject O values) of a DER certificate.
pub fn roles_of(cert_der: &[u8]) -> Result<Vec<String>, IdentityError> {
    roles(&parse(cert_der)?)
}

fn parse(cert_der: &[u8]) -> Result<X509Certificate<'_>, IdentityError> {
    match X509Certificate::from_der(cert_der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(IdentityError::Parse(X509Error::InvalidCertificate)),
        Err(x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e)) => {
            Err(IdentityError::Parse(e))
        }
        Err(x509_parser::nom::Err::Incomplete(_)) => {
            Err(IdentityError::Parse(X509Error::InvalidCertificate))
        }
    }
}

fn roles(cert: &X509Certificate<'_>) -> Result<Vec<String>, IdentityError> {
    cert.subject()
        .iter_organization()
        .enumerate()
        .map(|(i, o)| {
            o.as_str()
                .map(str::to_owned)
                .map_err(|source| IdentityError::Role {
                    index: i + 1,
                    source,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(roles_of(b"").is_err());
        assert!(roles_of(b"\x30\x82\xff\xff").is_err());
        assert!(Identity::from_der(&[0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }

    #[test]
    fn display() {
        let id = Identity {
            common_name: Some("alice".into()),
            roles: vec!["reader".to_owned(), "writer".to_owned()].into(),
        };
        assert_eq!(id.to_string(), r#"CN="alice" roles=[reader,writer]"#);
    }
}
