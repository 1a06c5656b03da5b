//! Regression tests for what the fuzz targets (`fuzz/`) found, one test per finding,
//! each named for the property that failed. They run with the ordinary test suite, so a
//! finding stays fixed without a nightly toolchain.

use magpie::graph::{GraphDef, NodeDef};
use magpie::Graph;

fn node(name: &str, op: &str, inputs: &[&str], device: &str) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        device: device.into(),
        ..NodeDef::default()
    }
}

/// `graph_run` found that importing a graph's own `GraphDef` reversed the order of
/// independent nodes, so an export re-imported as a different graph.
#[test]
fn import_of_an_export_is_an_equal_graph() {
    let def = GraphDef {
        nodes: vec![
            node("n0", "NoOp", &[], "/device:CPU:0"),
            node("n1", "NoOp", &[], ""),
            node("n2", "NoOp", &["^n1", "^n0"], ""),
            node("n3", "NoOp", &[], ""),
        ],
    };
    let g = Graph::import(&def).unwrap();
    let exported = g.to_graph_def();
    let names: Vec<&str> = exported.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["n0", "n1", "n2", "n3"],
        "a topological def keeps its order"
    );
    let again = Graph::import(&exported).unwrap();
    assert_eq!(again.to_graph_def(), exported);
}

/// Nodes listed after their users are imported producers first, ties in the def's order.
#[test]
fn import_orders_producers_first_and_ties_by_position() {
    let def = GraphDef {
        nodes: vec![
            node("user", "NoOp", &["^b", "^a"], ""),
            node("b", "NoOp", &[], ""),
            node("a", "NoOp", &[], ""),
        ],
    };
    let g = Graph::import(&def).unwrap();
    let names: Vec<String> = g.to_graph_def().nodes.into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["b", "a", "user"]);
}
