//! The `jsonl` form: one compact JSON object per entry, for scripts.
//!
//! Each line is an envelope, so a reply field can never clash with the
//! tags: `{"machine": label, "machineAddr": …, "machineId": …, "reply": {…}}`
//! for an entry that succeeded, and `{"machine": …, "error": {"code":
//! "UNAVAILABLE", "message": …}}` for one that failed (plus `"reply"` if the
//! failed entry still carries fields). `machine*` keys are left out when
//! the entry names no machine, and `machineAddr`/`machineId` when empty.
//! The reply uses grpcurl's JSON mapping (see [`super::json`]), compact.

use super::fanout::{Entry, code_name};
use super::gojson::Json;
use super::json::{JsonOptions, to_json};

/// One entry as a JSON line (without the newline).
pub fn format_jsonl(entry: &Entry, options: JsonOptions) -> String {
    to_jsonl(entry, options).to_compact()
}

/// One entry as the JSON object of its line.
pub fn to_jsonl(entry: &Entry, options: JsonOptions) -> Json {
    let mut fields = Vec::new();
    if let Some(machine) = &entry.machine {
        fields.push((
            "machine".to_owned(),
            Json::String(machine.label().to_owned()),
        ));
        if !machine.addr.is_empty() {
            fields.push(("machineAddr".to_owned(), Json::String(machine.addr.clone())));
        }
        if !machine.id.is_empty() {
            fields.push(("machineId".to_owned(), Json::String(machine.id.clone())));
        }
    }
    let reply = to_json(&entry.body, options);
    match &entry.error {
        Some(error) => {
            fields.push((
                "error".to_owned(),
                Json::Object(vec![
                    (
                        "code".to_owned(),
                        Json::String(code_name(error.code).to_owned()),
                    ),
                    ("message".to_owned(), Json::String(error.message.clone())),
                ]),
            ));
            if !matches!(&reply, Json::Object(f) if f.is_empty()) {
                fields.push(("reply".to_owned(), reply));
            }
        }
        None => fields.push(("reply".to_owned(), reply)),
    }
    Json::Object(fields)
}
