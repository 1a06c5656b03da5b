//! A backend defined outside Magpie's crates: a device and its kernels, registered from
//! here, running a graph — proof that a backend author needs only `magpie-core`.
//!
//! The device is a "SIM" accelerator that counts the kernels it ran: its kernels reach
//! their device as a `SimDevice` through `KernelInit::device` (no global table). It
//! implements `Const`, `Add`, `Mul` and `Neg` for `f32` only (broadcasting with core's
//! `BroadcastLayout`), and one op of its own, `Scale`, that the example also defines (with
//! a typed attribute and a shape function). The kernels go into a registry of the
//! example's own (registered twice: the second time changes nothing), which the session
//! is built with; `testkit::run_kernel` runs one
//! kernel in a line, `testkit::OpCheck` checks `Scale` against a reference closure over
//! random inputs, and core's conformance testkit then checks the device.
//!
//! Run with `cargo run --example custom_backend`.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use magpie_core::device::Device;
use magpie_core::graph::{
    register_op, unchanged_shape, Arity, AttrType, Attrs, DeviceName, Graph, OpDef, OpDefError,
};
use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
use magpie_core::registry::{KernelKey, KernelRegistry, RegistryError};
use magpie_core::session::{Session, SessionOptions};
use magpie_core::tensor::{BroadcastLayout, DType, Shape, Tensor};
use magpie_core::testkit::OpCheck;

/// The backend id the SIM kernels are registered under.
const BACKEND: &str = "sim-example";

#[derive(Debug)]
struct SimDevice {
    name: DeviceName,
    /// Kernels this device has run (shared with the kernels built for it).
    kernels_run: Arc<AtomicUsize>,
}

impl Device for SimDevice {
    fn name(&self) -> &DeviceName {
        &self.name
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn backend(&self) -> &str {
        BACKEND
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
    /// The device's counter.
    kernels_run: Arc<AtomicUsize>,
}

impl Kernel for Elementwise {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        self.kernels_run.fetch_add(1, Ordering::Relaxed);
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
        let layout = BroadcastLayout::new(x.shape(), y.shape())?;
        let (xs, ys) = (x.as_slice::<f32>()?, y.as_slice::<f32>()?);
        // Offsets stay below each input's element count; `get` keeps a tensor whose
        // buffer is shorter than its shape an error instead of a panic.
        let values: Vec<f32> = layout
            .iter()
            .map(|(i, j)| match (xs.get(i), ys.get(j)) {
                (Some(&a), Some(&b)) => Ok((self.f)(a, b)),
                _ => Err(KernelError::InvalidArgument(
                    "input shorter than its shape".into(),
                )),
            })
            .collect::<Result<_, _>>()?;
        let result = Tensor::from_vec(layout.output().clone(), values)?;
        ctx.push_output(result);
        Ok(())
    }
}

struct ConstKernel(Tensor, Arc<AtomicUsize>);

impl Kernel for ConstKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        self.1.fetch_add(1, Ordering::Relaxed);
        ctx.push_output(self.0.clone());
        Ok(())
    }
}

fn f32_only(init: &KernelInit<'_>) -> Result<(), KernelError> {
    match init.input_dtypes.iter().find(|d| **d != DType::F32) {
        Some(d) => Err(KernelError::Unimplemented {
            op: init.node.op.to_string(),
            dtype: *d,
            device_type: "SIM".into(),
        }),
        None => Ok(()),
    }
}

/// Defines `Scale` (process-wide, like every op definition).
fn define_scale() -> anyhow::Result<()> {
    if magpie_core::graph::lookup_op("Scale").is_some() {
        return Ok(());
    }
    register_op(
        OpDef::new("Scale", Arity::Exact(1), |ins, _| {
            if ins[0] != DType::F32 {
                return Err(OpDefError::DType {
                    input: 0,
                    expected: "f32".into(),
                    got: ins[0],
                });
            }
            Ok(vec![DType::F32])
        })
        // A typed attribute: a node without `factor`, or with an int, fails at build.
        .attr("factor", AttrType::Float)
        // Elementwise: the output has the input's shape, which the graph then knows.
        .with_shape_fn(unchanged_shape),
    )?;
    Ok(())
}

