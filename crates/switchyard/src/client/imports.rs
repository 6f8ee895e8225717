//! Imports that files leave out, put back.
//!
//! Some reflection servers hand out file descriptors that use names from
//! files they do not import: @grpc/reflection omits the imports
//! (grpc-node#3034), so a file using `google.protobuf.Any` lists no
//! `google/protobuf/any.proto`. A descriptor pool refuses such a file ("name
//! 'google.protobuf.Any' is not defined"), though nothing is wrong with the
//! API. So before the pool is built, every name a file uses is looked up in
//! the other files, then in the well-known types (built in); the file found
//! is added to the user's imports. What is found nowhere is handed back, for
//! the caller to ask the server by symbol.
//!
//! Files stay encoded as received: the import is appended as one more
//! `dependency` (field 3), which leaves every other byte, custom options
//! included, as it was.

use std::collections::{BTreeSet, HashMap};

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use prost_reflect::DescriptorPool;
use prost_types::{DescriptorProto, FileDescriptorProto};
use switchyard_director::FileSet;

/// `FileDescriptorProto.dependency`.
const DEPENDENCY_FIELD: u32 = 3;

/// What [`add_missing_imports`] made of a set of files.
#[derive(Debug, Default)]
pub struct Repaired {
    /// The files, each importing what it uses when that was found.
    pub files: FileSet,
    /// Names used but defined nowhere, each in the forms it may stand for
    /// (a relative name in every enclosing scope), innermost first.
    pub undefined: Vec<String>,
}

/// Adds to each file of `files` the imports its names need, from the set
/// itself or from the well-known types (whose files join the set).
pub fn add_missing_imports(files: &FileSet) -> Result<Repaired, prost::DecodeError> {
    let decoded: Vec<(FileDescriptorProto, &Bytes)> = files
        .encoded()
        .map(|encoded| FileDescriptorProto::decode(encoded.clone()).map(|file| (file, encoded)))
        .collect::<Result<_, _>>()?;
    let mut defined = HashMap::new();
    for (file, _) in &decoded {
        for name in definitions(file) {
            defined
                .entry(name)
                .or_insert_with(|| file.name().to_owned());
        }
    }
    let mut repaired = Repaired::default();
    let mut well_known = BTreeSet::new();
    let mut undefined = BTreeSet::new();
    for (file, encoded) in &decoded {
        let mut imports = BTreeSet::new();
        for (name, scope) in references(file) {
            let candidates = candidates(&name, &scope);
            let found = candidates
                .iter()
                .find_map(|c| defined.get(c).cloned())
                .or_else(|| {
                    let file = candidates.iter().find_map(|c| well_known_file(c))?;
                    well_known.insert(file.clone());
                    Some(file)
                });
            match found {
                Some(source) if source != file.name() && !file.dependency.contains(&source) => {
                    imports.insert(source);
                }
                Some(_) => {}
                None => undefined.extend(candidates),
            }
        }
        repaired.files.insert(with_imports(encoded, &imports))?;
    }
    for name in well_known {
        if let Some(file) = DescriptorPool::global().get_file_by_name(&name) {
            repaired.files.insert(Bytes::from(file.encode_to_vec()))?;
        }
    }
    repaired.undefined = undefined.into_iter().collect();
    Ok(repaired)
}

/// `encoded` with `imports` appended to its dependencies.
fn with_imports(encoded: &Bytes, imports: &BTreeSet<String>) -> Bytes {
    if imports.is_empty() {
        return encoded.clone();
    }
    let mut out = BytesMut::from(encoded.as_ref());
    for import in imports {
        prost::encoding::string::encode(DEPENDENCY_FIELD, import, &mut out);
    }
    out.freeze()
}

/// The file of the built-in well-known types defining `name`.
fn well_known_file(name: &str) -> Option<String> {
    let pool = DescriptorPool::global();
    let file = pool
        .get_message_by_name(name)
        .map(|m| m.parent_file())
        .or_else(|| pool.get_enum_by_name(name).map(|e| e.parent_file()))?;
    Some(file.name().to_owned())
}

