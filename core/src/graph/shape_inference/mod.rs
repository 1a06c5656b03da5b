//! Shape inference at graph construction, as in TensorFlow: every op definition may carry
//! a [`ShapeFn`] over [`PartialShape`]s (unknown rank and unknown dimensions allowed),
//! and the builder runs it on each node it adds, from what is known of the node's inputs.
//!
//! - Shapes known to be incompatible fail the build ([`GraphError::InvalidNode`] with
//!   [`OpDefError::Shape`], naming the node and the shapes).
//! - Unknowns propagate: a placeholder without a shape never causes an error.
//! - An op without a shape function has unknown outputs; a custom op gives its own with
//!   [`OpDef::with_shape_fn`].
//! - [`Graph::shape_of`] reports what is known of an output's shape.
//!
//! [`rules`] holds the standard rules (broadcasting, matrix products, reshapes,
//! reductions); the kernels' run-time checks in [`crate::shape_fn`] are those same rules
//! applied to fully known shapes.
//!
//! [`GraphError::InvalidNode`]: crate::graph::GraphError::InvalidNode
//! [`OpDefError::Shape`]: crate::graph::OpDefError::Shape
//! [`OpDef::with_shape_fn`]: crate::graph::OpDef::with_shape_fn
//! [`Graph::shape_of`]: crate::graph::Graph::shape_of

mod context;
mod node;
mod partial_shape;
pub mod rules;
pub(crate) mod standard;

pub use context::{InferenceContext, ShapeError, ShapeFn};
pub(crate) use node::output_shapes;
pub use partial_shape::PartialShape;
pub use standard::unchanged_shape;
