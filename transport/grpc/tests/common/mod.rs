//! Test ops and helpers shared by the gRPC integration tests: `TestHang` (an output that
//! never comes, so a step waits until it is aborted, cancelled or past its deadline),
//! `TestThree` (the scalar 3.0), `TestFour` (a 4-element f32 vector, 16 bytes),
//! `TestPass` (its input, unchanged), free loopback ports, (in `worker`) the setup of
//! tests that talk to one task's worker service, and (in `session`) a one-task server
//! with a remote session of plain steps.

#![allow(dead_code, unreachable_pub)]

use std::sync::Once;

mod session;
mod worker;
// Not every test binary uses these helpers.
#[allow(unused_imports)]
pub use session::*;
#[allow(unused_imports)]
pub use worker::*;

use futures::future::BoxFuture;
use magpie_core::graph::{register_op, Arity, OpDef};
use magpie_core::kernel::{
    AsyncKernel, AsyncKernelContext, BoxedKernel, Kernel, KernelContext, KernelError, Outputs,
};
use magpie_core::registry::register_kernel;
use magpie_core::tensor::{DType, Tensor};

struct Hang;

impl AsyncKernel for Hang {
    fn compute_async(
        &self,
        _ctx: AsyncKernelContext,
    ) -> BoxFuture<'static, Result<Outputs, KernelError>> {
        Box::pin(futures::future::pending())
    }
}

/// A kernel that outputs the tensor its function makes.
struct Constant(fn() -> Tensor);

impl Kernel for Constant {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        ctx.push_output((self.0)());
        Ok(())
    }
}

struct Pass;

impl Kernel for Pass {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let t = ctx.take_input(0);
        ctx.push_output(t);
        Ok(())
    }
}

fn three() -> Tensor {
    Tensor::scalar(3.0f32)
}

fn four() -> Tensor {
    Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0])
}

/// Registers the distributed kernels and the test ops (once per process).
pub fn register_test_ops() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        magpie_core::distributed::kernels::register_kernels();
        let source = |_: &[DType], _: &_| Ok(vec![DType::F32]);
        for op in ["TestHang", "TestThree", "TestFour"] {
            register_op(OpDef::new(op, Arity::Exact(0), source)).unwrap();
        }
        register_op(OpDef::new("TestPass", Arity::Exact(1), |ins, _| {
            Ok(vec![ins[0]])
        }))
        .unwrap();
        register_kernel("TestHang", "CPU", |_| {
            Ok(BoxedKernel::Async(Box::new(Hang)))
        })
        .unwrap();
        register_kernel("TestThree", "CPU", |_| {
            Ok(BoxedKernel::Sync(Box::new(Constant(three))))
        })
        .unwrap();
        register_kernel("TestFour", "CPU", |_| {
            Ok(BoxedKernel::Sync(Box::new(Constant(four))))
        })
        .unwrap();
        register_kernel("TestPass", "CPU", |_| Ok(BoxedKernel::Sync(Box::new(Pass)))).unwrap();
    });
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The output of a node named `name` running `op` on `device`, with `inputs`.
pub fn op(
    g: &magpie_core::graph::Graph,
    device: &str,
    name: &str,
    op: &str,
    inputs: &[magpie_core::graph::Output],
) -> magpie_core::graph::Output {
    g.with_device(device)
        .unwrap()
        .with_name(name)
        .op(op)
        .inputs(inputs.iter().copied())
        .build_output()
        .unwrap()
}
