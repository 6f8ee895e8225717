//! Verifying the certificate of a dialled machine.
//!
//! The CA signs every machine, so a chain to the CA alone would let any machine answer in
//! place of another (e.g. after an address was reassigned, or with a stolen key). The
//! certificate must also name the machine that was dialled: an IP SAN equal to its address,
//! or a DNS SAN equal to its registry name. rustls' [`WebPkiServerVerifier`] checks one
//! name per call, so [`MachineServerVerifier`] wraps it and tries the IP, then the name.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, DnsName, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

/// The identity a dialled machine must prove: its IP address and, when the registry knows
/// one, its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerName {
    ip: IpAddr,
    name: Option<DnsName<'static>>,
}

/// A registry name that cannot appear in a DNS SAN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid DNS name")]
pub struct InvalidPeerName(pub String);

impl PeerName {
    /// The machine at `ip`, optionally known as `name`; an empty name counts as none
    /// (the registry reports an empty name when it has none).
    pub fn new(ip: impl Into<IpAddr>, name: Option<&str>) -> Result<Self, InvalidPeerName> {
        let name = match name {
            None | Some("") => None,
            Some(name) => Some(
                DnsName::try_from(name)
                    .map_err(|_| InvalidPeerName(name.to_owned()))?
                    .to_owned(),
            ),
        };
        Ok(Self {
            ip: ip.into(),
            name,
        })
    }

    /// The expected IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The expected registry name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_ref().map(|n| n.as_ref())
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{} ({name})", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// The server certificate chains to the CA but names neither the IP nor the name dialled.
///
/// Travels inside `rustls::Error::InvalidCertificate(CertificateError::Other(..))`;
/// the channel extracts it to say why a machine is unreachable.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub struct NameMismatch {
    /// The machine that was dialled.
    pub peer: PeerName,
    /// The subject alternative names of the certificate, as rustls reports them.
    pub presented: Vec<String>,
}

impl fmt::Display for NameMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self.peer.ip;
        match self.peer.name() {
            Some(name) => write!(
                f,
                "certificate of {ip} names neither IP {ip} nor DNS {name}"
            )?,
            None => write!(f, "certificate of {ip} does not name IP {ip}")?,
        }
        if self.presented.is_empty() {
            write!(f, " (it names no IP or DNS)")
        } else {
            write!(f, " (it names {})", self.presented.join(", "))
        }
    }
}

// rustls formats `CertificateError::Other` with `{:?}`, so Debug carries the message too.
impl fmt::Debug for NameMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Server certificate verifier for one dialled machine; built by
/// [`ClientTls::config_for`](super::ClientTls::config_for).
#[derive(Debug)]
pub struct MachineServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    peer: PeerName,
}

impl MachineServerVerifier {
    /// Checks chains with `inner` and names against `peer`.
    pub fn new(inner: Arc<WebPkiServerVerifier>, peer: PeerName) -> Self {
        Self { inner, peer }
    }

    /// `Ok(Some)` on success, `Ok(None)` when only the name did not match (with the
    /// names presented appended to `presented`), `Err` for any other failure.
    fn try_name(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
        presented: &mut Vec<String>,
    ) -> Result<Option<ServerCertVerified>, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
        {
            Ok(verified) => Ok(Some(verified)),
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented: names,
                ..
            })) => {
                if presented.is_empty() {
                    *presented = names;
                }
                Ok(None)
            }
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName)) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

impl ServerCertVerifier for MachineServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name given to `connect` is ignored: the expected names come from `self.peer`.
        let mut presented = Vec::new();
        let by_ip = ServerName::IpAddress(self.peer.ip.into());
        if let Some(verified) = self.try_name(
            end_entity,
            intermediates,
            &by_ip,
            ocsp_response,
            now,
            &mut presented,
        )? {
            return Ok(verified);
        }
        if let Some(name) = &self.peer.name {
            let by_name = ServerName::DnsName(name.clone());
            if let Some(verified) = self.try_name(
                end_entity,
                intermediates,
                &by_name,
                ocsp_response,
                now,
                &mut presented,
            )? {
                return Ok(verified);
            }
        }
        Err(CertificateError::Other(OtherError(Arc::new(NameMismatch {
            peer: self.peer.clone(),
            presented,
        })))
        .into())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_name_rules() {
        let ip: IpAddr = "fd00::3".parse().unwrap();
        assert_eq!(PeerName::new(ip, Some("")).unwrap().name(), None);
        assert_eq!(
            PeerName::new(ip, Some("alpha")).unwrap().name(),
            Some("alpha")
        );
        assert!(PeerName::new(ip, Some("not a name")).is_err());
    }

    #[test]
    fn mismatch_message_names_both() {
        let m = NameMismatch {
            peer: PeerName::new("fd00::3".parse::<IpAddr>().unwrap(), Some("alpha")).unwrap(),
            presented: vec!["IpAddress(fd00::9)".into()],
        };
        assert_eq!(
            m.to_string(),
            "certificate of fd00::3 names neither IP fd00::3 nor DNS alpha (it names IpAddress(fd00::9))"
        );
    }
}
