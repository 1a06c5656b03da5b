//! Shape inference at graph construction: every standard op's shape function on known,
//! partly known and unknown inputs; build-time errors that name the node and the shapes;
//! `GraphDef` import and extension; custom ops with and without a shape function.

use magpie_core::graph::{
    register_op, unchanged_shape, Arity, GraphDef, GraphError, NodeDef, OpDef, OpDefError,
    PartialShape, ShapeError,
};
use magpie_core::{DType, Graph, Output, Shape, Tensor};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const U: Option<usize> = None;

/// A fully known shape.
fn k(dims: &[usize]) -> PartialShape {
    PartialShape::new(&dims.iter().map(|&d| Some(d)).collect::<Vec<_>>())
}

fn p(dims: &[Option<usize>]) -> PartialShape {
    PartialShape::new(dims)
}

/// An f32 placeholder whose shape attribute is `dims` (-1 for unknown).
fn ph(g: &Graph, dims: &[i64]) -> Output {
    g.op("Placeholder")
        .attr("dtype", DType::F32)
        .attr("shape", dims.to_vec())
        .build_output()
        .unwrap()
}

/// An f32 placeholder of unknown shape.
fn unknown(g: &Graph) -> Output {
    g.placeholder(DType::F32, None).unwrap()
}

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::zeros(DType::F32, dims).unwrap()
}

/// The shape error of a build that must fail, checked to name `node`.
fn shape_error(r: Result<Output, GraphError>, node: &str) -> String {
    match r {
        Err(
            e @ GraphError::InvalidNode {
                reason: OpDefError::Shape(_),
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("node {node:?} ")), "{msg}");
            msg
        }
        other => panic!("expected a shape error naming {node:?}, got {other:?}"),
    }
}

#[test]
fn matmul_of_mismatched_matrices_fails_at_build_naming_node_and_shapes() -> TestResult {
    let g = Graph::new();
    let a = g.constant(zeros(&[1, 2]))?;
    let b = g.constant(zeros(&[3, 1]))?;
    let before = g.len();
    let msg = shape_error(g.with_name("mm").matmul(a, b), "mm");
    assert_eq!(
        msg,
        "node \"mm\" (MatMul): MatMul shapes [1, 2] and [3, 1] do not match \
         (transpose_a=false, transpose_b=false): 2 columns against 3 rows"
    );
    assert_eq!(g.len(), before, "a rejected node is not added");
    // An automatic name is the one the node would have had.
    g.matmul(a, g.constant(zeros(&[2, 2]))?)?;
    let msg = shape_error(g.matmul(a, b), "MatMul_1");
    assert!(msg.contains("[1, 2] and [3, 1]"), "{msg}");
    Ok(())
}

#[test]
fn sources_declare_their_shapes() -> TestResult {
    let g = Graph::new();
    let c = g.constant(zeros(&[2, 3]))?;
    assert_eq!(g.shape_of(c)?, k(&[2, 3]));
    assert_eq!(g.shape_of(g.constant(1i32)?)?, k(&[]));
    assert_eq!(g.shape_of(ph(&g, &[-1, 3]))?, p(&[U, Some(3)]));
    assert_eq!(g.shape_of(unknown(&g))?, PartialShape::unknown());
    let known = g.placeholder(DType::I64, Some(&Shape::new(&[4])?))?;
    assert_eq!(g.shape_of(known)?, k(&[4]));
    // A feed may give a placeholder with a default any shape.
    assert_eq!(
        g.shape_of(g.placeholder_with_default(c)?)?,
        PartialShape::unknown()
    );
    assert_eq!(
        g.shape_of(g.fill(&[2, 0], g.constant(1.0f32)?)?)?,
        k(&[2, 0])
    );
    let r = g.random_uniform(&[5, 1], DType::F64, 3)?;
    assert_eq!(g.shape_of(r)?, k(&[5, 1]));
    let noop = g.no_op()?;
    assert!(matches!(
        g.shape_of(noop.output(0)),
        Err(GraphError::OutputOutOfRange { .. })
    ));
    Ok(())
}

