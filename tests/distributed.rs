//! The distributed runtime on in-process clusters: placement, partitioning (Send/Recv
//! and control carriers), registration reuse, fetch order, variables, faults, and
//! zero-copy transfers over the in-memory transport.

use std::time::Duration;

use magpie::cluster::{default_cluster, task_server_options, InProcessCluster};
use magpie::distributed::ops::{RECV_AFTER_FIRST_STAGE_ATTR, RECV_BEFORE_STEP_ATTR, RECV_OP};
use magpie::distributed::partition::partition;
use magpie::distributed::MasterError;
use magpie::graph::AttrValue;
use magpie::transport::{TaskName, TransportError};
use magpie::{DType, Graph, Tensor};

fn cluster() -> InProcessCluster {
    InProcessCluster::start(&default_cluster()).expect("cluster starts")
}

fn scalar(t: &Tensor) -> f32 {
    f32::try_from(t).unwrap()
}

#[test]
fn remote_session_runs_unpinned_ops_on_the_masters_default_device() {
    let c = cluster();
    let g = Graph::new();
    let a = g.with_name("a").constant(1.0f32).unwrap();
    let b = g
        .with_name("b")
        .add(a, g.constant(2.0f32).unwrap())
        .unwrap();
    let cc = g
        .with_name("c")
        .mul(b, g.constant(3.0f32).unwrap())
        .unwrap();
    let s = c.session("worker", 1, &g).unwrap();
    let out = s
        .run_with_options(&Default::default(), &[], &[cc], &[])
        .unwrap();
    assert_eq!(scalar(&out.tensors[0]), 9.0);
    assert!(out
        .placement
        .iter()
        .all(|p| &*p.device == "/job:worker/replica:0/task:1/device:CPU:0"));
    assert_eq!(out.tasks, vec![TaskName::new("worker", 1)]);
}

#[test]
fn ops_spread_over_three_tasks_with_fetches_in_order() {
    let c = cluster();
    let g = Graph::new();
    let w = g
        .with_device("/job:ps/task:0")
        .unwrap()
        .with_name("w")
        .constant(2.0f32)
        .unwrap();
    let x = g
        .with_device("/job:worker/task:0")
        .unwrap()
        .with_name("x")
        .mul(
            w,
            g.with_device("/job:worker/task:0")
                .unwrap()
                .constant(5.0f32)
                .unwrap(),
        )
        .unwrap();
    let y = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .with_name("y")
        .add(x, w)
        .unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    let out = s.run(&[], &[y, w, x, y], &[]).unwrap();
    let v: Vec<f32> = out.iter().map(scalar).collect();
    assert_eq!(v, [12.0, 2.0, 10.0, 12.0]);
}

#[test]
fn send_recv_pairs_only_across_tasks_and_control_carriers() {
    let c = cluster();
    let g = Graph::new();
    let ps = g.with_device("/job:ps/task:0").unwrap();
    let w0 = g.with_device("/job:worker/task:0").unwrap();
    let a = ps.with_name("a").constant(1.0f32).unwrap();
    let b = ps.with_name("b").neg(a).unwrap(); // same task: no pair
    let d = w0.with_name("d").square(b).unwrap(); // ps -> worker:0: one pair
    let e = w0.with_name("e").add(d, b).unwrap(); // b again: the pair is shared
    let marker = ps.with_name("marker").no_op().unwrap();
    let f = w0
        .with_control_dependencies([marker])
        .with_name("f")
        .identity(e)
        .unwrap(); // control edge ps -> worker:0: a carrier
    let s = c.session("worker", 0, &g).unwrap();
    let devices = s.devices().to_vec();
    let p = partition(&g, &[], &[f], &[], &devices, &TaskName::new("worker", 0)).unwrap();
    assert_eq!(p.partitions.len(), 2);
    let ps_part = &p.partitions[&TaskName::new("ps", 0)];
    let w_part = &p.partitions[&TaskName::new("worker", 0)];
    assert_eq!(
        ps_part.sends, 2,
        "one data pair (b) and one control carrier"
    );
    assert_eq!(ps_part.recvs, 0);
    assert_eq!(w_part.recvs, 2);
    assert_eq!(w_part.sends, 0);
    let f_def = w_part.graph.nodes.iter().find(|n| n.name == "f").unwrap();
    assert!(
        f_def.inputs.iter().any(|i| i.starts_with("^_magpie/recv/")),
        "{f_def:?}"
    );
    // A graph on one task needs no pair at all.
    let local = g
        .with_device("/job:worker/task:0")
        .unwrap()
        .square(d)
        .unwrap();
    let p1 = partition(
        &g,
        &[],
        &[local],
        &[],
        &devices,
        &TaskName::new("worker", 0),
    );
    assert!(p1.is_ok());
    assert_eq!(scalar(&s.run(&[], &[f], &[]).unwrap()[0]), 0.0);
}

