//! Tensors in a device's own memory: the executor inserts the backend's copy kernels
//! exactly where a tensor crosses between host and device memory, and nowhere else.
//!
//! The device here, `DMEM`, keeps tensors in a fake device buffer (a host tensor behind
//! the `DeviceBuffer` trait), so the test needs no GPU.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Once};

use magpie_core::device::{Device, MemorySpace, COPY_FROM_HOST, COPY_TO_HOST};
use magpie_core::graph::{DeviceName, Graph};
use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError};
use magpie_core::registry::register_kernel;
use magpie_core::session::{RunOptions, Session, SessionOptions};
use magpie_core::tensor::{DType, DeviceBuffer, Tensor};

#[derive(Debug)]
struct HostDevice(DeviceName);
impl Device for HostDevice {
    fn name(&self) -> &DeviceName {
        &self.0
    }
}

#[derive(Debug)]
struct DmemDevice(DeviceName);
impl Device for DmemDevice {
    fn name(&self) -> &DeviceName {
        &self.0
    }
    fn memory_space(&self) -> MemorySpace {
        MemorySpace::Device
    }
}

#[derive(Debug)]
struct FakeBuffer {
    inner: Tensor,
    device: DeviceName,
}
impl DeviceBuffer for FakeBuffer {
    fn dtype(&self) -> DType {
        self.inner.dtype()
    }
    fn len(&self) -> usize {
        self.inner.num_elements()
    }
    fn device(&self) -> &DeviceName {
        &self.device
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Copies in and out made by each step, as the copy kernels themselves count them.
static COPIES: LazyLock<Mutex<HashMap<magpie_core::StepId, (usize, usize)>>> =
    LazyLock::new(Default::default);

fn count(step: magpie_core::StepId, into_device: bool) {
    let mut c = COPIES.lock().unwrap();
    let e = c.entry(step).or_default();
    if into_device {
        e.0 += 1;
    } else {
        e.1 += 1;
    }
}

struct F<K>(K);
impl<K: Fn(&mut KernelContext<'_>) -> Result<(), KernelError> + Send + Sync> Kernel for F<K> {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        (self.0)(ctx)
    }
}

fn dmem_name() -> DeviceName {
    DeviceName::local("DMEM", 0)
}

fn unwrap(t: &Tensor) -> Result<Tensor, KernelError> {
    let b = t
        .device_buffer()
        .ok_or_else(|| KernelError::Internal("expected a DMEM tensor".into()))?;
    let fake = b
        .as_any()
        .downcast_ref::<FakeBuffer>()
        .expect("a DMEM buffer");
    Ok(fake.inner.clone())
}

fn wrap(t: Tensor) -> Tensor {
    let shape = t.shape().clone();
    Tensor::from_device_buffer(
        shape,
        Arc::new(FakeBuffer {
            inner: t,
            device: dmem_name(),
        }),
    )
    .unwrap()
}

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        register_kernel(COPY_FROM_HOST, "DMEM", |_| {
            Ok(BoxedKernel::Sync(Box::new(F(
                |ctx: &mut KernelContext<'_>| {
                    count(ctx.step_id(), true);
                    assert!(ctx.input(0).is_on_host());
                    let t = wrap(ctx.input(0).clone());
                    ctx.push_output(t);
                    Ok(())
                },
            ))))
        })
        .unwrap();
        register_kernel(COPY_TO_HOST, "DMEM", |_| {
            Ok(BoxedKernel::Sync(Box::new(F(
                |ctx: &mut KernelContext<'_>| {
                    count(ctx.step_id(), false);
                    let t = unwrap(ctx.input(0))?;
                    ctx.push_output(t);
                    Ok(())
                },
            ))))
        })
        .unwrap();
        register_kernel("Neg", "DMEM", |_| {
            Ok(BoxedKernel::Sync(Box::new(F(
                |ctx: &mut KernelContext<'_>| {
                    let x = unwrap(ctx.input(0))?.scalar_value::<f32>()?;
                    ctx.push_output(wrap(Tensor::scalar(-x)));
                    Ok(())
                },
            ))))
        })
        .unwrap();
        register_kernel("Add", "HOSTDEV", |_| {
            Ok(BoxedKernel::Sync(Box::new(F(
                |ctx: &mut KernelContext<'_>| {
                    let a = ctx.input(0).scalar_value::<f32>()?;
                    let b = ctx.input(1).scalar_value::<f32>()?;
                    ctx.push_output(Tensor::scalar(a + b));
                    Ok(())
                },
            ))))
        })
        .unwrap();
    });
}

fn session(g: &Graph) -> Session {
    setup();
    let host: Arc<dyn Device> = Arc::new(HostDevice(DeviceName::local("HOSTDEV", 0)));
    let dmem: Arc<dyn Device> = Arc::new(DmemDevice(dmem_name()));
    Session::new(
        g,
        SessionOptions::with_devices(vec![host, dmem]).num_workers(2),
    )
    .unwrap()
}

#[test]
fn a_chain_on_a_device_copies_in_once_and_out_once() {
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g
        .device("/device:DMEM:0", |g| {
            let mut y = x;
            for _ in 0..10 {
                y = g.neg(y)?;
            }
            Ok(y)
        })
        .unwrap();
    let s = session(&g);
    let out = s
        .run_with_options(
            &RunOptions::default(),
            &[(x, Tensor::scalar(3.0f32))],
            &[y],
            &[],
        )
        .unwrap();
    assert!(out.tensors[0].is_on_host());
    assert_eq!(f32::try_from(&out.tensors[0]).unwrap(), 3.0);
    assert_eq!(out.metadata.copies, 2);
    assert_eq!(COPIES.lock().unwrap()[&out.metadata.step_id], (1, 1));
}

#[test]
fn one_copy_serves_every_consumer_on_the_other_side() {
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let n = g.with_device("/device:DMEM:0").unwrap().neg(x).unwrap();
    // Two host consumers of the device tensor, plus a fetch of it: one copy out.
    let a = g.add(n, n).unwrap();
    let b = g.add(a, n).unwrap();
    let s = session(&g);
    let out = s
        .run_with_options(
            &RunOptions::default(),
            &[(x, Tensor::scalar(2.0f32))],
            &[b, n],
            &[],
        )
        .unwrap();
    assert_eq!(f32::try_from(&out.tensors[0]).unwrap(), -6.0);
    assert_eq!(f32::try_from(&out.tensors[1]).unwrap(), -2.0);
    assert_eq!(out.metadata.copies, 2, "one copy in (x), one copy out (n)");
}
