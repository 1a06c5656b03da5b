//! Tensor slots: where a step keeps each tensor between its producer and its uses, with
//! no lock on the way.
//!
//! # Protocol
//!
//! A slot holds at most one tensor and a count of the uses still to come (consumer
//! inputs plus fetches, from the plan).
//!
//! - **Write, once per step**, by the slot's only producer — the node whose output it is,
//!   before its task finishes, or the step's set-up for a feed, before the run starts. No
//!   use exists yet: the scheduler starts a consumer only after its producer finished
//!   (the producer's pending-count decrement is a `Release`, the consumer's start an
//!   `Acquire`; the loom model `exactly_one_predecessor_makes_a_task_ready_…` checks
//!   that), so the write happens before every use. Fetches are read by the thread that
//!   ran the step, after its completion latch (likewise ordered).
//! - **Use**, by each consumer: every use but the last clones the tensor (an `Arc`
//!   increment) through a shared reference, then decrements the count with `AcqRel`. The
//!   last use takes the tensor out instead (so its memory is freed as soon as possible,
//!   and a kernel holding the only reference may reuse the buffer). A use is the last when
//!   an `Acquire` load finds the count at 1 — every other use then decremented, after its
//!   clone, with `Release` — or when its own decrement brings the count to 0 (it then
//!   drops the slot's reference after its clone). Either way the taker is ordered after
//!   every clone, and nothing reads the slot after the take.
//!
//! - **Lend**, by a synchronous kernel's use ([`Slot::lend`]): instead of cloning, a use
//!   that is not the last borrows the tensor for the kernel's call and decrements the
//!   count only after the call ([`Slot::end_loan`]); the decrement that brings the count
//!   to 0 drops the slot's reference. The argument above holds with "after its clone"
//!   read as "after its call": the taker is ordered after every loan ended. The last use
//!   does not move the tensor out: it gets the slot's place itself ([`Loan::Last`]), to
//!   read the tensor, write it or take it during the call, and empties the place once the
//!   call is over; nothing else touches the place from the last use to the step's end.
//! - **Pinned slots** ([`PINNED`] as the count: a feed, whose caller holds the tensor
//!   anyway, or a constant, whose kernel does) are never counted: every use borrows (or,
//!   for an asynchronous kernel or a fetch, clones), nobody takes, and the step's end
//!   clears the slot. A tensor fanned out from a feed or a constant to thousands of ops
//!   then costs no atomic operation per use, rather than two contended reference-count
//!   updates and a contended use-count decrement.
//!
//! Concurrent uses thus only share the tensor's reference count — a slot with many
//! consumers (one tensor fanned out to thousands of ops) no longer serialises them on a
//! lock.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::tensor::Tensor;

/// The use count of a pinned slot (module docs): uses are not counted.
pub(crate) const PINNED: u32 = u32::MAX;

