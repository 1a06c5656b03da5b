//! Counting the bytes a device's live host tensors hold: [`MemoryAccount`] and the
//! [`Charge`] each counted buffer carries.
//!
//! # Protocol
//!
//! A device that counts its memory owns one [`MemoryAccount`] (shared by its handles).
//! Every buffer its kernels allocate is *charged* to it: the allocation adds the buffer's
//! bytes to the account and yields a [`Charge`], which moves into the tensor's shared
//! buffer (beside its storage) and subtracts exactly those bytes when it drops — when the
//! last [`Tensor`](super::Tensor) referring to the buffer goes, whichever thread drops it
//! and however long the tensor outlived its step (a fetched output, a variable's value).
//! So:
//!
//! - clones, reshapes and forwarded inputs (`Identity`, `Reshape`, an in-place kernel
//!   writing through [`Tensor::as_mut_slice`](super::Tensor::as_mut_slice)) share one
//!   buffer, hence one charge: counted once;
//! - a kernel that takes an input's elements back
//!   ([`Tensor::try_into_vec`](super::Tensor::try_into_vec)) releases that buffer's charge
//!   with it, and charges the output it builds from them again
//!   ([`MemoryLimit::charge`](super::MemoryLimit::charge)): counted once, to the device
//!   that made the output;
//! - a buffer of zero bytes is never charged.
//!
//! [`MemoryAccount::in_use`] therefore always equals the sum of the charges alive (exactly
//! when no charge is being made or dropped meanwhile): when every tensor a step made is
//! gone, it is back where it started.
//!
//! A buffer allocated while a step with a memory limit runs is charged to that step's
//! account as well ([`StepMemory`](super::StepMemory)): its one [`Charge`] then gives its
//! bytes back to both accounts when it drops.
//!
//! # Credit: how charges stay off a shared cache line
//!
//! Every worker thread allocates and frees scalars all the time, so an account updated
//! with one atomic read-modify-write per charge and per release is one cache line that
//! every worker writes. Instead each thread keeps *credit* on the few accounts it uses
//! lately (the `credit` cache): bytes taken from the account's shared
//! counter in chunks, which its charges consume and its releases refill with plain
//! thread-owned loads and stores. The shared counter is touched only when a thread's
//! credit runs out or grows past twice a chunk.
//!
//! The shared counter (`units`) holds the bytes of the charges alive *plus* the credit the
//! threads hold; [`MemoryAccount::in_use`] subtracts the credit (each thread publishes its
//! credit in a slot the account lists). A limit is checked on the shared counter, so:
//!
//! - **a limit is never exceeded**: the charges alive never hold more than the limit
//!   when every charge to the account is made under it. Credit serves a request under the
//!   limit it was taken under or a looser one only; but when unconditional charges (or
//!   charges under a looser limit) have taken the account past a limit, a thread may
//!   still charge the credit it held under that limit (at most `2 × chunk`) — as before,
//!   unconditional charges are not refused;
//! - **a request may be refused early** by at most the credit the *other* threads hold
//!   on the account: at most `2 × chunk` each, where `chunk` =
//!   `min(CHUNK_MAX, limit / 4096)` (8 KiB under a limit of 32 MiB or more; 0 —
//!   exact — under one of 4 KiB or less). A thread that is refused has already used its
//!   own credit towards the request, and the refusal reports the bytes in use (without
//!   anyone's credit).
//!
//! Credit stays with a thread until it charges an account it holds no credit on and its
//! cache of `WAYS` accounts is full, or the thread exits.
//!
//! # Lifetime
//!
//! A charge may outlive its device (a fetched tensor dropped after the session), so the
//! account's state lives in a separately allocated `Inner` that the account's last
//! [`Charge`] frees. Its counter counts *units*: the low 48 bits are bytes (of charges and
//! of credit), and each of the bits above counts one reference, `REF`: one for the
//! [`MemoryAccount`] while it lives, one per thread cache entry that holds the account.
//! Each charge's bytes keep the state alive as a reference count would; the state is
//! freed by whoever brings the counter to zero. No charge or cache entry holds an `Arc`, so
//! making and dropping a charge touches no shared reference count.
//!
//! An account counts at most 2^48 − 1 bytes (256 TiB, above any machine's memory: x86-64
//! user space is 128 TiB): a request past that under a limit is refused, and an
//! unconditional charge past it panics (it cannot be memory a process holds).
//!
//! # Memory ordering
//!
//! The counter guards no other memory while the account lives — nothing is published
//! through it — so adds are `Relaxed`: whoever adds holds a reference or bytes already (a
//! `&MemoryAccount`, or a cache entry), so the counter cannot reach zero meanwhile, and
//! the limit check is a compare-exchange loop on the one location (its modifications are
//! totally ordered, so two requests cannot both take the last bytes). Subtractions are
//! `Release`, and the one that brings the counter to zero issues an `Acquire` fence before
//! freeing the state: every use of the state by other threads (which ended in their
//! subtraction) happens before the free, as with `Arc`. A thread's credit lives in an
//! `AtomicU64` only that thread writes (a plain load and store, no read-modify-write);
//! [`MemoryAccount::in_use`] reads the slots under the slot list's lock, so a scrape may
//! see a charge's bytes moving between a thread's credit and the counter a moment late:
//! current, but not ordered with what other threads are doing.
//!
//! # Cost
//!
//! A charge from credit: a thread-local lookup among `WAYS`
//! entries, a load and a store of the thread's own slot. A release on a thread that holds
//! credit on the account: the same. No lock and no shared write on either path; a refill
//! or a return of a chunk is one compare-exchange (or subtraction) on the shared counter.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::credit;

