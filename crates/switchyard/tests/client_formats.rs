//! Output forms on hand-built replies, and grpcurl compatibility.
//!
//! The `golden/*.grpcurl.*` files are grpcurl's own output for the same
//! messages (`-format json`, default flags), from the `test.v1.Echo` server
//! of `tests/dynamic`. They were captured with grpcurl v1.8.6, whose JSON
//! indentation predates v1.8.8, and re-indented the way v1.8.8 and later
//! print (`json.Compact` then `json.Indent(…, "", "  ")`, Go's own), with
//! `\u0008`/`\u000c` written `\b`/`\f` as Go ≥ 1.22 (current releases)
//! escapes them.

mod dynamic;

use dynamic as support;

use machine_info::pb;
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage};
use switchyard::client::describe::describe;
use switchyard::client::output::{self, Entry, EntryError, JsonOptions, Machine, Shape};
use switchyard::client::request::{RequestOptions, parse_messages};
use switchyard::client::resolve::resolve_symbol;

/// A hand-built fan-out `DescribeResponse`: alpha answered, beta failed.
fn describe_response() -> DynamicMessage {
    let reply = pb::DescribeResponse {
        messages: vec![
            pb::Description {
                metadata: Some(pb::Metadata {
                    machine_addr: "10.0.0.1:50000".into(),
                    machine_name: "alpha".into(),
                    machine_id: "m-alpha".into(),
                    ..Default::default()
                }),
                name: "alpha".into(),
                uptime_seconds: 42,
                proxy_authority: "switchyard".into(),
                calls: 7,
            },
            pb::Description {
                metadata: Some(pb::Metadata {
                    machine_addr: "10.0.0.2:50000".into(),
                    error: "connection refused".into(),
                    status: Some(pb::google::rpc::Status {
                        code: tonic::Code::Unavailable as i32,
                        message: "connection refused".into(),
                        details: vec![],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
    };
    let descriptor = support::machine_info_pool()
        .get_message_by_name("machineinfo.v1.DescribeResponse")
        .unwrap();
    DynamicMessage::decode(descriptor, reply.encode_to_vec().as_slice()).unwrap()
}

#[test]
fn fan_out_reply_splits_into_machines() {
    let reply = describe_response();
    assert_eq!(output::fanout::shape(&reply.descriptor()), Shape::Merged);
    let entries = output::split(&reply);
    assert_eq!(entries.len(), 2);

    let alpha = &entries[0];
    assert_eq!(
        alpha.machine,
        Some(Machine {
            addr: "10.0.0.1:50000".into(),
            name: "alpha".into(),
            id: "m-alpha".into(),
        })
    );
    assert_eq!(alpha.machine_label(), "alpha");
    assert_eq!(alpha.error, None);
    // The entry without its metadata.
    assert!(!alpha.body.has_field_by_number(1));
    assert_eq!(
        output::format_json(&alpha.body, JsonOptions::default()),
        "{\n  \"name\": \"alpha\",\n  \"uptimeSeconds\": \"42\",\n  \"proxyAuthority\": \"switchyard\",\n  \"calls\": \"7\"\n}"
    );

    let beta = &entries[1];
    assert_eq!(beta.machine_label(), "10.0.0.2:50000");
    assert_eq!(
        beta.error,
        Some(EntryError {
            code: tonic::Code::Unavailable,
            message: "connection refused".into(),
        })
    );
    assert_eq!(output::exit_code(&entries), 1);
    assert_eq!(output::exit_code(&entries[..1]), 0);
    assert_eq!(output::exit_code(&[]), 0);
}

#[test]
fn table_aligns_rows_and_shows_errors() {
    let entries = output::split(&describe_response());
    assert_eq!(
        output::format_table(&entries, false),
        "MACHINE          NAME    UPTIME_SECONDS   PROXY_AUTHORITY   CALLS\n\
         alpha            alpha   42               switchyard        7\n\
         10.0.0.2:50000   ERROR UNAVAILABLE: connection refused\n"
    );
}

#[test]
fn jsonl_tags_each_entry_with_its_machine() {
    let lines: Vec<String> = output::split(&describe_response())
        .iter()
        .map(|e| output::format_jsonl(e, JsonOptions::default()))
        .collect();
    assert_eq!(
        lines,
        [
            r#"{"machine":"alpha","machineAddr":"10.0.0.1:50000","machineId":"m-alpha","reply":{"name":"alpha","uptimeSeconds":"42","proxyAuthority":"switchyard","calls":"7"}}"#,
            r#"{"machine":"10.0.0.2:50000","machineAddr":"10.0.0.2:50000","error":{"code":"UNAVAILABLE","message":"connection refused"}}"#,
        ]
    );
}

#[test]
fn error_text_without_status_is_unknown() {
    let pool = support::machine_info_pool();
    let tick = DynamicMessage::decode(
        pool.get_message_by_name("machineinfo.v1.Tick").unwrap(),
        pb::Tick {
            metadata: Some(pb::Metadata {
                machine_name: "gamma".into(),
                error: "boom".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
        .as_slice(),
    )
    .unwrap();
    // A streamed reply is itself one entry.
    assert_eq!(output::fanout::shape(&tick.descriptor()), Shape::Entry);
    let entries = output::split(&tick);
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0].error.as_ref().unwrap().to_string(),
        "UNKNOWN: boom"
    );
    assert_eq!(
        output::format_table(&entries, false),
        "MACHINE   NAME   SEQ\ngamma     ERROR UNKNOWN: boom\n"
    );
}

#[test]
fn plain_replies_are_one_entry_without_machine() {
    let pool = support::echo_pool();
    let summary = parse_messages(
        &pool.get_message_by_name("test.v1.Summary").unwrap(),
        r#"{"count": 2, "joined": "a\tb"}"#,
        RequestOptions::default(),
    )
    .unwrap()
    .remove(0);
    let entries: Vec<Entry> = output::split(&summary);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].machine, None);
    assert_eq!(
        output::format_table(&entries, false),
        "MACHINE   COUNT   JOINED\n-         2       a\\tb\n"
    );
    assert_eq!(
        output::format_jsonl(&entries[0], JsonOptions::default()),
        r#"{"reply":{"count":2,"joined":"a\tb"}}"#
    );
}

fn kitchen(json: &str) -> DynamicMessage {
    let pool = support::echo_pool();
    parse_messages(
        &pool.get_message_by_name("test.v1.Kitchen").unwrap(),
        json,
        RequestOptions::default(),
    )
    .unwrap()
    .remove(0)
}

#[test]
fn json_matches_grpcurl_for_every_field_kind() {
    let message = kitchen(include_str!("golden/kitchen.request.json"));
    assert_eq!(
        output::format_json(&message, JsonOptions::default()) + "\n",
        include_str!("golden/kitchen.grpcurl.json")
    );
}

#[test]
fn json_with_defaults_matches_grpcurl_emit_defaults() {
    let message = kitchen(r#"{"name_choice": "n", "inners": [{}], "counts": {"a": 0}}"#);
    assert_eq!(
        output::format_json(
            &message,
            JsonOptions {
                emit_defaults: true
            }
        ) + "\n",
        include_str!("golden/sparse.emit-defaults.grpcurl.json")
    );
}

#[test]
fn empty_reply_is_empty_object() {
    assert_eq!(
        output::format_json(&kitchen("{}"), JsonOptions::default()),
        "{}"
    );
}

#[test]
fn unresolvable_any_gets_grpcurls_placeholder() {
    let mut message = kitchen("{}");
    let any_type = support::echo_pool()
        .get_message_by_name("google.protobuf.Any")
        .unwrap();
    let mut any = DynamicMessage::new(any_type);
    any.set_field_by_name(
        "type_url",
        prost_reflect::Value::String("type.googleapis.com/acme.v1.Secret".into()),
    );
    any.set_field_by_name("value", prost_reflect::Value::Bytes(vec![8, 1].into()));
    message.set_field_by_name("any", prost_reflect::Value::Message(any));
    assert_eq!(
        output::to_json(&message, JsonOptions::default()).to_compact(),
        r#"{"any":{"@error":"acme.v1.Secret is not recognized; see @value for raw binary message data","@type":"type.googleapis.com/acme.v1.Secret","@value":"CAE="}}"#
    );
}

#[test]
fn anys_nested_in_anys_are_cut_at_a_depth() {
    // A hostile server can nest `Any`s as deep as its reply's size allows;
    // each decodes afresh, so the printer itself must stop expanding.
    let any_type = support::echo_pool()
        .get_message_by_name("google.protobuf.Any")
        .unwrap();
    let wrap = |inner: Vec<u8>| {
        let mut any = DynamicMessage::new(any_type.clone());
        any.set_field_by_name(
            "type_url",
            prost_reflect::Value::String("type.googleapis.com/google.protobuf.Any".into()),
        );
        any.set_field_by_name("value", prost_reflect::Value::Bytes(inner.into()));
        any
    };
    let mut bytes = Vec::new();
    for _ in 0..1000 {
        bytes = wrap(bytes).encode_to_vec();
    }
    let mut message = kitchen("{}");
    message.set_field_by_name("any", prost_reflect::Value::Message(wrap(bytes)));
    let text = output::to_json(&message, JsonOptions::default()).to_compact();
    assert_eq!(text.matches("\"@type\"").count(), 33, "{text:.300}");
    assert!(
        text.contains("google.protobuf.Any nested too deep (over 32 Any values)"),
        "{text:.300}"
    );
}

#[test]
fn describe_matches_grpcurl() {
    let pool = support::echo_pool();
    let text: String = [
        "test.v1.Echo",
        "test.v1.Echo.Echo",
        "test.v1.Kitchen",
        "test.v1.Color",
        "test.v1.Kitchen.custom",
        "test.v1.Kitchen.CountsEntry",
    ]
    .iter()
    .map(|name| describe(&resolve_symbol(&pool, name).unwrap()))
    .collect();
    assert_eq!(text, include_str!("golden/describe.grpcurl.txt"));
}
