//! TensorFlow's variable ops beyond read and assign, as Magpie ops on named variables:
//! the reads of ref variables, `AssignSubVariableOp`, `VarIsInitializedOp` and the
//! optimizers' updates. Like the other variable ops ([`ops`](super::ops)) they name their
//! variable by attributes (`container`, `shared_name`, `dtype`) instead of taking a
//! handle, and run where the variable lives (host kernels registered for `CPU`).
//!
//! - `VariableV2` (no inputs) outputs the variable's value: TensorFlow's ref variable
//!   read as a value (its `v:0` fetched, or `v/read`);
//! - `AssignSubVariableOp(delta)` subtracts and outputs the new value;
//! - `VarIsInitializedOp` (no inputs) outputs a `Bool` scalar; it never creates the
//!   variable;
//! - `ResourceApplyGradientDescent(alpha, delta)`,
//!   `ResourceApplyMomentum(lr, grad, momentum)` (attr `use_nesterov`) and
//!   `ResourceApplyAdam(beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad)`
//!   (attr `use_nesterov`) update the variable and its optimizer slots — named by the
//!   list attributes [`SLOT_CONTAINERS_ATTR`] and [`SLOT_NAMES_ATTR`]: the accumulator,
//!   or `m` then `v` — in one atomic read-modify-write, by TensorFlow's formulas
//!   (`update_rules.rs`), and output the variable's new value.
//!
//! A variable read or updated before its first assignment fails with
//! `FailedPrecondition` naming it, as in TensorFlow.

use std::sync::{Arc, Once};

use super::kernels::{apply_update, Update};
use super::update_rules::{self, AdamScalars, Real};
use crate::graph::{register_op, Arity, Attrs, OpDef, OpDefError};
use crate::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
use crate::registry::{KernelKey, KernelRegistry, RegistryError};
use crate::resource::{update_variables, ResourceMgr, Variable};
use crate::tensor::{DType, MemoryLimit, StorageElement, Tensor};

/// The read of a ref variable (TensorFlow's `VariableV2` used as a value).
pub const VARIABLE_V2: &str = "VariableV2";
/// Subtracts its input from the variable.
pub const ASSIGN_SUB: &str = "AssignSubVariableOp";
/// Whether the variable holds a value.
pub const IS_INITIALIZED: &str = "VarIsInitializedOp";
/// `var -= alpha * delta`.
pub const APPLY_GRADIENT_DESCENT: &str = "ResourceApplyGradientDescent";
/// The momentum optimizer's update.
pub const APPLY_MOMENTUM: &str = "ResourceApplyMomentum";
/// The Adam optimizer's update.
pub const APPLY_ADAM: &str = "ResourceApplyAdam";
/// Attribute of the update ops: the containers of the slot variables, in order.
pub const SLOT_CONTAINERS_ATTR: &str = "slot_containers";
/// Attribute of the update ops: the shared names of the slot variables, in order.
pub const SLOT_NAMES_ATTR: &str = "slot_shared_names";

/// Which update an apply op makes, with its slot count and data inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    GradientDescent,
    Momentum,
    Adam,
}

impl Rule {
    fn op(self) -> &'static str {
        match self {
            Rule::GradientDescent => APPLY_GRADIENT_DESCENT,
            Rule::Momentum => APPLY_MOMENTUM,
            Rule::Adam => APPLY_ADAM,
        }
    }
    fn slots(self) -> usize {
        match self {
            Rule::GradientDescent => 0,
            Rule::Momentum => 1,
            Rule::Adam => 2,
        }
    }
    /// The names of the data inputs; the gradient is the one that is not a scalar.
    fn inputs(self) -> &'static [&'static str] {
        match self {
            Rule::GradientDescent => &["alpha", "delta"],
            Rule::Momentum => &["lr", "grad", "momentum"],
            Rule::Adam => &[
                "beta1_power",
                "beta2_power",
                "lr",
                "beta1",
                "beta2",
                "epsilon",
                "grad",
            ],
        }
    }
    fn grad_input(self) -> usize {
        match self {
            Rule::GradientDescent => 1,
            Rule::Momentum => 1,
            Rule::Adam => 6,
        }
    }
}

const RULES: [Rule; 3] = [Rule::GradientDescent, Rule::Momentum, Rule::Adam];

