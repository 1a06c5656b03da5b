//! Errors of the backend as a whole (discovery); errors of one kernel are
//! [`KernelError`](magpie_core::KernelError)s.

/// Why no Vulkan device could be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VulkanError {
    /// The Vulkan loader is missing, or it found no driver (ICD) at all.
    #[error("no Vulkan driver: {0}")]
    NoDriver(String),
    /// A driver loaded, but it offers no device with a compute queue, or every such
    /// device failed to initialise (the reasons are listed).
    #[error("no usable Vulkan device: {0}")]
    NoDevice(String),
    /// A name that a Vulkan device cannot take (not of type `GPU`).
    #[error("bad Vulkan device name: {0}")]
    BadName(String),
}
