//! Intra-op parallelism through the scheduler: [`parallel_for`] lets one task (a large
//! kernel) spread its work over the pool's workers as a small nested run, instead of
//! starting threads of its own that would compete with the workers for the cores.
//!
//! # Guarantees
//!
//! - `parallel_for(n, f)` calls `f(i)` exactly once for every `i` in `0..n` and returns
//!   after the last call returned; the calls' writes are then visible to the caller.
//! - On a worker, the pieces are a nested run of the same pool: the calling worker runs
//!   pieces itself and idle workers steal the rest. A worker waiting for its pieces keeps
//!   running queued jobs (of any run), as any nested run does, so nothing deadlocks and
//!   no core is oversubscribed. On a caller of `execute` helping with its own run (see
//!   `helper`), the workers take every piece and the caller blocks until they are done.
//! - On a worker of a pool with steal groups, every piece is bound to the caller's group
//!   ([`affinity`](super::affinity)): the pieces of a kernel pinned to a NUMA node run on
//!   that node's workers only.
//! - On any other thread, the calls run one after the other on that thread.
//! - A panic in `f` is caught on the thread that ran the piece and resumed on the caller
//!   once every piece is over (the message is kept; the payload type is not).
//!
//! # Behaviour at the time of writing
//!
//! A nested run costs a topology and a run state (a few allocations, ~1–2 µs): worth it
//! for pieces of tens of microseconds and more, which is the caller's choice of `n`.

use std::cell::Cell;
use std::convert::Infallible;
use std::ptr;
use std::sync::Arc;

use super::body::{DagBody, TaskContext, TaskOutcome};
use super::cancel::RunControl;
use super::error::RunError;
use super::job::Job;
use super::latch::Latch;
use super::run::RunState;
use super::topology::Topology;
use super::worker::WorkerCtx;

thread_local! {
    /// The context of the worker or helping caller running a task on this thread.
    static RUNNER: Cell<*const WorkerCtx> = const { Cell::new(ptr::null()) };
}

/// Marks the current thread as running tasks for `ctx` until dropped (restoring what was
/// there before, so that helping callers nest).
pub(crate) struct Enter {
    previous: *const WorkerCtx,
}

/// Makes [`parallel_for`] on this thread use `ctx`'s pool. `ctx` must outlive the
/// returned guard, which must be dropped on this thread.
pub(crate) fn enter(ctx: &WorkerCtx) -> Enter {
    Enter {
        previous: RUNNER.with(|r| r.replace(ctx)),
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        RUNNER.with(|r| r.set(self.previous));
    }
}

/// Calls `f(i)` for every `i` in `0..pieces`, spread over the workers of the pool running
/// the current task; sequentially on a thread that runs no task of a pool. See the module
/// docs for the guarantees.
pub fn parallel_for(pieces: usize, f: &(dyn Fn(usize) + Sync)) {
    let ptr = RUNNER.with(Cell::get);
    // SAFETY: `RUNNER` is set by `enter` to a context that outlives the guard, and the
    // guard clears it (restores the previous one) on this thread before the context goes
    // away; we read it on the thread that set it.
    let ctx = unsafe { ptr.as_ref() };
    match ctx {
        Some(w) if pieces > 1 && w.registry().num_workers() > 1 => nested(w, pieces, f),
        _ => (0..pieces).for_each(f),
    }
}

/// How many threads [`parallel_for`] called here can use at best: the workers of the
/// caller's steal group (or of the whole pool, for a pool without groups or a helping
/// caller); 1 on a thread that runs no task of a pool.
pub fn current_parallelism() -> usize {
    let ptr = RUNNER.with(Cell::get);
    // SAFETY: as in `parallel_for`.
    match unsafe { ptr.as_ref() } {
        None => 1,
        Some(w) => {
            let registry = w.registry();
            if w.is_worker() && registry.num_groups() > 1 {
                registry.steal_order().members(w.group() as usize).len()
            } else {
                registry.num_workers()
            }
        }
    }
}

/// The body of a `parallel_for` run: piece `i` is task `i`.
struct ForBody<'a>(&'a (dyn Fn(usize) + Sync));

impl DagBody for ForBody<'_> {
    type Error = Infallible;

    fn run(&self, task: u32, _cx: &TaskContext<'_>) -> Result<TaskOutcome<Infallible>, Infallible> {
        (self.0)(task as usize);
        Ok(TaskOutcome::Done)
    }
}

