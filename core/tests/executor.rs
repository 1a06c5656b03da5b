//! Executor and session semantics, checked with test kernels on a test device so that no
//! backend is involved: pruning, control-dependency order, feeds, async kernels,
//! cancellation, deadlines, panics, concurrency and idle CPU.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, LazyLock, Mutex, Once};
use std::time::{Duration, Instant};

use futures::FutureExt;
use magpie_core::device::Device;
use magpie_core::graph::{register_op, Arity, DeviceName, Graph, GraphError, OpDef};
use magpie_core::kernel::{
    AsyncKernel, AsyncKernelContext, BoxedKernel, Kernel, KernelContext, KernelError, Outputs,
};
use magpie_core::registry::register_kernel;
use magpie_core::session::{CancellationToken, RunOptions, Session, SessionError, SessionOptions};
use magpie_core::tensor::{DType, Tensor};
use smallvec::smallvec;

#[derive(Debug)]
struct TestDevice(DeviceName);

impl Device for TestDevice {
    fn name(&self) -> &DeviceName {
        &self.0
    }
}

/// Invocation counts per node name.
static CALLS: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);
/// (step, node) -> (start, end) as recorded by the `Record` kernel itself.
type Spans = HashMap<(magpie_core::StepId, String), (Instant, Instant)>;
static SPANS: LazyLock<Mutex<Spans>> = LazyLock::new(Default::default);
/// The thread the `Where` kernel last ran on, by node name.
static THREADS: LazyLock<Mutex<HashMap<String, std::thread::ThreadId>>> =
    LazyLock::new(Default::default);

struct FnKernel<F>(F);
impl<F: Fn(&mut KernelContext<'_>) -> Result<(), KernelError> + Send + Sync> Kernel
    for FnKernel<F>
{
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        (self.0)(ctx)
    }
}

fn sync(
    f: impl Fn(&mut KernelContext<'_>) -> Result<(), KernelError> + Send + Sync + 'static,
) -> BoxedKernel {
    BoxedKernel::Sync(Box::new(FnKernel(f)))
}

/// Completes after `ms` milliseconds (attribute), from a timer thread: no worker waits.
struct SleepKernel;
impl AsyncKernel for SleepKernel {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> futures::future::BoxFuture<'static, Result<Outputs, KernelError>> {
        let ms = ctx.attrs().int("ms").unwrap_or(0) as u64;
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            let _ = tx.send(());
        });
        async move {
            rx.await.map_err(|_| KernelError::Cancelled)?;
            Ok(smallvec![Tensor::scalar(ms as f32)])
        }
        .boxed()
    }
}

/// How long a [`GateKernel`]'s thread waits for its gate at most: a hang guard only, so
/// that no test leaves a thread behind for good. No test waits for it to pass.
const GATE_HANG_GUARD: Duration = Duration::from_secs(120);

/// The gate of one `Gate` node (by node name): the node's async op completes only once
/// the test opens it, so a step that ends while it is shut provably did not wait for it.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    /// The kernel was called.
    started: bool,
    /// The test opened the gate.
    open: bool,
    /// The op completed (its gate opened, or the hang guard passed).
    finished: bool,
}

impl Gate {
    /// The gate of node `name`, made on first use.
    fn of(name: &str) -> Arc<Gate> {
        static GATES: LazyLock<Mutex<HashMap<String, Arc<Gate>>>> = LazyLock::new(Default::default);
        Arc::clone(GATES.lock().unwrap().entry(name.to_string()).or_default())
    }

    fn update(&self, f: impl FnOnce(&mut GateState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }

    /// Waits until `until` holds of the state, for at most [`GATE_HANG_GUARD`]; whether
    /// it holds.
    fn wait(&self, until: impl Fn(&GateState) -> bool) -> bool {
        let state = self.state.lock().unwrap();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, GATE_HANG_GUARD, |s| !until(s))
            .unwrap();
        until(&state)
    }

    fn open(&self) {
        self.update(|s| s.open = true);
    }

    fn finished(&self) -> bool {
        self.state.lock().unwrap().finished
    }
}

/// Completes once its node's [`Gate`] opens, from a thread of its own: no worker waits.
struct GateKernel;
impl AsyncKernel for GateKernel {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> futures::future::BoxFuture<'static, Result<Outputs, KernelError>> {
        let gate = Gate::of(&ctx.node().name);
        gate.update(|s| s.started = true);
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            gate.wait(|s| s.open);
            gate.update(|s| s.finished = true);
            let _ = tx.send(());
        });
        async move {
            rx.await.map_err(|_| KernelError::Cancelled)?;
            Ok(smallvec![Tensor::scalar(1.0f32)])
        }
        .boxed()
    }
}

