//! `describe SYMBOL`: a schema element printed as proto source, like
//! `grpcurl describe`.
//!
//! grpcurl prints `<full name> is a message:` (or service, method…) and then
//! the element through jhump's protoprint, set to: compact (no blank lines),
//! elements sorted (options, then fields by number, nested messages and enums
//! by name; methods by name; enum values by number with 0 first), type names
//! fully qualified with a leading dot, and only leading (doc) comments kept.
//! This module follows those rules. Option values that are messages, and
//! groups, are rarer than this prototype needs and are left out.

use std::fmt::Write as _;

use prost_reflect::{
    Cardinality, DynamicMessage, EnumDescriptor, EnumValueDescriptor, FieldDescriptor,
    FileDescriptor, Kind, MessageDescriptor, MethodDescriptor, ServiceDescriptor, Value,
};

use crate::client::resolve::Symbol;

const INDENT: &str = "  ";

/// grpcurl's whole `describe` output for `symbol`, ending in a newline.
pub fn describe(symbol: &Symbol) -> String {
    let (kind, body) = match symbol {
        Symbol::Service(d) => ("a service", service(d, 0)),
        Symbol::Method(d) => ("a method", method(d, 0)),
        Symbol::Message(d) => match map_field_of(d) {
            Some(field) => ("the entry type for a map field", self::field(&field, 0)),
            None => ("a message", message(d, 0)),
        },
        Symbol::Enum(d) => ("an enum", enumeration(d, 0)),
        Symbol::Field(d) => ("a field", field(d, 0)),
        Symbol::EnumValue(d) => ("an enum value", enum_value(d, 0)),
    };
    format!("{} is {kind}:\n{body}", symbol.full_name())
}

/// The map field whose entry type `message` is.
fn map_field_of(message: &MessageDescriptor) -> Option<FieldDescriptor> {
    if !message.is_map_entry() {
        return None;
    }
    message
        .parent_message()?
        .fields()
        .find(|f| f.is_map() && matches!(f.kind(), Kind::Message(m) if &m == message))
}

fn pad(depth: usize) -> String {
    INDENT.repeat(depth)
}