/// One reference to an account's state, in its counter's units (the bits above the bytes).
pub(crate) const REF: u64 = 1 << 48;
/// The most bytes an account counts (its counter's low bits).
pub(crate) const MAX_BYTES: u64 = REF - 1;
/// The most credit a thread takes from an account at once (see the module docs).
pub const CHUNK_MAX: u64 = 8 << 10;

/// What a [`MemoryAccount`] and its charges share (see the module docs, "Lifetime").
pub(crate) struct Inner {
    /// `REF` × (the account, if alive, + cache entries holding it) + bytes of the
    /// charges alive + credit held by threads.
    units: AtomicU64,
    /// Every slot a thread ever held on this account (claimed or free for reuse); freed
    /// with the state. Claims, releases and readers of the sum take the lock.
    slots: Mutex<Vec<NonNull<Slot>>>,
    /// Counts the state's free, for tests that prove it happens once.
    #[cfg(test)]
    freed: Option<Arc<std::sync::atomic::AtomicUsize>>,
}

/// One thread's credit on an account: written by the thread that claimed it (and, with
/// the list's lock held, by its release), read by [`MemoryAccount::in_use`].
pub(crate) struct Slot {
    pub(crate) credit: AtomicU64,
    claimed: AtomicBool,
}

// A panic leaves the state consistent: every update is one atomic operation, and the
// lock guards only the list of slots (nothing panics while it is held; a poisoned lock
// is taken anyway).
impl std::panic::RefUnwindSafe for Inner {}
impl std::panic::UnwindSafe for Inner {}

impl Inner {
    /// The list of slots, locked. (A std mutex rather than parking_lot's: Miri models
    /// its futex calls.)
    fn slots(&self) -> MutexGuard<'_, Vec<NonNull<Slot>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `bytes` when the bytes then held (charges and credit) are at most `limit`;
    /// else the bytes held before. The caller holds a reference or bytes of the state.
    pub(crate) fn try_add(&self, bytes: u64, limit: u64) -> Result<(), u64> {
        let limit = limit.min(MAX_BYTES);
        let mut current = self.units.load(Ordering::Relaxed);
        loop {
            let held = current & MAX_BYTES;
            match held.checked_add(bytes) {
                Some(after) if after <= limit => {}
                _ => return Err(held),
            }
            match self.units.compare_exchange_weak(
                current,
                current + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(now) => current = now,
            }
        }
    }

    /// Gives back `units` that the caller holds, when others still hold some (so the
    /// state cannot be freed by this).
    pub(crate) fn give_back_some(&self, units: u64) {
        self.units.fetch_sub(units, Ordering::Release);
    }

    /// Gives back `units` the caller holds; frees the state when they were the last.
    ///
    /// # Safety
    /// `this` points to a live state and the caller holds at least `units` of its counter
    /// (bytes of a charge or of credit, references of an account or a cache entry), which
    /// it gives up: it must not use `this` after the call.
    pub(crate) unsafe fn release(this: NonNull<Inner>, units: u64) {
        // SAFETY: the caller's units keep the state alive until this subtraction.
        let before = unsafe { this.as_ref() }
            .units
            .fetch_sub(units, Ordering::Release);
        if before == units {
            // Pairs with every other holder's `Release` subtraction: their uses of the
            // state happen before the free.
            fence(Ordering::Acquire);
            // SAFETY: the counter is zero, so nobody holds the state any more, and nobody
            // can take a hold (adding needs one); it came from `Box::into_raw` in
            // `MemoryAccount::new`.
            drop(unsafe { Box::from_raw(this.as_ptr()) });
        }
    }