fn f32_sum(ctx: &KernelContext<'_>) -> f32 {
    (0..ctx.num_inputs())
        .map(|i| ctx.input(i).scalar_value::<f32>().unwrap_or(0.0))
        .sum()
}

fn setup() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let f32_out = |_: &[DType], _: &magpie_core::graph::Attrs| Ok(vec![DType::F32]);
        for op in ["Count", "Record", "Boom", "Where", "Owns", "Liar"] {
            register_op(OpDef::new(op, Arity::AtLeast(0), f32_out)).unwrap();
        }
        register_op(OpDef::new("Sleep", Arity::AtLeast(0), f32_out)).unwrap();
        register_op(OpDef::new("Gate", Arity::AtLeast(0), f32_out)).unwrap();
        register_kernel("Const", "TEST", |init| {
            let v = init.node.attrs.tensor("value")?;
            Ok(sync(move |ctx| {
                ctx.push_output(v.clone());
                Ok(())
            }))
        })
        .unwrap();
        register_kernel("Add", "TEST", |_| {
            Ok(sync(|ctx| {
                let s = f32_sum(ctx);
                ctx.push_output(Tensor::scalar(s));
                Ok(())
            }))
        })
        .unwrap();
        register_kernel("Count", "TEST", |_| {
            Ok(sync(|ctx| {
                *CALLS
                    .lock()
                    .unwrap()
                    .entry(ctx.node().name.clone())
                    .or_default() += 1;
                let s = f32_sum(ctx) + 1.0;
                ctx.push_output(Tensor::scalar(s));
                Ok(())
            }))
        })
        .unwrap();
        register_kernel("Record", "TEST", |_| {
            Ok(sync(|ctx| {
                let start = Instant::now();
                std::thread::sleep(Duration::from_micros(200));
                let s = f32_sum(ctx) + 1.0;
                ctx.push_output(Tensor::scalar(s));
                let key = (ctx.step_id(), ctx.node().name.clone());
                SPANS.lock().unwrap().insert(key, (start, Instant::now()));
                Ok(())
            }))
        })
        .unwrap();
        register_kernel("Where", "TEST", |_| {
            Ok(sync(|ctx| {
                THREADS
                    .lock()
                    .unwrap()
                    .insert(ctx.node().name.clone(), std::thread::current().id());
                ctx.push_output(Tensor::scalar(f32_sum(ctx)));
                Ok(())
            }))
        })
        .unwrap();
        register_kernel("Boom", "TEST", |_| {
            Ok(sync(|ctx| {
                if f32_sum(ctx) > 0.0 {
                    panic!("boom at {}", ctx.node().name);
                }
                ctx.push_output(Tensor::scalar(0.0f32));
                Ok(())
            }))
        })
        .unwrap();
        register_kernel("Owns", "TEST", |_| {
            Ok(sync(|ctx| {
                // 1 when the context holds input 0 itself, 0 when the executor lent it.
                let owned = ctx.input_mut_if_owned(0).is_some();
                ctx.push_output(Tensor::scalar(if owned { 1.0f32 } else { 0.0 }));
                Ok(())
            }))
        })
        .unwrap();
        register_kernel("Liar", "TEST", |_| {
            Ok(sync(|ctx| {
                // Fed 0: the right output. 1: an i32 instead of an f32. 2: two outputs.
                // 3: none.
                let mode = f32_sum(ctx) as i32;
                match mode {
                    0 => ctx.push_output(Tensor::scalar(0.0f32)),
                    1 => ctx.push_output(Tensor::scalar(1i32)),
                    2 => {
                        ctx.push_output(Tensor::scalar(0.0f32));
                        ctx.push_output(Tensor::scalar(0.0f32));
                    }
                    _ => {}
                }
                Ok(())
            }))
        })
        .unwrap();
        register_kernel("Sleep", "TEST", |_| {
            Ok(BoxedKernel::Async(Box::new(SleepKernel)))
        })
        .unwrap();
        register_kernel("Gate", "TEST", |_| {
            Ok(BoxedKernel::Async(Box::new(GateKernel)))
        })
        .unwrap();
    });
}

fn session(g: &Graph, workers: usize) -> Session {
    setup();
    let dev: Arc<dyn Device> = Arc::new(TestDevice(DeviceName::local("TEST", 0)));
    Session::new(
        g,
        SessionOptions::with_devices(vec![dev]).num_workers(workers),
    )
    .unwrap()
}

