//! TensorFlow ops onto Magpie's: renamed ops (`AddV2` is Magpie's `Add`), attributes
//! Magpie does not read dropped (those starting with `_`, but for colocation), and the
//! signatures that differ rewritten.

use crate::graph::builder::Graph;
use crate::graph::error::GraphError;
use crate::graph::graph_def::GraphDef;

/// TensorFlow op names whose Magpie op has another name and the same signature.
const RENAMED: &[(&str, &str)] = &[("AddV2", "Add"), ("RealDiv", "Div")];

/// Rewrites every node of `def` whose op or attributes differ from Magpie's.
pub(super) fn rewrite(def: &mut GraphDef, _existing: &Graph) -> Result<(), GraphError> {
    for node in &mut def.nodes {
        if let Some((_, magpie)) = RENAMED.iter().find(|(tf, _)| *tf == node.op) {
            node.op = (*magpie).to_string();
        }
        node.attrs.retain(|(name, _)| {
            !name.starts_with('_') || name == crate::distributed::ops::COLOCATE_ATTR
        });
    }
    Ok(())
}
