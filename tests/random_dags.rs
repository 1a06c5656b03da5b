//! Property test: random DAGs of the standard op set, run by the work-stealing executor
//! on the CPU backend with 1, 2 and 4 workers and under every scheduling policy, give the
//! same results as the sequential reference interpreter.
//!
//! Every tensor of a generated DAG has one dtype and a shape from a set in which any two
//! shapes broadcast to a member of the set, so every generated binary op is valid. The
//! fed placeholder's shape is declared unknown, partly known or known; the shape inferred
//! for every fetch at construction fits the shape it has when run (and is that shape when
//! the placeholder's is known).

use magpie::core::testkit::reference::{assert_close, evaluate};
use magpie::session::SchedulingPolicy;
use magpie::{DType, Graph, Output, PartialShape, Session, Tensor};
use proptest::prelude::*;

/// Shapes that broadcast among themselves into the set: [], [3], [1,3], [2,1], [2,3].
const SHAPES: [&[usize]; 5] = [&[], &[3], &[1, 3], &[2, 1], &[2, 3]];

#[derive(Clone, Debug)]
enum Step {
    Const {
        shape: usize,
        seed: i64,
    },
    Unary {
        op: &'static str,
        x: usize,
    },
    Binary {
        op: &'static str,
        x: usize,
        y: usize,
    },
    MatMul {
        seed: i64,
    },
    Reduce {
        op: &'static str,
        x: usize,
        keep_axis: Option<i64>,
    },
    CastRoundTrip {
        x: usize,
    },
    ZerosLike {
        x: usize,
    },
    Control {
        x: usize,
        after: usize,
    },
}

fn step_strategy(float: bool) -> impl Strategy<Value = Step> {
    let unary: Vec<&'static str> = vec!["Neg", "Relu", "Identity", "Square"];
    let binary: Vec<&'static str> = if float {
        vec!["Add", "Sub", "Mul", "Div"]
    } else {
        vec!["Add", "Sub", "Mul"]
    };
    prop_oneof![
        2 => (0..SHAPES.len(), -50i64..50).prop_map(|(shape, seed)| Step::Const { shape, seed }),
        3 => (proptest::sample::select(unary), any::<usize>())
            .prop_map(|(op, x)| Step::Unary { op, x }),
        4 => (proptest::sample::select(binary), any::<usize>(), any::<usize>())
            .prop_map(|(op, x, y)| Step::Binary { op, x, y }),
        1 => (-20i64..20).prop_map(|seed| Step::MatMul { seed }),
        1 => (proptest::sample::select(vec!["Sum", "Mean"]), any::<usize>(),
              proptest::option::of(0i64..2))
            .prop_map(|(op, x, keep_axis)| Step::Reduce { op, x, keep_axis }),
        1 => any::<usize>().prop_map(|x| Step::CastRoundTrip { x }),
        1 => any::<usize>().prop_map(|x| Step::ZerosLike { x }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(x, after)| Step::Control { x, after }),
    ]
}

/// A shape from the fixed table (all small).
fn shape(dims: &[usize]) -> magpie::Shape {
    magpie::Shape::new(dims).expect("a table shape fits")
}

fn constant(dtype: DType, shape: &[usize], seed: i64) -> Tensor {
    let n: usize = shape.iter().product();
    let v = |i: usize| ((seed + i as i64 * 7) % 13) - 6;
    match dtype {
        DType::F32 => Tensor::from_vec(shape, (0..n).map(|i| v(i) as f32 * 0.5).collect()),
        DType::F64 => Tensor::from_vec(shape, (0..n).map(|i| v(i) as f64 * 0.25).collect()),
        DType::I32 => Tensor::from_vec(shape, (0..n).map(|i| v(i) as i32).collect()),
        _ => Tensor::from_vec(shape, (0..n).map(v).collect::<Vec<i64>>()),
    }
    .unwrap()
}

/// The fed placeholder's declared shape: unknown, `[?, 3]` or `[2, 3]`.
const DECLARED: [Option<&[i64]>; 3] = [None, Some(&[-1, 3]), Some(&[2, 3])];

