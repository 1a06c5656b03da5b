//! A reference interpreter for the standard op set: evaluates a graph's fetches one node at a
//! time, in the most obvious way, so that property tests and the conformance testkit can check
//! a real executor's (and a backend's) results against it, with [`assert_close`].
//!
//! It is written to be obviously right, not fast: every op is index arithmetic over row-major
//! shapes, one element at a time.
//!
//! # What [`evaluate`] runs
//!
//! A node runs when a fetch needs one of its outputs that no feed gives, when it is an input of
//! a node that runs (through an output that is not fed), or when it is a control input of a node
//! that runs (unless it is a fed `Placeholder`: as in TensorFlow, feeding replaces a node's
//! tensors, not its run). Control inputs never change a value, but
//! a control input that fails (an unfed placeholder, an integer division by zero) fails the
//! evaluation, as it fails a real step. Nothing else runs: an unfetched branch may hold an unfed
//! placeholder. Graphs only grow and a node's inputs are always older than the node, so the
//! nodes that run are evaluated in creation order, each once.
//!
//! Fetching a node that has no outputs (a `NoOp`, a `group`) as `node.output(0)` runs it as a
//! target: it contributes no tensor to the results.
//!
//! # Semantics shared with the CPU backend
//!
//! - `Add`, `Sub`, `Mul`, `Div` broadcast like numpy. Integer `Add`, `Sub`, `Mul`, `Neg` and
//!   `Square` wrap; integer `Div` truncates toward zero, wraps for `MIN / -1` and fails on a zero
//!   divisor ("integer division by zero"). Float division by zero gives an infinity or NaN.
//! - `Relu(x)` is `0` when `x < 0` and `x` otherwise (TensorFlow's: NaN stays NaN, -0.0 stays
//!   -0.0). `Sqrt` and `Exp` take floats.
//! - `MatMul` takes rank-2 operands, `a [m, k] × b [k, n]` after the transposes; each output
//!   element starts at zero and accumulates `a[i, p] * b[p, j]` in the element type in `p` order
//!   (integers wrapping).
//! - `Sum` and `Mean` reduce one axis (attribute `axis`, negative counting from the end) or, with
//!   no `axis`, every axis; `keep_dims` keeps reduced axes as size 1. Sums start at zero and add
//!   in the element type in row-major order (integers wrapping). `Mean` divides the sum by the
//!   number of reduced elements (integers truncating); with no elements, a float mean is NaN and
//!   an integer mean is 0 (TensorFlow's).
//! - `Reshape` infers at most one -1 (for an empty tensor into a shape with a zero, as
//!   TensorFlow does: the product of the input's non-zero dimensions over the shape's); `Cast` is Rust's `as` between numeric types (saturating,
//!   NaN to 0; with `out_of_range = "int_min"`, TensorFlow's rule: a float no integer of the
//!   type holds becomes its minimum), `x != 0` to `bool` and 0/1 from `bool`.
//! - `RandomUniform` is [`ReferenceError::Unsupported`]: the CPU backend's ChaCha stream is not
//!   replicated here. So is any op outside the standard set.

use std::collections::HashMap;
use std::sync::Arc;

use crate::graph::{Graph, Node, NodeId, Output};
use crate::tensor::{DType, Element, MemoryLimit, Shape, Storage, StorageElement, Tensor};

/// Why [`evaluate`] could not produce the fetches.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReferenceError {
    /// A fetch names no output of the graph.
    #[error("fetch {fetch}: {reason}")]
    InvalidFetch {
        /// The fetch, `node:index` (`#id:index` when no such node exists).
        fetch: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A feed names no output of the graph, or its tensor does not fit that output.
    #[error("feed for {output}: {reason}")]
    InvalidFeed {
        /// The fed output, `node:index` (`#id:index` when no such node exists).
        output: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A placeholder that the fetches need was not fed.
    #[error(
        "placeholder {node:?} ({dtype}) must be fed: the fetches need it and no feed gives it a \
         value"
    )]
    PlaceholderNotFed {
        /// Node name.
        node: String,
        /// Its dtype.
        dtype: DType,
    },
    /// The reference interpreter does not implement this op (`RandomUniform`, a user's op).
    #[error("node {node:?} ({op}): not supported by the reference interpreter: {reason}")]
    Unsupported {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// Why.
        reason: String,
    },
    /// The op failed on its inputs: incompatible shapes, an integer division by zero, a bad
    /// attribute, ...
    #[error("node {node:?} ({op}): {reason}")]
    Op {
        /// Node name.
        node: String,
        /// Op name.
        op: String,
        /// What went wrong, with the shapes or values involved.
        reason: String,
    },
}

/// Evaluates `fetches` of `graph` sequentially and naively, with `feeds` replacing the outputs
/// they name. Only nodes the fetches need are evaluated (see the [module docs](self)).
///
/// Returns one tensor per fetch, in order, except that a fetch of a node without outputs
/// (`no_op.output(0)`) runs that node as a target and adds nothing to the results.
///
/// # Errors
/// A [`ReferenceError`] naming the node: a feed or fetch that does not fit the graph, an
/// op the interpreter does not know, or inputs the op rejects.
pub fn evaluate(
    graph: &Graph,
    feeds: &[(Output, Tensor)],
    fetches: &[Output],
) -> Result<Vec<Tensor>, ReferenceError> {
    let nodes = graph.nodes();
    let fed = check_feeds(&nodes, feeds)?;
    for &fetch in fetches {
        check_fetch(&nodes, fetch)?;
    }
    let runs = nodes_to_run(&nodes, &fed, fetches);

    let mut values: Vec<Option<Vec<Tensor>>> = vec![None; nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        if !runs[i] {
            continue;
        }
        let inputs: Vec<&Tensor> = node
            .inputs
            .iter()
            .map(|&input| value_of(&fed, &values, input))
            .collect();
        let outputs = run_node(node, &inputs)?;
        values[i] = Some(outputs);
    }

    Ok(fetches
        .iter()
        .filter(|f| nodes[f.node.index()].num_outputs() > 0)
        .map(|&f| value_of(&fed, &values, f).clone())
        .collect())
}

/// `node:index`, or `#id:index` when the node does not exist.
fn describe(nodes: &[Arc<Node>], output: Output) -> String {
    match nodes.get(output.node.index()) {
        Some(n) => format!("{}:{}", n.name, output.index),
        None => format!("#{}:{}", output.node.index(), output.index),
    }
}

fn check_feeds(
    nodes: &[Arc<Node>],
    feeds: &[(Output, Tensor)],
) -> Result<HashMap<Output, Tensor>, ReferenceError> {
    let mut fed = HashMap::new();
    for (output, tensor) in feeds {
        let invalid = |reason: String| ReferenceError::InvalidFeed {
            output: describe(nodes, *output),
            reason,
        };
        let node = nodes
            .get(output.node.index())
            .ok_or_else(|| invalid("no such node in the graph".into()))?;
        let expected = *node
            .output_dtypes
            .get(output.index as usize)
            .ok_or_else(|| {
                invalid(format!(
                    "node {:?} ({}) has {} outputs",
                    node.name,
                    node.op,
                    node.num_outputs()
                ))
            })?;
        if !tensor.is_on_host() {
            return Err(invalid("the tensor is not in host memory".into()));
        }
        if tensor.dtype() != expected {
            return Err(invalid(format!(
                "the tensor is {}, but the output is {expected}",
                tensor.dtype()
            )));
        }
        if node.op == "Placeholder" && node.attrs.contains("shape") {
            let declared = node
                .attrs
                .ints("shape")
                .map_err(|e| invalid(e.to_string()))?;
            let fits = declared.len() == tensor.dims().len()
                && declared
                    .iter()
                    .zip(tensor.dims())
                    .all(|(&d, &got)| d == -1 || usize::try_from(d) == Ok(got));
            if !fits {
                return Err(invalid(format!(
                    "the tensor has shape {}, but the placeholder's shape is {declared:?}",
                    tensor.shape()
                )));
            }
        }
        if fed.insert(*output, tensor.clone()).is_some() {
            return Err(invalid("fed twice".into()));
        }
    }
    Ok(fed)
}

