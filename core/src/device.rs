//! The [`Device`] trait: a named place that runs kernels.
//!
//! A device says what it is (its full name and type), how much memory it may use and
//! where it sits (NUMA node). How a kernel executes on it is the kernel's business: CPU
//! kernels run on scheduler workers; a GPU kernel submits to its queue and completes
//! asynchronously through an [`AsyncKernel`](crate::kernel::AsyncKernel).

use std::any::Any;
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

/// The backend id of a device that names none: it gets the kernels registered for its
/// device type in general (see [`Device::backend`]).
pub const GENERIC_BACKEND: &str = "";

/// A device that kernels run on. Implemented by backends, and by users: the `magpie`
/// crate's guide walks through writing one (*Write a backend*), and
/// `examples/custom_backend.rs` in the repository is a complete one.
///
/// A kernel factory gets the device a node was placed on as `&Arc<dyn Device>`; it reaches
/// the concrete type through [`KernelInit::device`](crate::kernel::KernelInit::device),
/// which uses [`Device::as_any`].
///
/// ```
/// use std::any::Any;
/// use magpie_core::device::Device;
/// use magpie_core::graph::DeviceName;
///
/// #[derive(Debug)]
/// struct Sim {
///     name: DeviceName,
/// }
///
/// impl Device for Sim {
///     fn name(&self) -> &DeviceName {
///         &self.name
///     }
///     fn as_any(&self) -> &dyn Any {
///         self
///     }
///     fn backend(&self) -> &str {
///         "sim"
///     }
/// }
///
/// let sim = Sim { name: DeviceName::local("SIM", 0) };
/// assert_eq!(sim.device_type(), "SIM");
/// assert!(sim.as_any().downcast_ref::<Sim>().is_some());
/// ```
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

    /// The server limit that sets [`memory_limit`](Self::memory_limit), when an operator
    /// sets it through one (default `None`): an allocation refused under the limit then
    /// names the limit and the `magpie server` flag that raises it
    /// ([`MemoryLimit::of`](crate::tensor::MemoryLimit::of)).
    fn memory_limit_setting(&self) -> Option<crate::limits::Limit> {
        None
    }

    /// Bytes of memory the device's tensors hold now, if the device keeps count (default:
    /// `None`). Read by metrics exporters; must be cheap (an atomic load). A host device
    /// that counts through a [`MemoryAccount`](crate::tensor::MemoryAccount) returns its
    /// [`in_use`](crate::tensor::MemoryAccount::in_use).
    fn memory_in_use(&self) -> Option<u64> {
        None
    }

    /// How kernels allocate host tensors for this device
    /// ([`MemoryLimit::of`](crate::tensor::MemoryLimit::of) asks it): its name for errors,
    /// its limit and, for a device that counts its memory, the account every buffer is
    /// charged to ([`MemoryLimit::with_account`](crate::tensor::MemoryLimit::with_account);
    /// the limit then bounds the bytes its tensors hold at once). Default: uncounted, each
    /// buffer at most [`memory_limit`](Self::memory_limit), a refusal naming
    /// [`memory_limit_setting`](Self::memory_limit_setting)'s flag. Called when kernels are built,
    /// not per step.
    fn host_memory(&self) -> crate::tensor::MemoryLimit {
        let memory = crate::tensor::MemoryLimit::new(self.name().to_string(), self.memory_limit());
        match self.memory_limit_setting() {
            Some(limit) => memory.raised_by(limit),
            None => memory,
        }
    }

    /// The device's event counters, each monotonic since the device was made (default:
    /// none). A Vulkan device counts its queue `submissions`, say. A session reads them
    /// before and after each step and reports how much each rose in
    /// [`RunMetadata::device_counters`](crate::session::RunMetadata::device_counters);
    /// a device shared by concurrent steps counts their events together. Read twice per
    /// step: must be cheap.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Waits until every kernel launched on this device so far has finished its work
    /// (default: at once — a device whose kernels finish when they complete). The session
    /// calls it on the devices a step's nodes ran on at the end of every successful step
    /// (`Session::run`), so that when a step
    /// returns its work is done and its errors are known, whatever stays on the device: a
    /// GPU whose kernels complete as soon as their commands are queued waits for its
    /// queue here. Called on the thread that runs the step, never on a scheduler worker.
    /// A step with a deadline ([`RunOptions::timeout`](crate::session::RunOptions::timeout))
    /// awaits [`Device::sync_async`] instead and gives up at its deadline, whatever the
    /// device's own deadline, failing with
    /// [`SessionError::DeviceSyncDeadlineExceeded`](crate::exec::SessionError::DeviceSyncDeadlineExceeded);
    /// so does a step with a cancellation token
    /// ([`RunOptions::cancel`](crate::session::RunOptions::cancel)), which gives up once
    /// the token is cancelled, failing with
    /// [`SessionError::DeviceSyncCancelled`](crate::exec::SessionError::DeviceSyncCancelled).
    ///
    /// # Errors
    /// The device's failure (a hung or lost GPU), as a kernel error naming the device.
    fn sync(&self) -> Result<(), crate::kernel::KernelError> {
        Ok(())
    }

    /// [`Device::sync`] as a future, for steps run without blocking
    /// (`Session::run_async`, and so every cluster step): it resolves once every kernel
    /// launched on this device so far has finished, and must not block the thread that
    /// polls it (default: [`Device::sync`] at once, for devices whose `sync` never
    /// waits). A device whose `sync` waits overrides this. The session drops the future
    /// unresolved when the step's deadline passes or the step is cancelled first, so
    /// dropping it must be safe
    /// (it abandons the wait, not the device's work).
    ///
    /// # Errors
    /// As [`Device::sync`]; the future resolves to the error.
    fn sync_async(
        &self,
    ) -> crate::kernel::async_support::BoxFuture<'static, Result<(), crate::kernel::KernelError>>
    {
        Box::pin(std::future::ready(self.sync()))
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

    /// The device as [`Any`], so a kernel can reach its concrete type (implement it as
    /// `self`). The default returns a value of a private type, so downcasting a device that
    /// does not implement this fails with an error naming the device.
    fn as_any(&self) -> &dyn Any {
        &NotDowncastable
    }

    /// The backend that made this device (`"magpie-cpu"`, `"magpie-vulkan"`, a crate's
    /// name), which picks its kernels: the registry looks for a kernel of (op, device type,
    /// this backend) first, then one registered for the device type in general
    /// ([`GENERIC_BACKEND`]). Two backends of one device type (two `GPU` backends, say)
    /// thus register their kernels without colliding.
    fn backend(&self) -> &str {
        GENERIC_BACKEND
    }

    /// The Rust type implementing this device, for error messages (a typed-device
    /// mismatch names it). Not meant to be overridden.
    fn type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// What [`Device::as_any`] returns by default: no device type downcasts to it.
#[derive(Debug)]
struct NotDowncastable;

impl dyn Device {
    /// This device as a `T`, if it is one (needs [`Device::as_any`] implemented).
    pub fn downcast_ref<T: Device + 'static>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
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
