//! Machine routing for Switchyard: which machines a gRPC call goes to, and how
//! their replies say who answered.
//!
//! The engine (`switchyard-engine`) forwards gRPC calls without knowing what a
//! backend is. This crate is the part that knows *machines*: a call carries
//! `machines` (fan-out) or `machine` (one target) metadata naming machines by
//! IPv6 address — or by name, ID or `*` with a [`Registry`] — and the
//! [`MachineDirector`] turns that into the local machine's [`LocalBackend`] (a
//! Unix socket) and cached [`RemoteBackend`]s (the Switchyard of another
//! machine).
//! It knows nothing about HTTP/2: connections are the engine's
//! [`Channel`](switchyard_engine::Channel)s.
//!
//! In fan-out, every reply entry is tagged with the wire contract of [`pb`]
//! (`Metadata` in field 1) by a [`MachineTag`], and a machine that fails
//! contributes an error entry instead of failing the whole call.
//!
//! Module map, one idea per file (as in the Go reference):
//! - [`addr`]: what a machine address is (`fd00::1`, `[fd00::1]:51001`), and
//!   which ones may be dialled;
//! - [`registry`]: the optional list of machines `{id, name, addr}`;
//! - `resolve`: which machines the metadata values name;
//! - [`tag`]: tagging replies and turning failures into error entries;
//! - [`streamed`]: which methods stream their replies (configured);
//! - [`catalog`]: the local server's methods learned through reflection
//!   (which stream, which replies cannot fan out);
//! - [`local`] / [`remote`]: the two kinds of backend, and [`down`] for a
//!   machine known down (answered without dialling);
//! - [`live`]: the live registry in etcd (members and heartbeats);
//! - [`identity`] and [`authz`]: who calls, and what they may call;
//! - [`director`]: metadata → [`Route`](switchyard_engine::Route);
//! - [`cluster_api`]: `switchyard.v1.Cluster`, answered by each Switchyard
//!   itself (the machines it knows, up or down);
//! - [`reflection`]: a gRPC reflection client (`v1`, then `v1alpha`), for
//!   the catalog and the CLI's schemas.

#![warn(missing_docs)]

pub mod addr;
pub mod authz;
pub mod catalog;
pub mod cluster_api;
pub mod director;
pub mod down;
pub mod identity;
pub mod live;
pub mod local;
pub mod own_reflection;
pub mod pb;
pub mod reflection;
pub mod registry;
pub mod remote;
mod resolve;
pub mod streamed;
pub mod tag;

pub use addr::{AddrError, MachineAddr, NotDialable, check_dialable};
pub use authz::{AuthzRule, Caller, MethodPattern, Policy};
pub use catalog::{MethodCatalog, MethodFacts};
pub use cluster_api::{CLUSTER_PATH_PREFIX, ClusterApi};
pub use director::{
    DEFAULT_MACHINE_TIMEOUT, DEFAULT_REMOTE_PORT, DirectorOptions, MACHINE_TIMEOUT,
    MachineDirector, MachineStatus,
};
pub use down::DownBackend;
pub use identity::{Identity, MACHINE_ROLE};
pub use local::LocalBackend;
pub use own_reflection::{OwnReflection, REFLECTION_INFO_PATH};
pub use reflection::{FileSet, ReflectionClient, ReflectionError, ReflectionVersion, ServiceFiles};
pub use registry::{Machine, Registry, RegistryError};
pub use remote::RemoteBackend;
pub use streamed::StreamedMethods;
pub use tag::{MachineInfo, MachineTag};
