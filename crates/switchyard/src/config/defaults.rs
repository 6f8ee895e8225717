//! How each setting's default reads, in `switchyard serve --help` and in
//! README's settings table.
//!
//! The values come from the settings' own defaults ([`StartSettings`],
//! [`LiveSettings`], [`EtcdSettings`]), so the help cannot drift from what
//! the daemon does; only defaults that are not a value (derived at start,
//! or "off") are described in words, once, here.

use std::collections::BTreeMap;

use super::{EtcdSettings, LiveSettings, StartSettings};

/// The "default" of a setting that has none.
const REQUIRED: &str = "required";

/// Defaults that are not a value of their own: the setting is unset, and
/// this is what happens then.
const DESCRIBED: [(&str, &str); 17] = [
    ("listen", "[local_address]:remote_port"),
    ("local_socket", REQUIRED),
    ("local_address", "none"),
    ("socket_group", "the daemon's"),
    ("max_connections", "¾ of the open-file limit"),
    (
        "unix_reserved_connections",
        "1/16 of max_connections, at most 64",
    ),
    ("memory_budget", "¼ of the machine's memory"),
    ("memory_budget_per_caller", "½ of memory_budget"),
    ("tls", "off"),
    ("metrics_listen", "off"),
    ("machine_id", "none"),
    ("machine_name", "none"),
    ("allowed_networks", "any mesh address"),
    ("fan_out_methods", "every method"),
    ("authz", "allow all"),
    ("machines", "none"),
    ("registry.etcd.endpoints", "none"),
];

/// Every setting's default as shown to users, by its key (`remote_port`,
/// `registry.etcd.prefix`).
pub fn defaults() -> BTreeMap<String, String> {
    let mut shown = BTreeMap::new();
    let table = |value: Result<toml::Table, toml::ser::Error>| value.expect("settings serialize");
    add(
        &mut shown,
        "",
        &table(toml::Table::try_from(StartSettings::default())),
    );
    add(
        &mut shown,
        "registry.etcd.",
        &table(toml::Table::try_from(EtcdSettings::default())),
    );
    let live = LiveSettings::default();
    shown.insert("unix_roles".to_owned(), live.unix_roles.join(", "));
    shown.insert("access_log".to_owned(), live.access_log.to_string());
    for (key, text) in DESCRIBED {
        shown.insert(key.to_owned(), text.to_owned());
    }
    shown
}

fn add(shown: &mut BTreeMap<String, String>, prefix: &str, table: &toml::Table) {
    for (key, value) in table {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Array(items) if items.is_empty() => "none".to_owned(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map_or_else(|| item.to_string(), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join(", "),
            toml::Value::Table(_) => continue,
            other => other.to_string(),
        };
        shown.insert(format!("{prefix}{key}"), text);
    }
}

/// Settings whose flag turns them off (`--no-detect-streamed-methods`).
const NEGATIVE_FLAGS: [&str; 1] = ["detect_streamed_methods"];

/// `command` (`switchyard serve`) with each argument's help ending in its
/// default.
pub fn with_defaults(command: clap::Command) -> clap::Command {
    let defaults = defaults();
    let ids: Vec<String> = command
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .collect();
    ids.into_iter()
        .fold(command, |command, id| match defaults.get(&id) {
            // A flag that turns a default off says so itself.
            Some(_) if NEGATIVE_FLAGS.contains(&id.as_str()) => command,
            Some(default) => command.mut_arg(&id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                match default.as_str() {
                    REQUIRED => arg.help(format!("{help} [required]")),
                    default => arg.help(format!("{help} [default: {default}]")),
                }
            }),
            None => command,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Options;
    use clap::CommandFactory as _;

    #[derive(Debug, clap::Parser)]
    struct Serve {
        #[command(flatten)]
        options: Options,
    }

    #[test]
    fn every_flag_but_config_and_the_tls_files_shows_its_default() {
        let command = with_defaults(Serve::command());
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if ["config", "cert", "key", "ca", "help"].contains(&id) || NEGATIVE_FLAGS.contains(&id)
            {
                continue;
            }
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let shown = help.matches("[default: ").count() + help.matches("[required]").count();
            assert_eq!(shown, 1, "--{id}: {help}");
        }
    }

    #[test]
    fn defaults_are_the_settings_own() {
        let defaults = defaults();
        assert_eq!(defaults["remote_port"], "51000");
        assert_eq!(defaults["socket_mode"], "0660");
        assert_eq!(defaults["max_message_size"], "33554432");
        assert_eq!(defaults["registry.etcd.prefix"], "/switchyard/");
        assert_eq!(defaults["registry.etcd.liveness"], "true");
        assert_eq!(defaults["streamed_methods"], "none");
        assert_eq!(defaults["unix_roles"], "admin");
        assert_eq!(defaults["listen"], "[local_address]:remote_port");
    }

    /// README's settings table: (key, default) of each row, keys spelled as
    /// [`defaults`] does (`[registry.etcd] prefix` is `registry.etcd.prefix`).
    fn readme_rows() -> Vec<(String, String)> {
        let readme = include_str!("../../../../README.md");
        let table = readme
            .split("| flag | config key | default | meaning |\n")
            .nth(1)
            .expect("README has the settings table");
        table
            .lines()
            .skip(1) // |---|
            .take_while(|line| line.starts_with('|'))
            .filter_map(|line| {
                let cells: Vec<&str> = line.split(" | ").collect();
                let key = cells.get(1)?.split('`').nth(1)?;
                let key = match key.split_once(' ') {
                    Some(("[tls]", _)) => "tls".to_owned(),
                    Some((table, key)) => format!("{}.{key}", table.trim_matches(['[', ']'])),
                    None => key.trim_matches(['[', ']']).to_owned(),
                };
                Some((key, cells.get(2)?.replace('`', "")))
            })
            .collect()
    }

    #[test]
    fn readme_names_every_setting_with_its_default() {
        let rows = readme_rows();
        let defaults = defaults();
        for (key, default) in &defaults {
            let row = rows.iter().find(|(k, _)| k == key);
            assert_eq!(
                row.map(|(_, d)| d.as_str()),
                Some(default.as_str()),
                "README's settings table: `{key}` with default `{default}`"
            );
        }
        for (key, _) in &rows {
            assert!(
                defaults.contains_key(key),
                "README names `{key}`, no setting"
            );
        }
        // And every flag's setting is in the table (so in the README).
        for arg in Serve::command().get_arguments() {
            let id = arg.get_id().as_str();
            if !["config", "cert", "key", "ca"].contains(&id) {
                assert!(defaults.contains_key(id), "--{id} has no default");
            }
        }
    }
}