    /// Takes a reference for a thread's cache entry and a slot for its credit (a free one
    /// or a new one); `None` when 2^15 entries already hold the state (the caller then
    /// charges the counter directly). The caller holds a reference or bytes.
    pub(crate) fn claim(&self) -> Option<NonNull<Slot>> {
        let mut slots = self.slots();
        let mut current = self.units.load(Ordering::Relaxed);
        loop {
            if current >= u64::MAX / 2 {
                return None;
            }
            match self.units.compare_exchange_weak(
                current,
                current + REF,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        // SAFETY: slots in the list live as long as the state (freed in its drop).
        let free = slots
            .iter()
            .copied()
            .find(|s| !unsafe { s.as_ref() }.claimed.load(Ordering::Relaxed));
        if let Some(slot) = free {
            // SAFETY: as above.
            unsafe { slot.as_ref() }
                .claimed
                .store(true, Ordering::Relaxed);
            return Some(slot);
        }
        let slot = NonNull::from(Box::leak(Box::new(Slot {
            credit: AtomicU64::new(0),
            claimed: AtomicBool::new(true),
        })));
        slots.push(slot);
        Some(slot)
    }

    /// Gives back a cache entry's slot (its credit returned to the counter) and its
    /// reference; frees the state when they were the last units.
    ///
    /// # Safety
    /// `this` is live, and `slot` is one of its slots, claimed by the caller's cache entry,
    /// which holds a reference to the state and gives it up: the caller must not use
    /// `this` or `slot` after the call.
    pub(crate) unsafe fn unclaim(this: NonNull<Inner>, slot: NonNull<Slot>) {
        {
            // SAFETY: the entry's reference keeps the state, hence the slot, alive.
            let inner = unsafe { this.as_ref() };
            // Under the lock, so that `in_use` sees the credit either in the slot or gone
            // from the counter, never both.
            let _list = inner.slots();
            // SAFETY: as above.
            let slot = unsafe { slot.as_ref() };
            let credit = slot.credit.swap(0, Ordering::Relaxed);
            slot.claimed.store(false, Ordering::Relaxed);
            // The entry's reference stays until below: this cannot free the state.
            inner.give_back_some(credit);
        }
        // SAFETY: the entry held one reference, given up here.
        unsafe { Inner::release(this, REF) };
    }

    /// The bytes of the charges alive: those counted, less the threads' credit.
    fn in_use(&self) -> u64 {
        let slots = self.slots();
        let credit: u64 = slots
            .iter()
            // SAFETY: slots in the list live as long as the state.
            .map(|s| unsafe { s.as_ref() }.credit.load(Ordering::Relaxed))
            .sum();
        (self.units.load(Ordering::Relaxed) & MAX_BYTES).saturating_sub(credit)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        #[cfg(test)]
        if let Some(freed) = &self.freed {
            freed.fetch_add(1, Ordering::Relaxed);
        }
        let slots = self.slots.get_mut().unwrap_or_else(PoisonError::into_inner);
        for slot in slots.drain(..) {
            // SAFETY: every slot came from `Box::leak` in `claim` and is freed only here,
            // once: the counter is zero, so no cache entry holds it.
            drop(unsafe { Box::from_raw(slot.as_ptr()) });
        }
    }
}

/// The bytes a device's live host tensors hold. Made by a device that counts them, read
/// through [`Device::memory_in_use`](crate::device::Device::memory_in_use); see the
/// [module docs](self) for the protocol.
///
/// ```
/// use std::sync::Arc;
/// use magpie_core::tensor::MemoryAccount;
/// let account = Arc::new(MemoryAccount::new());
/// let charge = MemoryAccount::charge(&account, 4096);
/// assert_eq!(account.in_use(), 4096);
/// assert_eq!(MemoryAccount::try_charge(&account, 8192, 10_000).unwrap_err(), 4096);
/// drop(charge);
/// assert_eq!(account.in_use(), 0);
/// ```
pub struct MemoryAccount {
    inner: NonNull<Inner>,
}

// SAFETY: the state is atomics and a lock-protected list of slots whose fields are atomics;
// the account holds one reference to it, given back once, in its drop.
unsafe impl Send for MemoryAccount {}
// SAFETY: as above: every method through `&self` uses the atomics or the lock.
unsafe impl Sync for MemoryAccount {}

impl Default for MemoryAccount {
    fn default() -> Self {
        MemoryAccount::new()
    }
}

impl Drop for MemoryAccount {
    fn drop(&mut self) {
        // SAFETY: the account's own reference, given up once.
        unsafe { Inner::release(self.inner, REF) };
    }
}

impl fmt::Debug for MemoryAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryAccount")
            .field("in_use", &self.in_use())
            .finish()
    }
}

