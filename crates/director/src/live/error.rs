//! Errors of the registry tasks and of single registry entries.

use std::time::Duration;

/// Why a registry operation failed.
///
/// Most of these never reach a caller: the watcher and the registrar retry
/// on their own and report through their state channels. They are returned
/// by the constructors (bad configuration) and by
/// [`LiveRegistry::shutdown`](crate::live::LiveRegistry::shutdown).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid etcd registry config: {0}")]
    Config(String),
    /// etcd answered with an error or the connection failed.
    #[error("etcd {op}: {source}")]
    Etcd {
        /// The request that failed.
        op: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer in time.
    #[error("etcd {op}: no answer within {timeout:?}")]
    Timeout {
        /// The request that timed out.
        op: &'static str,
        /// The bound that was exceeded.
        timeout: Duration,
    },
    /// etcd closed a stream (watch or lease keep-alive) or canceled the watch.
    #[error("etcd {op}: stream ended: {reason}")]
    StreamEnded {
        /// The stream.
        op: &'static str,
        /// What etcd said, if anything.
        reason: String,
    },
    /// etcd's answer lacks something it always carries.
    #[error("etcd {op}: malformed answer: {what}")]
    Protocol {
        /// The request.
        op: &'static str,
        /// What is missing.
        what: &'static str,
    },
    /// Our lease is gone (it expired, e.g. while etcd was unreachable, or
    /// someone revoked it).
    #[error("lease {0:x} is gone")]
    LeaseLost(i64),
    /// The task ended before it could finish the request.
    #[error("registry task ended unexpectedly")]
    TaskEnded,
}

/// Why one etcd entry was skipped. Logged with its key; never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The key or the value is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The value is larger than the configured bound.
    #[error("value has {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Size of the value.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The value is not a member JSON object.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The ID (from the key or the value) or the name is unusable.
    #[error("invalid {what} {value:?}: {reason}")]
    Identifier {
        /// `id` or `name`.
        what: &'static str,
        /// The value (cut short).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The ID in the value differs from the one in the key.
    #[error("value has id {value_id:?} but the key says {key_id:?}")]
    IdMismatch {
        /// ID taken from the key.
        key_id: String,
        /// ID found in the value (cut short).
        value_id: String,
    },
    /// The address is not a machine address.
    #[error("invalid addr {addr:?}: {reason}")]
    Addr {
        /// The address as stored (cut short).
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The address is one Switchyard may not dial (loopback, IPv4 space, …,
    /// or outside `allowed_networks`).
    #[error("addr {addr} may not be dialled: {reason}")]
    NotDialable {
        /// The address, as parsed.
        addr: String,
        /// Why not.
        reason: crate::addr::NotDialable,
    },
    /// A member ranked before it uses the same ID, name or address.
    #[error("{what} {value:?} is already used by member {owner:?}")]
    Conflict {
        /// `id`, `name` or `addr`.
        what: &'static str,
        /// The shared value.
        value: String,
        /// The member that keeps it.
        owner: String,
    },
}

/// Runs `fut` with a deadline, mapping both failure kinds to [`Error`].
pub(crate) async fn bounded<T>(
    op: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Etcd { op, source }),
        Err(_) => Err(Error::Timeout { op, timeout }),
    }
}