fn calls(name: &str) -> usize {
    CALLS.lock().unwrap().get(name).copied().unwrap_or(0)
}

/// A fed `f32` input of `g`.
fn placeholder(g: &Graph) -> magpie_core::graph::Output {
    g.op("Placeholder")
        .attr("dtype", DType::F32)
        .build_output()
        .unwrap()
}

/// A session over `Placeholder -> Boom` (the `Boom` node named `name`, panicking when fed
/// a positive value): the session, the placeholder and the `Boom` output.
fn boom_session(
    name: &str,
) -> (
    Session,
    magpie_core::graph::Output,
    magpie_core::graph::Output,
) {
    setup();
    let g = Graph::new();
    let input = placeholder(&g);
    let boom = g
        .with_name(name)
        .op("Boom")
        .input(input)
        .build_output()
        .unwrap();
    (session(&g, 2), input, boom)
}

/// A session over one `Gate` node named `name`, its output and its gate: a step that
/// cannot finish before the test opens the gate (open it when done).
fn slow_session(name: &str) -> (Session, magpie_core::graph::Output, Arc<Gate>) {
    setup();
    let g = Graph::new();
    let slow = g.with_name(name).op("Gate").build_output().unwrap();
    (session(&g, 2), slow, Gate::of(name))
}

/// Options with a timeout of `ms` milliseconds.
fn timeout_ms(ms: u64) -> RunOptions {
    RunOptions {
        timeout: Some(Duration::from_millis(ms)),
        ..RunOptions::default()
    }
}

/// Options with a cancellation token, and the thread that cancels it after `ms`
/// milliseconds (join it).
fn cancelled_after_ms(ms: u64) -> (RunOptions, std::thread::JoinHandle<()>) {
    let token = CancellationToken::new();
    let t2 = token.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        t2.cancel();
    });
    let opts = RunOptions {
        cancel: Some(token),
        ..RunOptions::default()
    };
    (opts, canceller)
}

#[test]
fn a_timeout_no_instant_can_hold_is_no_deadline() {
    setup();
    let g = Graph::new();
    let y = g.constant(-2.0f32).unwrap();
    let s = session(&g, 1);
    let forever = RunOptions {
        timeout: Some(Duration::MAX),
        ..RunOptions::default()
    };
    let out = s.run_with_options(&forever, &[], &[y], &[]).unwrap();
    assert_eq!(f32::try_from(&out.tensors[0]).unwrap(), -2.0);
}

#[test]
fn control_dependencies_order_x_and_y_after_a_and_b() {
    setup();
    let g = Graph::new();
    let a = g.with_name("cd_a").op("Record").build_output().unwrap();
    let b = g
        .with_name("cd_b")
        .op("Record")
        .input(a)
        .build_output()
        .unwrap();
    let (x, y) = g.control_dependencies([a, b], |g| {
        (
            g.with_name("cd_x").op("Record").build_output().unwrap(),
            g.with_name("cd_y").op("Record").build_output().unwrap(),
        )
    });
    let z = g
        .with_name("cd_z")
        .op("Record")
        .input(x)
        .input(y)
        .build_output()
        .unwrap();
    for workers in [2, 4] {
        let s = session(&g, workers);
        for _ in 0..100 {
            let out = s
                .run_with_options(&RunOptions::default(), &[], &[z], &[])
                .unwrap();
            let step = out.metadata.step_id;
            let spans = SPANS.lock().unwrap();
            let span = |n: &str| spans[&(step, n.to_string())];
            for later in ["cd_x", "cd_y"] {
                for earlier in ["cd_a", "cd_b"] {
                    assert!(
                        span(later).0 >= span(earlier).1,
                        "{later} started before {earlier} ended ({workers} workers)"
                    );
                }
                assert!(span("cd_z").0 >= span(later).1);
            }
            assert_eq!(f32::try_from(&out.tensors[0]).unwrap(), 3.0);
        }
    }
}