#[test]
fn fill_and_random_uniform_check_their_attributes_and_value() -> TestResult {
    let g = Graph::new();
    let one = g.constant(Tensor::from_vec([1], vec![2.0f32])?)?;
    assert_eq!(g.shape_of(g.fill(&[3], one)?)?, k(&[3]));
    assert_eq!(g.shape_of(g.fill(&[3], unknown(&g))?)?, k(&[3]));
    assert_eq!(g.shape_of(g.fill(&[3], ph(&g, &[-1]))?)?, k(&[3]));
    // TensorFlow's rule: a scalar or a one-element vector, nothing of higher rank.
    let one_by_one = g.constant(Tensor::from_vec([1, 1], vec![2.0f32])?)?;
    let msg = shape_error(g.with_name("f").fill(&[3], one_by_one), "f");
    assert!(msg.contains("scalar value, got shape [1, 1]"), "{msg}");
    let two = g.constant(vec![1.0f32, 2.0])?;
    let msg = shape_error(g.with_name("f").fill(&[3], two), "f");
    assert!(msg.contains("scalar value, got shape [2]"), "{msg}");
    let msg = shape_error(g.with_name("f").fill(&[3], ph(&g, &[-1, 2])), "f");
    assert!(msg.contains("[?, 2]"), "{msg}");
    let bad = g
        .with_name("f")
        .op("Fill")
        .input(one)
        .attr("shape", vec![-1, 2])
        .build_output();
    let msg = shape_error(bad, "f");
    assert!(
        msg.contains("non-negative dimensions, got [-1, 2]"),
        "{msg}"
    );
    let bad = g
        .with_name("r")
        .op("RandomUniform")
        .attr("shape", vec![2, -1])
        .attr("dtype", DType::F32)
        .attr("seed", 1i64)
        .build_output();
    shape_error(bad, "r");
    Ok(())
}

#[test]
fn elementwise_unary_ops_keep_their_input_shape() -> TestResult {
    let g = Graph::new();
    let inputs = [
        (g.constant(zeros(&[2, 3]))?, k(&[2, 3])),
        (ph(&g, &[-1, 3]), p(&[U, Some(3)])),
        (unknown(&g), PartialShape::unknown()),
    ];
    for (x, shape) in inputs {
        for op in [
            "Identity",
            "Neg",
            "Square",
            "Relu",
            "Sqrt",
            "Exp",
            "ZerosLike",
        ] {
            let y = g.op(op).input(x).build_output()?;
            assert_eq!(g.shape_of(y)?, shape, "{op}");
        }
        assert_eq!(g.shape_of(g.cast(x, DType::I32)?)?, shape);
    }
    Ok(())
}

#[test]
fn binary_ops_broadcast_what_is_known() -> TestResult {
    let g = Graph::new();
    let col = g.constant(zeros(&[3, 1]))?;
    let row = g.constant(zeros(&[4]))?;
    for op in ["Add", "Sub", "Mul", "Div"] {
        let y = g.op(op).input(col).input(row).build_output()?;
        assert_eq!(g.shape_of(y)?, k(&[3, 4]), "{op}");
        let y = g
            .op(op)
            .input(ph(&g, &[-1, 1]))
            .input(ph(&g, &[5]))
            .build_output()?;
        assert_eq!(g.shape_of(y)?, p(&[U, Some(5)]), "{op}");
        let y = g.op(op).input(unknown(&g)).input(row).build_output()?;
        assert_eq!(g.shape_of(y)?, PartialShape::unknown(), "{op}");
        let bad = g
            .with_name("bad")
            .op(op)
            .input(row)
            .input(g.constant(zeros(&[3]))?)
            .build_output();
        let msg = shape_error(bad, "bad");
        assert!(
            msg.contains("shapes [4] and [3] cannot be broadcast"),
            "{msg}"
        );
        let bad = g
            .with_name("bad")
            .op(op)
            .input(ph(&g, &[-1, 2]))
            .input(g.constant(zeros(&[3]))?)
            .build_output();
        shape_error(bad, "bad");
    }
    Ok(())
}

