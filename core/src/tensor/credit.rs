//! Each thread's credit on the memory accounts it uses lately: the fast path of every
//! [`Charge`](super::Charge) made and dropped ([`account`](super::account)'s module docs,
//! "Credit", give the protocol and its bounds).
//!
//! # Protocol
//!
//! A thread's cache has [`WAYS`] entries. An entry that holds an account's state has
//! *claimed* a slot of it ([`Inner::claim`]): the entry holds one reference to the state
//! ([`REF`](super::account::REF) units) and the slot's credit, in bytes, which the state's
//! counter includes. Only this thread writes the slot's credit while the entry holds it.
//!
//! - **Take** `b` bytes: when the slot's credit is at least `b`, it drops by `b` and the
//!   charge owns those bytes of the counter. Otherwise the thread adds what is missing
//!   plus a chunk to the counter under the limit (or, when that does not fit, only what
//!   is missing, or refuses).
//! - **Give** `b` bytes (a charge's drop): when an entry holds the state, its credit grows
//!   by `b`; past twice its chunk, all but a chunk goes back to the counter. Otherwise the
//!   charge's bytes go straight back to the counter (which may free the state).
//! - **Evict** (a new account with the cache full, or the thread's exit): the slot's
//!   credit goes back, the slot is freed for reuse, and the entry's reference is given up.
//!
//! An entry never frees the state while it holds it (its reference is part of the
//! counter), so a charge on another thread dropping its last bytes cannot free the state
//! under an entry; and an entry's address comparison can never match a new state at a
//! recycled address while it holds the old one.
//!
//! # Memory ordering
//!
//! As [`account`](super::account): the slot's credit is an `AtomicU64` written with plain
//! `Relaxed` loads and stores by its owner (no other thread writes it, so no update is
//! lost); readers sum it under the slot list's lock, which also orders claims and
//! evictions.

use std::cell::Cell;
use std::ptr::{self, NonNull};
use std::sync::atomic::Ordering;

use super::account::{Inner, MemoryAccount, Slot, CHUNK_MAX};

/// Accounts a thread holds credit on at once (the device's and a step's, in the common
/// case; behaviour at the time of writing).
pub(crate) const WAYS: usize = 4;

/// The credit a thread takes at once on an account under `limit`: at most
/// [`CHUNK_MAX`], and no more than 1/4096 of the limit (0: exact, for limits of 4 KiB or
/// less).
#[inline]
pub(crate) fn chunk_for(limit: u64) -> u64 {
    (limit >> 12).min(CHUNK_MAX)
}

/// One cache entry: the state it holds (null: none), its slot, its chunk, and the limit
/// its credit was taken under.
struct Entry {
    inner: Cell<*const Inner>,
    slot: Cell<*const Slot>,
    chunk: Cell<u64>,
    /// Credit serves a request under this limit or a looser one only: bytes taken under
    /// a loose limit (an unconditional charge's) do not count under a tight one.
    limit: Cell<u64>,
}

/// A thread's entries, and the next one to evict when all are taken.
struct Cache {
    entries: [Entry; WAYS],
    next: Cell<usize>,
}

thread_local! {
    static CACHE: Cache = const {
        Cache {
            entries: [const {
                Entry {
                    inner: Cell::new(ptr::null()),
                    slot: Cell::new(ptr::null()),
                    chunk: Cell::new(0),
                    limit: Cell::new(0),
                }
            }; WAYS],
            next: Cell::new(0),
        }
    };
}

/// Takes `bytes` (> 0) of the state `inner` under `limit`, from this thread's credit when
/// it has enough; else the bytes in use (refused, nothing taken).
///
/// The caller holds a reference to the state (a `&MemoryAccount`).
#[inline]
pub(crate) fn take(inner: NonNull<Inner>, bytes: u64, limit: u64) -> Result<(), u64> {
    match CACHE.try_with(|c| c.take(inner, bytes, limit)) {
        Ok(Some(done)) => done,
        // No cache (the thread is exiting) or no entry to be had: the counter itself.
        _ => direct(inner, bytes, limit),
    }
}

/// Takes `bytes` on the shared counter alone.
fn direct(inner: NonNull<Inner>, bytes: u64, limit: u64) -> Result<(), u64> {
    // SAFETY: the caller of `take` holds a reference.
    let state = unsafe { inner.as_ref() };
    state
        .try_add(bytes, limit)
        .map_err(|_| MemoryAccount::in_use_of(inner))
}

/// Gives back `bytes` (> 0) of the state `inner`: to this thread's credit when it holds
/// the state, else to the counter.
///
/// # Safety
/// The caller holds `bytes` units of the state (a charge's) and gives them up.
#[inline]
pub(crate) unsafe fn give(inner: NonNull<Inner>, bytes: u64) {
    if CACHE.try_with(|c| c.give(inner, bytes)) != Ok(true) {
        // SAFETY: the caller's bytes, given up.
        unsafe { Inner::release(inner, bytes) };
    }
}

