//! Mutual TLS between machines and towards callers, with real handshakes:
//! fan-out over mTLS, handshakes refused without a good client certificate,
//! dialled machines that must be named by their certificate, roles enforced
//! on every machine whatever the route, forged metadata ignored, and
//! certificates rotated under a running stream.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use switchyard::config::TlsOptions;
use switchyard_director::{AuthzRule, MethodPattern};
use switchyard_engine::tls::{ALPN_H2, provider};
use tonic::Code;

const DESCRIBE: &str = "/machineinfo.v1.MachineInfo/Describe";
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_machines_fan_out_over_mutual_tls() {
    let (cluster, _certs) = Cluster::start_tls("tls-fan", |_, _, _| {}).await;
    let mut client = cluster.client(A);
    let reply = call_describe(&mut client, &[("machines", "*")])
        .await
        .unwrap();
    let names: Vec<_> = reply.messages.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, NAMES);
    for d in &reply.messages {
        assert!(entry_error(d.metadata.as_ref()).is_none(), "{d:?}");
    }
    let mut ticks = start_watch(&mut client, 3, 10, &[("machines", "*")]).await;
    let ticks = rest_of(&mut ticks).await;
    assert_eq!(ticks.len(), 9, "{ticks:?}");
    assert!(
        ticks
            .iter()
            .all(|t| entry_error(t.metadata.as_ref()).is_none())
    );
    cluster.shutdown().await;
}

/// A client on a TLS connection configured by hand: `client` is the
/// certificate it presents, if any.
async fn call_with(
    addr: std::net::SocketAddr,
    trusted_ca: &std::path::Path,
    client: Option<&switchyard_engine::tls::TlsPaths>,
) -> Result<(), tonic::Status> {
    call_with_alpn(addr, trusted_ca, client, vec![ALPN_H2.to_vec()]).await
}

