//! The wait for a device's queued work at the end of a step honours the step's deadline:
//! a device whose sync would end only at its own (far) deadline fails a step with a short
//! [`RunOptions::timeout`] at the step's deadline, naming the device, in blocking and
//! async steps alike.

use std::sync::{Arc, Once};
use std::time::Duration;

use futures::FutureExt;
use magpie_core::device::Device;
use magpie_core::error::Code;
use magpie_core::graph::{DeviceName, Graph};
use magpie_core::kernel::async_support::{sleep, BoxFuture};
use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError};
use magpie_core::registry::register_kernel;
use magpie_core::session::{RunOptions, Session, SessionError, SessionOptions};
use magpie_core::tensor::Tensor;

/// A device whose queue never drains: its sync ends only at its own deadline, an hour
/// away (as a hung GPU's would).
#[derive(Debug)]
struct HungDevice(DeviceName);

/// The hung device's own deadline for a sync.
const DEVICE_DEADLINE: Duration = Duration::from_secs(3600);

impl Device for HungDevice {
    fn name(&self) -> &DeviceName {
        &self.0
    }

    fn sync(&self) -> Result<(), KernelError> {
        futures::executor::block_on(self.sync_async())
    }

    fn sync_async(&self) -> BoxFuture<'static, Result<(), KernelError>> {
        let name = self.0.to_string();
        async move {
            sleep(DEVICE_DEADLINE).await;
            Err(KernelError::Internal(format!("{name}: queue hung")))
        }
        .boxed()
    }
}

/// Outputs its `value` attribute.
struct ConstKernel(Tensor);
impl Kernel for ConstKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        ctx.push_output(self.0.clone());
        Ok(())
    }
}

/// A session on one hung device and a graph with one `Const` node on it.
fn hung_session() -> (Session, magpie_core::graph::Output) {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        register_kernel("Const", "HUNG", |init| {
            let v = init.node.attrs.tensor("value")?;
            Ok(BoxedKernel::Sync(Box::new(ConstKernel(v))))
        })
        .unwrap();
    });
    let g = Graph::new();
    let c = g
        .op("Const")
        .attr("value", Tensor::scalar(1.0f32))
        .build_output()
        .unwrap();
    let dev: Arc<dyn Device> = Arc::new(HungDevice(DeviceName::local("HUNG", 0)));
    let s = Session::new(&g, SessionOptions::with_devices(vec![dev])).unwrap();
    (s, c)
}

fn short_timeout() -> RunOptions {
    RunOptions {
        timeout: Some(Duration::from_millis(50)),
        ..RunOptions::default()
    }
}

/// The error a step past its deadline at the device wait must be.
fn assert_names_the_device(err: &SessionError) {
    match err {
        SessionError::DeviceSyncDeadlineExceeded { device, timeout } => {
            assert_eq!(device, "/job:localhost/replica:0/task:0/device:HUNG:0");
            assert_eq!(*timeout, Duration::from_millis(50));
        }
        other => panic!("expected a deadline naming the device, got {other:?}"),
    }
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(err.to_string().contains("device:HUNG:0"), "{err}");
}

#[test]
fn a_blocking_step_stops_waiting_for_a_hung_device_at_its_deadline() {
    let (s, c) = hung_session();
    // Completing at all proves the wait ended before the device's hour-long deadline.
    let err = s
        .run_with_options(&short_timeout(), &[], &[c], &[])
        .unwrap_err();
    assert_names_the_device(&err);
}

#[test]
fn an_async_step_stops_waiting_for_a_hung_device_at_its_deadline() {
    let (s, c) = hung_session();
    let err =
        futures::executor::block_on(s.run_async_with_options(&short_timeout(), &[], &[c], &[]))
            .unwrap_err();
    assert_names_the_device(&err);
}
