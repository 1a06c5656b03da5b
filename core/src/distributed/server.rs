//! [`TaskServer`]: one cluster task's master and worker services with the server
//! lifecycle (serve, stop, join), independent of the wire. A transport hosts it: the
//! in-memory transport registers it under its address in a process-local network; the
//! gRPC server will expose the same services on a socket.
//!
//! # Stop protocol
//! 1. The master and the worker refuse new sessions, partitions and steps.
//! 2. Running steps may finish until the deadline; deliveries to the task still land.
//! 3. Steps still running at the deadline are cancelled and fail (naming the task).
//! 4. The server is marked stopped and every [`TaskServer::join`] returns. The hosting
//!    transport then forgets the address (frees the port), so later requests fail as
//!    unreachable, naming the task.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::error::WorkerError;
use super::master::{Master, MasterOptions};
use super::rendezvous::RendezvousLimits;
use super::worker::Worker;
use crate::cluster::ClusterSpec;
use crate::device::Device;
use crate::graph::DeviceSpec;
use crate::registry::KernelRegistry;
use crate::scheduler::ThreadPool;
use crate::transport::{TaskName, Transport};

/// How a task's server is set up.
#[derive(Clone)]
pub struct ServerOptions {
    /// The task's local devices; their names must carry the task's job and index
    /// (`/job:ps/replica:0/task:0/device:CPU:0`). The first visible one is the default.
    pub devices: Vec<Arc<dyn Device>>,
    /// Which of `devices` the task exposes, as device specs (`/device:CPU:*`); `None`
    /// exposes all — the analogue of `CUDA_VISIBLE_DEVICES` (the seed's ps task sees
    /// only its CPU).
    pub visible_devices: Option<Vec<String>>,
    /// Scheduler threads of a new pool (default 2), unless `pool` is given.
    pub num_workers: Option<usize>,
    /// A pool to share (several in-process tasks may share one).
    pub pool: Option<ThreadPool>,
    /// Resource pools of the task's sessions (`("net", 1)` throttles its `_Send`s).
    pub resource_pools: Vec<(String, usize)>,
    /// Deadline of a step when the client sets none (default 10 s): a step waiting on a
    /// task that never answers fails after this, naming the task.
    pub step_timeout: Duration,
    /// How long opening a session waits for tasks not reachable yet before failing
    /// naming them (default 60 s, [`MasterOptions::peer_wait`]).
    pub peer_wait: Duration,
    /// Bounds on tensors other tasks deliver for steps this task has not started (yet):
    /// kept at most this long and this many bytes in total, then dropped with a warning
    /// (see [`Rendezvous`](super::Rendezvous)).
    pub rendezvous_limits: RendezvousLimits,
    /// The kernels of the task's sessions and of its master's placement; the
    /// process-wide [`KernelRegistry::global`] when `None`. The task adds the distributed
    /// kernels (`_Send`, `_Recv`, variables) to it.
    pub kernels: Option<KernelRegistry>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            devices: Vec::new(),
            visible_devices: None,
            num_workers: None,
            pool: None,
            resource_pools: Vec::new(),
            step_timeout: Duration::from_secs(10),
            peer_wait: super::DEFAULT_PEER_WAIT,
            rendezvous_limits: RendezvousLimits::default(),
            kernels: None,
        }
    }
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerOptions")
            .field(
                "devices",
                &self
                    .devices
                    .iter()
                    .map(|d| d.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("visible_devices", &self.visible_devices)
            .field("num_workers", &self.num_workers)
            .field("resource_pools", &self.resource_pools)
            .field("step_timeout", &self.step_timeout)
            .field("peer_wait", &self.peer_wait)
            .field("rendezvous_limits", &self.rendezvous_limits)
            .field("kernels", &self.kernels)
            .finish()
    }
}

impl ServerOptions {
    /// Options over these devices.
    pub fn with_devices(devices: Vec<Arc<dyn Device>>) -> ServerOptions {
        ServerOptions {
            devices,
            ..ServerOptions::default()
        }
    }

    /// Builds the task's kernels from `kernels` instead of the process-wide registry.
    pub fn kernels(mut self, kernels: KernelRegistry) -> ServerOptions {
        self.kernels = Some(kernels);
        self
    }

    /// The registry the task builds kernels from.
    pub(crate) fn kernel_registry(&self) -> KernelRegistry {
        self.kernels.clone().unwrap_or_else(KernelRegistry::global)
    }

