//! The conformance suite behind [`check_device`].

use std::sync::{Arc, Once};
use std::time::Duration;

use futures::FutureExt;
use smallvec::smallvec;

use super::reference::{assert_close, evaluate};
use crate::device::Device;
use crate::graph::{register_op, Arity, DeviceName, Graph, GraphError, OpDef, Output};
use crate::kernel::{
    AsyncKernel, AsyncKernelContext, BoxedKernel, KernelError, KernelInit, Outputs,
};
use crate::registry::{register_kernel, KernelKey, KernelRegistry, ANY_DEVICE};
use crate::session::{Session, SessionOptions};
use crate::tensor::{DType, Storage, Tensor};

/// What a passing suite covered.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConformanceReport {
    /// The device checked.
    pub device: String,
    /// Individual checks that ran and passed.
    pub checks: usize,
    /// Standard ops exercised.
    pub ops_covered: Vec<String>,
    /// (op, dtype) pairs the device declined with `Unimplemented` (not a failure).
    pub unsupported: Vec<String>,
}

/// A failing suite: every failure, with the case that failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("device {device} failed {} conformance check(s):\n  {}", .failures.len(), .failures.join("\n  "))]
pub struct ConformanceError {
    /// The device checked.
    pub device: String,
    /// One line per failed check.
    pub failures: Vec<String>,
}

const DELAY_OP: &str = "TestkitDelay";

/// Identity that completes from another thread after a short delay.
struct DelayKernel;

impl AsyncKernel for DelayKernel {
    fn compute_async(
        &self,
        ctx: AsyncKernelContext,
    ) -> futures::future::BoxFuture<'static, Result<Outputs, KernelError>> {
        let (tx, rx) = futures::channel::oneshot::channel();
        let input = ctx.input(0).clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1));
            let _ = tx.send(input);
        });
        async move { Ok(smallvec![rx.await.map_err(|_| KernelError::Cancelled)?]) }.boxed()
    }
}

fn register_delay() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let def = OpDef::new(DELAY_OP, Arity::Exact(1), |ins, _| Ok(vec![ins[0]]));
        // Both registrations can only fail if a user took the name; then theirs is used.
        let _ = register_op(def);
        let _ = register_kernel(DELAY_OP, ANY_DEVICE, delay_factory);
    });
}

fn delay_factory(_: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    Ok(BoxedKernel::Async(Box::new(DelayKernel)))
}

/// Deterministic test values: small, nonzero, positive when `positive`.
fn values(dtype: DType, shape: &[usize], seed: usize, positive: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let v = |i: usize| -> f64 {
        let k = ((i + seed * 7) % 11) as f64;
        if positive {
            k + 1.0
        } else {
            k - 5.0
        }
    };
    let storage = match dtype {
        DType::F32 => Storage::F32((0..n).map(|i| v(i) as f32 * 0.5).collect()),
        DType::F64 => Storage::F64((0..n).map(|i| v(i) * 0.25).collect()),
        DType::I32 => Storage::I32((0..n).map(|i| v(i) as i32).collect()),
        DType::I64 => Storage::I64((0..n).map(|i| v(i) as i64).collect()),
        DType::Bool => Storage::Bool((0..n).map(|i| v(i) > 0.0).collect()),
    };
    Tensor::from_storage(shape, storage).expect("count matches shape")
}

type Case = (String, Graph, Vec<Output>);

struct Suite {
    device: Arc<dyn Device>,
    kernels: KernelRegistry,
    pinned: String,
    ops: Vec<String>,
    report: ConformanceReport,
    failures: Vec<String>,
}

impl Suite {
    fn has(&self, op: &str) -> bool {
        self.ops.iter().any(|o| o == op)
    }

    fn graph(&self) -> Graph {
        Graph::new()
            .with_device(&self.pinned)
            .expect("a device's own name parses")
    }

    fn session(&mut self, g: &Graph) -> Option<Session> {
        let opts = SessionOptions::with_devices(vec![Arc::clone(&self.device)])
            .num_workers(2)
            .kernels(self.kernels.clone());
        match Session::new(g, opts) {
            Ok(s) => Some(s),
            Err(e) => {
                self.failures.push(format!("cannot create a session: {e}"));
                None
            }
        }
    }