/// The variable's dtype from the attributes (`shared_name` must be there too).
fn var_dtype(attrs: &Attrs) -> Result<DType, OpDefError> {
    attrs.string("shared_name")?;
    Ok(attrs.dtype("dtype")?)
}

fn check_inputs(ins: &[DType], t: DType) -> Result<(), OpDefError> {
    match ins.iter().position(|&d| d != t) {
        Some(input) => Err(OpDefError::DType {
            input,
            expected: t.to_string(),
            got: ins[input],
        }),
        None => Ok(()),
    }
}

fn slot_names(attrs: &Attrs, want: usize) -> Result<(Vec<String>, Vec<String>), OpDefError> {
    if want == 0 && !attrs.contains(SLOT_NAMES_ATTR) {
        return Ok((Vec::new(), Vec::new()));
    }
    let names = attrs.strings(SLOT_NAMES_ATTR)?;
    let containers = if attrs.contains(SLOT_CONTAINERS_ATTR) {
        attrs.strings(SLOT_CONTAINERS_ATTR)?
    } else {
        vec![String::new(); names.len()]
    };
    if names.len() != want || containers.len() != want {
        return Err(OpDefError::Invalid(format!(
            "expected {want} slot variables in {SLOT_NAMES_ATTR:?} and \
             {SLOT_CONTAINERS_ATTR:?}, got {} and {}",
            names.len(),
            containers.len()
        )));
    }
    Ok((containers, names))
}

/// Registers the op definitions once per process (the variable ops' too).
pub fn ensure_registered() {
    super::ops::ensure_registered();
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut defs = vec![
            OpDef::new(VARIABLE_V2, Arity::Exact(0), |_, attrs| {
                Ok(vec![var_dtype(attrs)?])
            }),
            OpDef::new(ASSIGN_SUB, Arity::Exact(1), |ins, attrs| {
                let t = var_dtype(attrs)?;
                if !t.is_numeric() {
                    return Err(OpDefError::Invalid(format!(
                        "cannot subtract from a {t} variable"
                    )));
                }
                check_inputs(ins, t)?;
                Ok(vec![t])
            })
            .with_shape_fn(crate::graph::unchanged_shape),
            OpDef::new(IS_INITIALIZED, Arity::Exact(0), |_, attrs| {
                var_dtype(attrs)?;
                Ok(vec![DType::Bool])
            }),
        ];
        for rule in RULES {
            defs.push(OpDef::new(
                rule.op(),
                Arity::Exact(rule.inputs().len()),
                move |ins, attrs| {
                    let t = var_dtype(attrs)?;
                    if !matches!(t, DType::F32 | DType::F64) {
                        return Err(OpDefError::Invalid(format!(
                            "{} updates float variables, not {t}",
                            rule.op()
                        )));
                    }
                    check_inputs(ins, t)?;
                    slot_names(attrs, rule.slots())?;
                    attrs.bool_or("use_nesterov", false)?;
                    Ok(vec![t])
                },
            ));
        }
        for def in defs {
            // Already registered (by an earlier copy of this crate's state): keep it.
            let _ = register_op(def);
        }
    });
}