/// How `task`'s partition receives: `Some(0)` when every `_Recv` is awaited before its
/// step, `Some(n)` when `n` of them are awaited after its first stage (the rest before
/// the step), `None` when it receives during its step.
fn receive_stages(p: &magpie::distributed::partition::Partitioning, task: &str) -> Option<usize> {
    let (job, index) = task.split_once(':').unwrap();
    let part = &p.partitions[&TaskName::new(job, index.parse().unwrap())];
    let recvs: Vec<_> = part
        .graph
        .nodes
        .iter()
        .filter(|n| n.op == RECV_OP)
        .collect();
    assert!(!recvs.is_empty(), "{task} receives nothing");
    let marked = |n: &magpie::graph::NodeDef, attr: &str| {
        n.attrs
            .iter()
            .any(|(k, v)| k == attr && *v == AttrValue::Bool(true))
    };
    let before = recvs
        .iter()
        .filter(|n| marked(n, RECV_BEFORE_STEP_ATTR))
        .count();
    let after = recvs
        .iter()
        .filter(|n| marked(n, RECV_AFTER_FIRST_STAGE_ATTR))
        .count();
    assert!(
        before + after == recvs.len() || before + after == 0,
        "every receive marked, or none: {recvs:?}"
    );
    (before + after > 0).then_some(after)
}

/// Partition steps run in two stages so far on `job:index`.
fn staged_steps(c: &InProcessCluster, job: &str, index: u32) -> u64 {
    c.server(job, index)
        .unwrap()
        .core()
        .worker()
        .stats()
        .staged_steps
}

#[test]
fn receives_are_awaited_before_the_step_unless_a_path_returns_to_their_task() {
    let c = cluster();
    let g = Graph::new();
    let ps = g.with_device("/job:ps/task:0").unwrap();
    let w0 = g.with_device("/job:worker/task:0").unwrap();
    let w1 = g.with_device("/job:worker/task:1").unwrap();
    // ps -> worker 0 -> worker 1, and ps -> worker 1: no path comes back.
    let w = ps.constant(2.0f32).unwrap();
    let x = w0.mul(w, w0.constant(5.0f32).unwrap()).unwrap();
    let y = w1.add(x, w).unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    let devices = s.devices().to_vec();
    let master = TaskName::new("worker", 0);
    let p = partition(&g, &[], &[y], &[], &devices, &master).unwrap();
    assert_eq!(receive_stages(&p, "worker:0"), Some(0));
    assert_eq!(receive_stages(&p, "worker:1"), Some(0));
    for _ in 0..3 {
        assert_eq!(scalar(&s.run(&[], &[y], &[]).unwrap()[0]), 12.0);
    }

    // ps -> worker 0 -> ps: what ps receives depends on what it sends, so ps runs in two
    // stages; both its receives wait for the first: `b` returns, and the control edge
    // from worker 0's `marker` (which depends on nothing of ps) is consumed only by the
    // second stage. Worker 0 still receives first.
    let a = ps.constant(1.0f32).unwrap();
    let b = w0.neg(a).unwrap();
    let marker = w0.no_op().unwrap();
    let back = ps.with_control_dependencies([marker]).add(b, a).unwrap();
    let p = partition(&g, &[], &[back], &[], &devices, &master).unwrap();
    assert_eq!(receive_stages(&p, "ps:0"), Some(2));
    assert_eq!(receive_stages(&p, "worker:0"), Some(0));
    let before = staged_steps(&c, "ps", 0);
    for _ in 0..3 {
        assert_eq!(scalar(&s.run(&[], &[back], &[]).unwrap()[0]), 0.0);
    }
    assert_eq!(staged_steps(&c, "ps", 0), before + 3);

    // A feed on ps that worker 1 consumes and returns to ps: a cycle through the feed's
    // placeholder, so ps runs in two stages.
    let fed = ps.placeholder(DType::F32, None).unwrap();
    let twice = w1.add(fed, fed).unwrap();
    let sum = ps.add(twice, fed).unwrap();
    let p = partition(&g, &[fed], &[sum], &[], &devices, &master).unwrap();
    assert_eq!(receive_stages(&p, "ps:0"), Some(1));
    assert_eq!(receive_stages(&p, "worker:1"), Some(0));
    let out = s
        .run(&[(fed, Tensor::scalar(1.5f32))], &[sum], &[])
        .unwrap();
    assert_eq!(scalar(&out[0]), 4.5);
}

