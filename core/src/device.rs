//! The [`Device`] trait: a named place that runs kernels.
//!
//! A device says what it is (its full name and type), how much memory it may use and
//! where it sits (NUMA node). How a kernel executes on it is the kernel's business: CPU
//! kernels run on scheduler workers; a GPU kernel submits to its queue and completes
//! asynchronously through an [`AsyncKernel`](crate::kernel::AsyncKernel).

use std::fmt;

use crate::graph::DeviceName;

/// Where a device's kernels read and write tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemorySpace {
    /// Host memory: tensors are plain [`Storage`](crate::tensor::Storage) any CPU kernel
    /// can read.
    Host,
    /// The device's own memory: its kernels exchange
    /// [`DeviceBuffer`](crate::tensor::DeviceBuffer)s, and the executor inserts the
    /// backend's copy kernels ([`COPY_TO_HOST`], [`COPY_FROM_HOST`]) where a tensor crosses
    /// to or from the host.
    Device,
}

/// The op name of the kernel that copies a tensor from a device's memory to the host,
/// registered by a backend for its device type.
pub const COPY_TO_HOST: &str = "_CopyToHost";
/// The op name of the kernel that copies a host tensor into a device's memory.
pub const COPY_FROM_HOST: &str = "_CopyFromHost";

/// A device that kernels run on. Implemented by backends (and by users: see
/// `examples/custom_backend.rs`).
pub trait Device: Send + Sync + fmt::Debug {
    /// The full name, e.g. `/job:localhost/replica:0/task:0/device:CPU:0`.
    fn name(&self) -> &DeviceName;

    /// The device type (`CPU`, `GPU`, or a custom type); kernels are registered per type.
    fn device_type(&self) -> &str {
        &self.name().device_type
    }

    /// Bytes of memory the device may hold in tensors, if limited.
    fn memory_limit(&self) -> Option<u64> {
        None
    }

    /// Bytes of memory the device's tensors hold now, if the device keeps count (default:
    /// `None`). Read by metrics exporters; must be cheap (an atomic load).
    fn memory_in_use(&self) -> Option<u64> {
        None
    }

    /// Where this device's kernels keep tensors (default: host memory).
    fn memory_space(&self) -> MemorySpace {
        MemorySpace::Host
    }

    /// The NUMA node the device's memory lives on, if known.
    fn numa_node(&self) -> Option<usize> {
        None
    }

    /// A one-line human description (`"CPU, 2 cores"`, `"llvmpipe (CPU-emulated GPU)"`).
    fn description(&self) -> String {
        self.device_type().to_string()
    }
}

/// Errors a device reports about itself (not about one kernel).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The device ran out of memory.
    #[error("device {device}: out of memory ({detail})")]
    OutOfMemory {
        /// Device name.
        device: String,
        /// What was being allocated.
        detail: String,
    },
    /// The device stopped working.
    #[error("device {device} lost: {detail}")]
    Lost {
        /// Device name.
        device: String,
        /// What the driver said.
        detail: String,
    },
    /// The device could not be created.
    #[error("device {device} unavailable: {detail}")]
    Unavailable {
        /// Device name or kind.
        device: String,
        /// Why.
        detail: String,
    },
}