/// Builds the DAG; returns the graph, its outputs with their shapes, and a feedable
/// placeholder (with its value) whose shape is declared as `DECLARED[declared]`.
fn build(dtype: DType, steps: &[Step], declared: usize) -> (Graph, Vec<Output>, (Output, Tensor)) {
    let g = Graph::new();
    let mut ph = g.op("Placeholder").attr("dtype", dtype);
    if let Some(dims) = DECLARED[declared] {
        ph = ph.attr("shape", dims.to_vec());
    }
    let ph = ph.build_output().unwrap();
    let fed = constant(dtype, &[2, 3], 3);
    let mut outs: Vec<(Output, usize)> =
        vec![(ph, 4), (g.constant(constant(dtype, &[3], 1)).unwrap(), 1)];
    let pick = |outs: &Vec<(Output, usize)>, i: usize| outs[i % outs.len()];
    for s in steps {
        let made = match s {
            Step::Const { shape, seed } => Some((
                g.constant(constant(dtype, SHAPES[*shape], *seed)).unwrap(),
                *shape,
            )),
            Step::Unary { op, x } => {
                let (x, sh) = pick(&outs, *x);
                Some((g.op(op).input(x).build_output().unwrap(), sh))
            }
            Step::Binary { op, x, y } => {
                let ((x, sx), (y, sy)) = (pick(&outs, *x), pick(&outs, *y));
                let out_shape =
                    magpie::Shape::broadcast(&shape(SHAPES[sx]), &shape(SHAPES[sy])).unwrap();
                let idx = SHAPES.iter().position(|s| *s == out_shape.dims()).unwrap();
                Some((g.op(op).input(x).input(y).build_output().unwrap(), idx))
            }
            Step::MatMul { seed } => {
                let a = g.constant(constant(dtype, &[2, 1], *seed)).unwrap();
                let b = g.constant(constant(dtype, &[1, 3], seed + 1)).unwrap();
                Some((g.matmul(a, b).unwrap(), 4))
            }
            Step::Reduce { op, x, keep_axis } => {
                let (x, sh) = pick(&outs, *x);
                let r = |axis, keep| {
                    if *op == "Sum" {
                        g.sum(x, axis, keep)
                    } else {
                        g.mean(x, axis, keep)
                    }
                };
                let kept = keep_axis
                    .filter(|_| SHAPES[sh].len() == 2)
                    .and_then(|axis| {
                        let mut dims = SHAPES[sh].to_vec();
                        dims[axis as usize] = 1;
                        SHAPES
                            .iter()
                            .position(|s| *s == dims.as_slice())
                            .map(|idx| (axis, idx))
                    });
                Some(match kept {
                    Some((axis, idx)) => (r(Some(axis), true).unwrap(), idx),
                    None => (r(None, false).unwrap(), 0),
                })
            }
            Step::CastRoundTrip { x } => {
                let (x, sh) = pick(&outs, *x);
                let other = if dtype == DType::I64 {
                    DType::F64
                } else {
                    DType::I64
                };
                let y = g.cast(x, other).unwrap();
                Some((g.cast(y, dtype).unwrap(), sh))
            }
            Step::ZerosLike { x } => {
                let (x, sh) = pick(&outs, *x);
                Some((g.zeros_like(x).unwrap(), sh))
            }
            Step::Control { x, after } => {
                let (x, sh) = pick(&outs, *x);
                let (after, _) = pick(&outs, *after);
                let y = g
                    .op("Identity")
                    .input(x)
                    .control_input(after)
                    .build_output()
                    .unwrap();
                Some((y, sh))
            }
        };
        if let Some(m) = made {
            outs.push(m);
        }
    }
    (g, outs.into_iter().map(|(o, _)| o).collect(), (ph, fed))
}

fn check(
    dtype: DType,
    steps: Vec<Step>,
    fetch_picks: Vec<usize>,
    declared: usize,
) -> Result<(), TestCaseError> {
    let (g, outs, feed) = build(dtype, &steps, declared);
    let mut fetches: Vec<Output> = fetch_picks.iter().map(|i| outs[i % outs.len()]).collect();
    fetches.push(*outs.last().unwrap());
    let feeds = [feed];
    let expected =
        evaluate(&g, &feeds, &fetches).map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (f, e) in fetches.iter().zip(&expected) {
        let inferred = g.shape_of(*f).unwrap();
        let fits = if DECLARED[declared] == Some(&[2, 3]) {
            inferred == PartialShape::from(e.shape())
        } else {
            inferred.is_compatible_with_shape(e.shape())
        };
        prop_assert!(
            fits,
            "{} inferred as {inferred}, but is {}",
            g.name_of(f.node),
            e.shape()
        );
    }
    let (rel, abs) = if dtype == DType::F32 {
        (1e-3, 1e-3)
    } else {
        (1e-9, 1e-9)
    };
    let policies = [
        SchedulingPolicy::DepthFirst,
        SchedulingPolicy::Fifo,
        SchedulingPolicy::CriticalPath,
        SchedulingPolicy::MemoryAware,
    ];
    for (k, workers) in [1, 2, 4, 1, 2, 4, 2, 2].into_iter().enumerate() {
        let policy = policies[k % policies.len()];
        let mut opts = magpie::local_options();
        opts.num_workers = Some(workers);
        opts.policy = policy;
        let s = Session::new(&g, opts).unwrap();
        for _ in 0..3 {
            let got = s
                .run(&feeds, &fetches, &[])
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (i, (a, e)) in got.iter().zip(&expected).enumerate() {
                assert_close(a, e, rel, abs).map_err(|m| {
                    TestCaseError::fail(format!(
                        "fetch {i} with {workers} workers under {policy:?}: {m}"
                    ))
                })?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn integer_dags_match_the_reference(
        wide in any::<bool>(),
        steps in proptest::collection::vec(step_strategy(false), 1..40),
        fetches in proptest::collection::vec(any::<usize>(), 0..4),
        declared in 0..DECLARED.len(),
    ) {
        check(if wide { DType::I64 } else { DType::I32 }, steps, fetches, declared)?;
    }

    #[test]
    fn float_dags_match_the_reference(
        wide in any::<bool>(),
        steps in proptest::collection::vec(step_strategy(true), 1..40),
        fetches in proptest::collection::vec(any::<usize>(), 0..4),
        declared in 0..DECLARED.len(),
    ) {
        check(if wide { DType::F64 } else { DType::F32 }, steps, fetches, declared)?;
    }
}
