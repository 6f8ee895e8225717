//! Memory of a Switchyard daemon: idle, and holding many open streams.
//!
//! A fresh daemon (not one of the benchmark's machines, whose peak already
//! includes the load) is started in front of a backend; its `VmRSS` and
//! `VmHWM` are read from `/proc/<pid>/status` once it is idle, then while N
//! bidi calls are open through it (each has sent one message and received
//! its echo, so every stream is established on both hops).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use super::procs::{self, Binaries};
use super::sysinfo::memory_kib;
use crate::client::{self, CallKind, CallSpec, ConnSettings};
use switchyard_engine::Address;

/// What the memory measurement found, in KiB.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemoryFigures {
    pub(crate) idle_rss_kib: u64,
    pub(crate) idle_hwm_kib: u64,
    pub(crate) streams: usize,
    pub(crate) streams_rss_kib: u64,
    pub(crate) streams_hwm_kib: u64,
}

/// Measures a fresh daemon in front of the backend on `backend_socket`.
pub(crate) fn measure(
    bins: &Binaries,
    dir: &Path,
    backend_socket: &Path,
    streams: usize,
) -> anyhow::Result<MemoryFigures> {
    let port = procs::free_ports(1)?[0];
    let daemon = procs::start_daemon(bins, dir, "rss", port, backend_socket, &[], "")?;
    std::thread::sleep(Duration::from_millis(500));
    let (idle_rss_kib, idle_hwm_kib) = memory_kib(daemon.pid())?;
    let target: Address = format!("[::1]:{port}")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let pid = daemon.pid();
    let (streams_rss_kib, streams_hwm_kib) = runtime.block_on(async move {
        let spec = CallSpec::new(
            &target,
            CallKind::Bidi,
            CallKind::Bidi.default_method(),
            64,
            1,
            &[],
        )?;
        let connections = streams.div_ceil(250).max(1);
        let mut conns = Vec::with_capacity(connections);
        for _ in 0..connections {
            conns.push(client::connect(&target, &ConnSettings::default()).await?);
        }
        let mut opening = tokio::task::JoinSet::new();
        for i in 0..streams {
            let mut conn = conns[i % connections].clone();
            let spec = spec.clone();
            opening.spawn(async move { client::open_stream(&mut conn, &spec).await });
        }
        let mut open = Vec::with_capacity(streams);
        let all = async {
            while let Some(result) = opening.join_next().await {
                let stream = result.context("a stream task panicked")?.map_err(|e| {
                    anyhow::anyhow!("opening a stream failed: {}: {}", e.key, e.message)
                })?;
                open.push(stream);
            }
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .context("opening the streams took over 60 s")??;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let figures = memory_kib(pid)?;
        drop(open);
        anyhow::Ok(figures)
    })?;
    drop(daemon);
    Ok(MemoryFigures {
        idle_rss_kib,
        idle_hwm_kib,
        streams,
        streams_rss_kib,
        streams_hwm_kib,
    })
}