#[test]
fn matmul_infers_partial_shapes_and_checks_ranks() -> TestResult {
    let g = Graph::new();
    let a = g.constant(zeros(&[2, 3]))?;
    let b = g.constant(zeros(&[4, 3]))?;
    assert_eq!(g.shape_of(g.matmul_t(a, b, false, true)?)?, k(&[2, 4]));
    assert_eq!(g.shape_of(g.matmul_t(b, a, false, true)?)?, k(&[4, 2]));
    assert_eq!(g.shape_of(g.matmul_t(a, a, true, false)?)?, k(&[3, 3]));
    let batch = ph(&g, &[-1, 3]);
    assert_eq!(
        g.shape_of(g.matmul_t(batch, b, false, true)?)?,
        p(&[U, Some(4)])
    );
    assert_eq!(g.shape_of(g.matmul(batch, unknown(&g))?)?, p(&[U, U]));
    assert_eq!(g.shape_of(g.matmul(unknown(&g), unknown(&g))?)?, p(&[U, U]));
    let msg = shape_error(g.with_name("m").matmul(batch, b), "m");
    assert!(msg.contains("[?, 3] and [4, 3] do not match"), "{msg}");
    let v = g.constant(zeros(&[3]))?;
    let msg = shape_error(g.with_name("m").matmul(v, unknown(&g)), "m");
    assert!(msg.contains("rank 2"), "{msg}");
    Ok(())
}

#[test]
fn reductions_drop_or_keep_the_axis() -> TestResult {
    let g = Graph::new();
    let x = g.constant(zeros(&[2, 3]))?;
    assert_eq!(g.shape_of(g.sum(x, None, false)?)?, k(&[]));
    assert_eq!(g.shape_of(g.sum(x, None, true)?)?, k(&[1, 1]));
    assert_eq!(g.shape_of(g.mean(x, Some(-1), false)?)?, k(&[2]));
    assert_eq!(g.shape_of(g.mean(x, Some(0), true)?)?, k(&[1, 3]));
    let partial = ph(&g, &[-1, 3]);
    assert_eq!(g.shape_of(g.sum(partial, Some(1), false)?)?, p(&[U]));
    assert_eq!(g.shape_of(g.sum(partial, Some(0), true)?)?, k(&[1, 3]));
    let any = unknown(&g);
    assert_eq!(g.shape_of(g.sum(any, None, false)?)?, k(&[]));
    assert_eq!(
        g.shape_of(g.sum(any, Some(7), true)?)?,
        PartialShape::unknown()
    );
    for op in ["Sum", "Mean"] {
        let bad = g
            .with_name("r")
            .op(op)
            .input(partial)
            .attr("axis", 2i64)
            .build_output();
        let msg = shape_error(bad, "r");
        assert!(
            msg.contains("axis 2 is out of range for a tensor of rank 2"),
            "{msg}"
        );
    }
    shape_error(
        g.with_name("s").sum(g.constant(1.0f32)?, Some(0), false),
        "s",
    );
    Ok(())
}

