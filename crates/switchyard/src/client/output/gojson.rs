//! JSON text exactly as Go's `encoding/json` writes it, which is what
//! grpcurl's output is made of.
//!
//! grpcurl marshals a reply compactly (jhump/protoreflect's dynamic messages
//! and golang/protobuf's `jsonpb`, both writing strings with `json.Marshal`)
//! and re-indents the result with `json.Indent(…, "", "  ")`. Matching it
//! byte for byte takes Go's choices, not serde_json's:
//! - strings escape `<`, `>`, `&`, U+2028 and U+2029 as `\u003c`-style
//!   sequences (HTML-safe), other controls as `\u00XX` (lowercase), and
//!   `\b`, `\f`, `\n`, `\r`, `\t` short (Go ≥ 1.22, as grpcurl releases are);
//! - floats of ordinary fields use `strconv.FormatFloat(f, 'g', -1, bits)`
//!   (`1e+06`, `1.5`), while floats inside well-known types go through
//!   `json.Marshal` (`1000000`, `1e-7`);
//! - indentation is two spaces, `"key": value`, and empty objects and arrays
//!   stay `{}` and `[]`.
//!
//! A small ordered tree ([`Json`]) is built first, then written.

use std::fmt::Write as _;

/// A JSON value whose object keys keep their order and whose numbers are
/// already formatted.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as it is to be written.
    Number(String),
    /// A string, unescaped.
    String(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, keys in writing order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Go's `json.Indent(compact, "", "  ")` of this value.
    pub fn to_indented(&self) -> String {
        let mut out = String::new();
        write_indented(&mut out, self, 0);
        out
    }

    /// Go's compact `json.Marshal` form of this value.
    pub fn to_compact(&self) -> String {
        let mut out = String::new();
        write_compact(&mut out, self);
        out
    }
}

fn write_indented(out: &mut String, value: &Json, depth: usize) {
    match value {
        Json::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_indented(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Json::Object(fields) if !fields.is_empty() => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_string(out, key);
                out.push_str(": ");
                write_indented(out, item, depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
        scalar => write_compact(out, scalar),
    }
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn write_compact(out: &mut String, value: &Json) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(n),
        Json::String(s) => write_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_compact(out, item);
            }
            out.push(']');
        }
        Json::Object(fields) => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_compact(out, item);
            }
            out.push('}');
        }
    }
}

/// A JSON string as Go's `json.Marshal` escapes it.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 64)`: how grpcurl writes `double`
/// fields of ordinary messages.
pub fn format_g64(f: f64) -> String {
    match special(f) {
        Some(s) => s,
        None => format_g(&Decimal::parse(&format!("{f:e}"))),
    }
}

/// Go's `strconv.FormatFloat(float64(f), 'g', -1, 32)`: `float` fields.
pub fn format_g32(f: f32) -> String {
    match special(f64::from(f)) {
        Some(s) => s,
        None => format_g(&Decimal::parse(&format!("{f:e}"))),
    }
}

/// Go's `json.Marshal(float64)`: floats inside well-known types
/// (`google.protobuf.Value`, `DoubleValue`).
pub fn format_json64(f: f64) -> String {
    match special(f) {
        Some(s) => s,
        None => format_json(
            &Decimal::parse(&format!("{f:e}")),
            f != 0.0 && (f.abs() < 1e-6 || f.abs() >= 1e21),
        ),
    }
}

/// Go's `json.Marshal(float32)`: `google.protobuf.FloatValue`.
pub fn format_json32(f: f32) -> String {
    match special(f64::from(f)) {
        Some(s) => s,
        // Go compares in float32 here: the thresholds round first.
        None => format_json(
            &Decimal::parse(&format!("{f:e}")),
            f != 0.0 && (f.abs() < 1e-6_f32 || f.abs() >= 1e21_f32),
        ),
    }
}

/// Non-finite values: the protobuf JSON mapping quotes them.
fn special(f: f64) -> Option<String> {
    if f.is_nan() {
        Some("\"NaN\"".into())
    } else if f == f64::INFINITY {
        Some("\"Infinity\"".into())
    } else if f == f64::NEG_INFINITY {
        Some("\"-Infinity\"".into())
    } else {
        None
    }
}

/// The shortest round-tripping decimal digits of a float: value =
/// 0.d1d2…dn × 10^point.
struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    point: i32,
}

impl Decimal {
    /// From Rust's `{:e}` form (`-1.2345e-7`, `0e0`), itself shortest.
    fn parse(s: &str) -> Self {
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mantissa, exponent) = s.split_once('e').expect("`{:e}` has an exponent");
        let exponent: i32 = exponent.parse().expect("`{:e}` exponent is an integer");
        let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
        Self {
            negative,
            digits,
            point: exponent + 1,
        }
    }

    fn digit(&self, i: i32) -> char {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.digits.get(i))
            .map_or('0', |&d| char::from(d))
    }
}

/// `%e` with the shortest digits: `1.2345e+06`, exponent at least two digits.
fn format_e(d: &Decimal) -> String {
    let mut out = String::new();
    if d.negative {
        out.push('-');
    }
    out.push(d.digit(0));
    if d.digits.len() > 1 {
        out.push('.');
        for i in 1..d.digits.len() {
            out.push(char::from(d.digits[i]));
        }
    }
    let exponent = d.point - 1;
    let _ = write!(
        out,
        "e{}{:02}",
        if exponent < 0 { '-' } else { '+' },
        exponent.abs()
    );
    out
}