#[test]
fn unfetched_branches_never_run() {
    setup();
    let g = Graph::new();
    let base = g.with_name("pr_base").op("Count").build_output().unwrap();
    let used = g
        .with_name("pr_used")
        .op("Count")
        .input(base)
        .build_output()
        .unwrap();
    let unused = g
        .with_name("pr_unused")
        .op("Count")
        .input(base)
        .build_output()
        .unwrap();
    let _unused2 = g
        .with_name("pr_unused2")
        .op("Count")
        .input(unused)
        .build_output()
        .unwrap();
    let ctl = g.with_name("pr_ctl").op("Count").build().unwrap();
    let with_ctl = g
        .with_name("pr_with_ctl")
        .op("Count")
        .control_input(ctl)
        .build_output()
        .unwrap();
    let s = session(&g, 2);
    for _ in 0..5 {
        s.run(&[], &[used], &[]).unwrap();
    }
    assert_eq!((calls("pr_base"), calls("pr_used")), (5, 5));
    assert_eq!(
        (calls("pr_unused"), calls("pr_unused2"), calls("pr_ctl")),
        (0, 0, 0)
    );
    // A control input is needed through a fetch...
    s.run(&[], &[with_ctl], &[]).unwrap();
    assert_eq!(calls("pr_ctl"), 1);
    // ...and a target runs without being fetched.
    s.run(&[], &[], &[unused.node]).unwrap();
    assert_eq!((calls("pr_unused"), calls("pr_unused2")), (1, 0));
}

#[test]
fn a_feed_replaces_its_producer() {
    setup();
    let g = Graph::new();
    let p = g
        .with_name("fd_producer")
        .op("Count")
        .build_output()
        .unwrap();
    let c = g
        .with_name("fd_consumer")
        .op("Count")
        .input(p)
        .build_output()
        .unwrap();
    let s = session(&g, 2);
    let out = s.run(&[(p, Tensor::scalar(10.0f32))], &[c], &[]).unwrap();
    assert_eq!(f32::try_from(&out[0]).unwrap(), 11.0);
    assert_eq!(calls("fd_producer"), 0);
    // Fetching a fed output returns the feed.
    let out = s.run(&[(p, Tensor::scalar(5.0f32))], &[p], &[]).unwrap();
    assert_eq!(f32::try_from(&out[0]).unwrap(), 5.0);
    let err = s.run(&[(p, Tensor::scalar(5i32))], &[c], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "feed for \"fd_producer:0\" has dtype i32, but that output is f32"
    );
}

#[test]
fn kernels_borrow_shared_inputs_and_only_the_last_use_owns_a_tensor() {
    setup();
    let g = Graph::new();
    let owns = |name: String, x| g.with_name(&name).op("Owns").input(x).build_output();
    // A constant and a feed, each read by 50 nodes: pinned, so every use is lent.
    let c = g.constant(2.0f32).unwrap();
    let fed = g.with_name("own_fed").op("Count").build_output().unwrap();
    let mut fan = Vec::new();
    for i in 0..50 {
        fan.push(owns(format!("own_c{i}"), c).unwrap());
        fan.push(owns(format!("own_f{i}"), fed).unwrap());
    }
    // A computed tensor read by two nodes, one after the other: the first borrows it,
    // the second (its last use) owns it.
    let p = g.with_name("own_p").op("Count").build_output().unwrap();
    let first = owns("own_first".into(), p).unwrap();
    let second = g.control_dependencies([first], |g| {
        g.with_name("own_second")
            .op("Owns")
            .input(p)
            .build_output()
            .unwrap()
    });
    let s = session(&g, 2);
    let mut fetches = fan.clone();
    fetches.extend([first, second]);
    for _ in 0..3 {
        let out = s
            .run(&[(fed, Tensor::scalar(1.0f32))], &fetches, &[])
            .unwrap();
        let got: Vec<f32> = out.iter().map(|t| f32::try_from(t).unwrap()).collect();
        assert_eq!(got[..100], [0.0; 100], "a shared input was handed over");
        assert_eq!(got[100..], [0.0, 1.0]);
    }
    // A step that tracks memory counts every use: at most one use of the constant (its
    // last, unless the last two overlap and the later loan drops it) owns it.
    let opts = RunOptions {
        track_memory: true,
        ..RunOptions::default()
    };
    let out = s
        .run_with_options(&opts, &[(fed, Tensor::scalar(1.0f32))], &fetches, &[])
        .unwrap();
    let owned: f32 = (out.tensors.iter().step_by(2).take(50))
        .map(|t| f32::try_from(t).unwrap())
        .sum();
    assert!(owned <= 1.0, "{owned} uses owned one tensor");
}

#[test]
fn the_graph_may_grow_after_the_session_was_created() {
    setup();
    let g = Graph::new();
    let a = g.constant(1.0f32).unwrap();
    let s = session(&g, 2);
    assert_eq!(
        f32::try_from(&s.run(&[], &[a], &[]).unwrap()[0]).unwrap(),
        1.0
    );
    let b = g.add(a, g.constant(2.0f32).unwrap()).unwrap();
    assert_eq!(
        f32::try_from(&s.run(&[], &[b], &[]).unwrap()[0]).unwrap(),
        3.0
    );
}

