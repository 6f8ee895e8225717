//! A reply as grpcurl prints it by default (`-format json`).
//!
//! grpcurl decodes replies into jhump/protoreflect dynamic messages and
//! marshals them with golang/protobuf's `jsonpb` (`EmitDefaults` only with
//! `-emit-defaults`, which is off by default), then re-indents with two
//! spaces. What that yields, and what this module reproduces:
//! - fields in field-number order, named by their `json_name`
//!   (lowerCamelCase); unset fields and proto3 fields at their zero value are
//!   left out (with `emit_defaults`: written, unset messages as `null`, unset
//!   oneof members still left out);
//! - 64-bit integers as strings, enums by name (by number when unknown),
//!   bytes as standard padded base64, floats in Go's `'g'` form;
//! - map entries sorted by key;
//! - well-known types in their JSON mapping, written by `jsonpb` (Duration
//!   and Timestamp with 0, 3, 6 or 9 fractional digits, Struct keys sorted),
//!   except `FieldMask`, which grpcurl writes as an ordinary message;
//! - `Any`: the embedded message's fields sorted by name after `"@type"`
//!   (jsonpb re-marshals it through a Go map), or `{"@type", "value"}` for a
//!   well-known type; an unknown type gives grpcurl's fallback object with
//!   `"@error"` and the raw `"@value"`.
//!
//! Where grpcurl fails to print (an undecodable `Any`, an out-of-range
//! Timestamp), this writes something readable instead of failing.

use std::cell::Cell;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, ReflectMessage, Value};

use super::gojson::{self, Json};

/// Options of the JSON form.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonOptions {
    /// Also write fields at their default value (grpcurl `-emit-defaults`).
    pub emit_defaults: bool,
}

/// `message` exactly as grpcurl prints it (without the trailing newline
/// grpcurl adds).
pub fn format_json(message: &DynamicMessage, options: JsonOptions) -> String {
    to_json(message, options).to_indented()
}

/// `message` as an ordered JSON tree in grpcurl's mapping.
pub fn to_json(message: &DynamicMessage, options: JsonOptions) -> Json {
    Writer {
        options,
        any_depth: Cell::new(0),
    }
    .message(message)
}

struct Writer {
    options: JsonOptions,
    /// `Any`s being expanded: each decodes afresh (with prost's own depth
    /// limit starting again), so a reply of `Any`s nested in `Any`s is cut
    /// here, before it can exhaust the stack.
    any_depth: Cell<u32>,
}

/// Deepest nesting of `Any` values expanded; deeper ones print as raw bytes.
const MAX_ANY_DEPTH: u32 = 32;

impl Writer {
    /// A message field's value: well-known types are handed to `jsonpb`.
    fn message(&self, message: &DynamicMessage) -> Json {
        if jsonpb_well_known(message.descriptor().full_name()) {
            self.well_known(message)
        } else {
            self.ordinary(message)
        }
    }

    /// jhump's dynamic message marshalling.
    fn ordinary(&self, message: &DynamicMessage) -> Json {
        let mut fields: Vec<(u32, String, Json)> = Vec::new();
        for field in message.descriptor().fields() {
            let value = if message.has_field(&field) {
                self.field_value(&field.kind(), &message.get_field(&field))
            } else if self.options.emit_defaults && field.containing_oneof().is_none() {
                match field.kind() {
                    // jhump's default for an unset message is nil.
                    Kind::Message(_) if !field.is_list() && !field.is_map() => Json::Null,
                    kind => self.field_value(&kind, &field.default_value()),
                }
            } else {
                continue;
            };
            fields.push((field.number(), field.json_name().to_owned(), value));
        }
        for (extension, value) in message.extensions() {
            let name = format!("[{}]", extension.full_name());
            fields.push((
                extension.number(),
                name,
                self.field_value(&extension.kind(), value),
            ));
        }
        fields.sort_by_key(|(number, _, _)| *number);
        Json::Object(
            fields
                .into_iter()
                .map(|(_, name, value)| (name, value))
                .collect(),
        )
    }

