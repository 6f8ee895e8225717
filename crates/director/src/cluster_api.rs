//! `switchyard.v1.Cluster`: what this Switchyard knows of the machines.
//!
//! Every other call is routed by its metadata; this service is answered by
//! the Switchyard that receives it, so that `switchyard machines` shows the
//! registry and connection states *as that Switchyard sees them*. The daemon
//! puts it in front of the proxy for paths under [`CLUSTER_PATH_PREFIX`].

use std::sync::Arc;

use switchyard_engine::ChannelState;
use tonic::{Request, Response, Status};

use crate::director::{MachineDirector, MachineStatus};
use crate::pb::switchyard::v1::cluster_server::{Cluster, ClusterServer};
use crate::pb::switchyard::v1::machine_status::State;
use crate::pb::{self, ListMachinesRequest, ListMachinesResponse};

/// Path prefix of every method of the service.
pub const CLUSTER_PATH_PREFIX: &str = "/switchyard.v1.Cluster/";

/// The `Cluster` service over a director.
#[derive(Debug, Clone)]
pub struct ClusterApi {
    director: Arc<MachineDirector>,
}

impl ClusterApi {
    /// Answers from `director`.
    pub fn new(director: Arc<MachineDirector>) -> Self {
        Self { director }
    }

    /// The tonic service.
    pub fn into_server(self) -> ClusterServer<Self> {
        ClusterServer::new(self)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterApi {
    async fn list_machines(
        &self,
        _request: Request<ListMachinesRequest>,
    ) -> Result<Response<ListMachinesResponse>, Status> {
        let machines = self.director.machines().into_iter().map(status).collect();
        Ok(Response::new(ListMachinesResponse { machines }))
    }
}

/// A machine on the wire: a connection being dialled is not known up yet,
/// one closed for good is down.
fn status(machine: MachineStatus) -> pb::MachineStatus {
    let (state, last_error) = match machine.state {
        ChannelState::Idle | ChannelState::Connecting => (State::Unknown, String::new()),
        ChannelState::Connected => (State::Up, String::new()),
        ChannelState::Down { cause } => (State::Down, cause),
        ChannelState::Closed => (State::Down, "closed".to_owned()),
    };
    pb::MachineStatus {
        id: machine.info.id,
        name: machine.info.name,
        addr: machine.info.addr,
        state: state.into(),
        last_error,
        local: machine.local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tag::MachineInfo;

    #[test]
    fn states_on_the_wire() {
        let machine = |state| MachineStatus {
            info: MachineInfo {
                addr: "fd00::2".into(),
                id: "m2".into(),
                name: "beta".into(),
            },
            local: false,
            state,
        };
        let down = status(machine(ChannelState::Down {
            cause: "connection refused".into(),
        }));
        assert_eq!(down.state(), State::Down);
        assert_eq!(down.last_error, "connection refused");
        assert_eq!((down.id.as_str(), down.name.as_str()), ("m2", "beta"));
        assert_eq!(status(machine(ChannelState::Connected)).state(), State::Up);
        assert_eq!(status(machine(ChannelState::Idle)).state(), State::Unknown);
        assert_eq!(
            status(machine(ChannelState::Connecting)).state(),
            State::Unknown
        );
        assert_eq!(status(machine(ChannelState::Closed)).state(), State::Down);
    }
}