impl MemoryAccount {
    /// An account holding nothing.
    pub fn new() -> MemoryAccount {
        let inner = Box::new(Inner {
            units: AtomicU64::new(REF),
            slots: Mutex::new(Vec::new()),
            #[cfg(test)]
            freed: None,
        });
        MemoryAccount {
            inner: NonNull::from(Box::leak(inner)),
        }
    }

    fn state(&self) -> &Inner {
        // SAFETY: the account's reference keeps the state alive while `self` is.
        unsafe { self.inner.as_ref() }
    }

    /// The bytes charged now (without any thread's credit; takes the slot list's lock,
    /// cheap enough for every scrape).
    pub fn in_use(&self) -> u64 {
        self.state().in_use()
    }

    /// Charges `bytes` unconditionally: the bytes count until the charge drops.
    ///
    /// # Panics
    /// When the account would count more than 2^48 − 1 bytes (no process holds that
    /// much memory).
    #[inline]
    pub fn charge(account: &Arc<MemoryAccount>, bytes: u64) -> Charge {
        account.take_unchecked(bytes);
        Charge::added(account, bytes)
    }

    /// Charges `bytes` when the account then holds at most `limit` (see the module docs
    /// for the credit other threads hold).
    ///
    /// # Errors
    /// The bytes in use before this request (the request is not charged) when they and
    /// `bytes` would pass `limit`.
    #[inline]
    pub fn try_charge(account: &Arc<MemoryAccount>, bytes: u64, limit: u64) -> Result<Charge, u64> {
        account.take(bytes, limit)?;
        Ok(Charge::added(account, bytes))
    }

    /// Adds `bytes` when the account then holds at most `limit`; else the bytes in use
    /// before (nothing added). The caller gives them back (a [`Charge`] does).
    #[inline]
    pub(crate) fn take(&self, bytes: u64, limit: u64) -> Result<(), u64> {
        if bytes == 0 {
            return Ok(());
        }
        credit::take(self.inner, bytes, limit)
    }

    /// Adds `bytes` whatever the limit. The caller gives them back (a [`Charge`] does).
    ///
    /// # Panics
    /// As [`charge`](Self::charge).
    #[inline]
    pub(crate) fn take_unchecked(&self, bytes: u64) {
        if self.take(bytes, MAX_BYTES).is_err() {
            overflow(bytes)
        }
    }

    /// The bytes in use, after a refusal by the shared counter.
    pub(crate) fn in_use_of(inner: NonNull<Inner>) -> u64 {
        // SAFETY: called with a reference held (a `&MemoryAccount` through `take`).
        unsafe { inner.as_ref() }.in_use()
    }
}

#[cold]
#[inline(never)]
fn overflow(bytes: u64) -> ! {
    panic!("a memory account counts at most 2^48 - 1 bytes; charging {bytes} more would pass it")
}

/// Bytes charged to a [`MemoryAccount`] (and, for a buffer a step with a memory limit
/// allocated, to the step's account too), given back when this drops. A counted tensor's
/// buffer holds one ([`Tensor::from_vec_charged`](super::Tensor::from_vec_charged)).
pub struct Charge {
    /// The account's state; held through `bytes` (a charge of 0 bytes never uses it).
    account: NonNull<Inner>,
    bytes: u64,
    /// The state of the account of the step that allocated the buffer, when it is not
    /// `account`; held through `bytes` as well.
    step: Option<NonNull<Inner>>,
}

// SAFETY: a charge holds its bytes on one or two states made of atomics and a lock, and
// gives them back once, in its drop, from whichever thread.
unsafe impl Send for Charge {}
// SAFETY: `&Charge` only reads its own fields and compares pointers.
unsafe impl Sync for Charge {}

impl Charge {
    /// This charge, its bytes (already added there) also counted by the step account
    /// `step` until it drops.
    #[inline]
    pub(crate) fn with_step(mut self, step: &MemoryAccount) -> Charge {
        self.step = Some(step.inner);
        self
    }

