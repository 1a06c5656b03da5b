//! Memory accounting, budgets and the memory-aware policy, on the CPU backend. Every
//! assertion is about bytes, never time.

use magpie::graph::Graph;
use magpie::session::SchedulingPolicy;
use magpie::{RunOptions, Session, SessionError, Tensor};

const N: usize = 100_000; // elements of a "large" tensor: 400 KB of f32
const BYTES: u64 = (N * 4) as u64;

/// A session whose tasks run on `workers` pool threads only: the caller of `run` does not
/// help (`helper_slots(0)`), so with one worker the policies' orders are exact.
fn session(g: &Graph, policy: SchedulingPolicy, workers: usize) -> Session {
    let mut opts = magpie::local_options();
    opts.pool = Some(
        magpie::scheduler::ThreadPool::builder()
            .num_workers(workers)
            .helper_slots(0)
            .build()
            .unwrap(),
    );
    opts.policy = policy;
    Session::new(g, opts).unwrap()
}

fn peak(s: &Session, fetch: magpie::Output) -> u64 {
    let opts = RunOptions {
        track_memory: true,
        ..RunOptions::default()
    };
    let out = s.run_with_options(&opts, &[], &[fetch], &[]).unwrap();
    let cpu = out
        .metadata
        .memory
        .iter()
        .find(|m| m.device.ends_with("/device:CPU:0"));
    cpu.expect("the CPU's memory is tracked").peak_bytes
}

/// The seed's example: a large tensor made early but needed only at the end of a long
/// chain.
fn seed_example() -> (Graph, magpie::Output) {
    let g = Graph::new();
    let value = g.constant(1.0f32).unwrap();
    let big = g
        .with_name("big")
        .op("Fill")
        .input(value)
        .attr("shape", vec![1, N as i64])
        .memory_heavy()
        .build_output()
        .unwrap();
    let one = g.constant(1.0f32).unwrap();
    let mut x = g.fill(&[N, 1], one).unwrap();
    for _ in 0..20 {
        x = g.add(x, one).unwrap();
    }
    let y = g.matmul(big, x).unwrap(); // [1, N] x [N, 1] -> [1, 1]
    (g, y)
}

#[test]
fn memory_aware_policy_lowers_the_peak_of_the_seed_example() {
    let (g, y) = seed_example();
    let aware = session(&g, SchedulingPolicy::MemoryAware, 1);
    let aware_peak = peak(&aware, y);
    // Memory-aware: the big tensor is made once the chain has finished.
    assert!(
        aware_peak <= 2 * BYTES + 1024,
        "memory-aware peak {aware_peak}"
    );
    // FIFO (the comparison) and depth-first make it early: it lives through the
    // chain, whose steps hold an input and an output at once.
    for policy in [SchedulingPolicy::Fifo, SchedulingPolicy::DepthFirst] {
        let eager = session(&g, policy, 1);
        assert_eq!(
            aware.run(&[], &[y], &[]).unwrap()[0],
            eager.run(&[], &[y], &[]).unwrap()[0]
        );
        let eager_peak = peak(&eager, y);
        assert!(eager_peak >= 3 * BYTES, "{policy:?} peak {eager_peak}");
        assert!(aware_peak < eager_peak, "{policy:?} peak {eager_peak}");
    }
}

#[test]
fn memory_aware_policy_matches_results_with_more_workers() {
    let (g, y) = seed_example();
    let aware = session(&g, SchedulingPolicy::MemoryAware, 2);
    let v = aware.run(&[], &[y], &[]).unwrap();
    assert_eq!(f32::try_from(&v[0]).unwrap(), (21 * N) as f32);
}

fn budget_options(workers: usize, budget: u64) -> magpie::SessionOptions {
    let mut opts = magpie::local_options();
    opts.num_workers = Some(workers);
    opts.memory_budgets = vec![("/device:CPU:0".into(), budget)];
    opts
}