/// A use of a slot by a synchronous kernel ([`Slot::lend`]).
pub(crate) enum Loan<'a> {
    /// The last use: the slot's place, the caller's alone from now on (`None` in it if
    /// the slot was empty). The caller empties it after the kernel's call.
    Last(&'a mut Option<Tensor>),
    /// A counted use that is not the last: end it with [`Slot::end_loan`] after the call.
    Counted(&'a Tensor),
    /// A use of a pinned slot: nothing to end.
    Pinned(&'a Tensor),
    /// A counted use that is not the last, of a slot its producer left empty; end it
    /// like `Counted`.
    Empty,
    /// A use of a pinned slot its producer left empty: nothing to end.
    PinnedEmpty,
}

/// One tensor of a step and its remaining uses (see the module docs).
pub(crate) struct Slot {
    value: UnsafeCell<Option<Tensor>>,
    uses: AtomicU32,
}

// SAFETY: `value` is written only by the slot's one producer before any use can start,
// then only read (cloned through `&`) by concurrent uses, and taken by the last use,
// which is ordered after every other use; the ordering comes from the scheduler's
// release/acquire edges and the `AcqRel` use count (module docs).
unsafe impl Sync for Slot {}

impl Slot {
    fn new(uses: u32) -> Slot {
        Slot {
            value: UnsafeCell::new(None),
            uses: AtomicU32::new(uses),
        }
    }

    /// Stores the tensor, if any use is to come (the count is not changed).
    ///
    /// # Safety
    ///
    /// The caller is the slot's producer in this step (or the step's set-up, for a feed),
    /// and calls this before any use of the slot can start (module docs).
    #[inline]
    pub(crate) unsafe fn put(&self, tensor: Tensor) -> bool {
        if self.uses.load(Ordering::Relaxed) == 0 {
            return false;
        }
        // SAFETY: per the contract, nobody else touches `value` now.
        unsafe { *self.value.get() = Some(tensor) };
        true
    }

    /// Moves the tensor out of `src` into the slot (as [`put`](Self::put), without
    /// moving it through the caller's frame); leaves `src` empty either way, dropping the
    /// tensor when no use is to come.
    ///
    /// # Safety
    ///
    /// As for [`put`](Self::put).
    #[inline(always)]
    pub(crate) unsafe fn put_from(&self, src: &mut Option<Tensor>) -> bool {
        if self.uses.load(Ordering::Relaxed) == 0 {
            *src = None;
            return false;
        }
        let dst = self.value.get();
        // SAFETY: per the contract, nobody else touches `value` now.
        if unsafe { (*dst).is_none() } {
            // A fresh step's slot: nothing to drop. The tensor's bytes move once, from
            // `src` to `dst`, with no stop on the stack and no call to the drop glue.
            // SAFETY: `dst` is valid and holds `None` (no destructor skipped); `src` is
            // the caller's `&mut`, so it is not `dst`; after the copy `src` is
            // overwritten (without a drop) with `None`, so the tensor has one owner.
            unsafe {
                std::ptr::copy_nonoverlapping(src as *const Option<Tensor>, dst, 1);
                std::ptr::write(src, None);
            }
        } else {
            // SAFETY: as above; the old value is dropped.
            unsafe { *dst = src.take() };
        }
        true
    }

    /// One use: a clone of the tensor, or the tensor itself for the last use (then
    /// `true`). `None` when the slot is empty (its producer never stored a tensor).
    ///
    /// # Safety
    ///
    /// The slot's producer has finished and its write is visible (the caller is a
    /// consumer the scheduler started after it, or the step's thread after the run),
    /// and the caller's uses are among the slot's counted uses.
    #[inline(always)]
    pub(crate) unsafe fn take_use(&self) -> (Option<Tensor>, bool) {
        let uses = self.uses.load(Ordering::Acquire);
        if uses == PINNED {
            // SAFETY: a pinned slot is not written or taken while the step runs.
            return (unsafe { (*self.value.get()).clone() }, false);
        }
        if uses <= 1 {
            // The last use: every other one has decremented after its clone.
            self.uses.store(0, Ordering::Relaxed);
            // SAFETY: no other use is running or will run (module docs).
            return (unsafe { (*self.value.get()).take() }, true);
        }
        // SAFETY: the value is not written while uses remain (module docs).
        let tensor = unsafe { (*self.value.get()).clone() };
        if self.uses.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The others finished meanwhile: we are the last after all.
            // SAFETY: as for the last use above.
            drop(unsafe { (*self.value.get()).take() });
            return (tensor, true);
        }
        (tensor, false)
    }

    /// One use by a synchronous kernel: the tensor itself for the last use, a loan for
    /// the others (module docs).
    ///
    /// # Safety
    ///
    /// As for [`take_use`](Self::take_use); besides, the caller ends a `Counted` or
    /// `Empty` loan with [`end_loan`](Self::end_loan) once it no longer uses the borrow,
    /// and does not use the borrow afterwards; it empties the place of a `Last` loan
    /// before the step ends, and no other call on this slot overlaps its use of that
    /// place (none can, once the uses counted are respected: it is the last).
    #[inline(always)]
    pub(crate) unsafe fn lend(&self) -> Loan<'_> {
        let uses = self.uses.load(Ordering::Acquire);
        if uses <= 1 {
            // The last use: every other one has ended.
            self.uses.store(0, Ordering::Relaxed);
            // SAFETY: no other use is running or will run (module docs), and the
            // producer's write happened before: the place is this use's alone until the
            // step ends, when the pool takes the slots back through `&mut`.
            return Loan::Last(unsafe { &mut *self.value.get() });
        }
        // SAFETY: while uses remain (or the slot is pinned), nobody writes or takes the
        // value (module docs); a loan keeps its use counted until `end_loan`.
        let value = unsafe { &*self.value.get() };
        match (value, uses == PINNED) {
            (Some(t), true) => Loan::Pinned(t),
            (None, true) => Loan::PinnedEmpty,
            (Some(t), false) => Loan::Counted(t),
            (None, false) => Loan::Empty,
        }
    }

    /// Ends a `Counted` or `Empty` loan; returns the tensor when this was the last use
    /// after all (every other use ended meanwhile), for the caller to release.
    ///
    /// # Safety
    ///
    /// The caller holds a `Counted` or `Empty` loan of this slot and no longer uses it.
    #[inline]
    pub(crate) unsafe fn end_loan(&self) -> Option<Tensor> {
        if self.uses.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: every other use ended before our decrement (`AcqRel`), and none
            // will start: we are the last.
            return unsafe { (*self.value.get()).take() };
        }
        None
    }
}

