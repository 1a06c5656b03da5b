//! The wait for a device's queued work at the end of a step honours the step's deadline
//! and its cancellation: a device whose sync would end only at its own (far) deadline
//! fails a step with a short [`RunOptions::timeout`] at the step's deadline, and a step
//! whose [`RunOptions::cancel`] is cancelled during that wait as cancelled, naming the
//! device, in blocking and async steps alike.

use std::sync::{Arc, Once};
use std::time::Duration;

use futures::FutureExt;
use magpie_core::device::Device;
use magpie_core::error::Code;
use magpie_core::graph::{DeviceName, Graph};
use magpie_core::kernel::async_support::{sleep, BoxFuture};
use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError};
use magpie_core::registry::register_kernel;
use magpie_core::session::{CancellationToken, RunOptions, Session, SessionError, SessionOptions};
use magpie_core::tensor::Tensor;

/// A device whose queue never drains: its sync ends only at its own deadline, an hour
/// away (as a hung GPU's would). When its sync begins it cancels `sync_began` (used as a
/// one-shot signal), if any.
#[derive(Debug)]
struct HungDevice(DeviceName, Option<CancellationToken>);

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
        if let Some(sync_began) = &self.1 {
            sync_began.cancel();
        }
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
    hung_session_signalling(None)
}

/// [`hung_session`] whose device cancels `sync_began` when a sync begins.
fn hung_session_signalling(
    sync_began: Option<CancellationToken>,
) -> (Session, magpie_core::graph::Output) {
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
    let dev: Arc<dyn Device> = Arc::new(HungDevice(DeviceName::local("HUNG", 0), sync_began));
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

/// A session on a hung device, options whose token a thread cancels once the device's
/// sync has begun (join it), and the graph's output. The options' timeout is only a hang
/// guard: a wait that ignored the token would end there, as a deadline error, and fail
/// the test by its kind.
fn cancelled_during_sync() -> (
    Session,
    magpie_core::graph::Output,
    RunOptions,
    std::thread::JoinHandle<()>,
) {
    let sync_began = CancellationToken::new();
    let (s, c) = hung_session_signalling(Some(sync_began.clone()));
    let token = CancellationToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            futures::executor::block_on(sync_began.cancelled());
            token.cancel();
        })
    };
    let opts = RunOptions {
        timeout: Some(Duration::from_secs(120)),
        cancel: Some(token),
        ..RunOptions::default()
    };
    (s, c, opts, canceller)
}

/// The error a step cancelled during the device wait must be.
fn assert_cancelled_naming_the_device(err: &SessionError) {
    match err {
        SessionError::DeviceSyncCancelled { device } => {
            assert_eq!(device, "/job:localhost/replica:0/task:0/device:HUNG:0");
        }
        other => panic!("expected a cancellation naming the device, got {other:?}"),
    }
    assert_eq!(err.code(), Code::Cancelled);
    assert_eq!(
        err.to_string(),
        "step cancelled while waiting for device \
         /job:localhost/replica:0/task:0/device:HUNG:0 to finish its work"
    );
}

#[test]
fn a_blocking_step_cancelled_while_waiting_for_a_hung_device_ends_as_cancelled() {
    let (s, c, opts, canceller) = cancelled_during_sync();
    let err = s.run_with_options(&opts, &[], &[c], &[]).unwrap_err();
    canceller.join().unwrap();
    assert_cancelled_naming_the_device(&err);
}

#[test]
fn an_async_step_cancelled_while_waiting_for_a_hung_device_ends_as_cancelled() {
    let (s, c, opts, canceller) = cancelled_during_sync();
    let err =
        futures::executor::block_on(s.run_async_with_options(&opts, &[], &[c], &[])).unwrap_err();
    canceller.join().unwrap();
    assert_cancelled_naming_the_device(&err);
}

#[test]
fn a_step_cancelled_without_a_deadline_stops_waiting_for_a_hung_device() {
    // No timeout at all: only the token can end the wait (the device's own deadline is
    // an hour away). The step runs on its own thread so that a wait ignoring the token
    // fails the test (the hang guard) instead of hanging it.
    let (s, c, mut opts, canceller) = cancelled_during_sync();
    opts.timeout = None;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(s.run_with_options(&opts, &[], &[c], &[]));
    });
    let err = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("hang guard: the cancelled step still waits for the hung device")
        .unwrap_err();
    canceller.join().unwrap();
    assert_cancelled_naming_the_device(&err);
}