fn check_fetch(nodes: &[Arc<Node>], fetch: Output) -> Result<(), ReferenceError> {
    let invalid = |reason: String| ReferenceError::InvalidFetch {
        fetch: describe(nodes, fetch),
        reason,
    };
    let node = nodes
        .get(fetch.node.index())
        .ok_or_else(|| invalid("no such node in the graph".into()))?;
    let n = node.num_outputs();
    let ok = if n == 0 {
        fetch.index == 0
    } else {
        (fetch.index as usize) < n
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "node {:?} ({}) has {n} outputs",
            node.name, node.op
        )))
    }
}

/// Marks the nodes that must run: the producers of unfed fetches and, transitively, of their
/// unfed inputs and their control inputs.
fn nodes_to_run(
    nodes: &[Arc<Node>],
    fed: &HashMap<Output, Tensor>,
    fetches: &[Output],
) -> Vec<bool> {
    // TensorFlow's rule: only a fed placeholder is never run.
    let fed_placeholder = |id: NodeId| {
        let n = nodes[id.index()].num_outputs();
        nodes[id.index()].op == "Placeholder"
            && n > 0
            && (0..n).all(|i| fed.contains_key(&id.output(i as u32)))
    };
    let mut runs = vec![false; nodes.len()];
    let mut stack: Vec<NodeId> = fetches
        .iter()
        .filter(|f| !fed.contains_key(f))
        .map(|f| f.node)
        .collect();
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut runs[id.index()], true) {
            continue;
        }
        let node = &nodes[id.index()];
        for input in &node.inputs {
            if !fed.contains_key(input) {
                stack.push(input.node);
            }
        }
        for &dep in &node.control_inputs {
            if !fed_placeholder(dep) {
                stack.push(dep);
            }
        }
    }
    runs
}

fn value_of<'a>(
    fed: &'a HashMap<Output, Tensor>,
    values: &'a [Option<Vec<Tensor>>],
    output: Output,
) -> &'a Tensor {
    if let Some(t) = fed.get(&output) {
        return t;
    }
    let outputs = values[output.node.index()]
        .as_ref()
        .expect("a node's inputs are evaluated before it");
    &outputs[output.index as usize]
}

/// The two-operand elementwise ops.
#[derive(Clone, Copy, Debug)]
enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

impl Binary {
    fn apply<T: Arith>(self, x: T, y: T) -> Result<T, String> {
        Ok(match self {
            Binary::Add => x.plus(y),
            Binary::Sub => x.minus(y),
            Binary::Mul => x.times(y),
            Binary::Div => x.divide(y)?,
        })
    }
}

/// The one-operand elementwise ops.
#[derive(Clone, Copy, Debug)]
enum Unary {
    Neg,
    Square,
    Relu,
    Sqrt,
    Exp,
}

impl Unary {
    fn apply<T: Arith>(self, x: T) -> Result<T, String> {
        match self {
            Unary::Neg => Ok(x.negate()),
            Unary::Square => Ok(x.times(x)),
            Unary::Relu => Ok(x.relu()),
            Unary::Sqrt => x.float_sqrt(),
            Unary::Exp => x.float_exp(),
        }
    }
}

/// Runs one node on its input values.
fn run_node(node: &Node, inputs: &[&Tensor]) -> Result<Vec<Tensor>, ReferenceError> {
    let op_error = |reason: String| ReferenceError::Op {
        node: node.name.clone(),
        op: node.op.to_string(),
        reason,
    };
    let unsupported = |reason: &str| ReferenceError::Unsupported {
        node: node.name.clone(),
        op: node.op.to_string(),
        reason: reason.into(),
    };
    let attr_error = |e: crate::graph::AttrError| op_error(e.to_string());
    if inputs.len() == 2 && matches!(node.op.as_str(), "Sum" | "Mean" | "Reshape" | "Fill") {
        return Err(unsupported("TensorFlow's two-input form"));
    }
    let arity = match node.op.as_str() {
        "Const" | "Placeholder" | "NoOp" | "RandomUniform" => 0,
        "Add" | "Sub" | "Mul" | "Div" | "MatMul" => 2,
        "PlaceholderWithDefault"
        | "Identity"
        | "Neg"
        | "Square"
        | "Relu"
        | "Sqrt"
        | "Exp"
        | "Sum"
        | "Mean"
        | "Reshape"
        | "Cast"
        | "Fill"
        | "ZerosLike" => 1,
        _ => return Err(unsupported("not a standard op")),
    };
    if inputs.len() != arity {
        return Err(op_error(format!(
            "expected {arity} inputs, got {}",
            inputs.len()
        )));
    }
    let elementwise2 = |op: Binary| binary(op, inputs[0], inputs[1]);
    let elementwise1 = |op: Unary| unary(op, inputs[0]);

    let result = match node.op.as_str() {
        "Const" => Ok(node.attrs.tensor("value").map_err(attr_error)?),
        "Placeholder" => {
            return Err(ReferenceError::PlaceholderNotFed {
                node: node.name.clone(),
                dtype: node.output_dtypes.first().copied().unwrap_or(DType::F32),
            })
        }
        "PlaceholderWithDefault" | "Identity" => Ok(inputs[0].clone()),
        "NoOp" => return Ok(Vec::new()),
        "Add" => elementwise2(Binary::Add),
        "Sub" => elementwise2(Binary::Sub),
        "Mul" => elementwise2(Binary::Mul),
        "Div" => elementwise2(Binary::Div),
        "Neg" => elementwise1(Unary::Neg),
        "Square" => elementwise1(Unary::Square),
        "Relu" => elementwise1(Unary::Relu),
        "Sqrt" => elementwise1(Unary::Sqrt),
        "Exp" => elementwise1(Unary::Exp),
        "MatMul" => {
            let ta = node
                .attrs
                .bool_or("transpose_a", false)
                .map_err(attr_error)?;
            let tb = node
                .attrs
                .bool_or("transpose_b", false)
                .map_err(attr_error)?;
            matmul(inputs[0], inputs[1], ta, tb)
        }
        "Sum" | "Mean" => {
            let axis = node.attrs.opt_int("axis").map_err(attr_error)?;
            let keep_dims = node.attrs.bool_or("keep_dims", false).map_err(attr_error)?;
            reduce(inputs[0], axis, keep_dims, node.op == "Mean")
        }
        "Reshape" => {
            let shape = node.attrs.ints("shape").map_err(attr_error)?;
            reshape(inputs[0], &shape)
        }
        "Cast" => {
            let dtype = node.attrs.dtype("dtype").map_err(attr_error)?;
            let mode = node.attrs.get(crate::graph::CAST_OUT_OF_RANGE_ATTR);
            let int_min = mode
                == Some(&crate::graph::AttrValue::Str(
                    crate::graph::CAST_INT_MIN.into(),
                ));
            Ok(int_min
                .then(|| cast_int_min(inputs[0], dtype))
                .flatten()
                .unwrap_or_else(|| cast(inputs[0], dtype)))
        }
        "Fill" => {
            let shape = node.attrs.ints("shape").map_err(attr_error)?;
            fill(inputs[0], &shape)
        }
        "ZerosLike" => {
            Tensor::zeros(inputs[0].dtype(), inputs[0].shape()).map_err(|e| e.to_string())
        }
        "RandomUniform" => {
            return Err(unsupported(
                "the CPU backend's ChaCha random stream is not replicated",
            ))
        }
        other => unreachable!("op {other:?} passed the arity check"),
    };
    let out = result.map_err(op_error)?;
    match node.output_dtypes.as_slice() {
        [dtype] if *dtype == out.dtype() => Ok(vec![out]),
        declared => Err(op_error(format!(
            "produced a {} tensor, but the graph declares outputs {declared:?}",
            out.dtype()
        ))),
    }
}