#[test]
fn outputs_that_do_not_match_the_node_fail_the_step_naming_what_was_wrong() {
    let g = Graph::new();
    let x = placeholder(&g);
    let liar = g
        .with_name("liar")
        .op("Liar")
        .input(x)
        .build_output()
        .unwrap();
    let s = session(&g, 2);
    for (mode, want) in [
        (
            1.0f32,
            "kernel returned output 0 of dtype i32, expected f32",
        ),
        (2.0, "kernel returned 2 outputs, expected 1"),
        (3.0, "kernel returned 0 outputs, expected 1"),
    ] {
        let err = s
            .run(&[(x, Tensor::scalar(mode))], &[liar], &[])
            .unwrap_err();
        assert!(
            matches!(&err, SessionError::BadKernelOutput { node, op, .. }
                if node == "liar" && op == "Liar"),
            "{err:?}"
        );
        assert!(err.to_string().contains(want), "{err}");
    }
    // The session keeps serving, and a right output goes through.
    let out = s.run(&[(x, Tensor::scalar(0.0f32))], &[liar], &[]).unwrap();
    assert_eq!(f32::try_from(&out[0]).unwrap(), 0.0);
}

#[test]
fn a_panicking_kernel_fails_its_step_and_the_session_keeps_serving() {
    let (s, input, boom) = boom_session("boom");
    let err = s
        .run(&[(input, Tensor::scalar(1.0f32))], &[boom], &[])
        .unwrap_err();
    match &err {
        SessionError::Panicked {
            node, op, message, ..
        } => {
            assert_eq!((node.as_str(), op.as_str()), ("boom", "Boom"));
            assert!(message.contains("boom at boom"), "{message}");
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    for _ in 0..20 {
        let out = s
            .run(&[(input, Tensor::scalar(0.0f32))], &[boom], &[])
            .unwrap();
        assert_eq!(f32::try_from(&out[0]).unwrap(), 0.0);
    }
}

#[test]
fn async_kernels_complete_and_wake_the_scheduler() {
    setup();
    let g = Graph::new();
    let slow = g.op("Sleep").attr("ms", 20i64).build_output().unwrap();
    let after = g
        .with_name("as_after")
        .op("Count")
        .input(slow)
        .build_output()
        .unwrap();
    let s = session(&g, 2);
    let out = s.run(&[], &[after], &[]).unwrap();
    assert_eq!(f32::try_from(&out[0]).unwrap(), 21.0);
}

#[test]
fn a_deadline_fails_the_step_without_waiting_for_the_slow_op() {
    let (s, slow, gate) = slow_session("deadline_gate");
    let opts = timeout_ms(50);
    let err = s.run_with_options(&opts, &[], &[slow], &[]).unwrap_err();
    assert!(matches!(err, SessionError::DeadlineExceeded(_)), "{err:?}");
    assert!(err.to_string().contains("deadline"), "{err}");
    // The gate is still shut: the slow op has not finished, so the step did not wait.
    assert!(!gate.finished(), "the step waited for the slow op");
    gate.open();
}

#[test]
fn a_step_can_be_cancelled_from_another_thread() {
    let (s, slow, gate) = slow_session("cancel_gate");
    let token = CancellationToken::new();
    // Cancels once the slow op has started, so the cancellation meets a running step.
    let canceller = {
        let (token, gate) = (token.clone(), Arc::clone(&gate));
        std::thread::spawn(move || {
            assert!(
                gate.wait(|s| s.started),
                "hang guard: the slow op never started"
            );
            token.cancel();
        })
    };
    let opts = RunOptions {
        cancel: Some(token),
        ..RunOptions::default()
    };
    let err = s.run_with_options(&opts, &[], &[slow], &[]).unwrap_err();
    canceller.join().unwrap();
    assert_eq!(err, SessionError::Cancelled);
    assert!(!gate.finished(), "the step waited for the slow op");
    gate.open();
}

#[test]
fn eight_threads_times_a_thousand_runs_on_one_session() {
    setup();
    let g = Graph::new();
    let x = placeholder(&g);
    let mut acc = x;
    for _ in 0..8 {
        let c = g.constant(1.0f32).unwrap();
        acc = g.add(acc, c).unwrap();
    }
    let s = Arc::new(session(&g, 2));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let v = (t * 1000 + i) as f32;
                    let out = s.run(&[(x, Tensor::scalar(v))], &[acc], &[]).unwrap();
                    assert_eq!(f32::try_from(&out[0]).unwrap(), v + 8.0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_slow_async_op_leaves_the_cpu_idle() {
    use magpie_scheduler::test_support::{eventually_ok, thread_activity, threads_where};
    // While a step waits on an async op, the pool's workers and the stepping thread go to
    // sleep and stay asleep: every one of them is seen in state `S` with no context
    // switch between many samples in a row. A worker that kept spinning (or woke up
    // periodically) would be seen running or switching, however loaded the machine: no
    // CPU time is measured, so other tests' threads do not count.
    setup();
    let g = Graph::new();
    let gated = g
        .with_name("idle_cpu_gate")
        .op("Gate")
        .build_output()
        .unwrap();
    let warm = g.constant(0.0f32).unwrap();
    let pool = magpie_core::scheduler::ThreadPool::builder()
        .num_workers(2)
        .thread_name("idle-probe")
        .build()
        .unwrap();
    let dev: Arc<dyn Device> = Arc::new(TestDevice(DeviceName::local("TEST", 0)));
    let mut options = SessionOptions::with_devices(vec![dev]);
    options.pool = Some(pool);
    let s = Arc::new(Session::new(&g, options).unwrap());
    s.run(&[], &[warm], &[]).unwrap(); // the workers have run something
    let gate = Gate::of("idle_cpu_gate");
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let stepper = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions; it reads the calling thread's id.
            tid_tx.send(unsafe { libc::gettid() }).unwrap();
            s.run(&[], &[gated], &[])
        })
    };
    assert!(gate.wait(|s| s.started), "the gated op never started");
    // A new thread names itself once it runs, so under load a worker may still carry
    // its parent's name for a while: look until both are found (within the hang guard).
    let mut watched = Vec::new();
    eventually_ok(GATE_HANG_GUARD, || {
        watched = threads_where(|n| n == "idle-probe-0" || n == "idle-probe-1");
        match watched.len() {
            2 => Ok(()),
            _ => Err(format!("the pool's workers: {watched:?}")),
        }
    });
    watched.push(tid_rx.recv().unwrap());

    // Sample every 5 ms until 20 samples in a row find every thread asleep and none of
    // them switched since the previous sample (within the gate's hang guard: a worker
    // that never sleeps fails here).
    const QUIET_SAMPLES: usize = 20;
    let sample = || {
        watched
            .iter()
            .map(|&t| thread_activity(t).expect("a watched thread ended"))
            .collect::<Vec<_>>()
    };
    let mut previous = sample();
    let mut quiet = 0;
    eventually_ok(GATE_HANG_GUARD, || {
        std::thread::sleep(Duration::from_millis(5));
        let now = sample();
        let asleep = now.iter().all(|(state, _)| *state == 'S');
        quiet = if asleep && now == previous {
            quiet + 1
        } else {
            0
        };
        previous = now;
        match quiet >= QUIET_SAMPLES {
            true => Ok(()),
            false => Err(format!(
                "the threads never stayed asleep while the op was pending: {previous:?}"
            )),
        }
    });
    gate.open();
    let out = stepper.join().unwrap().unwrap();
    assert_eq!(f32::try_from(&out[0]).unwrap(), 1.0);
}

#[test]
fn validation_errors_name_the_node() {
    setup();
    let g = Graph::new();
    let err = g.with_name("bad").op("NoSuchOp").build().unwrap_err();
    assert_eq!(err.to_string(), "node \"bad\": unknown op \"NoSuchOp\"");
    let a = g.constant(1.0f32).unwrap();
    let err = g
        .with_name("two_in")
        .op("Neg")
        .input(a)
        .input(a)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"two_in\" (Neg): expected 1 inputs, got 2"
    );
    let i = g.constant(1i32).unwrap();
    let err = g.with_name("mixed").add(a, i).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"mixed\" (Add): dtype mismatch: input 1 has dtype i32, expected f32"
    );
    g.with_name("dup").constant(1.0f32).unwrap();
    assert_eq!(
        g.with_name("dup").constant(2.0f32).unwrap_err(),
        GraphError::DuplicateName("dup".into())
    );
    let p = g.with_name("ph").placeholder(DType::F32, None).unwrap();
    let y = g.neg(p).unwrap();
    let s = session(&g, 1);
    let err = s.run(&[], &[y], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "placeholder \"ph\" (f32) must be fed: the step needs it and no feed gives it a value"
    );
    let other = Graph::new();
    for _ in 0..3 {
        other.constant(0.0f32).unwrap();
    }
    let far = other.constant(0.0f32).unwrap();
    let g2 = Graph::new();
    let s2 = session(&g2, 1);
    // A handle of another graph is refused, naming its node, whatever the position.
    let foreign = |role: &str| {
        format!(
            "{role} refers to node \"Const_3\" of another graph ({}), not of the graph it is \
             used with ({})",
            other.id(),
            g2.id()
        )
    };
    let err = s2.run(&[], &[far], &[]).unwrap_err();
    assert!(
        matches!(&err, SessionError::Graph(GraphError::ForeignNode { .. })),
        "{err:?}"
    );
    assert_eq!(err.code(), magpie_core::Code::InvalidArgument);
    assert_eq!(err.to_string(), foreign("fetch"));
    let err = s2
        .run(&[(far, Tensor::scalar(0.0f32))], &[], &[])
        .unwrap_err();
    assert_eq!(err.to_string(), foreign("feed"));
    let err = s2.run(&[], &[], &[far.node]).unwrap_err();
    assert_eq!(err.to_string(), foreign("target"));
}