    /// Runs a case and compares with the reference; `Unimplemented` counts as unsupported.
    fn check(&mut self, (label, g, fetches): Case) {
        let expected = match evaluate(&g, &[], &fetches) {
            Ok(v) => v,
            Err(e) => {
                self.failures
                    .push(format!("{label}: the reference rejected the case: {e}"));
                return;
            }
        };
        let Some(session) = self.session(&g) else {
            return;
        };
        match session.run(&[], &fetches, &[]) {
            Ok(actual) => {
                for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
                    if let Err(msg) = assert_close(a, e, 1e-4, 1e-5) {
                        self.failures.push(format!("{label}: fetch {i}: {msg}"));
                        return;
                    }
                }
                self.report.checks += 1;
            }
            Err(e) if matches!(e.kernel_error(), Some(KernelError::Unimplemented { .. })) => {
                self.report.unsupported.push(label);
            }
            Err(e) => self.failures.push(format!("{label}: {e}")),
        }
    }

    /// Runs a case that must fail with a kernel `InvalidArgument` (not a panic).
    fn check_rejects(&mut self, label: &str, g: &Graph, fetch: Output, feeds: &[(Output, Tensor)]) {
        let Some(session) = self.session(g) else {
            return;
        };
        match session.run(feeds, &[fetch], &[]) {
            Err(e) if matches!(e.kernel_error(), Some(KernelError::InvalidArgument(_))) => {
                self.report.checks += 1;
            }
            Err(e) if matches!(e.kernel_error(), Some(KernelError::Unimplemented { .. })) => {}
            Ok(_) => self
                .failures
                .push(format!("{label}: succeeded, should be an error")),
            Err(e) => self.failures.push(format!(
                "{label}: should be an InvalidArgument kernel error, got: {e}"
            )),
        }
    }

    fn cover(&mut self, op: &str) {
        if !self.report.ops_covered.iter().any(|o| o == op) {
            self.report.ops_covered.push(op.to_string());
        }
    }
}

const NUMERIC: [DType; 4] = [DType::F32, DType::F64, DType::I32, DType::I64];

fn build(
    label: String,
    f: impl FnOnce(&Graph) -> Result<Vec<Output>, GraphError>,
    g: Graph,
) -> Option<Case> {
    f(&g).ok().map(|fetches| (label, g, fetches))
}

fn name_check(device: &dyn Device, failures: &mut Vec<String>) {
    let name = device.name();
    match DeviceName::parse(&name.to_string()) {
        Ok(parsed) if &parsed == name => {}
        Ok(parsed) => failures.push(format!("name {name} parses back as {parsed}")),
        Err(e) => failures.push(format!("name {name} does not parse: {e}")),
    }
    if device.device_type() != name.device_type {
        failures.push(format!(
            "device_type() {:?} differs from the name's type {:?}",
            device.device_type(),
            name.device_type
        ));
    }
    if !name.to_spec().matches(name) {
        failures.push(format!("name {name} does not match its own spec"));
    }
}

/// Runs the conformance suite on `device`, whose kernels must already be registered in
/// the process-wide registry. Returns what was covered, or every failure.
///
/// # Errors
/// [`ConformanceError`] listing every check that failed.
pub fn check_device(device: Arc<dyn Device>) -> Result<ConformanceReport, ConformanceError> {
    check_device_with(&KernelRegistry::global(), device)
}

/// [`check_device`] with the kernels of `kernels` (the suite adds its own test op to it).
///
/// # Errors
/// [`ConformanceError`] listing every check that failed.
pub fn check_device_with(
    kernels: &KernelRegistry,
    device: Arc<dyn Device>,
) -> Result<ConformanceReport, ConformanceError> {
    register_delay();
    // The same capture-less factory as the global registry's: idempotent.
    let _ = kernels.register(KernelKey::new(DELAY_OP, ANY_DEVICE), delay_factory);
    let mut failures = Vec::new();
    name_check(device.as_ref(), &mut failures);
    let mut suite = Suite {
        kernels: kernels.clone(),
        pinned: device.name().to_string(),
        ops: kernels.kernels_for_device(device.as_ref()),
        report: ConformanceReport {
            device: device.name().to_string(),
            ..Default::default()
        },
        device,
        failures,
    };
    results(&mut suite);
    errors(&mut suite);
    async_and_concurrency(&mut suite);
    if suite.failures.is_empty() {
        Ok(suite.report)
    } else {
        Err(ConformanceError {
            device: suite.report.device,
            failures: suite.failures,
        })
    }
}

