//! Reaching a Switchyard: which one (`--via`, or this machine's from the
//! configuration file), and how (Unix socket, TCP, mutual TLS).
//!
//! On a machine the CLI talks to the local Switchyard's Unix socket, whose
//! path the daemon's configuration names, so the same file gives the default
//! (`/etc/switchyard.toml`: its first `unix:` listener). Over TCP with
//! `[tls]` settings (from the file or `--tls-*`), the client presents that
//! certificate and checks that the server's names the IP it dialled, as the
//! daemons check each other.
//!
//! TLS mistakes reach the caller as "transport error", "h2 protocol error"
//! or "operation was canceled", which say nothing of the cause: plaintext
//! to a TLS listener is cut off, and a refused client certificate (TLS 1.3)
//! is refused after the handshake, when the call is already under way, and
//! the alert saying why may never be read. So when a command fails over
//! TCP, [`diagnose`] asks again, in a way whose answer is certain (a TLS
//! handshake), and the error says what is wrong and which flag fixes it
//! ([`Clue`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_director::DEFAULT_REMOTE_PORT;
use switchyard_director::reflection::connect_unix;
use switchyard_engine::Address;
use switchyard_engine::tls::{PeerName, TlsConfigs, TlsPaths, provider};
use tokio::io::AsyncReadExt as _;
use tonic::transport::{Channel, Endpoint};

use crate::config::{Options, TlsOptions};

/// The daemon's configuration file, read for defaults when it exists.
pub const DEFAULT_CONFIG: &str = "/etc/switchyard.toml";

/// The local Switchyard's socket when no configuration names one.
pub const DEFAULT_SOCKET: &str = "/run/switchyard/switchyard.sock";

/// How often an idle or streaming connection is probed, and how long a
/// probe may go unanswered: a dead peer ends the call instead of hanging it.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// `--via` is not an address.
    #[error(
        "--via {0:?}: expected unix:/path/to/socket, [ipv6]:port, ipv4:port or an IP (port {DEFAULT_REMOTE_PORT})"
    )]
    InvalidAddress(String),
    /// The configuration file is unusable.
    #[error("{0}")]
    Config(String),
    /// The TLS files are unusable.
    #[error("tls: {0}")]
    Tls(String),
    /// Connecting failed.
    #[error("cannot connect to {target}: {cause}")]
    Failed {
        /// The address.
        target: String,
        /// Why, with the causes.
        cause: String,
    },
    /// Connecting took longer than its bound.
    #[error("cannot connect to {0}: no connection within {1:?}")]
    Timeout(String, Duration),
}

impl ConnectError {
    /// Whether the command line (or the file it names) is at fault.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::InvalidAddress(_) | Self::Config(_) | Self::Tls(_)
        )
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// The Switchyard's address.
    pub address: Address,
    /// With TCP: the TLS files, when TLS is configured.
    pub tls: Option<TlsPaths>,
}

/// Parses a `--via` value: `unix:/path` (or an absolute path),
/// `[ipv6]:port`, `ipv4:port`, or a bare IP on the default remote port.
pub fn parse_via(text: &str) -> Result<Address, ConnectError> {
    let invalid = || ConnectError::InvalidAddress(text.to_owned());
    if text.starts_with('/') {
        return Ok(Address::Unix(text.into()));
    }
    if let Ok(address) = text.parse::<Address>() {
        return Ok(address);
    }
    let ip = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(text);
    ip.parse::<IpAddr>()
        .map(|ip| Address::Tcp(SocketAddr::new(ip, DEFAULT_REMOTE_PORT)))
        .map_err(|_| invalid())
}

/// Resolves `--via`, `--config` and `--tls-*` into where to connect: flags
/// first, then the configuration file (`config`, or [`DEFAULT_CONFIG`]
/// when it exists), then [`DEFAULT_SOCKET`].
pub fn resolve_via(
    via: Option<&str>,
    config: Option<&Path>,
    tls_flags: &TlsOptions,
) -> Result<Via, ConnectError> {
    let file = match config {
        Some(path) => Some(read_config(path)?),
        None if Path::new(DEFAULT_CONFIG).exists() => Some(read_config(Path::new(DEFAULT_CONFIG))?),
        None => None,
    };
    let address = match via {
        Some(text) => parse_via(text)?,
        None => file
            .as_ref()
            .and_then(first_unix_listener)
            .unwrap_or_else(|| Address::Unix(DEFAULT_SOCKET.into())),
    };
    let tls = match &address {
        Address::Unix(_) => None,
        Address::Tcp(_) => tls_paths(file.as_ref().and_then(|f| f.tls.as_ref()), tls_flags)?,
    };
    Ok(Via { address, tls })
}

fn read_config(path: &Path) -> Result<Options, ConnectError> {
    crate::config::read_file(path).map_err(|err| ConnectError::Config(format!("{err:#}")))
}

fn first_unix_listener(options: &Options) -> Option<Address> {
    options
        .listen
        .iter()
        .flatten()
        .map(|listen| listen.0.clone())
        .find(|address| matches!(address, Address::Unix(_)))
}