/// Runs the pieces as a nested run of `w`'s pool.
fn nested(w: &WorkerCtx, pieces: usize, f: &(dyn Fn(usize) + Sync)) {
    let Ok(count) = u32::try_from(pieces) else {
        return (0..pieces).for_each(f);
    };
    let registry = w.registry();
    let mut builder = Topology::builder(pieces);
    if w.is_worker() && registry.num_groups() > 1 {
        for t in 0..count {
            builder.set_group(t, w.group());
        }
    }
    // A topology without edges always builds; fall back to running in order otherwise.
    let Ok(topology) = builder.build() else {
        return (0..pieces).for_each(f);
    };
    let body = ForBody(f);
    let control = RunControl::default();
    let latch = Arc::new(if w.is_worker() {
        Latch::for_worker(Arc::clone(registry), w.index())
    } else {
        Latch::for_thread()
    });
    let workers = registry.num_workers();
    let state = RunState::new(&topology, &body, &control, workers, Arc::clone(&latch));
    let guard = AbortIfUnwinding;
    w.push(Job::Roots {
        run: state.header_ptr(),
        start: 0,
        end: count,
    });
    if w.is_worker() {
        w.wait_nested(&latch, None, &|_| {});
    } else {
        // A helping caller (the thread that called `execute`, one more than the pool's
        // workers) leaves the pieces to the workers, which steal them from its deque, and
        // blocks: running pieces too would put one thread more than the pool's size on
        // the cores for the whole op. A quiet caller (`execute_on_caller`) pushed the
        // pieces without waking anyone: it stops being quiet and wakes a worker, or the
        // pieces would wait in its deque with every worker asleep.
        w.stop_being_quiet();
        w.flush_debt();
        latch.wait(None, registry.spin_policy());
    }
    drop(guard);
    match state.into_result() {
        Ok(()) => {}
        Err(RunError::Panicked { message, .. }) => std::panic::resume_unwind(Box::new(message)),
        Err(other) => std::panic::resume_unwind(Box::new(format!("parallel_for: {other:?}"))),
    }
}

/// Aborts the process if dropped during unwinding: the run's state lives on this stack
/// and workers may still point at it.
struct AbortIfUnwinding;

impl Drop for AbortIfUnwinding {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("magpie scheduler: panic while a parallel_for run was in flight; aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{TaskGraph, ThreadPool};

    #[test]
    fn every_piece_runs_once_on_a_pool_and_in_order_elsewhere() {
        let pool = ThreadPool::new(2).unwrap();
        let hits: Vec<AtomicUsize> = (0..100).map(|_| AtomicUsize::new(0)).collect();
        let hits = &hits;
        let topology = Topology::builder(1).build().unwrap();
        struct One<'a>(&'a [AtomicUsize]);
        impl DagBody for One<'_> {
            type Error = Infallible;
            fn run(
                &self,
                _: u32,
                _: &TaskContext<'_>,
            ) -> Result<TaskOutcome<Infallible>, Infallible> {
                assert_eq!(current_parallelism(), 2);
                parallel_for(100, &|i| {
                    self.0[i].fetch_add(1, Ordering::Relaxed);
                });
                Ok(TaskOutcome::Done)
            }
        }
        pool.execute(&topology, &One(hits), &RunControl::default())
            .unwrap();
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        // Outside a pool: in order, on this thread.
        assert_eq!(current_parallelism(), 1);
        let order = crate::sync::plain::Mutex::new(Vec::new());
        parallel_for(5, &|i| order.lock().push(i));
        assert_eq!(*order.lock(), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_quiet_callers_pieces_are_run_by_workers_it_wakes() {
        // `execute_on_caller` pushes without waking anyone; a task of its run that calls
        // `parallel_for` leaves the pieces to the workers and blocks, so it must wake
        // them (this hung with both workers asleep). The run is on another thread so a
        // regression fails here instead of hanging the test binary.
        let pool = Arc::new(
            ThreadPool::builder()
                .num_workers(2)
                .idle_spin(crate::IdleSpin::OFF)
                .build()
                .unwrap(),
        );
        struct Wide;
        impl DagBody for Wide {
            type Error = Infallible;
            fn run(
                &self,
                _: u32,
                _: &TaskContext<'_>,
            ) -> Result<TaskOutcome<Infallible>, Infallible> {
                let hits: Vec<AtomicUsize> = (0..64).map(|_| AtomicUsize::new(0)).collect();
                parallel_for(64, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                Ok(TaskOutcome::Done)
            }
        }
        let (done, finished) = std::sync::mpsc::channel();
        let runner = Arc::clone(&pool);
        std::thread::spawn(move || {
            let topology = Topology::builder(1).build().unwrap();
            for _ in 0..5 {
                // Give the workers time to fall asleep (idle spin is off), so the pieces'
                // push finds them asleep.
                std::thread::sleep(std::time::Duration::from_millis(20));
                runner
                    .execute_on_caller(&topology, &Wide, &RunControl::default())
                    .unwrap();
            }
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the quiet caller's parallel_for pieces were never run");
    }

    #[test]
    fn a_panicking_piece_fails_the_calling_task() {
        let pool = ThreadPool::new(2).unwrap();
        let mut g = TaskGraph::new();
        g.add(|| parallel_for(8, &|i| assert!(i != 5, "piece {i} failed")));
        match pool.run(&g) {
            Err(RunError::Panicked { message, .. }) => {
                assert!(message.contains("piece 5 failed"), "{message}")
            }
            other => panic!("expected a panic, got {other:?}"),
        }
        // The pool keeps serving.
        let mut g = TaskGraph::new();
        g.add(|| parallel_for(4, &|_| {}));
        pool.run(&g).unwrap();
    }
}
