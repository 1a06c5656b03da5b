//! [`OpCheck`]: checks one op's kernel on one device against a reference closure over
//! random inputs — how a backend author tests an op of their own (or a standard op the
//! conformance suite does not cover) without writing cases by hand.
//!
//! Each case draws input shapes (scalars, empty tensors and, when the op broadcasts,
//! shapes that broadcast against each other) and values from a seeded generator, runs
//! the kernel with [`run_kernel_with`], runs the reference on the same inputs and
//! compares. When the op has a shape function, the shapes the graph infers for those
//! inputs must agree with what the kernel produced. The first disagreement is returned
//! as an [`OpCheckError`] that shows the seed, the case and every input, so it can be
//! replayed.

use std::fmt;
use std::sync::Arc;

use super::harness::run_kernel_with;
use crate::device::Device;
use crate::graph::{lookup_op, AttrValue, Attrs, Graph, PartialShape};
use crate::registry::KernelRegistry;
use crate::tensor::{DType, Shape, Storage, Tensor};

/// A reference over whole tensors: the expected outputs for the inputs and attributes
/// (declared defaults filled in), or a message saying why the inputs are invalid.
type TensorReference = dyn Fn(&[Tensor], &Attrs) -> Result<Vec<Tensor>, String>;
/// A reference for one output element from the matching input elements, in `f64`.
type ElementReference = dyn Fn(&[f64]) -> f64;

enum Reference {
    Tensors(Box<TensorReference>),
    Elementwise(Box<ElementReference>),
}

/// Checks an op's kernel against a reference over random inputs; built with
/// [`OpCheck::new`] or [`OpCheck::elementwise`], run with [`OpCheck::run`].
///
/// ```
/// use std::sync::Arc;
/// use magpie_core::graph::{register_op, unchanged_shape, Arity, DeviceName, OpDef};
/// use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
/// use magpie_core::registry::{KernelKey, KernelRegistry};
/// use magpie_core::testkit::{HostDevice, OpCheck};
/// use magpie_core::{Device, Tensor};
///
/// // A custom op, `DocSquare`, and its kernel for CPU devices.
/// register_op(
///     OpDef::new("DocSquare", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
///         .with_shape_fn(unchanged_shape),
/// )?;
/// struct Square;
/// impl Kernel for Square {
///     fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
///         let x = ctx.input(0);
///         let values: Vec<f32> = x.as_slice::<f32>()?.iter().map(|v| v * v).collect();
///         let y = Tensor::from_vec(x.shape().clone(), values)?;
///         ctx.push_output(y);
///         Ok(())
///     }
/// }
/// let registry = KernelRegistry::new();
/// registry.register(KernelKey::new("DocSquare", "CPU"), |_: &KernelInit<'_>| {
///     Ok(BoxedKernel::Sync(Box::new(Square)))
/// })?;
///
/// let device: Arc<dyn Device> = Arc::new(HostDevice(DeviceName::local("CPU", 0)));
/// let report = OpCheck::elementwise("DocSquare", 1, |x| x[0] * x[0])
///     .seed(7)
///     .run_with(&registry, &device)?;
/// assert_eq!(report.cases, 32);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct OpCheck {
    op: String,
    num_inputs: usize,
    reference: Reference,
    attrs: Attrs,
    dtype: DType,
    broadcast: bool,
    cases: usize,
    seed: u64,
    range: (f64, f64),
    tolerance: f64,
}

impl fmt::Debug for OpCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpCheck")
            .field("op", &self.op)
            .field("num_inputs", &self.num_inputs)
            .field("attrs", &self.attrs)
            .field("dtype", &self.dtype)
            .field("broadcast", &self.broadcast)
            .field("cases", &self.cases)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// What a passing check covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpCheckReport {
    /// The op checked.
    pub op: String,
    /// The device it ran on.
    pub device: String,
    /// Cases run, all passing.
    pub cases: usize,
    /// Output elements compared, over all cases.
    pub elements: usize,
    /// Cases whose inputs the reference rejected and the op refused too (at build or in
    /// the kernel), counted in `cases`.
    pub rejected: usize,
    /// Whether the op's shape function was compared with the kernel's output shapes.
    pub shapes_checked: bool,
}