/// The TLS files: each flag over the file's `[tls]` key; none at all is
/// plaintext, some but not all is an error naming what is missing.
fn tls_paths(
    file: Option<&TlsOptions>,
    flags: &TlsOptions,
) -> Result<Option<TlsPaths>, ConnectError> {
    let pick = |flag: &Option<PathBuf>, key: Option<&PathBuf>| flag.clone().or(key.cloned());
    let cert = pick(&flags.cert, file.and_then(|f| f.cert.as_ref()));
    let key = pick(&flags.key, file.and_then(|f| f.key.as_ref()));
    let ca = pick(&flags.ca, file.and_then(|f| f.ca.as_ref()));
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsPaths { cert, key, ca })),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                ("--tls-cert", cert.is_none()),
                ("--tls-key", key.is_none()),
                ("--tls-ca", ca.is_none()),
            ]
            .into_iter()
            .filter_map(|(flag, missing)| missing.then_some(flag))
            .collect();
            Err(ConnectError::Tls(format!(
                "cert, key and ca are all needed; missing: {}",
                missing.join(", ")
            )))
        }
    }
}

/// Connects to `via`, bounded by `timeout`.
pub async fn connect(via: &Via, timeout: Duration) -> Result<Channel, ConnectError> {
    let target = via.address.to_string();
    // The URI is a placeholder where the connector ignores it.
    let endpoint = match &via.address {
        Address::Unix(_) => Endpoint::from_static("http://localhost"),
        Address::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|_| ConnectError::InvalidAddress(target.clone()))?,
    }
    .connect_timeout(timeout)
    .http2_keep_alive_interval(KEEPALIVE)
    .keep_alive_timeout(KEEPALIVE)
    .keep_alive_while_idle(true);
    let connecting = async {
        match (&via.address, &via.tls) {
            (Address::Unix(path), _) => connect_unix(endpoint, path).await,
            (Address::Tcp(_), None) => endpoint.connect().await,
            (Address::Tcp(addr), Some(paths)) => {
                let addr = *addr;
                let client = TlsConfigs::load(paths)
                    .map_err(|err| ConnectError::Tls(err.to_string()))?
                    .client()
                    .clone();
                let peer = PeerName::new(addr.ip(), None)
                    .map_err(|err| ConnectError::Tls(err.to_string()))?;
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                        let (client, peer) = (client.clone(), peer.clone());
                        async move {
                            let tcp = tokio::net::TcpStream::connect(addr).await?;
                            let tls = client.connect(&peer, tcp).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                        }
                    }))
                    .await
            }
        }
        .map_err(|err| ConnectError::Failed {
            target: target.clone(),
            cause: causes(&err),
        })
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ConnectError::Timeout(target.clone(), timeout))?
}

/// Bound of [`diagnose`], whatever the server does.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a TLS server that says nothing after the handshake is given to
/// refuse the certificate.
const VERDICT_WAIT: Duration = Duration::from_secs(1);

/// Why calls to a Switchyard over TCP fail, found by [`diagnose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clue {
    /// Plaintext to a listener that speaks TLS.
    ServerSpeaksTls,
    /// The Switchyard refused the client's certificate, with this TLS alert.
    CertificateRefused(String),
    /// The client does not accept the Switchyard's certificate.
    ServerNotTrusted,
}

impl std::fmt::Display for Clue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const FLAGS: &str = "--tls-cert, --tls-key and --tls-ca (or the [tls] of --config FILE)";
        match self {
            Self::ServerSpeaksTls => write!(
                f,
                "the Switchyard speaks TLS and wants a client certificate: give one with {FLAGS}"
            ),
            Self::CertificateRefused(alert) => write!(
                f,
                "the Switchyard refused this client's certificate (TLS alert {alert}): give a \
                 client certificate of its cluster's CA (`switchyard cert client`) and that CA \
                 with {FLAGS}"
            ),
            Self::ServerNotTrusted => f.write_str(
                "the Switchyard's certificate is not accepted: --tls-ca (or [tls] ca) must be \
                 its cluster's CA, and --via an address its certificate names",
            ),
        }
    }
}

