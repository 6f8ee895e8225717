//! Errors of building directors and backends (routing errors are gRPC
//! statuses, since they go back to the client).

use crate::addr::AddrError;

/// Why a director or backend could not be set up as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectorError {
    /// A machine address that is not usable (not IPv6, bad port, …).
    #[error(transparent)]
    Address(#[from] AddrError),
}
