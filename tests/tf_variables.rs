//! TensorFlow's variables and optimizers through `Graph::import_tensorflow`: the graphs
//! TensorFlow 2.21 builds for `apply_gradients` of GradientDescent, Momentum (plain and
//! Nesterov) and Adam, over resource and ref variables, run for three steps in a local
//! session, in a local session whose graph arrives in two `ExtendSession`-like parts, and
//! on an in-process cluster with a variable on `/job:ps/task:0`. Every variable, slot
//! and beta power must equal TensorFlow's value after every step.
//!
//! The graphs and numbers come from TensorFlow itself: `tests/fixtures/tf_variables.json`,
//! written by `$(scripts/tf-venv) scripts/tf_variables_fixture.py`.

use magpie::cluster::{default_cluster, InProcessCluster};
use magpie::core::error::Code;
use magpie::graph::{AttrValue, GraphDef, NodeDef};
use magpie::{DType, Graph, NodeId, Output, Tensor};
use serde_json::Value;

fn fixture() -> Value {
    let text = include_str!("fixtures/tf_variables.json");
    serde_json::from_str(text).expect("the fixture is JSON")
}

fn dtype(s: &str) -> DType {
    match s {
        "f32" => DType::F32,
        "f64" => DType::F64,
        "i32" => DType::I32,
        "i64" => DType::I64,
        "bool" => DType::Bool,
        other => panic!("dtype {other} in the fixture"),
    }
}

fn tensor(j: &Value) -> Tensor {
    let shape: Vec<usize> = j["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let values = j["values"].as_array().unwrap();
    match dtype(j["dtype"].as_str().unwrap()) {
        DType::F32 => Tensor::from_vec(
            shape,
            values.iter().map(|v| v.as_f64().unwrap() as f32).collect(),
        ),
        DType::I32 => Tensor::from_vec(
            shape,
            values.iter().map(|v| v.as_i64().unwrap() as i32).collect(),
        ),
        other => panic!("tensor of {other} in the fixture"),
    }
    .unwrap()
}

fn attr(j: &Value) -> AttrValue {
    let (kind, v) = j.as_object().unwrap().iter().next().unwrap();
    match kind.as_str() {
        "dtype" => AttrValue::DType(dtype(v.as_str().unwrap())),
        "bool" => AttrValue::Bool(v.as_bool().unwrap()),
        "int" => AttrValue::Int(v.as_i64().unwrap()),
        "float" => AttrValue::Float(v.as_f64().unwrap()),
        "str" => AttrValue::Str(v.as_str().unwrap().into()),
        "ints" => AttrValue::Ints(
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect(),
        ),
        "strs" => AttrValue::Strs(
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect(),
        ),
        "tensor" => AttrValue::Tensor(tensor(v)),
        other => panic!("attribute kind {other} in the fixture"),
    }
}

/// The case's GraphDef; `keep` picks the nodes, `devices` keeps their device strings.
fn graph_def(case: &Value, devices: bool, keep: impl Fn(&str) -> bool) -> GraphDef {
    let nodes = case["graph"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| keep(n["name"].as_str().unwrap()))
        .map(|n| NodeDef {
            name: n["name"].as_str().unwrap().into(),
            op: n["op"].as_str().unwrap().into(),
            inputs: n["inputs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().into())
                .collect(),
            device: if devices {
                n["device"].as_str().unwrap().into()
            } else {
                String::new()
            },
            attrs: n["attrs"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), attr(v)))
                .collect(),
        })
        .collect();
    GraphDef { nodes }
}

fn output(g: &Graph, name: &str) -> Output {
    let (node, index) = name.rsplit_once(':').unwrap();
    g.node_by_name(node)
        .unwrap_or_else(|| panic!("no node {node}"))
        .output(index.parse().unwrap())
}

