//! Bad input reaches the caller as a typed error whose message names the node, op, dtype
//! or device involved; nothing panics, and the session keeps working afterwards.

use magpie::graph::{AttrValue, GraphDef, NodeDef};
use magpie::{DType, Graph, GraphError, SessionError, Tensor};

fn node(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        ..NodeDef::default()
    }
}

#[test]
fn a_cycle_is_reported_with_the_nodes_on_it() {
    let def = GraphDef {
        nodes: vec![
            node("a", "Identity", &["c"]),
            node("b", "Identity", &["a"]),
            node("c", "Identity", &["b"]),
        ],
    };
    let err = Graph::import(&def).unwrap_err();
    assert!(matches!(err, GraphError::Cycle(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("cycle in graph through nodes "), "{msg}");
    for n in ["a", "b", "c"] {
        assert!(
            msg.contains(&format!("{n} ->")) || msg.ends_with(n),
            "{msg}"
        );
    }
    // A control edge closes a cycle too.
    let mut k = NodeDef {
        attrs: vec![("value".into(), AttrValue::Tensor(Tensor::scalar(1.0f32)))],
        ..node("k", "Const", &["^n"])
    };
    k.device = String::new();
    let def = GraphDef {
        nodes: vec![k, node("n", "Identity", &["k"])],
    };
    assert!(matches!(
        Graph::import(&def).unwrap_err(),
        GraphError::Cycle(_)
    ));
}

#[test]
fn import_validates_names_ops_and_inputs() {
    let def = GraphDef {
        nodes: vec![node("a", "Frobnicate", &[])],
    };
    assert_eq!(
        Graph::import(&def).unwrap_err().to_string(),
        "node \"a\": unknown op \"Frobnicate\""
    );
    let def = GraphDef {
        nodes: vec![node("a", "Identity", &["nowhere:0"])],
    };
    assert_eq!(
        Graph::import(&def).unwrap_err().to_string(),
        "input 0 of node \"a\" refers to node \"nowhere\", which does not exist"
    );
    let def = GraphDef {
        nodes: vec![node("a", "NoOp", &[]), node("a", "NoOp", &[])],
    };
    assert_eq!(
        Graph::import(&def).unwrap_err(),
        GraphError::DuplicateName("a".into())
    );
    let def = GraphDef {
        nodes: vec![NodeDef {
            device: "/job".into(),
            ..node("a", "NoOp", &[])
        }],
    };
    let msg = Graph::import(&def).unwrap_err().to_string();
    assert!(
        msg.starts_with("node \"a\": malformed device spec \"/job\""),
        "{msg}"
    );
}

#[test]
fn attribute_and_output_errors_name_the_node() {
    let g = Graph::new();
    let err = g.with_name("p").op("Placeholder").build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"p\" (Placeholder): missing attribute \"dtype\""
    );
    let x = g.constant(1.0f32).unwrap();
    let err = g
        .with_name("s")
        .op("Sum")
        .input(x)
        .attr("axis", true)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"s\" (Sum): attribute \"axis\" should be an int, got a bool"
    );
    let err = g
        .with_name("r")
        .sqrt(g.constant(4i32).unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"r\" (Sqrt): dtype mismatch: input 0 has dtype i32, expected f32 or f64"
    );
    let err = g.identity(x.node.output(3)).unwrap_err();
    assert!(
        err.to_string().contains("has 1 outputs, no output 3"),
        "{err}"
    );
}

