//! A backend defined outside Magpie's crates: a device and its kernels, registered from
//! here, running a graph — proof that a backend author needs only `magpie-core`.
//!
//! The device is a "SIM" accelerator that counts the kernels it ran. It implements
//! `Const`, `Add`, `Mul` and `Neg` for `f32` only, and one op of its own, `Scale`, that the example also defines. The
//! core conformance testkit then checks the device.
//!
//! Run with `cargo run --example custom_backend`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use magpie_core::device::Device;
use magpie_core::graph::{
    register_op, unchanged_shape, Arity, DeviceName, Graph, OpDef, OpDefError,
};
use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
use magpie_core::registry::register_kernel;
use magpie_core::session::{Session, SessionOptions};
use magpie_core::tensor::{DType, Shape, Tensor};

/// Kernels the simulator has run.
static KERNELS_RUN: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct SimDevice {
    name: DeviceName,
}

impl Device for SimDevice {
    fn name(&self) -> &DeviceName {
        &self.name
    }

    fn memory_limit(&self) -> Option<u64> {
        Some(1 << 30)
    }

    fn description(&self) -> String {
        "simulated accelerator (counts kernels)".into()
    }
}

/// The scalar function an elementwise kernel applies.
type BinaryFn = fn(f32, f32) -> f32;

/// An elementwise f32 kernel over one or two inputs, with numpy broadcasting.
struct Elementwise {
    f: BinaryFn,
}

/// The element of `t` that output element `flat` (of shape `out`) reads under broadcasting.
fn source_index(t: &Shape, out: &Shape, mut flat: usize) -> usize {
    let (mut index, mut stride) = (0, 1);
    let offset = out.rank() - t.rank();
    for d in (0..out.rank()).rev() {
        let coord = flat % out.dims()[d];
        flat /= out.dims()[d];
        if d >= offset {
            let size = t.dims()[d - offset];
            index += if size == 1 { 0 } else { coord * stride };
            stride *= size;
        }
    }
    index
}

impl Kernel for Elementwise {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        KERNELS_RUN.fetch_add(1, Ordering::Relaxed);
        let factor = ctx
            .attrs()
            .float("factor")
            .map(|f| Tensor::scalar(f as f32));
        let x = ctx.input(0);
        let y = match (ctx.num_inputs(), &factor) {
            (2, _) => ctx.input(1),
            (_, Ok(f)) => f,
            _ => x,
        };
        // A `ShapeError` (shapes that do not broadcast, or too large) becomes an invalid
        // argument the session reports with this node's name.
        let out = Shape::broadcast(x.shape(), y.shape())?;
        let (xs, ys) = (x.as_slice::<f32>()?, y.as_slice::<f32>()?);
        let values: Vec<f32> = (0..out.num_elements())
            .map(|i| {
                let a = xs[source_index(x.shape(), &out, i)];
                let b = ys[source_index(y.shape(), &out, i)];
                (self.f)(a, b)
            })
            .collect();
        let result = Tensor::from_vec(out, values)?;
        ctx.push_output(result);
        Ok(())
    }
}

struct ConstKernel(Tensor);

impl Kernel for ConstKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        KERNELS_RUN.fetch_add(1, Ordering::Relaxed);
        ctx.push_output(self.0.clone());
        Ok(())
    }
}

fn f32_only(init: &KernelInit<'_>) -> Result<(), KernelError> {
    match init.input_dtypes.iter().find(|d| **d != DType::F32) {
        Some(d) => Err(KernelError::Unimplemented {
            op: init.node.op.clone(),
            dtype: *d,
            device_type: "SIM".into(),
        }),
        None => Ok(()),
    }
}

fn register_sim() -> anyhow::Result<()> {
    register_op(
        OpDef::new("Scale", Arity::Exact(1), |ins, attrs| {
            attrs.float("factor")?;
            if ins[0] != DType::F32 {
                return Err(OpDefError::DType {
                    input: 0,
                    expected: "f32".into(),
                    got: ins[0],
                });
            }
            Ok(vec![DType::F32])
        })
        // Elementwise: the output has the input's shape, which the graph then knows.
        .with_shape_fn(unchanged_shape),
    )?;
    register_kernel("Const", "SIM", |init| {
        let value = init.node.attrs.tensor("value")?;
        if value.dtype() != DType::F32 {
            return Err(KernelError::Unimplemented {
                op: "Const".into(),
                dtype: value.dtype(),
                device_type: "SIM".into(),
            });
        }
        Ok(BoxedKernel::Sync(Box::new(ConstKernel(value))))
    })?;
    let ops: [(&str, BinaryFn); 4] = [
        ("Add", |a, b| a + b),
        ("Mul", |a, b| a * b),
        ("Neg", |a, _| -a),
        ("Scale", |a, f| a * f),
    ];
    for (op, f) in ops {
        register_kernel(op, "SIM", move |init| {
            f32_only(init)?;
            Ok(BoxedKernel::Sync(Box::new(Elementwise { f })))
        })?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    register_sim()?;
    let sim: Arc<dyn Device> = Arc::new(SimDevice {
        name: DeviceName::local("SIM", 0),
    });
    println!("device: {} ({})", sim.name(), sim.description());

    let g = Graph::new();
    let y = g.device("/device:SIM:0", |g| {
        let x = g.constant(vec![1.0f32, 2.0, 3.0])?;
        let two = g.constant(2.0f32)?;
        let doubled = g.mul(x, two)?;
        let scaled = g
            .op("Scale")
            .input(doubled)
            .attr("factor", 10.0f64)
            .build_output()?;
        g.neg(scaled)
    })?;
    // Its shape is known before anything runs, through Scale's shape function.
    anyhow::ensure!(
        g.shape_of(y)?.to_shape() == Shape::new(&[3]).ok(),
        "shape not inferred"
    );
    let session = Session::new(&g, SessionOptions::with_devices(vec![Arc::clone(&sim)]))?;
    let out = session.run(&[], &[y], &[])?;
    println!("y = -(x * 2 * 10) = {}", out[0]);
    anyhow::ensure!(
        out[0].as_slice::<f32>()? == [-20.0, -40.0, -60.0],
        "wrong result"
    );
    println!(
        "kernels run on SIM: {}",
        KERNELS_RUN.load(Ordering::Relaxed)
    );

    let report = magpie_core::testkit::check_device(sim)?;
    println!(
        "conformance: {} checks passed on {} (ops: {}; declined: {} dtype cases)",
        report.checks,
        report.device,
        report.ops_covered.join(", "),
        report.unsupported.len()
    );
    Ok(())
}
