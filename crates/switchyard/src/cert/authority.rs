//! Certificate generation behind `switchyard cert`: a cluster CA, machine certificates and
//! client (caller) certificates, written as PEM files.
//!
//! The profiles match what the TLS layer checks:
//! - CA: self-signed, `keyCertSign`, path length 0 (it signs leaves only);
//! - machine: IP SAN(s) and an optional DNS SAN (its registry name), `O=machine`,
//!   EKU serverAuth + clientAuth, since a machine both serves and dials;
//! - client: `CN=<name>` and one `O=<role>` per role, EKU clientAuth only, so it cannot
//!   pose as a server.
//!
//! Keys are ECDSA P-256 (small, fast, supported by every TLS stack), written as PKCS#8.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls::pki_types::DnsName;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use switchyard_director::MACHINE_ROLE;

use super::der::{self, DerError};

/// Why a certificate could not be generated, loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    /// rcgen refused the parameters or failed to sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The validity period is empty or out of range.
    #[error("invalid validity period: {0}")]
    Validity(&'static str),
    /// A registry name that cannot be a DNS SAN.
    #[error("{0:?} is not a valid DNS name")]
    InvalidName(String),
    /// A machine certificate without any IP address.
    #[error("a machine certificate needs at least one IP address")]
    NoIp,
    /// An empty common name or role.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// The CA certificate cannot be parsed.
    #[error("CA certificate is not a valid X.509 certificate")]
    BadCaCert,
    /// The CA certificate is not a CA.
    #[error("CA certificate has no CA basic constraint")]
    NotCa,
    /// The CA key is not the key of the CA certificate.
    #[error("CA key does not match the CA certificate")]
    CaKeyMismatch,
    /// Internal: rewriting the subject failed.
    #[error(transparent)]
    Der(#[from] DerError),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity (in the past for a deliberately expired certificate).
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid for `days` days from now, and from five minutes ago so that a machine whose
    /// clock lags slightly accepts a certificate fresh from another machine.
    pub fn days(days: u32) -> Result<Self, CertGenError> {
        let now = SystemTime::now();
        Ok(Self {
            not_before: now
                .checked_sub(Duration::from_secs(300))
                .ok_or(CertGenError::Validity("start out of range"))?,
            not_after: now
                .checked_add(Duration::from_secs(u64::from(days) * 86_400))
                .ok_or(CertGenError::Validity("end out of range"))?,
        })
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), CertGenError> {
        if self.not_after <= self.not_before {
            return Err(CertGenError::Validity("it ends before it starts"));
        }
        params.not_before = to_datetime(self.not_before)?;
        params.not_after = to_datetime(self.not_after)?;
        Ok(())
    }
}

/// Without the panics of `OffsetDateTime::from(SystemTime)` on out-of-range times.
fn to_datetime(t: SystemTime) -> Result<OffsetDateTime, CertGenError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertGenError::Validity("before 1970"))?
        .as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(CertGenError::Validity("beyond year 9999"))
}

/// A certificate and its private key, PEM. `Debug` does not show the key.
#[derive(Clone)]
pub struct CertPem {
    /// The certificate.
    pub cert: String,
    /// Its private key, PKCS#8.
    pub key: String,
}

impl fmt::Debug for CertPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertPem")
            .field("cert", &self.cert)
            .field("key", &"[elided]")
            .finish()
    }
}

impl CertPem {
    /// Writes the certificate (mode 0644) and the key (mode 0600). Each file is written to
    /// a temporary file and renamed, so a reload never reads a half-written file.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), CertGenError> {
        write_atomic(key_path, self.key.as_bytes(), 0o600)?;
        write_atomic(cert_path, self.cert.as_bytes(), 0o644)
    }
}

/// What a machine certificate names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineSpec {
    /// The machine's addresses (IP SANs); at least one.
    pub ips: Vec<IpAddr>,
    /// Its registry name (DNS SAN), if it has one.
    pub name: Option<String>,
}