#[test]
fn a_foreign_handle_never_hits_a_cached_plan() {
    let g = Graph::new();
    let mine = g.constant(1.0f32).unwrap();
    let other = Graph::new();
    let theirs = other.with_name("theirs").constant(2.0f32).unwrap();
    assert_eq!(mine.node.index(), theirs.node.index());
    let s = session(&g, 1);
    // The plan for fetching position 0 is cached by now...
    for _ in 0..2 {
        assert_eq!(
            f32::try_from(&s.run(&[], &[mine], &[]).unwrap()[0]).unwrap(),
            1.0
        );
    }
    // ...and a handle at the same position of another graph is still refused.
    for _ in 0..2 {
        let err = s.run(&[], &[theirs], &[]).unwrap_err();
        assert!(
            matches!(&err, SessionError::Graph(GraphError::ForeignNode { node, .. }) if node == "theirs"),
            "{err:?}"
        );
    }
    assert_eq!(
        f32::try_from(&s.run(&[], &[mine], &[]).unwrap()[0]).unwrap(),
        1.0
    );
}

#[test]
fn a_closed_session_refuses_steps_with_failed_precondition() {
    let g = Graph::new();
    let x = g.constant(1.0f32).unwrap();
    let s = session(&g, 1);
    assert!(!s.is_closed());
    s.run(&[], &[x], &[]).unwrap();
    s.close();
    assert!(s.is_closed());
    for _ in 0..2 {
        let err = s.run(&[], &[x], &[]).unwrap_err();
        assert_eq!(err, SessionError::Closed);
        assert_eq!(err.code(), magpie_core::Code::FailedPrecondition);
        assert_eq!(err.to_string(), magpie_core::error::SESSION_CLOSED);
    }
    // Closing again is harmless.
    s.close();
    assert!(format!("{s:?}").contains("cached_plans: 0"), "{s:?}");
}