/// A parameter server's step: it sends a variable's value, receives the value computed
/// from it on a worker and updates the variable with it, and the worker waits for the
/// update by a control edge. Both tasks are on a cycle; each runs in two stages, with the
/// same values as the unstaged step, every step.
#[test]
fn a_task_on_a_cycle_runs_in_two_stages_with_the_same_values() {
    let c = cluster();
    let g = Graph::new();
    let ps = g.with_device("/job:ps/task:0").unwrap();
    let w1 = g.with_device("/job:worker/task:1").unwrap();
    let v = ps.variable("staged_v", DType::F32).unwrap();
    let init = v.assign(&g, g.constant(1.0f32).unwrap()).unwrap();
    let read = v.read(&g).unwrap();
    // The worker doubles it; the ps adds the double back, after a ps-local mark.
    let double = w1.with_name("double").add(read, read).unwrap();
    let mark = ps.with_name("mark").no_op().unwrap();
    let update = v
        .assign_add(&g.with_control_dependencies([mark]), double)
        .unwrap();
    // Worker 1 fetches something that waits for the update: a cycle through worker 1.
    let done = w1
        .with_control_dependencies([update.node])
        .with_name("done")
        .identity(double)
        .unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    let devices = s.devices().to_vec();
    let master = TaskName::new("worker", 0);
    let p = partition(&g, &[], &[done, read], &[], &devices, &master).unwrap();
    assert_eq!(
        receive_stages(&p, "ps:0"),
        Some(1),
        "the double returns to ps"
    );
    assert_eq!(
        receive_stages(&p, "worker:1"),
        Some(1),
        "the update's carrier returns to worker 1; the read does not"
    );
    s.run(&[], &[init], &[]).unwrap();
    let (ps_before, w1_before) = (staged_steps(&c, "ps", 0), staged_steps(&c, "worker", 1));
    // v: 1 -> 3 -> 9 -> 27; each step fetches 2v and v as read before the update.
    let mut expect = 1.0f32;
    for _ in 0..3 {
        let out = s.run(&[], &[done, read], &[]).unwrap();
        assert_eq!((scalar(&out[0]), scalar(&out[1])), (2.0 * expect, expect));
        expect *= 3.0;
    }
    assert_eq!(staged_steps(&c, "ps", 0), ps_before + 3);
    assert_eq!(staged_steps(&c, "worker", 1), w1_before + 3);

    // A traced staged step: every node once, on its device, both stages and the
    // receives between them; on ps the second stage's receive arrived before the
    // update it feeds started.
    let options = magpie::RunOptions {
        trace: true,
        ..Default::default()
    };
    let out = s
        .run_with_options(&options, &[], &[done, read], &[])
        .unwrap();
    assert_eq!(scalar(&out.tensors[1]), expect);
    let timeline = out.timeline.expect("a traced step has a timeline");
    for p in out.placement.iter() {
        let ran: Vec<_> = timeline
            .events()
            .filter(|(_, n, _, _)| n.node == p.name())
            .collect();
        assert_eq!(ran.len(), 1, "{}: {ran:?}", p.name());
        assert_eq!(ran[0].1.device, *p.device);
    }
    let on_ps = |pred: &dyn Fn(&magpie::NodeStats) -> bool| {
        timeline
            .events()
            .filter(|(t, n, _, _)| t.to_string() == "/job:ps/task:0" && pred(n))
            .map(|(_, _, start, end)| (start, end))
            .collect::<Vec<_>>()
    };
    let recvs = on_ps(&|n| n.op == RECV_OP);
    let update = on_ps(&|n| n.op == "AssignAddVariableOp");
    assert_eq!((recvs.len(), update.len()), (1, 1), "{recvs:?} {update:?}");
    assert!(recvs[0].1 <= update[0].0, "{recvs:?} {update:?}");
}

