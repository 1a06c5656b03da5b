//! Kernels reach their device by type, not by name: a GPU named for a cluster task
//! (`/job:J/replica:0/task:T/device:GPU:k`) runs kernels like the local one; registering
//! the backend twice (or into a registry of its own) is fine; a kernel on a device of
//! another type fails with an error naming both types.

use std::sync::Arc;

use magpie_core::device::{Device, MemorySpace};
use magpie_core::graph::{Attrs, DeviceName, Graph};
use magpie_core::registry::KernelRegistry;
use magpie_core::session::{Session, SessionOptions};
use magpie_core::testkit::{run_kernel, run_kernel_with, HostDevice};
use magpie_core::{KernelError, Tensor};

use crate::common::gpu;

#[test]
fn a_task_qualified_gpu_runs_kernels() {
    let Some(local) = gpu() else { return };
    let renamed = magpie_vulkan::discover_for_task("worker", 3).expect("the same GPUs");
    let name = "/job:worker/replica:0/task:3/device:GPU:0";
    assert_eq!(renamed[0].name().to_string(), name);
    assert_eq!(renamed[0].memory_space(), MemorySpace::Device);
    let dev: Arc<dyn Device> = renamed[0].clone();
    assert_ne!(dev.name(), local.name());

    // A whole graph pinned to the renamed GPU, host feeds copied in and fetches out.
    let g = Graph::new();
    let y = g
        .device(name, |g| {
            let a = g.constant(vec![1.0f32, 2.0, 3.0])?;
            let b = g.constant(vec![10.0f32, 20.0, 30.0])?;
            let s = g.add(a, b)?;
            g.mul(s, s)
        })
        .unwrap();
    let session = Session::new(
        &g,
        SessionOptions::with_devices(vec![Arc::clone(&dev)]).num_workers(2),
    )
    .expect("session on the renamed GPU");
    let out = session
        .run(&[], &[y], &[])
        .expect("runs on the renamed GPU");
    assert_eq!(out[0].as_slice::<f32>().unwrap(), [121.0, 484.0, 1089.0]);

    // One kernel in one line, on the renamed GPU.
    let a = Tensor::from_vec(&[2usize, 2][..], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
    let b = Tensor::from_vec(&[2usize][..], vec![10.0f32, 20.0]).unwrap();
    let sum = run_kernel(&dev, "Add", &Attrs::new(), &[a, b]).expect("Add on the GPU");
    assert_eq!(sum[0].as_slice::<f32>().unwrap(), [11.0, 22.0, 13.0, 24.0]);

    // A name of another device type is refused with an error, not a panic.
    let cpu_name = DeviceName::parse("/job:worker/replica:0/task:3/device:CPU:0").unwrap();
    let e = renamed[0]
        .renamed(cpu_name)
        .expect_err("a CPU name for a GPU");
    assert!(e.to_string().contains("device type GPU"), "{e}");
}

#[test]
fn registering_twice_and_scoped_registries() {
    let Some(dev) = gpu() else { return };
    magpie_vulkan::register().expect("registering again changes nothing");
    let scoped = KernelRegistry::new();
    magpie_vulkan::register_into(&scoped).expect("a registry of its own");
    magpie_vulkan::register_into(&scoped).expect("twice");
    let x = Tensor::from_vec(&[3usize][..], vec![1.0f32, -2.0, 3.0]).unwrap();
    let out = run_kernel_with(
        &scoped,
        &dev,
        "Neg",
        &Attrs::new(),
        std::slice::from_ref(&x),
    )
    .unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), [-1.0, 2.0, -3.0]);
    // An empty registry has no GPU kernels (not even the copy that brings the input in):
    // a clear error.
    let e = run_kernel_with(&KernelRegistry::new(), &dev, "Neg", &Attrs::new(), &[x]).unwrap_err();
    assert!(e.to_string().contains("no kernel for _CopyFromHost"), "{e}");
}

#[test]
fn a_gpu_kernel_on_another_device_type_names_both() {
    magpie_vulkan::register().expect("the Vulkan kernels register");
    // A registry where the Vulkan kernels serve every GPU-type device, and a host device
    // of type GPU that is no Vulkan device.
    let registry = KernelRegistry::new();
    magpie_vulkan::register_into(&registry).unwrap();
    let factory = registry
        .lookup_for("Neg", "GPU", magpie_vulkan::BACKEND)
        .expect("registered");
    registry
        .register(
            magpie_core::registry::KernelKey::new("Neg", "GPU"),
            move |init: &magpie_core::kernel::KernelInit<'_>| factory(init),
        )
        .unwrap();
    let fake: Arc<dyn Device> = Arc::new(HostDevice(DeviceName::local("GPU", 7)));
    let x = Tensor::from_vec(&[1usize][..], vec![1.0f32]).unwrap();
    let e = run_kernel_with(&registry, &fake, "Neg", &Attrs::new(), &[x]).unwrap_err();
    assert!(matches!(e, KernelError::WrongDevice { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("VulkanDevice") && msg.contains("HostDevice"),
        "{msg}"
    );
    assert!(msg.contains("/device:GPU:7"), "{msg}");
}