// Async steps (`Session::run_async`): the same results, errors, deadlines and
// cancellation as blocking ones, plus cancellation by dropping the future.

#[test]
fn an_async_step_computes_what_a_blocking_one_does() {
    setup();
    let g = Graph::new();
    let a = g
        .op("Const")
        .attr("value", Tensor::scalar(2.0f32))
        .build_output()
        .unwrap();
    let x = placeholder(&g);
    let sum = g.op("Add").input(a).input(x).build_output().unwrap();
    let s = session(&g, 2);
    for k in 0..50 {
        let feeds = [(x, Tensor::scalar(k as f32))];
        let got = futures::executor::block_on(s.run_async(&feeds, &[sum], &[])).unwrap();
        let want = s.run(&feeds, &[sum], &[]).unwrap();
        assert_eq!(f32::try_from(&got[0]).unwrap(), 2.0 + k as f32);
        assert_eq!(f32::try_from(&want[0]).unwrap(), 2.0 + k as f32);
    }
    // Many steps in flight at once on one session.
    let steps: Vec<_> = (0..32)
        .map(|k| s.run_async(&[(x, Tensor::scalar(k as f32))], &[sum], &[]))
        .collect();
    let outs = futures::executor::block_on(futures::future::join_all(steps));
    for (k, out) in outs.into_iter().enumerate() {
        assert_eq!(f32::try_from(&out.unwrap()[0]).unwrap(), 2.0 + k as f32);
    }
}

