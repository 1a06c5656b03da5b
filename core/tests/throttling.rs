//! Resource pools: ops of a pool never run more than its capacity at once, other work
//! proceeds meanwhile, and bad declarations are clear errors. Intervals are recorded by
//! the kernels themselves; assertions are about ordering and overlap, not speed.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Once};
use std::time::{Duration, Instant};

use futures::FutureExt;
use magpie_core::device::Device;
use magpie_core::graph::{register_op, Arity, DeviceName, Graph, OpDef};
use magpie_core::kernel::{
    AsyncKernel, AsyncKernelContext, BoxedKernel, Kernel, KernelContext, KernelError, Outputs,
};
use magpie_core::registry::register_kernel;
use magpie_core::session::{RunOptions, Session, SessionError, SessionOptions};
use magpie_core::tensor::{DType, Tensor};
use smallvec::smallvec;

#[derive(Debug)]
struct Dev(DeviceName);
impl Device for Dev {
    fn name(&self) -> &DeviceName {
        &self.0
    }
}

type Intervals = HashMap<magpie_core::StepId, Vec<(String, Instant, Instant)>>;
/// Per step: (node, start, end) as the kernels saw them.
static INTERVALS: LazyLock<Mutex<Intervals>> = LazyLock::new(Default::default);

fn record(step: magpie_core::StepId, node: &str, start: Instant) {
    INTERVALS.lock().unwrap().entry(step).or_default().push((
        node.to_string(),
        start,
        Instant::now(),
    ));
}

/// A transfer: completes after `ms` from a timer thread, holding no worker.
struct Transfer;
impl AsyncKernel for Transfer {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> futures::future::BoxFuture<'static, Result<Outputs, KernelError>> {
        let start = Instant::now();
        let ms = ctx.attrs().int("ms").unwrap_or(10) as u64;
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            let _ = tx.send(());
        });
        async move {
            rx.await.map_err(|_| KernelError::Cancelled)?;
            record(ctx.step_id(), &ctx.node().name, start);
            Ok(smallvec![Tensor::scalar(1.0f32)])
        }
        .boxed()
    }
}

/// Compute: spins for `ms` on its worker.
struct Compute;
impl Kernel for Compute {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let start = Instant::now();
        let ms = ctx.attrs().int("ms").unwrap_or(2) as u64;
        while start.elapsed() < Duration::from_millis(ms) {
            std::hint::spin_loop();
        }
        record(ctx.step_id(), &ctx.node().name, start);
        ctx.push_output(Tensor::scalar(1.0f32));
        Ok(())
    }
}

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let f32_out = |_: &[DType], _: &magpie_core::graph::Attrs| Ok(vec![DType::F32]);
        register_op(OpDef::new("Transfer", Arity::AtLeast(0), f32_out)).unwrap();
        register_op(OpDef::new("Compute", Arity::AtLeast(0), f32_out)).unwrap();
        register_kernel("Transfer", "THR", |_| {
            Ok(BoxedKernel::Async(Box::new(Transfer)))
        })
        .unwrap();
        register_kernel("Compute", "THR", |_| {
            Ok(BoxedKernel::Sync(Box::new(Compute)))
        })
        .unwrap();
        register_kernel("NoOp", "THR", |_| Ok(BoxedKernel::Sync(Box::new(Compute)))).ok();
    });
}

fn session(g: &Graph, pools: &[(&str, usize)]) -> Result<Session, SessionError> {
    setup();
    let dev: Arc<dyn Device> = Arc::new(Dev(DeviceName::local("THR", 0)));
    let mut opts = SessionOptions::with_devices(vec![dev]).num_workers(2);
    opts.resource_pools = pools.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    Session::new(g, opts)
}

/// Transfers in pool `net` plus independent compute ops; returns (transfer, compute)
/// intervals of one step.
/// A recorded kernel interval.
type Span = (Instant, Instant);