/// Element arithmetic with the semantics of the module docs: floats IEEE, integers wrapping.
trait Arith: StorageElement + PartialOrd {
    fn plus(self, other: Self) -> Self;
    fn minus(self, other: Self) -> Self;
    fn times(self, other: Self) -> Self;
    fn divide(self, other: Self) -> Result<Self, String>;
    fn negate(self) -> Self;
    fn relu(self) -> Self;
    /// An element count as this type (for `Mean`).
    fn from_count(n: usize) -> Self;
    fn float_sqrt(self) -> Result<Self, String>;
    fn float_exp(self) -> Result<Self, String>;
}

macro_rules! float_arith {
    ($t:ty) => {
        impl Arith for $t {
            fn plus(self, other: Self) -> Self {
                self + other
            }
            fn minus(self, other: Self) -> Self {
                self - other
            }
            fn times(self, other: Self) -> Self {
                self * other
            }
            fn divide(self, other: Self) -> Result<Self, String> {
                Ok(self / other)
            }
            fn negate(self) -> Self {
                -self
            }
            fn relu(self) -> Self {
                // TensorFlow's: NaN and -0.0 pass through.
                if self < 0.0 {
                    0.0
                } else {
                    self
                }
            }
            fn from_count(n: usize) -> Self {
                n as $t
            }
            fn float_sqrt(self) -> Result<Self, String> {
                Ok(self.sqrt())
            }
            fn float_exp(self) -> Result<Self, String> {
                Ok(self.exp())
            }
        }
    };
}
float_arith!(f32);
float_arith!(f64);

macro_rules! int_arith {
    ($t:ty) => {
        impl Arith for $t {
            fn plus(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
            fn minus(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }
            fn times(self, other: Self) -> Self {
                self.wrapping_mul(other)
            }
            fn divide(self, other: Self) -> Result<Self, String> {
                if other == 0 {
                    Err("integer division by zero".into())
                } else {
                    Ok(self.wrapping_div(other))
                }
            }
            fn negate(self) -> Self {
                self.wrapping_neg()
            }
            fn relu(self) -> Self {
                self.max(0)
            }
            fn from_count(n: usize) -> Self {
                <$t>::try_from(n).unwrap_or(<$t>::MAX)
            }
            fn float_sqrt(self) -> Result<Self, String> {
                Err(format!("Sqrt needs f32 or f64, got {}", Self::DTYPE))
            }
            fn float_exp(self) -> Result<Self, String> {
                Err(format!("Exp needs f32 or f64, got {}", Self::DTYPE))
            }
        }
    };
}
int_arith!(i32);
int_arith!(i64);

/// Runs `$body` with `$T` bound to the Rust type of a numeric `$dtype`; `bool` is an error.
macro_rules! numeric {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::I32 => {
                type $T = i32;
                $body
            }
            DType::I64 => {
                type $T = i64;
                $body
            }
            DType::Bool => Err("bool is not a numeric dtype".to_string()),
        }
    };
}

fn elements<T: StorageElement>(t: &Tensor) -> Result<&[T], String> {
    t.as_slice::<T>().map_err(|e| e.to_string())
}

fn tensor<T: StorageElement>(dims: Vec<usize>, data: Vec<T>) -> Result<Tensor, String> {
    Tensor::from_vec(dims, data).map_err(|e| e.to_string())
}

/// The multi-index of row-major position `flat` in `dims`.
fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut index = vec![0; dims.len()];
    for (i, &d) in dims.iter().enumerate().rev() {
        index[i] = flat % d;
        flat /= d;
    }
    index
}

/// The row-major position of `index` in `dims`.
fn ravel(index: &[usize], dims: &[usize]) -> usize {
    index
        .iter()
        .zip(dims)
        .fold(0, |flat, (&i, &d)| flat * d + i)
}

/// The position in an operand of shape `dims` that broadcasts to `out_index`: dimensions are
/// aligned at the end and a size-1 dimension always reads index 0.
fn broadcast_source(out_index: &[usize], dims: &[usize]) -> usize {
    let skip = out_index.len() - dims.len();
    let index: Vec<usize> = dims
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { out_index[skip + i] })
        .collect();
    ravel(&index, dims)
}

fn binary(op: Binary, x: &Tensor, y: &Tensor) -> Result<Tensor, String> {
    if x.dtype() != y.dtype() {
        return Err(format!(
            "operands have dtypes {} and {}",
            x.dtype(),
            y.dtype()
        ));
    }
    let out = Shape::broadcast(x.shape(), y.shape()).map_err(|e| e.to_string())?;
    numeric!(x.dtype(), T => binary_typed::<T>(op, x, y, out.dims()))
}

fn binary_typed<T: Arith>(
    op: Binary,
    x: &Tensor,
    y: &Tensor,
    out_dims: &[usize],
) -> Result<Tensor, String> {
    let (xs, ys) = (elements::<T>(x)?, elements::<T>(y)?);
    let n: usize = out_dims.iter().product();
    let mut out = Vec::with_capacity(n);
    for flat in 0..n {
        let index = unravel(flat, out_dims);
        let a = xs[broadcast_source(&index, x.dims())];
        let b = ys[broadcast_source(&index, y.dims())];
        out.push(op.apply(a, b)?);
    }
    tensor(out_dims.to_vec(), out)
}

fn unary(op: Unary, x: &Tensor) -> Result<Tensor, String> {
    numeric!(x.dtype(), T => {
        let out = elements::<T>(x)?
            .iter()
            .map(|&e| op.apply(e))
            .collect::<Result<Vec<T>, String>>()?;
        tensor(x.dims().to_vec(), out)
    })
}

