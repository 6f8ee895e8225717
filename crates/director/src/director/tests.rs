//! One test per routing rule and error of the director.

use std::sync::Arc;

use futures_util::FutureExt;
use http::HeaderValue;
use prost::Message;
use switchyard_engine::{Backend, Director as _, Mode, ReplyShape};
use tonic::Code;

use super::*;
use crate::pb;
use crate::registry::Machine;

/// Fan-out of the test method, which does not stream.
const FAN_OUT: Mode = Mode::OneToMany(ReplyShape::Unary);

const SOCKET: &str = "/run/switchyard-test/api.sock";

fn director() -> MachineDirector {
    with_options(DirectorOptions::default())
}

fn addr(text: &str) -> Option<MachineAddr> {
    Some(text.parse().unwrap())
}

fn director_at(local: &str) -> MachineDirector {
    let d = director();
    d.set_local_address(addr(local));
    d
}

fn with_options(options: DirectorOptions) -> MachineDirector {
    MachineDirector::new(SOCKET, DEFAULT_REMOTE_PORT, options)
}

fn machine(id: &str, name: &str, addr: &str) -> Machine {
    Machine {
        id: id.into(),
        name: name.into(),
        addr: addr.parse().unwrap(),
    }
}

fn registry() -> Registry {
    Registry::new(vec![
        machine("m-1", "alpha", "fd00::1"),
        machine("m-2", "beta", "[fd00::2]:51001"),
        machine("m-3", "gamma", "fd00::3"),
    ])
    .unwrap()
}

/// A director on machine `alpha` (fd00::1) with the sample registry.
fn registry_director() -> MachineDirector {
    with_options(DirectorOptions {
        registry: Some(registry()),
        local_address: addr("fd00::1"),
        ..DirectorOptions::default()
    })
}

fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri("http://[fd00::1]:51000/pkg.Service/Method");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

/// Routes through the engine's trait, as the proxy does.
fn route(
    d: &MachineDirector,
    headers: &[(&str, &str)],
) -> Result<(Mode, Vec<Arc<dyn Backend>>), Status> {
    let mut request = parts(headers);
    let route = d
        .route(&mut request)
        .now_or_never()
        .expect("routing does not wait")?;
    Ok((route.mode, route.backends))
}

fn names(backends: &[Arc<dyn Backend>]) -> Vec<String> {
    backends.iter().map(ToString::to_string).collect()
}

fn routed(d: &MachineDirector, headers: &[(&str, &str)]) -> (Mode, Vec<String>) {
    let (mode, backends) = route(d, headers).unwrap();
    (mode, names(&backends))
}

fn rejected(d: &MachineDirector, headers: &[(&str, &str)]) -> String {
    let err = route(d, headers).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    err.message().to_owned()
}

fn is_local(d: &MachineDirector, backend: &Arc<dyn Backend>) -> bool {
    let local: Arc<dyn Backend> = d.local_backend().clone();
    Arc::ptr_eq(backend, &local)
}

/// The metadata a backend writes into its fan-out entries.
fn metadata_of(backend: &Arc<dyn Backend>) -> pb::Metadata {
    let entry = backend
        .error_entry(ReplyShape::Streamed, &Status::internal("x"))
        .unwrap();
    let mut metadata = pb::Empty::decode(entry).unwrap().metadata.unwrap();
    metadata.error.clear();
    metadata.status = None;
    metadata
}

fn metadata(addr: &str, id: &str, name: &str) -> pb::Metadata {
    pb::Metadata {
        machine_addr: addr.into(),
        machine_id: id.into(),
        machine_name: name.into(),
        ..Default::default()
    }
}

// ---- no routing metadata, loop prevention ----

#[test]
fn no_metadata_goes_to_the_local_backend() {
    let d = director();
    let (mode, backends) = route(&d, &[]).unwrap();
    assert_eq!(mode, Mode::OneToOne);
    assert_eq!(backends.len(), 1);
    assert!(is_local(&d, &backends[0]));
    assert_eq!(names(&backends), ["local"]);
}

