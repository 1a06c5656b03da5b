//! In-process clusters on the in-memory transport: each task a server with a CPU device
//! named for it (`/job:ps/replica:0/task:0/device:CPU:0`), the CPU and variable kernels
//! registered; or, with [`machine_server_options`], every device of the machine (what
//! `magpie server` serves).

use std::sync::Arc;
use std::time::Duration;

use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::{MasterSession, ServerOptions};
use magpie_core::graph::{DeviceName, Graph};
use magpie_core::transport::TaskName;
use magpie_inmem::{InMemError, InMemNetwork, InMemServer};

pub use magpie_core::cluster::{ClusterError, ClusterSpec as Spec, TfConfig};

pub use crate::task_devices::{
    default_step_memory_limit, machine_server_options, served_devices, TaskDevices,
    TaskDevicesError,
};

use crate::Device;

/// The embedded default cluster of `magpie demo` and the examples — one `ps` task and
/// two `worker` tasks — on 127.0.0.1 ports.
pub const DEFAULT_CLUSTER_TOML: &str = r#"# Two machines: machine A runs ps:0 and worker:0, machine B worker:1.
ps = ["127.0.0.1:2221"]
worker = ["127.0.0.1:2222", "127.0.0.1:2223"]
"#;

/// The embedded default cluster spec.
pub fn default_cluster() -> ClusterSpec {
    ClusterSpec::from_toml(DEFAULT_CLUSTER_TOML).expect("the embedded cluster spec is valid")
}

/// Server options for `task`: one CPU device named for the task, the CPU and
/// distributed kernels registered.
pub fn task_server_options(task: &TaskName) -> ServerOptions {
    crate::register_backends();
    let name = DeviceName {
        job: task.job.clone(),
        replica: 0,
        task: task.index,
        device_type: "CPU".into(),
        device_index: 0,
    };
    let cpu: Arc<dyn Device> = Arc::new(magpie_cpu::CpuDevice::with_name(name));
    ServerOptions {
        num_workers: Some(2),
        ..ServerOptions::with_devices(vec![cpu])
    }
}

/// Every task of a cluster, served in this process on a private network.
#[derive(Debug)]
pub struct InProcessCluster {
    spec: ClusterSpec,
    network: Arc<InMemNetwork>,
    servers: Vec<InMemServer>,
}

impl InProcessCluster {
    /// Starts every task of `spec` with [`task_server_options`].
    pub fn start(spec: &ClusterSpec) -> Result<InProcessCluster, InMemError> {
        InProcessCluster::start_with(spec, task_server_options)
    }

    /// Starts every task of `spec` with the options `options` gives it.
    pub fn start_with(
        spec: &ClusterSpec,
        mut options: impl FnMut(&TaskName) -> ServerOptions,
    ) -> Result<InProcessCluster, InMemError> {
        let network = InMemNetwork::new();
        let mut servers = Vec::new();
        for task in spec.tasks() {
            servers.push(InMemServer::start(
                &network,
                spec,
                &task.job,
                task.index,
                &options(&task),
            )?);
        }
        Ok(InProcessCluster {
            spec: spec.clone(),
            network,
            servers,
        })
    }

    /// The cluster spec.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The network its servers are on.
    pub fn network(&self) -> &Arc<InMemNetwork> {
        &self.network
    }

    /// The server of `/job:<job>/task:<index>`, if it runs.
    pub fn server(&self, job: &str, index: u32) -> Option<&InMemServer> {
        let task = TaskName::new(job, index);
        self.servers.iter().find(|s| *s.core().task() == task)
    }

    /// A session over `graph` on the master of `/job:<job>/task:<index>`.
    pub fn session(
        &self,
        job: &str,
        index: u32,
        graph: &Graph,
    ) -> Result<MasterSession, InMemError> {
        let address = self.spec.address(&TaskName::new(job, index))?;
        magpie_inmem::connect(&self.network, &format!("inmem://{address}"), graph)
    }

