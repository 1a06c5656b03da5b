//! The CPU device: a name, its core count, its memory limit and, with one device per NUMA
//! node, its node. Kernels run on whichever scheduler worker calls them, so the device
//! holds no threads or queues of its own (see `layout.rs` for how workers are pinned).
//!
//! The device counts the bytes its live tensors hold: every buffer its kernels allocate
//! (through [`MemoryLimit::of`], which asks [`Device::host_memory`]) is charged to the
//! device's [`MemoryAccount`] until the last reference to the tensor drops — after the
//! step for a fetched output or a variable's value (the protocol and its memory ordering:
//! [`magpie_core::tensor::account`]). [`Device::memory_in_use`] reads it, and with it the
//! `magpie_device_memory_in_use_bytes` gauge of `magpie server`'s metrics.
//!
//! The memory limit bounds those bytes: by default the memory of the device's NUMA node,
//! or of the whole machine for a device not tied to one node, as hwloc reports it
//! (`magpie server --cpu-memory-limit` sets it, and marks the device with
//! [`CpuDevice::with_memory_limit_setting`]). A request that would pass it fails at once
//! with a resource-exhausted error naming the device, the bytes asked for, the bytes in
//! use, the limit and, when a server set it, the flag, instead of reaching the allocator.

use std::sync::{Arc, OnceLock};

use magpie_core::device::Device;
use magpie_core::graph::DeviceName;
use magpie_core::limits::Limit;
use magpie_core::tensor::MemoryAccount;

use crate::buffers::Place;
use crate::DEVICE_TYPE;
use magpie_core::tensor::MemoryLimit;

/// The host CPU as a Magpie device. Clones (and [`renamed`](Self::renamed) copies) share
/// its memory account: they are one device's memory under several handles.
///
/// ```
/// use magpie_core::{Device, Tensor};
/// use magpie_core::tensor::{DType, MemoryLimit};
/// let cpu = magpie_cpu::CpuDevice::new(0);
/// let memory = MemoryLimit::of(&cpu); // what its kernels allocate through
/// let t = Tensor::zeros_in(DType::F32, [256], &memory)?;
/// assert_eq!(cpu.memory_in_use(), Some(1024));
/// drop(t);
/// assert_eq!(cpu.memory_in_use(), Some(0));
/// # Ok::<(), magpie_core::tensor::TensorError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CpuDevice {
    name: DeviceName,
    cores: usize,
    numa_node: Option<usize>,
    memory_limit: Option<u64>,
    memory_limit_setting: Option<Limit>,
    /// Where its kernels' outputs go, made at the first kernel and shared by all of them;
    /// reset whenever the name, node or limit changes.
    place: OnceLock<Place>,
    /// The bytes its live tensors hold; shared by clones.
    account: Arc<MemoryAccount>,
}

impl CpuDevice {
    /// CPU number `index` of the in-process task (`/job:localhost/replica:0/task:0/device:CPU:index`).
    pub fn new(index: u32) -> CpuDevice {
        CpuDevice::with_name(DeviceName::local(DEVICE_TYPE, index))
    }

