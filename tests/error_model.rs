//! One error model on every door: a table of mistakes, each made on a local session, on
//! an in-process master (`inmem://`) and on a master over gRPC (`grpc://`), gives the same
//! [`Code`] on all three and a message naming the same nodes of the client's graph (never
//! the partitions' internal `_magpie/...` names); every session keeps serving after each
//! mistake, and `run_async` gives the same code naming the same nodes. Also: closing and dropping sessions, unknown session handles, kernel errors
//! crossing tasks, and handles of another graph.

use std::sync::{LazyLock, Once};

use magpie::cluster::{loopback_cluster, task_server_options, GrpcCluster};
use magpie::core::error::SESSION_CLOSED;
use magpie::core::Code;
use magpie::graph::{register_op, Arity, OpDef};
use magpie::inmem::{InMemNetwork, InMemServer};
use magpie::kernel::{BoxedKernel, Kernel, KernelContext, KernelError};
use magpie::registry::register_kernel;
use magpie::transport::TaskName;
use magpie::{ClientError, ClientSession, DType, Graph, NodeId, Output, Tensor};

/// The servers every test reaches: an in-process cluster on the global network and a
/// gRPC cluster on loopback ports, each with a `ps` task and two `worker` tasks.
struct Clusters {
    inmem: Vec<InMemServer>,
    grpc: GrpcCluster,
}

static CLUSTERS: LazyLock<Clusters> = LazyLock::new(|| {
    let spec = magpie::cluster::Spec::builder()
        .job("ps", ["error-model.invalid:1"])
        .job("worker", ["error-model.invalid:2", "error-model.invalid:3"])
        .build()
        .unwrap();
    let inmem = spec
        .tasks()
        .into_iter()
        .map(|t| {
            InMemServer::start(
                &InMemNetwork::global(),
                &spec,
                &t.job,
                t.index,
                &task_server_options(&t),
            )
            .unwrap()
        })
        .collect();
    let grpc = GrpcCluster::start(&loopback_cluster().unwrap()).unwrap();
    Clusters { inmem, grpc }
});

/// The three targets: local, in-process, gRPC (each master is `/job:ps/task:0`).
fn targets() -> [(&'static str, String); 3] {
    let c = &*CLUSTERS;
    let ps = TaskName::new("ps", 0);
    let inmem = c
        .inmem
        .iter()
        .find(|s| *s.core().task() == ps)
        .unwrap()
        .target();
    [
        ("local", String::new()),
        ("inmem", inmem),
        ("grpc", c.grpc.target("ps", 0).unwrap()),
    ]
}

/// A kernel from a closure.
struct FnKernel<F>(F);

impl<F> Kernel for FnKernel<F>
where
    F: Fn(&mut KernelContext<'_>) -> Result<(), KernelError> + Send + Sync,
{
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        (self.0)(ctx)
    }
}

fn sync(
    f: impl Fn(&mut KernelContext<'_>) -> Result<(), KernelError> + Send + Sync + 'static,
) -> BoxedKernel {
    BoxedKernel::Sync(Box::new(FnKernel(f)))
}

/// Custom ops whose CPU kernels fail in each way a kernel can.
fn register_failing_ops() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let f32_out = |_: &[DType], _: &magpie::graph::Attrs| Ok(vec![DType::F32]);
        for op in [
            "ErrorModelNoKernel",
            "ErrorModelUnimplemented",
            "ErrorModelOom",
            "ErrorModelPanic",
            "ErrorModelBadArg",
        ] {
            register_op(OpDef::new(op, Arity::Exact(0), f32_out)).unwrap();
        }
        register_kernel("ErrorModelUnimplemented", "CPU", |init| {
            Err(KernelError::Unimplemented {
                op: init.node.op.to_string(),
                dtype: DType::Bool,
                device_type: "CPU".into(),
            })
        })
        .unwrap();
        register_kernel("ErrorModelOom", "CPU", |_| {
            Ok(sync(|_| {
                Err(KernelError::ResourceExhausted(
                    "cannot allocate 1099511627776 bytes".into(),
                ))
            }))
        })
        .unwrap();
        register_kernel("ErrorModelPanic", "CPU", |_| {
            Ok(sync(|ctx| panic!("kernel of {} gave up", ctx.node().name)))
        })
        .unwrap();
        register_kernel("ErrorModelBadArg", "CPU", |_| {
            Ok(sync(|_| {
                Err(KernelError::InvalidArgument(
                    "the input is not acceptable".into(),
                ))
            }))
        })
        .unwrap();
    });
}

