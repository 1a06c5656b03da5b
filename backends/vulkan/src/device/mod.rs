//! The device wrapper: [`VulkanDevice`] and everything that touches vulkano (with
//! `conv.rs`). Kernels see a small portable surface: [`VulkanDevice::alloc`],
//! [`VulkanDevice::enqueue`] with a [`Recorder`], [`VulkanDevice::upload`] and
//! [`VulkanDevice::download`], and [`GpuBuffer`]s.
//!
//! - `discovery`: finding Vulkan devices (once per process) and naming them `GPU:i`;
//! - `buffer`: [`GpuBuffer`], the [`DeviceBuffer`](magpie_core::tensor::DeviceBuffer)
//!   of this backend;
//! - `pipelines`: the compute pipelines built from `shaders/`;
//! - `stream`: the command stream: batches, barriers, timeline semaphore (read its
//!   protocol first);
//! - `completion`: the fence waiter and [`Completion`] (read its protocol first);
//! - `pool`: tensor and staging buffers in size classes, reused across steps;
//! - `health`: every wait's deadline and the failed state of a hung or lost device.

mod buffer;
mod completion;
mod discovery;
mod health;
mod matrix_units;
mod pipelines;
mod pool;
mod stream;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use magpie_core::device::{Device, MemorySpace};
use magpie_core::graph::DeviceName;
use magpie_core::kernel::async_support::BoxFuture;
use magpie_core::limits::Limit;
use magpie_core::KernelError;
use vulkano::buffer::Subbuffer;
use vulkano::descriptor_set::allocator::StandardDescriptorSetAllocator;
use vulkano::descriptor_set::{DescriptorSet, WriteDescriptorSet};
use vulkano::pipeline::Pipeline;

pub(crate) use buffer::GpuBuffer;
pub(crate) use completion::Completion;
pub use discovery::{count_real_gpus, discover, discover_for_task};
pub use pool::PoolStats;
use stream::Command;

/// Counters of a device's buffer pools ([`VulkanDevice::memory_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStats {
    /// Device-local tensor buffers.
    pub tensors: PoolStats,
    /// Host-visible staging buffers of uploads (`_CopyFromHost`, constants).
    pub uploads: PoolStats,
    /// Host-visible staging buffers of downloads (`_CopyToHost`).
    pub downloads: PoolStats,
}
pub(crate) use pipelines::{Params, Shader};

/// How a device multiplies f32 matrices ([`VulkanDevice::set_matmul_precision`]), in the
/// spirit of PyTorch's `torch.set_float32_matmul_precision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MatMulPrecision {
    /// f32 products and sums (the default).
    #[default]
    F32,
    /// Operands rounded to f16 (11-bit significand, finite up to 65504: larger values
    /// become infinite) and multiplied on the matrix units (`VK_KHR_cooperative_matrix`),
    /// products summed in f32, results f32. Only where
    /// [`VulkanDevice::f16_matrix_units`] is `Ok`; elsewhere MatMul stays F32.
    F16,
}

/// Facts about a device that kernels check shapes against.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Bytes of the largest device-local memory heap.
    pub(crate) heap_bytes: u64,
    /// The most bytes one storage-buffer binding may span.
    pub(crate) max_binding_bytes: u64,
    /// The most workgroups one dispatch may have, per dimension.
    pub(crate) max_groups: [u32; 3],
}

/// One Vulkan physical device (with a compute queue) as a Magpie device of type `GPU`.
///
/// Made by [`discover`]; tensors placed on it live in its device-local memory, and the
/// executor inserts copies where they cross to or from the host. A cheap handle: clones
/// (and [`renamed`](Self::renamed) copies, which a cluster task uses to name its GPUs
/// `/job:J/replica:0/task:T/device:GPU:k`) share the Vulkan device, its queue and its
/// memory limit. Kernels reach it through
/// [`KernelInit::device`](magpie_core::kernel::KernelInit::device), never by name.
#[derive(Clone)]
pub struct VulkanDevice {
    name: DeviceName,
    shared: Arc<Shared>,
}