    /// A CPU device under a full name, e.g. a task's CPU in a cluster.
    ///
    /// # Panics
    /// If `name`'s device type is not `CPU`: the kernels are registered for that type only.
    pub fn with_name(name: DeviceName) -> CpuDevice {
        assert!(
            name.device_type.eq_ignore_ascii_case(DEVICE_TYPE),
            "a CpuDevice needs device type {DEVICE_TYPE}, got {name}"
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CpuDevice {
            name,
            cores,
            numa_node: None,
            memory_limit: crate::topology::machine_memory(),
            memory_limit_setting: None,
            place: OnceLock::new(),
            account: Arc::new(MemoryAccount::new()),
        }
    }

    /// CPU number `index` of the in-process task over `cores` cores of NUMA node
    /// `numa_node` (`None`: not tied to one node). Its memory limit is the machine's; a
    /// layout sets the node's with [`with_memory_limit`](Self::with_memory_limit).
    pub fn on_node(index: u32, numa_node: Option<usize>, cores: usize) -> CpuDevice {
        CpuDevice {
            numa_node,
            cores,
            ..CpuDevice::new(index)
        }
    }

    /// This device with at most `bytes` held by its live tensors at once (`None`: no limit
    /// but the allocator's).
    ///
    /// ```
    /// use magpie_core::Device;
    /// let cpu = magpie_cpu::CpuDevice::new(0).with_memory_limit(Some(1 << 30));
    /// assert_eq!(cpu.memory_limit(), Some(1 << 30));
    /// ```
    pub fn with_memory_limit(mut self, bytes: Option<u64>) -> CpuDevice {
        self.memory_limit = bytes;
        self.place = OnceLock::new();
        self
    }

    /// This device with its memory limit set by the server limit `setting` (`magpie
    /// server` says [`Limit::CpuMemory`]): an allocation refused over the limit names it
    /// and the flag that raises it.
    ///
    /// ```
    /// use magpie_core::{limits::Limit, Device};
    /// let cpu = magpie_cpu::CpuDevice::new(0)
    ///     .with_memory_limit(Some(1024))
    ///     .with_memory_limit_setting(Limit::CpuMemory);
    /// assert_eq!(cpu.memory_limit_setting(), Some(Limit::CpuMemory));
    /// ```
    pub fn with_memory_limit_setting(mut self, setting: Limit) -> CpuDevice {
        self.memory_limit_setting = Some(setting);
        self.place = OnceLock::new();
        self
    }

    /// This device under another name — the same cores, NUMA node and memory limit — e.g.
    /// a cluster task's `/job:worker/replica:0/task:1/device:CPU:0`.
    ///
    /// ```
    /// use magpie_core::{graph::DeviceName, Device};
    /// let cpu = magpie_cpu::CpuDevice::on_node(1, Some(1), 4);
    /// let name = DeviceName::parse("/job:worker/replica:0/task:1/device:CPU:1").unwrap();
    /// let task_cpu = cpu.renamed(name.clone());
    /// assert_eq!((task_cpu.name(), task_cpu.numa_node()), (&name, Some(1)));
    /// ```
    ///
    /// # Panics
    /// If `name`'s device type is not `CPU`, as [`with_name`](Self::with_name).
    pub fn renamed(&self, name: DeviceName) -> CpuDevice {
        assert!(
            name.device_type.eq_ignore_ascii_case(DEVICE_TYPE),
            "a CpuDevice needs device type {DEVICE_TYPE}, got {name}"
        );
        CpuDevice {
            name,
            place: OnceLock::new(),
            ..self.clone()
        }
    }

    /// The number of cores of the device (the process's available parallelism unless
    /// built by a layout).
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// Where its kernels' outputs go (its NUMA node, name and memory limit), shared by
    /// every kernel built for it.
    pub(crate) fn place(&self) -> Place {
        self.place
            .get_or_init(|| Place::new(self.numa_node, MemoryLimit::of(self)))
            .clone()
    }
}

impl Default for CpuDevice {
    fn default() -> Self {
        CpuDevice::new(0)
    }
}

impl Device for CpuDevice {
    fn name(&self) -> &DeviceName {
        &self.name
    }

    fn numa_node(&self) -> Option<usize> {
        self.numa_node
    }

    fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    fn memory_limit_setting(&self) -> Option<Limit> {
        self.memory_limit_setting
    }

    fn memory_in_use(&self) -> Option<u64> {
        Some(self.account.in_use())
    }

    fn host_memory(&self) -> MemoryLimit {
        let memory = MemoryLimit::new(self.name.to_string(), self.memory_limit)
            .with_account(Arc::clone(&self.account));
        match self.memory_limit_setting {
            Some(limit) => memory.raised_by(limit),
            None => memory,
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn backend(&self) -> &str {
        crate::BACKEND
    }

    fn description(&self) -> String {
        let plural = if self.cores == 1 { "" } else { "s" };
        match self.numa_node {
            Some(n) => format!("CPU, {} core{plural}, NUMA node {n}", self.cores),
            None => format!("CPU, {} core{plural}", self.cores),
        }
    }
}

/// `CPU:0` of the in-process task, ready to hand to a session or a kernel factory.
pub fn cpu_device() -> Arc<dyn Device> {
    Arc::new(CpuDevice::new(0))
}
