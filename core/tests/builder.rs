//! The graph builder's scopes: names, devices, control dependencies and groups.

use magpie_core::graph::{DeviceSpec, Graph, GraphError};
use magpie_core::tensor::DType;

#[test]
fn automatic_names_are_unique_and_scoped() {
    let g = Graph::new();
    let a = g.constant(1.0f32).unwrap();
    let b = g.constant(2.0f32).unwrap();
    assert_eq!(
        (g.name_of(a.node), g.name_of(b.node)),
        ("Const".into(), "Const_1".into())
    );
    let inner = g.name_scope("layer1", |g| {
        g.name_scope("dense", |g| g.add(a, b).unwrap())
    });
    assert_eq!(g.name_of(inner.node), "layer1/dense/Add");
    let named = g
        .with_name_scope("layer1")
        .with_name("out")
        .identity(inner)
        .unwrap();
    assert_eq!(g.name_of(named.node), "layer1/out");
    assert_eq!(g.node_by_name("layer1/out"), Some(named.node));
    // An automatic name never takes an explicit one.
    g.with_name("Neg").constant(0.0f32).unwrap();
    let n = g.neg(a).unwrap();
    assert_eq!(g.name_of(n.node), "Neg_1");
}

#[test]
fn nested_device_scopes_merge_like_tensorflow() {
    let g = Graph::new();
    let x = g
        .device("/job:worker/task:1", |g| {
            g.device("/device:CPU:0", |g| g.constant(1.0f32))
        })
        .unwrap();
    let node = g.node(x.node).unwrap();
    assert_eq!(node.device.to_string(), "/job:worker/task:1/device:CPU:0");
    let y = g
        .device("/job:ps/task:0/device:CPU:0", |g| {
            g.device("/task:2", |g| g.constant(1.0f32))
        })
        .unwrap();
    assert_eq!(
        g.node(y.node).unwrap().device.to_string(),
        "/job:ps/task:2/device:CPU:0"
    );
    let z = g
        .with_device("/job:ps")
        .unwrap()
        .op("Const")
        .attr("value", magpie_core::Tensor::scalar(1i32))
        .device("/cpu:0")
        .build()
        .unwrap();
    assert_eq!(
        *g.node(z).unwrap().device,
        DeviceSpec::parse("/job:ps/device:CPU:0").unwrap()
    );
    let err = g.with_device("task:1").unwrap_err();
    assert!(matches!(err, GraphError::BadDeviceSpec { .. }), "{err:?}");
}

#[test]
fn control_dependency_scopes_accumulate() {
    let g = Graph::new();
    let a = g.constant(1.0f32).unwrap();
    let b = g.constant(2.0f32).unwrap();
    let c = g.constant(3.0f32).unwrap();
    let (x, y) = g.control_dependencies([a, b], |g| {
        let x = g.constant(4.0f32).unwrap();
        let y = g.control_dependencies([c], |g| g.constant(5.0f32).unwrap());
        (x, y)
    });
    assert_eq!(g.node(x.node).unwrap().control_inputs, vec![a.node, b.node]);
    assert_eq!(
        g.node(y.node).unwrap().control_inputs,
        vec![a.node, b.node, c.node]
    );
    // Outside the scope, nothing is added.
    let z = g.add(x, y).unwrap();
    assert!(g.node(z.node).unwrap().control_inputs.is_empty());
    let grp = g.group([x, y]).unwrap();
    let grp_node = g.node(grp).unwrap();
    assert_eq!((grp_node.op.as_str(), grp_node.num_outputs()), ("NoOp", 0));
    assert_eq!(grp_node.control_inputs, vec![x.node, y.node]);
}

#[test]
fn dtypes_are_inferred() {
    let g = Graph::new();
    let p = g.placeholder(DType::I64, None).unwrap();
    let c = g.cast(p, DType::F64).unwrap();
    let m = g.mean(c, Some(-1), true).unwrap();
    assert_eq!(g.dtype(m).unwrap(), DType::F64);
    let r = g.random_uniform(&[2, 2], DType::F32, 7).unwrap();
    assert_eq!(g.dtype(r).unwrap(), DType::F32);
    let err = g.random_uniform(&[2], DType::I32, 7).unwrap_err();
    assert!(
        err.to_string()
            .contains("RandomUniform makes floats, not i32"),
        "{err}"
    );
}

#[test]
fn a_node_of_another_graph_is_refused_as_input_or_control_input() {
    let g = Graph::new();
    let other = Graph::new();
    let mine = g.constant(1.0f32).unwrap();
    // Same position in both graphs: only the graph identity tells them apart.
    let theirs = other.with_name("theirs").constant(2.0f32).unwrap();
    assert_eq!(mine.node.index(), theirs.node.index());
    assert_ne!(mine.node.graph(), theirs.node.graph());
    assert_eq!(theirs.node.graph(), other.id());
    let before = g.len();

    let err = g.with_name("sum").add(mine, theirs).unwrap_err();
    assert!(matches!(err, GraphError::ForeignNode { .. }), "{err:?}");
    assert_eq!(err.code(), magpie_core::Code::InvalidArgument);
    let msg = err.to_string();
    assert!(
        msg.starts_with("input 1 of node \"sum\" refers to node \"theirs\" of another graph"),
        "{msg}"
    );

    let err = g
        .with_control_dependencies([theirs])
        .with_name("after")
        .constant(3.0f32)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("control input of node \"after\" refers to node \"theirs\""),
        "{err}"
    );
    let err = g
        .op("NoOp")
        .name("noop")
        .control_input(theirs)
        .build()
        .unwrap_err();
    assert!(matches!(err, GraphError::ForeignNode { .. }), "{err:?}");
    // Nothing was added, and the foreign handle finds nothing here.
    assert_eq!(g.len(), before);
    assert!(g.node(theirs.node).is_none());
    assert!(g.dtype(theirs).is_err());
    assert_eq!(g.name_of(theirs.node), "theirs");
    // Clones and scoped handles share the graph's identity.
    assert_eq!(g.with_name_scope("s").id(), g.id());
    assert!(g.clone().owns(mine.node));
}

#[test]
fn graph_ids_are_unique_among_live_graphs() {
    let graphs: Vec<Graph> = (0..100).map(|_| Graph::new()).collect();
    let mut ids: Vec<_> = graphs.iter().map(Graph::id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), graphs.len());
}

#[test]
fn a_handle_of_a_dropped_graph_is_named_by_position() {
    let g = Graph::new();
    let gone = {
        let other = Graph::new();
        other.constant(1.0f32).unwrap()
    };
    let err = g.identity(gone).unwrap_err();
    assert!(matches!(err, GraphError::ForeignNode { .. }), "{err:?}");
    assert!(err.to_string().contains("node \"#0\""), "{err}");
}

#[test]
fn handles_stay_copy_and_small() {
    use magpie_core::graph::{NodeId, Output};
    fn copy<T: Copy>() {}
    copy::<NodeId>();
    copy::<Output>();
    assert_eq!(std::mem::size_of::<NodeId>(), 8);
    assert_eq!(std::mem::size_of::<Output>(), 12);
}