#[test]
fn placement_and_kernel_errors_name_node_and_device() {
    let g = Graph::new();
    let on_ps = g
        .device("/job:ps/task:0", |g| g.with_name("w").constant(1.0f32))
        .unwrap();
    let s = magpie::local_session(&g).unwrap();
    let err = s.run(&[], &[on_ps], &[]).unwrap_err();
    // The CPU comes first; GPUs follow where the machine has a Vulkan device.
    assert!(
        err.to_string().starts_with(
            "node \"w\" (Const) requests device /job:ps/task:0, which no device matches; \
             devices: /job:localhost/replica:0/task:0/device:CPU:0"
        ),
        "{err}"
    );
    let gpu = g
        .device("/device:CPU:7", |g| g.with_name("c7").constant(1.0f32))
        .unwrap();
    let err = s.run(&[], &[gpu], &[]).unwrap_err();
    assert!(
        err.to_string().contains("requests device /device:CPU:7"),
        "{err}"
    );

    let a = g
        .constant(Tensor::from_vec([2, 3], vec![0.0f32; 6]).unwrap())
        .unwrap();
    let b = g
        .constant(Tensor::from_vec([4, 2], vec![0.0f32; 8]).unwrap())
        .unwrap();
    // Known shapes that cannot work fail at build, naming the node and both shapes ...
    let err = g.with_name("mm").matmul(a, b).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("node \"mm\" (MatMul): MatMul shapes [2, 3] and [4, 2] do not match"),
        "{err}"
    );
    // ... and shapes known only when fed fail in the kernel, naming node and device.
    let x = g.placeholder(DType::F32, None).unwrap();
    let m = g.with_name("mm").matmul(x, b).unwrap();
    let fed = Tensor::from_vec([2, 3], vec![0.0f32; 6]).unwrap();
    let err = s.run(&[(x, fed)], &[m], &[]).unwrap_err();
    match &err {
        SessionError::Kernel {
            node, op, device, ..
        } => {
            assert_eq!((node.as_str(), op.as_str()), ("mm", "MatMul"));
            assert_eq!(device, "/job:localhost/replica:0/task:0/device:CPU:0");
        }
        other => panic!("expected a kernel error, got {other:?}"),
    }
    assert!(
        err.to_string().contains("[2, 3]") && err.to_string().contains("[4, 2]"),
        "{err}"
    );
    // The session still works.
    let ok = g.add(a, a).unwrap();
    assert_eq!(s.run(&[], &[ok], &[]).unwrap()[0].dims(), &[2, 3]);
}

#[test]
fn feed_errors_name_the_placeholder() {
    let g = Graph::new();
    let p = g
        .with_name("img")
        .placeholder(DType::F32, Some(&magpie::Shape::new(&[2, 2]).unwrap()))
        .unwrap();
    let y = g.neg(p).unwrap();
    let s = magpie::local_session(&g).unwrap();
    let err = s
        .run(
            &[(p, Tensor::from_vec([3], vec![0.0f32; 3]).unwrap())],
            &[y],
            &[],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "feed for placeholder \"img\" has shape [3], but the placeholder is declared [2, 2]"
    );
    let err = s.run(&[(p, Tensor::scalar(1i64))], &[y], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "feed for \"img:0\" has dtype i64, but that output is f32"
    );
    let t = Tensor::from_vec([2, 2], vec![1.0f32; 4]).unwrap();
    let err = s.run(&[(p, t.clone()), (p, t)], &[y], &[]).unwrap_err();
    assert_eq!(err.to_string(), "output \"img:0\" is fed twice");
}

#[test]
fn extend_adds_nodes_on_top_of_a_graph_all_or_nothing() {
    let g = Graph::new();
    let a = g.with_name("a").constant(2.0f32).unwrap();
    let session = magpie::local_session(&g).unwrap();
    let before = g.to_graph_def().nodes.len();

    // A bad extension (its second node names an unknown input) adds nothing.
    let bad = GraphDef {
        nodes: vec![
            node("b", "Identity", &["a"]),
            node("c", "Identity", &["nowhere"]),
        ],
    };
    let err = g.extend(&bad).unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
    assert_eq!(g.to_graph_def().nodes.len(), before);
    assert!(g.node_by_name("b").is_none());
    // A name already in the graph is refused.
    let dup = GraphDef {
        nodes: vec![node("a", "Identity", &["a"])],
    };
    assert_eq!(
        g.extend(&dup).unwrap_err(),
        GraphError::DuplicateName("a".into())
    );

    // A good one, in any order, with inputs from the graph and from itself; a session
    // opened before sees the new nodes.
    let good = GraphDef {
        nodes: vec![
            node("d", "Add", &["b", "a:0"]),
            node("b", "Identity", &["a"]),
        ],
    };
    let ids = g.extend(&good).unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(g.node_by_name("d"), Some(ids[0]));
    let out = session.run(&[], &[ids[0].output(0), a], &[]).unwrap();
    assert_eq!(f32::try_from(&out[0]).unwrap(), 4.0);
}
