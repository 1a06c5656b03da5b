//! Every CPU kernel, built through the registry as the executor builds it and run on
//! hand-made inputs. Helpers here; one module per op family.

mod binary;
mod device;
mod matmul;
mod memory;
mod reduce;
mod shape_ops;
mod source;
mod unary;

use std::sync::Arc;

use magpie_core::graph::{AttrValue, Attrs, Graph, Node, Output};
use magpie_core::kernel::KernelInit;
use magpie_core::registry::lookup_kernel;
use magpie_core::tensor::StorageElement;
use magpie_core::{BoxedKernel, DType, KernelContext, KernelError, Shape, Tensor};
use smallvec::SmallVec;

/// The numeric element types, for tests written once over `T`.
const NUMERIC: [DType; 4] = [DType::F32, DType::F64, DType::I32, DType::I64];

/// Builds the CPU kernel for `node` as if its inputs had `dtypes`.
fn build(node: &Arc<Node>, dtypes: &[DType]) -> Result<BoxedKernel, KernelError> {
    magpie_cpu::register().expect("the CPU kernels register");
    let factory = lookup_kernel(&node.op, "CPU").expect("every standard op has a CPU kernel");
    let device = magpie_cpu::cpu_device();
    factory(&KernelInit {
        node,
        input_dtypes: dtypes,
        device: &device,
    })
}

/// Builds `node`'s kernel for its inputs' dtypes and runs it once.
fn run_op(node: &Arc<Node>, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, KernelError> {
    let dtypes: Vec<DType> = inputs.iter().map(Tensor::dtype).collect();
    let BoxedKernel::Sync(kernel) = build(node, &dtypes)? else {
        panic!("CPU kernels are synchronous");
    };
    let mut ctx = KernelContext::new(node, SmallVec::from_vec(inputs), 0);
    kernel.compute(&mut ctx)?;
    Ok(ctx.into_outputs().into_vec())
}

/// The single output of a successful run.
fn run1(node: &Arc<Node>, inputs: Vec<Tensor>) -> Tensor {
    let mut out = run_op(node, inputs).unwrap_or_else(|e| panic!("{} failed: {e}", node.op));
    assert_eq!(out.len(), 1, "{} gives one output", node.op);
    out.pop().unwrap()
}

/// The message of a failed run.
fn run_err(node: &Arc<Node>, inputs: Vec<Tensor>) -> String {
    match run_op(node, inputs) {
        Ok(out) => panic!("{} should fail, gave {out:?}", node.op),
        Err(e) => e.to_string(),
    }
}

/// The node behind `out`.
fn node_of(g: &Graph, out: Output) -> Arc<Node> {
    g.node(out.node()).unwrap()
}

/// A node of `op` over `arity` placeholders of `dtype`, with `attrs`.
fn op_node(op: &str, dtype: DType, arity: usize, attrs: &[(&str, AttrValue)]) -> Arc<Node> {
    let g = Graph::new();
    let mut b = g.op(op);
    for _ in 0..arity {
        b = b.input(g.placeholder(dtype, None).unwrap());
    }
    for (name, value) in attrs {
        b = b.attr(name, value.clone());
    }
    let out = b
        .build_output()
        .unwrap_or_else(|e| panic!("building {op}: {e}"));
    node_of(&g, out)
}

/// A node that skips graph validation, for dtypes and attributes a graph would reject.
fn raw_node(op: &str, attrs: &[(&str, AttrValue)]) -> Arc<Node> {
    let mut a = Attrs::new();
    for (name, value) in attrs {
        a.set(*name, value.clone());
    }
    Arc::new(Node {
        name: op.into(),
        op: op.into(),
        inputs: Vec::new(),
        control_inputs: Vec::new(),
        device: Default::default(),
        attrs: a,
        output_dtypes: SmallVec::new(),
    })
}

/// A tensor of `dims` holding `values` converted to `T` with `as` semantics.
fn tensor<T: StorageElement>(dims: &[usize], values: &[i64]) -> Tensor {
    Tensor::from_vec(
        dims,
        values.iter().map(|&v| T::from_i64(v)).collect::<Vec<T>>(),
    )
    .unwrap()
}

/// `n` small integers, none zero, varying in sign.
fn values(n: usize, salt: i64) -> Vec<i64> {
    (0..n as i64)
        .map(|i| {
            let v = (i * 7 + salt * 3) % 11 - 5;
            if v == 0 {
                3
            } else {
                v
            }
        })
        .collect()
}

/// The tensor's elements as `f64` (exact for the small integers the tests use).
fn as_f64(t: &Tensor) -> Vec<f64> {
    (0..t.num_elements())
        .map(|i| t.storage().get_f64(i))
        .collect()
}

/// The address of a tensor's elements, to tell whether a buffer was reused.
fn data_ptr(t: &Tensor) -> usize {
    match t.dtype() {
        DType::F32 => t.as_slice::<f32>().unwrap().as_ptr() as usize,
        DType::F64 => t.as_slice::<f64>().unwrap().as_ptr() as usize,
        DType::I32 => t.as_slice::<i32>().unwrap().as_ptr() as usize,
        DType::I64 => t.as_slice::<i64>().unwrap().as_ptr() as usize,
        DType::Bool => t.as_slice::<bool>().unwrap().as_ptr() as usize,
    }
}

/// The `Unimplemented` error the CPU gives for `op` on `dtype`.
fn unimplemented(op: &str, dtype: DType) -> KernelError {
    KernelError::Unimplemented {
        op: op.into(),
        dtype,
        device_type: "CPU".into(),
    }
}

/// Shorthand for a shape.
fn shape(dims: &[usize]) -> Shape {
    Shape::new(dims).expect("a test shape fits")
}

/// A tensor of `dtype` and `dims` holding `values` converted with `as` semantics.
fn typed(dtype: DType, dims: &[usize], values: &[i64]) -> Tensor {
    match dtype {
        DType::F32 => tensor::<f32>(dims, values),
        DType::F64 => tensor::<f64>(dims, values),
        DType::I32 => tensor::<i32>(dims, values),
        DType::I64 => tensor::<i64>(dims, values),
        DType::Bool => tensor::<bool>(dims, values),
    }
}

/// `v` rounded to `dtype`'s precision, as `f64`.
fn rounded(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::F32 => f64::from(v as f32),
        _ => v,
    }
}