/// Slot arrays of finished steps, kept by their plan for the next steps: a step of a
/// 20,000-node plan then reuses warm memory instead of allocating and faulting in a
/// fresh megabyte. A plan keeps at most [`SPARE_SLOT_BYTES`] of them, so an idle plan of
/// a million nodes holds none (its steps allocate theirs, a small cost beside running a
/// million kernels).
#[derive(Default)]
pub(crate) struct SlotPool(Mutex<Vec<Box<[Slot]>>>);

/// Slot arrays a plan keeps (behaviour at the time of writing): about one per concurrent
/// step.
const SPARE_SLOT_ARRAYS: usize = 4;

/// The most bytes of spare slot arrays a plan keeps (behaviour at the time of writing).
const SPARE_SLOT_BYTES: usize = 16 << 20;

impl SlotPool {
    /// A slot array with every slot empty and its use count from `uses`.
    pub(crate) fn take(&self, uses: &[u32]) -> Box<[Slot]> {
        match self.0.lock().pop() {
            Some(mut slots) => {
                for (slot, n) in slots.iter_mut().zip(uses) {
                    *slot.value.get_mut() = None;
                    *slot.uses.get_mut() = *n;
                }
                slots
            }
            None => uses.iter().map(|n| Slot::new(*n)).collect(),
        }
    }

    /// Keeps a finished step's slots for reuse.
    pub(crate) fn give(&self, mut slots: Box<[Slot]>) {
        for slot in slots.iter_mut() {
            *slot.value.get_mut() = None;
        }
        let mut spare = self.0.lock();
        let bytes = (spare.len() + 1) * std::mem::size_of_val(&*slots);
        if spare.len() < SPARE_SLOT_ARRAYS && bytes <= SPARE_SLOT_BYTES {
            spare.push(slots);
        }
    }
}

