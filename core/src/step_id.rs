//! [`StepId`]: the id of one step, 128 bits wide.
//!
//! A cluster step's id keys its tensors in every task's rendezvous and names the step in
//! an abort, so the master draws it at random ([`StepId::random`]): 128 random bits,
//! fresh per step and per process, which no other client can guess from the ids it sees
//! (its own steps') and which an earlier process of the same server never handed out. A
//! local session's steps, which never leave the process, are numbered by a counter
//! ([`StepId::from`] a `u64`).
//!
//! # Where the bits come from
//!
//! Each thread keeps a ChaCha20 generator whose 256-bit key (the seed) it draws from the
//! operating system's random number generator on its first id; every id after that is
//! the next 128 bits of that generator's keystream, with no system call. The argument
//! that this keeps the properties above:
//!
//! - *Unguessable.* ChaCha20's keystream is, as far as anyone knows, indistinguishable
//!   from random to whoever lacks the key, whatever other output of it they saw; the key
//!   never leaves the process's memory. Guessing an id another client will get means
//!   breaking ChaCha20, or guessing 256 bits of key, or 128 of id.
//! - *Fresh per step.* A keystream never repeats within its 2^68-byte period, so a
//!   thread's ids differ for as long as any process runs; the ids of two threads or two
//!   processes come from independent keys, and collide no more often than 128 bits drawn
//!   from the OS would (about 2^-64 after 2^32 ids).
//! - *Fresh per process.* Every process (and every thread) draws its own key at its
//!   first id, so a restarted server hands out ids unrelated to its earlier incarnation's.
//!   The generator is not fork-safe: a process that `fork`s without `exec` would share
//!   its parent's keystream. Magpie never forks so (its children are `exec`ed).
//!
//! Reading process memory is out of scope: whoever can also reads the live steps' ids.

use std::cell::RefCell;
use std::fmt;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// The id of one step: 128 bits. Shown as 32 lowercase hex digits.
///
/// Kept as big-endian bytes (ordered as the number), not a `u128`, so that errors
/// carrying one stay 8-byte aligned and small.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StepId([u8; 16]);

/// The operating system's random number generator failed (practically never).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(pub String);

/// A step id on the wire that is not 16 bytes long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a step id is 16 bytes, got {0}")]
pub struct StepIdLengthError(pub usize);

impl StepId {
    /// Bits in a step id.
    pub const BITS: u32 = 128;

    /// The id with this value.
    pub const fn from_u128(value: u128) -> StepId {
        StepId(value.to_be_bytes())
    }

    /// The id's value.
    pub const fn as_u128(self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// A fresh id of 128 random bits: the next 128 bits of this thread's ChaCha20
    /// keystream, keyed from the operating system's random number generator on the
    /// thread's first id (see the [module docs](self) for why that is as good as asking
    /// the OS each time).
    ///
    /// # Errors
    ///
    /// [`RandomError`] when the operating system's generator fails to key this thread's
    /// (on its first id only; a later id is tried again).
    ///
    /// # Examples
    /// ```
    /// use magpie_core::StepId;
    /// let (a, b) = (StepId::random().unwrap(), StepId::random().unwrap());
    /// assert_ne!(a, b);
    /// assert_eq!(a.to_string().len(), 32);
    /// ```
    pub fn random() -> Result<StepId, RandomError> {
        thread_local! {
            /// This thread's generator, keyed on its first use.
            static RNG: RefCell<Option<ChaCha20Rng>> = const { RefCell::new(None) };
        }
        RNG.with(|rng| {
            let mut rng = rng.borrow_mut();
            let rng = match &mut *rng {
                Some(rng) => rng,
                None => {
                    let mut key = [0u8; 32];
                    getrandom::fill(&mut key).map_err(|e| RandomError(e.to_string()))?;
                    rng.insert(ChaCha20Rng::from_seed(key))
                }
            };
            let mut bits = [0u8; 16];
            rng.fill_bytes(&mut bits);
            Ok(StepId(bits))
        })
    }

    /// The id as 16 big-endian bytes (its form on a wire).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The id from its 16 big-endian bytes.
    ///
    /// # Errors
    ///
    /// [`StepIdLengthError`] unless `bytes` has 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<StepId, StepIdLengthError> {
        let b: [u8; 16] = bytes
            .try_into()
            .map_err(|_| StepIdLengthError(bytes.len()))?;
        Ok(StepId(b))
    }
}

/// 128 random bits ([`StepId::random`]), as 32 lowercase hex digits: the random part of
/// names that act as capabilities (worker-side session names, partition handles).
pub(crate) fn random_hex() -> Result<String, RandomError> {
    StepId::random().map(|id| id.to_string())
}

impl From<u64> for StepId {
    fn from(value: u64) -> StepId {
        StepId::from_u128(u128::from(value))
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

impl fmt::Debug for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_bytes_and_show_as_hex() {
        let id = StepId::random().unwrap();
        assert_eq!(StepId::from_bytes(&id.to_bytes()).unwrap(), id);
        assert_eq!(StepId::from_bytes(&[1, 2, 3]), Err(StepIdLengthError(3)));
        assert_eq!(
            StepId::from(255u64).to_string(),
            "000000000000000000000000000000ff"
        );
    }

    #[test]
    fn random_ids_are_distinct_within_and_across_threads_and_every_bit_varies() {
        let draw = || {
            (0..4096)
                .map(|_| StepId::random().unwrap())
                .collect::<Vec<_>>()
        };
        let mut ids = draw();
        // Another thread keys its own generator: its ids are not this thread's again.
        ids.extend(std::thread::spawn(draw).join().unwrap());
        let mut set: Vec<u128> = ids.iter().map(|id| id.as_u128()).collect();
        set.sort_unstable();
        set.dedup();
        assert_eq!(set.len(), ids.len(), "a step id repeated");
        // Each of the 128 bits is set in about half of 8192 random ids (the chance of
        // falling outside 3/8..5/8 is below 2^-100 per bit).
        for bit in 0..StepId::BITS {
            let ones = set.iter().filter(|v| (*v >> bit) & 1 == 1).count();
            assert!(
                (3 * set.len() / 8..5 * set.len() / 8).contains(&ones),
                "bit {bit} set in {ones} of {} ids",
                set.len()
            );
        }
    }
}
