//! [`InMemTransport`]: core's `Transport` as direct calls into the tasks of an
//! [`InMemNetwork`].

use std::sync::Arc;

use futures::channel::oneshot;
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
use crate::step_threads::StepThreads;

/// The in-process transport of one cluster.
#[derive(Debug, Clone)]
pub struct InMemTransport {
    network: Arc<InMemNetwork>,
    cluster: ClusterSpec,
    threads: StepThreads,
}

impl InMemTransport {
    /// Reaches `cluster`'s tasks in `network`.
    pub fn new(network: Arc<InMemNetwork>, cluster: ClusterSpec) -> InMemTransport {
        InMemTransport {
            network,
            cluster,
            threads: StepThreads::default(),
        }
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

    fn run_partition(
        &self,
        task: &TaskName,
        request: RunPartition,
    ) -> BoxFuture<'static, Result<PartitionOutput, TransportError>> {
        let server = match self.server(task) {
            Ok(s) => s,
            Err(e) => return ready(Err(e)),
        };
        // The worker's local session blocks its caller until the step ends (at the
        // latest at the request's deadline): give it a thread of its own.
        let (tx, rx) = oneshot::channel();
        let spawned = self.threads.spawn(format!("inmem-step {task}"), move || {
            let r = server
                .worker()
                .run_partition(request)
                .map_err(|e| e.into_transport());
            let _ = tx.send(r);
        });
        let task_name = task.to_string();
        if let Err(e) = spawned {
            return ready(Err(TransportError::Unreachable {
                task: task_name,
                detail: format!("cannot start a step thread: {e}"),
            }));
        }
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(TransportError::Unreachable {
                    task: task_name,
                    detail: "the step's thread ended without an answer".into(),
                })
            })
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