    /// A charge of `bytes` already added to `account` (a step's, for a buffer of a device
    /// that keeps no account).
    #[inline]
    pub(crate) fn added(account: &MemoryAccount, bytes: u64) -> Charge {
        Charge {
            account: account.inner,
            bytes,
            step: None,
        }
    }

    /// The bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether this charge is to `account` (the device's, or the step's).
    pub fn is_to(&self, account: &Arc<MemoryAccount>) -> bool {
        self.account == account.inner || self.step == Some(account.inner)
    }
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Charge")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Drop for Charge {
    #[inline]
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        // SAFETY: the charge holds `bytes` units of each state, given up here once.
        unsafe {
            credit::give(self.account, self.bytes);
            if let Some(step) = self.step {
                credit::give(step, self.bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::tensor::credit::{chunk_for, WAYS};

    #[test]
    fn a_request_that_would_wrap_the_counter_is_refused_even_without_a_limit() {
        let account = Arc::new(MemoryAccount::new());
        let held = MemoryAccount::try_charge(&account, 10, u64::MAX).unwrap();
        // 10 + (u64::MAX - 5) wraps to 4 in a u64: refused, and the account still holds 10.
        assert_eq!(
            MemoryAccount::try_charge(&account, u64::MAX - 5, u64::MAX).unwrap_err(),
            10
        );
        assert_eq!(account.in_use(), 10);
        drop(held);
        assert_eq!(account.in_use(), 0);
    }

    /// An account whose state's free is counted in the returned counter.
    fn watched() -> (Arc<MemoryAccount>, Arc<AtomicUsize>) {
        let freed = Arc::new(AtomicUsize::new(0));
        let account = MemoryAccount::new();
        // SAFETY: nobody else holds the new state yet.
        unsafe { (*account.inner.as_ptr()).freed = Some(Arc::clone(&freed)) };
        (Arc::new(account), freed)
    }

    #[test]
    fn charges_count_until_dropped_and_refusals_leave_nothing() {
        let (account, freed) = watched();
        let a = MemoryAccount::charge(&account, 100);
        let b = MemoryAccount::try_charge(&account, 50, 150).unwrap();
        assert_eq!((account.in_use(), a.bytes(), b.bytes()), (150, 100, 50));
        assert!(a.is_to(&account));
        assert_eq!(
            MemoryAccount::try_charge(&account, 1, 150).unwrap_err(),
            150
        );
        assert_eq!(account.in_use(), 150);
        drop(a);
        assert_eq!(account.in_use(), 50);
        // The charge keeps the account's state alive after its owner lets go; its drop
        // (here, on another thread: no credit there) frees the state once.
        drop(account);
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert_eq!(
            freed.load(Ordering::Relaxed),
            0,
            "this thread's credit holds it"
        );
        // This thread's cache entry holds the state until evicted: charge enough other
        // accounts to evict it.
        let others: Vec<_> = (0..WAYS).map(|_| Arc::new(MemoryAccount::new())).collect();
        let held: Vec<_> = others.iter().map(|o| MemoryAccount::charge(o, 1)).collect();
        assert_eq!(freed.load(Ordering::Relaxed), 1);
        drop(held);
    }

    #[test]
    fn a_state_is_freed_once_when_its_last_holder_is_a_thread_that_exits() {
        let (account, freed) = watched();
        let charge = std::thread::scope(|s| {
            s.spawn(|| MemoryAccount::charge(&account, 8))
                .join()
                .unwrap()
        });
        // The thread exited: its credit went back.
        assert_eq!(account.in_use(), 8);
        assert_eq!(account.state().units.load(Ordering::Relaxed), REF + 8);
        drop(account);
        assert_eq!(freed.load(Ordering::Relaxed), 0);
        std::thread::spawn(move || drop(charge)).join().unwrap();
        assert_eq!(freed.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn charges_moving_between_threads_are_counted_exactly() {
        let account = Arc::new(MemoryAccount::new());
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Charge>>();
        std::thread::scope(|s| {
            let account = &account;
            s.spawn(move || {
                for i in 0..50u64 {
                    let batch = (0..20)
                        .map(|j| MemoryAccount::charge(account, 1 + (i + j) % 9))
                        .collect();
                    tx.send(batch).unwrap();
                }
            });
            s.spawn(move || {
                let mut kept = Vec::new();
                for (i, batch) in rx.iter().enumerate() {
                    // This thread charges too, so it holds credit the drops refill.
                    kept.push(MemoryAccount::try_charge(account, 4, 1 << 30).unwrap());
                    if i % 2 == 0 {
                        drop(batch);
                    } else {
                        kept.extend(batch);
                    }
                }
                let expected: u64 = kept.iter().map(Charge::bytes).sum();
                assert_eq!(account.in_use(), expected);
            });
        });
        assert_eq!(account.in_use(), 0);
    }

    // Several threads charge small buffers under one limit: the charges alive never pass
    // it, and a refusal comes at most the other threads' credit early (module docs).
    #[test]
    fn a_limit_is_never_passed_and_refusals_come_at_most_the_others_credit_early() {
        const THREADS: u64 = 3;
        let limit = 1 << 16;
        // Fewer under Miri, still past the limit.
        let steps = if cfg!(miri) { 300 } else { 2_000 };
        let slack = (THREADS - 1) * 2 * chunk_for(limit);
        assert!(slack > 0);
        let account = Arc::new(MemoryAccount::new());
        let refused: Vec<bool> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let account = &account;
                    s.spawn(move || {
                        // Charge until the first refusal, then hold on: the others only
                        // add meanwhile, so the bytes in use reported can only be above
                        // those at the refusal.
                        let mut held = Vec::new();
                        for i in 0..steps {
                            let bytes = 64 + (t * 7 + i) % 512;
                            match MemoryAccount::try_charge(account, bytes, limit) {
                                Ok(c) => held.push(c),
                                Err(in_use) => {
                                    assert!(in_use + bytes + slack > limit, "{in_use} + {bytes}");
                                    return (true, held);
                                }
                            }
                            assert!(account.in_use() <= limit);
                        }
                        (false, held)
                    })
                })
                .collect();
            let done: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            done.into_iter().map(|(refused, _held)| refused).collect()
        });
        assert!(refused.iter().all(|&r| r), "{refused:?}");
        assert_eq!(account.in_use(), 0);
    }

    #[test]
    fn a_small_limit_is_exact() {
        let account = Arc::new(MemoryAccount::new());
        assert_eq!(chunk_for(4096), 1);
        assert_eq!(chunk_for(4095), 0);
        let a = MemoryAccount::try_charge(&account, 4000, 4000).unwrap();
        assert_eq!(
            MemoryAccount::try_charge(&account, 1, 4000).unwrap_err(),
            4000
        );
        drop(a);
        let b = MemoryAccount::try_charge(&account, 4000, 4000).unwrap();
        assert_eq!(account.in_use(), 4000);
        drop(b);
        // Credit taken by an unconditional charge does not serve a limited one.
        let c = MemoryAccount::charge(&account, 100);
        assert_eq!(
            MemoryAccount::try_charge(&account, 3997, 4096).unwrap_err(),
            100
        );
        let d = MemoryAccount::try_charge(&account, 3996, 4096).unwrap();
        assert_eq!(account.in_use(), 4096);
        drop((c, d));
    }

    #[test]
    fn more_than_an_account_can_count_is_refused_or_panics() {
        let account = Arc::new(MemoryAccount::new());
        assert_eq!(
            MemoryAccount::try_charge(&account, MAX_BYTES + 1, u64::MAX).unwrap_err(),
            0
        );
        let all = MemoryAccount::try_charge(&account, MAX_BYTES, u64::MAX).unwrap();
        let more = std::panic::catch_unwind(|| MemoryAccount::charge(&account, 1));
        assert!(more.is_err());
        drop(all);
        assert_eq!(account.in_use(), 0);
    }

    #[test]
    fn a_thread_switching_among_more_accounts_than_ways_counts_each_exactly() {
        let accounts: Vec<_> = (0..WAYS + 2)
            .map(|_| Arc::new(MemoryAccount::new()))
            .collect();
        let mut held = Vec::new();
        for round in 0..5u64 {
            for (i, a) in accounts.iter().enumerate() {
                held.push(MemoryAccount::charge(a, 1 + round + i as u64));
            }
        }
        for (i, a) in accounts.iter().enumerate() {
            assert_eq!(a.in_use(), (1..=5).map(|r| r + i as u64).sum::<u64>());
        }
        held.retain(|c| c.bytes() % 2 == 0);
        for a in &accounts {
            let expected: u64 = held.iter().filter(|c| c.is_to(a)).map(Charge::bytes).sum();
            assert_eq!(a.in_use(), expected);
        }
        // Accounts dropped while this thread's cache holds some of them.
        drop(accounts);
        drop(held);
    }
}
