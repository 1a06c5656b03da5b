//! The device's matrix units: whether `matmul_coop.wgsl` (f16 operands, f32 accumulators,
//! 16 x 16 x 16 cooperative matrices of one subgroup) can run on a physical device, and
//! the extension and features it needs enabled. Read once when the device is opened.
//!
//! The shader needs `VK_KHR_cooperative_matrix` with the `cooperativeMatrix` feature and
//! compute shaders among `cooperativeMatrixSupportedStages`; a 16 x 16 x 16 subgroup
//! shape with f16 A and B and f32 C and result among the shapes
//! `vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR` lists; `shaderFloat16`, the 16-bit
//! storage features naga declares with any f16, and the Vulkan memory model (naga writes
//! cooperative-matrix modules against it); and a subgroup size of 32, so that a workgroup
//! of 256 invocations is the 8 subgroups the shader divides its tile among.
//!
//! bf16 has no path: naga has no bf16 type, and `VK_KHR_shader_bfloat16` would be needed.

use std::sync::Arc;

use ash::vk;
use vulkano::device::physical::PhysicalDevice;
use vulkano::device::{DeviceExtensions, DeviceFeatures};
use vulkano::shader::ShaderStages;
use vulkano::VulkanObject;

/// Whether the f16 cooperative-matrix MatMul can run on `physical`: `Ok` with what to
/// enable, or `Err` with the first missing piece (for the log and
/// [`VulkanDevice::f16_matrix_units`](super::VulkanDevice::f16_matrix_units)).
pub(super) fn f16_support(
    physical: &Arc<PhysicalDevice>,
) -> Result<(DeviceExtensions, DeviceFeatures), String> {
    if !physical.supported_extensions().khr_cooperative_matrix {
        return Err("no VK_KHR_cooperative_matrix".into());
    }
    let needed = DeviceFeatures {
        cooperative_matrix: true,
        shader_float16: true,
        storage_buffer16_bit_access: true,
        uniform_and_storage_buffer16_bit_access: true,
        vulkan_memory_model: true,
        ..DeviceFeatures::empty()
    };
    let missing = needed.difference(physical.supported_features());
    if missing != DeviceFeatures::empty() {
        return Err(format!("missing features {missing:?}"));
    }
    let props = physical.properties();
    if !props
        .cooperative_matrix_supported_stages
        .is_some_and(|s| s.contains(ShaderStages::COMPUTE))
    {
        return Err("cooperative matrices not offered in compute shaders".into());
    }
    if props.subgroup_size != Some(32) {
        return Err(format!(
            "subgroup size {:?}, the shader needs 32",
            props.subgroup_size
        ));
    }
    let shapes = shapes(physical)?;
    let wanted = shapes.iter().any(|s| {
        (s.m_size, s.n_size, s.k_size) == (16, 16, 16)
            && s.a_type == vk::ComponentTypeKHR::FLOAT16
            && s.b_type == vk::ComponentTypeKHR::FLOAT16
            && s.c_type == vk::ComponentTypeKHR::FLOAT32
            && s.result_type == vk::ComponentTypeKHR::FLOAT32
            && s.scope == vk::ScopeKHR::SUBGROUP
    });
    if !wanted {
        return Err(format!(
            "no 16x16x16 f16 x f16 + f32 subgroup shape among {} offered",
            shapes.len()
        ));
    }
    Ok((
        DeviceExtensions {
            khr_cooperative_matrix: true,
            ..DeviceExtensions::empty()
        },
        needed,
    ))
}

/// The cooperative-matrix shapes the device lists.
fn shapes(
    physical: &Arc<PhysicalDevice>,
) -> Result<Vec<vk::CooperativeMatrixPropertiesKHR<'static>>, String> {
    let get = physical
        .instance()
        .fns()
        .khr_cooperative_matrix
        .get_physical_device_cooperative_matrix_properties_khr;
    let mut count = 0u32;
    // SAFETY: the device offers VK_KHR_cooperative_matrix (checked by the caller), so the
    // loader resolved this instance-level entry point; a null array asks for the count.
    let r = unsafe { get(physical.handle(), &mut count, std::ptr::null_mut()) };
    if r != vk::Result::SUCCESS {
        return Err(format!("listing cooperative-matrix shapes failed: {r:?}"));
    }
    let mut list = vec![vk::CooperativeMatrixPropertiesKHR::default(); count as usize];
    // SAFETY: `list` holds `count` structures with their sType set (Default does), as the
    // call requires; it writes at most `count` and stores how many in `count`.
    let r = unsafe { get(physical.handle(), &mut count, list.as_mut_ptr()) };
    if r != vk::Result::SUCCESS && r != vk::Result::INCOMPLETE {
        return Err(format!("listing cooperative-matrix shapes failed: {r:?}"));
    }
    list.truncate(count as usize);
    Ok(list)
}
