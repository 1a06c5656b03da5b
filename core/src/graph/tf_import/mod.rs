//! TensorFlow `GraphDef` import: a graph written by TensorFlow (its op names, attributes
//! and signatures, `name:k` outputs, `^name` control inputs, device strings, `_class`
//! colocation) becomes a Magpie graph that computes what TensorFlow would.
//!
//! Import is a translation followed by Magpie's own validated import
//! ([`Graph::import`]/[`Graph::extend`]): [`translate`] rewrites TensorFlow's variables
//! (`variables.rs`) and ops (`ops.rs`) into Magpie's, keeping every TensorFlow node's
//! name so that fetches such as `"loss:0"` and targets such as `"train"` resolve
//! unchanged. Nodes the translation adds are named under the node they serve, with a
//! `/_magpie_` infix, and never clash with a TensorFlow name. Last, where Magpie's own
//! numerics keep a rule of their own, the nodes get TensorFlow's (`semantics.rs`; the
//! cases and decisions are in `docs/tensorflow-semantics.md`).
//!
//! An op with no translation and no Magpie definition is an error naming op and node
//! ([`GraphError::UnknownOp`]), never a crash.

mod ops;
mod semantics;
mod variables;

use super::builder::Graph;
use super::error::GraphError;
use super::graph_def::GraphDef;
use super::node::NodeId;

/// Rewrites a TensorFlow `GraphDef` into a Magpie [`GraphDef`]. `existing` is the graph
/// the result will extend (empty for a new graph): the translation of a node may need to
/// know the nodes an earlier `ExtendSession` added (a variable's handle, say).
///
/// # Errors
/// [`GraphError`] naming the node whose op or attributes cannot be translated.
pub fn translate(def: &GraphDef, existing: &Graph) -> Result<GraphDef, GraphError> {
    let mut out = def.clone();
    variables::rewrite(&mut out, existing)?;
    ops::rewrite(&mut out, existing)?;
    semantics::rewrite(&mut out);
    Ok(out)
}

impl Graph {
    /// Builds a graph from a TensorFlow `GraphDef` (see the [module docs](self)).
    ///
    /// # Errors
    /// As [`translate`] and [`Graph::import`].
    pub fn import_tensorflow(def: &GraphDef) -> Result<Graph, GraphError> {
        let graph = Graph::new();
        graph.extend_tensorflow(def)?;
        Ok(graph)
    }

    /// Adds the nodes of a TensorFlow `GraphDef` to this graph (TensorFlow's
    /// `ExtendSession`), all or nothing, as [`Graph::extend`] does for Magpie's own.
    /// Returns the ids of the nodes added, translation's helpers included.
    ///
    /// # Errors
    /// As [`translate`] and [`Graph::extend`].
    pub fn extend_tensorflow(&self, def: &GraphDef) -> Result<Vec<NodeId>, GraphError> {
        let translated = translate(def, self)?;
        self.extend(&translated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::graph_def::NodeDef;
    use crate::graph::AttrValue;
    use crate::tensor::{DType, Tensor};

    fn node(name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, AttrValue)>) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: op.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            device: String::new(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    #[test]
    fn renamed_ops_and_private_attrs_translate_and_names_survive() {
        let c = Tensor::from_vec([1usize], vec![2.0f32]).unwrap();
        let def = GraphDef {
            nodes: vec![
                node(
                    "a",
                    "Const",
                    &[],
                    vec![("value", c.clone().into()), ("dtype", DType::F32.into())],
                ),
                node(
                    "b",
                    "AddV2",
                    &["a", "a"],
                    vec![
                        ("T", DType::F32.into()),
                        ("_has_manual_control_dependencies", true.into()),
                    ],
                ),
                node(
                    "c",
                    "RealDiv",
                    &["b:0", "a", "^b"],
                    vec![("T", DType::F32.into())],
                ),
            ],
        };
        let g = Graph::import_tensorflow(&def).unwrap();
        let b = g.node_by_name("b").unwrap();
        assert_eq!(g.node(b).unwrap().op, "Add");
        assert!(g
            .node(b)
            .unwrap()
            .attrs
            .get("_has_manual_control_dependencies")
            .is_none());
        let c = g.node_by_name("c").unwrap();
        assert_eq!(g.node(c).unwrap().op, "Div");
    }

    #[test]
    fn cast_takes_dst_t_and_class_becomes_colocation() {
        let c = Tensor::from_vec([2usize], vec![1i32, 2]).unwrap();
        let def = GraphDef {
            nodes: vec![
                node(
                    "w",
                    "Const",
                    &[],
                    vec![("value", c.into()), ("dtype", DType::I32.into())],
                ),
                node(
                    "f",
                    "Cast",
                    &["w"],
                    vec![
                        ("SrcT", DType::I32.into()),
                        ("DstT", DType::F32.into()),
                        ("Truncate", false.into()),
                        (
                            "_class",
                            AttrValue::Strs(vec!["loc:@f".into(), "loc:@w".into()]),
                        ),
                    ],
                ),
                node(
                    "g",
                    "Identity",
                    &["f"],
                    vec![("_class", AttrValue::Strs(vec!["loc:@missing".into()]))],
                ),
            ],
        };
        let g = Graph::import_tensorflow(&def).unwrap();
        let f = g.node(g.node_by_name("f").unwrap()).unwrap();
        assert_eq!(f.output_dtypes.to_vec(), vec![DType::F32]);
        let colocate = crate::distributed::ops::COLOCATE_ATTR;
        assert_eq!(f.attrs.string(colocate).unwrap(), "w");
        assert!(f.attrs.get("_class").is_none());
        let gn = g.node(g.node_by_name("g").unwrap()).unwrap();
        assert!(gn.attrs.get(colocate).is_none());
        // A Cast without its target is an error naming the node.
        let bad = GraphDef {
            nodes: vec![node("x", "Cast", &["w"], vec![])],
        };
        let err = Graph::import_tensorflow(&bad).unwrap_err().to_string();
        assert!(err.contains("DstT") && err.contains('x'), "{err}");
    }

    #[test]
    fn a_colocation_target_may_come_from_an_earlier_extension() {
        let c = Tensor::from_vec([1usize], vec![1.0f32]).unwrap();
        let g = Graph::import_tensorflow(&GraphDef {
            nodes: vec![node(
                "w",
                "Const",
                &[],
                vec![("value", c.into()), ("dtype", DType::F32.into())],
            )],
        })
        .unwrap();
        g.extend_tensorflow(&GraphDef {
            nodes: vec![node(
                "r",
                "Identity",
                &["w"],
                vec![("_class", AttrValue::Strs(vec!["loc:@w".into()]))],
            )],
        })
        .unwrap();
        let r = g.node(g.node_by_name("r").unwrap()).unwrap();
        assert_eq!(
            r.attrs
                .string(crate::distributed::ops::COLOCATE_ATTR)
                .unwrap(),
            "w"
        );
    }

    #[test]
    fn unknown_op_names_op_and_node() {
        let def = GraphDef {
            nodes: vec![node("x", "NoSuchTfOp", &[], vec![])],
        };
        let err = Graph::import_tensorflow(&def).unwrap_err().to_string();
        assert!(err.contains("NoSuchTfOp") && err.contains('x'), "{err}");
    }
}