fn node(g: &Graph, name: &str) -> NodeId {
    g.node_by_name(name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

type Run<'a> = dyn Fn(&[(Output, Tensor)], &[Output], &[NodeId]) -> Result<Vec<Tensor>, Code> + 'a;

fn case_name(case: &Value) -> String {
    format!("{} {}", case["form"], case["optimizer"])
}

/// Checks that reading before `init` fails as in TensorFlow, then runs `init` and three
/// training steps, comparing every variable with TensorFlow's values.
fn check_case(case: &Value, g: &Graph, run: &Run<'_>) {
    let name = case_name(case);
    let fetches: Vec<String> = case["fetches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().into())
        .collect();
    let outs: Vec<Output> = fetches.iter().map(|f| output(g, f)).collect();
    assert_eq!(case["uninitialised_error"], "FailedPreconditionError");
    assert_eq!(
        run(&[], &outs[..1], &[]).unwrap_err(),
        Code::FailedPrecondition,
        "{name}: an uninitialised read"
    );
    run(&[], &[], &[node(g, "init")]).unwrap();
    for (k, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        let feeds: Vec<(Output, Tensor)> = step["feeds"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(f, v)| {
                let values: Vec<f32> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                let shape = if f.starts_with("grad_v") {
                    vec![3]
                } else {
                    vec![2, 2]
                };
                (output(g, f), Tensor::from_vec(shape, values).unwrap())
            })
            .collect();
        run(&feeds, &[], &[node(g, "train")]).unwrap();
        let got = run(&[], &outs, &[]).unwrap();
        for (f, t) in fetches.iter().zip(&got) {
            let want: Vec<f64> = step["values"][f]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let got = t.to_vec::<f32>().unwrap();
            assert_eq!(got.len(), want.len(), "{name}: {f}");
            for (a, b) in got.iter().zip(&want) {
                let (a, b) = (f64::from(*a), *b);
                assert!(
                    (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                    "{name}: {f} after step {}: magpie {got:?}, tensorflow {want:?}",
                    k + 1
                );
            }
        }
    }
}

fn cases() -> Vec<Value> {
    let f = fixture();
    assert_eq!(f["tensorflow"], "2.21.0");
    let cases = f["cases"].as_array().unwrap().clone();
    assert_eq!(cases.len(), 8);
    cases
}

#[test]
fn optimizers_over_resource_and_ref_variables_match_tensorflow_in_a_local_session() {
    for case in cases() {
        let g = Graph::import_tensorflow(&graph_def(&case, false, |_| true))
            .unwrap_or_else(|e| panic!("{}: {e}", case_name(&case)));
        let s = magpie::local_session(&g).unwrap();
        check_case(&case, &g, &|f, o, t| s.run(f, o, t).map_err(|e| e.code()));
    }
}

#[test]
fn training_ops_added_by_a_later_extension_find_their_variables() {
    for case in cases() {
        // The variables first, as a first run would send them; the optimizer's nodes in a
        // second GraphDef, as ExtendSession does.
        let g = Graph::import_tensorflow(&graph_def(&case, false, |n| !n.starts_with("train")))
            .unwrap_or_else(|e| panic!("{}: {e}", case_name(&case)));
        let s = magpie::local_session(&g).unwrap();
        g.extend_tensorflow(&graph_def(&case, false, |n| n.starts_with("train")))
            .unwrap_or_else(|e| panic!("{}: {e}", case_name(&case)));
        check_case(&case, &g, &|f, o, t| s.run(f, o, t).map_err(|e| e.code()));
    }
}

#[test]
fn optimizers_match_tensorflow_on_a_cluster_with_a_variable_on_the_ps_task() {
    let c = InProcessCluster::start(&default_cluster()).unwrap();
    for (i, case) in cases().into_iter().enumerate() {
        let g = Graph::import_tensorflow(&graph_def(&case, true, |_| true))
            .unwrap_or_else(|e| panic!("{}: {e}", case_name(&case)));
        let s = c.session("worker", (i % 2) as u32, &g).unwrap();
        check_case(&case, &g, &|f, o, t| s.run(f, o, t).map_err(|e| e.code()));
        // Every op of `v` ran where `v` lives; `w`, unpinned, on the master's task.
        let zeros = [
            (
                output(&g, "grad_v:0"),
                Tensor::zeros(DType::F32, [3usize]).unwrap(),
            ),
            (
                output(&g, "grad_w:0"),
                Tensor::zeros(DType::F32, [2usize, 2]).unwrap(),
            ),
        ];
        let placed = s
            .run_with_options(&Default::default(), &zeros, &[], &[node(&g, "train")])
            .unwrap()
            .placement;
        let on = |name: &str| {
            placed
                .iter()
                .find(|p| p.name() == name)
                .map(|p| p.device.clone())
                .unwrap_or_default()
        };
        let update_v = if case["form"] == "resource" {
            format!("train/update_v/ResourceApply{}", opt_op(&case))
        } else {
            format!("train/update_v/Apply{}", opt_op(&case))
        };
        assert!(
            on(&update_v).starts_with("/job:ps/replica:0/task:0/"),
            "{placed:?}"
        );
        let update_w = update_v.replace("update_v", "update_w");
        assert!(
            on(&update_w).starts_with(&format!("/job:worker/replica:0/task:{}/", i % 2)),
            "{placed:?}"
        );
        // The variables live in the tasks' resource managers until reset.
        for (job, task) in [("ps", 0), ("worker", 0), ("worker", 1)] {
            c.server(job, task).unwrap().core().reset("");
        }
    }
}

fn opt_op(case: &Value) -> &'static str {
    match case["optimizer"].as_str().unwrap() {
        "gd" => "GradientDescent",
        "momentum" | "nesterov" => "Momentum",
        "adam" => "Adam",
        other => panic!("optimizer {other}"),
    }
}

fn tf_node(name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, AttrValue)>) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        device: String::new(),
        attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

fn tf_const(name: &str, t: Tensor) -> NodeDef {
    let dt = t.dtype();
    tf_node(
        name,
        "Const",
        &[],
        vec![("value", t.into()), ("dtype", dt.into())],
    )
}

#[test]
fn initialisation_checks_assign_sub_and_errors_name_the_variable() {
    let f32a = |k: &'static str| (k, AttrValue::DType(DType::F32));
    let def = GraphDef {
        nodes: vec![
            tf_node(
                "r",
                "VarHandleOp",
                &[],
                vec![f32a("dtype"), ("shared_name", "".into())],
            ),
            tf_node(
                "q",
                "VariableV2",
                &[],
                vec![f32a("dtype"), ("shared_name", "".into())],
            ),
            tf_node("r_ok", "VarIsInitializedOp", &["r"], vec![]),
            tf_node("q_ok", "IsVariableInitialized", &["q"], vec![f32a("dtype")]),
            tf_const(
                "ten",
                Tensor::from_vec([2usize], vec![10.0f32, 20.0]).unwrap(),
            ),
            tf_const(
                "one",
                Tensor::from_vec([2usize], vec![1.0f32, 2.0]).unwrap(),
            ),
            tf_const(
                "bad",
                Tensor::from_vec([3usize], vec![1.0f32, 2.0, 3.0]).unwrap(),
            ),
            tf_const("lr", Tensor::scalar(0.5f32)),
            tf_node(
                "r_init",
                "AssignVariableOp",
                &["r", "ten"],
                vec![f32a("dtype")],
            ),
            tf_node("q_init", "Assign", &["q", "ten"], vec![f32a("T")]),
            tf_node(
                "r_sub",
                "AssignSubVariableOp",
                &["r", "one"],
                vec![f32a("dtype")],
            ),
            tf_node("q_sub", "AssignSub", &["q", "one"], vec![f32a("T")]),
            tf_node(
                "r_read",
                "ReadVariableOp",
                &["r", "^r_sub"],
                vec![f32a("dtype")],
            ),
            tf_node("q_read", "Identity", &["q_sub"], vec![f32a("T")]),
            tf_node(
                "r_gd_bad",
                "ResourceApplyGradientDescent",
                &["r", "lr", "bad"],
                vec![f32a("T")],
            ),
        ],
    };
    let g = Graph::import_tensorflow(&def).unwrap();
    let s = magpie::local_session(&g).unwrap();
    let out = |n: &str| output(&g, &format!("{n}:0"));
    let flags = |s: &magpie::Session| -> Vec<bool> {
        s.run(&[], &[out("r_ok"), out("q_ok")], &[])
            .unwrap()
            .iter()
            .map(|t| t.scalar_value::<bool>().unwrap())
            .collect()
    };
    assert_eq!(flags(&s), [false, false]);
    for (read, name) in [("r_read", "\"r\""), ("q_read", "\"q\"")] {
        let e = s.run(&[], &[out(read)], &[]).unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        assert!(
            e.to_string().contains(name) && e.to_string().contains("not initialised"),
            "{e}"
        );
    }
    s.run(&[], &[], &[node(&g, "r_init"), node(&g, "q_init")])
        .unwrap();
    assert_eq!(flags(&s), [true, true]);
    let got = s.run(&[], &[out("r_read"), out("q_read")], &[]).unwrap();
    for t in got {
        assert_eq!(t.to_vec::<f32>().unwrap(), [9.0, 18.0]);
    }
    let e = s.run(&[], &[out("r_gd_bad")], &[]).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.to_string().contains("shape"), "{e}");
}

/// TensorFlow 2.21's pruning with feeds (measured with `tf.compat.v1` on ref variables):
/// feeding `inc:0` (an `AssignAdd`) replaces its tensor for data edges, but `inc` still
/// runs when a control edge or a target reaches it; a fed `Placeholder` never runs.
#[test]
fn fed_nodes_run_or_not_by_tensorflows_pruning_rules() {
    let f32a = |k: &'static str| (k, AttrValue::DType(DType::F32));
    let def = GraphDef {
        nodes: vec![
            tf_node(
                "v",
                "VariableV2",
                &[],
                vec![f32a("dtype"), ("shared_name", "".into())],
            ),
            tf_const("zero", Tensor::scalar(0.0f32)),
            tf_const("one", Tensor::scalar(1.0f32)),
            tf_const("five", Tensor::scalar(5.0f32)),
            tf_node("init", "Assign", &["v", "zero"], vec![f32a("T")]),
            tf_node("inc", "AssignAdd", &["v", "one"], vec![f32a("T")]),
            tf_node("y", "Identity", &["inc"], vec![f32a("T")]),
            tf_node("z", "Identity", &["five", "^inc"], vec![f32a("T")]),
            tf_node("x", "Placeholder", &[], vec![f32a("dtype")]),
            tf_node("after_x", "Identity", &["five", "^x"], vec![f32a("T")]),
            tf_node("v/read", "Identity", &["v"], vec![f32a("T")]),
        ],
    };
    let g = Graph::import_tensorflow(&def).unwrap();
    let s = magpie::local_session(&g).unwrap();
    let out = |n: &str| output(&g, &format!("{n}:0"));
    let v = |s: &magpie::Session| {
        s.run(&[], &[out("v/read")], &[]).unwrap()[0]
            .scalar_value::<f32>()
            .unwrap()
    };
    let ten = || vec![(out("inc"), Tensor::scalar(10.0f32))];
    let value = |t: &[Tensor]| t[0].scalar_value::<f32>().unwrap();
    s.run(&[], &[], &[node(&g, "init")]).unwrap();
    // 1. A data consumer of the fed tensor: `inc` does not run.
    assert_eq!(value(&s.run(&ten(), &[out("y")], &[]).unwrap()), 10.0);
    assert_eq!(v(&s), 0.0);
    // 2. The fed tensor itself: the feed comes back, `inc` does not run.
    assert_eq!(value(&s.run(&ten(), &[out("inc")], &[]).unwrap()), 10.0);
    assert_eq!(v(&s), 0.0);
    // 3. A control consumer of the fed node: `inc` runs.
    assert_eq!(value(&s.run(&ten(), &[out("z")], &[]).unwrap()), 5.0);
    assert_eq!(v(&s), 1.0);
    // 4. The fed node as a target: it runs, and its data consumers still see the feed.
    assert_eq!(
        value(&s.run(&ten(), &[out("y")], &[node(&g, "inc")]).unwrap()),
        10.0
    );
    assert_eq!(v(&s), 2.0);
    // A fed placeholder never runs, so its control consumer just waits for the feed.
    let fed_x = [(out("x"), Tensor::scalar(1.0f32))];
    assert_eq!(value(&s.run(&fed_x, &[out("after_x")], &[]).unwrap()), 5.0);
}