/// The first case where the kernel and the reference disagree, or where one of them
/// failed: everything needed to replay it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "op {op} on {device}, case {case} of seed {seed}: {reason}\n  {}",
    .inputs.join("\n  ")
)]
pub struct OpCheckError {
    /// The op checked.
    pub op: String,
    /// The device it ran on.
    pub device: String,
    /// The seed the inputs were drawn with.
    pub seed: u64,
    /// The failing case (0-based).
    pub case: usize,
    /// Each input of the case: `input 0: f32 [2, 3] = [[..], [..]]`.
    pub inputs: Vec<String>,
    /// What went wrong.
    pub reason: String,
}

impl OpCheck {
    /// A check of `op` with `num_inputs` inputs against `reference`, which computes the
    /// expected outputs from the inputs and attributes (declared defaults filled in), or
    /// returns an error message for inputs the op must reject — the kernel must then fail
    /// too. Inputs have one shape unless [`broadcasting`](Self::broadcasting) is set.
    pub fn new(
        op: impl Into<String>,
        num_inputs: usize,
        reference: impl Fn(&[Tensor], &Attrs) -> Result<Vec<Tensor>, String> + 'static,
    ) -> OpCheck {
        OpCheck::with(op, num_inputs, Reference::Tensors(Box::new(reference)))
    }

    /// A check of an elementwise op: one output, of the inputs' dtype, whose every
    /// element is `f` of the matching input elements (converted to `f64` and back). With
    /// more than one input the inputs broadcast (numpy rules), as the standard binary ops
    /// do; turn that off with [`broadcasting(false)`](Self::broadcasting).
    pub fn elementwise(
        op: impl Into<String>,
        num_inputs: usize,
        f: impl Fn(&[f64]) -> f64 + 'static,
    ) -> OpCheck {
        let mut check = OpCheck::with(op, num_inputs, Reference::Elementwise(Box::new(f)));
        check.broadcast = num_inputs > 1;
        check
    }

    fn with(op: impl Into<String>, num_inputs: usize, reference: Reference) -> OpCheck {
        OpCheck {
            op: op.into(),
            num_inputs,
            reference,
            attrs: Attrs::new(),
            dtype: DType::F32,
            broadcast: false,
            cases: 32,
            seed: 0,
            range: (-10.0, 10.0),
            tolerance: 1e-5,
        }
    }

    /// Sets an attribute of the node every case runs.
    pub fn attr(mut self, name: &str, value: impl Into<AttrValue>) -> OpCheck {
        self.attrs.set(name, value);
        self
    }

    /// The dtype of every input (default `f32`).
    pub fn dtype(mut self, dtype: DType) -> OpCheck {
        self.dtype = dtype;
        self
    }

    /// Whether inputs get different shapes that broadcast together (default: on for
    /// [`elementwise`](Self::elementwise) checks with several inputs, off otherwise).
    pub fn broadcasting(mut self, on: bool) -> OpCheck {
        self.broadcast = on;
        self
    }

    /// How many cases to run (default 32). The first are fixed: scalars, empty vectors
    /// and, when broadcasting, `[2, 3]` with `[3]`, `[2, 1]` with `[1, 3]` and `[0, 3]`
    /// with `[1, 3]` (inputs alternate between the two); the rest are random, up to rank
    /// 3 with dimensions up to 4, some 0.
    pub fn cases(mut self, cases: usize) -> OpCheck {
        self.cases = cases;
        self
    }

    /// The seed of the input generator (default 0): the same seed gives the same cases.
    pub fn seed(mut self, seed: u64) -> OpCheck {
        self.seed = seed;
        self
    }

    /// The range values are drawn from (default `-10.0..=10.0`; integers are rounded).
    pub fn values(mut self, low: f64, high: f64) -> OpCheck {
        self.range = (low.min(high), low.max(high));
        self
    }

    /// The relative tolerance of float comparisons (default `1e-5`, relative to the
    /// expected value or 1, whichever is larger). Integers and booleans compare exactly.
    pub fn tolerance(mut self, tolerance: f64) -> OpCheck {
        self.tolerance = tolerance;
        self
    }

    /// Runs the check with the kernels of the process-wide registry.
    ///
    /// # Errors
    /// As [`run_with`](Self::run_with).
    pub fn run(&self, device: &Arc<dyn Device>) -> Result<OpCheckReport, OpCheckError> {
        self.run_with(&KernelRegistry::global(), device)
    }

