//! [`Rendezvous`]: where a task's `_Recv` kernels meet the tensors other tasks' `_Send`
//! kernels push to it, keyed by (step, edge).
//!
//! # Protocol
//! An entry is **Ready** (the tensor arrived first) or **Waiting** (the receiver came
//! first and holds the other end of a one-shot channel). `deliver` on an empty key makes
//! it Ready; on a Waiting key it completes the channel and removes the entry. `recv` on a
//! Ready key takes the tensor and removes the entry; on an empty key it makes it Waiting
//! and returns a future on the channel. All moves happen under one mutex, so each tensor
//! is handed over exactly once.
//!
//! A pending `recv` holds no thread. It ends with the tensor, or with an error when the
//! step ends or is aborted ([`Rendezvous::end_step`] drops the channel's sender). Dropping
//! the future (the scheduler does at the step's deadline or cancellation) abandons the
//! wait; `end_step` removes what is left.
//!
//! # A step's life on one task
//! 1. **Unclaimed.** Tensors may arrive before the step starts here (a sender's partition
//!    can run ahead of this task's): they are kept, but only under the bounds of
//!    [`RendezvousLimits`] — at most `unclaimed_ttl` after the step's first tensor came,
//!    and at most `unclaimed_bytes` over all such steps together. A step past either bound
//!    is dropped, oldest first, with a logged warning, and remembered as *expired*: its
//!    later tensors are dropped and a partition that starts it fails at once
//!    ([`RendezvousError::Expired`]). A peer that sends tensors for steps that never run
//!    therefore makes the task hold at most `unclaimed_bytes` (plus one tensor in flight).
//!    The age bound is checked on every call into the rendezvous (no timer thread).
//! 2. **Active.** [`Rendezvous::begin_step`] (the worker calls it first thing when it runs
//!    a partition) claims the step's tensors; its guard ([`ActiveStep`]) ends the step when
//!    dropped — on success, error, abort, early return or unwinding alike.
//! 3. **Ended** (by the guard or by [`Rendezvous::end_step`], which an abort calls):
//!    every entry of the step is removed, waiting receivers fail, and later deliveries for
//!    it are dropped. Ended steps are remembered (the last [`ENDED_STEPS_KEPT`]); one
//!    forgotten since counts as unknown again, under the bounds of step 1.
//!
//! # Whose step it is
//! Every delivery names the master session it is for (`_Send` carries the name its
//! partition was registered under), and so does [`Rendezvous::begin_step`]. The first of
//! them binds the step to that session on this task: tensors for the step from another
//! session are refused ([`RendezvousError::WrongSession`]), a partition of another session
//! cannot start it (the tensors an impostor left for a step not started yet are dropped
//! when its own session starts it), and [`Rendezvous::abort`] through another session has
//! no effect. Together with 128-bit random step ids this means a caller can touch only
//! the steps of sessions it holds. (The worker also checks that the session has a
//! partition on this task before it delivers.)
//!
//! # Limits
//! Besides the bounds on unclaimed steps, every delivery is refused with
//! [`RendezvousError::Limit`] (`ResourceExhausted`) if it would make one step hold more
//! than [`RendezvousLimits::step_bytes`] or the task more than
//! [`RendezvousLimits::task_bytes`] of tensors not yet received. [`Rendezvous::admits`]
//! makes every check of a delivery that needs only the tensor's size, so that a transport
//! can refuse a tensor before it allocates it; it reserves nothing.
//!
//! # Tensors still arriving
//! A transport that receives a tensor over time (a stream of chunks into a destination it
//! allocates first) takes a [`Reservation`] before it allocates ([`Rendezvous::reserve`]):
//! the same checks, and the announced bytes are then counted against the step's and the
//! task's limits as if the tensor had been delivered, until the reservation is delivered
//! with its tensor ([`Rendezvous::deliver_reserved`], which moves the count onto the entry
//! atomically) or dropped (the stream failed or was reset). So the limits bound the bytes
//! of every incoming tensor not yet taken by a step — delivered or still arriving, for a
//! started step, one not started, one with a receiver waiting, or one ended here (whose
//! tensor is dropped when it comes) — and any number of concurrent streams together hold
//! at most [`RendezvousLimits::task_bytes`]. A second reservation for a key that has one
//! is [`RendezvousError::Duplicate`]. Ending a step drops its delivered entries but not
//! its reservations: their bytes stay counted (against the task and the step) until the
//! streams end, since their destinations are still held.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Code;
use crate::limits::{Limit, LimitExceeded};
use crate::step_id::StepId;
use crate::tensor::Tensor;
use crate::transport::RendezvousKey;

/// Ended steps remembered to drop late deliveries (behaviour at the time of writing).
pub const ENDED_STEPS_KEPT: usize = 4096;

/// Bytes an entry is counted for beyond its tensor's data and its edge name: the map
/// slot, the key and the tensor's header (an estimate, so that empty tensors count too).
pub const ENTRY_OVERHEAD_BYTES: usize = 128;

/// The bytes an entry of `data_bytes` of tensor data for `edge` is counted for.
fn entry_bytes(data_bytes: usize, edge: &str) -> usize {
    data_bytes
        .saturating_add(edge.len())
        .saturating_add(ENTRY_OVERHEAD_BYTES)
}

/// Bounds on the tensors a task keeps for steps it has not started (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RendezvousLimits {
    /// How long tensors of a step that has not started on this task are kept after the
    /// step's first one arrived (default 60 s).
    pub unclaimed_ttl: Duration,
    /// How many bytes of such tensors the task keeps, over all such steps (default
    /// 256 MiB). A single tensor larger than this for such a step is refused.
    pub unclaimed_bytes: usize,
    /// How many bytes of tensors delivered (or still arriving: [`Reservation`]) and not
    /// yet received one step may hold on this task, started or not (default 4 GiB).
    pub step_bytes: usize,
    /// How many bytes of tensors delivered (or still arriving) and not yet received the
    /// task holds, over all steps (default 8 GiB): the bound on every incoming stream at
    /// once.
    pub task_bytes: usize,
}

impl Default for RendezvousLimits {
    fn default() -> Self {
        RendezvousLimits {
            unclaimed_ttl: Duration::from_secs(60),
            unclaimed_bytes: 256 << 20,
            step_bytes: 4 << 30,
            task_bytes: 8 << 30,
        }
    }
}

