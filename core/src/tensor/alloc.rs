//! Fallible allocation of host tensor buffers against a device's memory limit:
//! [`MemoryLimit`] and [`AllocError`].
//!
//! Nothing here aborts the process. A request is refused at once, before anything is
//! allocated, when its bytes exceed the device's limit ([`AllocFailure::OverLimit`]) or
//! any possible allocation ([`AllocFailure::TooLarge`]); otherwise the buffer is reserved
//! with `try_reserve_exact` (or `alloc_zeroed` for zeros), and an allocator that says no
//! gives [`AllocFailure::OutOfMemory`]. Kernels turn an [`AllocError`] into
//! [`KernelError::ResourceExhausted`](crate::kernel::KernelError::ResourceExhausted), to
//! which the session adds the node.
//!
//! A device that counts its memory gives its [`MemoryAccount`]
//! ([`Device::host_memory`]): a buffer reserved through [`MemoryLimit::reserve`] is then
//! charged to it until the tensor made of it is dropped, and the limit bounds the bytes
//! the account's tensors hold at once ([`AllocFailure::InUse`]). Without an account the
//! limit bounds one allocation, not the sum of a device's live tensors (for a step, that
//! is the executor's memory budget, `SessionOptions::memory_budgets`).

use std::fmt;
use std::sync::Arc;

use super::account::{Charge, MemoryAccount, MAX_BYTES};
use super::dtype::DType;
use super::shape::byte_size;
use super::step_memory::StepMemory;
use super::storage::{Storage, StorageElement};
use crate::device::Device;
use crate::limits::Limit;

/// Why an allocation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocFailure {
    /// More bytes than the device's memory limit.
    OverLimit {
        /// The limit in bytes.
        limit: u64,
    },
    /// More bytes than the device's memory limit leaves, given the bytes its live
    /// tensors hold (a device that counts them: [`MemoryLimit::with_account`]).
    InUse {
        /// Bytes the device's tensors held when the request came.
        in_use: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// More bytes than the memory limit of the step that asked leaves, given the bytes
    /// its buffers hold ([`StepMemory`](super::StepMemory)).
    StepInUse {
        /// Bytes the step's buffers held when the request came.
        in_use: u64,
        /// The step's limit in bytes.
        limit: u64,
    },
    /// More bytes than any allocation may have (`isize::MAX`).
    TooLarge,
    /// The allocator could not provide the memory.
    OutOfMemory,
}

impl fmt::Display for AllocFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocFailure::OverLimit { limit } => {
                write!(f, "more than the device's memory limit of {limit} bytes")
            }
            AllocFailure::InUse { in_use, limit } => write!(
                f,
                "{in_use} bytes are in use of the device's memory limit of {limit} bytes"
            ),
            AllocFailure::StepInUse { in_use, limit } => write!(
                f,
                "{in_use} bytes are in use of the step's memory limit of {limit} bytes"
            ),
            AllocFailure::TooLarge => f.write_str("more than any allocation can hold"),
            AllocFailure::OutOfMemory => f.write_str("the allocator is out of memory"),
        }
    }
}

/// A tensor buffer that could not be allocated: what, where, why and, for a refusal by
/// the device's limit, the flag that raises it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot allocate {bytes} bytes ({elements} elements of {dtype}) on {device}: {failure}{}",
    raise_hint(*.raise_with, *.failure)
)]
pub struct AllocError {
    /// The device (or `"the host"`) whose memory was asked for.
    pub device: String,
    /// The element type.
    pub dtype: DType,
    /// Elements asked for.
    pub elements: usize,
    /// Bytes asked for (exact: computed in 128 bits).
    pub bytes: u128,
    /// Why it was refused.
    pub failure: AllocFailure,
    /// The limit whose flag raises the limit that refused: the device's
    /// ([`MemoryLimit::raised_by`]) or, for [`AllocFailure::StepInUse`], the step's.
    pub raise_with: Option<Limit>,
}

/// " (raise it with `magpie server FLAG`)" for a refusal by a limit that has a flag.
fn raise_hint(limit: Option<Limit>, failure: AllocFailure) -> String {
    match (limit, failure) {
        (
            Some(l),
            AllocFailure::OverLimit { .. }
            | AllocFailure::InUse { .. }
            | AllocFailure::StepInUse { .. },
        ) => {
            format!(" (raise it with `magpie server {}`)", l.flag())
        }
        _ => String::new(),
    }
}