    fn field_value(&self, kind: &Kind, value: &Value) -> Json {
        match value {
            Value::Bool(b) => Json::Bool(*b),
            Value::I32(n) => Json::Number(n.to_string()),
            Value::U32(n) => Json::Number(n.to_string()),
            Value::I64(n) => Json::String(n.to_string()),
            Value::U64(n) => Json::String(n.to_string()),
            Value::F32(f) => Json::Number(gojson::format_g32(*f)),
            Value::F64(f) => Json::Number(gojson::format_g64(*f)),
            Value::String(s) => Json::String(s.clone()),
            Value::Bytes(b) => Json::String(BASE64_STANDARD.encode(b)),
            Value::EnumNumber(n) => enum_value(kind, *n),
            Value::Message(m) => self.message(m),
            Value::List(items) => Json::Array(
                items
                    .iter()
                    .map(|item| self.field_value(kind, item))
                    .collect(),
            ),
            Value::Map(entries) => {
                let value_kind = match kind {
                    Kind::Message(entry) => entry.map_entry_value_field().kind(),
                    other => other.clone(),
                };
                let mut entries: Vec<(&MapKey, &Value)> = entries.iter().collect();
                entries.sort_by(|a, b| compare_keys(a.0, b.0));
                Json::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key_string(key), self.field_value(&value_kind, value)))
                        .collect(),
                )
            }
        }
    }

    /// golang/protobuf `jsonpb` marshalling of a well-known type.
    fn well_known(&self, message: &DynamicMessage) -> Json {
        let descriptor = message.descriptor();
        let field = |number| message.get_field_by_number(number);
        let int =
            |number| field(number).and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)));
        match descriptor.name() {
            "Any" => self.any(message),
            "Duration" => {
                duration(int(1), int(2)).map_or_else(|| self.ordinary(message), Json::String)
            }
            "Timestamp" => {
                timestamp(int(1), int(2)).map_or_else(|| self.ordinary(message), Json::String)
            }
            "Struct" => field(1).map_or(Json::Object(Vec::new()), |v| self.jsonpb_value(&v)),
            "ListValue" => field(1).map_or(Json::Array(Vec::new()), |v| self.jsonpb_value(&v)),
            "Value" => match message.fields().next() {
                Some((_, value)) => self.jsonpb_value(value),
                None => Json::Null,
            },
            "Empty" => self.ordinary(message),
            // Wrappers: their single `value` field.
            _ => field(1).map_or(Json::Null, |v| self.jsonpb_value(&v)),
        }
    }

    /// A value as `jsonpb` writes it: like jhump's, but floats go through
    /// `json.Marshal`, `NullValue` is `null` and maps are sorted the same.
    fn jsonpb_value(&self, value: &Value) -> Json {
        match value {
            Value::F32(f) => Json::Number(gojson::format_json32(*f)),
            Value::F64(f) => Json::Number(gojson::format_json64(*f)),
            // Only `google.protobuf.NullValue` occurs inside these types.
            Value::EnumNumber(_) => Json::Null,
            Value::Message(m) => self.message(m),
            Value::List(items) => {
                Json::Array(items.iter().map(|item| self.jsonpb_value(item)).collect())
            }
            Value::Map(entries) => {
                let mut entries: Vec<(&MapKey, &Value)> = entries.iter().collect();
                entries.sort_by(|a, b| compare_keys(a.0, b.0));
                Json::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key_string(key), self.jsonpb_value(value)))
                        .collect(),
                )
            }
            scalar => self.field_value(&Kind::Bool, scalar),
        }
    }

    fn any(&self, any: &DynamicMessage) -> Json {
        let type_url = any
            .get_field_by_number(1)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let bytes = any
            .get_field_by_number(2)
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default();
        let name = type_url.rsplit('/').next().unwrap_or_default();
        let resolved = any.descriptor().parent_pool().get_message_by_name(name);
        let Some(descriptor) = resolved else {
            return unknown_any(
                &type_url,
                &format!("{name} is not recognized; see @value for raw binary message data"),
                &bytes,
            );
        };
        if self.any_depth.get() >= MAX_ANY_DEPTH {
            return unknown_any(
                &type_url,
                &format!("{name} nested too deep (over {MAX_ANY_DEPTH} Any values)"),
                &bytes,
            );
        }
        let inner = match DynamicMessage::decode(descriptor.clone(), bytes.clone()) {
            Ok(inner) => inner,
            Err(err) => {
                return unknown_any(&type_url, &format!("cannot decode {name}: {err}"), &bytes);
            }
        };
        let type_entry = ("@type".to_owned(), Json::String(type_url.clone()));
        self.any_depth.set(self.any_depth.get() + 1);
        let expanded = if jsonpb_well_known(descriptor.full_name()) {
            Json::Object(vec![type_entry, ("value".to_owned(), self.message(&inner))])
        } else {
            let Json::Object(mut fields) = self.ordinary(&inner) else {
                unreachable!("an ordinary message is an object")
            };
            fields.push(type_entry);
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(fields)
        };
        self.any_depth.set(self.any_depth.get() - 1);
        expanded
    }
}

/// grpcurl's placeholder for an `Any` it cannot resolve, keys sorted as the
/// Go map they pass through.
fn unknown_any(type_url: &str, error: &str, bytes: &[u8]) -> Json {
    Json::Object(vec![
        ("@error".to_owned(), Json::String(error.to_owned())),
        ("@type".to_owned(), Json::String(type_url.to_owned())),
        (
            "@value".to_owned(),
            Json::String(BASE64_STANDARD.encode(bytes)),
        ),
    ])
}

