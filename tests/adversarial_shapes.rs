//! Adversarial shapes: the shape and tensor constructors, then every standard op on the CPU
//! and on Vulkan (Mesa's lavapipe here), with dimensions drawn from
//! {0, 1, 2, 2^31, 2^32, 2^62, usize::MAX}. Each case gives an error or the right answer
//! (the reference interpreter's), never a panic, an abort or a signal: a panicking kernel
//! would surface as `SessionError::Panicked`, an abort or a segfault would kill this test
//! process. `scripts/check` also runs it in a release build, where overflow checks are off.
//!
//! Devices run under a small memory limit ([`LIMIT`]), so an honest request for gigabytes
//! fails at once instead of paging a CI machine to death.

use std::sync::{Arc, OnceLock};

use magpie::core::testkit::reference::{assert_close, evaluate};
use magpie::core::KernelError;
use magpie::cpu::CpuDevice;
use magpie::scheduler::ThreadPool;
use magpie::tensor::{IntoShape, MemoryLimit, ShapeError};
use magpie::{DType, Device, Graph, Output, Session, SessionError, SessionOptions, Shape, Tensor};
use proptest::prelude::*;

/// The dimensions every case draws from.
const DIMS: [usize; 7] = [0, 1, 2, 1 << 31, 1 << 32, 1 << 62, usize::MAX];
/// Bytes one tensor may take on the test devices.
const LIMIT: u64 = 64 << 20;

fn dims() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop::sample::select(DIMS.to_vec()), 0..4)
}

/// The element count of `dims` if it is a valid shape (computed without `Shape`).
fn expected_count(dims: &[usize]) -> Option<usize> {
    let nonzero: u128 = dims
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1u128, |acc, &d| acc.checked_mul(d as u128))?;
    if nonzero > isize::MAX as u128 {
        return None;
    }
    Some(if dims.contains(&0) {
        0
    } else {
        nonzero as usize
    })
}

