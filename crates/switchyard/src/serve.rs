//! `switchyard serve`: the daemon's life cycle. SIGHUP reloads the
//! configuration file; SIGTERM or ctrl-c shut down gracefully, and a second
//! one cuts the grace period short.

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

use crate::config::{ServeArgs, Settings};
use crate::daemon::Daemon;

/// Runs the daemon until SIGTERM or ctrl-c.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::load(&args)?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let daemon = Daemon::start(&settings).await?;
    tracing::info!(
        listen = ?settings.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
        local_socket = %settings.local_socket.display(),
        remote_port = settings.remote_port,
        "switchyard started"
    );
    loop {
        tokio::select! {
            _ = hangup.recv() => match Settings::load(&args) {
                Ok(new) => {
                    let restart = new.needing_restart(&settings);
                    if !restart.is_empty() {
                        tracing::warn!(settings = ?restart, "changed settings take effect only after a restart");
                    }
                    daemon.reload(&new);
                }
                Err(err) => tracing::warn!(error = format!("{err:#}"), "reload failed; keeping the running configuration"),
            },
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    tracing::info!(grace = ?settings.grace_period, "shutting down; a second signal stops at once");
    tokio::select! {
        result = daemon.shutdown() => result,
        _ = terminate.recv() => abandon(),
        _ = tokio::signal::ctrl_c() => abandon(),
    }
}

fn abandon() -> anyhow::Result<()> {
    anyhow::bail!("second signal during shutdown: running calls were cut short")
}