#[test]
fn a_short_synchronous_async_step_runs_on_the_polling_thread() {
    setup();
    let g = Graph::new();
    let here = g
        .with_name("where_short")
        .op("Where")
        .build_output()
        .unwrap();
    let slow = g.op("Sleep").attr("ms", 1i64).build_output().unwrap();
    let after_async = g
        .with_name("where_after_async")
        .op("Where")
        .input(slow)
        .build_output()
        .unwrap();
    let long = g.op("Record").build_output().unwrap();
    let after_long = g
        .with_name("where_after_long")
        .op("Where")
        .input(long)
        .build_output()
        .unwrap();
    let s = session(&g, 2);
    let me = std::thread::current().id();
    let ran_on = |name: &str| THREADS.lock().unwrap()[name];
    let block_on = futures::executor::block_on;
    // Synchronous: a plan's first step goes to the pool (nothing bounds an unmeasured
    // step); once a step was short, the next runs on the thread that polls it. A pool
    // step's time includes its hand-offs, which a loaded machine stretches past the
    // bound, but then every 16th step probes inline (pool steps up to 1 ms): some step
    // of a few hundred runs on the polling thread whatever the load.
    block_on(s.run_async(&[], &[here], &[])).unwrap();
    assert_ne!(ran_on("where_short"), me);
    let inline = (0..320).any(|_| {
        block_on(s.run_async(&[], &[here], &[])).unwrap();
        ran_on("where_short") == me
    });
    assert!(inline, "no short step ran on the polling thread");
    // An asynchronous kernel in the plan: the pool runs the step.
    block_on(s.run_async(&[], &[after_async], &[])).unwrap();
    assert_ne!(ran_on("where_after_async"), me);
    // Synchronous but long (`Record` sleeps 200 µs): the first step goes to the pool,
    // and having taken longer than the bound, so does the next one (the first step of
    // a plan whose pool steps are too long is not a probe).
    let got = block_on(s.run_async(&[], &[after_long], &[])).unwrap();
    assert_eq!(f32::try_from(&got[0]).unwrap(), 1.0);
    assert_ne!(ran_on("where_after_long"), me);
    let got = block_on(s.run_async(&[], &[after_long], &[])).unwrap();
    assert_eq!(f32::try_from(&got[0]).unwrap(), 1.0);
    assert_ne!(ran_on("where_after_long"), me);
}

#[test]
fn an_async_steps_errors_are_those_of_a_blocking_step() {
    let (s, x, boom) = boom_session("async_boom");
    let block_on = futures::executor::block_on;
    // A missing feed fails in `run_async` itself, a panicking kernel in the run.
    let missing = block_on(s.run_async(&[], &[boom], &[])).unwrap_err();
    assert_eq!(missing, s.run(&[], &[boom], &[]).unwrap_err());
    let feeds = [(x, Tensor::scalar(1.0f32))];
    match block_on(s.run_async(&feeds, &[boom], &[])).unwrap_err() {
        SessionError::Panicked { node, .. } => assert_eq!(node, "async_boom"),
        other => panic!("expected a panic naming the node, got {other:?}"),
    }
    s.close();
    let closed = block_on(s.run_async(&feeds, &[boom], &[])).unwrap_err();
    assert_eq!(closed, SessionError::Closed);
}

#[test]
fn an_async_step_fails_at_its_deadline_and_when_cancelled() {
    let (s, slow, gate) = slow_session("async_gate");
    // Nothing polls the future between its first poll and the deadline but the timer.
    let opts = timeout_ms(50);
    let err = futures::executor::block_on(s.run_async_with_options(&opts, &[], &[slow], &[]))
        .unwrap_err();
    assert!(matches!(err, SessionError::DeadlineExceeded(_)), "{err:?}");
    let (opts, canceller) = cancelled_after_ms(20);
    let step = s.run_async_with_options(&opts, &[], &[slow], &[]);
    assert_eq!(
        futures::executor::block_on(step).unwrap_err(),
        SessionError::Cancelled
    );
    canceller.join().unwrap();
    assert!(!gate.finished(), "the step waited for the slow op");
    gate.open();
}

#[test]
fn dropping_an_async_step_cancels_it() {
    setup();
    let g = Graph::new();
    let slow = g.op("Sleep").attr("ms", 200i64).build_output().unwrap();
    let after = g
        .with_name("dropped_after")
        .op("Count")
        .input(slow)
        .build_output()
        .unwrap();
    let s = session(&g, 2);
    let mut step = Box::pin(s.run_async(&[], &[after], &[]));
    // Poll once: the step runs and its slow op is pending.
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(std::future::Future::poll(step.as_mut(), &mut cx).is_pending());
    drop(step);
    // Long after the slow op would have finished, its successor still never ran.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(calls("dropped_after"), 0, "a dropped step kept running");
    // The session keeps serving.
    let out = s.run(&[], &[after], &[]).unwrap();
    assert_eq!(f32::try_from(&out[0]).unwrap(), 201.0);
    assert_eq!(calls("dropped_after"), 1);
}