/// Why calls over TCP to `via` fail, when TLS is the reason: plaintext
/// meeting TLS, a certificate refused either way. Asks the server afresh,
/// bounded by [`PROBE_TIMEOUT`]; `None` when nothing is wrong with TLS
/// (or nothing could be learnt).
pub async fn diagnose(via: &Via) -> Option<Clue> {
    let Address::Tcp(addr) = via.address else {
        return None;
    };
    let probe = async {
        match &via.tls {
            None => {
                let speaks = tokio::task::spawn_blocking(move || speaks_tls(addr));
                speaks
                    .await
                    .unwrap_or(false)
                    .then_some(Clue::ServerSpeaksTls)
            }
            Some(paths) => tls_verdict(paths, addr).await,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
}

/// Whether the server at `addr` answers a TLS handshake. Blocking, each
/// step bounded by [`PROBE_TIMEOUT`]: no application data is sent.
fn speaks_tls(addr: SocketAddr) -> bool {
    // No root is trusted: a server that shows a certificate is refused,
    // and so proved to speak TLS.
    let Ok(builder) = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
    else {
        return false;
    };
    let config = builder
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let Ok(mut tls) = rustls::ClientConnection::new(Arc::new(config), name) else {
        return false;
    };
    let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    if tcp.set_read_timeout(Some(PROBE_TIMEOUT)).is_err()
        || tcp.set_write_timeout(Some(PROBE_TIMEOUT)).is_err()
    {
        return false;
    }
    // A handshake takes a few round trips; a server that keeps it going
    // longer is not worth waiting for.
    for _ in 0..8 {
        if !tls.is_handshaking() {
            return true;
        }
        if let Err(err) = tls.complete_io(&mut tcp) {
            return matches!(
                rustls_error(&err),
                Some(rustls::Error::InvalidCertificate(_))
            );
        }
    }
    false
}

/// What the Switchyard at `addr` makes of the certificate of `paths`: a
/// TLS handshake, then a wait for its first bytes. A server that accepted
/// the certificate sends its HTTP/2 SETTINGS; one that refused it (TLS
/// 1.3: after the handshake) an alert.
async fn tls_verdict(paths: &TlsPaths, addr: SocketAddr) -> Option<Clue> {
    let client = TlsConfigs::load(paths).ok()?.client().clone();
    let peer = PeerName::new(addr.ip(), None).ok()?;
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let mut tls = match client.connect(&peer, tcp).await {
        Ok(tls) => tls,
        Err(err) => return tls_clue(&err),
    };
    // The refusal follows the handshake within a round trip.
    let mut first = [0u8; 1];
    match tokio::time::timeout(VERDICT_WAIT, tls.read(&mut first)).await {
        Ok(Err(err)) => tls_clue(&err),
        _ => None,
    }
}

/// The [`Clue`] a TLS failure gives, if it is a verdict on a certificate.
fn tls_clue(err: &std::io::Error) -> Option<Clue> {
    match rustls_error(err)? {
        rustls::Error::AlertReceived(alert) => Some(Clue::CertificateRefused(format!("{alert:?}"))),
        rustls::Error::InvalidCertificate(_) => Some(Clue::ServerNotTrusted),
        _ => None,
    }
}

fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
    err.get_ref()?.downcast_ref::<rustls::Error>()
}

/// An error and its causes, `: `-separated (tonic's own message says only
/// "transport error").
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_forms() {
        assert_eq!(
            parse_via("unix:/run/s.sock").unwrap(),
            Address::Unix("/run/s.sock".into())
        );
        assert_eq!(
            parse_via("/run/s.sock").unwrap(),
            Address::Unix("/run/s.sock".into())
        );
        assert_eq!(
            parse_via("[fd00::1]:51001").unwrap(),
            Address::Tcp("[fd00::1]:51001".parse().unwrap())
        );
        assert_eq!(
            parse_via("fd00::1").unwrap(),
            Address::Tcp("[fd00::1]:51000".parse().unwrap())
        );
        assert_eq!(
            parse_via("[fd00::1]").unwrap(),
            Address::Tcp("[fd00::1]:51000".parse().unwrap())
        );
        for bad in ["", "unix:", "localhost", "fd00::1:99999", "[fd00::1"] {
            assert!(parse_via(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_come_from_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("switchyard.toml");
        std::fs::write(
            &config,
            "local_socket = \"/run/api.sock\"\n\
             listen = [\"[::]:51000\", \"unix:/run/sy/one.sock\", \"unix:/run/sy/two.sock\"]\n\
             [tls]\ncert = \"/etc/sy/m.crt\"\nkey = \"/etc/sy/m.key\"\nca = \"/etc/sy/ca.crt\"\n",
        )
        .unwrap();
        let none = TlsOptions::default();
        let via = resolve_via(None, Some(&config), &none).unwrap();
        assert_eq!(via.address, Address::Unix("/run/sy/one.sock".into()));
        assert_eq!(via.tls, None, "no TLS on a Unix socket");

        // Over TCP the file's TLS applies, each flag overriding its key.
        let flags = TlsOptions {
            cert: Some("/home/me/me.crt".into()),
            key: Some("/home/me/me.key".into()),
            ca: None,
        };
        let via = resolve_via(Some("[::1]:7000"), Some(&config), &flags).unwrap();
        assert_eq!(
            via.tls,
            Some(TlsPaths {
                cert: "/home/me/me.crt".into(),
                key: "/home/me/me.key".into(),
                ca: "/etc/sy/ca.crt".into(),
            })
        );

        // Flags alone must name all three.
        let plain = dir.path().join("plain.toml");
        std::fs::write(&plain, "local_socket = \"/run/api.sock\"\n").unwrap();
        let via = resolve_via(None, Some(&plain), &none).unwrap();
        assert_eq!(via.address, Address::Unix(DEFAULT_SOCKET.into()));
        let err = resolve_via(Some("[::1]:7000"), Some(&plain), &flags).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tls: cert, key and ca are all needed; missing: --tls-ca"
        );
        assert!(err.is_usage());

        let err = resolve_via(None, Some(&dir.path().join("nope.toml")), &none).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }
}