#[test]
fn other_metadata_goes_to_the_local_backend() {
    let d = director_at("fd00::1");
    assert_eq!(
        routed(&d, &[("authorization", "x"), ("x-machines", "fd00::2")]),
        (Mode::OneToOne, vec!["fd00::1".into()])
    );
}

#[test]
fn proxy_authority_means_local_even_with_machines() {
    let d = director_at("fd00::1");
    let headers = [
        ("proxy-authority", "[fd00::9]:51000"),
        ("machines", "fd00::2, fd00::3"),
    ];
    let (mode, backends) = route(&d, &headers).unwrap();
    assert_eq!(mode, Mode::OneToOne);
    assert_eq!(backends.len(), 1);
    assert!(is_local(&d, &backends[0]));
    // Also with the singular key, and with values that would be invalid.
    assert!(route(&d, &[("proxy-authority", "x"), ("machine", "fd00::2")]).is_ok());
    assert!(route(&d, &[("proxy-authority", ""), ("machines", "")]).is_ok());
    assert!(d.cached_remotes().is_empty());
}

// ---- machines: one target ----

#[test]
fn one_remote_machine_is_one_to_one() {
    let d = director_at("fd00::1");
    assert_eq!(
        routed(&d, &[("machines", "fd00::2")]),
        (Mode::OneToOne, vec!["fd00::2".into()])
    );
    assert_eq!(d.cached_remotes(), ["[fd00::2]:51000".parse().unwrap()]);
}

#[test]
fn this_machines_own_address_is_the_local_backend() {
    let d = director_at("fd00::1");
    for value in ["fd00::1", "FD00:0::1", "[fd00::1]", "[fd00::1]:51000"] {
        let (mode, backends) = route(&d, &[("machines", value)]).unwrap();
        assert_eq!(mode, Mode::OneToOne);
        assert!(is_local(&d, &backends[0]), "{value}");
    }
    assert!(d.cached_remotes().is_empty());
    // Same IP, another port: not this machine, and without a registry a
    // caller may not choose a port.
    let message = rejected(&d, &[("machines", "[fd00::1]:51001")]);
    assert!(message.contains("has a port"), "{message}");
}

#[test]
fn always_fan_out_makes_one_target_one_to_many() {
    let d = with_options(DirectorOptions {
        always_fan_out: true,
        local_address: addr("fd00::1"),
        ..DirectorOptions::default()
    });
    assert_eq!(
        routed(&d, &[("machines", "fd00::2")]),
        (FAN_OUT, vec!["fd00::2".into()])
    );
    assert_eq!(
        routed(&d, &[("machines", "fd00::1")]),
        (FAN_OUT, vec!["fd00::1".into()])
    );
    // No routing metadata, or the singular key: still one-to-one.
    assert_eq!(route(&d, &[]).unwrap().0, Mode::OneToOne);
    assert_eq!(
        route(&d, &[("machine", "fd00::2")]).unwrap().0,
        Mode::OneToOne
    );
}

// ---- machines: several targets ----

#[test]
fn several_machines_fan_out_in_the_given_order() {
    let d = director_at("fd00::1");
    let (mode, backends) = route(&d, &[("machines", "fd00::3,fd00::1 , fd00::2")]).unwrap();
    assert_eq!(mode, FAN_OUT);
    assert_eq!(names(&backends), ["fd00::3", "fd00::1", "fd00::2"]);
    assert!(is_local(&d, &backends[1]));
    assert_eq!(metadata_of(&backends[0]), metadata("fd00::3", "", ""));
    assert_eq!(metadata_of(&backends[1]), metadata("fd00::1", "", ""));
}

#[test]
fn repeated_entries_and_commas_combine() {
    let d = director();
    assert_eq!(
        routed(
            &d,
            &[("machines", "fd00::3"), ("machines", "fd00::2, fd00::4")]
        ),
        (
            FAN_OUT,
            vec!["fd00::3".into(), "fd00::2".into(), "fd00::4".into()]
        )
    );
}

#[test]
fn duplicate_machines_collapse() {
    let d = director_at("fd00::1");
    assert_eq!(
        routed(
            &d,
            &[("machines", "fd00::2, FD00::2, [fd00::2], fd00::3, fd00::2")]
        ),
        (FAN_OUT, vec!["fd00::2".into(), "fd00::3".into()])
    );
    // A list that names one machine twice is still a list: the tagged
    // fan-out shape, with that machine once.
    assert_eq!(
        routed(&d, &[("machines", "fd00::1, [fd00::1]")]),
        (FAN_OUT, vec!["fd00::1".into()])
    );
}

