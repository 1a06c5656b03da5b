//! TensorFlow's ops on Magpie against TensorFlow's own values.
//!
//! `tests/fixtures/tf_ops.json` (written by `scripts/tf_op_fixtures.py` with TensorFlow
//! 2.21) holds, per case, the inputs, the op's NodeDef as TensorFlow wrote it and
//! TensorFlow's outputs or refusal. Each case becomes a TensorFlow-style GraphDef (a
//! `Const` per input, then the node), imported with `Graph::import_tensorflow` and run in
//! a local session on the CPU: every output must match in dtype, shape and values (within
//! 1e-6 relative), and a case TensorFlow refuses must fail on Magpie too (at import or at
//! run), never panic. A case TensorFlow's shape inference refused when building ran there
//! over placeholders of unknown shape; here too.
//!
//! `tests/fixtures/tf_mlp.json` is the whole forward and backward GraphDef of a 2-layer
//! MLP (dense, relu, softmax cross-entropy, mean loss) with TensorFlow's loss and
//! gradients for fixed weights and inputs.

use magpie::{DType, Graph, Output, Tensor};
use magpie_core::graph::{AttrValue, GraphDef, NodeDef};
use serde_json::Value;

/// The largest difference allowed between Magpie's and TensorFlow's values, relative to
/// TensorFlow's (with a floor for values near zero, which accumulated rounding reaches).
const RELATIVE: f64 = 1e-6;
const ABSOLUTE_NEAR_ZERO: f64 = 1e-7;

fn dtype(s: &str) -> DType {
    match s {
        "f32" => DType::F32,
        "f64" => DType::F64,
        "i32" => DType::I32,
        "i64" => DType::I64,
        "bool" => DType::Bool,
        other => panic!("fixture dtype {other}"),
    }
}

fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        Value::Bool(b) => f64::from(u8::from(*b)),
        v => v.as_f64().expect("a number"),
    }
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a shape")
        .iter()
        .map(|d| d.as_u64().expect("a dimension") as usize)
        .collect()
}

/// A fixture tensor `{dtype, shape, values}` as a Magpie tensor.
fn tensor(v: &Value) -> Tensor {
    let shape = dims(&v["shape"]);
    let values = v["values"].as_array().expect("values");
    let t = match dtype(v["dtype"].as_str().expect("dtype")) {
        DType::F32 => Tensor::from_vec(shape, values.iter().map(|x| number(x) as f32).collect()),
        DType::F64 => Tensor::from_vec(shape, values.iter().map(number).collect()),
        DType::I32 => Tensor::from_vec(shape, values.iter().map(|x| number(x) as i32).collect()),
        DType::I64 => Tensor::from_vec(
            shape,
            values.iter().map(|x| x.as_i64().expect("an i64")).collect(),
        ),
        DType::Bool => Tensor::from_vec(
            shape,
            values
                .iter()
                .map(|x| x.as_bool().expect("a bool"))
                .collect(),
        ),
    };
    t.expect("a fixture tensor fits its shape")
}

/// A fixture attribute (`{"type": "f32"}`, `{"b": true}`, `{"ints": [..]}`, ...).
fn attr(v: &Value) -> AttrValue {
    let (kind, x) = v
        .as_object()
        .expect("an attr")
        .iter()
        .next()
        .expect("a kind");
    match kind.as_str() {
        "type" => AttrValue::DType(dtype(x.as_str().expect("a dtype"))),
        "b" => AttrValue::Bool(x.as_bool().expect("a bool")),
        "i" => AttrValue::Int(x.as_i64().expect("an int")),
        "f" => AttrValue::Float(x.as_f64().expect("a float")),
        "s" => AttrValue::Str(x.as_str().expect("a string").into()),
        "ints" => AttrValue::Ints(
            x.as_array()
                .expect("ints")
                .iter()
                .map(|i| i.as_i64().expect("an int"))
                .collect(),
        ),
        "strs" => AttrValue::Strs(
            x.as_array()
                .expect("strs")
                .iter()
                .map(|s| s.as_str().expect("a string").into())
                .collect(),
        ),
        other => panic!("fixture attr kind {other}"),
    }
}

