//! `switchyard serve`: the daemon's life cycle. SIGHUP reloads the
//! configuration file; SIGTERM or ctrl-c shut down gracefully, and a second
//! one cuts the grace period short. Under systemd (`Type=notify`) it says
//! when it is ready, reloading and stopping.

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{Options, Settings};
use crate::daemon::Daemon;

/// Reads the settings, builds the runtime they ask for and runs the daemon
/// on it until SIGTERM or ctrl-c.
pub fn main(options: Options) -> anyhow::Result<()> {
    let settings = Settings::load(&options)?;
    crate::logging::init(settings.start.log_format, "info");
    // Connections cost file descriptors: take every one the system allows
    // before the connection bound is derived from them.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit raised"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }
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
        metrics_listen = settings.start.metrics_listen.as_ref().map(ToString::to_string),
        version = crate::VERSION,
        "switchyard started"
    );
    notify(&[NotifyState::Ready]);
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                if let Ok(now) = NotifyState::monotonic_usec_now() {
                    notify(&[NotifyState::Reloading, now]);
                }
                match Settings::load(&options) {
                    Ok(new) => {
                        let restart = new.needing_restart(&settings);
                        if !restart.is_empty() {
                            tracing::warn!(settings = ?restart, "changed settings take effect only after a restart");
                        }
                        daemon.reload(&new);
                    }
                    Err(err) => tracing::warn!(error = format!("{err:#}"), "reload failed; keeping the running configuration"),
                }
                notify(&[NotifyState::Ready]);
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    notify(&[NotifyState::Stopping]);
    tracing::info!(grace = ?settings.start.shutdown_grace_secs.0, "shutting down; a second signal stops at once");
    tokio::select! {
        result = daemon.shutdown() => result,
        _ = terminate.recv() => abandon(),
        _ = tokio::signal::ctrl_c() => abandon(),
    }
}

/// Tells systemd (when it started us with `NOTIFY_SOCKET`) our state.
fn notify(state: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(state) {
        tracing::warn!(error = %err, "cannot notify systemd");
    }
}

fn abandon() -> anyhow::Result<()> {
    anyhow::bail!("second signal during shutdown: running calls were cut short")
}