#[test]
fn remote_backends_are_cached_per_socket_address() {
    let d = director();
    let (_, first) = route(&d, &[("machines", "fd00::2, fd00::3")]).unwrap();
    let (_, second) = route(&d, &[("machines", "[fd00::2]")]).unwrap();
    assert!(Arc::ptr_eq(&first[0], &second[0]));
    assert_eq!(d.cached_remotes().len(), 2);
}

#[test]
fn an_unknown_local_address_routes_own_address_remotely() {
    // As in the reference: the remote hop then serves it locally
    // (proxy-authority).
    let d = director();
    let (_, backends) = route(&d, &[("machines", "fd00::1")]).unwrap();
    assert!(!is_local(&d, &backends[0]));
}

// ---- invalid machines metadata ----

#[test]
fn an_empty_value_is_invalid() {
    let d = director();
    for value in ["", " ", "fd00::2,", ",fd00::2", "fd00::2, ,fd00::3"] {
        let message = rejected(&d, &[("machines", value)]);
        assert!(message.contains("empty value"), "{value:?}: {message}");
        assert!(message.contains("\"machines\""), "{message}");
    }
    let message = rejected(&d, &[("machines", "fd00::2"), ("machines", "")]);
    assert!(message.contains("empty value"), "{message}");
    assert!(
        d.cached_remotes().is_empty(),
        "nothing is cached for a rejected call"
    );
}

#[test]
fn a_value_that_is_not_ipv6_is_invalid_naming_it() {
    let d = director();
    for value in ["127.0.0.1", "example.com", "[fd00::1]:0", "fd00::1%eth0"] {
        let message = rejected(&d, &[("machines", value)]);
        assert!(message.contains(&format!("{value:?}")), "{message}");
    }
    let message = rejected(&d, &[("machines", "fd00::2, alpha, 10.0.0.1")]);
    assert!(message.contains("\"alpha\""), "{message}");
    assert!(message.contains("\"10.0.0.1\""), "{message}");
    assert!(!message.contains("fd00::2"), "{message}");
    let message = rejected(&d, &[("machines", "*")]);
    assert!(message.contains("registry"), "{message}");
    assert!(d.cached_remotes().is_empty());
}

#[test]
fn non_utf8_metadata_is_invalid() {
    let d = director();
    let mut request = parts(&[]);
    request.headers.insert(
        "machines",
        HeaderValue::from_bytes(b"fd00::2,\xff").unwrap(),
    );
    let err = d
        .route_metadata("/pkg.Service/Method", &request.headers)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("UTF-8"), "{}", err.message());
}

// ---- the singular machine key ----

#[test]
fn machine_is_an_explicit_one_to_one() {
    let d = director_at("fd00::1");
    assert_eq!(
        routed(&d, &[("machine", "fd00::2")]),
        (Mode::OneToOne, vec!["fd00::2".into()])
    );
    let (mode, backends) = route(&d, &[("machine", "fd00::1")]).unwrap();
    assert_eq!(mode, Mode::OneToOne);
    assert!(is_local(&d, &backends[0]));
}

#[test]
fn machine_with_several_values_is_invalid() {
    let d = director();
    let message = rejected(&d, &[("machine", "fd00::2, fd00::3")]);
    assert!(message.contains("exactly one machine, got 2"), "{message}");
    assert!(message.contains("\"fd00::2\", \"fd00::3\""), "{message}");
    let message = rejected(&d, &[("machine", "fd00::2"), ("machine", "fd00::3")]);
    assert!(message.contains("got 2"), "{message}");
    let message = rejected(&d, &[("machine", "")]);
    assert!(message.contains("empty value"), "{message}");
    let message = rejected(&d, &[("machine", "localhost")]);
    assert!(message.contains("\"localhost\""), "{message}");
}

