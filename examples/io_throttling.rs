//! The case for throttling communication: "if [communication-heavy ops] all
//! run at the same time, they may saturate the device's communication bandwidth, and they
//! will end up all waiting on I/O ... It would be preferable to execute these
//! communication-heavy operations sequentially, allowing the device to perform other
//! operations in parallel."
//!
//! Four tensors arrive over one simulated link whose bandwidth is shared among the
//! transfers in flight; each is then processed by ordinary CPU ops. Run once with every
//! transfer at once, then with the transfers in a resource pool `net` of capacity 1, and
//! compare when the data became usable and when the step finished.
//!
//! Run with `cargo run --release --example io_throttling`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use futures::FutureExt;
use magpie::graph::{register_op, Arity, OpDef};
use magpie::kernel::{AsyncKernel, AsyncKernelContext, BoxedKernel, KernelError, Outputs};
use magpie::{DType, Graph, Output, RunOptions, Session, Tensor};

/// Link bandwidth in bytes per second.
const BANDWIDTH: f64 = 100e6;
/// Side of each transferred f32 matrix: 724² × 4 B ≈ 2 MB, 20 ms alone on the link.
const SIDE: usize = 724;
const TRANSFERS: usize = 4;

/// A link shared by concurrent transfers: each gets `BANDWIDTH / active` (processor
/// sharing), simulated by a thread in 1 ms ticks.
struct Link {
    active: Mutex<Vec<(f64, futures::channel::oneshot::Sender<()>)>>,
}

impl Link {
    fn global() -> &'static Link {
        static LINK: std::sync::OnceLock<Link> = std::sync::OnceLock::new();
        LINK.get_or_init(|| {
            std::thread::spawn(|| loop {
                std::thread::sleep(Duration::from_millis(1));
                Link::global().tick(0.001);
            });
            Link {
                active: Mutex::new(Vec::new()),
            }
        })
    }

    fn tick(&self, seconds: f64) {
        let mut active = self.active.lock().unwrap();
        if active.is_empty() {
            return;
        }
        let share = BANDWIDTH * seconds / active.len() as f64;
        for t in active.iter_mut() {
            t.0 -= share;
        }
        let (done, left): (Vec<_>, Vec<_>) = active.drain(..).partition(|t| t.0 <= 0.0);
        *active = left;
        for (_, tx) in done {
            let _ = tx.send(());
        }
    }

    fn transfer(&self, bytes: usize) -> futures::channel::oneshot::Receiver<()> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.active.lock().unwrap().push((bytes as f64, tx));
        rx
    }
}

/// Microseconds from the start of the current step at which each transfer completed.
static ARRIVALS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static STEP_START: AtomicU64 = AtomicU64::new(0);

fn now_us() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Receives a `SIDE`×`SIDE` f32 matrix over the link.
struct Receive;

impl AsyncKernel for Receive {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> futures::future::BoxFuture<'static, Result<Outputs, KernelError>> {
        let arrived = Link::global().transfer(SIDE * SIDE * 4);
        let seed = ctx.attrs().int("seed").unwrap_or(0) as f32;
        async move {
            arrived.await.map_err(|_| KernelError::Cancelled)?;
            ARRIVALS
                .lock()
                .unwrap()
                .push(now_us() - STEP_START.load(Ordering::SeqCst));
            let data = vec![seed; SIDE * SIDE];
            Ok([Tensor::from_vec([SIDE, SIDE], data)?]
                .into_iter()
                .collect())
        }
        .boxed()
    }
}

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let def = OpDef::new("Receive", Arity::Exact(0), |_, _| Ok(vec![DType::F32]));
        register_op(def).expect("Receive is ours");
        magpie::registry::register_kernel("Receive", "CPU", |_| {
            Ok(BoxedKernel::Async(Box::new(Receive)))
        })
        .expect("Receive is ours");
    });
}

/// Four transfers, each followed by compute on its data; the results are summed.
fn build(throttled: bool) -> anyhow::Result<(Graph, Output)> {
    let g = Graph::new();
    let mut total = g.constant(0.0f32)?;
    for i in 0..TRANSFERS {
        let recv = g.op("Receive").attr("seed", i as i64);
        let recv = if throttled {
            recv.resource_pool("net")
        } else {
            recv
        };
        let x = recv.build_output()?;
        let y = g.matmul(x, x)?; // the work the device can do while other data arrives
        let s = g.sum(y, None, false)?;
        total = g.add(total, s)?;
    }
    Ok((g, total))
}

fn run(throttled: bool) -> anyhow::Result<(Duration, Vec<u64>, Tensor)> {
    let (g, total) = build(throttled)?;
    let mut options = magpie::local_options();
    options.resource_pools = vec![("net".into(), 1)];
    let session = Session::new(&g, options)?;
    ARRIVALS.lock().unwrap().clear();
    STEP_START.store(now_us(), Ordering::SeqCst);
    let out = session.run_with_options(&RunOptions::default(), &[], &[total], &[])?;
    let mut arrivals = ARRIVALS.lock().unwrap().clone();
    arrivals.sort_unstable();
    Ok((out.metadata.wall_time, arrivals, out.tensors[0].clone()))
}

fn main() -> anyhow::Result<()> {
    register();
    println!(
        "{TRANSFERS} transfers of {:.1} MB over a {:.0} MB/s link shared by the transfers in \
         flight, each followed by a {SIDE}x{SIDE} matrix product",
        (SIDE * SIDE * 4) as f64 / 1e6,
        BANDWIDTH / 1e6
    );
    let mut results = Vec::new();
    for throttled in [false, true] {
        let (makespan, arrivals, value) = run(throttled)?;
        let label = if throttled {
            "throttled (net = 1)"
        } else {
            "unthrottled"
        };
        let ms = |us: u64| us as f64 / 1000.0;
        let solo_us = (SIDE * SIDE * 4) as f64 / BANDWIDTH * 1e6;
        // How long transfers were delayed beyond their time alone on the link: slowed by
        // sharing it (unthrottled) or queued for it (throttled).
        let waited: f64 = arrivals
            .iter()
            .map(|a| (*a as f64 - solo_us).max(0.0))
            .sum();
        let mean = arrivals.iter().sum::<u64>() as f64 / arrivals.len().max(1) as f64;
        println!(
            "{label:<20} makespan {:>6.1} ms | data usable at {:?} ms (mean {:>5.1}) | \
             communication waited {:>6.1} ms in total",
            makespan.as_secs_f64() * 1000.0,
            arrivals
                .iter()
                .map(|a| (ms(*a) * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            mean / 1000.0,
            waited / 1000.0
        );
        results.push(value);
    }
    anyhow::ensure!(results[0] == results[1], "throttling changed the result");
    println!("same result either way: {}", results[0]);
    Ok(())
}
