//! Conversions between vulkano's types and Magpie's: errors into
//! [`KernelError`]/[`VulkanError`], physical-device types into descriptions. With the
//! device wrapper (`device/`), the only file that names vulkano types.

use std::error::Error;

use magpie_core::graph::DeviceName;
use magpie_core::KernelError;
use vulkano::device::physical::PhysicalDeviceType;
use vulkano::{LoadingError, Validated, ValidationError, VulkanError as VkResult};

use crate::error::VulkanError;

/// A human word for the kind of physical device.
pub(crate) fn kind_of(t: PhysicalDeviceType) -> &'static str {
    match t {
        PhysicalDeviceType::DiscreteGpu => "discrete GPU",
        PhysicalDeviceType::IntegratedGpu => "integrated GPU",
        PhysicalDeviceType::VirtualGpu => "virtual GPU",
        PhysicalDeviceType::Cpu => "CPU-emulated GPU",
        _ => "other Vulkan device",
    }
}

/// Discovery order: real GPUs first, so `GPU:0` is the fastest kind present.
pub(crate) fn rank_of(t: PhysicalDeviceType) -> u8 {
    match t {
        PhysicalDeviceType::DiscreteGpu => 0,
        PhysicalDeviceType::IntegratedGpu => 1,
        PhysicalDeviceType::VirtualGpu => 2,
        PhysicalDeviceType::Cpu => 3,
        _ => 4,
    }
}

/// The loader could not be loaded.
pub(crate) fn no_loader(e: &LoadingError) -> VulkanError {
    VulkanError::NoDriver(format!(
        "cannot load the Vulkan loader (libvulkan.so.1): {e}; install libvulkan1 and a driver \
         (mesa-vulkan-drivers provides lavapipe, a CPU implementation)"
    ))
}

/// Creating the instance failed: with no driver, the loader reports an incompatible
/// driver ("the requested version of Vulkan is not supported by the driver").
pub(crate) fn no_instance(e: &Validated<VkResult>) -> VulkanError {
    match e {
        Validated::Error(vk @ (VkResult::IncompatibleDriver | VkResult::InitializationFailed)) => {
            VulkanError::NoDriver(format!(
                "the Vulkan loader found no driver ({vk}); install a GPU driver, or \
             mesa-vulkan-drivers for lavapipe"
            ))
        }
        _ => VulkanError::NoDriver(format!("cannot create a Vulkan instance: {e}")),
    }
}

/// The whole chain of an error's messages, outermost first.
fn chain(e: &(dyn Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !msg.contains(&m) {
            msg.push_str(": ");
            msg.push_str(&m);
        }
        cur = s.source();
    }
    msg
}

/// A failed Vulkan call made for `op` on `device`, as a kernel error: out-of-memory
/// becomes [`KernelError::ResourceExhausted`], a lost device [`KernelError::Device`], a
/// failed validation (a bug of this backend) [`KernelError::Internal`].
pub(crate) fn kernel_error(
    op: &str,
    device: &DeviceName,
    e: &(dyn Error + 'static),
) -> KernelError {
    let msg = chain(e);
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(vk) = err.downcast_ref::<VkResult>() {
            return from_result(op, device, *vk, &msg);
        }
        if err.downcast_ref::<ValidationError>().is_some() {
            return KernelError::Internal(format!("{op} on {device}: {msg}"));
        }
        cur = err.source();
    }
    KernelError::Device(format!("{op} on {device}: {msg}"))
}

fn from_result(op: &str, device: &DeviceName, vk: VkResult, msg: &str) -> KernelError {
    match vk {
        VkResult::OutOfHostMemory
        | VkResult::OutOfDeviceMemory
        | VkResult::OutOfPoolMemory
        | VkResult::FragmentedPool
        | VkResult::TooManyObjects => {
            KernelError::ResourceExhausted(format!("{op} on {device}: out of memory ({msg})"))
        }
        VkResult::DeviceLost => KernelError::Device(format!("{device} lost during {op}: {msg}")),
        _ => KernelError::Device(format!("{op} on {device}: {msg}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_and_device_lost_map_to_step_errors() {
        let dev = DeviceName::local("GPU", 0);
        let oom = Validated::Error(VkResult::OutOfDeviceMemory);
        assert!(matches!(
            kernel_error("Fill", &dev, &oom),
            KernelError::ResourceExhausted(m) if m.contains("Fill") && m.contains("GPU:0")
        ));
        let lost = Validated::Error(VkResult::DeviceLost);
        assert!(matches!(
            kernel_error("MatMul", &dev, &lost),
            KernelError::Device(m) if m.contains("lost during MatMul")
        ));
    }

    #[test]
    fn a_missing_driver_is_named() {
        let e = no_instance(&Validated::Error(VkResult::IncompatibleDriver));
        assert!(e.to_string().starts_with("no Vulkan driver: "), "{e}");
        assert_eq!(kind_of(PhysicalDeviceType::Cpu), "CPU-emulated GPU");
    }
}