type Factory = fn(&KernelInit<'_>) -> Result<BoxedKernel, KernelError>;

/// The kernels of this file's ops, for the `CPU` device type.
pub(super) fn factories() -> [(&'static str, Factory); 6] {
    [
        (VARIABLE_V2, |i| simple(i, Simple::Read)),
        (ASSIGN_SUB, |i| simple(i, Simple::Sub)),
        (IS_INITIALIZED, |i| simple(i, Simple::IsInitialized)),
        (APPLY_GRADIENT_DESCENT, |i| apply(i, Rule::GradientDescent)),
        (APPLY_MOMENTUM, |i| apply(i, Rule::Momentum)),
        (APPLY_ADAM, |i| apply(i, Rule::Adam)),
    ]
}

/// Registers this file's kernels (`CPU`) and op definitions. Idempotent.
///
/// # Errors
/// [`RegistryError::AlreadyRegistered`] when `registry` has other kernels for these ops;
/// the others are registered still.
pub fn register_kernels_into(registry: &KernelRegistry) -> Result<(), RegistryError> {
    ensure_registered();
    let mut first_error = None;
    for (op, factory) in factories() {
        if let Err(e) = registry.register(KernelKey::new(op, "CPU"), factory) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A variable named by attributes, and how to find it in a resource manager.
#[derive(Clone, Debug)]
struct VarSpec {
    container: String,
    name: String,
    dtype: DType,
}

impl VarSpec {
    fn from_attrs(a: &Attrs) -> Result<VarSpec, KernelError> {
        let container = if a.contains("container") {
            a.string("container")?
        } else {
            String::new()
        };
        Ok(VarSpec {
            container,
            name: a.string("shared_name")?,
            dtype: a.dtype("dtype")?,
        })
    }

    fn variable(&self, r: &ResourceMgr) -> Result<Arc<Variable>, KernelError> {
        let v = r
            .lookup_or_create(&self.container, &self.name, || Variable::new(self.dtype))
            .map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        if v.dtype() != self.dtype {
            return Err(KernelError::InvalidArgument(format!(
                "variable {} holds {}, the op expects {}",
                self.describe(),
                v.dtype(),
                self.dtype
            )));
        }
        Ok(v)
    }

    fn describe(&self) -> String {
        if self.container.is_empty() {
            format!("{:?}", self.name)
        } else {
            format!("{:?} (container {:?})", self.name, self.container)
        }
    }

    fn uninitialised(&self) -> KernelError {
        KernelError::FailedPrecondition(format!(
            "variable {} is not initialised: attempting to use an uninitialised value \
             (assign it first)",
            self.describe()
        ))
    }
}

fn resources<'a>(ctx: &'a KernelContext<'_>) -> Result<&'a Arc<ResourceMgr>, KernelError> {
    ctx.resources()
        .ok_or_else(|| KernelError::Internal("no resource manager in this context".into()))
}

#[derive(Clone, Copy)]
enum Simple {
    Read,
    Sub,
    IsInitialized,
}

struct SimpleKernel {
    kind: Simple,
    var: VarSpec,
    /// The device's allocation: a new value is counted there, under its limit.
    memory: MemoryLimit,
}

fn simple(init: &KernelInit<'_>, kind: Simple) -> Result<BoxedKernel, KernelError> {
    Ok(BoxedKernel::Sync(Box::new(SimpleKernel {
        kind,
        var: VarSpec::from_attrs(&init.node.attrs)?,
        memory: MemoryLimit::of(init.device.as_ref()),
    })))
}

impl Kernel for SimpleKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let r = resources(ctx)?;
        let out = match self.kind {
            Simple::IsInitialized => {
                // A lookup, not a creation: asking never makes the variable exist.
                let v = r
                    .lookup::<Variable>(&self.var.container, &self.var.name)
                    .ok()
                    .flatten();
                Tensor::scalar(v.is_some_and(|v| v.read().is_some()))
            }
            Simple::Read => self
                .var
                .variable(r)?
                .read()
                .ok_or_else(|| self.var.uninitialised())?,
            Simple::Sub => {
                let delta = ctx.input(0).clone();
                self.var.variable(r)?.update(|old| {
                    let old = old.ok_or_else(|| self.var.uninitialised())?;
                    apply_update(Update::Sub, old, &delta, &self.memory)
                })?
            }
        };
        ctx.push_output(out);
        Ok(())
    }
}

struct ApplyKernel {
    rule: Rule,
    var: VarSpec,
    slots: Vec<VarSpec>,
    use_nesterov: bool,
    /// The device's allocation: the new values are counted there, under its limit.
    memory: MemoryLimit,
}

fn apply(init: &KernelInit<'_>, rule: Rule) -> Result<BoxedKernel, KernelError> {
    let a = &init.node.attrs;
    let var = VarSpec::from_attrs(a)?;
    let (containers, names) =
        slot_names(a, rule.slots()).map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
    let slots = containers
        .into_iter()
        .zip(names)
        .map(|(container, name)| VarSpec {
            container,
            name,
            dtype: var.dtype,
        })
        .collect();
    Ok(BoxedKernel::Sync(Box::new(ApplyKernel {
        rule,
        var,
        slots,
        use_nesterov: a.bool_or("use_nesterov", false)?,
        memory: MemoryLimit::of(init.device.as_ref()),
    })))
}

impl Kernel for ApplyKernel {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let names = self.rule.inputs();
        for (i, name) in names.iter().enumerate() {
            let t = ctx.input(i);
            if i != self.rule.grad_input() && !t.shape().is_scalar() {
                return Err(KernelError::InvalidArgument(format!(
                    "{name} is not a scalar: {}",
                    t.shape()
                )));
            }
        }
        let r = resources(ctx)?;
        let mut specs = vec![&self.var];
        specs.extend(&self.slots);
        let vars = specs
            .iter()
            .map(|s| s.variable(r))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&Variable> = vars.iter().map(|v| &**v).collect();
        let inputs: Vec<Tensor> = (0..names.len()).map(|i| ctx.input(i).clone()).collect();
        let new = update_variables(&refs, |current| {
            let mut values = Vec::with_capacity(current.len());
            for (spec, value) in specs.iter().zip(current) {
                values.push(value.as_ref().ok_or_else(|| spec.uninitialised())?);
            }
            let grad = &inputs[self.rule.grad_input()];
            for (spec, value) in specs.iter().zip(&values) {
                if value.shape() != grad.shape() {
                    return Err(KernelError::InvalidArgument(format!(
                        "variable {} has shape {} but {} has shape {}",
                        spec.describe(),
                        value.shape(),
                        names[self.rule.grad_input()],
                        grad.shape()
                    )));
                }
            }
            match self.var.dtype {
                DType::F32 => self.step::<f32>(&values, &inputs),
                DType::F64 => self.step::<f64>(&values, &inputs),
                other => Err(KernelError::Unimplemented {
                    op: self.rule.op().into(),
                    dtype: other,
                    device_type: "CPU".into(),
                }),
            }
        })?;
        ctx.push_output(new.into_iter().next().ok_or_else(|| {
            KernelError::Internal("the update produced no value for the variable".into())
        })?);
        Ok(())
    }
}

impl ApplyKernel {
    /// One update in `T`: `values` are the variable then its slots, `inputs` the op's.
    fn step<T: Real + StorageElement>(
        &self,
        values: &[&Tensor],
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, KernelError> {
        let shape = values[0].shape().clone();
        let s = |i: usize| inputs[i].scalar_value::<T>();
        fn slice<T: StorageElement>(t: &Tensor) -> Result<&[T], crate::tensor::TensorError> {
            t.as_slice::<T>()
        }
        // The new values of the variable and its slots, allocated (and charged) through
        // the device before any is computed.
        let n = shape.num_elements();
        let k = 1 + self.rule.slots();
        let mut charges = Vec::with_capacity(k);
        let mut out = Vec::with_capacity(k);
        for _ in 0..k {
            charges.push(self.memory.reserve(T::DTYPE, n)?);
            out.push(self.memory.with_capacity::<T>(n)?);
        }
        match (self.rule, &mut out[..]) {
            (Rule::GradientDescent, [w]) => {
                update_rules::gradient_descent(slice(values[0])?, s(0)?, slice(&inputs[1])?, w)
            }
            (Rule::Momentum, [w, a]) => update_rules::momentum(
                slice(values[0])?,
                slice(values[1])?,
                s(0)?,
                slice(&inputs[1])?,
                s(2)?,
                self.use_nesterov,
                [w, a],
            ),
            (Rule::Adam, [w, m, v]) => {
                let scalars = AdamScalars {
                    beta1_power: s(0)?,
                    beta2_power: s(1)?,
                    lr: s(2)?,
                    beta1: s(3)?,
                    beta2: s(4)?,
                    epsilon: s(5)?,
                };
                update_rules::adam(
                    slice(values[0])?,
                    slice(values[1])?,
                    slice(values[2])?,
                    scalars,
                    slice(&inputs[6])?,
                    self.use_nesterov,
                    [w, m, v],
                );
            }
            _ => {
                return Err(KernelError::Internal(format!(
                    "{}: {k} outputs for {} slots",
                    self.rule.op(),
                    self.rule.slots()
                )))
            }
        }
        out.into_iter()
            .zip(charges)
            .map(|(v, charge)| {
                Tensor::from_vec_charged(shape.clone(), v, None, charge).map_err(KernelError::from)
            })
            .collect()
    }
}
