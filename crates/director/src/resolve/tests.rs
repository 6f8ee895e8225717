//! The resolution rule, one test per clause.

use super::*;

fn registry() -> Registry {
    let machine = |id: &str, name: &str, addr: &str| Machine {
        id: id.into(),
        name: name.into(),
        addr: addr.parse().unwrap(),
    };
    Registry::new(vec![
        machine("m-1", "alpha", "fd00::1"),
        machine("m-2", "beta", "[fd00::2]:51001"),
        machine("m-3", "gamma", "fd00::3"),
    ])
    .unwrap()
}

fn socket(s: &str) -> SocketAddrV6 {
    s.parse().unwrap()
}

fn remote(s: &str, info: MachineInfo) -> Destination {
    Destination::Remote(socket(s), info)
}

fn named(addr: &str, id: &str, name: &str) -> MachineInfo {
    MachineInfo {
        addr: addr.into(),
        id: id.into(),
        name: name.into(),
    }
}

fn resolver<'a>(registry: Option<&'a Registry>, local: &str) -> Resolver<'a> {
    Resolver {
        local: Some(local.parse().unwrap()),
        registry,
        remote_port: 51000,
        allowed_networks: None,
        max_targets: 256,
    }
}

fn refused(r: &Resolver<'_>, values: &[&str]) -> String {
    r.resolve(values).unwrap_err().to_string()
}

#[test]
fn registry_values_are_ids_names_sockets_and_star() {
    let registry = registry();
    let r = resolver(Some(&registry), "fd00::1");
    let got = r
        .resolve(&["gamma", "m-2", "[fd00::3]:51000", "fd00::1", "*"])
        .unwrap();
    assert_eq!(
        got.destinations,
        [
            remote("[fd00::3]:51000", named("fd00::3", "m-3", "gamma")),
            remote("[fd00::2]:51001", named("[fd00::2]:51001", "m-2", "beta")),
            Destination::Local,
        ]
    );
    assert!(got.wildcard);
    assert_eq!(
        r.resolve(&["delta", "fd00::2", "delta", "10.0.0.1"]),
        Err(ResolveError::Unknown(vec![
            "delta".into(),
            "fd00::2".into(),
            "10.0.0.1".into()
        ]))
    );
    assert_eq!(r.local_info(), named("fd00::1", "m-1", "alpha"));
    assert_eq!(r.remote_info(socket("[fd00::1]:51000")), None);
    assert_eq!(r.remote_info(socket("[fd00::9]:51000")), None);
}

#[test]
fn registered_machines_may_use_any_address() {
    // Ports are fine in a registry, and loopback once allowed_networks
    // admitted it: the director applies that rule to a registry before the
    // resolver sees it.
    let machine = |id: &str, addr: &str| Machine {
        id: id.into(),
        name: format!("n{id}"),
        addr: addr.parse().unwrap(),
    };
    let registry =
        Registry::new(vec![machine("a", "[::1]:7001"), machine("b", "[::1]:7002")]).unwrap();
    let r = resolver(Some(&registry), "[::1]:7001");
    let got = r.resolve(&["*"]).unwrap();
    assert_eq!(got.destinations[0], Destination::Local);
    assert_eq!(
        got.destinations[1],
        remote("[::1]:7002", named("[::1]:7002", "b", "nb"))
    );
}

#[test]
fn this_machine_is_reachable_even_unregistered() {
    let registry = registry();
    let r = resolver(Some(&registry), "fd00::42");
    let got = r.resolve(&["[fd00::42]", "beta"]).unwrap();
    assert_eq!(got.destinations[0], Destination::Local);
    assert_eq!(r.local_info(), MachineInfo::from_addr("fd00::42"));
}

#[test]
fn without_registry_values_are_mesh_addresses_without_port() {
    let r = resolver(None, "fd00::1");
    let got = r.resolve(&["fd00::3", "[fd00::1]", "FD00::3"]).unwrap();
    assert_eq!(
        got.destinations,
        [
            remote("[fd00::3]:51000", MachineInfo::from_addr("fd00::3")),
            Destination::Local
        ]
    );
    assert!(!got.wildcard);
    // A caller never chooses a port…
    let message = refused(&r, &["[fd00::3]:18080"]);
    assert!(message.contains("has a port"), "{message}");
    // …nor reaches this host, its link, or IPv4 space.
    for (value, kind) in [
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("::127.0.0.1", "IPv4-compatible"),
        ("64:ff9b::7f00:1", "NAT64"),
        ("64:ff9b:1::7f00:1", "local-use NAT64"),
        ("2002:7f00:1::1", "6to4"),
        ("2001:0:4136:e378::1", "Teredo"),
    ] {
        let message = refused(&r, &[value]);
        assert!(message.contains(kind), "{value}: {message}");
    }
    for value in ["::", "ff02::1", "10.0.0.1", "alpha", "*"] {
        let message = refused(&r, &[value]);
        assert!(
            message.contains("not a machine address"),
            "{value}: {message}"
        );
    }
    assert!(refused(&r, &["alpha"]).contains("need a machine registry"));
}

#[test]
fn allowed_networks_decide_alone_when_set() {
    let networks: Vec<Ipv6Net> = vec!["fd00::/64".parse().unwrap(), "::1/128".parse().unwrap()];
    let r = Resolver {
        allowed_networks: Some(&networks),
        ..resolver(None, "fd00::1")
    };
    let got = r.resolve(&["fd00::9", "::1"]).unwrap();
    assert_eq!(got.destinations.len(), 2);
    let message = refused(&r, &["fd01::9"]);
    assert!(message.contains("outside allowed_networks"), "{message}");
    // What was cached stays only while it is allowed.
    assert!(r.remote_info(socket("[fd00::9]:51000")).is_some());
    assert!(r.remote_info(socket("[fd01::9]:51000")).is_none());
}

#[test]
fn a_call_names_at_most_max_targets_machines() {
    let registry = registry();
    let r = Resolver {
        max_targets: 2,
        ..resolver(Some(&registry), "fd00::1")
    };
    assert!(r.resolve(&["alpha", "beta"]).is_ok());
    let message = refused(&r, &["alpha", "beta", "gamma"]);
    assert!(message.contains("at most 2"), "{message}");
    let message = refused(&r, &["*"]);
    assert!(message.contains("names 3 machines"), "{message}");
}

#[test]
fn errors_stay_short_whatever_the_caller_sends() {
    let r = resolver(None, "fd00::1");
    let values: Vec<String> = (0..200)
        .map(|i| format!("{}-{i}", "x".repeat(100)))
        .collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let message = refused(&r, &refs);
    assert!(message.len() <= 1024, "{} bytes", message.len());
    assert!(message.contains("and 195 more"), "{message}");
}

#[test]
fn star_with_an_empty_registry_names_nothing() {
    let empty = Registry::new(Vec::new()).unwrap();
    let r = resolver(Some(&empty), "fd00::1");
    assert_eq!(r.resolve(&["*"]), Err(ResolveError::EmptyRegistry));
}
