//! [`StepId`]: the id of one step, 128 bits wide.
//!
//! A cluster step's id keys its tensors in every task's rendezvous and names the step in
//! an abort, so the master draws it from the operating system's random number generator
//! ([`StepId::random`]): 128 random bits, fresh per step and per process, which no other
//! client can guess from the ids it sees (its own steps') and which an earlier process
//! of the same server never handed out. A local session's steps, which never leave the
//! process, are numbered by a counter ([`StepId::from`] a `u64`).

use std::fmt;

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

    /// A fresh id of 128 bits from the operating system's random number generator.
    ///
    /// # Errors
    ///
    /// [`RandomError`] when the generator fails.
    ///
    /// # Examples
    /// ```
    /// use magpie_core::StepId;
    /// let (a, b) = (StepId::random().unwrap(), StepId::random().unwrap());
    /// assert_ne!(a, b);
    /// assert_eq!(a.to_string().len(), 32);
    /// ```
    pub fn random() -> Result<StepId, RandomError> {
        let mut bits = [0u8; 16];
        getrandom::fill(&mut bits).map_err(|e| RandomError(e.to_string()))?;
        Ok(StepId(bits))
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

/// 128 bits from the operating system's random number generator, as 32 lowercase hex
/// digits: the random part of names that act as capabilities (worker-side session names,
/// partition handles).
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
}
