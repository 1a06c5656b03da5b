//! [`GpuBuffer`]: a tensor's elements in a device-local Vulkan buffer, leased from the
//! device's pool (`pool.rs`) and given back when the last tensor holding it drops.

use std::any::Any;
use std::fmt;

use magpie_core::graph::DeviceName;
use magpie_core::tensor::{DType, DeviceBuffer};
use vulkano::buffer::Subbuffer;

use super::pool::Lease;

/// `len` f32 elements in device-local memory of one Vulkan device. Immutable once the
/// kernel that wrote it completed; shared by every tensor that holds it (a `Reshape`
/// or `Identity` hands the same buffer on).
pub(crate) struct GpuBuffer {
    /// The tensor's elements, at least one: Vulkan has no empty buffers. A view of the
    /// leased block's first elements.
    pub(super) buffer: Subbuffer<[f32]>,
    len: usize,
    device: DeviceName,
    /// The pooled block under `buffer`, given back on drop.
    _lease: Lease,
}

impl GpuBuffer {
    pub(super) fn new(lease: Lease, len: usize, device: DeviceName) -> GpuBuffer {
        GpuBuffer {
            buffer: lease.view(len as u64),
            len,
            device,
            _lease: lease,
        }
    }
}

impl fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuBuffer")
            .field("len", &self.len)
            .field("device", &self.device.to_string())
            .finish()
    }
}

impl DeviceBuffer for GpuBuffer {
    fn dtype(&self) -> DType {
        DType::F32
    }

    fn len(&self) -> usize {
        self.len
    }

    fn device(&self) -> &DeviceName {
        &self.device
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl GpuBuffer {
    /// The number of f32 elements of the tensor (the buffer may hold one more).
    pub(crate) fn len_elements(&self) -> usize {
        self.len
    }

    /// The number of f32 elements the Vulkan buffer holds (at least
    /// [`len_elements`](Self::len_elements), and at least one).
    pub(crate) fn capacity_elements(&self) -> u64 {
        self.buffer.len()
    }
}
