//! Which machines a command asks, as request metadata.
//!
//! The call carries what the user named: `machines` (fan-out, replies
//! tagged) or `machine` (exactly one, reply untagged), or nothing (the
//! Switchyard's own machine). Reflection must not fan out (several servers'
//! answers would be merged into nonsense), so it asks one machine at a time:
//! the first one named, then the next if that one cannot be reached; with
//! `*` or no machine, the Switchyard's own machine.

use tonic::metadata::{AsciiMetadataValue, MetadataMap};

use crate::client::invoke::{HeaderError, add_header};

/// The fan-out metadata key.
const MACHINES: &str = "machines";
/// The one-machine metadata key.
const MACHINE: &str = "machine";

/// What a command sends.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// Metadata of the call: the `-H` headers and the machines.
    pub call: MetadataMap,
    /// Metadata of each reflection attempt, in order.
    pub reflection: Vec<MetadataMap>,
    /// Whether the call fans out (its replies are tagged).
    pub fan_out: bool,
    /// The one machine named, if exactly one (to label untagged replies).
    pub single: Option<String>,
}

/// The metadata for `-H headers`, `-m machines` and `--machine machine`
/// (either may also come as a header).
pub fn targets(
    machines: &[String],
    machine: Option<&str>,
    headers: &[String],
) -> Result<Targets, HeaderError> {
    let mut base = MetadataMap::new();
    for header in headers {
        add_header(&mut base, header)?;
    }
    let mut named: Vec<String> = machines.to_vec();
    let mut one = machine.map(str::to_owned);
    let values = |key: &str| -> Vec<String> {
        base.get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_owned())
            .collect()
    };
    named.extend(values(MACHINES));
    if one.is_none() {
        one = values(MACHINE).into_iter().next();
    }
    named.retain(|name| !name.trim().is_empty());
    let mut call = base.clone();
    for name in machines {
        call.append(MACHINES, ascii(MACHINES, name)?);
    }
    if let Some(machine) = machine {
        call.insert(MACHINE, ascii(MACHINE, machine)?);
    }
    let mut without_routing = base;
    without_routing.remove(MACHINES);
    without_routing.remove(MACHINE);
    let to = |name: &str| -> Result<MetadataMap, HeaderError> {
        let mut metadata = without_routing.clone();
        metadata.insert(MACHINE, ascii(MACHINE, name)?);
        Ok(metadata)
    };
    let reflection = match &one {
        Some(one) => vec![to(one)?],
        None => {
            let mut candidates = Vec::new();
            for name in named.iter().filter(|n| n.as_str() != "*") {
                candidates.push(to(name)?);
            }
            if candidates.is_empty() || named.iter().any(|n| n == "*") {
                candidates.push(without_routing.clone());
            }
            candidates
        }
    };
    let single = match (&one, named.as_slice()) {
        (Some(one), _) => Some(one.clone()),
        (None, [only]) if only != "*" => Some(only.clone()),
        _ => None,
    };
    Ok(Targets {
        call,
        reflection,
        fan_out: !named.is_empty() && one.is_none(),
        single,
    })
}

fn ascii(key: &str, value: &str) -> Result<AsciiMetadataValue, HeaderError> {
    let invalid = || HeaderError::InvalidValue {
        name: key.to_owned(),
    };
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid());
    }
    value.trim().parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(metadata: &MetadataMap, key: &str) -> Vec<String> {
        metadata
            .get_all(key)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn fan_out_asks_reflection_of_each_named_machine_in_turn() {
        let t = targets(
            &["alpha".into(), "beta".into()],
            None,
            &["x-trace=1".into()],
        )
        .unwrap();
        assert_eq!(values(&t.call, "machines"), ["alpha", "beta"]);
        assert_eq!(values(&t.call, "x-trace"), ["1"]);
        assert!(t.fan_out);
        assert_eq!(t.single, None);
        let asked: Vec<Vec<String>> = t.reflection.iter().map(|m| values(m, "machine")).collect();
        assert_eq!(asked, [vec!["alpha".to_owned()], vec!["beta".to_owned()]]);
        assert!(t.reflection.iter().all(|m| m.get("machines").is_none()));
        assert_eq!(values(&t.reflection[0], "x-trace"), ["1"]);
    }

    #[test]
    fn all_machines_or_none_ask_this_machine() {
        let t = targets(&["*".into()], None, &[]).unwrap();
        assert_eq!(values(&t.call, "machines"), ["*"]);
        assert_eq!(t.reflection.len(), 1);
        assert!(t.reflection[0].is_empty());
        assert_eq!(t.single, None);

        let t = targets(&[], None, &[]).unwrap();
        assert!(t.call.is_empty() && !t.fan_out);
        assert_eq!(t.reflection.len(), 1);
    }

    #[test]
    fn one_machine_is_one_to_one() {
        let t = targets(&[], Some("beta"), &[]).unwrap();
        assert_eq!(values(&t.call, "machine"), ["beta"]);
        assert!(!t.fan_out);
        assert_eq!(t.single.as_deref(), Some("beta"));
        assert_eq!(values(&t.reflection[0], "machine"), ["beta"]);

        // The same, given as headers.
        let t = targets(&[], None, &["machines=alpha,gamma".into()]).unwrap();
        assert!(t.fan_out);
        assert_eq!(values(&t.reflection[1], "machine"), ["gamma"]);
        assert!(targets(&[], Some("b\u{e9}ta"), &[]).is_err());
    }
}