/// The full names of the messages and enums `file` defines.
fn definitions(file: &FileDescriptorProto) -> Vec<String> {
    fn walk(scope: &str, message: &DescriptorProto, out: &mut Vec<String>) {
        let name = qualified(scope, message.name());
        for nested in &message.nested_type {
            walk(&name, nested, out);
        }
        out.extend(message.enum_type.iter().map(|e| qualified(&name, e.name())));
        out.push(name);
    }
    let mut out = Vec::new();
    for m in &file.message_type {
        walk(file.package(), m, &mut out);
    }
    out.extend(
        file.enum_type
            .iter()
            .map(|e| qualified(file.package(), e.name())),
    );
    out
}

/// The type names `file` uses, each with the scope it is used in.
fn references(file: &FileDescriptorProto) -> Vec<(String, String)> {
    fn walk(scope: &str, message: &DescriptorProto, out: &mut BTreeSet<(String, String)>) {
        let name = qualified(scope, message.name());
        for field in message.field.iter().chain(&message.extension) {
            for used in [&field.type_name, &field.extendee].into_iter().flatten() {
                out.insert((used.clone(), name.clone()));
            }
        }
        for nested in &message.nested_type {
            walk(&name, nested, out);
        }
    }
    let package = file.package();
    // A name used many times in one scope is looked up once.
    let mut out = BTreeSet::new();
    for m in &file.message_type {
        walk(package, m, &mut out);
    }
    for field in &file.extension {
        for used in [&field.type_name, &field.extendee].into_iter().flatten() {
            out.insert((used.clone(), package.to_owned()));
        }
    }
    for service in &file.service {
        let scope = qualified(package, service.name());
        for method in &service.method {
            for used in [&method.input_type, &method.output_type]
                .into_iter()
                .flatten()
            {
                out.insert((used.clone(), scope.clone()));
            }
        }
    }
    out.into_iter().collect()
}

/// The full names `name`, used in `scope`, may stand for, innermost first:
/// a leading `.` makes it full already; otherwise each enclosing scope is
/// tried, as protoc resolves names.
fn candidates(name: &str, scope: &str) -> Vec<String> {
    if let Some(full) = name.strip_prefix('.') {
        return vec![full.to_owned()];
    }
    let mut out = Vec::new();
    let mut scope = scope;
    loop {
        out.push(qualified(scope, name));
        match scope.rfind('.') {
            Some(at) => scope = &scope[..at],
            None if scope.is_empty() => break,
            None => scope = "",
        }
    }
    out
}

fn qualified(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_are_tried_in_every_enclosing_scope() {
        assert_eq!(candidates(".a.B", "x.y"), ["a.B"]);
        assert_eq!(candidates("B", "x.y"), ["x.y.B", "x.B", "B"]);
        assert_eq!(candidates("B", ""), ["B"]);
    }

    #[test]
    fn imports_left_out_are_put_back() {
        let field = |name: &str, type_name: &str| prost_types::FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(1),
            r#type: Some(prost_types::field_descriptor_proto::Type::Message.into()),
            type_name: Some(type_name.into()),
            ..Default::default()
        };
        let uses = FileDescriptorProto {
            name: Some("uses.proto".into()),
            package: Some("p".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("M".into()),
                field: vec![
                    field("at", ".google.protobuf.Timestamp"),
                    prost_types::FieldDescriptorProto {
                        number: Some(2),
                        ..field("part", "Part")
                    },
                    prost_types::FieldDescriptorProto {
                        number: Some(3),
                        ..field("gone", ".q.Gone")
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let part = FileDescriptorProto {
            name: Some("part.proto".into()),
            package: Some("p".into()),
            syntax: Some("proto3".into()),
            message_type: vec![DescriptorProto {
                name: Some("Part".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut files = FileSet::default();
        files.insert(Bytes::from(uses.encode_to_vec())).unwrap();
        files.insert(Bytes::from(part.encode_to_vec())).unwrap();
        let repaired = add_missing_imports(&files).unwrap();
        assert_eq!(repaired.undefined, ["q.Gone"]);
        let by_name: HashMap<String, FileDescriptorProto> = repaired
            .files
            .decoded()
            .map(|f| f.unwrap())
            .map(|f| (f.name().to_owned(), f))
            .collect();
        assert_eq!(
            by_name["uses.proto"].dependency,
            ["google/protobuf/timestamp.proto", "part.proto"]
        );
        assert!(by_name.contains_key("google/protobuf/timestamp.proto"));
        // Nothing else changed.
        let mut back = by_name["uses.proto"].clone();
        back.dependency.clear();
        assert_eq!(back, uses);
    }
}
