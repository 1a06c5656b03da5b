//! TensorFlow's variables onto Magpie's named variables: ref variables (`VariableV2`,
//! `Assign`, `Apply*`) and resource variables (`VarHandleOp` with a handle output,
//! `ReadVariableOp(handle)`, `AssignVariableOp(handle, value)`, `ResourceApply*`).

use crate::graph::builder::Graph;
use crate::graph::error::GraphError;
use crate::graph::graph_def::GraphDef;

/// Rewrites the variable ops of `def` into Magpie's variable ops.
///
/// Not yet written: a graph with TensorFlow variable ops reaches Magpie's import
/// unchanged, which rejects them with an error naming the node.
pub(super) fn rewrite(_def: &mut GraphDef, _existing: &Graph) -> Result<(), GraphError> {
    Ok(())
}
