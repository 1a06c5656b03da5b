//! Session and server options reach the pool a session or a task server creates: its
//! worker count and its idle spin (`SessionOptions::idle_spin`, `ServerOptions::idle_spin`);
//! a shared pool keeps its own.

use std::sync::Arc;
use std::time::Duration;

use magpie_core::cluster::ClusterSpec;
use magpie_core::distributed::{ServerOptions, TaskServer};
use magpie_core::graph::{DeviceName, Graph};
use magpie_core::kernel::async_support::{BoxFuture, FutureExt};
use magpie_core::registry::KernelRegistry;
use magpie_core::scheduler::{IdleSpin, ThreadPool};
use magpie_core::session::{Session, SessionOptions};
use magpie_core::transport::{
    DeviceInfo, PartitionHandle, PartitionOutput, RegisterPartition, RendezvousKey, RunPartition,
    TaskName, Transport, TransportError,
};
use magpie_core::{Device, StepId, Tensor};

#[derive(Debug)]
struct Host(DeviceName);

impl Device for Host {
    fn name(&self) -> &DeviceName {
        &self.0
    }
}

fn options() -> SessionOptions {
    let device: Arc<dyn Device> = Arc::new(Host(DeviceName::local("CPU", 0)));
    SessionOptions::with_devices(vec![device]).kernels(KernelRegistry::new())
}

#[test]
fn a_new_pool_gets_the_sessions_idle_spin() {
    let g = Graph::new();
    let default = Session::new(&g, options().num_workers(1)).unwrap();
    assert_eq!(default.pool().idle_spin(), IdleSpin::LONG);
    assert_eq!(default.pool().num_workers(), 1);

    let spin = IdleSpin::SHORT.max_searching(Some(1));
    let short = Session::new(&g, options().num_workers(2).idle_spin(spin)).unwrap();
    assert_eq!(short.pool().idle_spin(), spin);
    assert_eq!(short.pool().num_workers(), 2);
}

#[test]
fn a_shared_pool_keeps_its_own_idle_spin() {
    let pool = ThreadPool::builder()
        .num_workers(1)
        .idle_spin(IdleSpin::OFF)
        .build()
        .unwrap();
    let opts = SessionOptions {
        pool: Some(pool),
        ..options().idle_spin(IdleSpin::LONG)
    };
    let s = Session::new(&Graph::new(), opts).unwrap();
    assert_eq!(s.pool().idle_spin(), IdleSpin::OFF);
}

/// A transport that reaches no task: the servers below only start their workers.
#[derive(Debug)]
struct Nowhere;

fn gone<T: Send + 'static>(task: &TaskName) -> BoxFuture<'static, Result<T, TransportError>> {
    let task = task.to_string();
    async move {
        Err(TransportError::Unreachable {
            task,
            detail: "no network in this test".into(),
        })
    }
    .boxed()
}

impl Transport for Nowhere {
    fn list_devices(
        &self,
        task: &TaskName,
    ) -> BoxFuture<'static, Result<Vec<DeviceInfo>, TransportError>> {
        gone(task)
    }
    fn register_partition(
        &self,
        task: &TaskName,
        _: RegisterPartition,
    ) -> BoxFuture<'static, Result<PartitionHandle, TransportError>> {
        gone(task)
    }
    fn run_partition(
        &self,
        task: &TaskName,
        _: RunPartition,
    ) -> BoxFuture<'static, Result<PartitionOutput, TransportError>> {
        gone(task)
    }
    fn send(
        &self,
        task: &TaskName,
        _: &str,
        _: RendezvousKey,
        _: Tensor,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        gone(task)
    }
    fn abort_step(
        &self,
        task: &TaskName,
        _: &str,
        _: StepId,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        gone(task)
    }
    fn release_session(
        &self,
        task: &TaskName,
        _: &str,
    ) -> BoxFuture<'static, Result<(), TransportError>> {
        gone(task)
    }
}

/// The pool of a task server started with `options` (`/job:local/task:0`).
fn server_pool(options: ServerOptions) -> ThreadPool {
    let cluster = ClusterSpec::builder()
        .job("local", ["localhost:2222"])
        .build()
        .unwrap();
    let server = TaskServer::new(
        cluster,
        TaskName::new("local", 0),
        &options,
        Arc::new(Nowhere),
    )
    .unwrap();
    let pool = server.worker().pool().clone();
    assert_eq!(server.stop(Duration::from_secs(1)), 0);
    pool
}

fn server_options() -> ServerOptions {
    let cpu = DeviceName::parse("/job:local/replica:0/task:0/device:CPU:0").unwrap();
    let device: Arc<dyn Device> = Arc::new(Host(cpu));
    ServerOptions::with_devices(vec![device]).kernels(KernelRegistry::new())
}

#[test]
fn a_task_servers_new_pool_gets_the_servers_idle_spin() {
    let default = server_pool(ServerOptions {
        num_workers: Some(1),
        ..server_options()
    });
    assert_eq!(default.idle_spin(), IdleSpin::LONG);
    assert_eq!(default.num_workers(), 1);

    let spin = IdleSpin::SHORT.max_searching(Some(1));
    let short = server_pool(ServerOptions {
        num_workers: Some(2),
        idle_spin: spin,
        ..server_options()
    });
    assert_eq!(short.idle_spin(), spin);
    assert_eq!(short.num_workers(), 2);

    // A pool the server is given keeps its own.
    let shared = ThreadPool::builder()
        .num_workers(1)
        .idle_spin(IdleSpin::OFF)
        .build()
        .unwrap();
    let given = server_pool(ServerOptions {
        pool: Some(shared),
        idle_spin: IdleSpin::LONG,
        ..server_options()
    });
    assert_eq!(given.idle_spin(), IdleSpin::OFF);
}
