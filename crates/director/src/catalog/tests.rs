use super::*;

use bytes::Bytes;
use prost::Message;

use crate::reflection::FileSet;

/// The services of `proto` (one file, package `t`) as reflection returns them.
fn found(proto: &str) -> ServiceFiles {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.proto"), proto).unwrap();
    let set = protox::compile(["t.proto"], [dir.path()]).unwrap();
    let mut files = FileSet::default();
    let mut services = Vec::new();
    for file in set.file {
        services.extend(
            file.service
                .iter()
                .map(|s| qualified(file.package(), s.name())),
        );
        files.insert(Bytes::from(file.encode_to_vec())).unwrap();
    }
    services.sort();
    ServiceFiles { services, files }
}

const API: &str = r#"
syntax = "proto3";
package t;
message Metadata { string machine_addr = 1; }
message Entry { Metadata metadata = 1; string name = 2; }
message Reply { repeated Entry messages = 1; }
message Flat { string text = 1; }
message Scalars { repeated string names = 1; }
message BadEntry { string text = 1; }
message BadEntries { repeated BadEntry messages = 1; }
message NoOne { string name = 2; }
message Outer { message Inner { Metadata metadata = 1; } repeated Inner messages = 1; }
message Request {}
service S {
  rpc Good(Request) returns (Reply);
  rpc Watch(Request) returns (stream Entry);
  rpc WatchLists(Request) returns (stream Reply);
  rpc Nested(Request) returns (Outer);
  rpc FlatReply(Request) returns (Flat);
  rpc ScalarList(Request) returns (Scalars);
  rpc StringEntries(Request) returns (BadEntries);
  rpc NoFieldOne(Request) returns (NoOne);
}
"#;

#[test]
fn streamed_methods_and_reply_types_that_fit_fan_out() {
    let methods = catalog_of(&found(API)).unwrap();
    let fits = |m: &str| methods[m].unfit.is_none();
    assert!(fits("/t.S/Good"));
    assert!(fits("/t.S/Watch"));
    assert!(fits("/t.S/Nested"));
    assert!(methods["/t.S/Watch"].streamed);
    assert!(!methods["/t.S/Good"].streamed);

    let why = |m: &str| methods[m].unfit.clone().unwrap();
    assert!(
        why("/t.S/FlatReply")
            .contains("field 1 of its reply type t.Flat (`text`) is not a repeated message"),
        "{}",
        why("/t.S/FlatReply")
    );
    assert!(why("/t.S/ScalarList").contains("not a repeated message"));
    assert!(
        why("/t.S/StringEntries")
            .contains("field 1 of its entries (t.BadEntry.text) is not a message"),
        "{}",
        why("/t.S/StringEntries")
    );
    assert!(why("/t.S/NoFieldOne").contains("has no field 1"));
    // Each message of a stream is one entry, not a list.
    assert!(
        why("/t.S/WatchLists")
            .contains("field 1 of its streamed reply type (t.Reply.messages) is not a message"),
        "{}",
        why("/t.S/WatchLists")
    );
    assert_eq!(methods.len(), 8);
}

#[test]
fn a_catalog_answers_what_it_was_given() {
    let catalog = MethodCatalog::with_methods(catalog_of(&found(API)).unwrap());
    assert!(catalog.is_settled());
    assert!(catalog.knows("/t.S/Good"));
    assert!(!catalog.knows("/t.S/Missing"));
    assert_eq!(
        catalog.streamed(),
        vec!["/t.S/Watch".to_owned(), "/t.S/WatchLists".to_owned()]
    );
    assert!(catalog.get("/t.S/FlatReply").unwrap().unfit.is_some());
    assert_eq!(catalog.methods().len(), 8);
}
