//! Placement: which of the session's devices runs each node.
//!
//! A node with no device spec goes to the default device (the first one the session was
//! given). A node with a spec goes to the first device the spec matches that has a kernel
//! for the node's op; if the spec matches devices but none has a kernel, the error names
//! the op and the device; if it matches none, the error lists the devices that exist.
//!
//! With soft placement ([`SessionOptions::allow_soft_placement`](crate::session::SessionOptions),
//! TensorFlow's `allow_soft_placement`), a pinned node that no device can satisfy — its
//! spec matches none, or only devices without a kernel for its op — is placed as an
//! unpinned node instead of failing.

use std::sync::Arc;

use super::error::SessionError;
use crate::device::Device;
use crate::graph::Node;
use crate::registry::KernelRegistry;

/// Picks the device index for `node` among `devices` (non-empty).
/// With `soft`, a pin no device satisfies falls back to the unpinned rule.
pub(crate) fn place(
    node: &Node,
    devices: &[Arc<dyn Device>],
    kernels: &KernelRegistry,
    soft: bool,
) -> Result<usize, SessionError> {
    let has_kernel = |d: &Arc<dyn Device>| kernels.has_kernel(&node.op, d.as_ref());
    let pinned_ok = node.device.is_empty()
        || devices
            .iter()
            .any(|d| node.device.matches(d.name()) && has_kernel(d));
    if node.device.is_empty() || (soft && !pinned_ok) {
        let default = &devices[0];
        if !has_kernel(default) {
            // An unpinned node may go anywhere: take the first device that can run it.
            if let Some(i) = devices.iter().position(has_kernel) {
                return Ok(i);
            }
            return Err(no_kernel(node, default.as_ref()));
        }
        return Ok(0);
    }
    let mut first_match = None;
    for (i, d) in devices.iter().enumerate() {
        if node.device.matches(d.name()) {
            if has_kernel(d) {
                return Ok(i);
            }
            first_match.get_or_insert(i);
        }
    }
    match first_match {
        Some(i) => Err(no_kernel(node, devices[i].as_ref())),
        None => Err(SessionError::NoMatchingDevice {
            node: node.name.clone(),
            op: node.op.to_string(),
            spec: node.device.to_string(),
            available: devices.iter().map(|d| d.name().to_string()).collect(),
        }),
    }
}

fn no_kernel(node: &Node, device: &dyn Device) -> SessionError {
    SessionError::NoKernel {
        node: node.name.clone(),
        op: node.op.to_string(),
        device: device.name().to_string(),
        device_type: device.device_type().to_string(),
    }
}
