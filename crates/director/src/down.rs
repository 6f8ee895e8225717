//! The backend of a registered machine known to be down: it is answered at
//! once, never dialled.
//!
//! With a live registry, a machine that stops renewing its heartbeat is down
//! before any connection attempt could tell. Dialling it anyway would cost
//! each call a connect timeout (a dead host drops SYNs) and would hide the
//! reason; instead the call, or the machine's fan-out entry, gets
//! `UNAVAILABLE` naming the machine and why, tagged like an answer from it.

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use switchyard_engine::{Backend, ReplyShape, Upstream};
use tonic::Status;

use bytes::Bytes;

use crate::tag::{MachineInfo, MachineTag};

/// Why a machine is down, for its status and error entries.
pub const NO_HEARTBEAT: &str = "no heartbeat";

/// Answers every call for a machine that is down with `UNAVAILABLE`.
///
/// Displays as the machine's address, like [`RemoteBackend`](crate::RemoteBackend).
#[derive(Debug)]
pub struct DownBackend {
    tag: MachineTag,
    reason: &'static str,
}

impl DownBackend {
    /// The backend of the machine `info`, down because of `reason`.
    pub fn new(info: MachineInfo, reason: &'static str) -> Self {
        Self {
            tag: MachineTag::new(info),
            reason,
        }
    }

    /// The machine info its error entries carry.
    pub fn info(&self) -> Arc<MachineInfo> {
        self.tag.info()
    }

    /// The status every call gets: `machine alpha is down (no heartbeat)`.
    pub fn status(&self) -> Status {
        let info = self.info();
        let machine = if info.name.is_empty() {
            &info.addr
        } else {
            &info.name
        };
        Status::unavailable(format!("machine {machine} is down ({})", self.reason))
    }
}

impl fmt::Display for DownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.info().addr)
    }
}

impl Backend for DownBackend {
    fn connect<'a>(
        &'a self,
        _request: &'a http::request::Parts,
    ) -> BoxFuture<'a, Result<Upstream, Status>> {
        Box::pin(std::future::ready(Err(self.status())))
    }

    fn error_entry(&self, shape: ReplyShape, status: &Status) -> Option<Bytes> {
        Some(self.tag.error_entry(shape, status))
    }

    fn envelope_end(&self, status: &Status, trailers: &http::HeaderMap) -> Option<Bytes> {
        Some(self.tag.envelope_end(status, trailers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use prost::Message;
    use tonic::Code;

    use crate::pb;

    #[test]
    fn answers_at_once_with_a_tagged_unavailable_entry() {
        let info = MachineInfo {
            addr: "fd00::2".into(),
            id: "m2".into(),
            name: "beta".into(),
        };
        let backend = DownBackend::new(info, NO_HEARTBEAT);
        assert_eq!(backend.to_string(), "fd00::2");
        let request = http::Request::new(()).into_parts().0;
        let status = backend
            .connect(&request)
            .now_or_never()
            .expect("no waiting")
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "machine beta is down (no heartbeat)");
        let entry = backend.error_entry(ReplyShape::Streamed, &status).unwrap();
        let metadata = pb::Empty::decode(entry).unwrap().metadata.unwrap();
        assert_eq!(
            (metadata.machine_id.as_str(), metadata.machine_name.as_str()),
            ("m2", "beta")
        );
        assert_eq!(metadata.error, "machine beta is down (no heartbeat)");
        // In the envelope: its one last item, UNAVAILABLE.
        let last = backend.error_entry(ReplyShape::Envelope, &status).unwrap();
        let last = pb::MachineReply::decode(last).unwrap();
        assert!(last.last && last.message.is_empty());
        let metadata = last.metadata.unwrap();
        assert_eq!(metadata.machine_name, "beta");
        assert_eq!(metadata.status.unwrap().code, Code::Unavailable as i32);
        let unnamed = DownBackend::new(MachineInfo::from_addr("fd00::3"), NO_HEARTBEAT);
        assert_eq!(
            unnamed.status().message(),
            "machine fd00::3 is down (no heartbeat)"
        );
    }
}