/// A NodeDef from the fixture's `{name, op, inputs, attrs}`.
fn node_def(v: &Value) -> NodeDef {
    NodeDef {
        name: v["name"].as_str().expect("name").into(),
        op: v["op"].as_str().expect("op").into(),
        inputs: v["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|i| i.as_str().expect("an input").into())
            .collect(),
        device: String::new(),
        attrs: v["attrs"]
            .as_object()
            .expect("attrs")
            .iter()
            .map(|(k, a)| (k.clone(), attr(a)))
            .collect(),
    }
}

fn const_node(name: &str, value: Tensor) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: "Const".into(),
        inputs: vec![],
        device: String::new(),
        attrs: vec![
            ("dtype".into(), AttrValue::DType(value.dtype())),
            ("value".into(), AttrValue::Tensor(value)),
        ],
    }
}

/// Why `got` differs from TensorFlow's `want`, if it does.
fn mismatch(got: &Tensor, want: &Value) -> Option<String> {
    let want_dtype = dtype(want["dtype"].as_str().expect("dtype"));
    let want_dims = dims(&want["shape"]);
    if got.dtype() != want_dtype || got.dims() != want_dims.as_slice() {
        return Some(format!(
            "got {} {:?}, TensorFlow {want_dtype} {want_dims:?}",
            got.dtype(),
            got.dims()
        ));
    }
    let values = want["values"].as_array().expect("values");
    if values.len() != got.num_elements() {
        return Some(format!(
            "got {} elements, TensorFlow {}",
            got.num_elements(),
            values.len()
        ));
    }
    for (i, w) in values.iter().enumerate() {
        let (g, w) = (got.storage().get_f64(i), number(w));
        let same = (g.is_nan() && w.is_nan())
            || g == w
            || (g - w).abs() <= RELATIVE * w.abs()
            || (g - w).abs() <= ABSOLUTE_NEAR_ZERO;
        if !same {
            return Some(format!("element {i}: got {g}, TensorFlow {w}"));
        }
    }
    None
}

/// Runs one fixture case; `Err` says how Magpie differs from TensorFlow.
fn check_case(case: &Value) -> Result<(), String> {
    // A case TensorFlow's shape inference refused at build ran there over placeholders of
    // unknown shape, so that its kernel decided; the same here.
    let fed = case.get("build_error").is_some();
    let mut def = GraphDef::default();
    let mut feeds = Vec::new();
    for (i, input) in case["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .enumerate()
    {
        let (name, value) = (format!("in{i}"), tensor(input));
        if fed {
            let attrs = vec![("dtype", AttrValue::DType(value.dtype()))];
            def.nodes.push(node(&name, "Placeholder", &[], "", attrs));
            feeds.push((name, value));
        } else {
            def.nodes.push(const_node(&name, value));
        }
    }
    let node = node_def(&case["node"]);
    let name = node.name.clone();
    def.nodes.push(node);
    let refused = case.get("error").is_some();
    let graph = match Graph::import_tensorflow(&def) {
        Ok(g) => g,
        Err(e) if refused => {
            assert!(!e.to_string().is_empty());
            return Ok(());
        }
        Err(e) => return Err(format!("import failed: {e}")),
    };
    let id = graph.node_by_name(&name).expect("the node was imported");
    let wants = case["outputs"].as_array().cloned().unwrap_or_default();
    // A refused case fetches output 0; a node without outputs runs as a target.
    let count = if refused { 1 } else { wants.len() as u32 };
    let fetches: Vec<Output> = (0..count).map(|k| id.output(k)).collect();
    let targets = if fetches.is_empty() { vec![id] } else { vec![] };
    let feeds: Vec<(Output, Tensor)> = feeds
        .into_iter()
        .map(|(n, v)| (graph.node_by_name(&n).expect("a placeholder").output(0), v))
        .collect();
    let session = magpie::local_session(&graph).map_err(|e| format!("session: {e}"))?;
    match (session.run(&feeds, &fetches, &targets), refused) {
        (Err(_), true) => Ok(()),
        (Ok(out), true) => Err(format!(
            "TensorFlow refused it ({}), Magpie gave {out:?}",
            case["error"]
        )),
        (Err(e), false) => Err(format!("run failed: {e}")),
        (Ok(out), false) => {
            for (k, (got, want)) in out.iter().zip(&wants).enumerate() {
                if let Some(why) = mismatch(got, want) {
                    return Err(format!("output {k}: {why}"));
                }
            }
            Ok(())
        }
    }
}

#[test]
fn every_op_matches_tensorflow_on_its_fixture_cases() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/tf_ops.json")).expect("the fixture parses");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() > 100, "the fixture holds {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            check_case(c)
                .err()
                .map(|e| format!("{}: {e}", c["name"].as_str().unwrap_or("?")))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from TensorFlow:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn the_mlp_forward_and_backward_graph_gives_tensorflows_loss_and_gradients() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/tf_mlp.json")).expect("the fixture parses");
    let mut def = GraphDef::default();
    for n in fixture["nodes"].as_array().expect("nodes") {
        let mut node = node_def(n);
        if node.op == "Const" {
            node.attrs.retain(|(k, _)| k != "value");
            node.attrs
                .push(("value".into(), AttrValue::Tensor(tensor(&n["value"]))));
        }
        def.nodes.push(node);
    }
    let graph = Graph::import_tensorflow(&def).expect("TensorFlow's MLP GraphDef imports");
    let output = |name: &str| -> Output {
        let (node, k) = name.rsplit_once(':').expect("a tensor name");
        graph
            .node_by_name(node)
            .unwrap_or_else(|| panic!("no node {node}"))
            .output(k.parse().expect("an output index"))
    };
    let feeds: Vec<(Output, Tensor)> = fixture["feeds"]
        .as_object()
        .expect("feeds")
        .iter()
        .map(|(k, v)| (output(k), tensor(v)))
        .collect();
    let names: Vec<&str> = fixture["fetches"]
        .as_array()
        .expect("fetches")
        .iter()
        .map(|f| f.as_str().expect("a fetch"))
        .collect();
    let fetches: Vec<Output> = names.iter().map(|n| output(n)).collect();
    let session = magpie::local_session(&graph).expect("a local session");
    let out = session.run(&feeds, &fetches, &[]).expect("the step runs");
    let wants = fixture["values"].as_array().expect("values");
    assert_eq!(out.len(), 5, "the loss and four gradients");
    for ((got, want), name) in out.iter().zip(wants).zip(&names) {
        assert_eq!(mismatch(got, want), None, "{name}");
    }
}

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    device: &str,
    attrs: Vec<(&str, AttrValue)>,
) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        device: device.into(),
        attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

