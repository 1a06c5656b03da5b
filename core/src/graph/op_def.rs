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

use super::attr::{AttrValue, Attrs};
use super::attr_def::{AttrDef, AttrType};
use super::error::{GraphError, OpDefError};
use super::op_name::OpName;
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

/// The definition of an op: its name, how many data inputs it takes, how its output
/// dtypes follow from its input dtypes and attributes, the attributes it declares
/// ([`OpDef::attr`]) and how its output shapes follow from its input shapes
/// ([`OpDef::with_shape_fn`]). Registered once per process with [`register_op`]; kernels
/// for it are registered per device in a [`KernelRegistry`](crate::registry::KernelRegistry).
///
/// ```
/// use magpie_core::graph::{register_op, unchanged_shape, Arity, AttrType, Graph, OpDef};
/// use magpie_core::graph::OpDefError;
/// use magpie_core::tensor::DType;
///
/// // `DocSoftplus(x; beta = 1.0)` on floats, same shape out.
/// let def = OpDef::new("DocSoftplus", Arity::Exact(1), |ins, _| match ins[0] {
///     DType::F32 | DType::F64 => Ok(vec![ins[0]]),
///     got => Err(OpDefError::DType { input: 0, expected: "a float".into(), got }),
/// })
/// .attr_default("beta", 1.0f64)
/// .with_shape_fn(unchanged_shape);
/// register_op(def)?;
///
/// let g = Graph::new();
/// let x = g.constant(vec![1.0f32, 2.0])?;
/// let y = g.op("DocSoftplus").input(x).build_output()?;
/// assert_eq!(g.dtype(y)?, DType::F32);
/// assert!(g.op("DocSoftplus").input(g.constant(1i32)?).build().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    /// The attributes the op declares; empty means the op's attributes are not checked
    /// (see [`AttrDef`]).
    pub attrs: Vec<AttrDef>,
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
            attrs: Vec::new(),
        }
    }

    /// This definition with a required attribute `name` of type `ty`: a node of the op
    /// without it, or with a value of another type, fails to build with an error naming
    /// the node and the attribute. Declaring a name again replaces its declaration.
    ///
    /// Once an op declares any attribute, every attribute of its nodes must be declared
    /// (names starting with `_`, the runtime's own, excepted): a misspelt name fails at
    /// build instead of being ignored.
    ///
    /// ```
    /// use magpie_core::graph::{register_op, Arity, AttrType, Graph, GraphError, OpDef};
    /// use magpie_core::tensor::DType;
    ///
    /// register_op(
    ///     OpDef::new("DocLeaky", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
    ///         .attr("threshold", AttrType::Float)
    ///         .attr_default("alpha", 0.1f64),
    /// )?;
    /// let g = Graph::new();
    /// let x = g.constant(vec![1.0f32, -1.0])?;
    ///
    /// // Defaults are filled in: kernels read `alpha` whether or not the graph set it.
    /// let y = g.op("DocLeaky").input(x).attr("threshold", 0.0f64).build()?;
    /// assert_eq!(g.node(y).unwrap().attrs.float("alpha")?, 0.1);
    ///
    /// // A missing, mistyped or unknown attribute fails at build, naming node and attribute.
    /// let err = g.op("DocLeaky").name("z").input(x).attr("threshold", 0i64).build();
    /// let message = err.unwrap_err().to_string();
    /// assert!(message.contains("\"z\"") && message.contains("\"threshold\""), "{message}");
    /// let err = g.op("DocLeaky").input(x).attr("threshold", 0.0f64).attr("alhpa", 0.2f64).build();
    /// assert!(matches!(err, Err(GraphError::InvalidNode { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attr(self, name: impl Into<String>, ty: AttrType) -> OpDef {
        self.declare(AttrDef::required(name, ty))
    }

    /// This definition with an optional attribute `name`, of its default's type: a node
    /// without it gets `default`. See [`attr`](Self::attr).
    pub fn attr_default(self, name: impl Into<String>, default: impl Into<AttrValue>) -> OpDef {
        self.declare(AttrDef::with_default(name, default))
    }

    /// This definition with the attribute `def` declared (replacing any declaration of
    /// the same name).
    pub fn declare(mut self, def: AttrDef) -> OpDef {
        self.attrs.retain(|d| d.name != def.name);
        self.attrs.push(def);
        self
    }

    /// This definition with a shape function, which the builder runs on every node of
    /// the op to infer its output shapes (one per output) and to reject shapes that
    /// cannot work.
    ///
    /// The function gets an [`InferenceContext`]: what is known of each input's shape as a
    /// [`PartialShape`] (the rank, or some dimensions, may be unknown), the dtypes and the
    /// attributes (defaults filled in). It returns one `PartialShape` per output, unknown
    /// where it cannot tell, and fails with [`OpDefError::Shape`] only when what *is*
    /// known cannot work — the builder then reports the node by name. Without a shape
    /// function every output's shape is unknown. [`unchanged_shape`](super::unchanged_shape)
    /// serves elementwise ops; [`shape_inference::rules`](super::shape_inference::rules)
    /// holds the standard ops' rules (broadcasting, matrix products) to build on.
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
            .field("attrs", &self.attrs)
            .finish()
    }
}

/// Registered ops by name: each one's definition, and its name as the nodes of that op
/// share it.
type Registry = HashMap<String, (Arc<OpDef>, OpName)>;

/// Every registered op.
static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(|| {
    let mut map = HashMap::new();
    for def in super::std_ops::standard_ops() {
        let name = OpName::from(&def.name);
        map.insert(def.name.clone(), (Arc::new(def), name));
    }
    RwLock::new(map)
});

/// Adds an op definition to the process-wide registry (see [`OpDef`] for an example).
///
/// # Errors
/// [`GraphError::OpAlreadyRegistered`] when an op of that name is already defined (every
/// standard op is): op definitions are never replaced, so graphs built earlier keep their
/// meaning.
pub fn register_op(def: OpDef) -> Result<(), GraphError> {
    let mut reg = REGISTRY.write();
    if reg.contains_key(&def.name) {
        return Err(GraphError::OpAlreadyRegistered(def.name));
    }
    let name = OpName::from(&def.name);
    reg.insert(def.name.clone(), (Arc::new(def), name));
    Ok(())
}

/// The definition of `op`, if registered.
pub fn lookup_op(op: &str) -> Option<Arc<OpDef>> {
    REGISTRY.read().get(op).map(|(def, _)| Arc::clone(def))
}

/// The definition of `op` and its shared name, if registered.
pub(crate) fn lookup_op_named(op: &str) -> Option<(Arc<OpDef>, OpName)> {
    REGISTRY.read().get(op).cloned()
}

/// The names of every registered op, sorted.
pub fn registered_ops() -> Vec<String> {
    let mut names: Vec<String> = REGISTRY.read().keys().cloned().collect();
    names.sort();
    names
}