#[test]
fn reshape_infers_and_checks_element_counts() -> TestResult {
    let g = Graph::new();
    let x = g.constant(zeros(&[2, 6]))?;
    assert_eq!(g.shape_of(g.reshape(x, &[3, -1])?)?, k(&[3, 4]));
    assert_eq!(g.shape_of(g.reshape(x, &[12])?)?, k(&[12]));
    let msg = shape_error(g.with_name("r").reshape(x, &[5, 2]), "r");
    assert!(
        msg.contains("cannot reshape a tensor of shape [2, 6] (12 elements) into shape [5, 2]"),
        "{msg}"
    );
    shape_error(g.with_name("r").reshape(x, &[5, -1]), "r");
    // Counts beyond usize never wrap into a match.
    shape_error(g.with_name("r").reshape(x, &[12, (1 << 62) + 1]), "r");
    let partial = ph(&g, &[-1, 6]);
    assert_eq!(g.shape_of(g.reshape(partial, &[-1, 3])?)?, p(&[U, Some(3)]));
    assert_eq!(g.shape_of(g.reshape(partial, &[4, 3])?)?, k(&[4, 3]));
    let msg = shape_error(g.with_name("r").reshape(partial, &[4, 5]), "r");
    assert!(msg.contains("shape [?, 6] into shape [4, 5]"), "{msg}");
    let any = unknown(&g);
    assert_eq!(g.shape_of(g.reshape(any, &[-1, 2])?)?, p(&[U, Some(2)]));
    assert_eq!(g.shape_of(g.reshape(any, &[7])?)?, k(&[7]));
    // The unknown input may be empty, which TensorFlow's rule reshapes at run time.
    assert_eq!(g.shape_of(g.reshape(any, &[0, -1])?)?, p(&[Some(0), U]));
    shape_error(g.with_name("r").reshape(x, &[0, -1]), "r");
    Ok(())
}

#[test]
fn variable_updates_have_their_value_shape() -> TestResult {
    let g = Graph::new();
    let v = g.variable("w", DType::F32)?;
    let value = g.constant(zeros(&[2, 2]))?;
    assert_eq!(g.shape_of(v.assign(&g, value)?)?, k(&[2, 2]));
    assert_eq!(g.shape_of(v.assign_add(&g, value)?)?, k(&[2, 2]));
    assert_eq!(g.shape_of(v.read(&g)?)?, PartialShape::unknown());
    Ok(())
}

#[test]
fn unknown_shapes_propagate_without_false_errors() -> TestResult {
    let g = Graph::new();
    let x = unknown(&g);
    let h = g.relu(g.matmul(x, g.constant(zeros(&[3, 4]))?)?)?;
    assert_eq!(g.shape_of(h)?, p(&[U, Some(4)]));
    let s = g.add(h, g.constant(zeros(&[4]))?)?;
    let r = g.reshape(g.sum(s, Some(0), true)?, &[2, 2])?;
    assert_eq!(g.shape_of(s)?, p(&[U, Some(4)]));
    assert_eq!(g.shape_of(r)?, k(&[2, 2]));
    let y = g.mul(g.mean(unknown(&g), Some(5), false)?, unknown(&g))?;
    assert_eq!(g.shape_of(y)?, PartialShape::unknown());
    Ok(())
}

fn node(name: &str, op: &str, inputs: &[&str]) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        ..NodeDef::default()
    }
}

fn const_def(name: &str, dims: &[usize]) -> NodeDef {
    let mut n = node(name, "Const", &[]);
    n.attrs.push(("value".into(), zeros(dims).into()));
    n
}