#[test]
fn tensorflow_colocation_places_a_node_with_its_class_target() {
    use magpie::cluster::{default_cluster, InProcessCluster};
    let w = Tensor::from_vec([2usize], vec![1.0f32, 2.0]).unwrap();
    let class = |t: &str| ("_class", AttrValue::Strs(vec![format!("loc:@{t}")]));
    let def = GraphDef {
        nodes: vec![
            node(
                "w",
                "Const",
                &[],
                "/job:ps/task:0",
                vec![("dtype", DType::F32.into()), ("value", w.into())],
            ),
            // No device of its own: TensorFlow's `_class` puts it with `w`, on ps.
            node("w/read", "Identity", &["w"], "", vec![class("w")]),
            // Its own name in `_class` and an unknown node constrain nothing.
            node(
                "y",
                "Mul",
                &["w/read", "w/read"],
                "/job:worker/task:1",
                vec![(
                    "_class",
                    AttrValue::Strs(vec!["loc:@y".into(), "loc:@nowhere".into()]),
                )],
            ),
        ],
    };
    let graph = Graph::import_tensorflow(&def).expect("imports");
    let cluster = InProcessCluster::start(&default_cluster()).expect("a cluster");
    let session = cluster.session("worker", 0, &graph).expect("a session");
    let y = graph.node_by_name("y").unwrap().output(0);
    let out = session
        .run_with_options(&magpie::RunOptions::default(), &[], &[y], &[])
        .expect("the step runs");
    assert_eq!(out.tensors[0].to_vec::<f32>().unwrap(), vec![1.0, 4.0]);
    let device_of = |n: &str| {
        out.placement
            .iter()
            .find(|p| p.name() == n)
            .map(|p| p.device.clone())
            .unwrap_or_else(|| panic!("{n} was placed"))
    };
    assert!(
        device_of("w/read").starts_with("/job:ps/replica:0/task:0/"),
        "{}",
        device_of("w/read")
    );
    assert!(
        device_of("y").starts_with("/job:worker/replica:0/task:1/"),
        "{}",
        device_of("y")
    );
}