/// A path that comes back into a task twice (ps -> worker 1 -> ps -> worker 1 -> ps):
/// the task is not staged and receives during its step, with the right values.
#[test]
fn a_task_a_path_returns_into_twice_receives_during_its_step() {
    let c = cluster();
    let g = Graph::new();
    let ps = g.with_device("/job:ps/task:0").unwrap();
    let w1 = g.with_device("/job:worker/task:1").unwrap();
    let x = ps.placeholder(DType::F32, None).unwrap();
    let a = w1.add(x, x).unwrap(); // 2x
    let b = ps.add(a, x).unwrap(); // 3x
    let c1 = w1.mul(b, b).unwrap(); // 9x²
    let d = ps.add(c1, x).unwrap(); // 9x² + x
    let s = c.session("worker", 0, &g).unwrap();
    let devices = s.devices().to_vec();
    let master = TaskName::new("worker", 0);
    let p = partition(&g, &[x], &[d], &[], &devices, &master).unwrap();
    assert_eq!(receive_stages(&p, "ps:0"), None);
    assert_eq!(
        receive_stages(&p, "worker:1"),
        Some(1),
        "worker 1 is entered again once: two stages"
    );
    let before = staged_steps(&c, "ps", 0);
    let out = s.run(&[(x, Tensor::scalar(2.0f32))], &[d], &[]).unwrap();
    assert_eq!(scalar(&out[0]), 38.0);
    assert_eq!(staged_steps(&c, "ps", 0), before);
}

/// Two tasks that exchange independent tensors each way: no path returns into either,
/// but a task that awaited its receives before its step would wait for the other's step
/// to start, and the other for its own. Both receive during their steps.
#[test]
fn tasks_that_exchange_tensors_both_ways_do_not_wait_for_each_other_to_start() {
    let c = cluster();
    let g = Graph::new();
    let w0 = g.with_device("/job:worker/task:0").unwrap();
    let w1 = g.with_device("/job:worker/task:1").unwrap();
    let x = w0.constant(1.0f32).unwrap();
    let y = w1.constant(2.0f32).unwrap();
    let on_w1 = w1.add(x, y).unwrap();
    let on_w0 = w0.mul(y, x).unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    let devices = s.devices().to_vec();
    let master = TaskName::new("worker", 0);
    let p = partition(&g, &[], &[on_w1, on_w0], &[], &devices, &master).unwrap();
    assert_eq!(receive_stages(&p, "worker:0"), None);
    assert_eq!(receive_stages(&p, "worker:1"), None);
    let out = s.run(&[], &[on_w1, on_w0], &[]).unwrap();
    assert_eq!((scalar(&out[0]), scalar(&out[1])), (3.0, 2.0));
}

