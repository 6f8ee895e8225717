//! Fan out a typed gRPC call through Switchyard and get each machine's
//! results as they arrive.
//!
//! Switchyard answers a fan-out that asks for the envelope
//! (`switchyard-reply: envelope`) with a stream of `switchyard.v1.MachineReply`
//! items: one per reply message of a machine, byte for byte, and one last
//! item per machine with its status. This crate makes that a stream of
//! `(Machine, Result<Reply, Status>)` decoded with the application's own
//! generated type, for any method of any reply type, with no knowledge of
//! Switchyard's protos in the application:
//!
//! ```no_run
//! # async fn run(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
//! use futures_util::StreamExt as _;
//! use machine_info::pb::{DescribeRequest, DescribeResponse};
//!
//! let call = switchyard_client::FanOut::new(["alpha", "beta"]).machine_timeout_ms(2000);
//! let mut replies = call
//!     .unary::<DescribeResponse, _, _>(channel, "/machineinfo.v1.MachineInfo/Describe", DescribeRequest {})
//!     .await?;
//! while let Some((machine, reply)) = replies.next().await {
//!     match reply {
//!         Ok(reply) => println!("{}: {:?}", machine.label(), reply),
//!         Err(status) => println!("{}: {}", machine.label(), status.message()),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A machine that answers OK contributes its replies only; one that fails
//! contributes one `Err` (its status); every machine named is heard of.
//! The wire types are the envelope's field numbers, declared here (the
//! contract of `switchyard/v1/envelope.proto` and `common.proto`).

use std::fmt;

use futures_util::{Stream, StreamExt};
use http::uri::PathAndQuery;
use tonic::client::GrpcService;
use tonic::codegen::{Body, Bytes, StdError};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::{Code, Status};

/// Which machine a result comes from, as Switchyard names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// Its address.
    pub addr: String,
    /// Its registry ID (empty without a registry).
    pub id: String,
    /// Its registry name (empty without a registry).
    pub name: String,
}

impl Machine {
    /// Its name, else its address, else its ID.
    pub fn label(&self) -> &str {
        [&self.name, &self.addr, &self.id]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("", String::as_str)
    }
}

impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A fan-out to some machines: what to ask Switchyard for.
#[derive(Debug, Clone)]
pub struct FanOut {
    machines: String,
    machine_timeout: Option<String>,
}

impl FanOut {
    /// To `machines`: IDs, names, addresses, or `*` (all in the registry).
    pub fn new<I, S>(machines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let machines: Vec<String> = machines
            .into_iter()
            .map(|m| m.as_ref().to_owned())
            .collect();
        Self {
            machines: machines.join(","),
            machine_timeout: None,
        }
    }

    /// Bounds each machine's whole answer (`switchyard-machine-timeout`).
    pub fn machine_timeout_ms(mut self, millis: u64) -> Self {
        self.machine_timeout = Some(format!("{}m", millis.min(99_999_999)));
        self
    }

    /// Calls the unary (or server-streaming) method `path` with `request`
    /// on every machine over `channel` (a connection to any Switchyard).
    pub async fn unary<Resp, Req, T>(
        &self,
        channel: T,
        path: &str,
        request: Req,
    ) -> Result<impl Stream<Item = (Machine, Result<Resp, Status>)> + use<Req, Resp, T>, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + 'static,
        T: GrpcService<tonic::body::Body>,
        T::Error: Into<StdError>,
        T::ResponseBody: Body<Data = Bytes> + Send + 'static,
        <T::ResponseBody as Body>::Error: Into<StdError> + Send,
    {
        let path = PathAndQuery::try_from(path)
            .map_err(|e| Status::invalid_argument(format!("method path {path:?}: {e}")))?;
        let mut request = tonic::Request::new(request);
        let meta = request.metadata_mut();
        meta.insert("machines", ascii(&self.machines)?);
        meta.insert("switchyard-reply", MetadataValue::from_static("envelope"));
        if let Some(timeout) = &self.machine_timeout {
            meta.insert("switchyard-machine-timeout", ascii(timeout)?);
        }
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("Switchyard unreachable: {}", e.into())))?;
        let codec = tonic_prost::ProstCodec::<Req, wire::MachineReply>::default();
        let items = grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner();
        Ok(items.filter_map(|item| std::future::ready(result(item))))
    }
}

fn ascii(value: &str) -> Result<AsciiMetadataValue, Status> {
    value
        .parse()
        .map_err(|_| Status::invalid_argument(format!("not ASCII metadata: {value:?}")))
}

/// What one item means to the application: a reply, a failed machine, or
/// nothing (a machine's OK end).
fn result<Resp: prost::Message + Default>(
    item: Result<wire::MachineReply, Status>,
) -> Option<(Machine, Result<Resp, Status>)> {
    let item = match item {
        Ok(item) => item,
        Err(status) => return Some((Machine::default(), Err(status))),
    };
    let metadata = item.metadata.unwrap_or_default();
    let machine = Machine {
        addr: metadata.machine_addr,
        id: metadata.machine_id,
        name: metadata.machine_name,
    };
    if item.last {
        let status = metadata.status.unwrap_or_default();
        return (status.code != 0).then(|| {
            let status = Status::new(Code::from_i32(status.code), status.message);
            (machine, Err(status))
        });
    }
    let reply = Resp::decode(&*item.message)
        .map_err(|e| Status::internal(format!("reply of machine {machine} does not decode: {e}")));
    Some((machine, reply))
}

/// The envelope's wire types (field numbers are the contract).
mod wire {
    /// `switchyard.v1.MachineReply`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct MachineReply {
        #[prost(message, optional, tag = "1")]
        pub(crate) metadata: Option<Metadata>,
        #[prost(bytes = "vec", tag = "2")]
        pub(crate) message: Vec<u8>,
        #[prost(bool, tag = "3")]
        pub(crate) last: bool,
        #[prost(map = "string, bytes", tag = "4")]
        pub(crate) trailers: std::collections::HashMap<String, Vec<u8>>,
    }

    /// `switchyard.common.v1.Metadata`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Metadata {
        #[prost(string, tag = "1")]
        pub(crate) machine_addr: String,
        #[prost(string, tag = "2")]
        pub(crate) error: String,
        #[prost(message, optional, tag = "3")]
        pub(crate) status: Option<RpcStatus>,
        #[prost(string, tag = "4")]
        pub(crate) machine_id: String,
        #[prost(string, tag = "5")]
        pub(crate) machine_name: String,
    }

    /// `google.rpc.Status` (its details are not needed here).
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct RpcStatus {
        #[prost(int32, tag = "1")]
        pub(crate) code: i32,
        #[prost(string, tag = "2")]
        pub(crate) message: String,
    }
}