/// TensorFlow's op names that import renames (`tf_import/ops.rs`).
fn magpie_name(tf: &str) -> &str {
    match tf {
        "AddV2" => "Add",
        "RealDiv" => "Div",
        other => other,
    }
}

#[test]
fn every_listed_op_has_a_definition_a_cpu_kernel_and_fixture_cases() {
    magpie_cpu::register().expect("the CPU kernels register");
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/tf_ops.json")).expect("the fixture parses");
    let tested: std::collections::HashSet<&str> = fixture["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["node"]["op"].as_str().expect("an op"))
        .collect();
    let list = include_str!("../docs/tensorflow-ops.txt");
    let ops: Vec<&str> = list
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| match l.split('\t').collect::<Vec<_>>()[..] {
            [op, "op", _] => Some(op),
            [_, "variable", _] => None,
            _ => panic!("malformed line {l:?}"),
        })
        .collect();
    assert!(ops.len() > 30, "{} ordinary ops listed", ops.len());
    for op in ops {
        let name = magpie_name(op);
        assert!(
            magpie_core::graph::lookup_op(name).is_some(),
            "{op}: no op definition"
        );
        assert!(
            magpie_core::registry::has_kernel(name, "CPU"),
            "{op}: no CPU kernel"
        );
        // Const and Placeholder feed every case; NoOp has nothing to compare.
        if !matches!(op, "Const" | "Placeholder" | "NoOp") {
            assert!(tested.contains(op), "{op}: no case against TensorFlow");
        }
    }
}

/// Inputs a hostile or careless client may send: odd ranks, empty tensors, negative and
/// extreme values, every dtype.
fn hostile_inputs() -> Vec<Tensor> {
    vec![
        Tensor::scalar(3.5f32),
        Tensor::scalar(-1i32),
        Tensor::scalar(i64::MAX),
        Tensor::scalar(i32::MIN),
        Tensor::scalar(true),
        Tensor::from_vec([0usize], Vec::<f32>::new()).unwrap(),
        Tensor::from_vec([0usize], Vec::<i32>::new()).unwrap(),
        Tensor::from_vec([2usize, 0], Vec::<f32>::new()).unwrap(),
        Tensor::from_vec([3usize], vec![-5i32, 0, 7]).unwrap(),
        Tensor::from_vec([2usize], vec![i64::MAX, 2]).unwrap(),
        Tensor::from_vec([2usize], vec![1i64 << 40, 1 << 40]).unwrap(),
        Tensor::from_vec([4usize], vec![2i32, 1, -1, 0]).unwrap(),
        Tensor::from_vec([2usize, 3], vec![1.0f32, f32::NAN, -2.0, 0.0, 5.0, -0.5]).unwrap(),
        Tensor::from_vec([1usize, 3, 1], vec![1.0f64, 2.0, 3.0]).unwrap(),
        Tensor::from_vec([2usize, 2], vec![true, false, true, true]).unwrap(),
    ]
}

