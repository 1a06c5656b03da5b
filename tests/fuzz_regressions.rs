//! Regression tests for what the fuzz targets (`fuzz/`) found, one test per finding,
//! each named for the property that failed. They run with the ordinary test suite, so a
//! finding stays fixed without a nightly toolchain.

use magpie::graph::{GraphDef, NodeDef};
use magpie::{Graph, Tensor};

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

/// `wire_decode` found that a bool tensor's byte 0xff (or any non-zero byte) decoded as
/// `true` and re-encoded as 1: corrupt data was accepted silently. Bytes other than 0 and
/// 1 are refused, naming the element.
#[test]
fn a_bool_byte_other_than_0_or_1_is_refused() {
    use magpie::grpc::conv::tensor_from_wire;
    use magpie::grpc::proto::{DataType, TensorProto};
    let proto = |content: &[u8]| TensorProto {
        dtype: DataType::Bool as i32,
        dims: vec![content.len() as u64],
        content: content.to_vec().into(),
    };
    let t = tensor_from_wire(&proto(&[0, 1, 1])).unwrap();
    assert_eq!(t.to_vec::<bool>().unwrap(), [false, true, true]);
    for bad in [[0u8, 0xff, 1], [0, 0x23, 0]] {
        let e = tensor_from_wire(&proto(&bad)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("bool tensor: byte 1 is {}, not 0 or 1", bad[1])
        );
    }
}

/// `graph_run` found that printing a tensor (as an error or a `Debug` of a graph does)
/// walked every index of a long dimension: a constant of shape `[2^40, 0]` hung the
/// printer, and one of shape `[3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 8, 8, 0]` took 24 s
/// printing tens of millions of `[]`. A tensor without elements now prints as `[]`, only
/// shown indices are visited, printing stops after 1,000 elements, and no shape has more
/// than `Shape::MAX_RANK` dimensions, so printing recurses at most that deep.
#[test]
fn printing_a_long_empty_tensor_is_immediate_and_ranks_are_bounded() {
    use magpie::Shape;
    let t = Tensor::from_vec([1usize << 40, 3, 0], Vec::<f32>::new()).unwrap();
    assert_eq!(t.to_string(), "[]");
    let t = Tensor::from_vec([6usize; 7], vec![1i32; 6usize.pow(7)]).unwrap();
    assert!(t.to_string().len() < 10_000, "printing is bounded");
    let e = Shape::new(&vec![1; Shape::MAX_RANK + 1]).unwrap_err();
    assert!(e.to_string().contains("too many dimensions"), "{e}");
    assert!(Shape::new(&vec![1; Shape::MAX_RANK]).is_ok());
}