/// Host allocation for one device: its name (for errors), its memory limit and, when the
/// device counts its memory, its [`MemoryAccount`]. Cheap to clone; a kernel factory makes
/// one from its device ([`MemoryLimit::of`]) and allocates every output through it:
/// [`reserve`](Self::reserve) checks the limit and charges the account, then
/// [`with_capacity`](Self::with_capacity) and friends allocate (uncounted on their own),
/// and [`Tensor::from_vec_charged`](super::Tensor::from_vec_charged) makes the tensor that
/// carries the charge.
///
/// ```
/// use magpie_core::tensor::{AllocFailure, MemoryLimit};
/// let cpu = MemoryLimit::new("/device:CPU:0", Some(1 << 20));
/// assert_eq!(cpu.zeros::<f32>(1024)?.len(), 1024);
/// let e = cpu.filled(1 << 20, 1.0f32).unwrap_err();
/// assert_eq!(e.failure, AllocFailure::OverLimit { limit: 1 << 20 });
/// assert_eq!(e.bytes, 4 << 20);
/// # Ok::<(), magpie_core::tensor::AllocError>(())
/// ```
///
/// With an account, the limit bounds the bytes the account's tensors hold at once:
///
/// ```
/// use std::sync::Arc;
/// use magpie_core::limits::Limit;
/// use magpie_core::tensor::{AllocFailure, DType, MemoryAccount, MemoryLimit, Tensor};
/// let account = Arc::new(MemoryAccount::new());
/// let cpu = MemoryLimit::new("/device:CPU:0", Some(4096))
///     .with_account(Arc::clone(&account))
///     .raised_by(Limit::CpuMemory);
/// let charge = cpu.reserve(DType::F32, 768)?;
/// let t = Tensor::from_vec_charged([768], cpu.zeros::<f32>(768)?, None, charge).unwrap();
/// assert_eq!(account.in_use(), 3072);
/// let e = cpu.reserve(DType::F32, 512).unwrap_err();
/// assert_eq!(e.failure, AllocFailure::InUse { in_use: 3072, limit: 4096 });
/// assert!(e.to_string().contains("--cpu-memory-limit"), "{e}");
/// drop(t);
/// assert_eq!(account.in_use(), 0);
/// # Ok::<(), magpie_core::tensor::AllocError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MemoryLimit {
    device: Arc<str>,
    limit: Option<u64>,
    account: Option<Arc<MemoryAccount>>,
    raise_with: Option<Limit>,
}

impl Default for MemoryLimit {
    fn default() -> Self {
        MemoryLimit::host()
    }
}

impl MemoryLimit {
    /// Host memory with no limit but the allocator's (used outside any device, e.g. by
    /// [`Tensor::zeros`](super::Tensor::zeros)).
    pub fn host() -> MemoryLimit {
        MemoryLimit::new("the host", None)
    }

    /// Allocation for `device`, at most `limit` bytes per buffer (`None`: no limit but the
    /// allocator's).
    pub fn new(device: impl Into<Arc<str>>, limit: Option<u64>) -> MemoryLimit {
        MemoryLimit {
            device: device.into(),
            limit,
            account: None,
            raise_with: None,
        }
    }

    /// Allocation for `device`, as it says ([`Device::host_memory`]: by default under its
    /// [`Device::memory_limit`], uncounted).
    pub fn of(device: &dyn Device) -> MemoryLimit {
        device.host_memory()
    }

    /// This allocation charging what [`reserve`](Self::reserve) grants to `account`; the
    /// limit then bounds the bytes the account holds at once.
    pub fn with_account(mut self, account: Arc<MemoryAccount>) -> MemoryLimit {
        self.account = Some(account);
        self
    }

    /// This allocation naming `limit`'s flag in its refusals by the limit.
    pub fn raised_by(mut self, limit: Limit) -> MemoryLimit {
        self.raise_with = Some(limit);
        self
    }

    /// The account buffers are charged to, if the device counts its memory.
    pub fn account(&self) -> Option<&Arc<MemoryAccount>> {
        self.account.as_ref()
    }

