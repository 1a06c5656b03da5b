//! The process-wide kernel registry, keyed by (op, device type).
//!
//! Backends — and crates outside this workspace — add kernel factories with
//! [`register_kernel`]. A factory registered for [`ANY_DEVICE`] serves every device type
//! that has no kernel of its own for that op (used for `NoOp`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;

use crate::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelFactory, KernelInit};

/// The device type that matches any device in the registry.
pub const ANY_DEVICE: &str = "*";

/// Registration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A kernel for this (op, device type) is already registered.
    #[error("a kernel for op {op:?} on device type {device_type:?} is already registered")]
    AlreadyRegistered {
        /// Op name.
        op: String,
        /// Device type.
        device_type: String,
    },
}

type Key = (String, String);

static KERNELS: LazyLock<RwLock<HashMap<Key, KernelFactory>>> = LazyLock::new(|| {
    let mut map: HashMap<Key, KernelFactory> = HashMap::new();
    map.insert(
        ("NoOp".into(), ANY_DEVICE.into()),
        Arc::new(|_: &KernelInit<'_>| Ok(noop())),
    );
    RwLock::new(map)
});

struct NoOpKernel;

impl Kernel for NoOpKernel {
    fn compute(&self, _: &mut KernelContext<'_>) -> Result<(), KernelError> {
        Ok(())
    }
}

fn noop() -> BoxedKernel {
    BoxedKernel::Sync(Box::new(NoOpKernel))
}

/// Registers `factory` for `op` on devices of `device_type`. Fails when one is already
/// registered for that pair.
pub fn register_kernel(
    op: &str,
    device_type: &str,
    factory: impl Fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError> + Send + Sync + 'static,
) -> Result<(), RegistryError> {
    let key = (
        op.to_string(),
        device_type.to_ascii_uppercase().replace("*", ANY_DEVICE),
    );
    let mut map = KERNELS.write();
    if map.contains_key(&key) {
        return Err(RegistryError::AlreadyRegistered {
            op: key.0,
            device_type: key.1,
        });
    }
    map.insert(key, Arc::new(factory));
    Ok(())
}

/// The factory for `op` on `device_type`, falling back to an [`ANY_DEVICE`] one.
pub fn lookup_kernel(op: &str, device_type: &str) -> Option<KernelFactory> {
    let map = KERNELS.read();
    map.get(&(op.to_string(), device_type.to_ascii_uppercase()))
        .or_else(|| map.get(&(op.to_string(), ANY_DEVICE.to_string())))
        .cloned()
}

/// Whether a kernel exists for `op` on `device_type` (directly or through [`ANY_DEVICE`]).
pub fn has_kernel(op: &str, device_type: &str) -> bool {
    lookup_kernel(op, device_type).is_some()
}

/// The ops with a kernel registered for exactly `device_type`, sorted.
pub fn kernels_for(device_type: &str) -> Vec<String> {
    let mut ops: Vec<String> = KERNELS
        .read()
        .keys()
        .filter(|(_, t)| t.eq_ignore_ascii_case(device_type))
        .map(|(op, _)| op.clone())
        .collect();
    ops.sort();
    ops
}
