//! [`StepThreads`]: the threads partition steps run on. A worker's local session blocks
//! its caller until the step ends, so each running partition step needs a thread of its
//! own; this keeps finished ones for the next steps instead of starting a thread per
//! step.
//!
//! # Protocol
//!
//! Every job handed to [`StepThreads::spawn`] gets a thread at once, never a place in a
//! line behind a running step (a step can wait for another partition of the same step,
//! so queueing one behind another could deadlock): the job goes into the queue together
//! with either a *token* for one idle thread, or a new thread. An idle thread waits on
//! the condition variable; it takes a job only when it can take a token, and exits when
//! it has waited [`IDLE_TIMEOUT`] with no token. So the queue never holds more jobs than
//! there are tokens plus new threads that have not yet taken theirs, and every job is
//! taken by a thread that was idle or new. Everything is under one mutex (a few
//! operations per step, next to a step's microseconds).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// How long a finished step thread waits for another step before it exits.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    /// Jobs promised to idle threads (each taken by exactly one of them).
    tokens: usize,
    /// Threads alive.
    threads: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// A growing set of reusable threads, each running one job at a time.
#[derive(Clone, Default)]
pub(crate) struct StepThreads {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StepThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.state.lock();
        f.debug_struct("StepThreads")
            .field("threads", &s.threads)
            .field("idle", &s.idle)
            .finish()
    }
}

impl StepThreads {
    /// Runs `job` on an idle thread, or on a new one named `name` if none is idle.
    pub(crate) fn spawn(
        &self,
        name: String,
        job: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let mut s = self.shared.state.lock();
        if s.idle > s.tokens {
            s.queue.push_back(Box::new(job));
            s.tokens += 1;
            drop(s);
            self.shared.wake.notify_one();
            return Ok(());
        }
        s.threads += 1;
        drop(s);
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(&shared, Box::new(job)));
        if spawned.is_err() {
            self.shared.state.lock().threads -= 1;
        }
        spawned.map(drop)
    }

    /// Threads alive (running a step or idle).
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.shared.state.lock().threads
    }
}

/// A step thread: runs its first job, then jobs it holds tokens for, until it idles out.
fn run(shared: &Shared, first: Job) {
    first();
    let mut s = shared.state.lock();
    loop {
        s.idle += 1;
        let mut timed_out = false;
        while s.tokens == 0 && !timed_out {
            timed_out = shared.wake.wait_for(&mut s, IDLE_TIMEOUT).timed_out();
        }
        s.idle -= 1;
        if s.tokens == 0 {
            s.threads -= 1;
            return;
        }
        s.tokens -= 1;
        let job = s
            .queue
            .pop_front()
            .expect("a token comes with a queued job");
        drop(s);
        job();
        s = shared.state.lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    fn wait_all_idle(threads: &StepThreads) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let s = threads.shared.state.lock();
            if s.idle == s.threads {
                return;
            }
            drop(s);
            assert!(
                Instant::now() < until,
                "threads never went idle: {threads:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn jobs_that_wait_for_each_other_each_get_a_thread_and_threads_are_reused() {
        let threads = StepThreads::default();
        for _round in 0..3 {
            // Job k waits for a message from job k + 1, which sends it once it has its
            // own: on fewer threads than jobs, this would deadlock.
            let (txs, rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::channel::<()>()).unzip();
            let mut txs: Vec<_> = txs.into_iter().map(Some).collect();
            let (done_tx, done_rx) = mpsc::channel();
            for (k, rx) in rxs.into_iter().enumerate() {
                let to_previous = k.checked_sub(1).and_then(|p| txs[p].take());
                let done = done_tx.clone();
                threads
                    .spawn(format!("job {k}"), move || {
                        if k < 3 {
                            rx.recv_timeout(Duration::from_secs(10)).unwrap();
                        }
                        if let Some(tx) = to_previous {
                            tx.send(()).unwrap();
                        }
                        done.send(k).unwrap();
                    })
                    .unwrap();
            }
            let mut finished: Vec<usize> = (0..4)
                .map(|_| done_rx.recv_timeout(Duration::from_secs(10)).unwrap())
                .collect();
            finished.sort_unstable();
            assert_eq!(finished, [0, 1, 2, 3]);
            wait_all_idle(&threads);
        }
        // Three rounds of four concurrent jobs ran on four threads.
        assert_eq!(threads.threads(), 4, "{threads:?}");
    }
}