#[test]
fn unmatched_spec_fails_naming_node_and_spec() {
    let c = cluster();
    let g = Graph::new();
    let bad = g
        .with_device("/job:worker/task:7")
        .unwrap()
        .with_name("lost")
        .constant(1.0f32)
        .unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    let e = s.run(&[], &[bad], &[]).unwrap_err();
    assert!(matches!(e, MasterError::NoMatchingDevice { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("\"lost\"") && msg.contains("/job:worker/task:7"),
        "{msg}"
    );
}

#[test]
fn partitions_are_registered_once_and_reused() {
    let c = cluster();
    let g = Graph::new();
    let a = g
        .with_device("/job:ps/task:0")
        .unwrap()
        .constant(3.0f32)
        .unwrap();
    let b = g
        .with_device("/job:worker/task:0")
        .unwrap()
        .square(a)
        .unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    for _ in 0..5 {
        assert_eq!(scalar(&s.run(&[], &[b], &[]).unwrap()[0]), 9.0);
    }
    let regs = |job: &str, i: u32| {
        c.server(job, i)
            .unwrap()
            .core()
            .worker()
            .stats()
            .registrations
    };
    assert_eq!(regs("ps", 0), 1);
    assert_eq!(regs("worker", 0), 1);
    assert_eq!(regs("worker", 1), 0);
    // A new signature registers again, once.
    s.run(&[], &[a, b], &[]).unwrap();
    s.run(&[], &[a, b], &[]).unwrap();
    assert_eq!(regs("ps", 0), 2);
    assert_eq!(s.num_plans(), 2);
}

#[test]
fn variables_persist_across_steps_and_sessions_until_reset() {
    let c = cluster();
    let g = Graph::new();
    let ps = g.with_device("/job:ps/task:0").unwrap();
    let v = ps.variable("counter", DType::F32).unwrap();
    let init = v.assign(&g, g.constant(10.0f32).unwrap()).unwrap();
    // The update's delta comes from a worker: it travels to the variable's task.
    let one = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .constant(1.0f32)
        .unwrap();
    let inc = v.assign_add(&g, one).unwrap();
    let read = v.read(&g).unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    s.run(&[], &[init], &[]).unwrap();
    s.run(&[], &[inc], &[]).unwrap();
    s.run(&[], &[inc], &[]).unwrap();
    assert_eq!(scalar(&s.run(&[], &[read], &[]).unwrap()[0]), 12.0);
    // Another session, through another master, sees the same variable.
    let s2 = c.session("worker", 1, &g).unwrap();
    assert_eq!(scalar(&s2.run(&[], &[read], &[]).unwrap()[0]), 12.0);
    let placed = s2
        .run_with_options(&Default::default(), &[], &[read], &[])
        .unwrap()
        .placement;
    assert!(
        placed.iter().all(|p| p.device.starts_with("/job:ps/")),
        "{placed:?}"
    );
    // Reset clears it.
    assert_eq!(c.server("ps", 0).unwrap().core().reset(""), 1);
    let e = s2.run(&[], &[read], &[]).unwrap_err();
    assert!(e.to_string().contains("not initialised"), "{e}");
    assert!(e.to_string().contains("/job:ps/task:0"), "{e}");
}

#[test]
fn a_stopped_task_fails_the_step_naming_it_and_the_cluster_keeps_serving() {
    let mut c = cluster();
    let g = Graph::new();
    let a = g
        .with_device("/job:ps/task:0")
        .unwrap()
        .constant(2.0f32)
        .unwrap();
    let on_w1 = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .square(a)
        .unwrap();
    let on_w0 = g.with_device("/job:worker/task:0").unwrap().neg(a).unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    assert_eq!(scalar(&s.run(&[], &[on_w1], &[]).unwrap()[0]), 4.0);
    assert!(c.stop_task("worker", 1, Duration::from_secs(5)));
    let opts = magpie::RunOptions {
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let e = s.run_with_options(&opts, &[], &[on_w1], &[]).unwrap_err();
    match &e {
        MasterError::Step { source, .. } => {
            assert_eq!(source.task(), "/job:worker/task:1", "{e}");
            assert!(matches!(source, TransportError::Unreachable { .. }), "{e}");
        }
        other => panic!("unexpected {other}"),
    }
    // The rest of the cluster keeps serving.
    assert_eq!(scalar(&s.run(&[], &[on_w0], &[]).unwrap()[0]), -2.0);
    // Once the task is back, the same step succeeds (its partition is registered anew).
    c.restart_task("worker", 1).unwrap();
    assert_eq!(scalar(&s.run(&[], &[on_w1], &[]).unwrap()[0]), 4.0);
}

#[test]
fn stop_drains_then_refuses_and_frees_the_address() {
    let c = cluster();
    let w1 = c.server("worker", 1).unwrap();
    assert_eq!(w1.stop(Duration::from_secs(1)), 0);
    w1.join();
    assert!(c.network().lookup("127.0.0.1:2223").is_none());
    let e = w1.session(&Graph::new()).unwrap_err();
    assert!(matches!(e, MasterError::Stopping { .. }), "{e}");
    // The address can be served again.
    let again = magpie::inmem::InMemServer::start(
        c.network(),
        c.spec(),
        "worker",
        1,
        &task_server_options(&TaskName::new("worker", 1)),
    )
    .unwrap();
    assert_eq!(again.target(), "inmem://127.0.0.1:2223");
}

#[test]
fn tensors_cross_tasks_without_copies() {
    let c = cluster();
    let g = Graph::new();
    let x = g
        .with_device("/job:worker/task:0")
        .unwrap()
        .placeholder(DType::F32, None)
        .unwrap();
    let y = g
        .with_device("/job:ps/task:0")
        .unwrap()
        .identity(x)
        .unwrap();
    let z = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .identity(y)
        .unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    let big = Tensor::from_vec([1 << 16], vec![1.5f32; 1 << 16]).unwrap();
    let out = s.run(&[(x, big.clone())], &[z], &[]).unwrap();
    assert!(out[0].shares_buffer_with(&big));
}

#[test]
fn feeds_and_dtype_errors() {
    let c = cluster();
    let g = Graph::new();
    let x = g
        .with_device("/job:ps/task:0")
        .unwrap()
        .placeholder(DType::F32, None)
        .unwrap();
    let y = g
        .with_device("/job:worker/task:1")
        .unwrap()
        .square(x)
        .unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    let out = s.run(&[(x, Tensor::scalar(3.0f32))], &[y, x], &[]).unwrap();
    assert_eq!(scalar(&out[0]), 9.0);
    assert_eq!(scalar(&out[1]), 3.0);
    let e = s.run(&[(x, Tensor::scalar(3i32))], &[y], &[]).unwrap_err();
    assert!(matches!(e, MasterError::BadFeed { .. }), "{e}");
    let e = s.run(&[], &[y], &[]).unwrap_err();
    assert!(
        e.to_string().contains("Placeholder") || e.to_string().contains("fed"),
        "{e}"
    );
}

#[test]
fn ps_task_exposes_only_its_visible_devices() {
    let spec = default_cluster();
    let c = InProcessCluster::start_with(&spec, |t| {
        let mut o = task_server_options(t);
        let extra = magpie::DeviceName {
            job: t.job.clone(),
            replica: 0,
            task: t.index,
            device_type: "CPU".into(),
            device_index: 1,
        };
        o.devices
            .push(std::sync::Arc::new(magpie::cpu::CpuDevice::with_name(
                extra,
            )));
        if t.job == "ps" {
            o = o.visible_devices(&["/device:CPU:0"]);
        }
        o
    })
    .unwrap();
    let s = c.session("worker", 0, &Graph::new()).unwrap();
    let names: Vec<String> = s.devices().iter().map(|d| d.name.to_string()).collect();
    assert!(names.contains(&"/job:worker/replica:0/task:0/device:CPU:1".to_string()));
    assert!(names.contains(&"/job:ps/replica:0/task:0/device:CPU:0".to_string()));
    assert!(!names.contains(&"/job:ps/replica:0/task:0/device:CPU:1".to_string()));
    assert_eq!(names[0], "/job:worker/replica:0/task:0/device:CPU:0");
}

#[test]
fn failed_steps_leave_no_rendezvous_entries_on_any_task() {
    // worker:0 doubles a fed tensor and sends it to worker:1, which reshapes it to five
    // elements (failing for any other size), and to ps:0, which adds to it. Feeding four
    // elements fails the step on worker:1 while the other tasks' parts run or ran.
    let c = cluster();
    let g = Graph::new();
    let w0 = g.with_device("/job:worker/task:0").unwrap();
    let p = w0.with_name("p").placeholder(DType::F32, None).unwrap();
    let q = w0.mul(p, w0.constant(2.0f32).unwrap()).unwrap();
    let w1 = g.with_device("/job:worker/task:1").unwrap();
    let bad = w1.with_name("five").reshape(q, &[5]).unwrap();
    let ps = g.with_device("/job:ps/task:0").unwrap();
    let sum = ps.add(q, ps.constant(1.0f32).unwrap()).unwrap();
    let s = c.session("worker", 0, &g).unwrap();
    let mut failed = 0;
    for i in 0..300 {
        let n = if i % 3 == 0 { 5 } else { 4 };
        let fed = Tensor::from_vec([n], vec![1.0f32; n]).unwrap();
        match s.run(&[(p, fed)], &[bad, sum], &[]) {
            Ok(out) => assert_eq!((n, out[0].dims()), (5, &[5][..])),
            Err(e) => {
                assert_eq!(n, 4, "{e}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 200);
    for (job, index) in [("ps", 0), ("worker", 0), ("worker", 1)] {
        let stats = c.server(job, index).unwrap().core().worker().stats();
        assert_eq!(
            (
                stats.pending_rendezvous,
                stats.pending_rendezvous_bytes,
                stats.running_steps
            ),
            (0, 0, 0),
            "/job:{job}/task:{index}"
        );
    }
}

/// Random graphs of additions and subtractions of small integers over three tasks (and
/// control edges between them): every step gives the values computed here, within a
/// deadline that a deadlock between awaited receives would pass; some steps are staged.
#[test]
fn random_graphs_over_three_tasks_give_their_values_without_waiting_on_each_other() {
    let c = cluster();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let tasks = ["/job:ps/task:0", "/job:worker/task:0", "/job:worker/task:1"];
    let staged_before: u64 = [("ps", 0), ("worker", 0), ("worker", 1)]
        .iter()
        .map(|(j, i)| staged_steps(&c, j, *i))
        .sum();
    for graph in 0..40 {
        let g = Graph::new();
        let mut outs = Vec::new();
        let mut values: Vec<f32> = Vec::new();
        for k in 0..14 {
            let scope = g.with_device(tasks[next(3)]).unwrap();
            let (out, v) = if k < 3 || next(4) == 0 {
                let v = (next(7) as f32) - 3.0;
                (scope.constant(v).unwrap(), v)
            } else {
                let (a, b) = (next(outs.len()), next(outs.len()));
                let scope = if next(3) == 0 {
                    // A control edge from another earlier node, maybe on another task.
                    let dep: magpie::graph::Output = outs[next(outs.len())];
                    scope.with_control_dependencies([dep.node])
                } else {
                    scope
                };
                if next(2) == 0 {
                    (scope.add(outs[a], outs[b]).unwrap(), values[a] + values[b])
                } else {
                    (scope.sub(outs[a], outs[b]).unwrap(), values[a] - values[b])
                }
            };
            outs.push(out);
            values.push(v);
        }
        let picks: Vec<usize> = (0..3).map(|_| 3 + next(outs.len() - 3)).collect();
        let fetches: Vec<magpie::graph::Output> = picks.iter().map(|&k| outs[k]).collect();
        let s = c.session("worker", next(2) as u32, &g).unwrap();
        let options = magpie::RunOptions {
            timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        for _ in 0..2 {
            let out = s
                .run_with_options(&options, &[], &fetches, &[])
                .unwrap_or_else(|e| panic!("graph {graph}: {e}"));
            let got: Vec<f32> = out.tensors.iter().map(scalar).collect();
            let want: Vec<f32> = picks.iter().map(|&k| values[k]).collect();
            assert_eq!(got, want, "graph {graph}");
        }
    }
    let staged_after: u64 = [("ps", 0), ("worker", 0), ("worker", 1)]
        .iter()
        .map(|(j, i)| staged_steps(&c, j, *i))
        .sum();
    assert!(staged_after > staged_before, "no step was staged");
}
