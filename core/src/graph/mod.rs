//! Graphs: nodes with attributes and device specs, data and control edges, the scoped
//! builder, op definitions, shape inference and validation.

mod attr;
mod attr_def;
mod builder;
mod device_spec;
mod error;
mod graph_def;
mod name_index;
mod node;
mod op_def;
mod op_name;
mod ops;
pub mod shape_inference;
mod std_ops;
pub mod tf_import;
mod tf_ops;

pub use attr::{AttrError, AttrValue, Attrs};
pub(crate) use attr_def::check_attrs;
pub use attr_def::{AttrDef, AttrType};
pub use builder::{Graph, OpBuilder, MEMORY_HEAVY_ATTR, OUTPUT_BYTES_ATTR, POOLS_ATTR};
pub use device_spec::{DeviceName, DeviceSpec, DeviceSpecError};
pub use error::{GraphError, OpDefError};
pub use graph_def::{GraphDef, NodeDef};
pub use node::{GraphId, Node, NodeId, Output};
pub use op_def::{lookup_op, register_op, registered_ops, Arity, InferFn, OpDef};
pub use op_name::OpName;
pub use shape_inference::{unchanged_shape, InferenceContext, PartialShape, ShapeError, ShapeFn};
pub use std_ops::{CAST_INT_MIN, CAST_OUT_OF_RANGE_ATTR, CAST_SATURATE};
