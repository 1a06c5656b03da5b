//! What the deques hold: small, allocation-free references to work.
//!
//! A [`Job`] is three words: a raw pointer and up to two `u32`s. Pushing one allocates
//! nothing and clones no `Arc`.
//!
//! # Lifetime protocol
//!
//! A run's state (`RunHeader` and its typed wrapper) lives on the
//! stack of the thread blocked in [`ThreadPool::execute`](super::ThreadPool::execute). Jobs
//! point at it with raw pointers. That is sound because of one invariant:
//!
//! > Every unit of a run's *outstanding* counter is owned by exactly one party: a queued
//! > job, a worker running a task, a worker's unflushed *debt* for that run, or an
//! > [`AsyncTask`](super::async_task) that is scheduled, running or idle. `execute` returns
//! > only after the counter reached zero, i.e. after every owner gave its unit up.
//!
//! - A [`Job::Task`] owns one unit (the task), a [`Job::Roots`] owns `end - start` units
//!   (one per root in its range), a [`Job::Pick`] owns `count` units (one per task it will
//!   take from its run's ready queue), a [`Job::Poll`] owns the unit of its asynchronous task
//!   plus one strong count of that task's `Arc`.
//! - Whoever holds a unit may dereference the run pointer; after giving the last unit it
//!   holds away it must not touch the run again.
//! - Units move (a job is popped or stolen, a task finishes and hands its unit to a ready
//!   successor), are split (a root range), are added only by a holder (reserving slots for
//!   the successors it is about to push), and are given back by decrementing the counter.

use std::ptr::NonNull;

use super::async_task::AsyncHeader;
use super::run::RunHeader;

/// One unit of work in a deque or in the injector.
#[derive(Debug)]
pub(crate) enum Job {
    /// Run task `task` of the run at `run`.
    Task {
        /// The run; valid while this job exists (see the module docs).
        run: NonNull<RunHeader>,
        /// The task index.
        task: u32,
    },
    /// Run the roots `roots()[start..end]` of the run at `run`; split when others are idle.
    Roots {
        /// The run; valid while this job exists.
        run: NonNull<RunHeader>,
        /// First root index (into the topology's roots) of the range.
        start: u32,
        /// One past the last root index of the range.
        end: u32,
    },
    /// Take `count` tasks, one after the other, from the ready queue of the FIFO or
    /// critical-path run at `run` ([`policy`](super::policy)); split when others are idle.
    Pick {
        /// The run; valid while this job exists.
        run: NonNull<RunHeader>,
        /// How many tasks (and units) the job stands for; at least 1.
        count: u32,
    },
    /// Poll an asynchronous task whose waker fired. Owns one strong count of the task.
    Poll(NonNull<AsyncHeader>),
}

// SAFETY: a job is a reference into state that is `Sync` (the run's header and the
// asynchronous task are shared between workers through atomics and locks only) and whose
// lifetime is governed by the protocol above, not by the thread that created the job.
unsafe impl Send for Job {}

impl Job {
    /// The run this job belongs to, for comparison only (the pointer may dangle for a
    /// poll whose task already finished).
    #[inline]
    pub(crate) fn run(&self) -> *const RunHeader {
        match self {
            Job::Task { run, .. } | Job::Roots { run, .. } | Job::Pick { run, .. } => run.as_ptr(),
            // SAFETY: the job owns a strong count of the task, so its header is alive;
            // only the header's own field is read, not the run it points at.
            Job::Poll(task) => unsafe { task.as_ref() }.run.as_ptr(),
        }
    }

    /// Gives up a job without running it. Only called when a pool's injector is dropped;
    /// by then no run is in flight, so the only jobs that can be left are polls whose task
    /// already finished.
    pub(crate) fn discard(self) {
        if let Job::Poll(task) = self {
            // SAFETY: the job owns one strong count of the task (see above), which this
            // gives back; `release` was set by the task's constructor for its own type.
            unsafe { (task.as_ref().release)(task) }
        }
    }
}