/// Why a rendezvous operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RendezvousError {
    /// Two tensors (or two receivers) for one key.
    #[error("duplicate {what} for {key}")]
    Duplicate {
        /// `send` or `recv`.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// The step ended or was aborted before the tensor came.
    #[error("step {step_id} ended before {edge} arrived")]
    StepEnded {
        /// The step.
        step_id: StepId,
        /// The edge.
        edge: String,
    },
    /// The step already ended or was aborted on this task, so it cannot start here.
    #[error("step {step_id} already ended or was aborted on this task")]
    AlreadyEnded {
        /// The step.
        step_id: StepId,
    },
    /// Tensors delivered for the step before it started on this task were dropped under
    /// the task's [`RendezvousLimits`].
    #[error("tensors for step {step_id} came before the step started on this task and were dropped: {detail}")]
    Expired {
        /// The step.
        step_id: StepId,
        /// Which bound was passed.
        detail: String,
    },
    /// The step belongs to another session on this task.
    #[error("step {step_id} does not belong to session {session:?} on this task")]
    WrongSession {
        /// The step.
        step_id: StepId,
        /// The session named.
        session: String,
    },
    /// A delivery would pass a limit of [`RendezvousLimits`].
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
}

impl RendezvousError {
    /// `ResourceExhausted` for a limit or an expired step, `PermissionDenied` for another
    /// session's step, `Aborted` for a step that ended, `Internal` for a duplicate.
    pub fn code(&self) -> Code {
        match self {
            RendezvousError::Limit(_) | RendezvousError::Expired { .. } => Code::ResourceExhausted,
            RendezvousError::WrongSession { .. } => Code::PermissionDenied,
            RendezvousError::StepEnded { .. } | RendezvousError::AlreadyEnded { .. } => {
                Code::Aborted
            }
            RendezvousError::Duplicate { .. } => Code::Internal,
        }
    }
}

enum Entry {
    /// A delivered tensor and the bytes it is counted for.
    Ready(Tensor, usize),
    Waiting(oneshot::Sender<Tensor>),
}

/// An unclaimed step's bookkeeping.
struct Unclaimed {
    /// When its first tensor came.
    since: Instant,
    /// Bytes of its ready entries.
    bytes: usize,
    /// The session its tensors were delivered for.
    session: Arc<str>,
}

/// A started step's bookkeeping.
struct Active {
    /// How many partitions of it run here now.
    partitions: u32,
    /// The session that runs it.
    session: Arc<str>,
}

/// How a remembered step ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Normally, by failure or by abort.
    Ended,
    /// Its unclaimed tensors passed this bound ([`Limit::RendezvousUnclaimedBytes`] or
    /// [`Limit::RendezvousUnclaimedTtl`]).
    Expired(Limit),
}

/// What a delivery for a key meets, once `Rendezvous::admit` let it in.
enum Admission {
    /// The step ended here: the tensor is dropped.
    Ended,
    /// A receiver waits for the key: the tensor goes to it, uncounted.
    Waiting,
    /// Nothing yet: the tensor is kept, counted against the limits.
    New,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(StepId, String), Entry>,
    /// Bytes of all ready entries and reservations.
    bytes: usize,
    /// Keys with a reservation (a tensor still arriving), and its bytes.
    incoming: HashMap<(StepId, String), usize>,
    /// Bytes of all reservations (the part of `bytes` still arriving).
    incoming_bytes: usize,
    /// Bytes of ready entries and reservations per step (steps with none are absent).
    step_bytes: HashMap<StepId, usize>,
    /// Started, not ended steps.
    active: HashMap<StepId, Active>,
    /// Steps with tensors but not started here, and their total bytes.
    unclaimed: HashMap<StepId, Unclaimed>,
    unclaimed_bytes: usize,
    /// Unclaimed steps, oldest first (entries of steps claimed or ended since are stale
    /// and skipped).
    unclaimed_order: VecDeque<(StepId, Instant)>,
    ended: HashMap<StepId, Ended>,
    ended_order: VecDeque<StepId>,
}

impl Inner {
    /// The session `step` is bound to here, if any.
    fn owner(&self, step: StepId) -> Option<&Arc<str>> {
        match self.active.get(&step) {
            Some(a) => Some(&a.session),
            None => self.unclaimed.get(&step).map(|u| &u.session),
        }
    }

    /// Gives back the bytes of the reservation of `k`, if it still has one.
    fn release_reservation(&mut self, k: &(StepId, String)) {
        if let Some(bytes) = self.incoming.remove(k) {
            self.incoming_bytes -= bytes;
            self.release_bytes(k.0, bytes);
        }
    }

    /// Accounts `bytes` fewer ready or reserved bytes of `step`.
    fn release_bytes(&mut self, step: StepId, bytes: usize) {
        self.bytes -= bytes;
        if let Some(b) = self.step_bytes.get_mut(&step) {
            *b -= bytes;
            if *b == 0 {
                self.step_bytes.remove(&step);
            }
        }
    }

    /// Removes every entry of `step`; waiting receivers fail (their senders drop). Its
    /// reservations stay counted until they are dropped.
    fn remove_entries(&mut self, step: StepId) {
        let mut freed = 0;
        self.entries.retain(|(s, _), e| {
            if *s != step {
                return true;
            }
            if let Entry::Ready(_, b) = e {
                freed += *b;
            }
            false
        });
        self.release_bytes(step, freed);
        if let Some(u) = self.unclaimed.remove(&step) {
            self.unclaimed_bytes -= u.bytes;
        }
    }

