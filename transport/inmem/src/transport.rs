//! [`InMemTransport`]: core's `Transport` as direct calls into the tasks of an
//! [`InMemNetwork`].

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::TaskServer;
use magpie_core::tensor::Tensor;
use magpie_core::transport::{
    DeviceInfo, PartitionHandle, PartitionOutput, RegisterPartition, RendezvousKey, RunPartition,
    TaskName, Transport, TransportError,
};
use magpie_core::StepId;

use crate::network::InMemNetwork;

/// The in-process transport of one cluster.
#[derive(Debug, Clone)]
pub struct InMemTransport {
    network: Arc<InMemNetwork>,
    cluster: ClusterSpec,
}

impl InMemTransport {
    /// Reaches `cluster`'s tasks in `network`.
    pub fn new(network: Arc<InMemNetwork>, cluster: ClusterSpec) -> InMemTransport {
        InMemTransport { network, cluster }
    }

    fn server(&self, task: &TaskName) -> Result<Arc<TaskServer>, TransportError> {
        let unreachable = |detail: String| TransportError::Unreachable {
            task: task.to_string(),
            detail,
        };
        let address = self
            .cluster
            .address(task)
            .map_err(|e| unreachable(e.to_string()))?;
        let server = self
            .network
            .lookup(address)
            .ok_or_else(|| unreachable(format!("no server at inmem://{address}")))?;
        if server.task() != task {
            return Err(unreachable(format!(
                "inmem://{address} serves {}, not {task}",
                server.task()
            )));
        }
        Ok(server)
    }
}

fn ready<T: Send + 'static>(
    r: Result<T, TransportError>,
) -> BoxFuture<'static, Result<T, TransportError>> {
    futures::future::ready(r).boxed()
}

impl Transport for InMemTransport {
    fn list_devices(
        &self,
        task: &TaskName,
    ) -> BoxFuture<'static, Result<Vec<DeviceInfo>, TransportError>> {
        ready(self.server(task).map(|s| s.worker().device_infos()))
    }

    fn register_partition(
        &self,
        task: &TaskName,
        request: RegisterPartition,
    ) -> BoxFuture<'static, Result<PartitionHandle, TransportError>> {
        ready(self.server(task).and_then(|s| {
            s.worker()
                .register_partition(request)
                .map_err(|e| e.into_transport())
        }))
    }

    /// Every task of an in-memory network is in this process.
    fn is_in_process(&self, _task: &TaskName) -> bool {
        true
    }

    /// Yes: every send is delivered in the call.
    fn sends_eagerly(&self) -> bool {
        true
    }

    fn run_partition(
        &self,
        task: &TaskName,
        request: RunPartition,
    ) -> BoxFuture<'static, Result<PartitionOutput, TransportError>> {
        let server = match self.server(task) {
            Ok(s) => s,
            Err(e) => return ready(Err(e)),
        };
        // The step runs on the task's pool; the future waits for it without a thread,
        // and dropping it aborts the step there.
        async move {
            server
                .worker()
                .run_partition_async(request, None)
                .await
                .map_err(|e| e.into_transport())
        }
        .boxed()
    }

    fn send(
        &self,
        task: &TaskName,
        session: &str,
        key: RendezvousKey,
        tensor: Tensor,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        ready(self.server(task).and_then(|s| {
            s.worker()
                .deliver(session, key, tensor)
                .map_err(|e| e.into_transport())
        }))
    }

    fn abort_step(
        &self,
        task: &TaskName,
        session: &str,
        step_id: StepId,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        ready(self.server(task).and_then(|s| {
            s.worker()
                .abort_step(session, step_id)
                .map_err(|e| e.into_transport())
        }))
    }

    fn release_session(
        &self,
        task: &TaskName,
        session: &str,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        ready(
            self.server(task)
                .map(|s| s.worker().release_session(session)),
        )
    }
}