/// A certificate authority able to sign machine and client certificates.
#[derive(Debug)]
pub struct CertAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl CertAuthority {
    /// Creates a new self-signed CA named `common_name`.
    pub fn generate(common_name: &str, validity: Validity) -> Result<Self, CertGenError> {
        if common_name.is_empty() {
            return Err(CertGenError::Empty("CA common name"));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity.apply(&mut params)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and PKCS#8 key, PEM. Checks that the certificate is
    /// a CA and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertGenError> {
        let key = KeyPair::from_pem(key_pem)?;
        let der = pem::parse(cert_pem).map_err(|_| CertGenError::BadCaCert)?;
        let cert = match X509Certificate::from_der(der.contents()) {
            Ok((_, cert)) => cert,
            Err(_) => return Err(CertGenError::BadCaCert),
        };
        if !cert.is_ca() {
            return Err(CertGenError::NotCa);
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertGenError::CaKeyMismatch);
        }
        Ok(Self {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// Loads a CA from its certificate and key files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CertGenError> {
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| CertGenError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Self::from_pem(&read(cert_path)?, &read(key_path)?)
    }

    /// The CA certificate, PEM (the `ca` file of the machines).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate and key, PEM.
    pub fn to_pem(&self) -> CertPem {
        CertPem {
            cert: self.cert_pem.clone(),
            key: self.issuer.key().serialize_pem(),
        }
    }

    /// Issues a machine certificate: `O=machine`, IP SANs, optional DNS SAN, usable as
    /// server and client certificate. Its CN is the name, or else the first IP.
    pub fn issue_machine(
        &self,
        spec: &MachineSpec,
        validity: Validity,
    ) -> Result<CertPem, CertGenError> {
        let first_ip = spec.ips.first().ok_or(CertGenError::NoIp)?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = spec.ips.iter().copied().map(SanType::IpAddress).collect();
        let common_name = match spec.name.as_deref() {
            Some(name) => {
                // Same rules as the dialling side (`PeerName`), so what is issued can match.
                DnsName::try_from(name).map_err(|_| CertGenError::InvalidName(name.to_owned()))?;
                params
                    .subject_alt_names
                    .push(SanType::DnsName(name.try_into()?));
                name.to_owned()
            }
            None => first_ip.to_string(),
        };
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, MACHINE_ROLE);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(params, validity, None)
    }

    /// Issues a client certificate for a caller: `CN=common_name`, one `O` per role.
    pub fn issue_client(
        &self,
        common_name: &str,
        roles: &[&str],
        validity: Validity,
    ) -> Result<CertPem, CertGenError> {
        if common_name.is_empty() {
            return Err(CertGenError::Empty("common name"));
        }
        if roles.iter().any(|r| r.is_empty()) {
            return Err(CertGenError::Empty("a role"));
        }
        let mut params = CertificateParams::default();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // Most general first, as in `O=reader, O=writer, CN=alice`.
        let mut subject: Vec<(&[u8], &str)> = roles
            .iter()
            .map(|role| (der::OID_ORGANIZATION, *role))
            .collect();
        subject.push((der::OID_COMMON_NAME, common_name));
        self.issue(params, validity, Some(der::name(&subject)))
    }

    /// Signs a leaf with a fresh key; `subject`, when given, replaces rcgen's subject.
    fn issue(
        &self,
        mut params: CertificateParams,
        validity: Validity,
        subject: Option<Vec<u8>>,
    ) -> Result<CertPem, CertGenError> {
        validity.apply(&mut params)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Lets path building pick the right CA while a bundle holds the old and the new one.
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert = match subject {
            None => cert.pem(),
            Some(subject) => {
                let der = der::replace_subject(cert.der(), &subject, self.issuer.key())?;
                pem::encode(&pem::Pem::new("CERTIFICATE", der))
            }
        };
        Ok(CertPem {
            cert,
            key: key.serialize_pem(),
        })
    }
}

/// Writes `contents` to a temporary file beside `path` with `mode`, then renames it.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertGenError> {
    let error = |source| CertGenError::Write {
        path: path.to_owned(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| error(io::Error::new(io::ErrorKind::InvalidInput, "no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let result = (|| {
        // A leftover from an interrupted run would make `create_new` fail.
        let _ = fs::remove_file(&tmp);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(error)
}
