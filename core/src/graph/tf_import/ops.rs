//! TensorFlow ops onto Magpie's: renamed ops (`AddV2` is Magpie's `Add`), attributes
//! translated (`Cast`'s `DstT` is Magpie's `dtype`; `_class: ["loc:@w"]` becomes Magpie's
//! colocation attribute), the other attributes starting with `_` dropped.
//!
//! Every other op of TensorFlow's programs (`docs/tensorflow-ops.txt`) is a Magpie op of
//! the same name, inputs and attributes, so it passes unchanged: TensorFlow's two-input
//! forms of `Reshape`, `Fill`, `Sum`, `Mean` and `Prod` are accepted by those ops beside
//! Magpie's own one-input forms.

use std::collections::HashSet;

use crate::distributed::ops::COLOCATE_ATTR;
use crate::graph::attr::AttrValue;
use crate::graph::builder::Graph;
use crate::graph::error::GraphError;
use crate::graph::graph_def::{GraphDef, NodeDef};

/// TensorFlow op names whose Magpie op has another name and the same signature.
const RENAMED: &[(&str, &str)] = &[("AddV2", "Add"), ("RealDiv", "Div")];

/// TensorFlow's colocation attribute: a list of `"loc:@node"`.
const TF_CLASS_ATTR: &str = "_class";

/// Rewrites every node of `def` whose op or attributes differ from Magpie's.
pub(super) fn rewrite(def: &mut GraphDef, existing: &Graph) -> Result<(), GraphError> {
    let names: HashSet<String> = def.nodes.iter().map(|n| n.name.clone()).collect();
    let known = |name: &str| names.contains(name) || existing.node_by_name(name).is_some();
    for node in &mut def.nodes {
        if let Some((_, magpie)) = RENAMED.iter().find(|(tf, _)| *tf == node.op) {
            node.op = (*magpie).to_string();
        }
        if node.op == "Cast" {
            cast_attrs(node)?;
        }
        let colocate = colocation_target(node, &known);
        node.attrs.retain(|(name, _)| !name.starts_with('_'));
        if let Some(target) = colocate {
            node.attrs
                .push((COLOCATE_ATTR.to_string(), AttrValue::Str(target)));
        }
    }
    Ok(())
}

/// TensorFlow's `Cast` names its target `DstT` (and its source `SrcT`); Magpie's, `dtype`.
fn cast_attrs(node: &mut NodeDef) -> Result<(), GraphError> {
    if node.attrs.iter().any(|(k, _)| k == "dtype") {
        return Ok(());
    }
    let dst = node
        .attrs
        .iter()
        .find(|(k, _)| k == "DstT")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| GraphError::InvalidNode {
            node: node.name.clone(),
            op: node.op.clone(),
            reason: crate::graph::OpDefError::Attr(crate::graph::AttrError::Missing("DstT".into())),
        })?;
    node.attrs.push(("dtype".to_string(), dst));
    Ok(())
}

/// The node this one must be placed with, from TensorFlow's `_class` (`"loc:@name"`
/// entries; the first naming another node of the graph wins). Entries naming the node
/// itself or nothing known are ignored: TensorFlow's colocation groups are sets, and a
/// group of one constrains nothing. A node that already carries Magpie's attribute keeps it.
fn colocation_target(node: &NodeDef, known: &impl Fn(&str) -> bool) -> Option<String> {
    if let Some((_, AttrValue::Str(s))) = node.attrs.iter().find(|(k, _)| k == COLOCATE_ATTR) {
        return Some(s.clone());
    }
    let (_, value) = node.attrs.iter().find(|(k, _)| k == TF_CLASS_ATTR)?;
    let entries: Vec<&str> = match value {
        AttrValue::Strs(v) => v.iter().map(String::as_str).collect(),
        AttrValue::Str(s) => vec![s.as_str()],
        _ => return None,
    };
    entries
        .into_iter()
        .filter_map(|e| e.strip_prefix("loc:@"))
        .find(|t| *t != node.name && known(t))
        .map(str::to_string)
}