    fn mark_ended(&mut self, step: StepId, how: Ended) {
        if self.ended.insert(step, how).is_none() {
            self.ended_order.push_back(step);
            if self.ended_order.len() > ENDED_STEPS_KEPT {
                if let Some(old) = self.ended_order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
    }

    /// Drops an unclaimed step's tensors and remembers it as expired under `bound`.
    fn expire(&mut self, step: StepId, bound: Limit) {
        let bytes = self.unclaimed.get(&step).map_or(0, |u| u.bytes);
        self.remove_entries(step);
        self.mark_ended(step, Ended::Expired(bound));
        tracing::warn!(
            step_id = %step,
            bytes,
            limit = bound.flag(),
            "dropped tensors delivered for a step that has not started on this task: {}",
            bound.describe()
        );
    }

    /// Expires unclaimed steps older than `ttl`.
    fn expire_old(&mut self, now: Instant, ttl: Duration) {
        while let Some(&(step, since)) = self.unclaimed_order.front() {
            let current = self.unclaimed.get(&step).is_some_and(|u| u.since == since);
            if current && now.saturating_duration_since(since) < ttl {
                break;
            }
            self.unclaimed_order.pop_front();
            if current {
                self.expire(step, Limit::RendezvousUnclaimedTtl);
            }
        }
    }

    /// Whether `bytes` more unclaimed bytes stay within `limit`. The sum is checked: under
    /// a limit near `usize::MAX` (the flag takes any u64) it could wrap, and a sum past
    /// the address space passes every limit.
    fn unclaimed_fit(&self, bytes: usize, limit: usize) -> bool {
        self.unclaimed_bytes
            .checked_add(bytes)
            .is_some_and(|sum| sum <= limit)
    }

    /// Makes room for `bytes` more unclaimed bytes, expiring the oldest unclaimed steps
    /// other than `keep`; false if `bytes` alone exceeds `limit`, or if `keep`'s own bytes
    /// and `bytes` do.
    fn make_room(&mut self, bytes: usize, limit: usize, keep: StepId) -> bool {
        if bytes > limit {
            return false;
        }
        let mut skipped = VecDeque::new();
        while !self.unclaimed_fit(bytes, limit) {
            let Some((step, since)) = self.unclaimed_order.pop_front() else {
                break;
            };
            let current = self.unclaimed.get(&step).is_some_and(|u| u.since == since);
            if !current {
                continue;
            }
            if step == keep {
                skipped.push_back((step, since));
                continue;
            }
            self.expire(step, Limit::RendezvousUnclaimedBytes);
        }
        while let Some(k) = skipped.pop_back() {
            self.unclaimed_order.push_front(k);
        }
        self.unclaimed_fit(bytes, limit)
    }
}

/// Bytes admitted for a tensor still arriving ([`Rendezvous::reserve`]): counted against
/// the rendezvous's limits until delivered with its tensor
/// ([`Rendezvous::deliver_reserved`]) or dropped.
#[must_use = "dropping a reservation gives its bytes back at once"]
pub struct Reservation {
    rendezvous: Arc<Rendezvous>,
    session: Arc<str>,
    /// `None` once delivered.
    key: Option<(StepId, String)>,
}

impl Reservation {
    /// The rendezvous the reservation was taken on.
    pub fn rendezvous(&self) -> &Arc<Rendezvous> {
        &self.rendezvous
    }

    /// The session the tensor is delivered for.
    pub fn session(&self) -> &str {
        &self.session
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.rendezvous.inner.lock().release_reservation(&k);
        }
    }
}

/// One task's rendezvous.
#[derive(Default)]
pub struct Rendezvous {
    inner: Mutex<Inner>,
    limits: RendezvousLimits,
}

impl fmt::Debug for Rendezvous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.inner.lock();
        f.debug_struct("Rendezvous")
            .field("entries", &g.entries.len())
            .field("bytes", &g.bytes)
            .field("unclaimed_bytes", &g.unclaimed_bytes)
            .field("limits", &self.limits)
            .finish()
    }
}

/// A step running on this task ([`Rendezvous::begin_step`]); dropping it ends the step
/// unless another partition of it still runs here.
#[must_use = "dropping the guard ends the step"]
pub struct ActiveStep<'a> {
    rendezvous: &'a Rendezvous,
    step_id: StepId,
}

impl fmt::Debug for ActiveStep<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveStep")
            .field("step_id", &self.step_id)
            .finish()
    }
}

impl Drop for ActiveStep<'_> {
    fn drop(&mut self) {
        let mut g = self.rendezvous.inner.lock();
        let last = match g.active.get_mut(&self.step_id) {
            Some(a) if a.partitions > 1 => {
                a.partitions -= 1;
                false
            }
            _ => true,
        };
        if last {
            g.active.remove(&self.step_id);
            drop(g);
            self.rendezvous.end_step(self.step_id);
        }
    }
}

impl Rendezvous {
    /// An empty rendezvous with the default [`RendezvousLimits`].
    pub fn new() -> Rendezvous {
        Rendezvous::default()
    }

    /// An empty rendezvous with these limits.
    pub fn with_limits(limits: RendezvousLimits) -> Rendezvous {
        Rendezvous {
            inner: Mutex::default(),
            limits,
        }
    }

    /// The limits on tensors for steps that have not started here.
    pub fn limits(&self) -> RendezvousLimits {
        self.limits
    }

    /// Why an expired step's tensors were dropped: the bound it passed, its value and
    /// the flag that raises it.
    fn expired_detail(&self, bound: Limit) -> String {
        let (max, what) = match bound {
            Limit::RendezvousUnclaimedTtl => (
                u64::try_from(self.limits.unclaimed_ttl.as_millis()).unwrap_or(u64::MAX),
                "its first tensor came longer ago than that",
            ),
            _ => (
                u64::try_from(self.limits.unclaimed_bytes).unwrap_or(u64::MAX),
                "its tensors made room for newer steps', or one alone was larger",
            ),
        };
        LimitExceeded::new(bound, max, what).to_string()
    }