fn results(s: &mut Suite) {
    let binary_shapes: [(&[usize], &[usize]); 5] = [
        (&[], &[]),
        (&[7], &[7]),
        (&[2, 3], &[3]),
        (&[3, 1], &[1, 4]),
        (&[1], &[5]),
    ];
    for op in ["Add", "Sub", "Mul", "Div"] {
        if !s.has(op) {
            continue;
        }
        s.cover(op);
        for dt in NUMERIC {
            for (sa, sb) in binary_shapes {
                let label = format!("{op} {dt} {sa:?} {sb:?}");
                let case = build(
                    label,
                    |g| {
                        let a = g.constant(values(dt, sa, 1, false))?;
                        let b = g.constant(values(dt, sb, 2, op == "Div"))?;
                        Ok(vec![g.op(op).input(a).input(b).build_output()?])
                    },
                    s.graph(),
                );
                if let Some(c) = case {
                    s.check(c);
                }
            }
        }
    }
    for op in ["Neg", "Square", "Sqrt", "Exp", "Relu"] {
        if !s.has(op) {
            continue;
        }
        s.cover(op);
        for dt in NUMERIC {
            for shape in [&[][..], &[1], &[7], &[2, 3]] {
                let positive = op == "Sqrt";
                let label = format!("{op} {dt} {shape:?}");
                let case = build(
                    label,
                    |g| {
                        let a = g.constant(values(dt, shape, 3, positive))?;
                        Ok(vec![g.op(op).input(a).build_output()?])
                    },
                    s.graph(),
                );
                if let Some(c) = case {
                    s.check(c);
                }
            }
        }
    }
    if s.has("MatMul") {
        s.cover("MatMul");
        for dt in NUMERIC {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (m, k, n) in [(1, 1, 1), (2, 3, 4), (7, 5, 3)] {
                    let sa = if ta { [k, m] } else { [m, k] };
                    let sb = if tb { [n, k] } else { [k, n] };
                    let label = format!("MatMul {dt} {sa:?}x{sb:?} ta={ta} tb={tb}");
                    let case = build(
                        label,
                        |g| {
                            let a = g.constant(values(dt, &sa, 4, false))?;
                            let b = g.constant(values(dt, &sb, 5, false))?;
                            Ok(vec![g.matmul_t(a, b, ta, tb)?])
                        },
                        s.graph(),
                    );
                    if let Some(c) = case {
                        s.check(c);
                    }
                }
            }
        }
    }
    for op in ["Sum", "Mean"] {
        if !s.has(op) {
            continue;
        }
        s.cover(op);
        for dt in NUMERIC {
            for axis in [None, Some(0), Some(1), Some(-1)] {
                for keep in [false, true] {
                    let label = format!("{op} {dt} [3, 4] axis={axis:?} keep_dims={keep}");
                    let case = build(
                        label,
                        |g| {
                            let a = g.constant(values(dt, &[3, 4], 6, false))?;
                            let r = if op == "Sum" {
                                g.sum(a, axis, keep)?
                            } else {
                                g.mean(a, axis, keep)?
                            };
                            Ok(vec![r])
                        },
                        s.graph(),
                    );
                    if let Some(c) = case {
                        s.check(c);
                    }
                }
            }
        }
    }
    let all_dtypes = DType::ALL;
    for dt in all_dtypes {
        if s.has("Reshape") {
            s.cover("Reshape");
            let case = build(
                format!("Reshape {dt} [2, 6] -> [3, -1]"),
                |g| {
                    let a = g.constant(values(dt, &[2, 6], 7, false))?;
                    Ok(vec![g.reshape(a, &[3, -1])?])
                },
                s.graph(),
            );
            if let Some(c) = case {
                s.check(c);
            }
        }
        if s.has("Cast") {
            s.cover("Cast");
            for to in all_dtypes {
                let case = build(
                    format!("Cast {dt} -> {to}"),
                    |g| {
                        let a = g.constant(values(dt, &[5], 8, false))?;
                        Ok(vec![g.cast(a, to)?])
                    },
                    s.graph(),
                );
                if let Some(c) = case {
                    s.check(c);
                }
            }
        }
        for op in ["Identity", "ZerosLike", "PlaceholderWithDefault"] {
            if s.has(op) {
                s.cover(op);
                let case = build(
                    format!("{op} {dt} [2, 2]"),
                    |g| {
                        let a = g.constant(values(dt, &[2, 2], 9, false))?;
                        Ok(vec![g.op(op).input(a).build_output()?])
                    },
                    s.graph(),
                );
                if let Some(c) = case {
                    s.check(c);
                }
            }
        }
        if s.has("Fill") {
            s.cover("Fill");
            let case = build(
                format!("Fill {dt} [2, 3]"),
                |g| {
                    let v = g.constant(values(dt, &[], 10, true))?;
                    Ok(vec![g.fill(&[2, 3], v)?])
                },
                s.graph(),
            );
            if let Some(c) = case {
                s.check(c);
            }
        }
        if s.has("Const") {
            s.cover("Const");
            let case = build(
                format!("Const {dt} [3]"),
                |g| Ok(vec![g.constant(values(dt, &[3], 11, false))?]),
                s.graph(),
            );
            if let Some(c) = case {
                s.check(c);
            }
        }
    }
}

