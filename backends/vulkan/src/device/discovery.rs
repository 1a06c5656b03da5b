//! Discovery: every Vulkan physical device with a compute queue becomes a Magpie device
//! `/device:GPU:i`, real GPUs first (discrete, integrated, virtual), then CPU
//! implementations such as Mesa's lavapipe. Runs once per process; later calls return
//! the same devices (or the same reason why there are none).

use std::sync::{Arc, OnceLock};

use magpie_core::graph::DeviceName;
use vulkano::descriptor_set::allocator::StandardDescriptorSetAllocator;
use vulkano::device::physical::PhysicalDevice;
use vulkano::device::{
    DeviceCreateInfo, DeviceExtensions, DeviceFeatures, QueueCreateInfo, QueueFlags,
};
use vulkano::instance::{Instance, InstanceCreateFlags, InstanceCreateInfo, InstanceExtensions};
use vulkano::memory::allocator::StandardMemoryAllocator;
use vulkano::memory::MemoryHeapFlags;
use vulkano::sync::semaphore::{Semaphore, SemaphoreCreateInfo, SemaphoreType};
use vulkano::{Version, VulkanLibrary};

use super::health::Health;
use super::pipelines::Pipelines;
use super::pool::{Kind, Pool};
use super::stream::Stream;
use super::{Limits, Shared, VulkanDevice};
use crate::conv;
use crate::error::VulkanError;
use crate::DEVICE_TYPE;

static DEVICES: OnceLock<Result<Vec<Arc<VulkanDevice>>, VulkanError>> = OnceLock::new();

/// The Vulkan devices of this machine, as `GPU:0`, `GPU:1`, ... Discovers them on the
/// first call; later calls return the same devices.
///
/// Fails with [`VulkanError::NoDriver`] when there is no Vulkan loader or driver, and
/// with [`VulkanError::NoDevice`] when no device has a compute queue (or none could be
/// initialised). A device that fails to initialise while others work is skipped with a
/// warning in the log.
pub fn discover() -> Result<Vec<Arc<VulkanDevice>>, VulkanError> {
    DEVICES.get_or_init(find).clone()
}

/// The Vulkan devices of this machine named for a cluster task:
/// `/job:{job}/replica:0/task:{task}/device:GPU:i`, the same GPUs as [`discover`] gives
/// (see [`VulkanDevice::renamed`]).
///
/// # Errors
/// As [`discover`]; [`VulkanError::BadName`] when `job` makes no valid device name.
pub fn discover_for_task(job: &str, task: u32) -> Result<Vec<Arc<VulkanDevice>>, VulkanError> {
    discover()?
        .iter()
        .map(|d| {
            let mut name = d.name.clone();
            name.job = job.to_string();
            name.replica = 0;
            name.task = task;
            DeviceName::parse(&name.to_string())
                .map_err(|e| VulkanError::BadName(format!("job {job:?}: {e}")))?;
            d.renamed(name).map(Arc::new)
        })
        .collect()
}

/// How many of this machine's Vulkan devices with a compute queue are real GPUs (not
/// emulated on the CPU, such as Mesa's lavapipe) that offer the timeline semaphores
/// Magpie needs, without opening any device: what [`discover`] would find, less the
/// emulated ones and those that fail to open.
///
/// Meant for a short-lived process: loading the Vulkan drivers (Mesa's link LLVM) maps
/// tens of MiB that stay mapped for the rest of the process, even once the instance is
/// gone, so a long-lived process that would serve no emulated GPU asks a child process
/// this first (`magpie server` does) and loads Vulkan itself only if the answer is not 0.
///
/// # Errors
/// As [`discover`]: [`VulkanError::NoDriver`] without a Vulkan loader or driver.
pub fn count_real_gpus() -> Result<usize, VulkanError> {
    let instance = new_instance()?;
    let real = compute_devices(&instance)?
        .into_iter()
        .filter(|(p, _)| {
            p.properties().device_type != vulkano::device::physical::PhysicalDeviceType::Cpu
                && p.api_version() >= Version::V1_2
                && p.supported_features().timeline_semaphore
        })
        .count();
    Ok(real)
}

/// A Vulkan instance that also lists portability (non-conformant) implementations.
fn new_instance() -> Result<Arc<Instance>, VulkanError> {
    let library = VulkanLibrary::new().map_err(|e| conv::no_loader(&e))?;
    let portability = library.supported_extensions().khr_portability_enumeration;
    Instance::new(
        library,
        InstanceCreateInfo {
            flags: if portability {
                InstanceCreateFlags::ENUMERATE_PORTABILITY
            } else {
                InstanceCreateFlags::empty()
            },
            enabled_extensions: InstanceExtensions {
                khr_portability_enumeration: portability,
                ..InstanceExtensions::empty()
            },
            ..Default::default()
        },
    )
    .map_err(|e| conv::no_instance(&e))
}

/// The physical devices of `instance` with a compute queue, each with that queue's family.
fn compute_devices(
    instance: &Arc<Instance>,
) -> Result<Vec<(Arc<PhysicalDevice>, u32)>, VulkanError> {
    Ok(instance
        .enumerate_physical_devices()
        .map_err(|e| VulkanError::NoDriver(format!("cannot list Vulkan devices: {e}")))?
        .filter_map(|p| {
            let family = p
                .queue_family_properties()
                .iter()
                .position(|q| q.queue_flags.intersects(QueueFlags::COMPUTE))?;
            Some((p, family as u32))
        })
        .collect())
}