/// As [`call_with`], offering the application protocols `alpn`.
async fn call_with_alpn(
    addr: std::net::SocketAddr,
    trusted_ca: &std::path::Path,
    client: Option<&switchyard_engine::tls::TlsPaths>,
    alpn: Vec<Vec<u8>>,
) -> Result<(), tonic::Status> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(trusted_ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(paths) => {
            let chain = CertificateDer::pem_file_iter(&paths.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&paths.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    }));
    let mut client = machine_info::pb::machine_info_client::MachineInfoClient::new(channel);
    bounded("a call over TLS", client.describe(describe(&[])))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_without_a_good_client_certificate_are_refused() {
    let (cluster, certs) = Cluster::start_tls("tls-refuse", |_, _, _| {}).await;
    let addr = cluster.nodes[A].addr;
    let ca = certs.dir.join("ca.crt");
    let served = cluster.calls(A).await;
    // A good certificate is served…
    let admin = certs.client("admin", &["admin"]);
    call_with(addr, &ca, Some(&admin)).await.unwrap();
    // …none, another CA's, an expired one are refused in the handshake.
    let other = Certs::create(&certs.dir.join("other"));
    let foreign = other.client("mallory", &["admin"]);
    let expired = certs.expired_client("late");
    for (what, client) in [
        ("no certificate", None),
        ("another CA", Some(&foreign)),
        ("expired", Some(&expired)),
    ] {
        // TLS 1.3: the client finishes its side before the server checks
        // its certificate, so how it sees the refusal varies (an alert, a
        // closed connection); that the service never sees the call is what
        // counts, checked below.
        let result = call_with(addr, &ca, client).await;
        assert!(result.is_err(), "{what}: {result:?}");
    }
    // A good certificate without ALPN `h2` (none offered, or another
    // protocol) is refused too.
    for alpn in [vec![], vec![b"http/1.1".to_vec()]] {
        let result = call_with_alpn(addr, &ca, Some(&admin), alpn.clone()).await;
        assert!(result.is_err(), "ALPN {alpn:?}: {result:?}");
    }
    // Plaintext is refused too.
    let result = call_describe(&mut tcp_client(addr), &[]).await;
    assert!(result.is_err(), "{result:?}");
    // Only the one good call reached the service (plus this check's own).
    assert_eq!(cluster.calls(A).await, served + 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialled_machine_must_be_named_by_its_certificate() {
    // gamma presents a certificate of another machine: fd00::9, "delta".
    let (cluster, _) = Cluster::start_tls("tls-san", |i, settings, certs| {
        if i == C {
            let wrong: TlsOptions = certs
                .issue_machine("wrong", &["fd00::9"], Some("delta"))
                .into();
            settings.start.tls = Some(wrong);
        }
    })
    .await;
    let reply = call_describe(&mut cluster.client(A), &[("machines", "*")])
        .await
        .unwrap();
    assert!(entry_error(reply.messages[B].metadata.as_ref()).is_none());
    let (code, message) = entry_error(reply.messages[C].metadata.as_ref()).expect("gamma refused");
    assert_eq!(code, Code::Unavailable);
    assert!(
        message.contains("names neither IP ::1 nor DNS gamma"),
        "{message}"
    );
    cluster.shutdown().await;
}

fn rules(reader_methods: &[&str]) -> Vec<AuthzRule> {
    vec![
        AuthzRule {
            roles: vec!["admin".into()],
            methods: vec!["*".parse().unwrap()],
        },
        AuthzRule {
            roles: vec!["reader".into()],
            methods: reader_methods
                .iter()
                .map(|m| m.parse::<MethodPattern>().unwrap())
                .collect(),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_on_every_machine_whatever_the_route() {
    // Readers may Describe on alpha and beta; gamma allows them nothing.
    let (cluster, certs) = Cluster::start_tls("tls-roles", |i, settings, _| {
        settings.live.authz = if i == C {
            rules(&[])
        } else {
            rules(&[DESCRIBE])
        };
    })
    .await;
    let reader = certs.client("rita", &["reader"]);
    let mut client = tls_client(cluster.nodes[A].addr, &reader);
    // Local: allowed method, denied method.
    call_describe(&mut client, &[]).await.unwrap();
    let status = bounded("a denied Watch", client.watch(watch(1, 1, &[])))
        .await
        .unwrap_err();
    assert_status(
        &status,
        Code::PermissionDenied,
        &["/machineinfo.v1.MachineInfo/Watch", "reader"],
    );
    // Through two hops: beta allows, gamma refuses on its own.
    let reply = call_describe(&mut client, &[("machine", "beta")])
        .await
        .unwrap();
    assert_untagged(&reply.messages[0], "beta");
    let status = call_describe(&mut client, &[("machine", "gamma")])
        .await
        .unwrap_err();
    assert_status(&status, Code::PermissionDenied, &["reader"]);
    let reply = call_describe(&mut client, &[("machines", "*")])
        .await
        .unwrap();
    let (code, _) = entry_error(reply.messages[C].metadata.as_ref()).expect("gamma refuses");
    assert_eq!(code, Code::PermissionDenied);
    // The admin may do anything anywhere.
    let reply = call_describe(&mut cluster.client(A), &[("machine", "gamma")])
        .await
        .unwrap();
    assert_untagged(&reply.messages[0], "gamma");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_authority_forged_by_a_caller_are_ignored() {
    let (cluster, certs) = Cluster::start_tls("tls-forge", |_, settings, _| {
        settings.live.authz = rules(&[DESCRIBE]);
    })
    .await;
    let reader = certs.client("mallory", &["reader"]);
    let mut client = tls_client(cluster.nodes[A].addr, &reader);
    // Claiming to be an admin does not make one.
    let status = bounded(
        "a forged-role Watch",
        client.watch(watch(1, 1, &[("switchyard-roles", "admin")])),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // Claiming the call was forwarded does not make alpha serve it locally.
    let reply = call_describe(
        &mut client,
        &[("proxy-authority", "x"), ("machine", "beta")],
    )
    .await
    .unwrap();
    assert_untagged(&reply.messages[0], "beta");
    // And beta saw alpha's authority, not the forged one.
    assert_ne!(reply.messages[0].proxy_authority, "x");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_outlives_a_certificate_rotation() {
    let (cluster, certs) = Cluster::start_tls("tls-rotate", |_, _, _| {}).await;
    let addr = cluster.nodes[A].addr;
    let admin = certs.client("admin", &["admin"]);
    let mut client = tls_client(addr, &admin);
    let mut stream = start_watch(&mut client, 15, 100, &[("machines", "alpha,beta")]).await;
    let mut ticks = vec![next_tick(&mut stream).await.unwrap()];

    // A broken pair keeps the old certificates in force.
    let stash = certs.dir.join("alpha.key.good");
    std::fs::rename(&certs.machine("alpha").key, &stash).unwrap();
    std::fs::copy(certs.machine("beta").key, certs.machine("alpha").key).unwrap();
    cluster.daemon(A).reload(&cluster.nodes[A].settings);
    call_describe(&mut tls_client(addr, &admin), &[])
        .await
        .unwrap();
    std::fs::rename(&stash, certs.machine("alpha").key).unwrap();

    // A client holding the old certificate, not connected yet.
    let mut stale = tls_client(addr, &admin);
    // A new CA and new certificates everywhere (same files), then reloads.
    let rotated = Certs::create(&certs.dir);
    for i in 0..NAMES.len() {
        cluster.daemon(i).reload(&cluster.nodes[i].settings);
    }
    // New connections need the new CA…
    let fresh = rotated.client("admin", &["admin"]);
    call_describe(&mut tls_client(addr, &fresh), &[("machines", "*")])
        .await
        .unwrap();
    // (TLS 1.3: the client learns of the refusal after its side is done.)
    let status = call_describe(&mut stale, &[]).await;
    assert!(
        status.is_err(),
        "the old certificate still works: {status:?}"
    );
    // …while the stream started before the rotation runs to its end.
    ticks.extend(rest_of(&mut stream).await);
    assert_eq!(ticks.len(), 30, "{ticks:?}");
    assert!(
        ticks
            .iter()
            .all(|t| entry_error(t.metadata.as_ref()).is_none())
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_with_client_certificates_on_the_tcp_listener() {
    let Some(python) = switchyard_testkit::interop::python() else {
        return;
    };
    let (cluster, certs) = Cluster::start_tls("tls-py", |_, _, _| {}).await;
    let admin = certs.client("py", &["admin"]);
    let target = cluster.nodes[A].addr.to_string();
    let stdout = switchyard_testkit::interop::run_client(
        &python,
        &[
            "--target",
            &target,
            "--describe",
            "--tls-ca",
            admin.ca.to_str().unwrap(),
            "--tls-cert",
            admin.cert.to_str().unwrap(),
            "--tls-key",
            admin.key.to_str().unwrap(),
            "--tls-name",
            "alpha",
        ],
    )
    .await;
    assert!(stdout.contains("ok   Describe"), "{stdout}");
    cluster.shutdown().await;
}

/// Rotation to new file names: a reload whose `[tls]` names other files
/// applies them (new connections present and trust the new ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_tls_paths() {
    let (mut cluster, certs) = Cluster::start_tls("tls-paths", |_, _, _| {}).await;
    let addr = cluster.nodes[A].addr;
    let old = certs.client("admin", &["admin"]);
    call_describe(&mut tls_client(addr, &old), &[])
        .await
        .unwrap();

    let rotated = Certs::create(&certs.dir.join("2027"));
    let mut settings = cluster.nodes[A].settings.clone();
    settings.start.tls = Some(rotated.machine("alpha").into());
    assert!(
        settings
            .needing_restart(&cluster.nodes[A].settings)
            .is_empty(),
        "new paths need no restart"
    );
    cluster.daemon(A).reload(&settings);
    cluster.nodes[A].settings = settings;

    let fresh = rotated.client("admin", &["admin"]);
    call_describe(&mut tls_client(addr, &fresh), &[])
        .await
        .unwrap();
    let status = call_describe(&mut tls_client(addr, &old), &[]).await;
    assert!(status.is_err(), "the old CA still works: {status:?}");
    cluster.shutdown().await;
}
