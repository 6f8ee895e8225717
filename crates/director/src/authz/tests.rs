//! The policy: patterns, rules, roles by transport, forged metadata.

use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;

use super::*;

fn pattern(s: &str) -> MethodPattern {
    s.parse().unwrap()
}

/// A certificate with subject `CN=name, O=role…` (self-signed: the TLS
/// layer verifies chains, the policy only reads subjects).
fn certificate(name: &str, roles: &[&str]) -> CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    if let Some(role) = roles.first() {
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, *role);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().clone()
}

fn request(
    peer: Option<Peer>,
    headers: &[(http::HeaderName, &str)],
    method: &str,
) -> http::request::Parts {
    let mut builder = http::Request::builder().method("POST").uri(method);
    for (k, v) in headers {
        builder = builder.header(k, *v);
    }
    let (mut parts, ()) = builder.body(()).unwrap().into_parts();
    if let Some(peer) = peer {
        parts.extensions.insert(Arc::new(peer));
    }
    parts
}

fn tcp() -> PeerAddr {
    PeerAddr::Tcp("[fd00::9]:40000".parse::<SocketAddr>().unwrap())
}

fn unix() -> PeerAddr {
    PeerAddr::Unix {
        uid: Some(0),
        pid: Some(1),
    }
}

fn reader_policy() -> Policy {
    Policy {
        tls: true,
        rules: vec![
            AuthzRule {
                roles: vec!["admin".into()],
                methods: vec![pattern("*")],
            },
            AuthzRule {
                roles: vec!["reader".into()],
                methods: vec![
                    pattern("/machineinfo.v1.MachineInfo/*"),
                    pattern("/grpc.health.v1.Health/Check"),
                ],
            },
        ],
        ..Policy::default()
    }
}

const DESCRIBE: &str = "/machineinfo.v1.MachineInfo/Describe";
const REBOOT: &str = "/machine.v1.Machine/Reboot";

#[test]
fn patterns_match_everything_a_service_or_one_method() {
    assert!(pattern("*").matches(REBOOT));
    assert!(pattern("/machineinfo.v1.MachineInfo/*").matches(DESCRIBE));
    assert!(!pattern("/machineinfo.v1.MachineInfo/*").matches(REBOOT));
    assert!(
        !pattern("/machineinfo.v1.MachineInfo/*").matches("/machineinfo.v1.MachineInfoX/Describe")
    );
    assert!(pattern(DESCRIBE).matches(DESCRIBE));
    assert!(!pattern(DESCRIBE).matches("/machineinfo.v1.MachineInfo/Watch"));
    for bad in ["", "Describe", "/a.B", "/a.B/C/D", "/*/C", "/a.B/C*", "**"] {
        assert!(bad.parse::<MethodPattern>().is_err(), "{bad}");
    }
    assert_eq!(pattern("/a.B/*").to_string(), "/a.B/*");
}

#[test]
fn rules_grant_methods_to_roles() {
    let policy = reader_policy();
    let roles = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(policy.allows(&roles(&["admin"]), REBOOT));
    assert!(policy.allows(&roles(&["reader"]), DESCRIBE));
    assert!(!policy.allows(&roles(&["reader"]), REBOOT));
    assert!(!policy.allows(&roles(&[]), DESCRIBE));
    assert!(
        Policy::default().allows(&roles(&[]), REBOOT),
        "no rules: all allowed"
    );
}

#[test]
fn a_certificates_organizations_are_its_roles() {
    let policy = reader_policy();
    let reader = Peer::new(tcp(), Some(vec![certificate("alice", &["reader"])]));
    let mut parts = request(Some(reader), &[], DESCRIBE);
    let caller = policy.admit(&mut parts).unwrap();
    assert_eq!(&*caller.roles, ["reader"]);
    assert_eq!(
        caller.identity.unwrap().common_name.as_deref(),
        Some("alice")
    );
    // Recorded for the next hop.
    assert_eq!(parts.headers[ROLES_HEADER], "reader");

    let reader = Peer::new(tcp(), Some(vec![certificate("alice", &["reader"])]));
    let mut parts = request(Some(reader), &[], REBOOT);
    let err = policy.admit(&mut parts).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains(REBOOT) && err.message().contains("reader"),
        "{}",
        err.message()
    );
}

#[test]
fn unix_callers_get_the_unix_roles_and_plaintext_tcp_callers_none() {
    let policy = reader_policy();
    let mut parts = request(Some(Peer::new(unix(), None)), &[], REBOOT);
    assert_eq!(&*policy.admit(&mut parts).unwrap().roles, ["admin"]);
    let mut parts = request(Some(Peer::new(tcp(), None)), &[], DESCRIBE);
    assert!(policy.admit(&mut parts).is_err());
}

#[test]
fn only_machines_may_forward_roles_and_authority() {
    let policy = reader_policy();
    // A reader forging an admin role and a forwarded call: both dropped.
    let reader = Peer::new(tcp(), Some(vec![certificate("mallory", &["reader"])]));
    let forged = [(ROLES_HEADER, "admin"), (PROXY_AUTHORITY, "x")];
    let mut parts = request(Some(reader), &forged, REBOOT);
    assert!(policy.admit(&mut parts).is_err());
    let reader = Peer::new(tcp(), Some(vec![certificate("mallory", &["reader"])]));
    let mut parts = request(Some(reader), &forged, DESCRIBE);
    let caller = policy.admit(&mut parts).unwrap();
    assert_eq!(&*caller.roles, ["reader"]);
    assert!(parts.headers.get(PROXY_AUTHORITY).is_none());
    assert_eq!(parts.headers[ROLES_HEADER], "reader");
    // The same from the Unix socket: roles dropped, authority too (TLS on).
    let mut parts = request(Some(Peer::new(unix(), None)), &forged, REBOOT);
    assert!(policy.admit(&mut parts).is_ok());
    assert!(parts.headers.get(PROXY_AUTHORITY).is_none());

    // A machine forwarding a reader's call: the reader's roles apply.
    let machine = || Peer::new(tcp(), Some(vec![certificate("beta", &["machine"])]));
    let forwarded = [
        (ROLES_HEADER, "reader"),
        (PROXY_AUTHORITY, "[fd00::1]:51000"),
    ];
    let mut parts = request(Some(machine()), &forwarded, REBOOT);
    assert!(
        policy.admit(&mut parts).is_err(),
        "a reader stays a reader on every machine"
    );
    let mut parts = request(Some(machine()), &forwarded, DESCRIBE);
    assert_eq!(&*policy.admit(&mut parts).unwrap().roles, ["reader"]);
    assert_eq!(parts.headers[PROXY_AUTHORITY], "[fd00::1]:51000");
}

#[test]
fn without_tls_proxy_authority_is_kept() {
    let policy = Policy::default();
    let mut parts = request(
        Some(Peer::new(tcp(), None)),
        &[(PROXY_AUTHORITY, "x")],
        REBOOT,
    );
    policy.admit(&mut parts).unwrap();
    assert_eq!(parts.headers[PROXY_AUTHORITY], "x");
}

#[test]
fn fan_out_is_limited_to_the_methods_listed() {
    let policy = Policy {
        fan_out_methods: Some(vec![pattern("/machineinfo.v1.MachineInfo/*")]),
        ..Policy::default()
    };
    assert!(policy.check_fan_out(DESCRIBE).is_ok());
    let err = policy.check_fan_out(REBOOT).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(Policy::default().check_fan_out(REBOOT).is_ok());
}