#[test]
fn hostile_inputs_to_tensorflows_ops_are_errors_never_panics() {
    // (op, inputs, attributes) for every op of the TensorFlow families.
    let attrs_of = |op: &str| -> Vec<Vec<(&'static str, AttrValue)>> {
        match op {
            "Unpack" => vec![
                vec![("num", AttrValue::Int(2))],
                vec![("num", AttrValue::Int(3)), ("axis", AttrValue::Int(-9))],
            ],
            "Pack" => vec![vec![], vec![("axis", AttrValue::Int(7))]],
            "Squeeze" => vec![vec![], vec![("squeeze_dims", AttrValue::Ints(vec![-1, 5]))]],
            "Shape" => vec![vec![("out_type", AttrValue::DType(DType::I64))], vec![]],
            "BiasAdd" | "BiasAddGrad" => {
                vec![vec![], vec![("data_format", AttrValue::Str("NCHW".into()))]]
            }
            "Sum" | "Mean" | "Prod" => vec![vec![("keep_dims", AttrValue::Bool(true))], vec![]],
            _ => vec![vec![]],
        }
    };
    let ops: &[(&str, usize)] = &[
        ("Shape", 1),
        ("ExpandDims", 2),
        ("Squeeze", 1),
        ("Pack", 2),
        ("Unpack", 1),
        ("ConcatV2", 3),
        ("Slice", 3),
        ("Tile", 2),
        ("GatherV2", 3),
        ("AddN", 2),
        ("FloorMod", 2),
        ("BroadcastGradientArgs", 2),
        ("BiasAdd", 2),
        ("BiasAddGrad", 1),
        ("ReluGrad", 2),
        ("LogSoftmax", 1),
        ("SoftmaxCrossEntropyWithLogits", 2),
        ("Reshape", 2),
        ("Fill", 2),
        ("Sum", 2),
        ("Mean", 2),
        ("Prod", 2),
        ("Prod", 1),
        ("Maximum", 2),
        ("Minimum", 2),
        ("Log", 1),
        ("Tanh", 1),
        ("Sigmoid", 1),
        ("TanhGrad", 2),
        ("SigmoidGrad", 2),
        ("Softmax", 1),
        ("Size", 1),
        ("Rank", 1),
        ("Transpose", 2),
        ("StopGradient", 1),
        ("OnesLike", 1),
    ];
    let inputs = hostile_inputs();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut pick = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % inputs.len() as u64) as usize
    };
    let mut ran = 0;
    for &(op, arity) in ops {
        for attrs in attrs_of(op) {
            for _ in 0..60 {
                let chosen: Vec<usize> = (0..arity).map(|_| pick()).collect();
                let mut def = GraphDef::default();
                let mut names = Vec::new();
                for (k, &i) in chosen.iter().enumerate() {
                    names.push(format!("in{k}"));
                    def.nodes.push(const_node(&names[k], inputs[i].clone()));
                }
                let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                def.nodes.push(node("y", op, &refs, "", attrs.clone()));
                // Refused at import (dtypes, known shapes) is fine; so is an error at run.
                let Ok(graph) = Graph::import_tensorflow(&def) else {
                    continue;
                };
                let y = graph.node_by_name("y").unwrap().output(0);
                let session = magpie::local_session(&graph).unwrap();
                if let Err(e) = session.run(&[], &[y], &[]) {
                    let text = e.to_string();
                    assert!(
                        !matches!(e, magpie::SessionError::Panicked { .. }),
                        "{op} on {:?} panicked: {text}",
                        chosen.iter().map(|&i| &inputs[i]).collect::<Vec<_>>()
                    );
                }
                ran += 1;
            }
        }
    }
    assert!(ran > 300, "only {ran} graphs got past import");
}

/// The MLP fixture's GraphDef with every node pinned to `device`, its feeds and fetches.
fn mlp_on(device: &str) -> (Graph, Vec<(Output, Tensor)>, Vec<Output>) {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/tf_mlp.json")).expect("the fixture parses");
    let mut def = GraphDef::default();
    for n in fixture["nodes"].as_array().expect("nodes") {
        let mut node = node_def(n);
        node.device = device.to_string();
        if node.op == "Const" {
            node.attrs.retain(|(k, _)| k != "value");
            node.attrs
                .push(("value".into(), AttrValue::Tensor(tensor(&n["value"]))));
        }
        def.nodes.push(node);
    }
    let graph = Graph::import_tensorflow(&def).expect("TensorFlow's MLP GraphDef imports");
    let output = |name: &str| -> Output {
        let (node, k) = name.rsplit_once(':').expect("a tensor name");
        graph
            .node_by_name(node)
            .unwrap_or_else(|| panic!("no node {node}"))
            .output(k.parse().expect("an output index"))
    };
    let feeds = fixture["feeds"]
        .as_object()
        .expect("feeds")
        .iter()
        .map(|(k, v)| (output(k), tensor(v)))
        .collect();
    let fetches = fixture["fetches"]
        .as_array()
        .expect("fetches")
        .iter()
        .map(|f| output(f.as_str().expect("a fetch")))
        .collect();
    (graph, feeds, fetches)
}

