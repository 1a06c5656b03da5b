//! [`run_kernel`]: run one kernel on given tensors in one line, for a backend's unit
//! tests — no graph, session or scheduler.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::device::{Device, MemorySpace, COPY_FROM_HOST, COPY_TO_HOST};
use crate::graph::{check_attrs, lookup_op, Attrs, DeviceSpec, Node};
use crate::kernel::{AsyncKernelContext, BoxedKernel, KernelContext, KernelError, KernelInit};
use crate::registry::KernelRegistry;
use crate::resource::ResourceMgr;
use crate::tensor::Tensor;

/// Runs the kernel of `op` (with `attrs`) for `device` from the process-wide registry on
/// `inputs`, and returns its outputs. Attributes the op declares with defaults are filled
/// in, as in a graph. Asynchronous kernels are driven to completion on
/// the calling thread. On a device with its own memory
/// ([`MemorySpace::Device`]), host inputs are copied in and the outputs back with the
/// device's copy kernels, so tests compare host tensors.
///
/// ```
/// use std::sync::Arc;
/// use magpie_core::graph::{Attrs, DeviceName};
/// use magpie_core::testkit::{run_kernel, HostDevice};
/// use magpie_core::{Device, Tensor};
///
/// // `NoOp` runs on every device; a backend's test runs its own ops the same way.
/// let device: Arc<dyn Device> = Arc::new(HostDevice(DeviceName::local("CPU", 0)));
/// let outputs = run_kernel(&device, "NoOp", &Attrs::new(), &[])?;
/// assert!(outputs.is_empty());
/// # Ok::<(), magpie_core::KernelError>(())
/// ```
///
/// # Errors
/// [`KernelError::InvalidArgument`] when no kernel is registered for `op` on the device or
/// `attrs` do not fit the attributes the op declares (missing, mistyped or unknown);
/// otherwise whatever the kernel's factory or computation returns.
pub fn run_kernel(
    device: &Arc<dyn Device>,
    op: &str,
    attrs: &Attrs,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, KernelError> {
    run_kernel_with(&KernelRegistry::global(), device, op, attrs, inputs)
}

/// [`run_kernel`] with the kernels of `registry`.
///
/// # Errors
/// As [`run_kernel`].
pub fn run_kernel_with(
    registry: &KernelRegistry,
    device: &Arc<dyn Device>,
    op: &str,
    attrs: &Attrs,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, KernelError> {
    let on_device = device.memory_space() == MemorySpace::Device;
    let resources = Arc::new(ResourceMgr::new());
    let mut args: SmallVec<[Tensor; 2]> = SmallVec::new();
    for t in inputs {
        if on_device && t.device_buffer().is_none() {
            let copy = run_one(
                registry,
                device,
                COPY_FROM_HOST,
                &Attrs::new(),
                std::slice::from_ref(t),
                &resources,
            )?;
            args.push(single(COPY_FROM_HOST, copy)?);
        } else {
            args.push(t.clone());
        }
    }
    let outputs = run_one(registry, device, op, attrs, &args, &resources)?;
    if !on_device {
        return Ok(outputs);
    }
    outputs
        .into_iter()
        .map(|t| {
            if t.device_buffer().is_some() {
                single(
                    COPY_TO_HOST,
                    run_one(
                        registry,
                        device,
                        COPY_TO_HOST,
                        &Attrs::new(),
                        &[t],
                        &resources,
                    )?,
                )
            } else {
                Ok(t)
            }
        })
        .collect()
}

fn single(op: &str, mut outputs: Vec<Tensor>) -> Result<Tensor, KernelError> {
    match outputs.len() {
        1 => Ok(outputs.remove(0)),
        n => Err(KernelError::Internal(format!(
            "{op} gave {n} outputs, expected 1"
        ))),
    }
}

fn run_one(
    registry: &KernelRegistry,
    device: &Arc<dyn Device>,
    op: &str,
    attrs: &Attrs,
    inputs: &[Tensor],
    resources: &Arc<ResourceMgr>,
) -> Result<Vec<Tensor>, KernelError> {
    let input_dtypes: Vec<_> = inputs.iter().map(Tensor::dtype).collect();
    let mut node = Node::new(op, op);
    node.attrs = attrs.clone();
    let def = lookup_op(op);
    if let Some(def) = &def {
        // As the graph builder does: declared attributes checked, defaults filled in.
        check_attrs(&def.attrs, &mut node.attrs)
            .map_err(|e| KernelError::InvalidArgument(format!("{op}: {e}")))?;
    }
    node.device = DeviceSpec::parse(&device.name().to_string())
        .unwrap_or_default()
        .into();
    node.inputs = Vec::new();
    if let Some(def) = def {
        if let Ok(dtypes) = (def.infer)(&input_dtypes, &node.attrs) {
            node.output_dtypes = dtypes.into_iter().collect();
        }
    }
    let node = Arc::new(node);
    let factory = registry.lookup(op, device.as_ref()).ok_or_else(|| {
        KernelError::InvalidArgument(format!(
            "no kernel for {op} on {} (device type {}, backend {:?})",
            device.name(),
            device.device_type(),
            device.backend()
        ))
    })?;
    let init = KernelInit {
        node: &node,
        input_dtypes: &input_dtypes,
        device,
    };
    let inputs: SmallVec<[Tensor; 2]> = inputs.iter().cloned().collect();
    let outputs = match factory(&init)? {
        BoxedKernel::Sync(k) => {
            let mut ctx = KernelContext::new(&node, inputs, 0).with_resources(resources);
            k.compute(&mut ctx)?;
            ctx.into_outputs()
        }
        BoxedKernel::Async(k) => {
            let ctx = AsyncKernelContext::new(Arc::clone(&node), inputs, 0)
                .with_resources(Arc::clone(resources));
            futures::executor::block_on(k.compute_async(ctx))?
        }
    };
    Ok(outputs.into_iter().collect())
}