/// Three large fills, each reduced to a scalar, summed.
fn three_fills(g: &Graph) -> magpie::Output {
    let one = g.constant(1.0f32).unwrap();
    let mut total = g.constant(0.0f32).unwrap();
    for i in 0..3 {
        let big = g
            .with_name(&format!("fill{i}"))
            .op("Fill")
            .input(one)
            .attr("shape", vec![N as i64])
            .declare_output_bytes(BYTES)
            .build_output()
            .unwrap();
        let s = g.sum(big, None, false).unwrap();
        total = g.add(total, s).unwrap();
    }
    total
}

#[test]
fn a_budget_holds_ops_back_until_memory_is_freed() {
    let g = Graph::new();
    let total = three_fills(&g);
    let budget = 2 * BYTES + 512;
    let s = Session::new(&g, budget_options(2, budget)).unwrap();
    for _ in 0..20 {
        let out = s
            .run_with_options(&RunOptions::default(), &[], &[total], &[])
            .unwrap();
        assert_eq!(f32::try_from(&out.tensors[0]).unwrap(), (3 * N) as f32);
        let m = out
            .metadata
            .memory
            .iter()
            .find(|m| m.device.ends_with("CPU:0"))
            .unwrap();
        assert_eq!(m.budget, Some(budget));
        assert!(
            m.peak_bytes <= budget,
            "peak {} over budget {budget}",
            m.peak_bytes
        );
    }
}

#[test]
fn a_budget_that_can_never_fit_fails_the_step_instead_of_hanging() {
    let g = Graph::new();
    let one = g.constant(1.0f32).unwrap();
    let mk = |name: &str| {
        g.with_name(name)
            .op("Fill")
            .input(one)
            .attr("shape", vec![N as i64])
            .declare_output_bytes(BYTES)
            .build_output()
            .unwrap()
    };
    let (a, b) = (mk("a"), mk("b"));
    let both = g.add(a, b).unwrap();
    let s = Session::new(&g, budget_options(2, BYTES + 100)).unwrap();
    let err = s.run(&[], &[both], &[]).unwrap_err();
    match &err {
        SessionError::MemoryBudgetExceeded {
            node,
            device,
            budget,
            needed,
            ..
        } => {
            assert!(node == "a" || node == "b", "{err}");
            assert!(device.ends_with("/device:CPU:0"));
            assert_eq!((*budget, *needed), (BYTES + 100, BYTES));
        }
        other => panic!("expected a budget error, got {other}"),
    }
    assert!(
        err.to_string().contains("memory budget is 400100 bytes"),
        "{err}"
    );
    // The session still serves steps that fit.
    assert_eq!(s.run(&[], &[one], &[]).unwrap()[0], Tensor::scalar(1.0f32));
}

#[test]
fn an_op_declaring_more_than_the_budget_is_refused_before_it_runs() {
    let g = Graph::new();
    let one = g.constant(1.0f32).unwrap();
    let huge = g
        .with_name("huge")
        .op("Fill")
        .input(one)
        .attr("shape", vec![N as i64])
        .declare_output_bytes(BYTES)
        .build_output()
        .unwrap();
    let s = Session::new(&g, budget_options(1, BYTES / 2)).unwrap();
    let err = s.run(&[], &[huge], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"huge\" (Fill) on /job:localhost/replica:0/task:0/device:CPU:0 needs 400000 \
         bytes, but the device's memory budget is 200000 bytes with 0 bytes live and nothing \
         left that could free memory"
    );
    let mut bad = magpie::local_options();
    bad.memory_budgets = vec![("/device:GPU:3".into(), 1)];
    let err = Session::new(&g, bad).unwrap_err();
    assert!(err.to_string().contains("matches no device"), "{err}");
}

#[test]
fn live_bytes_are_released_when_the_last_consumer_finishes() {
    let g = Graph::new();
    let one = g.constant(1.0f32).unwrap();
    let mut x = g.fill(&[N], one).unwrap();
    for _ in 0..10 {
        let y = g.add(x, one).unwrap();
        x = g.sum(y, Some(0), true).unwrap(); // [1]: the large tensor is consumed here
        x = g.fill(&[N], g.reshape(x, &[]).unwrap()).unwrap();
    }
    let s = session(&g, SchedulingPolicy::DepthFirst, 2);
    // Never more than a handful of large tensors at once, although 21 are made.
    assert!(peak(&s, x) <= 3 * BYTES, "tensors were not released");
}