    /// The device name errors give.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The most bytes one buffer may take, if limited.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    fn error(&self, dtype: DType, elements: usize, failure: AllocFailure) -> AllocError {
        AllocError {
            device: self.device.to_string(),
            dtype,
            elements,
            bytes: elements as u128 * dtype.size_of() as u128,
            failure,
            raise_with: self.raise_with,
        }
    }

    /// Checks a buffer of `elements` elements of `dtype` (as [`check`](Self::check)) and,
    /// when the device counts its memory, charges its bytes to the account: the charge
    /// goes into the tensor made of the buffer
    /// ([`Tensor::from_vec_charged`](super::Tensor::from_vec_charged)), and dropping it
    /// (the tensor's last reference, or an error before the tensor is made) gives the
    /// bytes back. `None` when neither the device keeps an account nor a step with a
    /// memory limit is current, or the buffer has no bytes.
    ///
    /// While a step with a memory limit runs the calling kernel
    /// ([`StepMemory::scope`](super::StepMemory::scope)), the bytes are charged to the step
    /// as well, under its limit, and the charge gives them back to both.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`AllocFailure::InUse`] when the bytes the account
    /// holds and these would pass the limit; [`AllocFailure::StepInUse`] when the bytes the
    /// current step's buffers hold and these would pass the step's limit.
    // Every output of every kernel comes through here: always inlined into the backend's
    // allocation path (a call and the `Option<Charge>` moved through a `Result` cost
    // about 25 instructions per allocation where it was not).
    #[inline(always)]
    pub fn reserve(&self, dtype: DType, elements: usize) -> Result<Option<Charge>, AllocError> {
        let bytes = self.check(dtype, elements)?;
        if bytes == 0 {
            return Ok(None);
        }
        let device = match (self.account.as_ref(), self.limit) {
            (None, _) => None,
            (Some(account), Some(limit)) => Some(
                MemoryAccount::try_charge(account, bytes as u64, limit).map_err(|in_use| {
                    self.error(dtype, elements, AllocFailure::InUse { in_use, limit })
                })?,
            ),
            // An account counts at most 2^48 - 1 bytes: no allocation can be larger.
            (Some(account), None) => Some(
                MemoryAccount::try_charge(account, bytes as u64, MAX_BYTES)
                    .map_err(|_| self.error(dtype, elements, AllocFailure::TooLarge))?,
            ),
        };
        if !StepMemory::is_current() {
            return Ok(device);
        }
        self.charge_step(device, dtype, elements, bytes as u64)
    }

    /// [`reserve`](Self::reserve)'s charge to the current step (kept out of line: only
    /// steps with a memory limit come here).
    #[inline(never)]
    fn charge_step(
        &self,
        device: Option<Charge>,
        dtype: DType,
        elements: usize,
        bytes: u64,
    ) -> Result<Option<Charge>, AllocError> {
        StepMemory::with_current(|step| {
            let Some(step) = step else {
                return Ok(device);
            };
            let limit = step.limit();
            match step.try_charge(device, bytes) {
                Ok(charge) => Ok(Some(charge)),
                Err(in_use) => Err(AllocError {
                    raise_with: limit.raised_by,
                    ..self.error(
                        dtype,
                        elements,
                        AllocFailure::StepInUse {
                            in_use,
                            limit: limit.bytes,
                        },
                    )
                }),
            }
        })
    }

    /// Charges `bytes` to the account (if any) whatever the limit: for a buffer that is
    /// already allocated, e.g. an input's elements taken back and reused in place for an
    /// output (taking them released their old charge, see
    /// [`Tensor::try_into_vec`](super::Tensor::try_into_vec)). `None` when the device keeps
    /// no account and no step with a memory limit is current, or `bytes` is 0. The current
    /// step (as for [`reserve`](Self::reserve)) is charged too, whatever its limit.
    #[inline]
    pub fn charge(&self, bytes: usize) -> Option<Charge> {
        if bytes == 0 {
            return None;
        }
        let device = self
            .account
            .as_ref()
            .map(|account| MemoryAccount::charge(account, bytes as u64));
        if !StepMemory::is_current() {
            return device;
        }
        StepMemory::charge_current_unchecked(device, bytes as u64)
    }

    /// The bytes of `elements` elements of `dtype`, when one buffer of them is allowed.
    ///
    /// # Errors
    /// [`AllocFailure::OverLimit`] beyond the limit; [`AllocFailure::TooLarge`] beyond
    /// `isize::MAX` bytes.
    pub fn check(&self, dtype: DType, elements: usize) -> Result<usize, AllocError> {
        let bytes = byte_size(dtype, elements)
            .ok_or_else(|| self.error(dtype, elements, AllocFailure::TooLarge))?;
        match self.limit {
            Some(limit) if bytes as u64 > limit => {
                Err(self.error(dtype, elements, AllocFailure::OverLimit { limit }))
            }
            _ => Ok(bytes),
        }
    }

    /// An empty vector with room for exactly `n` elements.
    ///
    /// # Errors
    /// As [`check`](Self::check), and [`AllocFailure::OutOfMemory`] when the allocator
    /// refuses.
    pub fn with_capacity<T: StorageElement>(&self, n: usize) -> Result<Vec<T>, AllocError> {
        self.check(T::DTYPE, n)?;
        let mut v = Vec::new();
        v.try_reserve_exact(n)
            .map_err(|_| self.error(T::DTYPE, n, AllocFailure::OutOfMemory))?;
        Ok(v)
    }

    /// `n` copies of `value`.
    ///
    /// # Errors
    /// As [`with_capacity`](Self::with_capacity).
    pub fn filled<T: StorageElement>(&self, n: usize, value: T) -> Result<Vec<T>, AllocError> {
        if value == T::ZERO {
            return self.zeros(n);
        }
        let mut v = self.with_capacity(n)?;
        v.resize(n, value);
        Ok(v)
    }

    /// `n` zeros (or `false`s). Large buffers come zeroed from the OS: no page is touched
    /// until it is used.
    ///
    /// # Errors
    /// As [`with_capacity`](Self::with_capacity).
    pub fn zeros<T: StorageElement>(&self, n: usize) -> Result<Vec<T>, AllocError> {
        self.check(T::DTYPE, n)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let layout = std::alloc::Layout::array::<T>(n)
            .map_err(|_| self.error(T::DTYPE, n, AllocFailure::TooLarge))?;
        // SAFETY: `layout` has a non-zero size: `n > 0` and every element type is at least
        // one byte.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(self.error(T::DTYPE, n, AllocFailure::OutOfMemory));
        }
        // SAFETY: `ptr` comes from the global allocator (which `Vec` uses) with the layout
        // of `[T; n]`, i.e. `T`'s alignment and `n * size_of::<T>()` bytes, so it is a
        // valid buffer of capacity `n`; all `n` elements are initialised, because all-zero
        // bytes are a valid value of every element type (`StorageElement: Element` is
        // sealed to f32, f64, i32, i64 — zero — and bool — `false`).
        Ok(unsafe { Vec::from_raw_parts(ptr.cast::<T>(), n, n) })
    }

    /// `n` zeros of `dtype` as a storage.
    ///
    /// # Errors
    /// As [`zeros`](Self::zeros).
    pub fn zeros_storage(&self, dtype: DType, n: usize) -> Result<Storage, AllocError> {
        Ok(match dtype {
            DType::F32 => Storage::F32(self.zeros(n)?),
            DType::F64 => Storage::F64(self.zeros(n)?),
            DType::I32 => Storage::I32(self.zeros(n)?),
            DType::I64 => Storage::I64(self.zeros(n)?),
            DType::Bool => Storage::Bool(self.zeros(n)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_are_zero_and_sized_exactly() {
        let host = MemoryLimit::host();
        let v = host.zeros::<f64>(1000).unwrap();
        assert_eq!((v.len(), v.capacity()), (1000, 1000));
        assert!(v.iter().all(|&x| x == 0.0));
        assert!(host.zeros::<bool>(3).unwrap().iter().all(|&b| !b));
        assert!(host.zeros::<i64>(0).unwrap().is_empty());
        assert_eq!(host.filled(3, 7i32).unwrap(), vec![7, 7, 7]);
        assert_eq!(host.with_capacity::<f32>(5).unwrap().capacity(), 5);
        assert_eq!(
            host.zeros_storage(DType::I32, 2).unwrap(),
            Storage::I32(vec![0, 0])
        );
    }

    // Asks the real allocator for 2^62 bytes: Miri's allocator stops the interpreter
    // instead of failing the request, so this one runs natively only.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn absurd_requests_are_errors_not_aborts() {
        let host = MemoryLimit::host();
        let e = host.zeros::<f32>(1 << 62).unwrap_err();
        assert_eq!(e.failure, AllocFailure::TooLarge);
        assert_eq!(e.bytes, 1 << 64);
        assert_eq!(
            e.to_string(),
            "cannot allocate 18446744073709551616 bytes (4611686018427387904 elements of f32) \
             on the host: more than any allocation can hold"
        );
        assert!(host.with_capacity::<i64>(usize::MAX).is_err());
        assert!(host.filled(usize::MAX / 2, true).is_err());
    }

    #[test]
    fn the_limit_bounds_one_buffer() {
        let dev = MemoryLimit::new("/device:CPU:0", Some(4096));
        assert_eq!(dev.check(DType::F32, 1024).unwrap(), 4096);
        let e = dev.zeros::<f32>(1025).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot allocate 4100 bytes (1025 elements of f32) on /device:CPU:0: more than \
             the device's memory limit of 4096 bytes"
        );
        assert!(dev.filled(4097, true).is_err());
        assert_eq!(dev.limit(), Some(4096));
        assert_eq!(dev.device(), "/device:CPU:0");
    }
}
