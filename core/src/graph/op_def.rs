//! Op definitions: an op's arity, how it infers output dtypes from input dtypes and
//! attributes and, optionally, output shapes from input shapes (see
//! [`shape_inference`](super::shape_inference)), and the process-wide registry of them.
//!
//! The standard op set is registered on first use; a backend or user adds its own ops
//! with [`register_op`]. Kernels (how an op runs on a device type) are registered
//! separately, in [`crate::registry`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;

use super::attr::Attrs;
use super::error::{GraphError, OpDefError};
use super::shape_inference::{InferenceContext, PartialShape, ShapeFn};
use crate::tensor::DType;

/// How many data inputs an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exact(usize),
    /// This many or more.
    AtLeast(usize),
    /// From the first to the second, both included (an op with optional trailing
    /// inputs, such as `Reshape` with its shape as an attribute or as input 1).
    Between(usize, usize),
}

impl Arity {
    /// Whether `n` inputs fit.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exact(k) => n == k,
            Arity::AtLeast(k) => n >= k,
            Arity::Between(lo, hi) => (lo..=hi).contains(&n),
        }
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arity::Exact(k) => write!(f, "{k}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
            Arity::Between(lo, hi) => write!(f, "{lo} to {hi}"),
        }
    }
}

/// Infers output dtypes from input dtypes and attributes.
pub type InferFn = dyn Fn(&[DType], &Attrs) -> Result<Vec<DType>, OpDefError> + Send + Sync;

/// The definition of an op.
#[derive(Clone)]
pub struct OpDef {
    /// Op name (`Add`, `MatMul`, ...).
    pub name: String,
    /// Data inputs it takes.
    pub arity: Arity,
    /// Output dtype inference.
    pub infer: Arc<InferFn>,
    /// Output shape inference; without one, every output's shape is unknown.
    pub shape_fn: Option<Arc<ShapeFn>>,
}

impl OpDef {
    /// A definition from its parts.
    pub fn new(
        name: impl Into<String>,
        arity: Arity,
        infer: impl Fn(&[DType], &Attrs) -> Result<Vec<DType>, OpDefError> + Send + Sync + 'static,
    ) -> OpDef {
        OpDef {
            name: name.into(),
            arity,
            infer: Arc::new(infer),
            shape_fn: None,
        }
    }

    /// This definition with a shape function, which the builder runs on every node of
    /// the op to infer its output shapes (one per output) and to reject shapes that
    /// cannot work.
    ///
    /// ```
    /// use magpie_core::graph::{
    ///     register_op, unchanged_shape, Arity, Graph, OpDef, PartialShape,
    /// };
    /// use magpie_core::tensor::{DType, Shape};
    ///
    /// let def = OpDef::new("DocScale", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
    ///     .with_shape_fn(unchanged_shape);
    /// register_op(def)?;
    /// let g = Graph::new();
    /// let x = g.placeholder(DType::F32, Some(&Shape::new(&[2, 3])?))?;
    /// let y = g.op("DocScale").input(x).build_output()?;
    /// assert_eq!(g.shape_of(y)?, PartialShape::from(Shape::new(&[2, 3])?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_shape_fn(
        mut self,
        shape_fn: impl Fn(&InferenceContext<'_>) -> Result<Vec<PartialShape>, OpDefError>
            + Send
            + Sync
            + 'static,
    ) -> OpDef {
        self.shape_fn = Some(Arc::new(shape_fn));
        self
    }
}

impl fmt::Debug for OpDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpDef")
            .field("name", &self.name)
            .field("arity", &self.arity)
            .field("has_shape_fn", &self.shape_fn.is_some())
            .finish()
    }
}

static REGISTRY: LazyLock<RwLock<HashMap<String, Arc<OpDef>>>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    for def in super::std_ops::standard_ops() {
        map.insert(def.name.clone(), Arc::new(def));
    }
    RwLock::new(map)
});

/// Adds an op definition to the process-wide registry. Fails when the name is taken.
pub fn register_op(def: OpDef) -> Result<(), GraphError> {
    let mut reg = REGISTRY.write();
    if reg.contains_key(&def.name) {
        return Err(GraphError::OpAlreadyRegistered(def.name));
    }
    reg.insert(def.name.clone(), Arc::new(def));
    Ok(())
}

/// The definition of `op`, if registered.
pub fn lookup_op(op: &str) -> Option<Arc<OpDef>> {
    REGISTRY.read().get(op).cloned()
}

/// The names of every registered op, sorted.
pub fn registered_ops() -> Vec<String> {
    let mut names: Vec<String> = REGISTRY.read().keys().cloned().collect();
    names.sort();
    names
}