fn f32s(dims: &[usize]) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(dims, vec![1.0f32; n]).unwrap()
}

/// A step's feeds, fetches and targets.
type Step = (Vec<(Output, Tensor)>, Vec<Output>, Vec<NodeId>);

/// One mistake: what it is, the code every kind must give, the client's nodes the message
/// must name, and the step that makes it.
struct Mistake {
    what: &'static str,
    code: Code,
    names: &'static [&'static str],
    step: Step,
}

fn mistake(what: &'static str, code: Code, names: &'static [&'static str], step: Step) -> Mistake {
    Mistake {
        what,
        code,
        names,
        step,
    }
}

/// The graph every kind runs, with the nodes the mistakes need, and the mistakes.
fn graph_and_mistakes(other: &Graph) -> (Graph, Output, Vec<Mistake>) {
    register_failing_ops();
    let g = Graph::new();
    let x = g.with_name("x_f32").placeholder(DType::F32, None).unwrap();
    let x_neg = g.with_name("x_neg").neg(x).unwrap();
    let v = g
        .with_name("x_vec2")
        .placeholder(DType::F32, Some(&magpie::Shape::new(&[2]).unwrap()))
        .unwrap();
    let v_neg = g.with_name("v_neg").neg(v).unwrap();
    let c = g.with_name("c_const").constant(2.0f32).unwrap();
    let c_neg = g.with_name("c_neg").neg(c).unwrap();
    let noop = g.with_name("n_noop").no_op().unwrap();
    let gpu = g
        .device("/device:GPU:7", |g| g.with_name("on_gpu7").constant(1.0f32))
        .unwrap();
    let job = g
        .device("/job:nowhere", |g| {
            g.with_name("on_nowhere").constant(1.0f32)
        })
        .unwrap();
    // Placeholders of unknown shape: shape mistakes surface when the step runs.
    let a = g.with_name("a_any").placeholder(DType::F32, None).unwrap();
    let b = g.with_name("b_any").placeholder(DType::F32, None).unwrap();
    let mm = g.with_name("mm").matmul(a, b).unwrap();
    let sum = g.with_name("bad_add").add(a, b).unwrap();
    let reshape = g.with_name("bad_reshape").reshape(a, &[5]).unwrap();
    let reduce = g.with_name("bad_sum").sum(a, Some(5), false).unwrap();
    let custom = |op: &str, name: &str| g.op(op).name(name).build_output().unwrap();
    let no_kernel = custom("ErrorModelNoKernel", "no_kernel");
    let unimpl = custom("ErrorModelUnimplemented", "unimpl");
    let oom = custom("ErrorModelOom", "oom");
    let panicky = custom("ErrorModelPanic", "panicky");
    let bad_arg = custom("ErrorModelBadArg", "bad_arg");
    // A node of another graph at the position of a node of this one.
    while other.len() < c.node.index() {
        other.no_op().unwrap();
    }
    let theirs = other.with_name("theirs").constant(1.0f32).unwrap();
    assert_eq!(theirs.node.index(), c.node.index());

    let ia = Code::InvalidArgument;
    let m = vec![
        mistake(
            "feed of the wrong dtype",
            ia,
            &["x_f32"],
            (vec![(x, Tensor::scalar(1.0f64))], vec![x_neg], vec![]),
        ),
        mistake(
            "feed of the wrong shape",
            ia,
            &["x_vec2"],
            (vec![(v, f32s(&[3]))], vec![v_neg], vec![]),
        ),
        mistake(
            "feed of the wrong rank",
            ia,
            &["x_vec2"],
            (vec![(v, f32s(&[2, 1]))], vec![v_neg], vec![]),
        ),
        mistake(
            "missing feed of a fetch",
            ia,
            &["x_f32"],
            (vec![], vec![x_neg], vec![]),
        ),
        mistake(
            "missing feed of a target",
            ia,
            &["x_f32"],
            (vec![], vec![], vec![x_neg.node]),
        ),
        mistake(
            "fetch of an output the node lacks",
            ia,
            &["c_const"],
            (vec![], vec![c.node.output(3)], vec![]),
        ),
        mistake(
            "fetch of a node with no outputs",
            ia,
            &["n_noop"],
            (vec![], vec![noop.output(0)], vec![]),
        ),
        mistake(
            "feed of an output the node lacks",
            ia,
            &["x_f32"],
            (vec![(x.node.output(1), f32s(&[1]))], vec![x_neg], vec![]),
        ),
        mistake(
            "the same output fed twice",
            ia,
            &["x_f32"],
            (vec![(x, f32s(&[1])), (x, f32s(&[1]))], vec![x_neg], vec![]),
        ),
        mistake(
            "feed of the wrong dtype to a constant",
            ia,
            &["c_const"],
            (vec![(c, Tensor::scalar(1i32))], vec![c_neg], vec![]),
        ),
        mistake(
            "fetch of another graph's node",
            ia,
            &["theirs"],
            (vec![], vec![theirs], vec![]),
        ),
        mistake(
            "feed of another graph's node",
            ia,
            &["theirs"],
            (vec![(theirs, Tensor::scalar(1.0f32))], vec![c_neg], vec![]),
        ),
        mistake(
            "target of another graph's node",
            ia,
            &["theirs"],
            (vec![], vec![], vec![theirs.node]),
        ),
        mistake(
            "another graph's node among good fetches",
            ia,
            &["theirs"],
            (vec![], vec![c, theirs], vec![]),
        ),
        mistake(
            "a device no task has",
            ia,
            &["on_gpu7"],
            (vec![], vec![gpu], vec![]),
        ),
        mistake(
            "a job the cluster lacks",
            ia,
            &["on_nowhere"],
            (vec![], vec![job], vec![]),
        ),
        mistake(
            "matmul of shapes that do not match",
            ia,
            &["mm"],
            (
                vec![(a, f32s(&[1, 2])), (b, f32s(&[3, 1]))],
                vec![mm],
                vec![],
            ),
        ),
        mistake(
            "add of shapes that do not broadcast",
            ia,
            &["bad_add"],
            (vec![(a, f32s(&[2])), (b, f32s(&[3]))], vec![sum], vec![]),
        ),
        mistake(
            "reshape to another element count",
            ia,
            &["bad_reshape"],
            (vec![(a, f32s(&[2, 2]))], vec![reshape], vec![]),
        ),
        mistake(
            "sum over an axis the input lacks",
            ia,
            &["bad_sum"],
            (vec![(a, f32s(&[2]))], vec![reduce], vec![]),
        ),
        mistake(
            "a kernel's invalid argument",
            ia,
            &["bad_arg"],
            (vec![], vec![bad_arg], vec![]),
        ),
        mistake(
            "an op with no kernel",
            ia,
            &["no_kernel"],
            (vec![], vec![no_kernel], vec![]),
        ),
        mistake(
            "a kernel without the dtype",
            Code::Unimplemented,
            &["unimpl"],
            (vec![], vec![unimpl], vec![]),
        ),
        mistake(
            "a kernel out of memory",
            Code::ResourceExhausted,
            &["oom"],
            (vec![], vec![oom], vec![]),
        ),
        mistake(
            "a panicking kernel",
            Code::Internal,
            &["panicky"],
            (vec![], vec![panicky], vec![]),
        ),
    ];
    (g, c_neg, m)
}

#[test]
fn every_mistake_gives_the_same_code_and_names_the_same_nodes_on_every_session_kind() {
    let other = Graph::new();
    let (g, good, mistakes) = graph_and_mistakes(&other);
    assert!(mistakes.len() >= 20);
    let sessions: Vec<(&str, ClientSession)> = targets()
        .into_iter()
        .map(|(kind, target)| (kind, ClientSession::connect(&target, &g).unwrap()))
        .collect();
    let mut failures = Vec::new();
    for m in &mistakes {
        let (feeds, fetches, targets) = &m.step;
        let mut messages = Vec::new();
        for (kind, s) in &sessions {
            let e = match s.run(feeds, fetches, targets) {
                Ok(_) => {
                    failures.push(format!("{}: {kind} ran the step", m.what));
                    continue;
                }
                Err(e) => e,
            };
            let msg = e.message();
            if e.code() != m.code {
                failures.push(format!(
                    "{}: {kind} gave {} instead of {}: {msg}",
                    m.what,
                    e.code(),
                    m.code
                ));
            }
            for name in m.names {
                if !msg.contains(&format!("\"{name}")) {
                    failures.push(format!("{}: {kind} does not name {name:?}: {msg}", m.what));
                }
            }
            if msg.contains("_magpie") {
                failures.push(format!("{}: {kind} names an internal node: {msg}", m.what));
            }
            messages.push(format!("  {kind}: {msg}"));
            // The async path gives the same kind of error, naming the same nodes.
            match futures::executor::block_on(s.run_async(feeds, fetches, targets)) {
                Ok(_) => failures.push(format!("{}: {kind} ran the step async", m.what)),
                Err(ea) => {
                    let async_msg = ea.message();
                    if ea.code() != m.code
                        || m.names
                            .iter()
                            .any(|name| !async_msg.contains(&format!("\"{name}")))
                    {
                        failures.push(format!(
                            "{}: {kind} async gave {}: {async_msg}",
                            m.what,
                            ea.code()
                        ));
                    }
                }
            }
            // The session keeps serving.
            let out = s.run(&[], &[good], &[]).unwrap();
            assert_eq!(
                f32::try_from(&out[0]).unwrap(),
                -2.0,
                "{kind} after {}",
                m.what
            );
        }
        println!("{} ({}):\n{}", m.what, m.code, messages.join("\n"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_run_on_a_closed_session_fails_the_same_way_on_every_kind() {
    let g = Graph::new();
    let x = g.with_name("x").constant(3.0f32).unwrap();
    for (kind, target) in targets() {
        let s = ClientSession::connect(&target, &g).unwrap();
        assert_eq!(
            f32::try_from(&s.run(&[], &[x], &[]).unwrap()[0]).unwrap(),
            3.0
        );
        s.close().unwrap();
        for _ in 0..2 {
            let e = s.run(&[], &[x], &[]).unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{kind}: {e:?}");
            assert_eq!(e.message(), SESSION_CLOSED, "{kind}: {e:?}");
            assert_eq!(e.to_string(), SESSION_CLOSED, "{kind}: {e:?}");
        }
        // Closing twice is harmless; other sessions over the graph still run.
        s.close().unwrap();
        let again = ClientSession::connect(&target, &g).unwrap();
        assert_eq!(
            f32::try_from(&again.run(&[], &[x], &[]).unwrap()[0]).unwrap(),
            3.0
        );
    }
}

/// A graph with a step over every task of a cluster (`/job:ps`, `/job:worker`).
fn spread_graph() -> (Graph, Output) {
    let g = Graph::new();
    let w = g
        .device("/job:worker/task:1", |g| g.with_name("w").constant(2.0f32))
        .unwrap();
    let p = g
        .device("/job:ps/task:0", |g| g.with_name("p").neg(w))
        .unwrap();
    (g, p)
}

#[test]
fn closing_or_dropping_an_inmem_session_releases_its_partitions_on_every_task() {
    // A cluster of its own, so no other test's sessions change the counts.
    let spec = magpie::cluster::Spec::builder()
        .job("ps", ["error-model-close.invalid:1"])
        .job(
            "worker",
            ["error-model-close.invalid:2", "error-model-close.invalid:3"],
        )
        .build()
        .unwrap();
    let servers: Vec<InMemServer> = spec
        .tasks()
        .into_iter()
        .map(|t| {
            InMemServer::start(
                &InMemNetwork::global(),
                &spec,
                &t.job,
                t.index,
                &task_server_options(&t),
            )
            .unwrap()
        })
        .collect();
    let partitions = || -> Vec<usize> {
        servers
            .iter()
            .map(|s| s.core().worker().stats().partitions)
            .collect()
    };
    let (g, p) = spread_graph();
    let target = servers[0].target();
    assert_eq!(*servers[0].core().task(), TaskName::new("ps", 0));
    let s = ClientSession::connect(&target, &g).unwrap();
    s.run(&[], &[p], &[]).unwrap();
    // The step ran on ps:0 and worker:1.
    assert_eq!(partitions(), [1, 0, 1]);
    s.close().unwrap();
    assert_eq!(partitions(), [0, 0, 0]);
    assert_eq!(
        s.run(&[], &[p], &[]).unwrap_err().code(),
        Code::FailedPrecondition
    );
    assert_eq!(partitions(), [0, 0, 0]);

    let s = ClientSession::connect(&target, &g).unwrap();
    s.run(&[], &[p], &[]).unwrap();
    assert_eq!(partitions(), [1, 0, 1]);
    drop(s);
    assert_eq!(partitions(), [0, 0, 0]);
    for server in &servers {
        server.stop(std::time::Duration::from_secs(1));
    }
}

/// The handle of a gRPC session.
fn handle_of(s: &ClientSession) -> String {
    match s {
        ClientSession::Grpc(remote) => remote.handle().to_string(),
        other => panic!("not a gRPC session: {other:?}"),
    }
}

/// Whether the gRPC master at `target` still knows the session `handle`.
fn master_knows(target: &str, handle: &str) -> bool {
    match raw_run_step(target, handle) {
        Some(e) if e.code() == Code::NotFound => {
            assert!(e.message().contains(handle), "{e:?}");
            false
        }
        Some(e) => panic!("an empty step on {handle} failed: {e:?}"),
        None => true,
    }
}

#[test]
fn closing_or_dropping_a_grpc_session_closes_it_on_the_master() {
    let (g, p) = spread_graph();
    let target = targets()[2].1.clone();
    let s = ClientSession::connect(&target, &g).unwrap();
    s.run(&[], &[p], &[]).unwrap();
    let handle = handle_of(&s);
    assert!(master_knows(&target, &handle));
    s.close().unwrap();
    // A client naming the closed session's handle gets NOT_FOUND, naming the handle.
    assert!(!master_knows(&target, &handle));

    let s = ClientSession::connect(&target, &g).unwrap();
    s.run(&[], &[p], &[]).unwrap();
    let handle = handle_of(&s);
    assert!(master_knows(&target, &handle));
    drop(s);
    assert!(!master_knows(&target, &handle));
}

#[test]
fn dropping_a_grpc_session_inside_an_async_context_closes_it() {
    let (g, p) = spread_graph();
    let target = targets()[2].1.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let s = ClientSession::connect(&target, &g).unwrap();
    s.run(&[], &[p], &[]).unwrap();
    let handle = handle_of(&s);
    // Dropped on a runtime worker, where nothing may block: no panic, and the session
    // is closed (from a thread of its own, so within a moment).
    rt.block_on(async move { drop(s) });
    // A hang guard only, generous for a loaded machine: the close takes a moment.
    magpie_scheduler::test_support::eventually(&format!("{handle} closed"), || {
        !master_knows(&target, &handle)
    });
}

/// An empty RunStep for `handle` from a raw client: the error the master answers with,
/// if any.
fn raw_run_step(target: &str, handle: &str) -> Option<magpie::grpc::GrpcError> {
    use magpie::grpc::proto::master_service_client::MasterServiceClient;
    use magpie::grpc::proto::RunStepRequest;
    let address = target.strip_prefix("grpc://").unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async move {
        let mut c = MasterServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        c.run_step(RunStepRequest {
            session_handle: handle.to_string(),
            ..RunStepRequest::default()
        })
        .await
        .err()
    })?;
    Some(magpie::grpc::GrpcError::Status {
        target: target.to_string(),
        code: status.code(),
        message: status.message().to_string(),
    })
}

#[test]
fn a_kernel_error_on_another_task_keeps_its_code_across_tasks() {
    register_failing_ops();
    let g = Graph::new();
    let bad = g
        .device("/job:worker/task:1", |g| {
            g.op("ErrorModelBadArg").name("far_bad").build_output()
        })
        .unwrap();
    let oom = g
        .device("/job:worker/task:0", |g| {
            g.op("ErrorModelOom").name("far_oom").build_output()
        })
        .unwrap();
    let p = g
        .device("/job:ps/task:0", |g| g.with_name("near").neg(bad))
        .unwrap();
    let q = g
        .device("/job:ps/task:0", |g| g.with_name("near_oom").neg(oom))
        .unwrap();
    for (kind, target) in &targets()[1..] {
        let s = ClientSession::connect(target, &g).unwrap();
        let e = s.run(&[], &[p], &[]).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{kind}: {e:?}");
        assert!(e.message().contains("\"far_bad\""), "{kind}: {e:?}");
        assert!(e.message().contains("/job:worker"), "{kind}: {e:?}");
        let e = s.run(&[], &[q], &[]).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{kind}: {e:?}");
        assert!(e.message().contains("\"far_oom\""), "{kind}: {e:?}");
    }
}

#[test]
fn building_with_another_graphs_node_fails_before_any_session_sees_it() {
    let g = Graph::new();
    let other = Graph::new();
    let theirs = other.with_name("theirs").constant(1.0f32).unwrap();
    let err = g.with_name("y").neg(theirs).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.to_string()
            .starts_with("input 0 of node \"y\" refers to node \"theirs\" of another graph"),
        "{err}"
    );
    assert!(g.is_empty());
    let err = ClientError::from(magpie::SessionError::from(err));
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[test]
fn error_messages_over_grpc_are_capped() {
    // A node name of 1 MiB, echoed by the error of a mistake: the status still fits in
    // HTTP/2's headers, and the client gets the error, its code and the start of the name.
    let g = Graph::new();
    let name = "n".repeat(1 << 20);
    let x = g.with_name(&name).placeholder(DType::F32, None).unwrap();
    let y = g.with_name("y").neg(x).unwrap();
    let target = &targets()[2].1;
    let s = ClientSession::connect(target, &g).unwrap();
    let e = s.run(&[], &[y], &[]).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message().len());
    let msg = e.message();
    assert!(
        msg.len() <= magpie::core::error::MAX_MESSAGE_BYTES + 64,
        "{}",
        msg.len()
    );
    assert!(
        msg.contains("nnnn") && msg.ends_with("bytes elided)"),
        "{}",
        &msg[..200]
    );
    assert_eq!(
        f32::try_from(&s.run(&[(x, Tensor::scalar(1.0f32))], &[y], &[]).unwrap()[0]).unwrap(),
        -1.0
    );
    // A fetch by a name of 1 MiB that names no node: the master's own error echoes it.
    let remote = magpie::grpc::connect(target, &g).unwrap();
    let fetch = format!("{}:0", "q".repeat(1 << 20));
    let e = remote.run_named(&[], &[&fetch], &[], None).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message().len());
    assert!(e.message().len() <= magpie::core::error::MAX_MESSAGE_BYTES + 64);
    assert!(
        e.message().starts_with("fetch \"qqqq"),
        "{}",
        &e.message()[..100]
    );
}

#[test]
fn a_graph_with_an_unknown_op_is_refused_alike_by_an_import_and_by_a_remote_master() {
    use magpie::graph::{GraphDef, NodeDef};
    use magpie::grpc::proto::master_service_client::MasterServiceClient;
    use magpie::grpc::proto::CreateSessionRequest;
    let def = GraphDef {
        nodes: vec![NodeDef {
            name: "frob".into(),
            op: "Frobnicate".into(),
            ..NodeDef::default()
        }],
    };
    let local = Graph::import(&def).unwrap_err();
    assert_eq!(local.code(), Code::InvalidArgument);
    assert_eq!(
        local.to_string(),
        "node \"frob\": unknown op \"Frobnicate\""
    );

    let target = targets()[2].1.clone();
    let address = target.strip_prefix("grpc://").unwrap().to_string();
    let wire = magpie::grpc::conv::graph_to_wire(&def).unwrap();
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let mut c = MasterServiceClient::connect(format!("http://{address}"))
                .await
                .unwrap();
            c.create_session(CreateSessionRequest {
                graph: Some(wire),
                ..Default::default()
            })
            .await
            .unwrap_err()
        });
    assert_eq!(status.code(), magpie::grpc::tonic::Code::InvalidArgument);
    assert!(status.message().contains(&local.to_string()), "{status:?}");
}

#[test]
fn a_target_nobody_serves_is_unavailable_on_every_remote_kind() {
    let g = Graph::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for target in [
        "inmem://nobody.invalid:1".to_string(),
        format!("grpc://127.0.0.1:{port}"),
    ] {
        let e = ClientSession::connect(&target, &g).unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{target}: {e:?}");
    }
    let e = ClientSession::connect("http://127.0.0.1:1", &g).unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}