    /// Runs the check with the kernels of `registry` on `device`.
    ///
    /// # Errors
    /// [`OpCheckError`] for the first case in which the kernel's outputs differ from the
    /// reference's (count, dtype, shape or a value beyond the tolerance), one of them fails
    /// and the other does not, or the op's shape function disagrees with the kernel's
    /// output shapes. Inputs the reference rejects must be refused too, by the graph (the
    /// op's declared attributes or shape function) or by the kernel. An op that is not
    /// defined fails at case 0.
    pub fn run_with(
        &self,
        registry: &KernelRegistry,
        device: &Arc<dyn Device>,
    ) -> Result<OpCheckReport, OpCheckError> {
        let mut report = OpCheckReport {
            op: self.op.clone(),
            device: device.name().to_string(),
            cases: 0,
            elements: 0,
            rejected: 0,
            shapes_checked: false,
        };
        if lookup_op(&self.op).is_none() {
            return Err(OpCheckError {
                op: self.op.clone(),
                device: report.device,
                seed: self.seed,
                case: 0,
                inputs: Vec::new(),
                reason: "the op is not defined (register_op)".into(),
            });
        }
        let mut rng = SplitMix(self.seed);
        for case in 0..self.cases {
            let inputs = self.draw_inputs(case, &mut rng);
            let fail = |reason: String| OpCheckError {
                op: self.op.clone(),
                device: report.device.clone(),
                seed: self.seed,
                case,
                inputs: describe_inputs(&inputs),
                reason,
            };
            let built = self.infer_shapes(&inputs);
            let attrs = built.as_ref().map_or(&self.attrs, |(attrs, _)| attrs);
            let expected = self.expected(&inputs, attrs);
            let inferred = match (built, &expected) {
                // Inputs the op refuses, at build as in the reference: a passing case.
                (Err(_), Err(_)) => {
                    report.cases += 1;
                    report.rejected += 1;
                    continue;
                }
                (Err(why), Ok(_)) => return Err(fail(why)),
                (Ok((_, inferred)), _) => inferred,
            };
            let actual = run_kernel_with(registry, device, &self.op, &self.attrs, &inputs);
            let (expected, actual) = match (expected, actual) {
                (Err(_), Err(_)) => {
                    report.cases += 1;
                    report.rejected += 1;
                    continue;
                }
                (Err(why), Ok(_)) => {
                    return Err(fail(format!(
                        "the reference rejects these inputs ({why}) but the kernel accepted them"
                    )))
                }
                (Ok(_), Err(e)) => return Err(fail(format!("the kernel failed: {e}"))),
                (Ok(expected), Ok(actual)) => (expected, actual),
            };
            compare(&expected, &actual, self.tolerance).map_err(&fail)?;
            if let Some(inferred) = &inferred {
                report.shapes_checked = true;
                for (i, (shape, t)) in inferred.iter().zip(&actual).enumerate() {
                    if !shape.is_compatible_with_shape(t.shape()) {
                        return Err(fail(format!(
                            "the shape function infers output {i} as {shape}, \
                             but the kernel produced {:?}",
                            t.dims()
                        )));
                    }
                }
            }
            report.elements += actual.iter().map(Tensor::num_elements).sum::<usize>();
            report.cases += 1;
        }
        Ok(report)
    }

