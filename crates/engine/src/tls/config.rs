//! Reading the `[tls]` files and building the rustls server and client configurations.
//!
//! Everything is checked up front, so that a bad file is reported by name when it is loaded
//! (at start-up or on reload) rather than as an obscure handshake failure later:
//! the key must match the certificate, the CA bundle must hold at least one valid
//! certificate, and this machine's own certificate must chain to that CA (otherwise every
//! peer would refuse it).
//!
//! Both configurations allow TLS 1.3 only, offer ALPN `h2` and disable session resumption:
//! connections between machines are long-lived HTTP/2 connections, so resumption saves
//! little, and without it every handshake verifies the full chain (expiry, CA rotation,
//! names) instead of trusting a ticket issued under an older configuration.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::Resumption;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client};

use super::verify::{MachineServerVerifier, PeerName};

/// The only application protocol spoken between machines.
pub const ALPN_H2: &[u8] = b"h2";

/// The rustls crypto provider used by every configuration: *ring*.
///
/// Passed explicitly to every builder. `ServerConfig::builder()` and friends instead use the
/// process-wide default, which panics when it cannot be inferred from the enabled crate
/// features (e.g. as soon as another dependency enables rustls' default `aws-lc-rs`).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The files named by the `[tls]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// This machine's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key of that certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The cluster CA bundle, PEM.
    pub ca: PathBuf,
}

/// Why the TLS files could not be turned into a configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{}: invalid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no certificate found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{}: no private key found", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The leaf certificate is not a parsable X.509 certificate.
    #[error("{}: invalid certificate: {source}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The private key cannot be used (unsupported type, malformed).
    #[error("{}: unusable private key: {source}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The rustls error.
        source: rustls::Error,
    },
    /// The private key belongs to another certificate.
    #[error("{}: private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The CA bundle holds no certificate.
    #[error("{}: CA bundle holds no certificate", path.display())]
    EmptyCa {
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the CA bundle cannot be used as a trust anchor.
    #[error("{}: certificate #{index} cannot be a trust anchor: {source}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Position of the certificate in the bundle, from 1.
        index: usize,
        /// The rustls error.
        source: rustls::Error,
    },
    /// This machine's certificate does not chain to the CA bundle (or is expired).
    #[error("{}: certificate is not valid under the CA bundle {}: {source}", cert.display(), ca.display())]
    Untrusted {
        /// The certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// The verification error.
        source: rustls::Error,
    },
    /// A verifier could not be built from the CA bundle.
    #[error("{}: cannot build a verifier: {source}", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// The builder error.
        source: VerifierBuilderError,
    },
    /// rustls refused the configuration (should not happen with the fixed settings here).
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The server and client configurations built from one reading of the [`TlsPaths`].
#[derive(Debug)]
pub struct TlsConfigs {
    server: Arc<ServerConfig>,
    client: ClientTls,
}

impl TlsConfigs {
    /// Reads and checks the three files, and builds both configurations.
    pub fn load(paths: &TlsPaths) -> Result<Self, TlsError> {
        let cert_pem = read(&paths.cert)?;
        let key_pem = read(&paths.key)?;
        let ca_pem = read(&paths.ca)?;
        Self::from_pem(paths, &cert_pem, &key_pem, &ca_pem)
    }

    /// Builds the configurations from PEM contents; `paths` only name them in errors.
    pub fn from_pem(
        paths: &TlsPaths,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let chain = parse_certs(&paths.cert, cert_pem)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: paths.cert.clone(),
            });
        }
        let key = parse_key(&paths.key, key_pem)?;
        let certified = certified_key(paths, &provider, chain, key)?;
        let roots = Arc::new(parse_roots(&paths.ca, ca_pem)?);

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: paths.ca.clone(),
                    source,
                })?;
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|source| TlsError::Verifier {
                    path: paths.ca.clone(),
                    source,
                })?;

        // Our certificate is used as a client certificate towards peers: check it would be
        // accepted by a peer holding the same CA bundle (chain, validity period, EKU).
        let (leaf, intermediates) =
            certified
                .cert
                .split_first()
                .ok_or(TlsError::NoCertificate {
                    path: paths.cert.clone(),
                })?;
        client_verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|source| TlsError::Untrusted {
                cert: paths.cert.clone(),
                ca: paths.ca.clone(),
                source,
            })?;

        let certified = Arc::new(certified);
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified.clone())));
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;

        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_webpki_verifier(server_verifier.clone())
            .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
        client.alpn_protocols = vec![ALPN_H2.to_vec()];
        client.resumption = Resumption::disabled();

        Ok(Self {
            server: Arc::new(server),
            client: ClientTls {
                base: Arc::new(client),
                webpki: server_verifier,
            },
        })
    }

    /// The configuration for accepting connections.
    pub fn server(&self) -> &Arc<ServerConfig> {
        &self.server
    }

    /// The configuration for dialling other machines.
    pub fn client(&self) -> &ClientTls {
        &self.client
    }
}

/// Client side: derives, per dialled machine, a configuration whose verifier expects that
/// machine's IP or registry name. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    /// Everything but the per-peer verifier (client certificate, ALPN, versions).
    base: Arc<ClientConfig>,
    /// Chain verification against the CA bundle, shared by all per-peer verifiers.
    webpki: Arc<WebPkiServerVerifier>,
}

impl ClientTls {
    /// A configuration that accepts only a server certificate naming `peer`.
    ///
    /// rustls has no per-connection verifier context (the verifier only sees the one
    /// `ServerName` given to `connect`), so the expected (IP, name) pair is carried by a
    /// per-connection verifier in a shallow copy of the base configuration.
    pub fn config_for(&self, peer: &PeerName) -> Arc<ClientConfig> {
        let mut config = (*self.base).clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(MachineServerVerifier::new(
                self.webpki.clone(),
                peer.clone(),
            )));
        Arc::new(config)
    }

    /// Mutual TLS with `peer` over `tcp`: the handshake, naming `peer` by
    /// its IP (no SNI is sent), then the check that it agreed to HTTP/2
    /// (ALPN `h2`). A certificate that does not name `peer` fails with a
    /// [`NameMismatch`](super::NameMismatch) inside the error
    /// ([`name_mismatch`](super::name_mismatch)).
    pub async fn connect(
        &self,
        peer: &PeerName,
        tcp: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let stream = TlsConnector::from(self.config_for(peer))
            .connect(ServerName::IpAddress(peer.ip().into()), tcp)
            .await?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the server did not negotiate ALPN h2",
            ));
        }
        Ok(stream)
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: path.to_owned(),
            source,
        })
}

fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
    })
}

/// Loads the key and checks it against the leaf certificate.
fn certified_key(
    paths: &TlsPaths,
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadKey {
            path: paths.key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Unlike `CertifiedKey::from_der`, an `Unknown` outcome is not waved through: ring
    // knows the public half of every key type it loads, so it cannot occur legitimately.
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            key: paths.key.clone(),
            cert: paths.cert.clone(),
        }),
        Err(source) => Err(TlsError::BadCertificate {
            path: paths.cert.clone(),
            source,
        }),
    }
}

fn parse_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let certs = parse_certs(path, pem)?;
    if certs.is_empty() {
        return Err(TlsError::EmptyCa {
            path: path.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        // `add` rather than `add_parsable_certificates`: a bundle with a broken certificate
        // is an operator mistake worth reporting, not something to skip silently.
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            index: i + 1,
            source,
        })?;
    }
    Ok(roots)
}