/// The slot protocol's uses, sequential and concurrent, sized for Miri (which checks the
/// `UnsafeCell` accesses for data races and the taken tensor for use after free).
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Barrier;

    use super::{Loan, Slot, SlotPool, PINNED};
    use crate::tensor::Tensor;

    #[test]
    fn every_use_but_the_last_clones_and_the_last_takes() {
        let slot = Slot::new(3);
        let t = Tensor::from_vec([2], vec![1.0f32, 2.0]).unwrap();
        // SAFETY: this thread is the producer and no use has started.
        assert!(unsafe { slot.put(t.clone()) });
        for last in [false, false, true] {
            // SAFETY: the write above happened before, on this thread; three uses counted.
            let (got, was_last) = unsafe { slot.take_use() };
            assert!(got.unwrap().shares_buffer_with(&t));
            assert_eq!(was_last, last);
        }
        // The slot gave its reference away: `t` is the only one left.
        let mut t = t;
        assert!(t.as_mut_slice::<f32>().is_some());
    }

    #[test]
    fn put_from_moves_the_tensor_in_once_and_leaves_its_source_empty() {
        let t = Tensor::from_vec([2], vec![1.0f32, 2.0]).unwrap();
        let slot = Slot::new(1);
        let mut src = Some(t.clone());
        // SAFETY: this thread is the producer and no use has started.
        assert!(unsafe { slot.put_from(&mut src) });
        assert!(src.is_none());
        // A second write (not the protocol's, but defined): the old tensor is dropped.
        let mut again = Some(Tensor::scalar(3i32));
        // SAFETY: as above.
        assert!(unsafe { slot.put_from(&mut again) });
        assert!(again.is_none());
        // SAFETY: the writes happened before, on this thread; one use counted.
        let (got, last) = unsafe { slot.take_use() };
        assert_eq!(
            (got.unwrap().to_vec::<i32>().unwrap(), last),
            (vec![3], true)
        );
        // Only `t` is left of the first tensor: the slot dropped its copy.
        let mut t = t;
        assert!(t.as_mut_slice::<f32>().is_some());
        // No use to come: the slot keeps nothing and the source is emptied (dropped).
        let unused = Slot::new(0);
        let mut src = Some(Tensor::scalar(1i32));
        // SAFETY: as above.
        assert!(!unsafe { unused.put_from(&mut src) });
        assert!(src.is_none());
        // SAFETY: nothing was kept; a use (the protocol counts none, but it is defined).
        assert!(unsafe { unused.take_use() }.0.is_none());
    }

    #[test]
    fn a_slot_without_uses_keeps_nothing_and_an_empty_slot_gives_none() {
        let slot = Slot::new(0);
        // SAFETY: as above.
        assert!(!unsafe { slot.put(Tensor::scalar(1i32)) });
        let slot = Slot::new(1);
        // SAFETY: no producer wrote (it produced nothing); one use counted.
        let (got, last) = unsafe { slot.take_use() };
        assert!(got.is_none() && last);
    }

    #[test]
    fn concurrent_uses_share_the_tensor_and_exactly_one_takes_it() {
        const USES: u32 = 4;
        let slot = Slot::new(USES);
        let t = Tensor::from_vec([3], vec![1i32, 2, 3]).unwrap();
        // SAFETY: written before the threads that use it are spawned.
        assert!(unsafe { slot.put(t.clone()) });
        let lasts = AtomicU32::new(0);
        let start = Barrier::new(USES as usize);
        std::thread::scope(|scope| {
            for _ in 0..USES {
                scope.spawn(|| {
                    start.wait();
                    // SAFETY: the spawn orders the write before this use; `USES` counted.
                    let (got, last) = unsafe { slot.take_use() };
                    assert_eq!(got.unwrap().to_vec::<i32>().unwrap(), [1, 2, 3]);
                    if last {
                        lasts.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(lasts.load(Ordering::Relaxed), 1);
        let mut t = t;
        assert!(
            t.as_mut_slice::<i32>().is_some(),
            "the slot still holds a reference"
        );
    }

    #[test]
    fn loans_borrow_until_the_last_use_which_takes_or_the_last_loan_which_drops() {
        let t = Tensor::from_vec([2], vec![1.0f32, 2.0]).unwrap();
        // Two loans, then the last use takes: nothing is cloned on the way.
        let slot = Slot::new(3);
        // SAFETY: this thread is the producer and no use has started.
        assert!(unsafe { slot.put(t.clone()) });
        for _ in 0..2 {
            // SAFETY: the write happened before, on this thread; three uses counted, and
            // each loan is ended below before the next use.
            match unsafe { slot.lend() } {
                Loan::Counted(b) => assert!(b.shares_buffer_with(&t)),
                _ => panic!("a use that is not the last borrows"),
            }
            // SAFETY: the loan above is no longer used.
            assert!(unsafe { slot.end_loan() }.is_none());
        }
        // SAFETY: the last counted use; its place is emptied at once.
        match unsafe { slot.lend() } {
            Loan::Last(place) => assert!(place.take().unwrap().shares_buffer_with(&t)),
            _ => panic!("the last use gets the place"),
        }
        // Two loans taken at once: the one ended last drops the slot's reference.
        let slot = Slot::new(2);
        // SAFETY: as above.
        assert!(unsafe { slot.put(t.clone()) });
        // SAFETY: two uses counted; both loans end below.
        let (a, b) = unsafe { (slot.lend(), slot.lend()) };
        assert!(matches!((a, b), (Loan::Counted(_), Loan::Counted(_))));
        // SAFETY: neither loan is used any more.
        assert!(unsafe { slot.end_loan() }.is_none());
        // SAFETY: as above.
        assert!(unsafe { slot.end_loan() }.is_some_and(|x| x.shares_buffer_with(&t)));
        let mut t = t;
        assert!(
            t.as_mut_slice::<f32>().is_some(),
            "the slot still holds a reference"
        );
    }

    #[test]
    fn a_pinned_slot_lends_and_clones_and_is_never_taken() {
        let t = Tensor::scalar(3i32);
        let slot = Slot::new(PINNED);
        // SAFETY: the only producer, before any use.
        assert!(unsafe { slot.put(t.clone()) });
        for _ in 0..3 {
            // SAFETY: the write happened before; a pinned loan needs no end.
            assert!(matches!(unsafe { slot.lend() }, Loan::Pinned(b) if b.shares_buffer_with(&t)));
            // SAFETY: as above.
            let (got, last) = unsafe { slot.take_use() };
            assert!(got.unwrap().shares_buffer_with(&t) && !last);
        }
        assert_eq!(slot.uses.load(Ordering::Relaxed), PINNED);
        let empty = Slot::new(PINNED);
        // SAFETY: a pinned slot its producer left empty: no loan to end.
        let loan = unsafe { empty.lend() };
        assert!(matches!(loan, Loan::PinnedEmpty));
    }

    #[test]
    fn concurrent_loans_end_with_exactly_one_owner_of_the_tensor() {
        const USES: u32 = 4;
        let slot = Slot::new(USES);
        let t = Tensor::from_vec([3], vec![1i32, 2, 3]).unwrap();
        // SAFETY: written before the threads that use it are spawned.
        assert!(unsafe { slot.put(t.clone()) });
        let owners = AtomicU32::new(0);
        let start = Barrier::new(USES as usize);
        std::thread::scope(|scope| {
            for _ in 0..USES {
                scope.spawn(|| {
                    start.wait();
                    // SAFETY: the spawn orders the write before this use; `USES` counted;
                    // a counted loan is ended once its borrow is read.
                    let owned = match unsafe { slot.lend() } {
                        Loan::Last(place) => place.take(),
                        Loan::Counted(b) => {
                            assert_eq!(b.to_vec::<i32>().unwrap(), [1, 2, 3]);
                            // SAFETY: the borrow is not used after this.
                            unsafe { slot.end_loan() }
                        }
                        _ => panic!("the slot was written and is counted"),
                    };
                    if let Some(owned) = owned {
                        assert_eq!(owned.to_vec::<i32>().unwrap(), [1, 2, 3]);
                        owners.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        assert_eq!(owners.load(Ordering::Relaxed), 1);
        let mut t = t;
        assert!(t.as_mut_slice::<i32>().is_some());
    }

    #[test]
    fn a_pooled_slot_array_comes_back_empty_with_fresh_counts() {
        let pool = SlotPool::default();
        let slots = pool.take(&[1, 2]);
        // SAFETY: the only producer, before any use.
        assert!(unsafe { slots[0].put(Tensor::scalar(1.0f32)) });
        pool.give(slots);
        let slots = pool.take(&[0, 5]);
        assert_eq!(slots[1].uses.load(Ordering::Relaxed), 5);
        // SAFETY: nothing was written this step; one of its counted uses.
        assert!(unsafe { slots[0].take_use() }.0.is_none());
    }
}