/// Kernels reject bad operands. A graph rejects shapes it knows to be bad at build, so
/// the first operand is a placeholder of unknown shape, fed.
fn errors(s: &mut Suite) {
    let shape_cases: [(&str, &[usize], &[usize], &str); 2] = [
        ("MatMul", &[2, 3], &[4, 2], "MatMul [2, 3] x [4, 2]"),
        ("Add", &[3], &[4], "Add [3] + [4]"),
    ];
    for (op, sa, sb, label) in shape_cases {
        if !(s.has(op) && s.has("Const")) {
            continue;
        }
        let g = s.graph();
        if let (Ok(a), Ok(b)) = (
            g.placeholder(DType::F32, None),
            g.constant(values(DType::F32, sb, 1, false)),
        ) {
            if let Ok(m) = g.op(op).input(a).input(b).build_output() {
                let feed = (a, values(DType::F32, sa, 1, false));
                s.check_rejects(label, &g, m, &[feed]);
            }
        }
    }
    if s.has("Div") && s.has("Const") {
        let g = s.graph();
        if let (Ok(a), Ok(b)) = (
            g.constant(Tensor::scalar(1i32)),
            g.constant(Tensor::scalar(0i32)),
        ) {
            if let Ok(m) = g.div(a, b) {
                s.check_rejects("Div i32 by zero", &g, m, &[]);
            }
        }
    }
}

/// A chain alternating the device's ops with the testkit's asynchronous delay, run from
/// several threads at once.
fn async_and_concurrency(s: &mut Suite) {
    let Some(op) = ["Add", "Mul", "Sub"].into_iter().find(|o| s.has(o)) else {
        return;
    };
    if !s.has("Const") {
        return;
    }
    let g = s.graph();
    let build_chain = || -> Result<Output, GraphError> {
        let mut x = g.constant(values(DType::F32, &[4], 1, true))?;
        let one = g.constant(values(DType::F32, &[4], 2, true))?;
        for i in 0..6 {
            x = g.op(op).input(x).input(one).build_output()?;
            if i % 2 == 0 {
                x = g.op(DELAY_OP).input(x).build_output()?;
            }
        }
        Ok(x)
    };
    let Ok(fetch) = build_chain() else {
        s.failures.push("could not build the async chain".into());
        return;
    };
    let expected = match evaluate_without_delay(&g, fetch) {
        Some(e) => e,
        None => return,
    };
    let Some(session) = s.session(&g) else { return };
    let session = Arc::new(session);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let session = Arc::clone(&session);
            let expected = expected.clone();
            std::thread::spawn(move || -> Result<(), String> {
                for _ in 0..25 {
                    let out = session.run(&[], &[fetch], &[]).map_err(|e| e.to_string())?;
                    assert_close(&out[0], &expected, 1e-5, 1e-6)?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        match t.join() {
            Ok(Ok(())) => s.report.checks += 1,
            Ok(Err(e)) => s
                .failures
                .push(format!("async chain of {op} from 4 threads: {e}")),
            Err(_) => s
                .failures
                .push(format!("async chain of {op}: a thread panicked")),
        }
    }
}

/// The delay op is the identity; the reference does not know it, so feed around it.
fn evaluate_without_delay(g: &Graph, fetch: Output) -> Option<Tensor> {
    let mut feeds: Vec<(Output, Tensor)> = Vec::new();
    for node in g.nodes() {
        if node.op == DELAY_OP {
            let id = g.node_by_name(&node.name)?;
            let v = evaluate(g, &feeds, &[node.inputs[0]]).ok()?.pop()?;
            feeds.push((id.output(0), v));
        }
    }
    evaluate(g, &feeds, &[fetch]).ok()?.pop()
}