/// The types jhump hands to `jsonpb` and `jsonpb` writes specially.
/// (`FieldMask` is in neither list: grpcurl writes it as a message.)
fn jsonpb_well_known(full_name: &str) -> bool {
    matches!(
        full_name.strip_prefix("google.protobuf."),
        Some(
            "Any"
                | "Empty"
                | "Duration"
                | "Timestamp"
                | "Struct"
                | "Value"
                | "ListValue"
                | "DoubleValue"
                | "FloatValue"
                | "Int64Value"
                | "UInt64Value"
                | "Int32Value"
                | "UInt32Value"
                | "BoolValue"
                | "StringValue"
                | "BytesValue"
        )
    )
}

fn enum_value(kind: &Kind, number: i32) -> Json {
    match kind {
        Kind::Enum(descriptor) => match descriptor.get_value(number) {
            Some(value) => Json::String(value.name().to_owned()),
            None => Json::Number(number.to_string()),
        },
        _ => Json::Number(number.to_string()),
    }
}

fn compare_keys(a: &MapKey, b: &MapKey) -> std::cmp::Ordering {
    match (a, b) {
        (MapKey::Bool(a), MapKey::Bool(b)) => a.cmp(b),
        (MapKey::I32(a), MapKey::I32(b)) => a.cmp(b),
        (MapKey::I64(a), MapKey::I64(b)) => a.cmp(b),
        (MapKey::U32(a), MapKey::U32(b)) => a.cmp(b),
        (MapKey::U64(a), MapKey::U64(b)) => a.cmp(b),
        (MapKey::String(a), MapKey::String(b)) => a.cmp(b),
        (a, b) => key_string(a).cmp(&key_string(b)),
    }
}

fn key_string(key: &MapKey) -> String {
    match key {
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
        MapKey::String(s) => s.clone(),
    }
}

/// Drops `"000"` twice, then `".000"`: 0, 3, 6 or 9 fractional digits.
fn trim_fraction(mut s: String) -> String {
    for suffix in ["000", "000", ".000"] {
        if s.ends_with(suffix) {
            s.truncate(s.len() - suffix.len());
        }
    }
    s
}

/// jsonpb's Duration: `"1.500s"`, `"-0.000000001s"`; `None` when invalid.
fn duration(seconds: Option<i64>, nanos: Option<i64>) -> Option<String> {
    const MAX_SECONDS: i64 = 315_576_000_000;
    let (seconds, nanos) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if !(-MAX_SECONDS..=MAX_SECONDS).contains(&seconds)
        || nanos.abs() >= 1_000_000_000
        || (seconds > 0 && nanos < 0)
        || (seconds < 0 && nanos > 0)
    {
        return None;
    }
    let sign = if seconds < 0 || nanos < 0 { "-" } else { "" };
    let text = trim_fraction(format!("{sign}{}.{:09}", seconds.abs(), nanos.abs()));
    Some(format!("{text}s"))
}

/// jsonpb's Timestamp: RFC 3339 in UTC, `Z`, 0/3/6/9 fractional digits;
/// `None` when the nanoseconds are out of range.
fn timestamp(seconds: Option<i64>, nanos: Option<i64>) -> Option<String> {
    let (seconds, nanos) = (seconds.unwrap_or(0), nanos.unwrap_or(0));
    if !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    );
    Some(format!("{}Z", trim_fraction(text)))
}

/// The proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Whether `descriptor` is a well-known type with a special JSON form.
pub fn is_well_known(descriptor: &MessageDescriptor) -> bool {
    jsonpb_well_known(descriptor.full_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_jsonpb() {
        assert_eq!(duration(Some(1), Some(0)).unwrap(), "1s");
        assert_eq!(duration(Some(1), Some(500_000_000)).unwrap(), "1.500s");
        assert_eq!(duration(Some(0), Some(1)).unwrap(), "0.000000001s");
        assert_eq!(duration(Some(-2), Some(-250_000)).unwrap(), "-2.000250s");
        assert_eq!(duration(None, None).unwrap(), "0s");
        assert!(duration(Some(1), Some(-1)).is_none());
    }

    #[test]
    fn timestamps_like_jsonpb() {
        assert_eq!(timestamp(Some(0), Some(0)).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            timestamp(Some(1_700_000_000), Some(123_000_000)).unwrap(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            timestamp(Some(951_782_400), Some(1_000)).unwrap(),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            timestamp(Some(-1), Some(0)).unwrap(),
            "1969-12-31T23:59:59Z"
        );
        assert!(timestamp(Some(0), Some(-1)).is_none());
    }
}
