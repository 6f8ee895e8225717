//! Three machines on distinct IPv6 addresses and the SAME port, as in a real
//! mesh: no registry, machines named by bare address, every Switchyard on
//! `--remote-port`. The addresses are added to `lo` (`/128`, `nodad`) for
//! the test and removed afterwards, even when it fails; that needs root, so
//! the test is skipped with a message otherwise.

mod common;

use std::net::{Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use switchyard::daemon::Daemon;
use tokio::net::TcpListener;
use tonic::Code;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The IPv6 addresses assigned to `lo`, from `ip -6 addr show dev lo`.
fn addresses_on_lo() -> Vec<Ipv6Addr> {
    let out = Command::new("ip")
        .args(["-6", "addr", "show", "dev", "lo"])
        .output()
        .expect("cannot run `ip -6 addr show dev lo`");
    assert!(out.status.success(), "ip -6 addr show dev lo: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("inet6 "))
        .filter_map(|rest| rest.split('/').next()?.parse().ok())
        .collect()
}

/// Addresses added to `lo`; removed when dropped (also while unwinding).
struct LoAddresses(Vec<Ipv6Addr>);

impl LoAddresses {
    fn add(&mut self, addr: Ipv6Addr) {
        let out = Command::new("ip")
            .args([
                "-6",
                "addr",
                "add",
                &format!("{addr}/128"),
                "dev",
                "lo",
                "nodad",
            ])
            .output()
            .expect("cannot run `ip`");
        assert!(
            out.status.success(),
            "cannot add {addr}/128 to lo (root without CAP_NET_ADMIN? IPv6 disabled?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.0.push(addr);
    }
}

impl Drop for LoAddresses {
    fn drop(&mut self) {
        for addr in &self.0 {
            let out = Command::new("ip")
                .args(["-6", "addr", "del", &format!("{addr}/128"), "dev", "lo"])
                .output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                eprintln!("warning: could not remove {addr}/128 from lo: {out:?}");
            }
        }
    }
}

/// A prefix of our own, so that concurrent runs never share addresses:
/// `fd7a:5717:<pid hi>:<pid lo>:<clock>::/80`.
fn unique_addresses() -> [Ipv6Addr; 3] {
    let pid = std::process::id();
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let groups = [
        0xfd7a,
        0x5717,
        (pid >> 16) as u16,
        pid as u16,
        (clock >> 8) as u16,
    ];
    [1u16, 2, 3].map(|n| {
        Ipv6Addr::new(
            groups[0], groups[1], groups[2], groups[3], groups[4], 0, 0, n,
        )
    })
}

/// Listeners on `[ip]:port` for every address, with the same free port.
async fn same_port_listeners(ips: &[Ipv6Addr]) -> (u16, Vec<TcpListener>) {
    'retry: for _ in 0..20 {
        let first = TcpListener::bind((ips[0], 0))
            .await
            .expect("bind on an added address");
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for &ip in &ips[1..] {
            match TcpListener::bind((ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'retry,
            }
        }
        return (port, listeners);
    }
    panic!("no port free on every test address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_addresses_on_the_same_port() {
    if !is_root() {
        eprintln!(
            "SKIPPED distinct_addresses_on_the_same_port: adding IPv6 addresses to `lo` needs root \
             (run `cargo test -p switchyard --test mesh_ipv6` as root)"
        );
        return;
    }
    let ips = unique_addresses();
    let mut added = LoAddresses(Vec::new());
    for ip in ips {
        assert!(!addresses_on_lo().contains(&ip), "{ip} already on lo");
        added.add(ip);
    }
    // Never dial an address that is not on this machine.
    let on_lo = addresses_on_lo();
    for ip in ips {
        assert!(
            on_lo.contains(&ip),
            "{ip} missing from lo after adding it: {on_lo:?}"
        );
    }

    let tmp = socket_dir("mesh");
    let dir = tmp.path();
    let (port, listeners) = same_port_listeners(&ips).await;
    let mut services = Vec::new();
    let mut daemons = Vec::new();
    for (i, (ip, listener)) in ips.iter().zip(listeners).enumerate() {
        let addr = SocketAddr::from((*ip, port));
        let socket = dir.join(format!("m{}.sock", i + 1));
        services.push(machine_info::Server::spawn_unix(&format!("m{}", i + 1), &socket).unwrap());
        let mut settings = node_settings(addr, socket, None);
        settings.start.remote_port = port.try_into().unwrap();
        settings.live.local_address = Some(ip.to_string().parse().unwrap());
        daemons.push(Daemon::with_listeners(&settings, vec![listener.into()]));
    }
    let entry = SocketAddr::from((ips[0], port));
    let authority = entry.to_string();
    let mut client = tcp_client(entry);
    let names: Vec<String> = ips.iter().map(ToString::to_string).collect();

    // No metadata: machine 1 answers itself.
    let reply = eventually(WAIT, "machine 1 up", || {
        let mut client = client.clone();
        async move { client.describe(describe(&[])).await.ok() }
    })
    .await
    .into_inner();
    assert_untagged(&reply.messages[0], "m1");

    // Fan-out by bare address: three entries tagged with those addresses,
    // machines 2 and 3 reached through machine 1 (proxy-authority).
    let list = names.join(", ");
    let reply = call_describe(&mut client, &[("machines", &list)])
        .await
        .unwrap();
    assert_eq!(reply.messages.len(), 3, "{reply:?}");
    for (i, d) in reply.messages.iter().enumerate() {
        let m = d.metadata.as_ref().expect("tagged");
        assert_eq!(m.machine_addr, names[i], "bare address, same port: {d:?}");
        assert!(
            m.machine_id.is_empty() && m.machine_name.is_empty(),
            "{d:?}"
        );
        assert!(entry_error(Some(m)).is_none(), "{d:?}");
        assert_eq!(d.name, format!("m{}", i + 1));
        let via = if i == 0 { "" } else { authority.as_str() };
        assert_eq!(d.proxy_authority, via, "{d:?}");
    }

    // A caller never chooses a port: `[ip]:port` is refused, `[ip]` is the
    // same machine with the same tag.
    let with_port = format!("[{}]:{port}", ips[2]);
    let status = call_describe(&mut client, &[("machines", &with_port)])
        .await
        .unwrap_err();
    assert_status(&status, Code::InvalidArgument, &["has a port"]);
    let bracketed = format!("[{}], {}", ips[2], names[1]);
    let reply = call_describe(&mut client, &[("machines", &bracketed)])
        .await
        .unwrap();
    let tags: Vec<_> = reply
        .messages
        .iter()
        .map(|d| d.metadata.as_ref().unwrap().machine_addr.clone())
        .collect();
    assert_eq!(tags, [names[2].clone(), names[1].clone()]);

    // One machine: two hops, untagged.
    let reply = call_describe(&mut client, &[("machines", &names[1])])
        .await
        .unwrap();
    assert_untagged(&reply.messages[0], "m2");
    assert_eq!(reply.messages[0].proxy_authority, authority);

    // Streaming fan-out over the mesh.
    let mut stream = start_watch(&mut client, 3, 20, &[("machines", &list)]).await;
    let ticks = rest_of(&mut stream).await;
    assert_eq!(ticks.len(), 9, "{ticks:?}");
    for (i, name) in names.iter().enumerate() {
        let seqs: Vec<u32> = ticks
            .iter()
            .filter(|t| t.metadata.as_ref().is_some_and(|m| &m.machine_addr == name))
            .map(|t| t.seq)
            .collect();
        assert_eq!(seqs, [0, 1, 2], "ticks of m{}", i + 1);
    }

    // Not IPv6: refused naming the value, before anything is dialled.
    let m2_calls = call_describe(&mut unix_client(&dir.join("m2.sock")), &[])
        .await
        .unwrap()
        .messages[0]
        .calls;
    for value in ["10.0.0.1", &format!("{}, 10.0.0.1", names[1])] {
        let status = call_describe(&mut client, &[("machines", value)])
            .await
            .unwrap_err();
        assert_status(&status, Code::InvalidArgument, &["\"10.0.0.1\"", "IPv6"]);
    }
    let after = call_describe(&mut unix_client(&dir.join("m2.sock")), &[])
        .await
        .unwrap()
        .messages[0]
        .calls;
    assert_eq!(after, m2_calls + 1, "m2 was not called by refused calls");

    for daemon in daemons {
        bounded("mesh Switchyard shutdown", daemon.shutdown())
            .await
            .unwrap();
    }
    drop(services);
    drop(added);
    let on_lo = addresses_on_lo();
    for ip in ips {
        assert!(!on_lo.contains(&ip), "{ip} still on lo after the test");
    }
}
