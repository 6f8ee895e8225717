//! Where the schema comes from: a machine's gRPC server reflection, through
//! Switchyard, or protoset files.
//!
//! A dynamic client knows nothing of the API at build time, so every command
//! starts by obtaining a [`DescriptorPool`] holding the method (or symbol)
//! and every type it reaches. Reflection goes through the same Switchyard as
//! the call, one-to-one to one machine (`machine: alpha`): fanning a
//! reflection call out would merge the answers of several servers into
//! nonsense. When that machine cannot be reached, the next one named is
//! asked, so that a fan-out with a machine down still finds its schema.
//! Servers without reflection need `--protoset` (an encoded
//! `FileDescriptorSet`, as `protoc --descriptor_set_out --include_imports`
//! writes it).
//!
//! What a server leaves out is filled in: imports it does not serve, from
//! the built-in well-known types; imports its files do not even list
//! ([`crate::client::imports`]), from the other files, the well-known types,
//! and further reflection requests by symbol for the names still missing.
//! Only then is a schema incomplete, and the error shows how to make a
//! protoset instead.

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use prost::Message;
use prost_reflect::DescriptorPool;
use switchyard_director::{FileSet, ReflectionClient, ReflectionError};
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

use crate::client::imports::add_missing_imports;
use crate::client::resolve::MethodName;

/// Why no schema could be obtained.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Reflection failed or is not offered.
    #[error("{}", reflection_message(.0))]
    Reflection(#[from] ReflectionError),
    /// A file the schema imports could be found nowhere.
    #[error(
        "file `{file}` imports `{dependency}`, which the schema source does not provide; {PROTOSET_HINT}"
    )]
    MissingDependency {
        /// The importing file.
        file: String,
        /// The missing import.
        dependency: String,
    },
    /// A descriptor could not be decoded.
    #[error("malformed file descriptor: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Files use names that neither they, their imports, the well-known
    /// types nor the server (by symbol) define.
    #[error(
        "incomplete schema: {0} (the schema source leaves out a file it uses); {PROTOSET_HINT}"
    )]
    Incomplete(prost_reflect::DescriptorError),
    /// The descriptors do not form a valid schema.
    #[error("invalid schema: {0}")]
    Invalid(#[from] prost_reflect::DescriptorError),
    /// A protoset file could not be read.
    #[error("cannot read protoset {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How to give a complete schema instead.
const PROTOSET_HINT: &str = "give the schema with --protoset FILE, made with \
    `protoc --include_imports --descriptor_set_out=FILE -I PROTO_DIR your/service.proto`";

/// Most rounds of asking the server for names still undefined (a file it
/// sends may use more).
const SYMBOL_ROUNDS: usize = 4;

/// Most names asked for by symbol in all: a server's schema uses few files,
/// and a broken one must not keep us asking.
const MAX_SYMBOL_LOOKUPS: usize = 64;

fn reflection_message(err: &ReflectionError) -> String {
    match err {
        ReflectionError::Unsupported(_) => format!("{err}; give the schema with --protoset FILE"),
        err => err.to_string(),
    }
}

impl SchemaError {
    /// Whether the user can fix it by changing the command (a missing
    /// `--protoset`, an unknown symbol, a bad file), rather than the
    /// network or a server failing.
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            Self::Reflection(
                ReflectionError::Status(_)
                    | ReflectionError::Timeout(_)
                    | ReflectionError::Protocol(_)
            )
        )
    }
}

/// Where a command's schema comes from.
#[derive(Debug, Clone)]
pub enum SchemaSource {
    /// Protoset files, already read.
    Protoset(DescriptorPool),
    /// Server reflection.
    Reflection(Reflector),
}

/// Reflection over a channel, asking with each of `candidates` (metadata
/// naming one machine) in turn until one machine can be reached.
#[derive(Debug, Clone)]
pub struct Reflector {
    /// The connection to Switchyard (or any server).
    pub channel: Channel,
    /// Metadata of each attempt, in order.
    pub candidates: Vec<MetadataMap>,
    /// When every lookup of the command must be over, whatever the number
    /// of attempts (the command's `--timeout`).
    pub deadline: Instant,
}