    /// Stops `/job:<job>/task:<index>` (running steps get `deadline`) and removes it.
    pub fn stop_task(&mut self, job: &str, index: u32, deadline: Duration) -> bool {
        let task = TaskName::new(job, index);
        match self.servers.iter().position(|s| *s.core().task() == task) {
            Some(i) => {
                self.servers.remove(i).stop(deadline);
                true
            }
            None => false,
        }
    }

    /// Starts `/job:<job>/task:<index>` again (after [`InProcessCluster::stop_task`]).
    pub fn restart_task(&mut self, job: &str, index: u32) -> Result<(), InMemError> {
        let task = TaskName::new(job, index);
        let server = InMemServer::start(
            &self.network,
            &self.spec,
            job,
            index,
            &task_server_options(&task),
        )?;
        self.servers.push(server);
        Ok(())
    }

    /// Stops every task.
    pub fn stop(self, deadline: Duration) {
        for s in &self.servers {
            s.stop(deadline);
        }
    }
}

/// Every task of a cluster, served over gRPC in this process (each on its own address).
#[derive(Debug)]
pub struct GrpcCluster {
    spec: ClusterSpec,
    servers: Vec<magpie_grpc::GrpcServer>,
}

impl GrpcCluster {
    /// Starts every task of `spec` with [`task_server_options`].
    pub fn start(spec: &ClusterSpec) -> Result<GrpcCluster, magpie_grpc::GrpcError> {
        GrpcCluster::start_with(spec, magpie_grpc::GrpcOptions::default())
    }

    /// [`GrpcCluster::start`] with explicit gRPC options for every task (TLS, the
    /// cluster token, deadlines).
    ///
    /// # Errors
    ///
    /// The first task's [`GrpcServer::start_with`](magpie_grpc::GrpcServer::start_with)
    /// error (the tasks started before it are stopped).
    pub fn start_with(
        spec: &ClusterSpec,
        grpc: magpie_grpc::GrpcOptions,
    ) -> Result<GrpcCluster, magpie_grpc::GrpcError> {
        let mut servers = Vec::new();
        for task in spec.tasks() {
            servers.push(magpie_grpc::GrpcServer::start_with(
                spec,
                &task.job,
                task.index,
                &task_server_options(&task),
                grpc.clone(),
            )?);
        }
        Ok(GrpcCluster {
            spec: spec.clone(),
            servers,
        })
    }

    /// The cluster spec.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// The server of `/job:<job>/task:<index>`, if it runs.
    pub fn server(&self, job: &str, index: u32) -> Option<&magpie_grpc::GrpcServer> {
        let task = TaskName::new(job, index);
        self.servers.iter().find(|s| *s.task() == task)
    }

    /// The `grpc://` target of `/job:<job>/task:<index>` (`grpcs://` when the cluster
    /// serves TLS).
    pub fn target(&self, job: &str, index: u32) -> Result<String, ClusterError> {
        let scheme = match self.servers.iter().any(|s| s.serves_tls()) {
            true => "grpcs",
            false => "grpc",
        };
        Ok(format!(
            "{scheme}://{}",
            self.spec.address(&TaskName::new(job, index))?
        ))
    }

    /// Stops every task.
    pub fn stop(self, deadline: Duration) {
        for s in &self.servers {
            s.stop(deadline);
        }
    }
}

/// A cluster spec of the default layout (one `ps`, two `worker` tasks) on free 127.0.0.1
/// ports (for tests and benches: the ports are free when picked).
pub fn loopback_cluster() -> std::io::Result<ClusterSpec> {
    let mut ports = Vec::new();
    // Hold all three listeners at once so the ports differ.
    let listeners = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    for l in &listeners {
        ports.push(l.local_addr()?.port());
    }
    drop(listeners);
    ClusterSpec::builder()
        .job("ps", [format!("127.0.0.1:{}", ports[0])])
        .job(
            "worker",
            [
                format!("127.0.0.1:{}", ports[1]),
                format!("127.0.0.1:{}", ports[2]),
            ],
        )
        .build()
        .map_err(|e| std::io::Error::other(e.to_string()))
}
