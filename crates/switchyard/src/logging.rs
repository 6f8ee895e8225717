//! Log output: text or JSON lines on stderr (which systemd's journal
//! collects), colour only on a terminal, and the HTTP/2 stack kept quiet.
//!
//! h2, hyper and tower log every frame at `debug`: with `RUST_LOG=debug`
//! they would bury Switchyard's own lines (tens per call). They stay at
//! `warn` unless `RUST_LOG` names them (`RUST_LOG=debug,h2=debug`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Crates that stay at `warn` unless `RUST_LOG` names them.
const NOISY: [&str; 8] = [
    "h2",
    "hyper",
    "hyper_util",
    "tower",
    "tonic",
    "rustls",
    "etcd_client",
    "tokio_rustls",
];

/// Installs the global subscriber: `RUST_LOG` if set (else `default_level`),
/// with the noisy crates at `warn` unless it names them.
pub fn init(format: LogFormat, default_level: &str) {
    let requested = std::env::var("RUST_LOG").ok();
    let directives = filter_directives(requested.as_deref(), default_level);
    let (filter, bad) = match EnvFilter::try_new(&directives) {
        Ok(filter) => (filter, None),
        Err(err) => (
            EnvFilter::new(filter_directives(None, default_level)),
            Some(err),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some(err) = bad {
        tracing::warn!(error = %err, "RUST_LOG is not a valid filter; using {default_level:?}");
    }
}

/// `requested` (or `default_level`) plus `crate=warn` for each noisy crate
/// it does not name.
fn filter_directives(requested: Option<&str>, default_level: &str) -> String {
    let base = requested
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(default_level);
    let named = |krate: &str| {
        base.split(',').any(|directive| {
            let target = directive
                .split(['=', '['])
                .next()
                .unwrap_or_default()
                .trim();
            target == krate || target.starts_with(&format!("{krate}::"))
        })
    };
    let mut directives = base.to_owned();
    for krate in NOISY.iter().filter(|k| !named(k)) {
        directives.push_str(&format!(",{krate}=warn"));
    }
    directives
}

#[cfg(test)]
mod tests {
    use super::filter_directives;

    #[test]
    fn noisy_crates_stay_at_warn_unless_named() {
        let debug = filter_directives(Some("debug"), "info");
        assert!(debug.starts_with("debug,h2=warn,hyper=warn,"), "{debug}");
        let h2 = filter_directives(Some("debug,h2=trace"), "info");
        assert!(!h2.contains("h2=warn"), "{h2}");
        assert!(h2.contains("hyper=warn"), "{h2}");
        let default = filter_directives(None, "info");
        assert!(default.starts_with("info,h2=warn"), "{default}");
        // hyper_util named does not count as hyper.
        let util = filter_directives(Some("hyper_util=debug"), "info");
        assert!(
            util.contains(",hyper=warn") && !util.contains("hyper_util=warn"),
            "{util}"
        );
    }
}
