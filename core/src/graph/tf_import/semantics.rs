//! TensorFlow's numerics where Magpie's own rule differs and Magpie keeps its own (see
//! `docs/tensorflow-semantics.md`): after the ops are translated, the nodes that have a
//! choice get TensorFlow's.
//!
//! Today one op: `Cast` from a float to an integer converts NaN, the infinities and
//! out-of-range values to the integer type's minimum, as TensorFlow does on x86
//! ([`CAST_INT_MIN`]), where Magpie's own `Cast` saturates.

use crate::graph::attr::AttrValue;
use crate::graph::graph_def::GraphDef;
use crate::graph::{CAST_INT_MIN, CAST_OUT_OF_RANGE_ATTR};

/// Sets TensorFlow's choice on every node of `def` that has one.
pub(super) fn rewrite(def: &mut GraphDef) {
    for node in def.nodes.iter_mut().filter(|n| n.op == "Cast") {
        node.attrs.retain(|(k, _)| k != CAST_OUT_OF_RANGE_ATTR);
        node.attrs.push((
            CAST_OUT_OF_RANGE_ATTR.to_string(),
            AttrValue::Str(CAST_INT_MIN.to_string()),
        ));
    }
}