/// `%f` with the shortest digits.
fn format_f(d: &Decimal) -> String {
    let mut out = String::new();
    if d.negative {
        out.push('-');
    }
    if d.point > 0 {
        for i in 0..d.point {
            out.push(d.digit(i));
        }
    } else {
        out.push('0');
    }
    let decimals = (d.digits.len() as i32 - d.point).max(0);
    if decimals > 0 {
        out.push('.');
        for i in 0..decimals {
            out.push(d.digit(d.point + i));
        }
    }
    out
}

/// `'g'` with precision -1: `%e` when the decimal exponent is below -4 or at
/// least 6 (Go's fixed threshold for shortest formatting), else `%f`.
fn format_g(d: &Decimal) -> String {
    let exponent = d.point - 1;
    if !(-4..6).contains(&exponent) {
        format_e(d)
    } else {
        format_f(d)
    }
}

/// `encoding/json`'s float form: `%f`, or `%e` with `e-07` shortened to
/// `e-7` when `exponential` (magnitude below 1e-6 or at least 1e21).
fn format_json(d: &Decimal, exponential: bool) -> String {
    if exponential {
        let mut s = format_e(d);
        if let Some(at) = s.find("e-0") {
            s.remove(at + 2);
        }
        s
    } else {
        format_f(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values printed by Go (`strconv.FormatFloat` and
    /// `json.Marshal`).
    #[test]
    fn floats_match_go() {
        let cases: &[(f64, &str, &str)] = &[
            (0.0, "0", "0"),
            (-0.0, "-0", "-0"),
            (1.0, "1", "1"),
            (-1.0, "-1", "-1"),
            (0.1, "0.1", "0.1"),
            (1.5, "1.5", "1.5"),
            (100000.0, "100000", "100000"),
            (123456.0, "123456", "123456"),
            (999999.0, "999999", "999999"),
            (1e6, "1e+06", "1000000"),
            (1234567.0, "1.234567e+06", "1234567"),
            (1e20, "1e+20", "100000000000000000000"),
            (1e21, "1e+21", "1e+21"),
            (1e22, "1e+22", "1e+22"),
            (0.0001, "0.0001", "0.0001"),
            (0.00001, "1e-05", "0.00001"),
            (1.234e-5, "1.234e-05", "0.00001234"),
            (1e-7, "1e-07", "1e-7"),
            (123.456, "123.456", "123.456"),
            (5e-324, "5e-324", "5e-324"),
            (
                f64::MAX,
                "1.7976931348623157e+308",
                "1.7976931348623157e+308",
            ),
            (
                1.2345678901234567,
                "1.2345678901234567",
                "1.2345678901234567",
            ),
        ];
        for &(f, g, json) in cases {
            assert_eq!(format_g64(f), g, "'g' of {f}");
            assert_eq!(format_json64(f), json, "json of {f}");
        }
        let cases32: &[(f32, &str, &str)] = &[
            (0.1, "0.1", "0.1"),
            (1.1, "1.1", "1.1"),
            (3.4028235e38, "3.4028235e+38", "3.4028235e+38"),
            (1e-7, "1e-07", "1e-7"),
            (16777216.0, "1.6777216e+07", "16777216"),
            (1e6, "1e+06", "1000000"),
            (0.3, "0.3", "0.3"),
        ];
        for &(f, g, json) in cases32 {
            assert_eq!(format_g32(f), g, "'g' of {f}");
            assert_eq!(format_json32(f), json, "json of {f}");
        }
        assert_eq!(format_g64(f64::NAN), "\"NaN\"");
        assert_eq!(format_g32(f32::NEG_INFINITY), "\"-Infinity\"");
    }

    #[test]
    fn strings_escape_like_go() {
        let mut out = String::new();
        write_string(
            &mut out,
            "a<b>&c\u{2028}\u{2029}\u{1}\u{1f}\u{7f}\"\\\n\t\r\u{8}\u{c} é😀",
        );
        assert_eq!(
            out,
            r#""a\u003cb\u003e\u0026c\u2028\u2029\u0001\u001f\u{7f}\"\\\n\t\r\b\f é😀""#
                .replace("\\u{7f}", "\u{7f}")
        );
    }

    #[test]
    fn indents_like_go() {
        let value = Json::Object(vec![
            ("a".into(), Json::Object(vec![])),
            ("b".into(), Json::Array(vec![])),
            (
                "c".into(),
                Json::Array(vec![
                    Json::Number("1".into()),
                    Json::Object(vec![("d".into(), Json::String("x".into()))]),
                ]),
            ),
            ("e".into(), Json::Object(vec![("f".into(), Json::Null)])),
        ]);
        assert_eq!(
            value.to_indented(),
            "{\n  \"a\": {},\n  \"b\": [],\n  \"c\": [\n    1,\n    {\n      \"d\": \"x\"\n    }\n  ],\n  \"e\": {\n    \"f\": null\n  }\n}"
        );
        assert_eq!(
            value.to_compact(),
            r#"{"a":{},"b":[],"c":[1,{"d":"x"}],"e":{"f":null}}"#
        );
    }
}