fn const_factory(init: &KernelInit<'_>) -> Result<BoxedKernel, KernelError> {
    let device = init.device::<SimDevice>()?;
    let value = init.node.attrs.tensor("value")?;
    if value.dtype() != DType::F32 {
        return Err(KernelError::Unimplemented {
            op: "Const".into(),
            dtype: value.dtype(),
            device_type: "SIM".into(),
        });
    }
    let counter = Arc::clone(&device.kernels_run);
    Ok(BoxedKernel::Sync(Box::new(ConstKernel(value, counter))))
}

/// The factory of an elementwise op applying `f`.
fn elementwise(init: &KernelInit<'_>, f: BinaryFn) -> Result<BoxedKernel, KernelError> {
    // The device as its own type: a clear error if these kernels were ever registered
    // for another device.
    let device = init.device::<SimDevice>()?;
    f32_only(init)?;
    let kernels_run = Arc::clone(&device.kernels_run);
    Ok(BoxedKernel::Sync(Box::new(Elementwise { f, kernels_run })))
}

/// Registers the SIM kernels in `registry` under the backend id [`BACKEND`]. Registering
/// them again is harmless: every factory is a plain function, the same each time.
fn register_sim(registry: &KernelRegistry) -> Result<(), RegistryError> {
    type Factory = fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError>;
    let kernels: [(&str, Factory); 5] = [
        ("Const", const_factory),
        ("Add", |init| elementwise(init, |a, b| a + b)),
        ("Mul", |init| elementwise(init, |a, b| a * b)),
        ("Neg", |init| elementwise(init, |a, _| -a)),
        ("Scale", |init| elementwise(init, |a, f| a * f)),
    ];
    for (op, factory) in kernels {
        registry.register(KernelKey::new(op, "SIM").backend(BACKEND), factory)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    define_scale()?;
    let registry = KernelRegistry::new();
    register_sim(&registry)?;
    register_sim(&registry)?; // the same backend twice: nothing changes
    let device = SimDevice {
        name: DeviceName::local("SIM", 0),
        kernels_run: Arc::default(),
    };
    let counter = Arc::clone(&device.kernels_run);
    let sim: Arc<dyn Device> = Arc::new(device);
    println!("device: {} ({})", sim.name(), sim.description());

    // One kernel on given tensors, in a line: how a backend unit-tests a kernel.
    let a = Tensor::from_vec(&[2usize, 2][..], vec![1.0f32, 2.0, 3.0, 4.0])?;
    let b = Tensor::from_vec(&[2usize][..], vec![10.0f32, 20.0])?;
    let sum =
        magpie_core::testkit::run_kernel_with(&registry, &sim, "Add", &Attrs::new(), &[a, b])?;
    println!("run_kernel: [[1, 2], [3, 4]] + [10, 20] = {}", sum[0]);

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
    let options = SessionOptions::with_devices(vec![Arc::clone(&sim)]).kernels(registry.clone());
    let session = Session::new(&g, options)?;
    let out = session.run(&[], &[y], &[])?;
    println!("y = -(x * 2 * 10) = {}", out[0]);
    anyhow::ensure!(
        out[0].as_slice::<f32>()? == [-20.0, -40.0, -60.0],
        "wrong result"
    );
    println!("kernels run on SIM: {}", counter.load(Ordering::Relaxed));

    // The custom op against a reference closure, over random inputs (scalars, empty
    // tensors, shapes up to rank 3), and its shape function against the kernel's output.
    let scale = OpCheck::elementwise("Scale", 1, |v| v[0] * 2.5)
        .attr("factor", 2.5f64)
        .seed(1)
        .run_with(&registry, &sim)?;
    println!(
        "op check: Scale matches its reference in {} random cases ({} elements)",
        scale.cases, scale.elements
    );

    let report = magpie_core::testkit::check_device_with(&registry, sim)?;
    println!(
        "conformance: {} checks passed on {} (ops: {}; declined: {} dtype cases)",
        report.checks,
        report.device,
        report.ops_covered.join(", "),
        report.unsupported.len()
    );
    Ok(())
}