fn matmul(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor, String> {
    if a.dtype() != b.dtype() {
        return Err(format!(
            "operands have dtypes {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    let (&[a0, a1], &[b0, b1]) = (a.dims(), b.dims()) else {
        return Err(format!(
            "MatMul needs rank-2 operands, got shapes {} and {}",
            a.shape(),
            b.shape()
        ));
    };
    let (m, k) = if transpose_a { (a1, a0) } else { (a0, a1) };
    let (k2, n) = if transpose_b { (b1, b0) } else { (b0, b1) };
    if k != k2 {
        return Err(format!(
            "incompatible shapes {} and {} (transpose_a {transpose_a}, transpose_b {transpose_b}): \
             inner dimensions {k} and {k2} differ",
            a.shape(),
            b.shape()
        ));
    }
    // Position of A[i, p] in `a`'s elements and of B[p, j] in `b`'s.
    let at = |i: usize, p: usize| if transpose_a { p * a1 + i } else { i * a1 + p };
    let bt = |p: usize, j: usize| if transpose_b { j * b1 + p } else { p * b1 + j };
    let out_shape = Shape::new(&[m, n]).map_err(|e| e.to_string())?;
    numeric!(a.dtype(), T => {
        let (av, bv) = (elements::<T>(a)?, elements::<T>(b)?);
        let mut out = MemoryLimit::host()
            .with_capacity(out_shape.num_elements())
            .map_err(|e| e.to_string())?;
        // An empty product has nothing to compute, however long its other side: without
        // this, `[2^62, 0] x [0, 0]` would loop 2^62 times over nothing.
        if n > 0 {
            for i in 0..m {
                for j in 0..n {
                    let mut acc = T::ZERO;
                    for p in 0..k {
                        acc = acc.plus(av[at(i, p)].times(bv[bt(p, j)]));
                    }
                    out.push(acc);
                }
            }
        }
        tensor(vec![m, n], out)
    })
}

fn reduce(x: &Tensor, axis: Option<i64>, keep_dims: bool, mean: bool) -> Result<Tensor, String> {
    let dims = x.dims();
    let rank = dims.len();
    let reduced: Vec<bool> = match axis {
        None => vec![true; rank],
        Some(a) => {
            let r = i64::try_from(rank).expect("rank fits i64");
            if a < -r || a >= r {
                return Err(format!(
                    "axis {a} is out of range for shape {} (rank {rank})",
                    x.shape()
                ));
            }
            let a = usize::try_from(if a < 0 { a + r } else { a }).expect("axis is in range");
            (0..rank).map(|i| i == a).collect()
        }
    };
    // The output as if keep_dims were set: reduced axes have size 1.
    let kept: Vec<usize> = dims
        .iter()
        .zip(&reduced)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let out_dims: Vec<usize> = if keep_dims {
        kept.clone()
    } else {
        dims.iter()
            .zip(&reduced)
            .filter(|(_, &r)| !r)
            .map(|(&d, _)| d)
            .collect()
    };
    let count: usize = dims
        .iter()
        .zip(&reduced)
        .filter(|(_, &r)| r)
        .map(|(&d, _)| d)
        .product();
    // The output's elements: an empty input may still reduce to a huge output (summing
    // the zero-length axis of [2^62, 0] gives 2^62 zeros), refused as the device refuses
    // it, not allocated blindly.
    let outputs = kept
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("the output of shape {kept:?} has too many elements"))?;
    numeric!(x.dtype(), T => {
        let xs = elements::<T>(x)?;
        let mut acc = MemoryLimit::host()
            .filled(outputs, T::ZERO)
            .map_err(|e| e.to_string())?;
        for (flat, &e) in xs.iter().enumerate() {
            let index: Vec<usize> = unravel(flat, dims)
                .iter()
                .zip(&reduced)
                .map(|(&i, &r)| if r { 0 } else { i })
                .collect();
            let o = ravel(&index, &kept);
            acc[o] = acc[o].plus(e);
        }
        if mean {
            // An integer mean over no elements is its sum, 0, as in TensorFlow.
            if count == 0 && !T::DTYPE.is_float() {
                return tensor(out_dims, acc);
            }
            let c = T::from_count(count);
            for a in &mut acc {
                *a = a.divide(c)?;
            }
        }
        tensor(out_dims, acc)
    })
}

fn reshape(x: &Tensor, spec: &[i64]) -> Result<Tensor, String> {
    let total = x.num_elements();
    let mismatch = || {
        format!(
            "cannot reshape {total} elements (shape {}) into {spec:?}",
            x.shape()
        )
    };
    let mut inferred = None;
    let mut known: usize = 1;
    for (i, &d) in spec.iter().enumerate() {
        if d == -1 {
            if inferred.replace(i).is_some() {
                return Err(format!("shape {spec:?} holds more than one -1"));
            }
        } else {
            let d = usize::try_from(d).map_err(|_| format!("shape {spec:?} has dimension {d}"))?;
            known = known.checked_mul(d).ok_or_else(mismatch)?;
        }
    }
    let mut dims: Vec<usize> = spec
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect();
    if let Some(i) = inferred {
        if known == 0 {
            // TensorFlow's rule for an empty tensor into a shape with a zero: the
            // product of the input's non-zero dimensions over the shape's.
            if total != 0 {
                return Err(mismatch());
            }
            let nonzero = |it: &mut dyn Iterator<Item = usize>| -> Option<usize> {
                it.filter(|&d| d != 0)
                    .try_fold(1usize, |a, d| a.checked_mul(d))
            };
            let have = nonzero(&mut x.dims().iter().copied()).ok_or_else(mismatch)?;
            let per = nonzero(&mut dims.iter().copied()).ok_or_else(mismatch)?;
            dims[i] = have / per;
        } else {
            if total % known != 0 {
                return Err(mismatch());
            }
            dims[i] = total / known;
        }
    } else if known != total {
        return Err(mismatch());
    }
    x.reshape(dims).map_err(|e| e.to_string())
}

/// A float-to-integer `Cast` by TensorFlow's rule (`out_of_range = "int_min"`): the value
/// truncated when some integer of the type holds it, else the type's minimum. `None` for
/// other dtype pairs (the plain rule applies).
fn cast_int_min(x: &Tensor, to: DType) -> Option<Tensor> {
    let values: Vec<f64> = match x.storage() {
        Storage::F32(v) => v.iter().map(|&e| f64::from(e)).collect(),
        Storage::F64(v) => v.clone(),
        _ => return None,
    };
    let bits = match to {
        DType::I32 => 31,
        DType::I64 => 63,
        _ => return None,
    };
    let limit = 2f64.powi(bits);
    let held = |e: f64| {
        let t = e.trunc();
        (t >= -limit && t < limit).then_some(t)
    };
    let storage = if to == DType::I32 {
        Storage::I32(
            values
                .iter()
                .map(|&e| held(e).map_or(i32::MIN, |t| t as i32))
                .collect(),
        )
    } else {
        Storage::I64(
            values
                .iter()
                .map(|&e| held(e).map_or(i64::MIN, |t| t as i64))
                .collect(),
        )
    };
    Tensor::from_storage(x.shape().clone(), storage).ok()
}

fn cast(x: &Tensor, to: DType) -> Tensor {
    macro_rules! convert {
        ($v:expr, $zero:expr) => {
            match to {
                DType::F32 => Storage::F32($v.iter().map(|&e| e as f32).collect()),
                DType::F64 => Storage::F64($v.iter().map(|&e| e as f64).collect()),
                DType::I32 => Storage::I32($v.iter().map(|&e| e as i32).collect()),
                DType::I64 => Storage::I64($v.iter().map(|&e| e as i64).collect()),
                DType::Bool => Storage::Bool($v.iter().map(|&e| e != $zero).collect()),
            }
        };
    }
    let storage = match x.storage() {
        Storage::F32(v) => convert!(v, 0.0),
        Storage::F64(v) => convert!(v, 0.0),
        Storage::I32(v) => convert!(v, 0),
        Storage::I64(v) => convert!(v, 0),
        Storage::Bool(v) => {
            let v: Vec<u8> = v.iter().map(|&b| u8::from(b)).collect();
            convert!(v, 0)
        }
        _ => unreachable!("the reference holds host tensors only: feeds are checked"),
    };
    Tensor::from_storage(x.shape().clone(), storage).expect("a cast keeps the element count")
}

fn fill(value: &Tensor, spec: &[i64]) -> Result<Tensor, String> {
    if value.num_elements() != 1 || value.shape().rank() > 1 {
        return Err(format!(
            "Fill needs a scalar value, got shape {}",
            value.shape()
        ));
    }
    let dims = spec
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("Fill shape {spec:?} has dimension {d}")))
        .collect::<Result<Vec<usize>, String>>()?;
    let shape = Shape::new(&dims).map_err(|e| e.to_string())?;
    let n = shape.num_elements();
    let host = MemoryLimit::host();
    let storage = match value.storage() {
        Storage::F32(v) => host.filled(n, v[0]).map(Storage::F32),
        Storage::F64(v) => host.filled(n, v[0]).map(Storage::F64),
        Storage::I32(v) => host.filled(n, v[0]).map(Storage::I32),
        Storage::I64(v) => host.filled(n, v[0]).map(Storage::I64),
        Storage::Bool(v) => host.filled(n, v[0]).map(Storage::Bool),
        _ => return Err("Fill's value is not on the host".to_string()),
    }
    .map_err(|e| e.to_string())?;
    Tensor::from_storage(dims, storage).map_err(|e| e.to_string())
}

/// Compares two tensors: same dtype and shape; floats within `rel_tol`/`abs_tol`
/// (`|a - b| <= abs_tol + rel_tol * |b|`, with `b` the expected value; NaN equals NaN and equal
/// infinities are equal), other dtypes exactly.
///
/// # Errors
/// A message naming the first differing index and both values, or the dtypes or shapes
/// that differ.
pub fn assert_close(
    actual: &Tensor,
    expected: &Tensor,
    rel_tol: f64,
    abs_tol: f64,
) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!(
            "dtypes differ: actual {}, expected {}",
            actual.dtype(),
            expected.dtype()
        ));
    }
    if actual.shape() != expected.shape() {
        return Err(format!(
            "shapes differ: actual {}, expected {}",
            actual.shape(),
            expected.shape()
        ));
    }
    let close = |a: f64, b: f64| {
        a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= abs_tol + rel_tol * b.abs()
    };
    let dims = actual.dims();
    let tolerance = format!(" (rel_tol {rel_tol:e}, abs_tol {abs_tol:e})");
    match (actual.storage(), expected.storage()) {
        (Storage::F32(a), Storage::F32(b)) => {
            first_difference(a, b, dims, |x, y| close(x.to_f64(), y.to_f64()), &tolerance)
        }
        (Storage::F64(a), Storage::F64(b)) => first_difference(a, b, dims, close, &tolerance),
        (Storage::I32(a), Storage::I32(b)) => first_difference(a, b, dims, |x, y| x == y, ""),
        (Storage::I64(a), Storage::I64(b)) => first_difference(a, b, dims, |x, y| x == y, ""),
        (Storage::Bool(a), Storage::Bool(b)) => first_difference(a, b, dims, |x, y| x == y, ""),
        _ => Err("a tensor is not in host memory: copy it to the host first".to_string()),
    }
}