#[test]
fn graph_def_import_runs_the_same_inference() -> TestResult {
    // Nodes in any order: the consumer comes first.
    let def = GraphDef {
        nodes: vec![
            node("prod", "MatMul", &["a", "b"]),
            const_def("a", &[1, 2]),
            const_def("b", &[3, 1]),
        ],
    };
    let e = Graph::import(&def).unwrap_err();
    let named = |e: &GraphError, want: &str| matches!(e, GraphError::InvalidNode { node, .. } if node == want);
    assert!(named(&e, "prod"), "{e:?}");
    assert!(
        matches!(
            &e,
            GraphError::InvalidNode {
                reason: OpDefError::Shape(_),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("[1, 2] and [3, 1]"), "{e}");

    // A graph's own export imports with the same shapes.
    let g = Graph::new();
    let y = g
        .with_name("y")
        .matmul(ph(&g, &[-1, 2]), g.constant(zeros(&[2, 5]))?)?;
    let back = Graph::import(&g.to_graph_def())?;
    let y2 = back.node_by_name("y").unwrap().output(0);
    assert_eq!(back.shape_of(y2)?, g.shape_of(y)?);
    assert_eq!(back.shape_of(y2)?, p(&[U, Some(5)]));

    // Extending is all or nothing, a shape error included.
    let ext = GraphDef {
        nodes: vec![
            const_def("c", &[3]),
            node("ok", "Identity", &["c"]),
            node("bad", "Add", &["c", "y"]),
        ],
    };
    let before = g.len();
    let e = g.extend(&ext).unwrap_err();
    assert!(e.to_string().starts_with("node \"bad\" (Add)"), "{e}");
    assert_eq!(g.len(), before);
    Ok(())
}

#[test]
fn custom_ops_bring_their_own_shape_function() -> TestResult {
    // Two outputs: the input and its transpose.
    let def = OpDef::new("ShapeTestSplitT", Arity::Exact(1), |ins, _| {
        Ok(vec![ins[0], ins[0]])
    })
    .with_shape_fn(|ctx| {
        let x = ctx.input(0);
        let t = match x.dims() {
            None => PartialShape::unknown_dims(2),
            Some(&[r, c]) => PartialShape::new(&[c, r]),
            Some(_) => {
                return Err(
                    ShapeError::new(format!("{} needs a matrix, got shape {x}", ctx.op())).into(),
                )
            }
        };
        Ok(vec![x, t])
    });
    register_op(def)?;
    register_op(OpDef::new("ShapeTestOpaque", Arity::Exact(1), |ins, _| {
        Ok(vec![ins[0]])
    }))?;
    register_op(
        OpDef::new("ShapeTestScale", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
            .with_shape_fn(unchanged_shape),
    )?;
    register_op(
        OpDef::new("ShapeTestMiscount", Arity::Exact(0), |_, _| {
            Ok(vec![DType::F32])
        })
        .with_shape_fn(|_| Ok(vec![])),
    )?;

    let g = Graph::new();
    let x = g.constant(zeros(&[2, 3]))?;
    let split = g.op("ShapeTestSplitT").input(x).build()?;
    assert_eq!(g.shape_of(split.output(0))?, k(&[2, 3]));
    assert_eq!(g.shape_of(split.output(1))?, k(&[3, 2]));
    // Its inferred shapes feed the standard ops' checks.
    g.matmul(split.output(0), split.output(1))?;
    let msg = shape_error(g.with_name("mm").matmul(x, split.output(0)), "mm");
    assert!(msg.contains("[2, 3] and [2, 3]"), "{msg}");
    // Its own error names the node.
    let bad = g
        .with_name("split")
        .op("ShapeTestSplitT")
        .input(g.constant(zeros(&[4]))?)
        .build_output();
    let msg = shape_error(bad, "split");
    assert!(
        msg.ends_with("ShapeTestSplitT needs a matrix, got shape [4]"),
        "{msg}"
    );

    // Without a shape function the outputs are unknown, and nothing downstream fails.
    let opaque = g.op("ShapeTestOpaque").input(x).build_output()?;
    assert_eq!(g.shape_of(opaque)?, PartialShape::unknown());
    g.matmul(opaque, x)?;
    let scaled = g.op("ShapeTestScale").input(x).build_output()?;
    assert_eq!(g.shape_of(scaled)?, k(&[2, 3]));

    // A shape function must give one shape per output.
    let e = g
        .with_name("miscount")
        .op("ShapeTestMiscount")
        .build()
        .unwrap_err();
    assert!(
        matches!(&e, GraphError::InvalidNode { node, reason: OpDefError::Invalid(_), .. }
            if node == "miscount"),
        "{e:?}"
    );
    assert!(e.to_string().contains("gave 0 shapes for 1 outputs"), "{e}");
    Ok(())
}
