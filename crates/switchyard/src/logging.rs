//! Log output: text or JSON lines on stderr (which systemd's journal
//! collects), colour only on a terminal, and the HTTP/2 stack kept quiet.
//!
//! h2, hyper and tower log every frame at `debug`: with `RUST_LOG=debug`
//! they would bury Switchyard's own lines (tens per call). They stay at
//! `warn` unless `RUST_LOG` names them (`RUST_LOG=debug,h2=debug`).
//!
//! Values in a line can come from a caller or a machine (a status message,
//! a method path, a machine's error): in text lines every field is written
//! with its control characters escaped ([`escape_controls`]), so a newline
//! in a backend's status message cannot start a forged line, nor an escape
//! sequence repaint the terminal. JSON lines are escaped by JSON itself; no
//! event names a field after a key the JSON format writes itself
//! (`message`, `target`, `level`, `timestamp`), so no line has a key twice.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::{Writer, debug_fn};

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
        LogFormat::Text => builder
            .fmt_fields(debug_fn(write_field).delimited(" "))
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some(err) = bad {
        tracing::warn!(error = %err, "RUST_LOG is not a valid filter; using {default_level:?}");
    }
}

/// One field of a text line, `name=value` (the event's message bare), as
/// the default format writes it but with control characters escaped.
fn write_field(
    writer: &mut Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn std::fmt::Debug,
) -> std::fmt::Result {
    let mut text = String::new();
    write!(text, "{value:?}")?;
    if field.name() != "message" {
        write!(writer, "{}=", field.name())?;
    }
    writer.write_str(&escape_controls(&text))
}

/// `text` with each control character written as a Rust escape (`\n`,
/// `\u{1b}`); borrowed when there is none.
fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    escaped.into()
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
    use super::{escape_controls, filter_directives};

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain: ü ✓"), "plain: ü ✓");
        assert_eq!(
            escape_controls("a\nERROR forged\r\u{1b}[31m\t"),
            "a\\nERROR forged\\r\\u{1b}[31m\\t"
        );
    }

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