/// Attribute dimensions: beyond `i64::MAX` saturates (as the graph API does).
fn attr_dims(dims: &[usize]) -> Vec<i64> {
    dims.iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn shapes_and_tensors_are_right_or_refused(a in dims(), b in dims()) {
        let count = expected_count(&a);
        match Shape::new(&a) {
            Ok(s) => {
                prop_assert_eq!(Some(s.num_elements()), count);
                // Strides never overflow: each is a product of later dimensions.
                let strides = s.strides();
                for (i, st) in strides.iter().enumerate() {
                    let want: u128 = a[i + 1..].iter().map(|&d| d as u128).product();
                    prop_assert_eq!(*st as u128, want);
                }
            }
            Err(e) => {
                prop_assert_eq!(count, None);
                prop_assert_eq!(e, ShapeError::TooManyElements { dims: a.clone() });
            }
        }
        prop_assert_eq!(a.clone().into_shape().is_ok(), count.is_some());

        let memory = MemoryLimit::new("/device:TEST:0", Some(LIMIT));
        match Tensor::zeros_in(DType::F32, a.as_slice(), &memory) {
            Ok(t) => {
                prop_assert!(count.is_some_and(|n| n as u128 * 4 <= u128::from(LIMIT)));
                prop_assert_eq!(t.dims(), a.as_slice());
                prop_assert!(t.as_slice::<f32>().unwrap().iter().all(|&x| x == 0.0));
            }
            Err(e) => prop_assert!(count.is_none_or(|n| n as u128 * 4 > u128::from(LIMIT)), "{}", e),
        }

        let four = Tensor::from_vec([4], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        prop_assert_eq!(four.reshape(a.as_slice()).is_ok(), count == Some(4));
        let filled = Tensor::from_vec(a.as_slice(), vec![0i32; 4]);
        prop_assert_eq!(filled.is_ok(), count == Some(4));

        if let (Ok(sa), Ok(sb)) = (Shape::new(&a), Shape::new(&b)) {
            if let Ok(out) = Shape::broadcast(&sa, &sb) {
                prop_assert_eq!(Some(out.num_elements()), expected_count(out.dims()));
                prop_assert_eq!(out.rank(), a.len().max(b.len()));
            }
        }
    }
}

/// Where a case's tensors come from.
#[derive(Debug, Clone)]
enum Source {
    /// `Fill(dims, 1.5)`.
    Fill(Vec<usize>),
    /// `RandomUniform(dims)`.
    Random(Vec<usize>),
    /// The 4-element constant `[1, 2, 3, 4]` reshaped to `dims`.
    Reshape(Vec<usize>),
    /// A constant of `dims` holding no elements (when `dims` is a valid empty shape),
    /// else a scalar.
    Empty(Vec<usize>),
}

/// The op under test, applied to one or two sources.
#[derive(Debug, Clone)]
enum Op {
    MatMul(bool, bool),
    Reduce {
        mean: bool,
        axis: Option<i64>,
        keep: bool,
    },
    Reshape(Vec<i64>),
    Binary(&'static str),
    Unary(&'static str),
    Cast(DType),
    ZerosLike,
    Identity,
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        dims().prop_map(Source::Fill),
        dims().prop_map(Source::Random),
        dims().prop_map(Source::Reshape),
        dims().prop_map(Source::Empty),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Op::MatMul(a, b)),
        (
            any::<bool>(),
            prop::option::of(prop::sample::select(vec![0i64, 1, -1, 2, 7])),
            any::<bool>()
        )
            .prop_map(|(mean, axis, keep)| Op::Reduce { mean, axis, keep }),
        (dims(), any::<bool>()).prop_map(|(d, infer)| {
            let mut d = attr_dims(&d);
            if infer && !d.is_empty() {
                d[0] = -1;
            }
            Op::Reshape(d)
        }),
        prop::sample::select(vec!["Add", "Sub", "Mul", "Div"]).prop_map(Op::Binary),
        prop::sample::select(vec!["Neg", "Square", "Relu", "Sqrt", "Exp"]).prop_map(Op::Unary),
        prop::sample::select(vec![DType::F64, DType::I32, DType::Bool]).prop_map(Op::Cast),
        Just(Op::ZerosLike),
        Just(Op::Identity),
    ]
}

fn make_source(g: &Graph, s: &Source) -> Result<Output, magpie::GraphError> {
    match s {
        Source::Fill(d) => g.fill(d, g.constant(1.5f32)?),
        Source::Random(d) => g.random_uniform(d, DType::F32, 7),
        Source::Reshape(d) => {
            let four = g.constant(vec![1.0f32, 2.0, 3.0, 4.0])?;
            g.reshape(four, &attr_dims(d))
        }
        Source::Empty(d) => match Tensor::from_vec(d.as_slice(), Vec::<f32>::new()) {
            Ok(t) => g.constant(t),
            Err(_) => g.constant(0.5f32),
        },
    }
}

fn make_op(g: &Graph, op: &Op, x: Output, y: Output) -> Result<Output, magpie::GraphError> {
    let g = g.with_name("victim");
    match op {
        Op::MatMul(ta, tb) => g.matmul_t(x, y, *ta, *tb),
        Op::Reduce {
            mean: true,
            axis,
            keep,
        } => g.mean(x, *axis, *keep),
        Op::Reduce {
            mean: false,
            axis,
            keep,
        } => g.sum(x, *axis, *keep),
        Op::Reshape(d) => g.reshape(x, d),
        Op::Binary(name) | Op::Unary(name) if matches!(op, Op::Binary(_)) => {
            g.op(name).input(x).input(y).build_output()
        }
        Op::Binary(name) | Op::Unary(name) => g.op(name).input(x).build_output(),
        Op::Cast(dtype) => g.cast(x, *dtype),
        Op::ZerosLike => g.zeros_like(x),
        Op::Identity => g.identity(x),
    }
}

/// One pool for every session of this file (sessions are made per case).
fn pool() -> ThreadPool {
    static POOL: OnceLock<ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| ThreadPool::new(2).expect("a pool"))
        .clone()
}

/// The CPU under [`LIMIT`].
fn cpu() -> Arc<dyn Device> {
    magpie::cpu::register().expect("the CPU kernels register");
    Arc::new(CpuDevice::new(0).with_memory_limit(Some(LIMIT)))
}

/// The first GPU under [`LIMIT`], if this machine has one.
fn gpu() -> Option<Arc<dyn Device>> {
    static GPU: OnceLock<Option<Arc<dyn Device>>> = OnceLock::new();
    GPU.get_or_init(|| {
        magpie::vulkan::register().expect("the Vulkan kernels register");
        let gpu = magpie::vulkan::discover().ok()?.into_iter().next()?;
        gpu.set_memory_limit(LIMIT);
        Some(gpu as Arc<dyn Device>)
    })
    .clone()
}