impl Cache {
    #[inline]
    fn find(&self, inner: NonNull<Inner>) -> Option<&Entry> {
        let inner = inner.as_ptr().cast_const();
        self.entries.iter().find(|e| e.inner.get() == inner)
    }

    /// [`take`] through this cache; `None` when no entry could be had.
    #[inline]
    fn take(&self, inner: NonNull<Inner>, bytes: u64, limit: u64) -> Option<Result<(), u64>> {
        let entry = match self.find(inner) {
            Some(e) => e,
            None => self.claim(inner)?,
        };
        // SAFETY: the entry holds the state, whose slots live as long as it does.
        let slot = unsafe { &*entry.slot.get() };
        let credit = slot.credit.load(Ordering::Relaxed);
        if credit >= bytes && limit >= entry.limit.get() {
            slot.credit.store(credit - bytes, Ordering::Relaxed);
            return Some(Ok(()));
        }
        Some(refill(entry, slot, inner, credit, bytes, limit))
    }

    /// An entry holding `inner`, evicting one when all are taken; `None` when the state
    /// has no reference to spare.
    #[cold]
    fn claim(&self, inner: NonNull<Inner>) -> Option<&Entry> {
        let i = match self.entries.iter().position(|e| e.inner.get().is_null()) {
            Some(i) => i,
            None => {
                let i = self.next.get();
                self.next.set((i + 1) % WAYS);
                self.entries[i].evict();
                i
            }
        };
        // SAFETY: the caller of `take` holds a reference.
        let slot = unsafe { inner.as_ref() }.claim()?;
        let entry = &self.entries[i];
        entry.inner.set(inner.as_ptr());
        entry.slot.set(slot.as_ptr());
        entry.chunk.set(0);
        entry.limit.set(0);
        Some(entry)
    }

    /// [`give`] through this cache: whether an entry took the bytes.
    #[inline]
    fn give(&self, inner: NonNull<Inner>, bytes: u64) -> bool {
        let Some(entry) = self.find(inner) else {
            return false;
        };
        // SAFETY: the entry holds the state, whose slots live as long as it does.
        let slot = unsafe { &*entry.slot.get() };
        // Cannot overflow: both are at most 2^48 bytes.
        let credit = slot.credit.load(Ordering::Relaxed) + bytes;
        let keep = entry.chunk.get();
        if credit <= 2 * keep {
            slot.credit.store(credit, Ordering::Relaxed);
        } else {
            slot.credit.store(keep, Ordering::Relaxed);
            // SAFETY: the entry holds the state. The entry's reference stays, so this
            // cannot bring the counter to zero.
            unsafe { &*entry.inner.get() }.give_back_some(credit - keep);
        }
        true
    }
}

/// The slow path of a take: the credit is less than `bytes`, or was taken under a looser
/// limit than `limit`.
#[cold]
#[inline(never)]
fn refill(
    entry: &Entry,
    slot: &Slot,
    inner: NonNull<Inner>,
    mut credit: u64,
    bytes: u64,
    limit: u64,
) -> Result<(), u64> {
    // SAFETY: the entry holds the state.
    let state = unsafe { inner.as_ref() };
    if credit > 0 && limit < entry.limit.get() {
        // Taken under a looser limit: back to the counter, to be checked under this one.
        slot.credit.store(0, Ordering::Relaxed);
        // The entry's reference stays: this cannot bring the counter to zero.
        state.give_back_some(credit);
        credit = 0;
    }
    // Now `credit < bytes`, and it was taken under `limit` or a tighter one: all of it
    // goes into this request, and the new credit is taken under `limit`.
    let missing = bytes - credit;
    let chunk = chunk_for(limit);
    let refilled = if chunk > 0 && state.try_add(missing.saturating_add(chunk), limit).is_ok() {
        chunk
    } else if state.try_add(missing, limit).is_ok() {
        0
    } else {
        return Err(MemoryAccount::in_use_of(inner));
    };
    slot.credit.store(refilled, Ordering::Relaxed);
    entry.chunk.set(chunk);
    entry.limit.set(limit);
    Ok(())
}

impl Entry {
    /// Gives the entry's state back (credit, slot and reference), if it holds one.
    fn evict(&self) {
        let inner = self.inner.replace(ptr::null());
        let slot = self.slot.replace(ptr::null());
        let held = (
            NonNull::new(inner.cast_mut()),
            NonNull::new(slot.cast_mut()),
        );
        if let (Some(inner), Some(slot)) = held {
            // SAFETY: the entry held `inner` through `slot`, and forgets both here.
            unsafe { Inner::unclaim(inner, slot) };
        }
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        for entry in &self.entries {
            entry.evict();
        }
    }
}