/// What every handle of one Vulkan device shares.
struct Shared {
    description: String,
    /// A Vulkan driver that runs on the CPU (Mesa's lavapipe, SwiftShader).
    emulated: bool,
    limits: Limits,
    /// The most bytes the device's tensors may hold at once: the heap's size unless
    /// lowered with [`VulkanDevice::set_memory_limit`].
    memory_limit: std::sync::atomic::AtomicU64,
    /// The server limit that set `memory_limit`, named with its flag by a refusal
    /// ([`VulkanDevice::set_memory_limit_setting`]); read only when one is refused.
    memory_limit_setting: parking_lot::Mutex<Option<Limit>>,
    /// [`MatMulPrecision`] as its `u8` (0: F32, 1: F16); read by every MatMul launch.
    matmul_precision: std::sync::atomic::AtomicU8,
    /// MatMuls dispatched on the f16 cooperative-matrix shader.
    f16_matmuls: std::sync::atomic::AtomicU64,
    /// Device-local tensor buffers.
    tensors: Arc<pool::Pool>,
    /// Staging buffers for uploads.
    uploads: Arc<pool::Pool>,
    /// Staging buffers for downloads.
    downloads: Arc<pool::Pool>,
    /// The command stream every kernel enqueues on.
    stream: Arc<stream::Stream>,
    descriptor_sets: Arc<StandardDescriptorSetAllocator>,
    pipelines: pipelines::Pipelines,
    /// Whether the device still works, and the deadline of every wait on it.
    health: Arc<health::Health>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stream.stop();
    }
}