/// The element's leading comment as `//` lines, as protoprint writes it.
fn comments(file: &FileDescriptor, path: &[i32], depth: usize) -> String {
    let Some(info) = &file.file_descriptor_proto().source_code_info else {
        return String::new();
    };
    let Some(text) = info
        .location
        .iter()
        .find(|l| l.path == path)
        .and_then(|l| l.leading_comments.as_deref())
    else {
        return String::new();
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.first() == Some(&"") {
        lines.remove(0);
    }
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut out = String::new();
    for line in lines {
        let line = if line.is_empty() || line.starts_with(' ') {
            line.to_owned()
        } else {
            format!(" {line}")
        };
        let _ = writeln!(out, "{}//{}", pad(depth), line.trim_end());
    }
    out
}

fn service(service: &ServiceDescriptor, depth: usize) -> String {
    let mut out = comments(&service.parent_file(), service.path(), depth);
    let _ = writeln!(out, "{}service {} {{", pad(depth), service.name());
    out.push_str(&long_options(&service.options(), depth + 1));
    let mut methods: Vec<MethodDescriptor> = service.methods().collect();
    methods.sort_by(|a, b| a.name().cmp(b.name()));
    for m in &methods {
        out.push_str(&method(m, depth + 1));
    }
    let _ = writeln!(out, "{}}}", pad(depth));
    out
}

fn method(method: &MethodDescriptor, depth: usize) -> String {
    let mut out = comments(&method.parent_file(), method.path(), depth);
    let stream = |yes: bool| if yes { "stream " } else { "" };
    let _ = write!(
        out,
        "{}rpc {} ( {}.{} ) returns ( {}.{} )",
        pad(depth),
        method.name(),
        stream(method.is_client_streaming()),
        method.input().full_name(),
        stream(method.is_server_streaming()),
        method.output().full_name()
    );
    let options = long_options(&method.options(), depth + 1);
    if options.is_empty() {
        out.push_str(";\n");
    } else {
        let _ = write!(out, " {{\n{options}{}}}\n", pad(depth));
    }
    out
}

fn message(message: &MessageDescriptor, depth: usize) -> String {
    let mut out = comments(&message.parent_file(), message.path(), depth);
    let _ = writeln!(out, "{}message {} {{", pad(depth), message.name());
    out.push_str(&long_options(&message.options(), depth + 1));
    let mut fields: Vec<FieldDescriptor> = message.fields().collect();
    fields.sort_by_key(FieldDescriptor::number);
    let mut printed_oneofs = Vec::new();
    for f in &fields {
        match f.containing_oneof().filter(|o| !o.is_synthetic()) {
            None => out.push_str(&field(f, depth + 1)),
            Some(oneof) if !printed_oneofs.contains(&oneof.name().to_owned()) => {
                printed_oneofs.push(oneof.name().to_owned());
                out.push_str(&comments(&oneof.parent_file(), oneof.path(), depth + 1));
                let _ = writeln!(out, "{}oneof {} {{", pad(depth + 1), oneof.name());
                let mut members: Vec<FieldDescriptor> = oneof.fields().collect();
                members.sort_by_key(FieldDescriptor::number);
                for member in &members {
                    out.push_str(&field(member, depth + 2));
                }
                let _ = writeln!(out, "{}}}", pad(depth + 1));
            }
            Some(_) => {}
        }
    }
    let mut nested: Vec<MessageDescriptor> = message
        .child_messages()
        .filter(|m| !m.is_map_entry())
        .collect();
    nested.sort_by(|a, b| a.name().cmp(b.name()));
    for m in &nested {
        out.push_str(&self::message(m, depth + 1));
    }
    let mut enums: Vec<EnumDescriptor> = message.child_enums().collect();
    enums.sort_by(|a, b| a.name().cmp(b.name()));
    for e in &enums {
        out.push_str(&enumeration(e, depth + 1));
    }
    let proto = message.descriptor_proto();
    let ranges = |ranges: Vec<(i32, i32)>| {
        ranges
            .into_iter()
            .map(|(start, end)| match end - 1 {
                last if last == start => start.to_string(),
                536_870_911 => format!("{start} to max"),
                last => format!("{start} to {last}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let extension_ranges: Vec<(i32, i32)> = proto
        .extension_range
        .iter()
        .map(|r| (r.start(), r.end()))
        .collect();
    if !extension_ranges.is_empty() {
        let _ = writeln!(
            out,
            "{}extensions {};",
            pad(depth + 1),
            ranges(extension_ranges)
        );
    }
    let reserved: Vec<(i32, i32)> = proto
        .reserved_range
        .iter()
        .map(|r| (r.start(), r.end()))
        .collect();
    if !reserved.is_empty() {
        let _ = writeln!(out, "{}reserved {};", pad(depth + 1), ranges(reserved));
    }
    if !proto.reserved_name.is_empty() {
        let mut names = proto.reserved_name.clone();
        names.sort();
        let names: Vec<String> = names.iter().map(|n| quote(n.as_bytes())).collect();
        let _ = writeln!(out, "{}reserved {};", pad(depth + 1), names.join(", "));
    }
    let _ = writeln!(out, "{}}}", pad(depth));
    out
}

fn field(field: &FieldDescriptor, depth: usize) -> String {
    let mut out = comments(&field.parent_file(), field.path(), depth);
    let proto = field.field_descriptor_proto();
    let proto2 = field.parent_file().file_descriptor_proto().syntax() != "proto3";
    let in_oneof = field.containing_oneof().is_some_and(|o| !o.is_synthetic());
    let label = if proto.proto3_optional() {
        "optional "
    } else if field.is_map() || in_oneof {
        ""
    } else {
        match field.cardinality() {
            Cardinality::Repeated => "repeated ",
            Cardinality::Required => "required ",
            Cardinality::Optional if proto2 => "optional ",
            Cardinality::Optional => "",
        }
    };
    let _ = write!(
        out,
        "{}{label}{} {} = {}",
        pad(depth),
        type_name(field),
        field.name(),
        field.number()
    );
    let mut options = Vec::new();
    if let Some(default) = &proto.default_value {
        let value = match field.kind() {
            Kind::String | Kind::Bytes => quote(default.as_bytes()),
            _ => default.clone(),
        };
        options.push(("default".to_owned(), value));
    }
    if let Some(json_name) = &proto.json_name
        && *json_name != default_json_name(field.name())
    {
        options.push(("json_name".to_owned(), quote(json_name.as_bytes())));
    }
    options.extend(option_values(&field.options()));
    out.push_str(&short_options(options));
    out.push_str(";\n");
    out
}

fn type_name(field: &FieldDescriptor) -> String {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        return format!(
            "map<{}, {}>",
            kind_name(&entry.map_entry_key_field().kind()),
            kind_name(&entry.map_entry_value_field().kind())
        );
    }
    kind_name(&field.kind())
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => format!(".{}", m.full_name()),
        Kind::Enum(e) => format!(".{}", e.full_name()),
        scalar => format!("{scalar:?}").to_lowercase(),
    }
}

/// protoc's default `json_name`: underscores dropped, the next letter
/// upper-cased.
fn default_json_name(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn enumeration(e: &EnumDescriptor, depth: usize) -> String {
    let mut out = comments(&e.parent_file(), e.path(), depth);
    let _ = writeln!(out, "{}enum {} {{", pad(depth), e.name());
    out.push_str(&long_options(&e.options(), depth + 1));
    let mut values: Vec<EnumValueDescriptor> = e.values().collect();
    // By number, then name; 0 first (open enums must start with it).
    values.sort_by_key(|v| (v.number() != 0, v.number(), v.name().to_owned()));
    for v in &values {
        out.push_str(&enum_value(v, depth + 1));
    }
    let _ = writeln!(out, "{}}}", pad(depth));
    out
}

fn enum_value(value: &EnumValueDescriptor, depth: usize) -> String {
    let mut out = comments(&value.parent_file(), value.path(), depth);
    let _ = write!(out, "{}{} = {}", pad(depth), value.name(), value.number());
    out.push_str(&short_options(option_values(&value.options())));
    out.push_str(";\n");
    out
}

fn short_options(mut options: Vec<(String, String)>) -> String {
    if options.is_empty() {
        return String::new();
    }
    sort_options(&mut options);
    let list: Vec<String> = options.iter().map(|(n, v)| format!("{n} = {v}")).collect();
    format!(" [{}]", list.join(", "))
}

fn long_options(options: &DynamicMessage, depth: usize) -> String {
    let mut options = option_values(options);
    sort_options(&mut options);
    options
        .iter()
        .map(|(name, value)| format!("{}option {name} = {value};\n", pad(depth)))
        .collect()
}

/// By name, custom (extension) options last.
fn sort_options(options: &mut [(String, String)]) {
    options.sort_by(|a, b| (a.0.starts_with('('), &a.0).cmp(&(b.0.starts_with('('), &b.0)));
}

/// The set options of an options message, as (name, proto literal), scalar
/// values only.
fn option_values(options: &DynamicMessage) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = options
        .fields()
        .filter(|(f, _)| f.name() != "uninterpreted_option" && f.name() != "features")
        .filter_map(|(f, v)| literal(&f.kind(), v).map(|v| (f.name().to_owned(), v)))
        .collect();
    out.extend(
        options.extensions().filter_map(|(e, v)| {
            literal(&e.kind(), v).map(|v| (format!("({})", e.full_name()), v))
        }),
    );
    out
}

fn literal(kind: &Kind, value: &Value) -> Option<String> {
    Some(match value {
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(f) => f.to_string(),
        Value::F64(f) => f.to_string(),
        Value::String(s) => quote(s.as_bytes()),
        Value::Bytes(b) => quote(b),
        Value::EnumNumber(n) => match kind {
            Kind::Enum(e) => e
                .get_value(*n)
                .map_or_else(|| n.to_string(), |v| v.name().to_owned()),
            _ => n.to_string(),
        },
        Value::Message(_) | Value::List(_) | Value::Map(_) => return None,
    })
}

/// A proto string literal.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\{:03o}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\{b:03o}");
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names() {
        assert_eq!(default_json_name("uptime_seconds"), "uptimeSeconds");
        assert_eq!(default_json_name("name"), "name");
        assert_eq!(default_json_name("a_b_c"), "aBC");
    }

    #[test]
    fn quotes() {
        assert_eq!(quote(b"a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(quote(&[0xff, b'x']), r#""\377x""#);
    }
}