/// The MLP's forward and backward step with every node on the Vulkan GPU (lavapipe in
/// CI): f32 math in shaders, the i32 shape arithmetic as the GPU device's host-memory
/// kernels (as TensorFlow's GPU device runs it). No node falls back to the CPU: the
/// trace names the GPU for every node, the nodes that ran are those a CPU run runs, and
/// the only copies are the two feeds in and the five fetches out. The loss and gradients match the CPU's run within float rounding.
#[test]
fn the_mlp_forward_and_backward_graph_runs_wholly_on_the_gpu() {
    use magpie::{RunOptions, Session};
    if let Some(why) = magpie::gpu_status() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let options = magpie::local_options();
    let gpu = options
        .devices
        .iter()
        .find(|d| d.device_type() == "GPU")
        .expect("a GPU")
        .clone();
    let (graph, feeds, fetches) = mlp_on("/device:GPU:0");
    let session = Session::new(&graph, options).expect("a session");
    let run = RunOptions {
        trace: true,
        ..RunOptions::default()
    };
    let out = session
        .run_with_options(&run, &feeds, &fetches, &[])
        .expect("the step runs on the GPU");
    let gpu_name = gpu.name().to_string();
    assert!(!out.metadata.nodes.is_empty());
    for n in &out.metadata.nodes {
        assert_eq!(n.device, gpu_name, "{} ({}) ran off the GPU", n.node, n.op);
    }
    assert_eq!(
        out.metadata.copies,
        2 + 5,
        "feeds in, fetches out, nothing else"
    );

    let (cpu_graph, cpu_feeds, cpu_fetches) = mlp_on("/device:CPU:0");
    let cpu_out = magpie::local_session(&cpu_graph)
        .expect("a CPU session")
        .run_with_options(&run, &cpu_feeds, &cpu_fetches, &[])
        .expect("the step runs on the CPU");
    // The same nodes ran (the copies aside), each on the GPU.
    let ran = |nodes: &[magpie::exec::NodeStats]| {
        let mut names: Vec<String> = nodes
            .iter()
            .filter(|n| !n.op.starts_with("_Copy"))
            .map(|n| n.node.clone())
            .collect();
        names.sort();
        names
    };
    assert_eq!(ran(&out.metadata.nodes), ran(&cpu_out.metadata.nodes));
    assert!(ran(&out.metadata.nodes).len() > 60);
    let want = cpu_out.tensors;
    for (k, (got, want)) in out.tensors.iter().zip(&want).enumerate() {
        assert_eq!(got.dims(), want.dims(), "fetch {k}");
        let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
        for (i, (g, w)) in g.iter().zip(&w).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "fetch {k} element {i}: GPU {g}, CPU {w}"
            );
        }
    }

    // The whole forward and backward pass with the loss and gradients as targets (as a
    // training step runs them, feeding optimizers) is one queue submission, at the
    // step's end: the host-memory kernels between the shaders add none (the batch may
    // linger as long as it likes). (Every fetch is a download, which submits; and with
    // the default linger of 500 µs a slow step also submits what lingered, so the first
    // step's count depends on the machine's load and is not checked.)
    let submissions = |m: &magpie::RunMetadata| -> u64 {
        m.device_counters
            .iter()
            .filter(|c| c.name == "submissions")
            .map(|c| c.delta)
            .sum()
    };
    let vulkan = gpu
        .as_any()
        .downcast_ref::<magpie::vulkan::VulkanDevice>()
        .expect("a Vulkan device");
    vulkan.set_batch_linger(std::time::Duration::from_secs(3600));
    let targets: Vec<_> = fetches.iter().map(|f| f.node).collect();
    for _ in 0..3 {
        let o = session
            .run_with_options(&RunOptions::default(), &feeds, &[], &targets)
            .expect("the training step runs");
        assert_eq!(
            submissions(&o.metadata),
            1,
            "{:?}",
            o.metadata.device_counters
        );
        assert_eq!(o.metadata.copies, 2, "the feeds in, nothing out");
    }
    let loss = session
        .run_with_options(&RunOptions::default(), &feeds, &fetches[..1], &[])
        .expect("the loss step runs");
    assert_close(&loss.tensors[0], &want[0]);
    vulkan.set_batch_linger(std::time::Duration::from_micros(500));
}

fn assert_close(got: &Tensor, want: &Tensor) {
    let (g, w) = (got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    assert_eq!(g.len(), w.len());
    for (g, w) in g.iter().zip(&w) {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "GPU {g}, CPU {w}");
    }
}
