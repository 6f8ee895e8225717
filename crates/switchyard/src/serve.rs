//! `switchyard serve`: the daemon's life cycle. SIGHUP reloads the
//! configuration file; SIGTERM or ctrl-c shut down gracefully, and a second
//! one cuts the grace period short.

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Options, Settings};
use crate::daemon::Daemon;

/// Reads the settings, builds the runtime they ask for and runs the daemon
/// on it until SIGTERM or ctrl-c.
pub fn main(options: Options) -> anyhow::Result<()> {
    // Connections cost file descriptors: take every one the system allows
    // before the connection bound is derived from them.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit raised"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
    let settings = Settings::load(&options)?;
    runtime(settings.start.worker_threads.0)?.block_on(run(options, settings))
}

/// One thread runs everything on the current-thread scheduler (no work
/// stealing, no cross-thread wakeups); more get the multi-thread one.
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs the daemon with `settings` until SIGTERM or ctrl-c; `options` are
/// read again on SIGHUP.
pub async fn run(options: Options, settings: Settings) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let daemon = Daemon::start(&settings).await?;
    tracing::info!(
        listen = ?settings.listeners().iter().map(ToString::to_string).collect::<Vec<_>>(),
        local_socket = %settings.start.local_socket.display(),
        remote_port = settings.start.remote_port,
        max_connections = settings.max_connections(),
        "switchyard started"
    );
    loop {
        tokio::select! {
            _ = hangup.recv() => match Settings::load(&options) {
                Ok(new) => {
                    let restart = new.needing_restart(&settings);
                    if !restart.is_empty() {
                        tracing::warn!(settings = ?restart, "changed settings take effect only after a restart");
                    }
                    daemon.reload(&new.live);
                }
                Err(err) => tracing::warn!(error = format!("{err:#}"), "reload failed; keeping the running configuration"),
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!(grace = ?settings.start.shutdown_grace_secs.0, "shutting down; a second signal stops at once");
    tokio::select! {
        result = daemon.shutdown() => result,
        _ = terminate.recv() => abandon(),
        _ = tokio::signal::ctrl_c() => abandon(),
    }
}

fn abandon() -> anyhow::Result<()> {
    anyhow::bail!("second signal during shutdown: running calls were cut short")
}
