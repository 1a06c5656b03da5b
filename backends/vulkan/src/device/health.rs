//! Device health: the deadline of every wait on the GPU, and the failed state a device
//! enters when a wait runs past it or the driver reports the device lost.
//!
//! ## Protocol
//! - A device starts *healthy*. Every wait on a submission (the fence waiter's) runs
//!   with the device's wait deadline ([`Health::wait_timeout`], 60 s unless set with
//!   [`VulkanDevice::set_wait_timeout`](super::VulkanDevice::set_wait_timeout)).
//! - A wait that runs past its deadline, or a `VK_ERROR_DEVICE_LOST`, moves the device
//!   to *failed* ([`Health::fail`]) with a message naming the device and the op. The
//!   move happens once: the first failure's message is kept.
//! - A failed device never becomes healthy again (a lost Vulkan device cannot be
//!   recovered; a hung one cannot be trusted). Every later submission fails at once with
//!   that message ([`Health::check`]), and the fence waiter stops waiting: it polls each
//!   remaining fence once, without blocking.
//!
//! ## Memory ordering
//! The failure message is published through a [`OnceLock`] (release on set, acquire on
//! get), so a thread that sees the device failed also sees the whole message. The
//! deadline is a plain setting read with `Relaxed`: a changed deadline applies to the
//! waits that start after the change is seen, and orders nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use magpie_core::KernelError;

/// The default deadline of one wait on the GPU.
pub(crate) const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether a device still works, and how long a wait on it may take.
#[derive(Debug)]
pub(crate) struct Health {
    /// Set once, when the device fails: why.
    failure: OnceLock<String>,
    /// The deadline of one wait, in nanoseconds.
    wait_timeout_ns: AtomicU64,
}

impl Health {
    /// A healthy device with the default deadline.
    pub(crate) fn new() -> Health {
        Health {
            failure: OnceLock::new(),
            wait_timeout_ns: AtomicU64::new(DEFAULT_WAIT_TIMEOUT.as_nanos() as u64),
        }
    }

    /// The deadline of one wait.
    pub(crate) fn wait_timeout(&self) -> Duration {
        Duration::from_nanos(self.wait_timeout_ns.load(Ordering::Relaxed))
    }

    /// Sets the deadline of the waits that start from now on.
    pub(crate) fn set_wait_timeout(&self, timeout: Duration) {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        self.wait_timeout_ns.store(ns, Ordering::Relaxed);
    }

    /// Why the device failed, if it did.
    pub(crate) fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Marks the device failed with `why` (the first failure's message is kept), and
    /// returns the message the device now fails with.
    pub(crate) fn fail(&self, why: String) -> String {
        if self.failure.set(why.clone()).is_ok() {
            tracing::error!(error = %why, "Vulkan device marked failed");
        }
        self.failure.get().cloned().unwrap_or(why)
    }

    /// `Ok` while the device works; the device's failure as an error of `op` once it
    /// failed.
    pub(crate) fn check(&self, op: &str) -> Result<(), KernelError> {
        match self.failure() {
            None => Ok(()),
            Some(why) => Err(KernelError::Device(format!(
                "{op}: the device failed earlier and takes no more work: {why}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_is_kept_and_fails_later_work() {
        let h = Health::new();
        assert!(h.check("Add").is_ok());
        assert_eq!(h.wait_timeout(), DEFAULT_WAIT_TIMEOUT);
        h.set_wait_timeout(Duration::from_millis(5));
        assert_eq!(h.wait_timeout(), Duration::from_millis(5));
        assert_eq!(
            h.fail("GPU:0 hung in MatMul".into()),
            "GPU:0 hung in MatMul"
        );
        assert_eq!(h.fail("GPU:0 lost".into()), "GPU:0 hung in MatMul");
        let e = h.check("Add").unwrap_err();
        assert!(
            matches!(&e, KernelError::Device(m) if m.starts_with("Add: ") && m.contains("GPU:0 hung in MatMul")),
            "{e}"
        );
    }
}