/// Runs `x op y` on `devices` (the op and, when `pin_sources`, its sources pinned to
/// `device`): an error that is no panic and no internal error, or the reference's answer.
fn check(
    devices: Vec<Arc<dyn Device>>,
    device: &str,
    pin_sources: bool,
    (sx, sy, op): (Source, Source, Op),
) -> Result<(), TestCaseError> {
    let build = |sx: &Source, sy: &Source| {
        let g = Graph::new();
        let on = g.with_device(device).unwrap();
        let src = if pin_sources { &on } else { &g };
        let (x, y) = (make_source(src, sx)?, make_source(src, sy)?);
        let out = make_op(&on, &op, x, y)?;
        Ok::<_, magpie::GraphError>((g, out))
    };
    let Ok((g, out)) = build(&sx, &sy) else {
        return Ok(()); // refused at graph construction: an error, as it should be
    };
    let mut options = SessionOptions::with_devices(devices);
    options.pool = Some(pool());
    let result = Session::new(&g, options).and_then(|s| s.run(&[], &[out], &[]));
    match result {
        Ok(got) => {
            let deterministic = |s: &Source| match s {
                Source::Random(d) => Source::Fill(d.clone()),
                other => other.clone(),
            };
            if matches!(sx, Source::Random(_)) || matches!(sy, Source::Random(_)) {
                // The reference does not replicate the random stream: the same graph with
                // fills in its place must give the same shape.
                let (g2, out2) = build(&deterministic(&sx), &deterministic(&sy))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want = evaluate(&g2, &[], &[out2])
                    .map_err(|e| TestCaseError::fail(format!("the reference failed: {e}")))?;
                prop_assert_eq!(got[0].shape(), want[0].shape());
                return Ok(());
            }
            let want = evaluate(&g, &[], &[out]);
            let want = want.map_err(|e| {
                TestCaseError::fail(format!(
                    "the session answered {:?}, the reference failed: {e}",
                    got[0]
                ))
            })?;
            if let Err(e) = assert_close(&got[0], &want[0], 1e-4, 1e-4) {
                return Err(TestCaseError::fail(format!(
                    "{sx:?} {op:?} {sy:?} on {device}: {e}"
                )));
            }
        }
        Err(e) => {
            prop_assert!(
                !matches!(e, SessionError::Panicked { .. }),
                "a panic: {}",
                e
            );
            let internal = matches!(e.kernel_error(), Some(KernelError::Internal(_)));
            prop_assert!(!internal, "an internal error: {}", e);
            if let SessionError::Kernel { node, .. } = &e {
                prop_assert!(e.to_string().contains(node.as_str()), "{}", e);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_op_on_the_cpu_answers_or_refuses(sx in source(), sy in source(), op in op()) {
        check(vec![cpu()], "/device:CPU:0", false, (sx, sy, op))?;
    }

    #[test]
    fn every_op_on_vulkan_answers_or_refuses(
        sx in source(),
        sy in source(),
        op in op(),
        pin_sources in any::<bool>(),
    ) {
        let Some(gpu) = gpu() else {
            eprintln!("SKIPPED: no Vulkan device");
            return Ok(());
        };
        check(vec![gpu, cpu()], "/device:GPU:0", pin_sources, (sx, sy, op))?;
    }
}

#[test]
fn the_issues_graphs_are_errors_naming_the_node() {
    let g = Graph::new();
    let one = g.constant(1.0f32).unwrap();
    // Shapes whose element count does not fit, or that cannot hold the input, are refused
    // when the graph is built (as TensorFlow 1.x does), naming the node.
    let e = g
        .with_name("big")
        .fill(&[1 << 32, 1 << 32], one)
        .unwrap_err();
    assert!(
        e.to_string().contains("\"big\"") && e.to_string().contains("is too large"),
        "{e}"
    );
    let four = g.constant(vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let e = g
        .with_name("wrapped")
        .reshape(four, &[4, (1 << 62) + 1])
        .unwrap_err();
    assert!(
        e.to_string().contains("\"wrapped\"") && e.to_string().contains("cannot reshape"),
        "{e}"
    );
    // Shapes that are valid but too large for the device fail at run time, naming the
    // node, the device and the bytes.
    let huge = g.with_name("huge").fill(&[1 << 33], one).unwrap();
    let random = g
        .with_name("random")
        .random_uniform(&[1 << 33], DType::F32, 1)
        .unwrap();
    let mut options = SessionOptions::with_devices(vec![cpu()]);
    options.pool = Some(pool());
    let s = Session::new(&g, options).unwrap();
    for (fetch, node, detail) in [
        (huge, "huge", "34359738368 bytes"),
        (random, "random", "34359738368 bytes"),
    ] {
        let e = s.run(&[], &[fetch], &[]).unwrap_err();
        let message = e.to_string();
        assert!(message.contains(&format!("{node:?}")), "{message}");
        assert!(message.contains(detail), "{message}");
    }
    let e = s.run(&[], &[huge], &[]).unwrap_err();
    assert!(
        matches!(e.kernel_error(), Some(KernelError::ResourceExhausted(_))),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&format!("memory limit of {LIMIT} bytes")),
        "{e}"
    );
    // And the session keeps serving.
    let m = g
        .constant(Tensor::from_vec([2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap())
        .unwrap();
    let square = g.matmul(m, m).unwrap();
    let got = s.run(&[], &[square], &[]).unwrap();
    assert_eq!(got[0].to_vec::<f32>().unwrap(), vec![7.0, 10.0, 15.0, 22.0]);
}
