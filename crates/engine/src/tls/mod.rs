//! Mutual TLS between machines and towards callers, with rustls.
//!
//! Every machine holds a certificate signed by the cluster CA and trusts only
//! that CA: listeners require a client certificate (every caller is
//! authenticated before a gRPC byte is read), and a dialled machine must
//! present a certificate that names the IP or registry name that was dialled
//! ([`verify`]), so one machine's certificate cannot answer for another.
//! Both sides speak TLS 1.3 only with ALPN `h2`. [`TlsStore`] holds the
//! configuration in force and swaps it on reload; connections keep the one
//! they started with. What a caller's certificate *means* (its roles) is the
//! director's business: the engine hands it on in [`Peer`](crate::Peer).
//!
//! Crypto is rustls with the *ring* provider, passed explicitly (see
//! [`provider`]), never the process-wide default.

mod config;
mod store;
pub mod verify;

pub use config::{ALPN_H2, ClientTls, TlsConfigs, TlsError, TlsPaths, provider};
pub use store::TlsStore;
pub use verify::{InvalidPeerName, NameMismatch, PeerName};

use rustls::{CertificateError, OtherError};

/// The [`NameMismatch`] behind a failed client handshake, if that is why.
pub fn name_mismatch(err: &std::io::Error) -> Option<&NameMismatch> {
    match err.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<NameMismatch>()
        }
        _ => None,
    }
}
