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
//! The account therefore always equals the sum of the charges alive: when every tensor a
//! step made is gone, it is back where it started.
//!
//! # Memory ordering
//!
//! A buffer allocated while a step with a memory limit runs is charged to that step's
//! account as well ([`StepMemory`](super::StepMemory)): its one [`Charge`] then gives its
//! bytes back to both accounts when it drops.
//!
//! Every update is one `Relaxed` read-modify-write of one `AtomicU64`. The counter guards
//! no other memory — nothing is published through it — so it needs no ordering with other
//! locations; all that exactness needs is that every update lands, which a
//! read-modify-write guarantees whatever the ordering (one location's modifications are
//! totally ordered). A charge's subtraction happens after its addition (the same thread,
//! or a later one that received the tensor through the executor's synchronised slots), and
//! coherence keeps that order in the counter's modification order, so the counter never
//! goes below the bytes of the charges alive. A reader ([`MemoryAccount::in_use`], a
//! metrics scrape) sees some value of that order: current, but not ordered with what other
//! threads are doing.
//!
//! Under a limit ([`MemoryAccount::try_charge`]) the bytes are added first and taken back
//! when the sum passes the limit, so a request that is refused raises the counter
//! briefly: a concurrent request near the limit may be refused because of it, and a scrape
//! may see it. Requests beyond the limit on their own are refused before they reach the
//! account ([`MemoryLimit`](super::MemoryLimit)), so the transient excess is at most the
//! limit per concurrent request. A request whose sum would pass `u64::MAX` is refused
//! whatever the limit, so a charge that succeeds never leaves the counter wrapped.
//!
//! # Cost
//!
//! A charge is one relaxed add on the counter, plus one on the account's reference count
//! (the charge holds the account, so a buffer may outlive its device); its release is the
//! two matching subtractions. No lock. A step's account doubles that for the buffers
//! charged to it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
#[derive(Default)]
pub struct MemoryAccount {
    in_use: AtomicU64,
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
        MemoryAccount::default()
    }

    /// The bytes charged now (a relaxed load: cheap enough for every scrape).
    pub fn in_use(&self) -> u64 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Charges `bytes` unconditionally: the bytes count until the charge drops.
    pub fn charge(account: &Arc<MemoryAccount>, bytes: u64) -> Charge {
        account.add(bytes);
        Charge {
            account: Arc::clone(account),
            bytes,
            step: None,
        }
    }

    /// Charges `bytes` when the account then holds at most `limit`.
    ///
    /// # Errors
    /// The bytes in use before this request (the request is not charged) when they and
    /// `bytes` would pass `limit`.
    pub fn try_charge(account: &Arc<MemoryAccount>, bytes: u64, limit: u64) -> Result<Charge, u64> {
        account.try_add(bytes, limit)?;
        Ok(Charge {
            account: Arc::clone(account),
            bytes,
            step: None,
        })
    }

    /// Adds `bytes` when the account then holds at most `limit`; else the bytes in use
    /// before (nothing added). The caller gives them back (a [`Charge`] does).
    pub(crate) fn try_add(&self, bytes: u64, limit: u64) -> Result<(), u64> {
        let before = self.in_use.fetch_add(bytes, Ordering::Relaxed);
        // A sum past `u64::MAX` is refused too, whatever the limit (even `u64::MAX`).
        match before.checked_add(bytes) {
            Some(after) if after <= limit => Ok(()),
            _ => {
                self.in_use.fetch_sub(bytes, Ordering::Relaxed);
                Err(before)
            }
        }
    }

    /// Adds `bytes` unconditionally. The caller gives them back (a [`Charge`] does).
    pub(crate) fn add(&self, bytes: u64) {
        self.in_use.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Bytes charged to a [`MemoryAccount`] (and, for a buffer a step with a memory limit
/// allocated, to the step's account too), given back when this drops. A counted tensor's
/// buffer holds one ([`Tensor::from_vec_charged`](super::Tensor::from_vec_charged)).
pub struct Charge {
    account: Arc<MemoryAccount>,
    bytes: u64,
    /// The account of the step that allocated the buffer, when it is not `account`.
    step: Option<Arc<MemoryAccount>>,
}

impl Charge {
    /// This charge, its bytes (already added there) also counted by the step account
    /// `step` until it drops.
    pub(crate) fn with_step(mut self, step: Arc<MemoryAccount>) -> Charge {
        self.step = Some(step);
        self
    }

    /// A charge of `bytes` already added to `account` (a step's, for a buffer of a device
    /// that keeps no account).
    pub(crate) fn added(account: Arc<MemoryAccount>, bytes: u64) -> Charge {
        Charge {
            account,
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
        Arc::ptr_eq(&self.account, account)
            || self.step.as_ref().is_some_and(|s| Arc::ptr_eq(s, account))
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
    fn drop(&mut self) {
        self.account.in_use.fetch_sub(self.bytes, Ordering::Relaxed);
        if let Some(step) = &self.step {
            step.in_use.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_count_until_dropped_and_refusals_leave_nothing() {
        let account = Arc::new(MemoryAccount::new());
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
        // The charge keeps the account alive after its owner lets go.
        let weak = Arc::downgrade(&account);
        drop(account);
        assert_eq!(weak.upgrade().map(|a| a.in_use()), Some(50));
        drop(b);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn a_request_that_would_wrap_the_counter_is_refused_even_without_a_limit() {
        let account = Arc::new(MemoryAccount::new());
        let held = MemoryAccount::try_charge(&account, 10, u64::MAX).unwrap();
        // 10 + (u64::MAX - 5) wraps to 4: refused, and the counter is back at 10.
        assert_eq!(
            MemoryAccount::try_charge(&account, u64::MAX - 5, u64::MAX).unwrap_err(),
            10
        );
        assert_eq!(account.in_use(), 10);
        let rest = MemoryAccount::try_charge(&account, u64::MAX - 10, u64::MAX).unwrap();
        assert_eq!(account.in_use(), u64::MAX);
        drop((held, rest));
        assert_eq!(account.in_use(), 0);
    }

    #[test]
    fn concurrent_charges_return_to_zero() {
        let account = Arc::new(MemoryAccount::new());
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let account = &account;
                s.spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..200u64 {
                        if let Ok(c) = MemoryAccount::try_charge(account, t + i % 7 + 1, 1 << 20) {
                            held.push(c);
                        }
                        if i % 3 == 0 {
                            held.pop();
                        }
                    }
                });
            }
        });
        assert_eq!(account.in_use(), 0);
    }
}