/// Discovers the devices anew, apart from those [`discover`] shares (tests that break a
/// device use their own).
pub(super) fn find() -> Result<Vec<Arc<VulkanDevice>>, VulkanError> {
    let instance = new_instance()?;
    let mut physical = compute_devices(&instance)?;
    if physical.is_empty() {
        return Err(VulkanError::NoDevice(
            "the Vulkan driver offers no device with a compute queue".into(),
        ));
    }
    physical.sort_by_key(|(p, _)| conv::rank_of(p.properties().device_type));
    let mut devices = Vec::new();
    let mut failures = Vec::new();
    for (physical, family) in physical {
        let index = devices.len() as u32;
        let label = physical.properties().device_name.clone();
        match open(physical, family, index) {
            Ok(d) => {
                tracing::debug!(device = %d.name, description = %d.shared.description, "Vulkan device");
                devices.push(Arc::new(d));
            }
            Err(e) => {
                tracing::warn!(device = %label, error = %e, "Vulkan device skipped");
                failures.push(format!("{label}: {e}"));
            }
        }
    }
    if devices.is_empty() {
        return Err(VulkanError::NoDevice(failures.join("; ")));
    }
    Ok(devices)
}

fn open(physical: Arc<PhysicalDevice>, family: u32, index: u32) -> Result<VulkanDevice, String> {
    let props = physical.properties();
    let heap_bytes = physical
        .memory_properties()
        .memory_heaps
        .iter()
        .filter(|h| h.flags.intersects(MemoryHeapFlags::DEVICE_LOCAL))
        .map(|h| h.size)
        .max()
        .unwrap_or(0);
    let max_binding_bytes = u64::from(props.max_storage_buffer_range)
        .min(props.max_buffer_size.unwrap_or(u64::MAX))
        .min(props.max_memory_allocation_size.unwrap_or(u64::MAX));
    let limits = Limits {
        heap_bytes,
        max_binding_bytes,
        max_groups: props.max_compute_work_group_count,
    };
    let emulated = props.device_type == vulkano::device::physical::PhysicalDeviceType::Cpu;
    let description = format!(
        "{} ({}, Vulkan {})",
        props.device_name,
        conv::kind_of(props.device_type),
        props.api_version
    );
    // Timeline semaphores (core in Vulkan 1.2) order and complete the command stream.
    if physical.api_version() < Version::V1_2 || !physical.supported_features().timeline_semaphore {
        return Err(format!(
            "needs timeline semaphores (Vulkan 1.2); the device offers Vulkan {}",
            physical.api_version()
        ));
    }
    let timeline_semaphore = true;
    // The f16 MatMul on the matrix units, where the device has what it needs.
    let f16 = super::matrix_units::f16_support(&physical);
    let (extensions, features) = match &f16 {
        Ok((e, f)) => (*e, *f),
        Err(_) => (DeviceExtensions::empty(), DeviceFeatures::empty()),
    };
    let (device, mut queues) = vulkano::device::Device::new(
        physical,
        DeviceCreateInfo {
            queue_create_infos: vec![QueueCreateInfo {
                queue_family_index: family,
                ..Default::default()
            }],
            enabled_extensions: extensions,
            enabled_features: DeviceFeatures {
                timeline_semaphore,
                ..features
            },
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot create the device: {e}"))?;
    let queue = queues.next().ok_or("the device returned no queue")?;
    let pipelines = Pipelines::new(&device, f16.map(|_| ()))?;
    if let Err(why) = pipelines.f16_matmul() {
        tracing::debug!(device = %description, reason = %why, "no f16 cooperative-matrix MatMul");
    }
    let name = DeviceName::local(DEVICE_TYPE, index);
    let memory = Arc::new(StandardMemoryAllocator::new_default(device.clone()));
    let health = Arc::new(Health::new());
    let timeline = Semaphore::new(
        device.clone(),
        SemaphoreCreateInfo {
            semaphore_type: SemaphoreType::Timeline,
            initial_value: 0,
            ..Default::default()
        },
    )
    .map_err(|e| format!("cannot create the timeline semaphore: {e}"))?;
    let stream = Stream::start(
        name.clone(),
        device.clone(),
        queue.clone(),
        Arc::new(timeline),
        Arc::clone(&health),
    )
    .map_err(|e| format!("cannot start the device's threads: {e}"))?;
    Ok(VulkanDevice {
        name,
        shared: Arc::new(Shared {
            description,
            emulated,
            memory_limit: std::sync::atomic::AtomicU64::new(limits.heap_bytes),
            memory_limit_setting: parking_lot::Mutex::new(None),
            matmul_precision: std::sync::atomic::AtomicU8::new(0),
            f16_matmuls: std::sync::atomic::AtomicU64::new(0),
            limits,
            tensors: Pool::new(Kind::Device, memory.clone()),
            uploads: Pool::new(Kind::Upload, memory.clone()),
            downloads: Pool::new(Kind::Download, memory.clone()),
            descriptor_sets: Arc::new(StandardDescriptorSetAllocator::new(
                device.clone(),
                Default::default(),
            )),
            pipelines,
            stream,
            health,
        }),
    })
}