fn run_mixed(capacity: usize) -> (Vec<Span>, Vec<Span>) {
    setup();
    let g = Graph::new();
    let mut outs = Vec::new();
    g.resource_pools(&["net"], |g| {
        for i in 0..6 {
            let named = g.with_name(&format!("xfer{i}"));
            outs.push(
                named
                    .op("Transfer")
                    .attr("ms", 15i64)
                    .build_output()
                    .unwrap(),
            );
        }
    });
    for i in 0..8 {
        let named = g.with_name(&format!("comp{i}"));
        outs.push(named.op("Compute").attr("ms", 3i64).build_output().unwrap());
    }
    let s = session(&g, &[("net", capacity)]).unwrap();
    let out = s
        .run_with_options(&RunOptions::default(), &[], &outs, &[])
        .unwrap();
    let all = INTERVALS
        .lock()
        .unwrap()
        .remove(&out.metadata.step_id)
        .unwrap();
    let pick = |prefix: &str| {
        all.iter()
            .filter(|(n, ..)| n.starts_with(prefix))
            .map(|(_, s, e)| (*s, *e))
            .collect()
    };
    (pick("xfer"), pick("comp"))
}

fn max_overlap(intervals: &[Span]) -> usize {
    intervals
        .iter()
        .map(|(s, _)| intervals.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_pool_of_one_serialises_its_ops_while_compute_proceeds() {
    for _ in 0..5 {
        let (xfers, comps) = run_mixed(1);
        assert_eq!((xfers.len(), comps.len()), (6, 8));
        assert_eq!(
            max_overlap(&xfers),
            1,
            "two transfers of pool net=1 overlapped"
        );
        let first = xfers.iter().map(|x| x.0).min().unwrap();
        let last = xfers.iter().map(|x| x.1).max().unwrap();
        let during = comps
            .iter()
            .filter(|(s, _)| first <= *s && *s < last)
            .count();
        assert!(
            during > 0,
            "no compute op ran while the transfers were throttled"
        );
    }
}

#[test]
fn a_pool_of_k_runs_at_most_k_at_once() {
    for k in [2, 3] {
        let (xfers, _) = run_mixed(k);
        let m = max_overlap(&xfers);
        assert!(m <= k, "{m} transfers overlapped in a pool of {k}");
    }
}

#[test]
fn unthrottled_transfers_overlap() {
    setup();
    let g = Graph::new();
    let outs: Vec<_> = (0..4)
        .map(|i| {
            g.with_name(&format!("free{i}"))
                .op("Transfer")
                .attr("ms", 30i64)
                .build_output()
                .unwrap()
        })
        .collect();
    let s = session(&g, &[]).unwrap();
    let out = s
        .run_with_options(&RunOptions::default(), &[], &outs, &[])
        .unwrap();
    let all = INTERVALS
        .lock()
        .unwrap()
        .remove(&out.metadata.step_id)
        .unwrap();
    let iv: Vec<_> = all.iter().map(|(_, s, e)| (*s, *e)).collect();
    assert!(
        max_overlap(&iv) > 1,
        "async transfers should run concurrently without a pool"
    );
}

#[test]
fn bad_pool_declarations_are_clear_errors() {
    setup();
    let g = Graph::new();
    let x = g
        .with_name("upload")
        .op("Transfer")
        .resource_pool("disk")
        .build_output()
        .unwrap();
    let s = session(&g, &[("net", 1)]).unwrap();
    let err = s.run(&[], &[x], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"upload\" (Transfer) needs resource pool \"disk\", which the session does not \
         declare; declared pools: [\"net\"]"
    );
    let err = session(&g, &[("net", 0)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid session options: resource pool \"net\" has capacity 0: no op needing it \
         could ever run"
    );
    let err = session(&g, &[("net", 1), ("net", 2)]).unwrap_err();
    assert!(err.to_string().contains("declared twice"), "{err}");
}