    /// Builds the case's node on placeholders of the inputs' shapes: the attributes with
    /// declared defaults filled in and, when the op has a shape function, its outputs'
    /// inferred shapes.
    fn infer_shapes(&self, inputs: &[Tensor]) -> Result<Built, String> {
        let def = lookup_op(&self.op).ok_or_else(|| format!("op {:?} is not defined", self.op))?;
        let g = Graph::new();
        let mut placeholders = Vec::with_capacity(inputs.len());
        for t in inputs {
            let p = g
                .placeholder(t.dtype(), Some(t.shape()))
                .map_err(|e| e.to_string())?;
            placeholders.push(p);
        }
        let mut builder = g.op(&self.op).inputs(placeholders);
        for (name, value) in self.attrs.iter() {
            builder = builder.attr(name, value.clone());
        }
        let id = builder
            .build()
            .map_err(|e| format!("the graph refuses a node of the op for these inputs: {e}"))?;
        let node = g.node(id).ok_or("the node just added is missing")?;
        let inferred = match def.shape_fn {
            Some(_) => Some(
                (0..node.num_outputs())
                    .map(|i| g.shape_of(id.output(i as u32)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        Ok((node.attrs.clone(), inferred))
    }

    fn expected(&self, inputs: &[Tensor], attrs: &Attrs) -> Result<Vec<Tensor>, String> {
        match &self.reference {
            Reference::Tensors(f) => f(inputs, attrs),
            Reference::Elementwise(f) => elementwise_reference(inputs, self.dtype, f.as_ref()),
        }
    }

    /// The inputs of case `case`: fixed shapes for the first cases, random ones after.
    fn draw_inputs(&self, case: usize, rng: &mut SplitMix) -> Vec<Tensor> {
        let n = self.num_inputs;
        let shapes: Vec<Vec<usize>> = match case {
            0 => vec![Vec::new(); n],
            1 => vec![vec![0]; n],
            2 if self.broadcast => (0..n)
                .map(|i| if i % 2 == 0 { vec![2, 3] } else { vec![3] })
                .collect(),
            3 if self.broadcast => (0..n)
                .map(|i| if i % 2 == 0 { vec![2, 1] } else { vec![1, 3] })
                .collect(),
            4 if self.broadcast => (0..n)
                .map(|i| if i % 2 == 0 { vec![0, 3] } else { vec![1, 3] })
                .collect(),
            _ => {
                let rank = rng.below(4);
                let out: Vec<usize> = (0..rank)
                    .map(|_| {
                        if rng.below(10) == 0 {
                            0
                        } else {
                            1 + rng.below(4)
                        }
                    })
                    .collect();
                (0..n)
                    .map(|_| {
                        if !self.broadcast {
                            return out.clone();
                        }
                        let drop = rng.below(rank + 1);
                        out[drop..]
                            .iter()
                            .map(|&d| if rng.below(3) == 0 { 1 } else { d })
                            .collect()
                    })
                    .collect()
            }
        };
        shapes
            .iter()
            .map(|dims| random_tensor(self.dtype, dims, self.range, rng))
            .collect()
    }
}

/// A case's node as the graph built it: its attributes (declared defaults filled in) and,
/// when the op has a shape function, its outputs' inferred shapes.
type Built = (Attrs, Option<Vec<PartialShape>>);

/// Splitmix64: small, seedable and good enough for test inputs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn random_tensor(dtype: DType, dims: &[usize], (lo, hi): (f64, f64), rng: &mut SplitMix) -> Tensor {
    let n: usize = dims.iter().product();
    let mut draw = || lo + (hi - lo) * rng.unit();
    let storage = match dtype {
        DType::F32 => Storage::F32((0..n).map(|_| draw() as f32).collect()),
        DType::F64 => Storage::F64((0..n).map(|_| draw()).collect()),
        DType::I32 => Storage::I32((0..n).map(|_| draw().round() as i32).collect()),
        DType::I64 => Storage::I64((0..n).map(|_| draw().round() as i64).collect()),
        DType::Bool => Storage::Bool((0..n).map(|_| draw() >= (lo + hi) / 2.0).collect()),
    };
    // The dims are at most 4 per dimension and rank 3: always a valid shape.
    Tensor::from_storage(dims, storage).unwrap_or_else(|_| Tensor::empty(dtype))
}

fn describe_inputs(inputs: &[Tensor]) -> Vec<String> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, t)| format!("input {i}: {} {:?} = {t}", t.dtype(), t.dims()))
        .collect()
}

