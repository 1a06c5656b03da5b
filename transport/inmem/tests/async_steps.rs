//! Async master steps over the in-memory transport (`MasterSession::run_async`): values
//! on one task and across two, and a dropped step future that leaves no step, partition
//! step or rendezvous entry behind on any task.

use std::sync::Once;
use std::task::Context;
use std::time::Duration;

use futures::future::BoxFuture;
use magpie_core::cluster::ClusterSpec;
use magpie_core::graph::{register_op, Arity, Graph, OpDef, Output};
use magpie_core::kernel::{
    AsyncKernel, AsyncKernelContext, BoxedKernel, Kernel, KernelContext, KernelError, Outputs,
};
use magpie_core::registry::register_kernel;
use magpie_core::tensor::{DType, Tensor};
use magpie_core::testkit::host_task_options;
use magpie_inmem::{InMemNetwork, InMemServer};
use magpie_scheduler::test_support::{eventually_ok, HANG_GUARD};

/// An output that never comes: the step waits until it is aborted.
struct Hang;

impl AsyncKernel for Hang {
    fn compute_async(
        &self,
        _ctx: AsyncKernelContext,
    ) -> BoxFuture<'static, Result<Outputs, KernelError>> {
        Box::pin(futures::future::pending())
    }
}

/// The scalar 3.0, or its input unchanged.
struct ThreeOrPass;

impl Kernel for ThreeOrPass {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let t = match ctx.num_inputs() {
            0 => Tensor::scalar(3.0f32),
            _ => ctx.take_input(0),
        };
        ctx.push_output(t);
        Ok(())
    }
}

fn register_test_ops() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        magpie_core::distributed::kernels::register_kernels();
        let f32_out = |_: &[DType], _: &_| Ok(vec![DType::F32]);
        register_op(OpDef::new("AsyncHang", Arity::Exact(0), f32_out)).unwrap();
        register_op(OpDef::new("AsyncThree", Arity::AtLeast(0), f32_out)).unwrap();
        register_kernel("AsyncHang", "CPU", |_| {
            Ok(BoxedKernel::Async(Box::new(Hang)))
        })
        .unwrap();
        register_kernel("AsyncThree", "CPU", |_| {
            Ok(BoxedKernel::Sync(Box::new(ThreeOrPass)))
        })
        .unwrap();
    });
}

fn op(g: &Graph, device: &str, name: &str, op: &str, inputs: &[Output]) -> Output {
    g.with_device(device)
        .unwrap()
        .with_name(name)
        .op(op)
        .inputs(inputs.iter().copied())
        .build_output()
        .unwrap()
}

#[test]
fn async_master_steps_run_and_a_dropped_one_is_aborted_everywhere() {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("m", ["localhost:1"])
        .job("w", ["localhost:2"])
        .build()
        .unwrap();
    let net = InMemNetwork::new();
    let m = InMemServer::start(&net, &spec, "m", 0, &host_task_options("m")).unwrap();
    let w = InMemServer::start(&net, &spec, "w", 0, &host_task_options("w")).unwrap();
    let g = Graph::new();
    let x = op(&g, "/job:m/task:0", "x", "AsyncThree", &[]);
    let remote = op(&g, "/job:w/task:0", "remote", "AsyncThree", &[x]);
    let hang_here = op(&g, "/job:m/task:0", "hang_here", "AsyncHang", &[]);
    let hang_there = op(&g, "/job:w/task:0", "hang_there", "AsyncHang", &[]);
    let after = op(&g, "/job:m/task:0", "after", "AsyncThree", &[hang_there]);
    let s = magpie_inmem::connect(&net, "inmem://localhost:1", &g).unwrap();

    let out = futures::executor::block_on(s.run_async(&[], &[x, remote], &[])).unwrap();
    assert_eq!(out, vec![Tensor::scalar(3.0f32), Tensor::scalar(3.0f32)]);

    let leftovers = || {
        let (ms, ws) = (m.core().worker().stats(), w.core().worker().stats());
        (
            m.core().master().running_steps(),
            ms.running_steps + ws.running_steps,
            ms.pending_rendezvous + ws.pending_rendezvous,
        )
    };
    for (fetch, partitions) in [(hang_here, 1), (after, 2)] {
        let fetches = [fetch];
        let mut step = Box::pin(s.run_async(&[], &fetches, &[]));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        eventually_ok(HANG_GUARD, || {
            assert!(
                std::future::Future::poll(step.as_mut(), &mut cx).is_pending(),
                "a hanging step ended"
            );
            match leftovers() {
                (1, p, _) if p == partitions => Ok(()),
                left => Err(format!(
                    "the step never started on {partitions} task(s): {left:?}"
                )),
            }
        });
        drop(step);
        eventually_ok(HANG_GUARD, || match leftovers() {
            (0, 0, 0) => Ok(()),
            left => Err(format!("steps left behind after the drop: {left:?}")),
        });
    }
    // The cluster keeps serving; so does the blocking path.
    assert_eq!(
        s.run(&[], &[remote], &[]).unwrap(),
        vec![Tensor::scalar(3.0f32)]
    );
    drop(s);
    m.stop(Duration::from_secs(2));
    w.stop(Duration::from_secs(2));
}