#[test]
fn machine_and_machines_together_are_invalid() {
    let d = director();
    let message = rejected(&d, &[("machine", "fd00::2"), ("machines", "fd00::2")]);
    assert!(message.contains("both"), "{message}");
}

// ---- with a registry ----

#[test]
fn registry_names_ids_and_addresses() {
    let d = registry_director();
    let (mode, backends) = route(&d, &[("machines", "gamma, m-2, fd00::1")]).unwrap();
    assert_eq!(mode, FAN_OUT);
    assert_eq!(names(&backends), ["fd00::3", "[fd00::2]:51001", "fd00::1"]);
    assert!(is_local(&d, &backends[2]));
    assert_eq!(
        metadata_of(&backends[0]),
        metadata("fd00::3", "m-3", "gamma")
    );
    assert_eq!(
        metadata_of(&backends[1]),
        metadata("[fd00::2]:51001", "m-2", "beta")
    );
    assert_eq!(
        metadata_of(&backends[2]),
        metadata("fd00::1", "m-1", "alpha")
    );
    assert_eq!(
        d.cached_remotes(),
        [
            "[fd00::2]:51001".parse().unwrap(),
            "[fd00::3]:51000".parse().unwrap()
        ]
    );
}

#[test]
fn registry_addresses_match_with_or_without_the_default_port() {
    let d = registry_director();
    for value in ["fd00::3", "[fd00::3]:51000", "[fd00::3]"] {
        assert_eq!(
            routed(&d, &[("machines", value)]),
            (Mode::OneToOne, vec!["fd00::3".into()])
        );
    }
    // beta listens on 51001: its address without that port is another socket.
    let message = rejected(&d, &[("machines", "fd00::2")]);
    assert!(
        message.contains("unknown machines: \"fd00::2\""),
        "{message}"
    );
}

#[test]
fn star_is_every_registered_machine_in_registry_order() {
    let d = registry_director();
    let (mode, backends) = route(&d, &[("machines", "*")]).unwrap();
    assert_eq!(mode, FAN_OUT);
    assert_eq!(names(&backends), ["fd00::1", "[fd00::2]:51001", "fd00::3"]);
    assert!(is_local(&d, &backends[0]));
    // Mixed with explicit values: first mention wins, duplicates collapse.
    assert_eq!(
        routed(&d, &[("machines", "gamma, *, beta")]).1,
        ["fd00::3", "fd00::1", "[fd00::2]:51001"]
    );
}

#[test]
fn star_fans_out_even_to_a_single_machine() {
    let single = Registry::new(vec![registry().machines()[2].clone()]).unwrap();
    let d = with_options(DirectorOptions {
        registry: Some(single),
        ..DirectorOptions::default()
    });
    assert_eq!(
        routed(&d, &[("machines", "*")]),
        (FAN_OUT, vec!["fd00::3".into()])
    );
    // The singular key accepts `*` when it means exactly one machine.
    assert_eq!(
        routed(&d, &[("machine", "*")]),
        (Mode::OneToOne, vec!["fd00::3".into()])
    );
}

#[test]
fn star_with_an_empty_registry_is_invalid() {
    let d = with_options(DirectorOptions {
        registry: Some(Registry::new(Vec::new()).unwrap()),
        ..DirectorOptions::default()
    });
    let message = rejected(&d, &[("machines", "*")]);
    assert!(message.contains("registry is empty"), "{message}");
}