impl SchemaSource {
    /// A pool in which method `name` can be resolved: with reflection, the
    /// files of its service when the name is qualified and known, else those
    /// of every service (for short names, and for errors that list what
    /// exists).
    pub async fn pool_for_method(&self, name: &MethodName) -> Result<DescriptorPool, SchemaError> {
        if let Self::Reflection(reflector) = self
            && name.is_qualified()
        {
            let service = name.service.as_str();
            let found = reflector
                .reflect(|mut c| async move { c.files_for_symbols(&[service]).await })
                .await;
            match found {
                Err(SchemaError::Reflection(ReflectionError::SymbolNotFound(_))) => {}
                other => return other,
            }
        }
        self.pool_for_all_services().await
    }

    /// A pool of the file declaring `symbol` (a full name) and its imports.
    pub async fn pool_for_symbol(&self, symbol: &str) -> Result<DescriptorPool, SchemaError> {
        match self {
            Self::Protoset(pool) => Ok(pool.clone()),
            Self::Reflection(reflector) => {
                let symbol = symbol.to_owned();
                reflector
                    .reflect(|mut c| {
                        let symbol = symbol.clone();
                        async move { c.files_for_symbols(&[&symbol]).await }
                    })
                    .await
            }
        }
    }

    /// A pool of every service (reflection itself excepted) and their
    /// imports: what listing, describing or a short name needs.
    pub async fn pool_for_all_services(&self) -> Result<DescriptorPool, SchemaError> {
        match self {
            Self::Protoset(pool) => Ok(pool.clone()),
            Self::Reflection(reflector) => {
                reflector
                    .reflect(|mut c| async move { Ok(c.files_for_services().await?.files) })
                    .await
            }
        }
    }
}

impl Reflector {
    /// Runs `fetch` with each candidate until one reaches its machine, and
    /// builds the pool of the files it got.
    async fn reflect<F, Fut>(&self, fetch: F) -> Result<DescriptorPool, SchemaError>
    where
        F: Fn(ReflectionClient<Channel>) -> Fut,
        Fut: Future<Output = Result<FileSet, ReflectionError>>,
    {
        let mut last = None;
        for metadata in &self.candidates {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = Some(ReflectionError::Timeout(left));
                break;
            }
            let client = ReflectionClient::new(self.channel.clone())
                .with_metadata(metadata.clone())
                .with_timeout(left);
            match fetch(client.clone()).await {
                Ok(files) => return complete(self.look_up_undefined(client, files).await?),
                Err(err) if unreachable(&err) => last = Some(err),
                Err(err) => return Err(err.into()),
            }
        }
        Err(last
            .unwrap_or(ReflectionError::Protocol("no machine to ask"))
            .into())
    }
    /// `files` with what `client`'s server defines of the names they use
    /// but define nowhere, asked for by symbol (`file_containing_symbol`),
    /// until nothing is left to ask or a bound is reached. Names the server
    /// does not know are left to [`complete`] to report.
    async fn look_up_undefined(
        &self,
        mut client: ReflectionClient<Channel>,
        mut files: FileSet,
    ) -> Result<FileSet, SchemaError> {
        let mut asked = BTreeSet::new();
        for _ in 0..SYMBOL_ROUNDS {
            let undefined = add_missing_imports(&files)?.undefined;
            let new: Vec<String> = undefined
                .into_iter()
                .filter(|name| asked.len() < MAX_SYMBOL_LOOKUPS && asked.insert(name.clone()))
                .collect();
            if new.is_empty() {
                break;
            }
            for name in new {
                let left = self.deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(files);
                }
                client = client.with_timeout(left);
                match client.files_for_symbols(&[&name]).await {
                    Ok(found) => {
                        for encoded in found.encoded() {
                            files.insert(encoded.clone())?;
                        }
                    }
                    // A relative name is tried in each scope: most miss.
                    Err(ReflectionError::SymbolNotFound(_)) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }
        Ok(files)
    }
}