impl fmt::Debug for VulkanDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VulkanDevice")
            .field("name", &self.name.to_string())
            .field("description", &self.shared.description)
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl Device for VulkanDevice {
    fn name(&self) -> &DeviceName {
        &self.name
    }

    fn memory_limit(&self) -> Option<u64> {
        Some(
            self.shared
                .memory_limit
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn memory_in_use(&self) -> Option<u64> {
        Some(self.shared.tensors.in_use_bytes())
    }

    fn memory_limit_setting(&self) -> Option<Limit> {
        *self.shared.memory_limit_setting.lock()
    }

    fn sync(&self) -> Result<(), KernelError> {
        let done = self.shared.stream.sync("_SyncDevice", &self.name)?;
        // The waiter thread bounds this wait by the device's deadline.
        futures::executor::block_on(done)
    }

    fn sync_async(&self) -> BoxFuture<'static, Result<(), KernelError>> {
        // The same completion, awaited: the waiter thread resolves it (by the device's
        // deadline at the latest), so the polling thread never blocks.
        match self.shared.stream.sync("_SyncDevice", &self.name) {
            Ok(done) => Box::pin(done),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("submissions", self.shared.stream.submissions()),
            (
                "matmul_f16_dispatches",
                self.shared
                    .f16_matmuls
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        ]
    }

    fn memory_space(&self) -> MemorySpace {
        MemorySpace::Device
    }

    fn description(&self) -> String {
        self.shared.description.clone()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn backend(&self) -> &str {
        crate::BACKEND
    }
}

impl VulkanDevice {
    /// This device under another name — the same GPU, queue and memory limit — e.g. a
    /// cluster task's `/job:worker/replica:0/task:1/device:GPU:0`. Buffers its kernels
    /// make carry the new name.
    ///
    /// # Errors
    /// [`VulkanError::BadName`](crate::VulkanError::BadName) when `name`'s device type is
    /// not `GPU` (the type this backend's kernels are registered for).
    pub fn renamed(&self, name: DeviceName) -> Result<VulkanDevice, crate::VulkanError> {
        if !name.device_type.eq_ignore_ascii_case(crate::DEVICE_TYPE) {
            return Err(crate::VulkanError::BadName(format!(
                "a Vulkan device needs device type {}, got {name}",
                crate::DEVICE_TYPE
            )));
        }
        Ok(VulkanDevice {
            name,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Whether the device is a GPU emulated on the host's CPU (Vulkan's
    /// `PHYSICAL_DEVICE_TYPE_CPU`, e.g. Mesa's lavapipe): it computes correctly but no
    /// faster than the CPU backend, so `magpie server` leaves it out unless asked for it.
    pub fn is_emulated(&self) -> bool {
        self.shared.emulated
    }

    /// The limits kernels check shapes against.
    pub(crate) fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Lowers (or raises, up to the heap's size) the most bytes this device's tensors may
    /// hold at once; an allocation that would pass it fails at once with a
    /// resource-exhausted error naming the device and the bytes (free pooled buffers are
    /// released first to make room). The device is shared by every session of the process.
    pub fn set_memory_limit(&self, bytes: u64) {
        let bytes = bytes.min(self.shared.limits.heap_bytes);
        self.shared
            .memory_limit
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Marks this device's memory limit as set by the server limit `setting` (`magpie
    /// server` says [`Limit::GpuMemory`]): an allocation refused by the limit then names it
    /// and the flag that raises it. Shared by every handle of the device.
    pub fn set_memory_limit_setting(&self, setting: Limit) {
        *self.shared.memory_limit_setting.lock() = Some(setting);
    }

    /// " (raise it with `magpie server FLAG`)" when a server limit set the memory limit.
    fn raise_hint(&self) -> String {
        match self.memory_limit_setting() {
            Some(l) => format!(" (raise it with `magpie server {}`)", l.flag()),
            None => String::new(),
        }
    }

    /// Sets the deadline of every wait on this device's GPU work (60 s by default). A
    /// submission that has not finished by then fails its step with an error naming the
    /// device, and marks the device failed: every later step that uses it fails at once
    /// with that error. Shared by every handle of the device.
    pub fn set_wait_timeout(&self, timeout: Duration) {
        self.shared.health.set_wait_timeout(timeout);
    }

    /// Why this device was marked failed (a wait ran past its deadline, or the driver
    /// reported the device lost), or `None` while it works.
    pub fn failure(&self) -> Option<String> {
        self.shared.health.failure().map(str::to_string)
    }

    /// Bytes of `len` f32 elements, or an error when one buffer cannot hold them on this
    /// device (the memory limit is checked by the pool, against the bytes in use).
    fn check_size(&self, op: &str, len: usize) -> Result<u64, KernelError> {
        let bytes = (len.max(1) as u64).saturating_mul(4);
        if bytes > self.shared.limits.max_binding_bytes {
            return Err(KernelError::InvalidArgument(format!(
                "{op}: an f32 tensor of {len} elements ({bytes} bytes) is larger than the \
                 largest storage buffer {} can bind ({} bytes)",
                self.name, self.shared.limits.max_binding_bytes
            )));
        }
        Ok(bytes)
    }

    /// The most elements one pooled block may have (the largest bindable buffer).
    fn max_block_elements(&self) -> u64 {
        self.shared.limits.max_binding_bytes / 4
    }

    /// Leases a block of at least `len` elements from `pool`, under the memory limit when
    /// `limited`.
    fn lease(
        &self,
        op: &str,
        pool: &Arc<pool::Pool>,
        len: usize,
        limited: bool,
    ) -> Result<pool::Lease, KernelError> {
        let limit = limited.then(|| {
            self.shared
                .memory_limit
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        let bytes = (len.max(1) as u64).saturating_mul(4);
        if let Some(limit) = limit.filter(|&l| bytes > l) {
            return Err(KernelError::ResourceExhausted(format!(
                "{op}: an f32 tensor of {len} elements needs {bytes} bytes, more than the \
                 memory limit of {} ({limit} bytes){}",
                self.name,
                self.raise_hint()
            )));
        }
        self.check_size(op, len)?;
        pool.lease(len as u64, self.max_block_elements(), limit)
            .map_err(|e| match e {
                pool::PoolError::OverLimit {
                    bytes,
                    in_use,
                    limit,
                } => KernelError::ResourceExhausted(format!(
                    "{op}: cannot allocate {bytes} bytes (an f32 tensor of {len} elements) \
                         on {}: {in_use} bytes are in use of its memory limit of {limit} \
                         bytes{}",
                    self.name,
                    self.raise_hint()
                )),
                pool::PoolError::Vulkan(e) => crate::conv::kernel_error(op, &self.name, &*e),
            })
    }

    /// A device-local buffer of `len` f32 elements for an output of `op`, from the
    /// device's pool (counted against its memory limit while the tensor lives).
    pub(crate) fn alloc(&self, op: &str, len: usize) -> Result<Arc<GpuBuffer>, KernelError> {
        let lease = self.lease(op, &self.shared.tensors, len, true)?;
        Ok(Arc::new(GpuBuffer::new(lease, len, self.name.clone())))
    }

    /// A pooled host-visible staging buffer for `len` elements, and its first `len`
    /// elements.
    fn staging(
        &self,
        op: &str,
        len: usize,
        upload: bool,
    ) -> Result<(pool::Lease, Subbuffer<[f32]>), KernelError> {
        let pool = if upload {
            &self.shared.uploads
        } else {
            &self.shared.downloads
        };
        let lease = self.lease(op, pool, len, false)?;
        // Exactly `len` elements: the host copies to or from the whole view.
        let view = lease.view(len as u64).slice(0..len.max(1) as u64);
        Ok((lease, view))
    }

    /// Counters of this device's buffer pools: device-local tensor buffers, then upload
    /// and download staging buffers. Shared by every handle of the device.
    pub fn memory_stats(&self) -> MemoryStats {
        MemoryStats {
            tensors: self.shared.tensors.stats(),
            uploads: self.shared.uploads.stats(),
            downloads: self.shared.downloads.stats(),
        }
    }

    /// The workgroup grid for `groups` workgroups in a 1-D index space, split over x and
    /// y when x alone cannot hold them (the shaders fold the grid back into one index).
    pub(crate) fn grid_1d(&self, op: &str, groups: u64) -> Result<[u32; 3], KernelError> {
        let [mx, my, _] = self.shared.limits.max_groups;
        if groups <= u64::from(mx) {
            return Ok([groups as u32, 1, 1]);
        }
        let gy = groups.div_ceil(u64::from(mx));
        if gy > u64::from(my) {
            return Err(KernelError::InvalidArgument(format!(
                "{op}: {groups} workgroups exceed what {} can dispatch ({mx} x {my})",
                self.name
            )));
        }
        Ok([mx, gy as u32, 1])
    }

    /// Records commands with `record` and enqueues them on the device's stream; returns
    /// at once. They run after every command enqueued before them on this device, so
    /// their outputs are ready for every command enqueued after (see `stream.rs`).
    ///
    /// # Errors
    /// A failed recording; the device's failure, once it failed.
    pub(crate) fn enqueue(
        &self,
        op: &str,
        record: impl FnOnce(&mut Recorder<'_>) -> Result<(), KernelError>,
    ) -> Result<(), KernelError> {
        self.shared.health.check(op)?;
        let mut recorder = Recorder {
            device: self,
            op,
            commands: Vec::new(),
        };
        record(&mut recorder)?;
        self.shared
            .stream
            .enqueue(op, &self.name, recorder.commands)
    }

    /// Copies host elements into a new device buffer through a pooled staging buffer. The
    /// copy is stream-ordered: the buffer is ready for every later command.
    pub(crate) fn upload(&self, op: &str, data: &[f32]) -> Result<Arc<GpuBuffer>, KernelError> {
        let out = self.alloc(op, data.len())?;
        if data.is_empty() {
            return Ok(out);
        }
        let (_lease, staging) = self.staging(op, data.len(), true)?;
        staging
            .write()
            .map_err(|e| crate::conv::kernel_error(op, &self.name, &e))?
            .copy_from_slice(data);
        let dst = out.buffer.clone();
        self.shared
            .stream
            .enqueue(op, &self.name, vec![Command::Copy { src: staging, dst }])?;
        Ok(out)
    }

    /// Copies a device buffer to the host through a pooled staging buffer: submits the
    /// device's open batch, and the future yields the elements once the GPU has run it.
    pub(crate) fn download(
        &self,
        op: &str,
        src: &GpuBuffer,
    ) -> Result<impl Future<Output = Result<Vec<f32>, KernelError>> + Send + 'static, KernelError>
    {
        let len = src.len_elements();
        let (lease, staging) = self.staging(op, len, false)?;
        let done = if len == 0 {
            Completion::ready()
        } else {
            let copy = Command::Copy {
                src: src.buffer.clone(),
                dst: staging.clone(),
            };
            self.shared
                .stream
                .enqueue_and_wait(op, &self.name, vec![copy])?
        };
        let (op, name) = (op.to_string(), self.name.clone());
        Ok(async move {
            done.await?;
            let guard = staging
                .read()
                .map_err(|e| crate::conv::kernel_error(&op, &name, &e))?;
            // The host copy is allocated fallibly: a failure is an error, not an abort.
            let mut host = magpie_core::tensor::MemoryLimit::host().with_capacity(len)?;
            host.extend_from_slice(&guard[..len]);
            // The staging block goes back to the pool only once read.
            drop(guard);
            drop(lease);
            Ok(host)
        })
    }

    /// Sets how long the device's open batch of commands waits for more before it is
    /// submitted when nobody waits for it (500 µs by default; a download submits at
    /// once). Longer batches mean fewer submissions; shorter, that work whose results
    /// stay on the GPU starts sooner. Shared by every handle of the device.
    pub fn set_batch_linger(&self, linger: Duration) {
        self.shared.stream.set_linger(linger);
    }

    /// Sets how this device's MatMul kernels multiply f32 matrices from now on (kernels
    /// read it at every launch). [`MatMulPrecision::F16`] takes effect only where
    /// [`f16_matrix_units`](Self::f16_matrix_units) is `Ok`; elsewhere MatMul runs in
    /// f32, as if it had not been set. Shared by every handle of the device. The
    /// `matmul_f16_dispatches` counter of [`Device::counters`] counts the MatMuls that
    /// ran on the matrix units.
    pub fn set_matmul_precision(&self, precision: MatMulPrecision) {
        let v = match precision {
            MatMulPrecision::F32 => 0,
            MatMulPrecision::F16 => 1,
        };
        self.shared
            .matmul_precision
            .store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// The precision set with [`set_matmul_precision`](Self::set_matmul_precision).
    pub fn matmul_precision(&self) -> MatMulPrecision {
        match self
            .shared
            .matmul_precision
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => MatMulPrecision::F32,
            _ => MatMulPrecision::F16,
        }
    }

    /// `Ok` where this device can multiply f16 matrices on its matrix units
    /// (`VK_KHR_cooperative_matrix`: 16 x 16 x 16 f16 operands, f32 accumulators), else
    /// why not (Mesa's lavapipe: "no VK_KHR_cooperative_matrix").
    pub fn f16_matrix_units(&self) -> Result<(), &str> {
        self.shared.pipelines.f16_matmul()
    }

    /// Whether a MatMul launched now runs on the f16 matrix units, counting it if so.
    pub(crate) fn take_f16_matmul(&self) -> bool {
        let f16 =
            self.matmul_precision() == MatMulPrecision::F16 && self.f16_matrix_units().is_ok();
        if f16 {
            self.shared
                .f16_matmuls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        f16
    }

    /// Command batches this device has submitted to its queue since it was opened (shared
    /// by every handle of the device; also reported as the `submissions` counter of
    /// [`Device::counters`]).
    pub fn submissions(&self) -> u64 {
        self.shared.stream.submissions()
    }
}

/// Collects the commands of one kernel for the device's stream.
pub(crate) struct Recorder<'a> {
    device: &'a VulkanDevice,
    op: &'a str,
    commands: Vec<Command>,
}

impl fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

impl Recorder<'_> {
    /// Turns a vulkano error of this recording into a kernel error.
    fn failer<'e>(&self) -> impl Fn(&(dyn std::error::Error + 'static)) -> KernelError + 'e
    where
        Self: 'e,
    {
        let (op, name) = (self.op.to_string(), self.device.name.clone());
        move |e| crate::conv::kernel_error(&op, &name, e)
    }

    /// Dispatches `shader` over `groups` workgroups with `buffers` bound at bindings
    /// 0.. of set 0 and `params` as push constants.
    pub(crate) fn dispatch(
        &mut self,
        shader: Shader,
        buffers: &[&GpuBuffer],
        params: Params,
        groups: [u32; 3],
    ) -> Result<(), KernelError> {
        let fail = self.failer();
        let pipeline = self
            .device
            .shared
            .pipelines
            .get(shader)
            .map_err(|why| {
                // Kernels ask for an optional pipeline only once the device said it has it.
                KernelError::Internal(format!(
                    "{}: {shader:?} cannot run on {}: {why}",
                    self.op, self.device.name
                ))
            })?
            .clone();
        let set_layout = pipeline.layout().set_layouts()[0].clone();
        let writes = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| WriteDescriptorSet::buffer(i as u32, b.buffer.clone()));
        let set = DescriptorSet::new(
            self.device.shared.descriptor_sets.clone(),
            set_layout,
            writes,
            [],
        )
        .map_err(|e| fail(&e))?;
        self.commands.push(Command::Dispatch {
            pipeline,
            set,
            params,
            groups,
        });
        Ok(())
    }

    /// Fills `dst` with the 32-bit pattern `bits` (`0` for zeros).
    pub(crate) fn fill(&mut self, dst: &GpuBuffer, bits: u32) -> Result<(), KernelError> {
        let words = dst.buffer.clone().reinterpret::<[u32]>();
        self.commands.push(Command::Fill { dst: words, bits });
        Ok(())
    }
}