/// The expected output of an elementwise op: `f` over the inputs broadcast together.
fn elementwise_reference(
    inputs: &[Tensor],
    dtype: DType,
    f: &ElementReference,
) -> Result<Vec<Tensor>, String> {
    let mut out = Shape::scalar();
    for t in inputs {
        out = Shape::broadcast(&out, t.shape()).map_err(|e| e.to_string())?;
    }
    let rank = out.rank();
    let out_dims = out.dims();
    // Per input, the stride of each output dimension (0 where the input is broadcast).
    let strides: Vec<Vec<usize>> = inputs
        .iter()
        .map(|t| {
            let own = t.shape().strides();
            let offset = rank - t.shape().rank();
            (0..rank)
                .map(|d| match d.checked_sub(offset) {
                    Some(k) if t.dims()[k] != 1 => own[k],
                    _ => 0,
                })
                .collect()
        })
        .collect();
    let mut args = vec![0.0; inputs.len()];
    let mut values = Vec::with_capacity(out.num_elements());
    let mut index = vec![0usize; rank];
    for _ in 0..out.num_elements() {
        for (k, t) in inputs.iter().enumerate() {
            let at: usize = index.iter().zip(&strides[k]).map(|(i, s)| i * s).sum();
            args[k] = t.storage().get_f64(at);
        }
        values.push(f(&args));
        // The next index in row-major order.
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < out_dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
    let storage = match dtype {
        DType::F32 => Storage::F32(values.iter().map(|&v| v as f32).collect()),
        DType::F64 => Storage::F64(values),
        DType::I32 => Storage::I32(values.iter().map(|&v| v as i32).collect()),
        DType::I64 => Storage::I64(values.iter().map(|&v| v as i64).collect()),
        DType::Bool => Storage::Bool(values.iter().map(|&v| v != 0.0).collect()),
    };
    let t = Tensor::from_storage(out, storage).map_err(|e| e.to_string())?;
    Ok(vec![t])
}

/// Compares outputs: count, dtype, shape, then values.
fn compare(expected: &[Tensor], actual: &[Tensor], tolerance: f64) -> Result<(), String> {
    if expected.len() != actual.len() {
        return Err(format!(
            "the kernel gave {} outputs, the reference {}",
            actual.len(),
            expected.len()
        ));
    }
    for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
        if e.dtype() != a.dtype() {
            return Err(format!(
                "output {i} has dtype {}, expected {}",
                a.dtype(),
                e.dtype()
            ));
        }
        if e.dims() != a.dims() {
            return Err(format!(
                "output {i} has shape {:?}, expected {:?}",
                a.dims(),
                e.dims()
            ));
        }
        if a.storage().len() < a.num_elements() {
            return Err(format!(
                "output {i} holds {} elements, its shape says {}",
                a.storage().len(),
                a.num_elements()
            ));
        }
        let exact = !matches!(e.dtype(), DType::F32 | DType::F64);
        for k in 0..e.num_elements() {
            let (x, y) = (e.storage().get_f64(k), a.storage().get_f64(k));
            let same = if exact {
                x == y
            } else {
                (x.is_nan() && y.is_nan())
                    || x == y
                    || (x - y).abs() <= tolerance * x.abs().max(1.0)
            };
            if !same {
                return Err(format!(
                    "output {i} differs at element {k}: kernel {y}, reference {x}\n  \
                     kernel output: {a}\n  reference:     {e}"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_inputs_and_shapes_broadcast() {
        let check = OpCheck::elementwise("Add", 2, |x| x[0] + x[1]).seed(3);
        let draw = |check: &OpCheck| {
            let mut rng = SplitMix(check.seed);
            (0..20)
                .map(|case| check.draw_inputs(case, &mut rng))
                .collect::<Vec<_>>()
        };
        let (a, b) = (draw(&check), draw(&check));
        assert_eq!(a, b);
        assert!(a[0].iter().all(|t| t.dims().is_empty()));
        assert!(a[1].iter().all(|t| t.num_elements() == 0));
        for inputs in &a {
            assert!(Shape::broadcast(inputs[0].shape(), inputs[1].shape()).is_ok());
        }
        // Some random case has inputs of different shapes.
        assert!(a[5..]
            .iter()
            .any(|inputs| inputs[0].dims() != inputs[1].dims()));
    }

    #[test]
    fn the_elementwise_reference_broadcasts() {
        let a = Tensor::from_vec(&[2usize, 1][..], vec![1.0f32, 2.0]).unwrap();
        let b = Tensor::from_vec(&[3usize][..], vec![10.0f32, 20.0, 30.0]).unwrap();
        let out = elementwise_reference(&[a, b], DType::F32, &|x: &[f64]| x[0] + x[1]).unwrap();
        assert_eq!(out[0].dims(), [2, 3]);
        assert_eq!(
            out[0].as_slice::<f32>().unwrap(),
            [11.0, 21.0, 31.0, 12.0, 22.0, 32.0]
        );
    }

    #[test]
    fn compare_names_the_differing_element() {
        let e = Tensor::from_slice(&[1.0f32, 2.0]);
        let a = Tensor::from_slice(&[1.0f32, 2.5]);
        let err = compare(std::slice::from_ref(&e), &[a], 1e-5).unwrap_err();
        assert!(err.contains("element 1: kernel 2.5, reference 2"), "{err}");
        assert!(compare(std::slice::from_ref(&e), std::slice::from_ref(&e), 0.0).is_ok());
    }
}