/// Whether reflection failed because its machine could not be reached, so
/// that another machine may answer.
fn unreachable(err: &ReflectionError) -> bool {
    match err {
        ReflectionError::Status(status) => matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ),
        ReflectionError::Timeout(_) => true,
        _ => false,
    }
}

/// Builds a pool from `files`, supplying missing well-known imports
/// (`google/protobuf/*`, which servers often leave out) from built-in
/// copies, and imports files use without listing them, from the other files
/// or the well-known types; any other missing import is an error.
pub fn complete(files: FileSet) -> Result<DescriptorPool, SchemaError> {
    let mut files = add_missing_imports(&files)?.files;
    // A built-in file may import another: repeat until complete.
    loop {
        let missing = files.missing();
        if missing.is_empty() {
            // The pool decodes the files itself, in any order, options included.
            return DescriptorPool::decode(files.to_encoded_set().as_slice()).map_err(|err| {
                if err.to_string().contains("is not defined") {
                    SchemaError::Incomplete(err)
                } else {
                    SchemaError::Invalid(err)
                }
            });
        }
        for (importer, dependency) in missing {
            let encoded =
                well_known_file(&dependency).ok_or_else(|| SchemaError::MissingDependency {
                    file: importer,
                    dependency: dependency.clone(),
                })?;
            files.insert(encoded)?;
        }
    }
}

/// The encoded built-in descriptor of a `google/protobuf/*.proto` file.
fn well_known_file(name: &str) -> Option<Bytes> {
    if !name.starts_with("google/protobuf/") {
        return None;
    }
    DescriptorPool::global()
        .get_file_by_name(name)
        .map(|file| Bytes::from(file.encode_to_vec()))
}

/// A `FileDescriptorSet` whose files stay encoded (decoding them into
/// `prost_types` and encoding again would drop custom options).
#[derive(Clone, PartialEq, prost::Message)]
struct EncodedFileSet {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file: Vec<Bytes>,
}

/// A pool from encoded `FileDescriptorSet`s (the content of protoset
/// files), completed as [`complete`] does.
pub fn decode_protosets<'a>(
    sets: impl IntoIterator<Item = &'a [u8]>,
) -> Result<DescriptorPool, SchemaError> {
    let mut files = FileSet::default();
    for set in sets {
        for encoded in EncodedFileSet::decode(set)?.file {
            files.insert(encoded)?;
        }
    }
    complete(files)
}

/// [`decode_protosets`] of the files at `paths`.
pub fn load_protosets(paths: &[impl AsRef<Path>]) -> Result<DescriptorPool, SchemaError> {
    let mut contents = Vec::with_capacity(paths.len());
    for path in paths {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| SchemaError::Read {
            path: path.display().to_string(),
            source,
        })?;
        contents.push(bytes);
    }
    decode_protosets(contents.iter().map(Vec::as_slice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protoset_files_need_no_order() {
        let set = prost_types::FileDescriptorSet::decode(
            DescriptorPool::global().encode_to_vec().as_slice(),
        )
        .unwrap();
        let mut reversed = set.clone();
        reversed.file.reverse();
        let pool = decode_protosets([reversed.encode_to_vec().as_slice()]).unwrap();
        assert!(pool.get_message_by_name("google.protobuf.Any").is_some());
    }

    #[test]
    fn well_known_imports_are_built_in_and_others_are_named() {
        let set =
            prost_types::FileDescriptorSet::decode(switchyard_director::pb::FILE_DESCRIPTOR_SET)
                .unwrap();
        let only = |name: &str| prost_types::FileDescriptorSet {
            file: set
                .file
                .iter()
                .filter(|f| f.name() == name)
                .cloned()
                .collect(),
        };
        let err = decode_protosets([only("switchyard/common/v1/common.proto")
            .encode_to_vec()
            .as_slice()])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "file `switchyard/common/v1/common.proto` imports `google/rpc/status.proto`, \
                 which the schema source does not provide; {PROTOSET_HINT}"
            )
        );
        assert!(err.is_usage());
        let pool = decode_protosets([set.encode_to_vec().as_slice()]).unwrap();
        assert!(pool.get_service_by_name("switchyard.v1.Cluster").is_some());
    }
}