    /// Exposes only the devices one of `specs` matches (`"/device:CPU:*"`).
    pub fn visible_devices(mut self, specs: &[&str]) -> ServerOptions {
        self.visible_devices = Some(specs.iter().map(|s| s.to_string()).collect());
        self
    }

    /// The devices `task` exposes, checked.
    pub(crate) fn visible(&self, task: &TaskName) -> Result<Vec<Arc<dyn Device>>, String> {
        for d in &self.devices {
            if !task.owns(d.name()) {
                return Err(format!(
                    "device {} does not belong to task {task}",
                    d.name()
                ));
            }
        }
        let specs = match &self.visible_devices {
            None => None,
            Some(v) => Some(
                v.iter()
                    .map(|s| DeviceSpec::parse(s).map_err(|e| e.to_string()))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let visible: Vec<Arc<dyn Device>> = self
            .devices
            .iter()
            .filter(|d| {
                specs
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|spec| spec.matches(d.name())))
            })
            .cloned()
            .collect();
        if visible.is_empty() {
            let names = self
                .devices
                .iter()
                .map(|d| d.name().to_string())
                .collect::<Vec<_>>();
            return Err(match &self.visible_devices {
                Some(v) => format!(
                    "task {task} exposes no device: visible devices {} match none of its \
                     devices ({})",
                    v.join(", "),
                    names.join(", ")
                ),
                None => format!("task {task} exposes no device: it has none"),
            });
        }
        Ok(visible)
    }
}

/// One task's master and worker services, with the server lifecycle.
pub struct TaskServer {
    task: TaskName,
    cluster: ClusterSpec,
    worker: Arc<Worker>,
    master: Arc<Master>,
    stopped: Mutex<bool>,
    stopped_cv: Condvar,
}

impl fmt::Debug for TaskServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskServer")
            .field("task", &self.task.to_string())
            .field("stopped", &*self.stopped.lock())
            .finish()
    }
}

impl TaskServer {
    /// The services of `task` of `cluster`, reaching the other tasks through
    /// `transport`.
    pub fn new(
        cluster: ClusterSpec,
        task: TaskName,
        options: &ServerOptions,
        transport: Arc<dyn Transport>,
    ) -> Result<TaskServer, WorkerError> {
        cluster
            .check_task(&task)
            .map_err(|e| WorkerError::InvalidOptions {
                task: task.to_string(),
                detail: e.to_string(),
            })?;
        let worker = Arc::new(Worker::new(task.clone(), options, Arc::clone(&transport))?);
        let master = Arc::new(Master::new(
            task.clone(),
            cluster.clone(),
            transport,
            MasterOptions {
                step_timeout: options.step_timeout,
                peer_wait: options.peer_wait,
                kernels: options.kernel_registry(),
            },
        ));
        Ok(TaskServer {
            task,
            cluster,
            worker,
            master,
            stopped: Mutex::new(false),
            stopped_cv: Condvar::new(),
        })
    }

    /// The task.
    pub fn task(&self) -> &TaskName {
        &self.task
    }

    /// The cluster.
    pub fn cluster(&self) -> &ClusterSpec {
        &self.cluster
    }

    /// The worker service.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// The master service (sessions opened on this task).
    pub fn master(&self) -> &Arc<Master> {
        &self.master
    }

    /// Clears a resource container on this task (its variables); returns how many
    /// resources it held.
    pub fn reset(&self, container: &str) -> usize {
        self.worker.reset(container)
    }

    /// Stops the server (see the module's protocol): refuses new work, lets running
    /// steps finish within `deadline`, cancels the rest. Returns how many partition steps
    /// were cancelled. Idempotent.
    pub fn stop(&self, deadline: Duration) -> usize {
        self.master.begin_stop();
        self.worker.begin_stop();
        let cancelled = self
            .worker
            .drain(Instant::now() + deadline, Duration::from_secs(5));
        *self.stopped.lock() = true;
        self.stopped_cv.notify_all();
        cancelled
    }

    /// Whether the server has stopped.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }

    /// Blocks until the server stops.
    pub fn join(&self) {
        let mut s = self.stopped.lock();
        while !*s {
            self.stopped_cv.wait(&mut s);
        }
    }

    /// Blocks until the server stops or `timeout` passes; returns whether it stopped.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        let mut s = self.stopped.lock();
        while !*s {
            if self.stopped_cv.wait_until(&mut s, until).timed_out() {
                break;
            }
        }
        *s
    }
}
