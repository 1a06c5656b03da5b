//! A cluster whose tasks serve their machine's devices (`machine_server_options`, what
//! `magpie server` serves): Vulkan GPUs on the workers (Mesa's lavapipe here), none on
//! the ps task, CPUs everywhere. Ops pinned to a worker's GPU run there and give the
//! CPU's answer; unpinned ops go to the master's default device, its first GPU; the
//! cluster's device list shows it all. Skips with a message without a Vulkan device.

use magpie::cluster::{default_cluster, machine_server_options, InProcessCluster, TaskDevices};
use magpie::transport::TaskName;
use magpie::{CpuOptions, Graph, Output, Session, SessionOptions, Tensor};

/// Two workers each, so three tasks stay light on a small machine.
fn devices_for(task: &TaskName) -> TaskDevices {
    let base = TaskDevices::default();
    TaskDevices {
        cpu: CpuOptions {
            num_workers: Some(2),
            ..base.cpu
        },
        // Lavapipe stands in for a GPU here.
        emulated_gpus: true,
        // The ps task "does not see the GPU devices".
        visible_devices: (task.job == "ps").then(|| vec!["/device:CPU:*".to_string()]),
        ..base
    }
}

fn cluster() -> InProcessCluster {
    InProcessCluster::start_with(&default_cluster(), |task| {
        machine_server_options(task, &devices_for(task)).expect("the task's devices")
    })
    .expect("the cluster starts")
}

fn matrix(rows: usize, cols: usize, seed: u32) -> Tensor {
    let v: Vec<f32> = (0..rows * cols)
        .map(|i| ((i as u32 * 7 + seed * 13) % 17) as f32 / 4.0 - 2.0)
        .collect();
    Tensor::from_vec([rows, cols], v).unwrap()
}

/// `square(matmul(a, b)) + c`, with the MatMul under `matmul_device` (if any) and `c` on
/// the ps task when `ps` is set.
fn build(g: &Graph, matmul_device: Option<&str>, ps: bool) -> (Output, Output, Output) {
    let a = g.with_name("a").constant(matrix(8, 5, 1)).unwrap();
    let b = g.with_name("b").constant(matrix(5, 6, 2)).unwrap();
    let m = match matmul_device {
        Some(d) => g.with_device(d).unwrap().with_name("m").matmul(a, b),
        None => g.with_name("m").matmul(a, b),
    }
    .unwrap();
    let sq = g.with_name("sq").square(m).unwrap();
    let c = match ps {
        true => g.with_device("/job:ps/task:0").unwrap(),
        false => g.clone(),
    }
    .with_name("c")
    .constant(matrix(8, 6, 3))
    .unwrap();
    let out = g.with_name("out").add(sq, c).unwrap();
    (m, sq, out)
}

fn cpu_answer() -> Vec<f32> {
    let g = Graph::new();
    let (_, _, out) = build(&g, None, false);
    let cpu = magpie::cpu::cpu_device();
    let s = Session::new(&g, SessionOptions::with_devices(vec![cpu])).unwrap();
    s.run(&[], &[out], &[]).unwrap()[0]
        .as_slice::<f32>()
        .unwrap()
        .to_vec()
}

fn device_of(placement: &[magpie::distributed::partition::PlacedNode], node: &str) -> String {
    placement
        .iter()
        .find(|p| p.name() == node)
        .unwrap_or_else(|| panic!("{node} was not placed: {placement:?}"))
        .device
        .to_string()
}

#[test]
fn ops_pinned_to_a_workers_gpu_run_there_and_unpinned_ops_on_the_masters_gpu() {
    if let Some(why) = magpie::gpu_status() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let c = cluster();
    let g = Graph::new();
    let (m, sq, out) = build(&g, Some("/job:worker/task:1/device:GPU:0"), true);
    let s = c.session("worker", 0, &g).unwrap();

    // The cluster's devices: the master's first, its GPU the default; no GPU on ps.
    let names: Vec<String> = s.devices().iter().map(|d| d.name.to_string()).collect();
    assert_eq!(
        names[0], "/job:worker/replica:0/task:0/device:GPU:0",
        "{names:?}"
    );
    for task in [
        "/job:worker/replica:0/task:0",
        "/job:worker/replica:0/task:1",
    ] {
        for kind in ["GPU:0", "CPU:0"] {
            let name = format!("{task}/device:{kind}");
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }
    assert!(names.contains(&"/job:ps/replica:0/task:0/device:CPU:0".to_string()));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("/job:ps/") && n.contains("GPU")),
        "the ps task sees no GPU: {names:?}"
    );

    let run = s
        .run_with_options(&Default::default(), &[], &[out, m], &[])
        .unwrap();
    assert_eq!(run.tensors[0].as_slice::<f32>().unwrap(), &cpu_answer()[..]);
    assert_eq!(run.tensors[1].dims(), &[8, 6]);
    assert_eq!(
        device_of(&run.placement, "m"),
        "/job:worker/replica:0/task:1/device:GPU:0"
    );
    assert_eq!(
        device_of(&run.placement, "sq"),
        "/job:worker/replica:0/task:0/device:GPU:0",
        "unpinned: the master's default device"
    );
    assert_eq!(
        device_of(&run.placement, "c"),
        "/job:ps/replica:0/task:0/device:CPU:0"
    );
    let mut tasks = run.tasks.clone();
    tasks.sort_by_key(|t| t.to_string());
    assert_eq!(
        tasks,
        [
            TaskName::new("ps", 0),
            TaskName::new("worker", 0),
            TaskName::new("worker", 1)
        ]
    );
    let _ = sq;

    // A session on ps places unpinned ops on its CPU, its default device there.
    let g2 = Graph::new();
    let (_, _, out2) = build(&g2, None, false);
    let s2 = c.session("ps", 0, &g2).unwrap();
    let run2 = s2
        .run_with_options(&Default::default(), &[], &[out2], &[])
        .unwrap();
    assert_eq!(
        run2.tensors[0].as_slice::<f32>().unwrap(),
        &cpu_answer()[..]
    );
    assert!(run2
        .placement
        .iter()
        .all(|p| &*p.device == "/job:ps/replica:0/task:0/device:CPU:0"));
    c.stop(std::time::Duration::from_secs(5));
}

#[test]
fn without_gpus_a_task_serves_its_cpus_alone_named_for_it() {
    let devices = TaskDevices {
        gpus: false,
        ..devices_for(&TaskName::new("worker", 3))
    };
    let options = machine_server_options(&TaskName::new("worker", 3), &devices).unwrap();
    assert!(!options.devices.is_empty());
    for (k, d) in options.devices.iter().enumerate() {
        assert_eq!(
            d.name().to_string(),
            format!("/job:worker/replica:0/task:3/device:CPU:{k}")
        );
    }
    assert_eq!(options.pool.as_ref().map(|p| p.num_workers()), Some(2));
}