    /// Starts `step_id` on this task for a partition of `session`: its tensors delivered
    /// so far are claimed (no longer subject to the bounds on unclaimed steps), and the
    /// returned guard ends the step when dropped. Tensors another session delivered for
    /// the step before it started are dropped.
    ///
    /// # Errors
    ///
    /// [`RendezvousError::AlreadyEnded`] if the step ended or was aborted here already,
    /// [`RendezvousError::Expired`] if its early tensors were dropped under the limits,
    /// [`RendezvousError::WrongSession`] if a partition of another session runs it.
    pub fn begin_step(
        &self,
        step_id: StepId,
        session: &str,
    ) -> Result<ActiveStep<'_>, RendezvousError> {
        let mut g = self.inner.lock();
        g.expire_old(Instant::now(), self.limits.unclaimed_ttl);
        match g.ended.get(&step_id) {
            Some(Ended::Ended) => return Err(RendezvousError::AlreadyEnded { step_id }),
            Some(&Ended::Expired(bound)) => {
                return Err(RendezvousError::Expired {
                    step_id,
                    detail: self.expired_detail(bound),
                })
            }
            None => {}
        }
        if let Some(a) = g.active.get_mut(&step_id) {
            if &*a.session != session {
                return Err(RendezvousError::WrongSession {
                    step_id,
                    session: session.to_string(),
                });
            }
            a.partitions += 1;
            return Ok(ActiveStep {
                rendezvous: self,
                step_id,
            });
        }
        let impostor = g
            .unclaimed
            .get(&step_id)
            .is_some_and(|u| &*u.session != session);
        if impostor {
            tracing::warn!(
                step_id = %step_id,
                "dropped tensors another session delivered for a step before it started"
            );
            g.remove_entries(step_id);
        }
        if let Some(u) = g.unclaimed.remove(&step_id) {
            g.unclaimed_bytes -= u.bytes;
        }
        g.active.insert(
            step_id,
            Active {
                partitions: 1,
                session: Arc::from(session),
            },
        );
        Ok(ActiveStep {
            rendezvous: self,
            step_id,
        })
    }

    /// Hands `tensor`, delivered for a step of `session`, to the receiver of `key` (now
    /// or when it comes). The tensor is moved, never copied. Dropped (with `Ok`) for a
    /// step that ended here.
    ///
    /// # Errors
    ///
    /// [`RendezvousError::Duplicate`] for a second tensor of one key;
    /// [`RendezvousError::WrongSession`] for a step bound to another session here;
    /// [`RendezvousError::Expired`] for a tensor of a step that has not started here that
    /// alone exceeds [`RendezvousLimits::unclaimed_bytes`]; [`RendezvousError::Limit`] for
    /// a tensor that would pass [`RendezvousLimits::step_bytes`] or
    /// [`RendezvousLimits::task_bytes`].
    pub fn deliver(
        &self,
        session: &str,
        key: RendezvousKey,
        tensor: Tensor,
    ) -> Result<(), RendezvousError> {
        let mut g = self.inner.lock();
        self.deliver_locked(&mut g, session, key, tensor)
    }

    /// [`Rendezvous::deliver`] under the lock.
    fn deliver_locked(
        &self,
        g: &mut Inner,
        session: &str,
        key: RendezvousKey,
        tensor: Tensor,
    ) -> Result<(), RendezvousError> {
        let step = key.step_id;
        let k = (key.step_id, key.edge);
        let bytes = entry_bytes(tensor.size_in_bytes(), &k.1);
        let now = Instant::now();
        g.expire_old(now, self.limits.unclaimed_ttl);
        if g.incoming.contains_key(&k) {
            return Err(RendezvousError::Duplicate {
                what: "send",
                key: format!(
                    "step {} edge {} (a tensor for it is still arriving)",
                    k.0, k.1
                ),
            });
        }
        match self.admit(g, session, &k, bytes)? {
            Admission::Ended => return Ok(()), // a late delivery for a finished step: dropped
            Admission::Waiting => {
                if let Some(Entry::Waiting(tx)) = g.entries.remove(&k) {
                    let _ = tx.send(tensor); // a receiver that gave up drops it
                }
                return Ok(());
            }
            Admission::New => {}
        }
        if !g.active.contains_key(&step) {
            if !g.make_room(bytes, self.limits.unclaimed_bytes, step) {
                return Err(self.refuse_unclaimed(g, step, &k.1, bytes));
            }
            let unclaimed = g.unclaimed.entry(step).or_insert_with(|| Unclaimed {
                since: now,
                bytes: 0,
                session: Arc::from(session),
            });
            let first = unclaimed.bytes == 0 && unclaimed.since == now;
            unclaimed.bytes += bytes;
            g.unclaimed_bytes += bytes;
            if first {
                g.unclaimed_order.push_back((step, now));
            }
        }
        g.bytes += bytes;
        *g.step_bytes.entry(step).or_insert(0) += bytes;
        g.entries.insert(k, Entry::Ready(tensor, bytes));
        Ok(())
    }

    /// Whether a tensor of `data_bytes` bytes for `edge` of `step_id`, delivered for
    /// `session`, would be let in now: the checks of [`Rendezvous::deliver`] that need
    /// only its size, made before the tensor exists (a transport calls it with the size a
    /// stream announces, before it allocates the destination). Nothing is reserved:
    /// `deliver` checks again. A step ended here passes (its tensor will be dropped).
    ///
    /// # Errors
    ///
    /// As [`Rendezvous::deliver`]: [`RendezvousError::WrongSession`],
    /// [`RendezvousError::Duplicate`], [`RendezvousError::Limit`] for
    /// [`RendezvousLimits::step_bytes`] or [`RendezvousLimits::task_bytes`], and
    /// [`RendezvousError::Expired`] (the step is then dropped here, as `deliver` would)
    /// for a tensor of a step not started here that alone exceeds
    /// [`RendezvousLimits::unclaimed_bytes`].
    pub fn admits(
        &self,
        session: &str,
        step_id: StepId,
        edge: &str,
        data_bytes: usize,
    ) -> Result<(), RendezvousError> {
        let k = (step_id, edge.to_string());
        let bytes = entry_bytes(data_bytes, edge);
        let mut g = self.inner.lock();
        g.expire_old(Instant::now(), self.limits.unclaimed_ttl);
        if let Admission::New = self.admit(&mut g, session, &k, bytes)? {
            if !g.active.contains_key(&step_id) && bytes > self.limits.unclaimed_bytes {
                return Err(self.refuse_unclaimed(&mut g, step_id, edge, bytes));
            }
        }
        Ok(())
    }

    /// The checks of a delivery of an entry of `bytes` for key `k` that the tensor
    /// itself is not needed for: the step's session, a duplicate, and the limits on
    /// pending bytes per step and per task.
    fn admit(
        &self,
        g: &mut Inner,
        session: &str,
        k: &(StepId, String),
        bytes: usize,
    ) -> Result<Admission, RendezvousError> {
        let step = k.0;
        if g.ended.contains_key(&step) {
            return Ok(Admission::Ended);
        }
        if g.owner(step).is_some_and(|o| &**o != session) {
            return Err(RendezvousError::WrongSession {
                step_id: step,
                session: session.to_string(),
            });
        }
        match g.entries.get(k) {
            Some(Entry::Waiting(_)) => return Ok(Admission::Waiting),
            Some(Entry::Ready(..)) => {
                return Err(RendezvousError::Duplicate {
                    what: "send",
                    key: format!("step {} edge {}", k.0, k.1),
                })
            }
            None => {}
        }
        self.check_limits(g, k, bytes)?;
        Ok(Admission::New)
    }

    /// [`RendezvousLimits::step_bytes`] and [`RendezvousLimits::task_bytes`] for `bytes`
    /// more for key `k`.
    fn check_limits(
        &self,
        g: &Inner,
        k: &(StepId, String),
        bytes: usize,
    ) -> Result<(), RendezvousError> {
        let step = k.0;
        let held = g.step_bytes.get(&step).copied().unwrap_or(0);
        if held.saturating_add(bytes) > self.limits.step_bytes {
            return Err(LimitExceeded::new(
                Limit::RendezvousStepBytes,
                self.limits.step_bytes,
                format!(
                    "step {step} already holds {held} bytes on this task and a tensor of \
                     {bytes} bytes came for edge {:?}",
                    k.1
                ),
            )
            .into());
        }
        self.check_task_bytes(g, k, bytes)
    }

    /// [`RendezvousLimits::task_bytes`] for `bytes` more for key `k`.
    fn check_task_bytes(
        &self,
        g: &Inner,
        k: &(StepId, String),
        bytes: usize,
    ) -> Result<(), RendezvousError> {
        if g.bytes.saturating_add(bytes) > self.limits.task_bytes {
            return Err(LimitExceeded::new(
                Limit::RendezvousTaskBytes,
                self.limits.task_bytes,
                format!(
                    "the task already holds {} bytes of tensors not yet received ({} of them \
                     still arriving) and a tensor of {bytes} bytes came for step {} edge {:?}",
                    g.bytes, g.incoming_bytes, k.0, k.1
                ),
            )
            .into());
        }
        Ok(())
    }

    /// Admits a tensor of `data_bytes` bytes for `edge` of `step_id`, delivered for
    /// `session`, that is still to arrive: the checks of [`Rendezvous::admits`], then its
    /// bytes are counted against [`RendezvousLimits::step_bytes`] and
    /// [`RendezvousLimits::task_bytes`] until the returned reservation is delivered
    /// ([`Rendezvous::deliver_reserved`]) or dropped. A transport takes one before it
    /// allocates a tensor it receives over time (see the module docs).
    ///
    /// # Errors
    ///
    /// As [`Rendezvous::admits`], and [`RendezvousError::Duplicate`] when the key has a
    /// reservation already. The limits apply to every such tensor, even one for a step
    /// ended here or for a receiver already waiting.
    pub fn reserve(
        self: &Arc<Self>,
        session: &str,
        step_id: StepId,
        edge: &str,
        data_bytes: usize,
    ) -> Result<Reservation, RendezvousError> {
        let k = (step_id, edge.to_string());
        let bytes = entry_bytes(data_bytes, edge);
        let mut g = self.inner.lock();
        g.expire_old(Instant::now(), self.limits.unclaimed_ttl);
        if g.incoming.contains_key(&k) {
            return Err(RendezvousError::Duplicate {
                what: "send",
                key: format!("step {step_id} edge {edge} (a tensor for it is still arriving)"),
            });
        }
        match self.admit(&mut g, session, &k, bytes)? {
            Admission::New => {
                if !g.active.contains_key(&step_id) && bytes > self.limits.unclaimed_bytes {
                    return Err(self.refuse_unclaimed(&mut g, step_id, edge, bytes));
                }
            }
            // Not checked by `admit`, but the destination is held all the same.
            Admission::Ended | Admission::Waiting => self.check_limits(&g, &k, bytes)?,
        }
        g.bytes += bytes;
        g.incoming_bytes += bytes;
        *g.step_bytes.entry(step_id).or_insert(0) += bytes;
        g.incoming.insert(k.clone(), bytes);
        Ok(Reservation {
            rendezvous: Arc::clone(self),
            session: Arc::from(session),
            key: Some(k),
        })
    }

    /// Delivers the tensor a reservation was taken for, on the rendezvous it was taken
    /// on: the reservation's bytes are released and the tensor delivered as by
    /// [`Rendezvous::deliver`], under one lock, so no other tensor can take the room in
    /// between.
    ///
    /// # Errors
    ///
    /// As [`Rendezvous::deliver`].
    pub fn deliver_reserved(
        &self,
        mut reservation: Reservation,
        tensor: Tensor,
    ) -> Result<(), RendezvousError> {
        debug_assert!(
            std::ptr::eq(&*reservation.rendezvous, self),
            "a reservation is delivered on the rendezvous it was taken on"
        );
        let Some(k) = reservation.key.take() else {
            return Ok(());
        };
        let rendezvous = Arc::clone(&reservation.rendezvous);
        let mut g = rendezvous.inner.lock();
        g.release_reservation(&k);
        let session = Arc::clone(&reservation.session);
        rendezvous.deliver_locked(
            &mut g,
            &session,
            RendezvousKey {
                step_id: k.0,
                edge: k.1,
            },
            tensor,
        )
    }

    /// Bytes reserved for tensors still arriving ([`Rendezvous::reserve`]), a part of
    /// [`pending_bytes`](Self::pending_bytes).
    pub fn incoming_bytes(&self) -> usize {
        self.inner.lock().incoming_bytes
    }

    /// Drops `step` (not started here) under [`RendezvousLimits::unclaimed_bytes`], as no
    /// room was found for an entry of `bytes` for `edge`; the error that says so.
    fn refuse_unclaimed(
        &self,
        g: &mut Inner,
        step: StepId,
        edge: &str,
        bytes: usize,
    ) -> RendezvousError {
        g.expire(step, Limit::RendezvousUnclaimedBytes);
        RendezvousError::Expired {
            step_id: step,
            detail: LimitExceeded::new(
                Limit::RendezvousUnclaimedBytes,
                self.limits.unclaimed_bytes,
                format!("a tensor of {bytes} bytes came for edge {edge:?}"),
            )
            .to_string(),
        }
    }

    /// Waits for the tensor of `key`. The future holds no thread while it waits.
    ///
    /// # Errors
    ///
    /// The future resolves to [`RendezvousError::StepEnded`] when the step ended or was
    /// aborted before the tensor came (or, at once, had already ended);
    /// [`RendezvousError::Expired`] when the step's early tensors were dropped under the
    /// [`RendezvousLimits`]; [`RendezvousError::Duplicate`] when another receiver
    /// already waits on `key`.
    pub fn recv(
        &self,
        key: RendezvousKey,
    ) -> impl Future<Output = Result<Tensor, RendezvousError>> + Send + 'static {
        let step_id = key.step_id;
        let edge = key.edge.clone();
        let mut g = self.inner.lock();
        g.expire_old(Instant::now(), self.limits.unclaimed_ttl);
        let k = (key.step_id, key.edge);
        let state: Result<Result<Tensor, oneshot::Receiver<Tensor>>, RendezvousError> =
            match g.ended.get(&step_id) {
                Some(Ended::Ended) => Err(RendezvousError::StepEnded {
                    step_id,
                    edge: edge.clone(),
                }),
                Some(&Ended::Expired(bound)) => Err(RendezvousError::Expired {
                    step_id,
                    detail: self.expired_detail(bound),
                }),
                None => match g.entries.remove(&k) {
                    Some(Entry::Ready(t, bytes)) => {
                        g.release_bytes(step_id, bytes);
                        if let Some(u) = g.unclaimed.get_mut(&step_id) {
                            u.bytes -= bytes;
                            g.unclaimed_bytes -= bytes;
                        }
                        Ok(Ok(t))
                    }
                    Some(waiting @ Entry::Waiting(_)) => {
                        g.entries.insert(k, waiting);
                        Err(RendezvousError::Duplicate {
                            what: "recv",
                            key: format!("step {step_id} edge {edge}"),
                        })
                    }
                    None => {
                        let (tx, rx) = oneshot::channel();
                        g.entries.insert(k, Entry::Waiting(tx));
                        Ok(Err(rx))
                    }
                },
            };
        drop(g);
        async move {
            match state? {
                Ok(t) => Ok(t),
                Err(rx) => rx
                    .await
                    .map_err(|_| RendezvousError::StepEnded { step_id, edge }),
            }
        }
    }

    /// Aborts a step of `session` ([`Rendezvous::end_step`]), unless it is bound to
    /// another session here.
    ///
    /// # Errors
    ///
    /// [`RendezvousError::WrongSession`] (and nothing changes) if the step runs, or has
    /// tensors waiting, for another session.
    pub fn abort(&self, session: &str, step_id: StepId) -> Result<(), RendezvousError> {
        let mut g = self.inner.lock();
        if g.owner(step_id).is_some_and(|o| &**o != session) {
            return Err(RendezvousError::WrongSession {
                step_id,
                session: session.to_string(),
            });
        }
        g.remove_entries(step_id);
        g.mark_ended(step_id, Ended::Ended);
        Ok(())
    }

    /// Ends a step: pending receivers fail, undelivered tensors are dropped, and later
    /// deliveries for the step are ignored. Idempotent.
    pub fn end_step(&self, step_id: StepId) {
        let mut g = self.inner.lock();
        g.remove_entries(step_id);
        g.mark_ended(step_id, Ended::Ended);
    }

    /// Entries (ready tensors and waiting receivers) not yet matched. Unclaimed steps past
    /// their age limit are dropped first.
    pub fn pending(&self) -> usize {
        let mut g = self.inner.lock();
        g.expire_old(Instant::now(), self.limits.unclaimed_ttl);
        g.entries.len()
    }

    /// Bytes of the ready entries (tensors delivered, not yet received) and of the
    /// reservations (tensors still arriving), as counted against the limits (data, edge
    /// name and [`ENTRY_OVERHEAD_BYTES`] per entry). Unclaimed steps past their age limit
    /// are dropped first.
    pub fn pending_bytes(&self) -> usize {
        let mut g = self.inner.lock();
        g.expire_old(Instant::now(), self.limits.unclaimed_ttl);
        g.bytes
    }

    /// The part of [`pending_bytes`](Self::pending_bytes) that belongs to steps not
    /// started on this task (bounded by [`RendezvousLimits::unclaimed_bytes`]).
    pub fn unclaimed_bytes(&self) -> usize {
        let mut g = self.inner.lock();
        g.expire_old(Instant::now(), self.limits.unclaimed_ttl);
        g.unclaimed_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    fn key(step: u64, edge: &str) -> RendezvousKey {
        RendezvousKey {
            step_id: StepId::from(step),
            edge: edge.into(),
        }
    }

    #[test]
    fn send_first_or_recv_first() {
        let r = Rendezvous::new();
        let t = Tensor::scalar(1.0f32);
        r.deliver("s", key(1, "a"), t.clone()).unwrap();
        let got = block_on(r.recv(key(1, "a"))).unwrap();
        assert!(got.shares_buffer_with(&t));
        let fut = r.recv(key(1, "b"));
        r.deliver("s", key(1, "b"), t.clone()).unwrap();
        assert!(block_on(fut).unwrap().shares_buffer_with(&t));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn end_step_fails_waiters_and_drops_late_sends() {
        let r = Rendezvous::new();
        let fut = r.recv(key(2, "x"));
        r.end_step(StepId::from(2));
        assert!(matches!(
            block_on(fut),
            Err(RendezvousError::StepEnded { step_id, .. }) if step_id == StepId::from(2u64)
        ));
        r.deliver("s", key(2, "x"), Tensor::scalar(1i32)).unwrap();
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn duplicates_are_errors() {
        let r = Rendezvous::new();
        r.deliver("s", key(3, "x"), Tensor::scalar(1i32)).unwrap();
        assert!(r.deliver("s", key(3, "x"), Tensor::scalar(1i32)).is_err());
    }

    #[test]
    fn the_step_guard_ends_the_step_on_every_way_out() {
        let r = Rendezvous::new();
        r.deliver("s", key(4, "early"), Tensor::scalar(1.0f32))
            .unwrap();
        assert_eq!(r.unclaimed_bytes(), r.pending_bytes());
        {
            let _step = r.begin_step(StepId::from(4), "s").unwrap();
            assert_eq!((r.pending(), r.unclaimed_bytes()), (1, 0), "claimed");
            r.deliver("s", key(4, "unused"), Tensor::scalar(2.0f32))
                .unwrap();
            let _waiting = r.recv(key(4, "never"));
        } // dropped as on an early return or unwinding
        assert_eq!((r.pending(), r.pending_bytes()), (0, 0));
        // Later deliveries are dropped, and the step cannot start again.
        r.deliver("s", key(4, "late"), Tensor::scalar(1.0f32))
            .unwrap();
        assert_eq!(r.pending(), 0);
        assert!(matches!(
            r.begin_step(StepId::from(4), "s"),
            Err(RendezvousError::AlreadyEnded { step_id }) if step_id == StepId::from(4u64)
        ));
        // An abort (`end_step`) before the step starts refuses it as well.
        r.end_step(StepId::from(5));
        assert!(r.begin_step(StepId::from(5), "s").is_err());
    }

    #[test]
    fn unclaimed_tensors_are_bounded_in_bytes_oldest_step_first() {
        let limits = RendezvousLimits {
            unclaimed_ttl: Duration::from_secs(3600),
            unclaimed_bytes: 4096,
            ..RendezvousLimits::default()
        };
        let r = Rendezvous::with_limits(limits);
        let t = || Tensor::from_vec([256], vec![0.0f32; 256]).unwrap(); // 1 KiB of data
        for step in 10..20 {
            r.deliver("s", key(step, "e"), t()).unwrap();
            assert!(r.unclaimed_bytes() <= limits.unclaimed_bytes);
        }
        // Three fit with their overhead; the oldest steps were dropped and expired.
        assert_eq!(r.pending(), 3);
        let e = r.begin_step(StepId::from(10), "s").unwrap_err();
        assert!(
            matches!(e, RendezvousError::Expired { step_id, .. } if step_id == StepId::from(10u64)),
            "{e}"
        );
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.to_string().contains("--rendezvous-unclaimed-bytes"),
            "{e}"
        );
        assert!(matches!(
            block_on(r.recv(key(11, "e"))),
            Err(RendezvousError::Expired { step_id, .. }) if step_id == StepId::from(11u64)
        ));
        // The newest are kept and claimed by their step.
        let _step = r.begin_step(StepId::from(19), "s").unwrap();
        assert!(block_on(r.recv(key(19, "e"))).is_ok());
        // A single tensor over the limit is refused.
        let big = Tensor::from_vec([2048], vec![0.0f32; 2048]).unwrap();
        let e = r.deliver("s", key(30, "e"), big).unwrap_err();
        assert!(
            matches!(e, RendezvousError::Expired { step_id, .. } if step_id == StepId::from(30u64)),
            "{e}"
        );
        assert!(
            e.to_string().contains("--rendezvous-unclaimed-bytes"),
            "{e}"
        );
        // A running step's tensors are not limited.
        let _running = r.begin_step(StepId::from(31), "s").unwrap();
        for e in 0..8 {
            r.deliver("s", key(31, &e.to_string()), t()).unwrap();
        }
        assert!(r.pending_bytes() > limits.unclaimed_bytes);
    }

    #[test]
    fn unclaimed_tensors_expire_after_the_time_limit() {
        let r = Rendezvous::with_limits(RendezvousLimits {
            unclaimed_ttl: Duration::ZERO,
            unclaimed_bytes: 1 << 20,
            ..RendezvousLimits::default()
        });
        r.deliver("s", key(7, "e"), Tensor::scalar(1.0f32)).unwrap();
        // Any later call sees it past a zero time limit.
        assert_eq!((r.pending(), r.unclaimed_bytes()), (0, 0));
        let e = r.begin_step(StepId::from(7), "s").unwrap_err();
        assert!(matches!(e, RendezvousError::Expired { .. }), "{e}");
        assert!(
            e.to_string().contains("--rendezvous-unclaimed-ttl-ms"),
            "{e}"
        );
    }

    #[test]
    fn a_step_is_bound_to_one_session() {
        let r = Rendezvous::new();
        // Tensors for a step not started bind it to their session.
        r.deliver("victim", key(40, "a"), Tensor::scalar(1.0f32))
            .unwrap();
        assert!(matches!(
            r.deliver("intruder", key(40, "b"), Tensor::scalar(1.0f32)),
            Err(RendezvousError::WrongSession { .. })
        ));
        assert!(r.abort("intruder", StepId::from(40u64)).is_err());
        let _step = r.begin_step(StepId::from(40u64), "victim").unwrap();
        assert!(matches!(
            r.begin_step(StepId::from(40u64), "intruder"),
            Err(RendezvousError::WrongSession { .. })
        ));
        assert!(block_on(r.recv(key(40, "a"))).is_ok());
        // An intruder's early tensors are dropped when the rightful session starts.
        r.deliver("intruder", key(41, "a"), Tensor::scalar(9.0f32))
            .unwrap();
        let _step = r.begin_step(StepId::from(41u64), "victim").unwrap();
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn admits_refuses_by_announced_size_what_deliver_would_and_keeps_nothing() {
        let limits = RendezvousLimits {
            unclaimed_ttl: Duration::from_secs(3600),
            unclaimed_bytes: 2000,
            step_bytes: 3000,
            task_bytes: 4000,
        };
        let r = Rendezvous::with_limits(limits);
        // 1 KiB of data.
        let t = || Tensor::from_vec([256], vec![0.0f32; 256]).unwrap();
        // A step not started: an announced tensor that alone passes the bound on unclaimed
        // bytes is refused, and the step dropped here, as its delivery would be.
        let e = r.admits("s", StepId::from(60u64), "e", 2500).unwrap_err();
        assert!(
            matches!(e, RendezvousError::Expired { step_id, .. } if step_id == StepId::from(60u64)),
            "{e}"
        );
        assert!(
            e.to_string().contains("--rendezvous-unclaimed-bytes"),
            "{e}"
        );
        assert!(matches!(
            r.begin_step(StepId::from(60u64), "s"),
            Err(RendezvousError::Expired { .. })
        ));
        // One that fits is admitted, and nothing is kept or reserved for it.
        r.admits("s", StepId::from(61u64), "e", 1024).unwrap();
        assert_eq!((r.pending(), r.pending_bytes()), (0, 0));
        // A step bound to a session refuses another's, before any tensor exists.
        r.deliver("s", key(61, "a"), t()).unwrap();
        let e = r
            .admits("intruder", StepId::from(61u64), "b", 4)
            .unwrap_err();
        assert!(matches!(e, RendezvousError::WrongSession { .. }), "{e}");
        assert_eq!(e.code(), Code::PermissionDenied);
        // A second tensor for a key already delivered.
        let e = r.admits("s", StepId::from(61u64), "a", 4).unwrap_err();
        assert!(matches!(e, RendezvousError::Duplicate { .. }), "{e}");
        // The per-step and per-task limits, counted as deliver counts (data, edge name,
        // overhead): step 62 runs and holds 1,153 bytes, the task 2,306.
        let _running = r.begin_step(StepId::from(62u64), "s").unwrap();
        r.deliver("s", key(62, "a"), t()).unwrap();
        let e = r.admits("s", StepId::from(62u64), "b", 2000).unwrap_err();
        assert!(e.to_string().contains("--rendezvous-step-bytes"), "{e}");
        r.admits("s", StepId::from(62u64), "b", 512).unwrap();
        let e = r.admits("s", StepId::from(63u64), "a", 2000).unwrap_err();
        assert!(e.to_string().contains("--rendezvous-task-bytes"), "{e}");
        // A waiting receiver takes any size (its tensor is never kept), and a step that
        // ended drops what comes: both pass.
        let waiting = r.recv(key(62, "w"));
        r.admits("s", StepId::from(62u64), "w", 1 << 40).unwrap();
        drop(waiting);
        r.end_step(StepId::from(64u64));
        r.admits("s", StepId::from(64u64), "e", 1 << 40).unwrap();
        // An announced size past the address space counts as the largest.
        let e = r
            .admits("s", StepId::from(62u64), "c", usize::MAX)
            .unwrap_err();
        assert!(e.to_string().contains("--rendezvous-step-bytes"), "{e}");
    }

    #[test]
    fn make_room_near_usize_max_neither_wraps_nor_panics() {
        // No tensor is this large, so the state is made by hand: an unclaimed step of
        // `usize::MAX - 10` bytes under a limit of `usize::MAX` (the flag's largest value),
        // and room asked for 100 bytes more, whose sum wraps.
        let since = Instant::now();
        let big = StepId::from(70u64);
        let other = StepId::from(71u64);
        let held = usize::MAX - 10;
        let with_big_step = || {
            let mut g = Inner::default();
            g.unclaimed.insert(
                big,
                Unclaimed {
                    since,
                    bytes: held,
                    session: Arc::from("s"),
                },
            );
            g.unclaimed_bytes = held;
            g.unclaimed_order.push_back((big, since));
            g
        };
        // Kept (it is the step asking): no room, and nothing dropped.
        let mut g = with_big_step();
        assert!(!g.make_room(100, usize::MAX, big));
        assert_eq!(g.unclaimed_bytes, held);
        assert!(g.unclaimed.contains_key(&big));
        assert_eq!(g.unclaimed_order.len(), 1, "the kept step stays in line");
        assert!(!g.ended.contains_key(&big));
        // For another step: the big one is dropped (expired), which makes room.
        let mut g = with_big_step();
        assert!(g.make_room(100, usize::MAX, other));
        assert_eq!(g.unclaimed_bytes, 0);
        assert!(matches!(
            g.ended.get(&big),
            Some(Ended::Expired(Limit::RendezvousUnclaimedBytes))
        ));
        // At exactly the limit it fits, and one byte more does not.
        let mut g = with_big_step();
        assert!(g.make_room(10, usize::MAX, big));
        assert!(!g.make_room(11, usize::MAX, big));
    }

    #[test]
    fn pending_bytes_are_bounded_per_step_and_per_task() {
        let limits = RendezvousLimits {
            step_bytes: 3000,
            task_bytes: 4000,
            ..RendezvousLimits::default()
        };
        let r = Rendezvous::with_limits(limits);
        let t = || Tensor::from_vec([256], vec![0.0f32; 256]).unwrap(); // 1 KiB of data
        let _a = r.begin_step(StepId::from(50u64), "s").unwrap();
        let _b = r.begin_step(StepId::from(51u64), "s").unwrap();
        r.deliver("s", key(50, "0"), t()).unwrap();
        r.deliver("s", key(50, "1"), t()).unwrap();
        let e = r.deliver("s", key(50, "2"), t()).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.to_string().contains("--rendezvous-step-bytes"), "{e}");
        r.deliver("s", key(51, "0"), t()).unwrap();
        let e = r.deliver("s", key(51, "1"), t()).unwrap_err();
        assert!(e.to_string().contains("--rendezvous-task-bytes"), "{e}");
        // Receiving frees the step's share.
        assert!(block_on(r.recv(key(50, "0"))).is_ok());
        r.deliver("s", key(50, "2"), t()).unwrap();
    }

    #[test]
    fn reservations_bound_tensors_still_arriving_and_are_released_when_taken_or_dropped() {
        // Each reservation of 1,000 data bytes on edge "eN" counts 1,130 bytes.
        let limits = RendezvousLimits {
            unclaimed_ttl: Duration::from_secs(3600),
            unclaimed_bytes: 10_000,
            step_bytes: 10_000,
            task_bytes: 3_500,
        };
        let r = Arc::new(Rendezvous::with_limits(limits));
        let one = entry_bytes(1000, "e0");
        let t = || Tensor::from_vec([250], vec![0.0f32; 250]).unwrap();
        let step = StepId::from(70u64);
        // Many tensors at once for steps not started: past the task bound the next is
        // refused, naming the flag, the step and the edge, though nothing was delivered.
        let mut held: Vec<Reservation> = (0..3)
            .map(|i| r.reserve("s", StepId::from(70 + i), "e0", 1000).unwrap())
            .collect();
        assert_eq!((r.pending_bytes(), r.incoming_bytes()), (3 * one, 3 * one));
        assert_eq!(r.pending(), 0, "a reservation is no entry");
        let e = r.reserve("s", StepId::from(73u64), "e0", 1000).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        let msg = e.to_string();
        for w in ["--rendezvous-task-bytes", "still arriving", "\"e0\""] {
            assert!(msg.contains(w), "{w:?} not in {msg}");
        }
        // A second tensor for a key with one still arriving is a duplicate.
        let e = r.reserve("s", step, "e0", 10).unwrap_err();
        assert!(matches!(e, RendezvousError::Duplicate { .. }), "{e}");
        let e = r.deliver("s", key(70, "e0"), t()).unwrap_err();
        assert!(matches!(e, RendezvousError::Duplicate { .. }), "{e}");
        // A stream that fails drops its reservation: the room is back.
        drop(held.pop());
        assert_eq!(r.incoming_bytes(), 2 * one);
        held.push(r.reserve("s", StepId::from(73u64), "e0", 1000).unwrap());
        // Delivered with its reservation, a tensor keeps the same bytes (now an entry)...
        let first = held.remove(0);
        r.deliver_reserved(first, t()).unwrap();
        assert_eq!((r.pending_bytes(), r.incoming_bytes()), (3 * one, 2 * one));
        assert_eq!(r.unclaimed_bytes(), one);
        // ...and the step that takes it frees them.
        let running = r.begin_step(step, "s").unwrap();
        block_on(r.recv(key(70, "e0"))).unwrap();
        assert_eq!(r.pending_bytes(), 2 * one);
        // A receiver waiting: the reservation counts until its tensor goes straight to it.
        let waiting = r.recv(key(70, "w"));
        let w = r.reserve("s", step, "w", 1000).unwrap();
        assert_eq!(r.incoming_bytes(), 2 * one + entry_bytes(1000, "w"));
        r.deliver_reserved(w, t()).unwrap();
        block_on(waiting).unwrap();
        assert_eq!(r.pending_bytes(), 2 * one);
        // Aborting a step with a tensor still arriving: the bytes stay counted while the
        // stream holds its destination, and go when it ends (its late tensor is dropped).
        let late = r.reserve("s", step, "late", 1000).unwrap();
        r.abort("s", step).unwrap();
        drop(running);
        assert_eq!(r.incoming_bytes(), 2 * one + entry_bytes(1000, "late"));
        r.deliver_reserved(late, t()).unwrap();
        assert_eq!(r.pending_bytes(), 2 * one);
        // Ending the steps of the other reservations does not release them either; their
        // streams' ends do, and then every byte is back.
        r.end_step(StepId::from(71u64));
        assert_eq!(r.incoming_bytes(), 2 * one);
        drop(held);
        assert_eq!((r.pending_bytes(), r.incoming_bytes()), (0, 0));
        assert_eq!(r.unclaimed_bytes(), 0);
    }
}