fn first_difference<T: Element>(
    actual: &[T],
    expected: &[T],
    dims: &[usize],
    same: impl Fn(T, T) -> bool,
    note: &str,
) -> Result<(), String> {
    match (0..actual.len()).find(|&i| !same(actual[i], expected[i])) {
        None => Ok(()),
        Some(i) => Err(format!(
            "tensors differ at index {:?}: actual {:?}, expected {:?}{note}",
            unravel(i, dims),
            actual[i],
            expected[i]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::GraphError;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn t<T: StorageElement>(dims: &[usize], data: Vec<T>) -> Tensor {
        Tensor::from_vec(dims, data).unwrap()
    }

    fn eval1(g: &Graph, fetch: Output) -> Result<Tensor, ReferenceError> {
        Ok(evaluate(g, &[], &[fetch])?.remove(0))
    }

    /// A placeholder of unknown shape and the feed that gives it `value`: shapes the
    /// builder cannot check, so the interpreter's own checks run.
    fn unshaped(g: &Graph, value: Tensor) -> Result<(Output, (Output, Tensor)), GraphError> {
        let p = g.placeholder(value.dtype(), None)?;
        Ok((p, (p, value)))
    }

    fn eval_fed(
        g: &Graph,
        fetch: Output,
        feeds: &[(Output, Tensor)],
    ) -> Result<Tensor, ReferenceError> {
        Ok(evaluate(g, feeds, &[fetch])?.remove(0))
    }

    /// The message of a build-time shape error.
    fn shape_error(r: Result<Output, GraphError>) -> String {
        match r {
            Err(e @ GraphError::InvalidNode { .. }) => e.to_string(),
            other => panic!("expected a shape error at build, got {other:?}"),
        }
    }

    fn op_reason(e: ReferenceError) -> String {
        match e {
            ReferenceError::Op { reason, .. } => reason,
            other => panic!("expected an op error, got {other:?}"),
        }
    }

    #[test]
    fn add_of_constants() -> TestResult {
        let g = Graph::new();
        let a = g.constant(1.0f32)?;
        let b = g.add(a, g.constant(2.0f32)?)?;
        let out = evaluate(&g, &[], &[b, a])?;
        assert_eq!(out, vec![Tensor::scalar(3.0f32), Tensor::scalar(1.0f32)]);
        Ok(())
    }

    #[test]
    fn add_broadcasts_column_and_row() -> TestResult {
        let g = Graph::new();
        let col = g.constant(t(&[3, 1], vec![0i32, 10, 20]))?;
        let row = g.constant(t(&[4], vec![1i32, 2, 3, 4]))?;
        let sum = g.add(col, row)?;
        let expected = t(&[3, 4], vec![1i32, 2, 3, 4, 11, 12, 13, 14, 21, 22, 23, 24]);
        assert_eq!(eval1(&g, sum)?, expected);
        // Either order, and a scalar against a matrix.
        assert_eq!(eval1(&g, g.add(row, col)?)?, expected);
        let s = g.sub(g.constant(100i32)?, col)?;
        assert_eq!(eval1(&g, s)?, t(&[3, 1], vec![100i32, 90, 80]));
        Ok(())
    }

    #[test]
    fn incompatible_shapes_name_node_and_both_shapes() -> TestResult {
        let g = Graph::new();
        let a = g.constant(vec![1.0f32, 2.0, 3.0])?;
        let b = g.constant(vec![1.0f32, 2.0])?;
        // Known shapes fail at build, naming the node and both shapes ...
        let msg = shape_error(g.with_name("bad_add").add(a, b));
        assert!(msg.contains("\"bad_add\""), "{msg}");
        assert!(msg.contains("[3]") && msg.contains("[2]"), "{msg}");
        // ... and shapes known only when fed fail when run, the same way.
        let (p, feed) = unshaped(&g, Tensor::from(vec![1.0f32, 2.0]))?;
        let c = g.with_name("bad_add").add(a, p)?;
        let e = eval_fed(&g, c, &[feed]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"bad_add\""), "{msg}");
        assert!(msg.contains("[3]") && msg.contains("[2]"), "{msg}");
        Ok(())
    }

    #[test]
    fn float_arithmetic() -> TestResult {
        let g = Graph::new();
        let a = g.constant(vec![1.0f64, -2.0, 6.0])?;
        let b = g.constant(vec![4.0f64, 0.5, 0.0])?;
        assert_eq!(
            eval1(&g, g.sub(a, b)?)?,
            Tensor::from(vec![-3.0f64, -2.5, 6.0])
        );
        assert_eq!(
            eval1(&g, g.mul(a, b)?)?,
            Tensor::from(vec![4.0f64, -1.0, 0.0])
        );
        let q = eval1(&g, g.div(a, b)?)?.to_vec::<f64>()?;
        assert_eq!(q[..2], [0.25, -4.0]);
        assert_eq!(q[2], f64::INFINITY);
        assert_eq!(
            eval1(&g, g.neg(a)?)?,
            Tensor::from(vec![-1.0f64, 2.0, -6.0])
        );
        assert_eq!(
            eval1(&g, g.square(a)?)?,
            Tensor::from(vec![1.0f64, 4.0, 36.0])
        );
        assert_eq!(eval1(&g, g.relu(a)?)?, Tensor::from(vec![1.0f64, 0.0, 6.0]));
        Ok(())
    }

    #[test]
    fn sqrt_exp_relu_on_floats() -> TestResult {
        let g = Graph::new();
        let x = g.constant(vec![0.0f32, 1.0, 4.0])?;
        assert_eq!(eval1(&g, g.sqrt(x)?)?, Tensor::from(vec![0.0f32, 1.0, 2.0]));
        let e = eval1(&g, g.exp(x)?)?.to_vec::<f32>()?;
        assert_eq!(e, vec![1.0f32, 1.0f32.exp(), 4.0f32.exp()]);
        // TensorFlow 2.21's Relu: NaN stays NaN, -0.0 stays -0.0.
        let y = g.constant(vec![-1.5f32, f32::NAN, 2.5, -0.0])?;
        let r = eval1(&g, g.relu(y)?)?.to_vec::<f32>()?;
        assert!(r[1].is_nan() && r[3].is_sign_negative(), "{r:?}");
        assert_eq!([r[0], r[2], r[3]], [0.0, 2.5, 0.0]);
        let z = g.constant(vec![-3i64, 0, 7])?;
        assert_eq!(eval1(&g, g.relu(z)?)?, Tensor::from(vec![0i64, 0, 7]));
        Ok(())
    }

    #[test]
    fn integer_ops_wrap() -> TestResult {
        let g = Graph::new();
        let max = g.constant(i32::MAX)?;
        let min = g.constant(i32::MIN)?;
        let one = g.constant(1i32)?;
        let two = g.constant(2i32)?;
        let minus_one = g.constant(-1i32)?;
        assert_eq!(eval1(&g, g.add(max, one)?)?, Tensor::scalar(i32::MIN));
        assert_eq!(eval1(&g, g.sub(min, one)?)?, Tensor::scalar(i32::MAX));
        assert_eq!(eval1(&g, g.mul(max, two)?)?, Tensor::scalar(-2i32));
        assert_eq!(eval1(&g, g.neg(min)?)?, Tensor::scalar(i32::MIN));
        assert_eq!(eval1(&g, g.square(max)?)?, Tensor::scalar(1i32));
        assert_eq!(eval1(&g, g.div(min, minus_one)?)?, Tensor::scalar(i32::MIN));
        let big = g.constant(i64::MAX)?;
        let big1 = g.constant(1i64)?;
        assert_eq!(eval1(&g, g.add(big, big1)?)?, Tensor::scalar(i64::MIN));
        Ok(())
    }

    #[test]
    fn integer_division_truncates_and_rejects_zero() -> TestResult {
        let g = Graph::new();
        let a = g.constant(vec![7i64, -7, 7, -7])?;
        let b = g.constant(vec![2i64, 2, -2, -2])?;
        assert_eq!(
            eval1(&g, g.div(a, b)?)?,
            Tensor::from(vec![3i64, -3, -3, 3])
        );
        let zero = g.constant(vec![1i64, 0, 1, 1])?;
        let q = g.with_name("divide").div(a, zero)?;
        let e = eval1(&g, q).unwrap_err();
        assert_eq!(
            e,
            ReferenceError::Op {
                node: "divide".into(),
                op: "Div".into(),
                reason: "integer division by zero".into(),
            }
        );
        Ok(())
    }

    #[test]
    fn matmul_plain_and_transposed() -> TestResult {
        let g = Graph::new();
        // a = [[1, 2, 3], [4, 5, 6]], b = [[7, 8], [9, 10], [11, 12]]
        let a = g.constant(t(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]))?;
        let b = g.constant(t(&[3, 2], vec![7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0]))?;
        let ab = t(&[2, 2], vec![58.0f32, 64.0, 139.0, 154.0]);
        assert_eq!(eval1(&g, g.matmul(a, b)?)?, ab);
        // a^T [3,2] × a [2,3] = [3,3]
        let ata = t(
            &[3, 3],
            vec![17.0f32, 22.0, 27.0, 22.0, 29.0, 36.0, 27.0, 36.0, 45.0],
        );
        assert_eq!(eval1(&g, g.matmul_t(a, a, true, false)?)?, ata);
        // a [2,3] × a^T [3,2] = [2,2]
        let aat = t(&[2, 2], vec![14.0f32, 32.0, 32.0, 77.0]);
        assert_eq!(eval1(&g, g.matmul_t(a, a, false, true)?)?, aat);
        // (b^T)^T... b^T [2,3] × a^T [3,2] = (a b)^T
        let ba = t(&[2, 2], vec![58.0f32, 139.0, 64.0, 154.0]);
        assert_eq!(eval1(&g, g.matmul_t(b, a, true, true)?)?, ba);
        Ok(())
    }

    #[test]
    fn an_empty_matmul_with_a_huge_side_is_computed_at_once() -> TestResult {
        // [2^62, 0] x [0, 0]: no element, so no loop over the 2^62 rows.
        let g = Graph::new();
        let a = g.constant(t(&[1 << 62, 0], Vec::<f32>::new()))?;
        let b = g.constant(t(&[0, 0], Vec::<f32>::new()))?;
        let out = eval1(&g, g.matmul(a, b)?)?;
        assert_eq!(out.shape().dims(), &[1usize << 62, 0]);
        Ok(())
    }

    #[test]
    fn ops_on_an_empty_tensor_with_a_huge_dimension_do_no_work() -> TestResult {
        // [2^62, 0] has no element: every op answers at once, never looping over the 2^62
        // (a reduction whose output really has 2^62 elements is refused, not attempted).
        const HUGE: usize = 1 << 62;
        let g = Graph::new();
        let x = g.constant(t(&[HUGE, 0], Vec::<f32>::new()))?;
        let empty = |dims: &[usize]| t(dims, Vec::<f32>::new());
        let row = g.constant(t(&[1], vec![3.0f32]))?;
        let none = g.constant(empty(&[1, 0]))?;
        let cases = [
            (g.add(x, row)?, empty(&[HUGE, 0])),
            (g.mul(row, x)?, empty(&[HUGE, 0])),
            (g.sub(x, none)?, empty(&[HUGE, 0])),
            (g.neg(x)?, empty(&[HUGE, 0])),
            (g.square(x)?, empty(&[HUGE, 0])),
            (g.identity(x)?, empty(&[HUGE, 0])),
            (g.sum(x, Some(0), false)?, empty(&[0])),
            (g.sum(x, Some(0), true)?, empty(&[1, 0])),
            (g.sum(x, None, false)?, Tensor::scalar(0.0f32)),
            (g.mean(x, Some(0), false)?, empty(&[0])),
            (g.reshape(x, &[0, -1])?, empty(&[0, HUGE])),
            (g.reshape(x, &[-1])?, empty(&[0])),
            (g.fill(&[HUGE, 0], g.constant(1.0f32)?)?, empty(&[HUGE, 0])),
            (
                g.op("ZerosLike").input(x).build_output()?,
                empty(&[HUGE, 0]),
            ),
        ];
        for (out, want) in cases {
            assert_eq!(eval1(&g, out)?, want, "{}", describe(&g.nodes(), out));
        }
        let cast = eval1(&g, g.cast(x, DType::I64)?)?;
        assert_eq!((cast.dtype(), cast.dims()), (DType::I64, &[HUGE, 0][..]));
        let mean = eval1(&g, g.mean(x, None, false)?)?;
        assert!(mean.scalar_value::<f32>()?.is_nan());
        // Summing the empty axis leaves 2^62 zeros: refused, naming the node.
        for out in [g.sum(x, Some(1), false)?, g.mean(x, Some(-1), true)?] {
            match eval1(&g, out) {
                Err(ReferenceError::Op { node, .. }) => {
                    assert_eq!(node, g.name_of(out.node));
                }
                other => panic!("expected an op error, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn matmul_integers_wrap_and_shapes_are_checked() -> TestResult {
        let g = Graph::new();
        let a = g.constant(t(&[1, 2], vec![i32::MAX, 1]))?;
        let b = g.constant(t(&[2, 1], vec![2i32, 3]))?;
        assert_eq!(eval1(&g, g.matmul(a, b)?)?, t(&[1, 1], vec![1i32]));
        let e = shape_error(g.matmul(a, a));
        assert!(e.contains("[1, 2] and [1, 2] do not match"), "{e}");
        let (pa, feed) = unshaped(&g, t(&[1, 2], vec![i32::MAX, 1]))?;
        let e = op_reason(eval_fed(&g, g.matmul(pa, pa)?, &[feed]).unwrap_err());
        assert!(
            e.contains("[1, 2]") && e.contains("inner dimensions 2 and 1"),
            "{e}"
        );
        let v = g.constant(vec![1i32, 2])?;
        let e = shape_error(g.matmul(v, b));
        assert!(e.contains("rank 2"), "{e}");
        let (pv, feed) = unshaped(&g, Tensor::from(vec![1i32, 2]))?;
        let e = op_reason(eval_fed(&g, g.matmul(pv, b)?, &[feed]).unwrap_err());
        assert!(e.contains("rank-2"), "{e}");
        Ok(())
    }

    #[test]
    fn sum_over_axes() -> TestResult {
        let g = Graph::new();
        let x = g.constant(t(&[2, 3], vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0]))?;
        assert_eq!(eval1(&g, g.sum(x, None, false)?)?, Tensor::scalar(21.0f64));
        assert_eq!(eval1(&g, g.sum(x, None, true)?)?, t(&[1, 1], vec![21.0f64]));
        assert_eq!(
            eval1(&g, g.sum(x, Some(0), false)?)?,
            Tensor::from(vec![5.0f64, 7.0, 9.0])
        );
        assert_eq!(
            eval1(&g, g.sum(x, Some(1), false)?)?,
            Tensor::from(vec![6.0f64, 15.0])
        );
        assert_eq!(
            eval1(&g, g.sum(x, Some(-1), false)?)?,
            Tensor::from(vec![6.0f64, 15.0])
        );
        assert_eq!(
            eval1(&g, g.sum(x, Some(-2), true)?)?,
            t(&[1, 3], vec![5.0f64, 7.0, 9.0])
        );
        assert_eq!(
            eval1(&g, g.sum(x, Some(1), true)?)?,
            t(&[2, 1], vec![6.0f64, 15.0])
        );
        let e = shape_error(g.sum(x, Some(2), false));
        assert!(e.contains("axis 2 is out of range"), "{e}");
        let (p, feed) = unshaped(&g, t(&[2, 3], vec![1.0f64; 6]))?;
        let e = op_reason(eval_fed(&g, g.sum(p, Some(2), false)?, &[feed]).unwrap_err());
        assert!(e.contains("axis 2 is out of range"), "{e}");
        let ints = g.constant(vec![i32::MAX, 1, 1])?;
        assert_eq!(
            eval1(&g, g.sum(ints, None, false)?)?,
            Tensor::scalar(i32::MIN + 1)
        );
        Ok(())
    }

    #[test]
    fn mean_floats_ints_and_empty() -> TestResult {
        let g = Graph::new();
        let x = g.constant(t(&[2, 2], vec![1.0f32, 2.0, 3.0, 5.0]))?;
        assert_eq!(eval1(&g, g.mean(x, None, false)?)?, Tensor::scalar(2.75f32));
        assert_eq!(
            eval1(&g, g.mean(x, Some(-1), true)?)?,
            t(&[2, 1], vec![1.5f32, 4.0])
        );
        let i = g.constant(t(&[2, 2], vec![1i32, 2, -3, -4]))?;
        assert_eq!(
            eval1(&g, g.mean(i, Some(1), false)?)?,
            Tensor::from(vec![1i32, -3])
        );
        let empty_f = g.constant(t(&[0], Vec::<f64>::new()))?;
        let m = eval1(&g, g.mean(empty_f, None, false)?)?.scalar_value::<f64>()?;
        assert!(m.is_nan());
        assert_eq!(
            eval1(&g, g.sum(empty_f, None, false)?)?,
            Tensor::scalar(0.0f64)
        );
        let empty_i = g.constant(t(&[0], Vec::<i64>::new()))?;
        assert_eq!(
            eval1(&g, g.mean(empty_i, None, false)?)?,
            Tensor::scalar(0i64)
        );
        Ok(())
    }

    #[test]
    fn reshape_infers_and_checks() -> TestResult {
        let g = Graph::new();
        let x = g.constant((0..6).collect::<Vec<i32>>())?;
        let expected = t(&[2, 3], (0..6).collect::<Vec<i32>>());
        assert_eq!(eval1(&g, g.reshape(x, &[2, 3])?)?, expected);
        assert_eq!(eval1(&g, g.reshape(x, &[-1, 3])?)?, expected);
        assert_eq!(eval1(&g, g.reshape(x, &[2, -1])?)?.dims(), &[2, 3]);
        let e = shape_error(g.reshape(x, &[4, 2]));
        assert!(e.contains("(6 elements) into shape [4, 2]"), "{e}");
        let e = shape_error(g.reshape(x, &[-1, 4]));
        assert!(e.contains("cannot reshape"), "{e}");
        let (p, feed) = unshaped(&g, Tensor::from((0..6).collect::<Vec<i32>>()))?;
        let e = op_reason(
            eval_fed(&g, g.reshape(p, &[4, 2])?, std::slice::from_ref(&feed)).unwrap_err(),
        );
        assert!(e.contains("cannot reshape 6 elements"), "{e}");
        let e = op_reason(eval_fed(&g, g.reshape(p, &[-1, 4])?, &[feed]).unwrap_err());
        assert!(e.contains("cannot reshape"), "{e}");
        let s = g.constant(5i32)?;
        assert_eq!(eval1(&g, g.reshape(s, &[1, 1])?)?, t(&[1, 1], vec![5i32]));
        Ok(())
    }

    #[test]
    fn cast_int_min_is_tensorflows_rule() -> TestResult {
        // TensorFlow 2.21 on x86: [nan, inf, -inf, 1e20, -1e20, 3e9, -3e9, 300, -1.5, 2.7,
        // -0.0] to int32 and int64.
        let g = Graph::new();
        let v = vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e20,
            -1e20,
            3e9,
            -3e9,
            300.0,
            -1.5,
            2.7,
            -0.0,
        ];
        let x = g.constant(v.clone())?;
        let x32 = g.constant(v.iter().map(|&e| e as f32).collect::<Vec<_>>())?;
        let cast = |x, to| {
            g.op("Cast")
                .input(x)
                .attr("dtype", to)
                .attr(
                    crate::graph::CAST_OUT_OF_RANGE_ATTR,
                    crate::graph::CAST_INT_MIN,
                )
                .build_output()
        };
        let m = i32::MIN;
        let want32 = vec![m, m, m, m, m, m, m, 300, -1, 2, 0];
        assert_eq!(
            eval1(&g, cast(x, DType::I32)?)?,
            Tensor::from(want32.clone())
        );
        assert_eq!(eval1(&g, cast(x32, DType::I32)?)?, Tensor::from(want32));
        let m = i64::MIN;
        let want64 = vec![m, m, m, m, m, 3_000_000_000, -3_000_000_000, 300, -1, 2, 0];
        assert_eq!(
            eval1(&g, cast(x, DType::I64)?)?,
            Tensor::from(want64.clone())
        );
        assert_eq!(eval1(&g, cast(x32, DType::I64)?)?, Tensor::from(want64));
        Ok(())
    }

    #[test]
    fn cast_follows_rust_as() -> TestResult {
        let g = Graph::new();
        let f = g.constant(vec![1.9f32, -1.9, f32::NAN, 1e20, -1e20, 0.0])?;
        assert_eq!(
            eval1(&g, g.cast(f, DType::I32)?)?,
            Tensor::from(vec![1i32, -1, 0, i32::MAX, i32::MIN, 0])
        );
        assert_eq!(
            eval1(&g, g.cast(f, DType::Bool)?)?,
            Tensor::from(vec![true, true, true, true, true, false])
        );
        let b = g.constant(vec![true, false])?;
        assert_eq!(
            eval1(&g, g.cast(b, DType::F64)?)?,
            Tensor::from(vec![1.0f64, 0.0])
        );
        assert_eq!(
            eval1(&g, g.cast(b, DType::I64)?)?,
            Tensor::from(vec![1i64, 0])
        );
        let i = g.constant(vec![300i64, -1, (1 << 40) + 1])?;
        assert_eq!(
            eval1(&g, g.cast(i, DType::I32)?)?,
            Tensor::from(vec![300i32, -1, 1])
        );
        // i64 -> f32 rounds once, as `as` does (not through f64).
        let odd = (1i64 << 60) + (1 << 36) + 1;
        let c = g.constant(odd)?;
        assert_eq!(
            eval1(&g, g.cast(c, DType::F32)?)?,
            Tensor::scalar(odd as f32)
        );
        Ok(())
    }

    #[test]
    fn fill_and_zeros_like() -> TestResult {
        let g = Graph::new();
        let v = g.constant(2.5f32)?;
        assert_eq!(eval1(&g, g.fill(&[2, 2], v)?)?, t(&[2, 2], vec![2.5f32; 4]));
        let one = g.constant(vec![7i64])?;
        assert_eq!(eval1(&g, g.fill(&[3], one)?)?, Tensor::from(vec![7i64; 3]));
        let two = g.constant(vec![1i64, 2])?;
        let e = shape_error(g.fill(&[3], two));
        assert!(e.contains("scalar value, got shape [2]"), "{e}");
        let (p, feed) = unshaped(&g, Tensor::from(vec![1i64, 2]))?;
        let e = op_reason(eval_fed(&g, g.fill(&[3], p)?, &[feed]).unwrap_err());
        assert!(e.contains("scalar value"), "{e}");
        let x = g.constant(t(&[2, 1], vec![3i32, 4]))?;
        assert_eq!(eval1(&g, g.zeros_like(x)?)?, t(&[2, 1], vec![0i32, 0]));
        Ok(())
    }

    #[test]
    fn identity_const_and_random_uniform() -> TestResult {
        let g = Graph::new();
        let x = g.constant(t(&[2], vec![true, false]))?;
        assert_eq!(eval1(&g, g.identity(x)?)?, t(&[2], vec![true, false]));
        let r = g.random_uniform(&[2], DType::F32, 1)?;
        assert!(matches!(
            eval1(&g, r).unwrap_err(),
            ReferenceError::Unsupported { op, .. } if op == "RandomUniform"
        ));
        crate::graph::register_op(crate::graph::OpDef::new(
            "ReferenceTestPair",
            crate::graph::Arity::Exact(2),
            |ins, _| Ok(vec![ins[0]]),
        ))?;
        let user = g.op("ReferenceTestPair").input(x).input(x).build_output()?;
        assert!(matches!(
            eval1(&g, user).unwrap_err(),
            ReferenceError::Unsupported { op, .. } if op == "ReferenceTestPair"
        ));
        Ok(())
    }

    #[test]
    fn placeholders_fed_and_unfed() -> TestResult {
        let g = Graph::new();
        let p = g.with_name("input").placeholder(DType::F32, None)?;
        let y = g.mul(p, g.constant(2.0f32)?)?;
        let out = evaluate(&g, &[(p, Tensor::from(vec![1.0f32, 2.0]))], &[y])?;
        assert_eq!(out, vec![Tensor::from(vec![2.0f32, 4.0])]);
        let e = eval1(&g, y).unwrap_err();
        assert_eq!(
            e,
            ReferenceError::PlaceholderNotFed {
                node: "input".into(),
                dtype: DType::F32
            }
        );
        assert!(e.to_string().contains("\"input\""));
        Ok(())
    }

    #[test]
    fn placeholder_with_default() -> TestResult {
        let g = Graph::new();
        let d = g.constant(1i32)?;
        let p = g.placeholder_with_default(d)?;
        assert_eq!(eval1(&g, p)?, Tensor::scalar(1i32));
        assert_eq!(
            evaluate(&g, &[(p, Tensor::scalar(5i32))], &[p])?,
            vec![Tensor::scalar(5i32)]
        );
        Ok(())
    }

    #[test]
    fn feeds_override_any_output_and_prune_its_inputs() -> TestResult {
        let g = Graph::new();
        let p = g.placeholder(DType::I64, None)?;
        let a = g.add(p, g.constant(1i64)?)?;
        let b = g.mul(a, g.constant(10i64)?)?;
        // `a` is fed, so the unfed placeholder behind it is never needed.
        let out = evaluate(&g, &[(a, Tensor::scalar(4i64))], &[b, a])?;
        assert_eq!(out, vec![Tensor::scalar(40i64), Tensor::scalar(4i64)]);
        // A feed of a constant's output replaces the constant.
        let c = g.constant(3.0f32)?;
        let d = g.square(c)?;
        assert_eq!(
            evaluate(&g, &[(c, Tensor::scalar(5.0f32))], &[d])?,
            vec![Tensor::scalar(25.0f32)]
        );
        Ok(())
    }

    #[test]
    fn unfetched_branches_are_not_evaluated() -> TestResult {
        let g = Graph::new();
        let p = g.placeholder(DType::F32, None)?;
        let _unused = g.add(p, p)?;
        let zero = g.constant(0i32)?;
        let _div0 = g.div(g.constant(1i32)?, zero)?;
        let c = g.constant(2.0f32)?;
        let y = g.exp(g.neg(c)?)?;
        assert_eq!(eval1(&g, y)?, Tensor::scalar((-2.0f32).exp()));
        Ok(())
    }

    #[test]
    fn targets_run_control_inputs_and_yield_nothing() -> TestResult {
        let g = Graph::new();
        let x = g.constant(1.0f32)?;
        let noop = g.no_op()?;
        assert_eq!(evaluate(&g, &[], &[noop.output(0)])?, vec![]);
        let y = g.identity(x)?;
        let ok = g.group([y])?;
        assert_eq!(
            evaluate(&g, &[], &[ok.output(0), y])?,
            vec![Tensor::scalar(1.0f32)]
        );
        // A control input runs: its failure fails the evaluation, its value is ignored.
        let bad = g.div(g.constant(1i32)?, g.constant(0i32)?)?;
        let z = g.control_dependencies([bad], |g| g.identity(x))?;
        let e = op_reason(eval1(&g, z).unwrap_err());
        assert_eq!(e, "integer division by zero");
        let p = g.placeholder(DType::F32, None)?;
        let w = g.control_dependencies([p], |g| g.square(x))?;
        assert!(matches!(
            eval1(&g, w).unwrap_err(),
            ReferenceError::PlaceholderNotFed { .. }
        ));
        // Feeding the control input satisfies it.
        let out = evaluate(&g, &[(p, Tensor::scalar(0.0f32))], &[w])?;
        assert_eq!(out, vec![Tensor::scalar(1.0f32)]);
        Ok(())
    }

    #[test]
    fn bad_feeds_and_fetches_are_errors() -> Result<(), GraphError> {
        let g = Graph::new();
        let p = g.placeholder(DType::F32, Some(&Shape::new(&[2]).unwrap()))?;
        let x = g.constant(1.0f32)?;
        let e = evaluate(&g, &[(p, Tensor::scalar(1i32))], &[p]).unwrap_err();
        assert!(matches!(e, ReferenceError::InvalidFeed { .. }), "{e}");
        let e = evaluate(&g, &[(p, Tensor::from(vec![1.0f32; 3]))], &[p]).unwrap_err();
        assert!(e.to_string().contains("shape [3]"), "{e}");
        let fed = evaluate(&g, &[(p, Tensor::from(vec![1.0f32; 2]))], &[p]).unwrap();
        assert_eq!(fed, vec![Tensor::from(vec![1.0f32; 2])]);
        let twice = [(x, Tensor::scalar(1.0f32)), (x, Tensor::scalar(2.0f32))];
        assert!(evaluate(&g, &twice, &[x]).is_err());
        let e = evaluate(&g, &[], &[x.node.output(1)]).unwrap_err();
        assert!(matches!(e, ReferenceError::InvalidFetch { .. }), "{e}");
        let other = Graph::new();
        let far = other.constant(1i32)?;
        for _ in 0..5 {
            other.constant(1i32)?;
        }
        let e = evaluate(&g, &[], &[other.constant(1i32)?]).unwrap_err();
        assert!(e.to_string().contains("no such node"), "{e}");
        assert!(evaluate(&other, &[], &[far]).is_ok());
        Ok(())
    }

    #[test]
    fn assert_close_tolerances_and_messages() {
        let a = t(&[2, 2], vec![1.0f32, 2.0, 3.0, f32::NAN]);
        let b = t(&[2, 2], vec![1.0f32, 2.0 + 1e-7, 3.0, f32::NAN]);
        assert_eq!(assert_close(&a, &b, 1e-5, 0.0), Ok(()));
        let c = t(&[2, 2], vec![1.0f32, 2.0, 3.5, f32::NAN]);
        let e = assert_close(&a, &c, 1e-5, 1e-5).unwrap_err();
        assert!(
            e.contains("index [1, 0]") && e.contains("3.0") && e.contains("3.5"),
            "{e}"
        );
        assert!(assert_close(&a, &c, 0.0, 0.5).is_ok());
        let nan_vs_num = t(&[2, 2], vec![1.0f32, 2.0, 3.0, 4.0]);
        assert!(assert_close(&a, &nan_vs_num, 1.0, 1.0).is_err());
        let inf = Tensor::scalar(f64::INFINITY);
        assert!(assert_close(&inf, &inf, 0.0, 0.0).is_ok());
        assert!(assert_close(&inf, &Tensor::scalar(f64::NEG_INFINITY), 0.0, 0.0).is_err());
        let i = Tensor::from(vec![1i64, 2]);
        let e = assert_close(&i, &Tensor::from(vec![1i64, 3]), 1.0, 1.0).unwrap_err();
        assert!(e.contains("index [1]: actual 2, expected 3"), "{e}");
        let e = assert_close(&i, &Tensor::from(vec![1i32, 2]), 0.0, 0.0).unwrap_err();
        assert!(e.contains("dtypes differ"), "{e}");
        let e = assert_close(&i, &t(&[1, 2], vec![1i64, 2]), 0.0, 0.0).unwrap_err();
        assert!(e.contains("shapes differ"), "{e}");
        assert!(assert_close(&Tensor::scalar(true), &Tensor::scalar(true), 0.0, 0.0).is_ok());
    }
}