#[test]
fn unknown_machines_are_all_listed() {
    let d = registry_director();
    let message = rejected(
        &d,
        &[
            ("machines", "alpha, delta, fd00::9, delta"),
            ("machines", "127.0.0.1"),
        ],
    );
    assert!(
        message.contains(r#"unknown machines: "delta", "fd00::9", "127.0.0.1""#),
        "{message}"
    );
    assert!(d.cached_remotes().is_empty());
}

#[test]
fn registry_allows_this_machine_even_when_unregistered() {
    let d = with_options(DirectorOptions {
        registry: Some(registry()),
        local_address: addr("fd00::42"),
        ..DirectorOptions::default()
    });
    let (_, backends) = route(&d, &[("machines", "fd00::42, beta")]).unwrap();
    assert!(is_local(&d, &backends[0]));
    assert_eq!(metadata_of(&backends[0]), metadata("fd00::42", "", ""));
}

#[test]
fn machine_with_registry() {
    let d = registry_director();
    assert_eq!(
        routed(&d, &[("machine", "beta")]),
        (Mode::OneToOne, vec!["[fd00::2]:51001".into()])
    );
    let message = rejected(&d, &[("machine", "*")]);
    assert!(message.contains("matches 3"), "{message}");
    let message = rejected(&d, &[("machine", "delta")]);
    assert!(message.contains("unknown machines: \"delta\""), "{message}");
}

// ---- runtime changes ----

#[test]
fn update_local_address_changes_what_this_machine_is() {
    let d = director();
    let (_, backends) = route(&d, &[("machines", "fd00::1, fd00::2")]).unwrap();
    assert!(!is_local(&d, &backends[0]));
    assert_eq!(d.cached_remotes().len(), 2);

    d.set_local_address(addr("fd00::1"));
    assert_eq!(d.local_address(), addr("fd00::1"));
    assert_eq!(d.local_backend().to_string(), "fd00::1");
    // The cached remote for what is now this machine is forgotten.
    assert_eq!(d.cached_remotes(), ["[fd00::2]:51000".parse().unwrap()]);
    let (_, backends) = route(&d, &[("machines", "fd00::1, fd00::2")]).unwrap();
    assert!(is_local(&d, &backends[0]));
    assert_eq!(metadata_of(&backends[0]), metadata("fd00::1", "", ""));

    d.set_local_address(None);
    assert_eq!(d.local_address(), None);
    assert_eq!(d.local_backend().to_string(), "local");
}

#[test]
fn local_backend_carries_registry_identity() {
    let d = registry_director();
    assert_eq!(
        *d.local_backend().info(),
        MachineInfo {
            addr: "fd00::1".into(),
            id: "m-1".into(),
            name: "alpha".into(),
        }
    );
    d.set_local_address(addr("fd00::3"));
    assert_eq!(d.local_backend().info().name, "gamma");
    d.set_registry(None);
    assert_eq!(*d.local_backend().info(), MachineInfo::from_addr("fd00::3"));
}

#[test]
fn flush_forgets_every_remote_but_running_calls_keep_theirs() {
    let d = director();
    let (_, before) = route(&d, &[("machines", "fd00::2, fd00::3")]).unwrap();
    d.flush_remote_backends();
    assert!(d.cached_remotes().is_empty());
    let (_, after) = route(&d, &[("machines", "fd00::2")]).unwrap();
    assert!(
        !Arc::ptr_eq(&before[0], &after[0]),
        "a new backend dials afresh"
    );
    // The old backend is still usable by the call that holds it.
    assert_eq!(before[0].to_string(), "fd00::2");
}

#[test]
fn registry_reload_prunes_removed_and_changed_machines() {
    let d = registry_director();
    let (_, old) = route(&d, &[("machines", "beta, gamma")]).unwrap();
    assert_eq!(d.cached_remotes().len(), 2);

    // gamma removed, beta renamed.
    let mut machines = registry().machines().to_vec();
    machines.truncate(2);
    machines[1].name = "bravo".into();
    d.set_registry(Some(Registry::new(machines).unwrap()));
    assert!(d.cached_remotes().is_empty());
    let message = rejected(&d, &[("machines", "gamma")]);
    assert!(message.contains("\"gamma\""), "{message}");
    let (_, new) = route(&d, &[("machines", "bravo")]).unwrap();
    assert_eq!(
        metadata_of(&new[0]),
        metadata("[fd00::2]:51001", "m-2", "bravo")
    );
    assert!(!Arc::ptr_eq(&old[0], &new[0]));

    // An unchanged machine keeps its cached backend across a reload.
    d.set_registry(d.registry().map(|r| (*r).clone()));
    let (_, again) = route(&d, &[("machines", "bravo")]).unwrap();
    assert!(Arc::ptr_eq(&new[0], &again[0]));

    // Without a registry, names no longer resolve and addresses are plain.
    d.set_registry(None);
    assert!(d.cached_remotes().is_empty());
    assert!(route(&d, &[("machines", "bravo")]).is_err());
    let (_, plain) = route(&d, &[("machines", "fd00::2")]).unwrap();
    assert_eq!(metadata_of(&plain[0]), metadata("fd00::2", "", ""));
}

#[test]
fn custom_remote_port() {
    let d = MachineDirector::new(SOCKET, 7000, DirectorOptions::default());
    d.set_local_address(addr("fd00::1"));
    assert_eq!(d.remote_port(), 7000);
    let (_, backends) = route(&d, &[("machines", "fd00::2, fd00::3")]).unwrap();
    assert_eq!(names(&backends), ["fd00::2", "fd00::3"]);
    assert_eq!(
        d.cached_remotes(),
        [
            "[fd00::2]:7000".parse().unwrap(),
            "[fd00::3]:7000".parse().unwrap()
        ]
    );
    // Only the remote port is ever dialled: a caller cannot pick another.
    let message = rejected(&d, &[("machines", "[fd00::3]:51000")]);
    assert!(message.contains("has a port"), "{message}");
    let (_, backends) = route(&d, &[("machines", "[fd00::1]:7000")]).unwrap();
    assert!(is_local(&d, &backends[0]));
}

#[test]
fn closed_director_refuses_calls() {
    let d = director();
    route(&d, &[("machines", "fd00::2")]).unwrap();
    d.close();
    assert!(d.cached_remotes().is_empty());
    let err = route(&d, &[]).unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[test]
fn machines_lists_this_one_and_the_registry_with_their_state() {
    let d = registry_director();
    let machines = d.machines();
    let names: Vec<_> = machines.iter().map(|m| m.info.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert!(machines[0].local && !machines[1].local);
    assert!(
        machines
            .iter()
            .all(|m| m.state == switchyard_engine::ChannelState::Idle)
    );
    // Without a registry: this machine and the machines called so far.
    let d = director_at("fd00::1");
    route(&d, &[("machines", "fd00::3")]).unwrap();
    let addrs: Vec<_> = d.machines().iter().map(|m| m.info.addr.clone()).collect();
    assert_eq!(addrs, ["fd00::1", "fd00::3"]);
}

fn alive(ids: &[&str]) -> Option<std::collections::HashSet<String>> {
    Some(ids.iter().map(|id| (*id).to_owned()).collect())
}

/// The error entry a backend contributes in fan-out, decoded.
fn entry_of(backend: &Arc<dyn Backend>) -> (pb::Metadata, Status) {
    let request = parts(&[]);
    let status = match backend.connect(&request).now_or_never() {
        Some(Err(status)) => status,
        _ => panic!("{backend} should fail at once"),
    };
    let entry = backend.error_entry(ReplyShape::Streamed, &status).unwrap();
    (pb::Empty::decode(entry).unwrap().metadata.unwrap(), status)
}

#[test]
fn machines_without_a_heartbeat_are_answered_down_without_dialling() {
    let d = registry_director();
    d.set_liveness(alive(&["m-1", "m-3"]));
    // `*` still names every machine: beta is there, as a down entry.
    let (mode, backends) = route(&d, &[("machines", "*")]).unwrap();
    assert_eq!(mode, FAN_OUT);
    assert_eq!(names(&backends), ["fd00::1", "[fd00::2]:51001", "fd00::3"]);
    assert!(is_local(&d, &backends[0]));
    let (metadata, status) = entry_of(&backends[1]);
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "machine beta is down (no heartbeat)");
    assert_eq!(
        (metadata.machine_id.as_str(), metadata.machine_name.as_str()),
        ("m-2", "beta")
    );
    assert_eq!(metadata.machine_addr, "[fd00::2]:51001");
    assert_eq!(metadata.error, "machine beta is down (no heartbeat)");
    // Nothing was cached, let alone dialled, for the down machine.
    assert_eq!(d.cached_remotes(), ["[fd00::3]:51000".parse().unwrap()]);
    // One-to-one to a down machine fails the same way, at once.
    let (mode, backends) = route(&d, &[("machine", "beta")]).unwrap();
    assert_eq!(mode, Mode::OneToOne);
    assert_eq!(
        entry_of(&backends[0]).1.message(),
        "machine beta is down (no heartbeat)"
    );
    // Its status says so.
    let states: Vec<_> = d.machines().into_iter().map(|m| m.state).collect();
    assert_eq!(
        states[1],
        switchyard_engine::ChannelState::Down {
            cause: "no heartbeat".into()
        }
    );
    assert_eq!(states[2], switchyard_engine::ChannelState::Idle);
}

#[test]
fn this_machine_is_never_down_by_heartbeat() {
    let d = registry_director();
    d.set_liveness(alive(&[]));
    let (_, backends) = route(&d, &[("machines", "alpha")]).unwrap();
    assert!(is_local(&d, &backends[0]));
    assert!(d.machines()[0].local);
    assert_ne!(
        d.machines()[0].state,
        switchyard_engine::ChannelState::Down {
            cause: "no heartbeat".into()
        }
    );
}

#[test]
fn going_down_forgets_the_connection_and_coming_back_dials_afresh() {
    let d = registry_director();
    d.set_liveness(alive(&["m-1", "m-2", "m-3"]));
    let (_, before) = route(&d, &[("machines", "beta")]).unwrap();
    assert_eq!(d.cached_remotes().len(), 1);
    d.set_liveness(alive(&["m-1", "m-3"]));
    assert!(
        d.cached_remotes().is_empty(),
        "a down machine's connection is forgotten"
    );
    // A call already holding the backend keeps it.
    assert_eq!(before[0].to_string(), "[fd00::2]:51001");
    d.set_liveness(alive(&["m-1", "m-2", "m-3"]));
    let (_, after) = route(&d, &[("machines", "beta")]).unwrap();
    assert!(!Arc::ptr_eq(&before[0], &after[0]));
    // Liveness unknown: every machine is up.
    d.set_liveness(None);
    let (_, backends) = route(&d, &[("machines", "*")]).unwrap();
    assert!(Arc::ptr_eq(&backends[1], &after[0]));
}

#[test]
fn registry_and_liveness_change_together() {
    let d = registry_director();
    d.set_liveness(alive(&["m-1", "m-2", "m-3"]));
    let mut machines = registry().machines().to_vec();
    machines.push(machine("m-4", "delta", "fd00::4"));
    // Delta arrives with its heartbeat: never seen as down.
    d.set_registry_and_liveness(
        Some(Registry::new(machines).unwrap()),
        alive(&["m-1", "m-2", "m-3", "m-4"]),
    );
    let (_, backends) = route(&d, &[("machines", "delta")]).unwrap();
    assert_eq!(names(&backends), ["fd00::4"]);
    assert_eq!(d.cached_remotes().len(), 1, "delta is dialled, not down");
    // Without a registry, liveness does not apply.
    d.set_registry_and_liveness(None, alive(&[]));
    let (_, backends) = route(&d, &[("machines", "fd00::4")]).unwrap();
    assert_eq!(d.cached_remotes(), ["[fd00::4]:51000".parse().unwrap()]);
    assert_eq!(names(&backends), ["fd00::4"]);
}

// ---- registry entries follow the address rule ----

#[test]
fn registry_entries_that_may_not_be_dialled_are_left_out_until_admitted() {
    let hostile = Registry::new(vec![
        machine("m-1", "alpha", "fd00::1"),
        machine("m-2", "mapped", "::ffff:127.0.0.1"),
        machine("m-3", "loop", "[::1]:51001"),
        machine("m-4", "nat64", "64:ff9b::7f00:1"),
        machine("m-5", "sixtofour", "2002:7f00:1::1"),
    ])
    .unwrap();
    let d = with_options(DirectorOptions {
        registry: Some(hostile.clone()),
        local_address: addr("fd00::9"),
        ..DirectorOptions::default()
    });
    let ids = |d: &MachineDirector| -> Vec<String> {
        d.registry()
            .unwrap()
            .machines()
            .iter()
            .map(|m| m.id.clone())
            .collect()
    };
    assert_eq!(ids(&d), ["m-1"]);
    assert_eq!(routed(&d, &[("machines", "*")]).1, ["fd00::1"]);
    let message = rejected(&d, &[("machines", "loop")]);
    assert!(message.contains("unknown"), "{message}");
    // allowed_networks decide alone: they admit loopback and drop the rest.
    d.set_allowed_networks(Some(vec!["::1/128".parse().unwrap()]));
    assert_eq!(ids(&d), ["m-3"]);
    assert_eq!(routed(&d, &[("machines", "loop")]).1, ["[::1]:51001"]);
    d.set_allowed_networks(None);
    assert_eq!(ids(&d), ["m-1"]);
    // A registry set later passes the same rule.
    d.set_registry_and_liveness(Some(hostile), None);
    assert_eq!(ids(&d), ["m-1"]);
    d.set_registry(None);
    assert!(d.registry().is_none());
}

#[test]
fn the_machine_timeout_bounds_fan_out_legs_and_is_never_forwarded() {
    let d = with_options(DirectorOptions {
        streamed: StreamedMethods::from_list(["/pkg.Service/Watch"]),
        ..DirectorOptions::default()
    });
    let fan_out = |extra: &[(&str, &str)], method: &str| {
        let mut request = parts(&[&[("machines", "fd00::2,fd00::3")], extra].concat());
        request.uri = format!("http://[fd00::1]:51000{method}").parse().unwrap();
        let route = d.route(&mut request).now_or_never().unwrap();
        assert!(!request.headers.contains_key(MACHINE_TIMEOUT), "forwarded");
        route
    };
    let unary = "/pkg.Service/Method";
    // Unary: the caller's value, else the default.
    let route = fan_out(&[("switchyard-machine-timeout", "500m")], unary).unwrap();
    assert_eq!(route.leg_timeout, Some(Duration::from_millis(500)));
    let route = fan_out(&[], unary).unwrap();
    assert_eq!(route.leg_timeout, Some(DEFAULT_MACHINE_TIMEOUT));
    // Streamed: only the caller's.
    assert_eq!(
        fan_out(&[], "/pkg.Service/Watch").unwrap().leg_timeout,
        None
    );
    let route = fan_out(
        &[("switchyard-machine-timeout", "2S")],
        "/pkg.Service/Watch",
    )
    .unwrap();
    assert_eq!(route.leg_timeout, Some(Duration::from_secs(2)));
    // A bad value names the header.
    let err = fan_out(&[("switchyard-machine-timeout", "soon")], unary).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("switchyard-machine-timeout"),
        "{err:?}"
    );
    // One-to-one: removed too, no bound (the caller's deadline applies).
    let mut request = parts(&[("machine", "fd00::2"), ("switchyard-machine-timeout", "1S")]);
    let route = d.route(&mut request).now_or_never().unwrap().unwrap();
    assert_eq!((route.mode, route.leg_timeout), (Mode::OneToOne, None));
    assert!(!request.headers.contains_key(MACHINE_TIMEOUT));
    // Off: no default.
    let off = with_options(DirectorOptions {
        machine_timeout: None,
        ..DirectorOptions::default()
    });
    let mut request = parts(&[("machines", "fd00::2,fd00::3")]);
    let route = off.route(&mut request).now_or_never().unwrap().unwrap();
    assert_eq!(route.leg_timeout, None);
}

#[test]
fn the_envelope_fans_out_any_method_and_its_header_is_not_forwarded() {
    let d = director();
    for headers in [
        vec![
            ("machines", "fd00::2,fd00::3"),
            ("switchyard-reply", "envelope"),
        ],
        vec![("machine", "fd00::2"), ("switchyard-reply", "envelope")],
    ] {
        let mut request = parts(&headers);
        let route = d.route(&mut request).now_or_never().unwrap().unwrap();
        assert_eq!(
            route.mode,
            Mode::OneToMany(ReplyShape::Envelope),
            "{headers:?}"
        );
        assert!(!request.headers.contains_key(REPLY));
    }
    // `tagged` is the default shape.
    let mut request = parts(&[
        ("machines", "fd00::2,fd00::3"),
        ("switchyard-reply", "tagged"),
    ]);
    let route = d.route(&mut request).now_or_never().unwrap().unwrap();
    assert_eq!(route.mode, FAN_OUT);
    assert!(
        rejected(
            &d,
            &[("machines", "fd00::2,fd00::3"), ("switchyard-reply", "x")]
        )
        .contains("switchyard-reply")
    );
}
