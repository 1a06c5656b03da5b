//! Tests of the device wrapper that need a device of their own: a hung GPU, injected as a
//! submission that waits on a timeline semaphore nobody signals (until the test lets it
//! go), fails its wait at the deadline and marks the device failed.

use std::sync::Arc;
use std::time::Duration;

use magpie_core::graph::Graph;
use magpie_core::session::{Session, SessionOptions};
use magpie_core::{DType, Device, KernelError, Tensor};
use vulkano::command_buffer::{SemaphoreSubmitInfo, SubmitInfo};
use vulkano::sync::fence::{Fence, FenceCreateInfo};
use vulkano::sync::semaphore::{
    Semaphore, SemaphoreCreateInfo, SemaphoreSignalInfo, SemaphoreType,
};
use vulkano::{Validated, VulkanError as VkResult};

use super::completion::{Completion, Pending};
use super::VulkanDevice;

/// A submission fenced with a raw fence.
struct RawFence(Arc<Fence>);

impl Pending for RawFence {
    fn wait(&self, timeout: Duration) -> Result<(), Validated<VkResult>> {
        self.0.wait(Some(timeout)).map_err(Validated::Error)
    }
}

/// A device of this test's own (breaking it leaves other tests' devices alone), or
/// `None` when the machine has no Vulkan device or it lacks timeline semaphores.
fn own_device() -> Option<VulkanDevice> {
    let devices = match super::discovery::find() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: no Vulkan device: {e}");
            return None;
        }
    };
    let dev = (*devices[0]).clone();
    if !dev.shared.device.enabled_features().timeline_semaphore {
        eprintln!("SKIPPED: {} has no timeline semaphores", dev.name);
        return None;
    }
    Some(dev)
}

/// Submits work that cannot start until `gate` reaches 1, watched like a kernel's.
fn hang(dev: &VulkanDevice, gate: &Arc<Semaphore>) -> Completion {
    let shared = &dev.shared;
    let fence = Arc::new(Fence::new(shared.device.clone(), FenceCreateInfo::default()).unwrap());
    let submit = SubmitInfo {
        wait_semaphores: vec![SemaphoreSubmitInfo {
            value: 1,
            ..SemaphoreSubmitInfo::new(Arc::clone(gate))
        }],
        ..Default::default()
    };
    // SAFETY: the semaphore and the fence are kept alive by the pending job (leaked when
    // its wait fails) and by the test; the fence is unsignalled and used once; waiting
    // for a timeline value not yet signalled is valid (wait-before-signal).
    shared
        .queue
        .with(|mut q| unsafe { q.submit(&[submit], Some(&fence)) })
        .unwrap();
    shared
        .waiter
        .watch(Box::new(RawFence(fence)), "InjectedHang", &dev.name)
}

#[test]
fn a_hung_gpu_fails_the_wait_at_its_deadline_and_later_steps_fast() {
    let Some(dev) = own_device() else { return };
    crate::register().unwrap();
    let gate = Arc::new(
        Semaphore::new(
            dev.shared.device.clone(),
            SemaphoreCreateInfo {
                semaphore_type: SemaphoreType::Timeline,
                initial_value: 0,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    dev.set_wait_timeout(Duration::from_millis(200));
    assert_eq!(dev.failure(), None);

    let err = futures::executor::block_on(hang(&dev, &gate)).unwrap_err();
    let KernelError::Device(msg) = &err else {
        panic!("expected a device error, got {err:?}")
    };
    assert!(
        msg.contains("GPU:0") && msg.contains("InjectedHang"),
        "{msg}"
    );
    assert!(
        msg.contains("did not finish") && msg.contains("marked failed"),
        "{msg}"
    );
    assert_eq!(dev.failure().as_deref(), Some(msg.as_str()));

    // Later work fails at once with the device's failure.
    let again = dev.upload("Const", &[1.0, 2.0]).unwrap_err();
    assert!(
        matches!(&again, KernelError::Device(m) if m.starts_with("_CopyFromHost") || m.starts_with("Const")),
        "{again:?}"
    );
    assert!(
        again.to_string().contains("did not finish InjectedHang"),
        "{again}"
    );

    // So does a whole step on the device, with the same error.
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g.device("/device:GPU:0", |g| g.neg(x)).unwrap();
    let gpu: Arc<dyn Device> = Arc::new(dev.clone());
    let s = Session::new(&g, SessionOptions::with_devices(vec![gpu]).num_workers(2)).unwrap();
    let step = s
        .run(
            &[(x, Tensor::from_vec([2], vec![1.0f32, 2.0]).unwrap())],
            &[y],
            &[],
        )
        .unwrap_err();
    assert!(
        step.to_string().contains("did not finish InjectedHang"),
        "{step}"
    );

    // Let the injected work go, so the queue drains before the process exits.
    // SAFETY: a host signal of a timeline semaphore to a value above its current one.
    unsafe {
        gate.signal(SemaphoreSignalInfo {
            value: 1,
            ..Default::default()
        })
    }
    .unwrap();
}
