//! `magpie server`'s arguments: what it refuses before starting, and why, from a real
//! process (`--task` is required with `--job`; an evaluator in `TF_CONFIG` has no task
//! to serve); its logs (`--log-format json`, `MAGPIE_LOG`, peers connecting and lost);
//! and the devices it serves, which `magpie devices` with the same flags lists; without
//! a real GPU to serve it does not load Vulkan (its GPU probe runs in a child process).

mod common;

use common::{free_port, magpie, ServerProcess};

#[test]
fn job_without_task_is_refused_naming_the_flag() {
    let out = magpie()
        .args(["server", "--cluster", "/dev/null", "--job", "worker"])
        .env_remove("TF_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--task"), "{err}");
}

#[test]
fn tf_config_evaluator_has_no_task_to_serve() {
    let out = magpie()
        .arg("server")
        .env(
            "TF_CONFIG",
            r#"{"cluster": {"worker": {"0": "127.0.0.1:5"}, "evaluator": ["127.0.0.1:6"]},
                "task": {"type": "evaluator", "index": 0}}"#,
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("evaluator") && err.contains("not part of the cluster"),
        "{err}"
    );
}

/// `--log-format json` with `MAGPIE_LOG=magpie=info`: the server's start and stop are
/// logged as one JSON object per line on stderr, without colour codes.
#[test]
fn json_logs_are_one_object_per_line_without_colour() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let port = free_port();
    let mut child = magpie()
        .args(["--log-format", "json", "server"])
        .env("MAGPIE_LOG", "magpie=info")
        .env(
            "TF_CONFIG",
            format!(
                r#"{{"cluster": {{"solo": ["127.0.0.1:{port}"]}}, "task": {{"type": "solo", "index": 0}}}}"#
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("serving /job:solo/task:0"), "{first}");
    // SAFETY: `kill` on our own child's pid, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains('\x1b'), "no colour codes: {err}");
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["fields"]["message"].as_str())
        .collect();
    for m in ["server started", "server stopping", "server stopped"] {
        assert!(messages.contains(&m), "{m:?} in {messages:?}");
    }
}

/// `--bind` apart from the advertised address: the cluster names the task by a DNS name
/// that does not resolve (as a Kubernetes service name may not, yet), the server listens
/// on 127.0.0.1, and a client reaching that address runs a step.
#[test]
fn bind_listens_apart_from_an_unresolvable_advertised_name() {
    let port = free_port();
    let mut command = magpie();
    command
        .args(["server", "--bind", &format!("127.0.0.1:{port}")])
        .env(
            "TF_CONFIG",
            format!(
                r#"{{"cluster": {{"worker": ["magpie-test-not-yet-resolvable.invalid:{port}"]}},
                    "task": {{"type": "worker", "index": 0}}}}"#
            ),
        )
        .stderr(std::process::Stdio::null());
    let server = ServerProcess::start(command);
    assert!(
        server.line.starts_with(&format!(
            "serving /job:worker/task:0 on grpc://127.0.0.1:{port}"
        )),
        "{}",
        server.line
    );
    let g = magpie::Graph::new();
    let a = g.constant(2.0f32).unwrap();
    let b = g.add(a, a).unwrap();
    let session = magpie::ClientSession::connect(&format!("grpc://127.0.0.1:{port}"), &g);
    let got = session.and_then(|s| s.run(&[], &[b], &[]));
    server.stop();
    assert_eq!(got.unwrap()[0].scalar_value::<f32>().unwrap(), 4.0);
}

/// Starts `/job:worker/task:{index}` of a two-task cluster with extra flags.
fn start_worker(ports: [u16; 2], index: u32, extra: &[&str]) -> ServerProcess {
    let mut command = magpie();
    command
        .arg("server")
        .args(extra)
        .env(
            "TF_CONFIG",
            format!(
                r#"{{"cluster": {{"worker": ["127.0.0.1:{}", "127.0.0.1:{}"]}},
                    "task": {{"type": "worker", "index": {index}}}}}"#,
                ports[0], ports[1]
            ),
        )
        .stderr(std::process::Stdio::null());
    ServerProcess::start(command)
}

/// Opening a session waits for a task that starts later (servers start in any order).
#[test]
fn opening_a_session_waits_for_a_task_that_starts_later() {
    let ports = [free_port(), free_port()];
    let first = start_worker(ports, 0, &[]);
    let late = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        start_worker(ports, 1, &[])
    });
    let g = magpie::Graph::new();
    let a = g
        .device("/job:worker/task:1", |g| g.constant(3.0f32))
        .unwrap();
    let b = g.add(a, a).unwrap();
    let got = magpie::ClientSession::connect(&format!("grpc://127.0.0.1:{}", ports[0]), &g)
        .and_then(|s| s.run(&[], &[b], &[]));
    let second = late.join().unwrap();
    first.stop();
    second.stop();
    assert_eq!(got.unwrap()[0].scalar_value::<f32>().unwrap(), 6.0);
}

/// A task that never comes fails the session after --peer-wait-ms, naming it.
#[test]
fn a_task_that_never_starts_is_named_after_the_peer_wait() {
    let ports = [free_port(), free_port()];
    let first = start_worker(ports, 0, &["--peer-wait-ms", "400"]);
    let g = magpie::Graph::new();
    let a = g.constant(3.0f32).unwrap();
    let e = magpie::ClientSession::connect(&format!("grpc://127.0.0.1:{}", ports[0]), &g)
        .expect_err("the session cannot open");
    first.stop();
    let _ = a;
    assert_eq!(e.code(), magpie::core::Code::Unavailable, "{e}");
    let message = e.to_string();
    assert!(
        message.contains("/job:worker/task:1") && message.contains("--peer-wait-ms"),
        "{message}"
    );
}

/// The devices a `magpie server` serving task `/job:ps/task:0` with two workers and the
/// `extra` flags prints when it starts (its "devices of" line), the default first; the
/// server is stopped.
fn server_devices(extra: &[&str]) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let port = free_port();
    let mut child = magpie()
        .arg("server")
        .args(["--workers", "2"])
        .args(extra)
        .env(
            "TF_CONFIG",
            format!(
                r#"{{"cluster": {{"ps": ["127.0.0.1:{port}"]}}, "task": {{"type": "ps", "index": 0}}}}"#
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut serving, mut devices) = (String::new(), String::new());
    out.read_line(&mut serving).unwrap();
    // After "serving" (and the metrics address, when served).
    while !devices.starts_with("devices of") {
        devices.clear();
        if out.read_line(&mut devices).unwrap() == 0 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(serving.starts_with("serving /job:ps/task:0"), "{serving}");
    split_devices_line(&devices)
}

/// The device names of a "devices of /job:ps/task:0 (the first is the default): ..." line.
fn split_devices_line(line: &str) -> Vec<String> {
    line.trim()
        .strip_prefix("devices of /job:ps/task:0 (the first is the default): ")
        .unwrap_or_else(|| panic!("{line}"))
        .split(", ")
        .map(str::to_string)
        .collect()
}

/// What `magpie devices --job ps --task 0 --workers 2` with the `extra` flags prints.
fn listed(extra: &[&str]) -> std::process::Output {
    magpie()
        .args(["devices", "--job", "ps", "--task", "0", "--workers", "2"])
        .args(extra)
        .output()
        .unwrap()
}

/// `magpie devices` lists exactly the devices `magpie server` with the same device flags
/// serves, in the same order, and marks the first as the default.
#[test]
fn magpie_devices_lists_what_a_server_with_the_same_flags_serves() {
    let flag_sets: [&[&str]; 4] = [
        &[],
        &["--emulated-gpus"],
        &["--no-gpus"],
        &["--visible-devices", "/device:CPU:*"],
    ];
    for flags in flag_sets {
        let out = listed(flags);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = (stdout.lines())
            .find(|l| l.starts_with("devices of"))
            .unwrap_or_else(|| panic!("{flags:?}: no devices line in {stdout}"));
        let names = split_devices_line(line);
        assert_eq!(names, server_devices(flags), "{flags:?}");
        let defaults: Vec<&str> = (stdout.lines())
            .filter(|l| l.contains("(default)"))
            .collect();
        assert_eq!(defaults.len(), 1, "{flags:?}: {stdout}");
        assert!(
            defaults[0]
                .trim_start()
                .starts_with(&format!("{} (default)", names[0])),
            "{flags:?}: {stdout}"
        );
    }
}

/// `magpie devices` refuses what the server would refuse, naming why.
#[test]
fn magpie_devices_refuses_flags_the_server_refuses() {
    let out = listed(&["--visible-devices", "/device:TPU:*"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/job:ps/task:0") && err.contains("exposes no device"),
        "{err}"
    );
    let out = magpie()
        .args(["devices", "--workers", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--workers"), "{err}");
}

/// `magpie server` serves its machine: it prints its devices, the default first — the
/// first GPU where the machine has one, else `CPU:0` — each named for the task; a GPU
/// emulated on the CPU (lavapipe here) only with `--emulated-gpus`; `--no-gpus` and
/// `--visible-devices /device:CPU:*` leave the GPUs out.
#[test]
fn a_server_prints_its_devices_named_for_its_task_default_first() {
    let cpu0 = "/job:ps/replica:0/task:0/device:CPU:0".to_string();
    let gpu0 = "/job:ps/replica:0/task:0/device:GPU:0";
    let all = server_devices(&[]);
    assert!(all.contains(&cpu0), "{all:?}");
    if real_gpus() > 0 {
        assert_eq!(all[0], gpu0, "{all:?}");
    } else {
        assert_eq!(
            all[0], cpu0,
            "an emulated GPU is not served by default: {all:?}"
        );
        assert!(all.iter().all(|d| d.contains("/device:CPU:")), "{all:?}");
    }
    let with_emulated = server_devices(&["--emulated-gpus"]);
    match magpie::gpu_status() {
        None => assert_eq!(with_emulated[0], gpu0, "{with_emulated:?}"),
        Some(why) => {
            eprintln!("no Vulkan device here ({why}): CPU:0 is the default");
            assert_eq!(with_emulated[0], cpu0);
        }
    }
    for flags in [&["--no-gpus"][..], &["--visible-devices", "/device:CPU:*"]] {
        let cpus = server_devices(flags);
        assert_eq!(cpus[0], cpu0, "{flags:?}: {cpus:?}");
        assert!(
            cpus.iter().all(|d| d.contains("/device:CPU:")),
            "{flags:?}: {cpus:?}"
        );
    }
}

/// A task logs its peers: "peer connected" on the first answer from another task, "peer
/// lost" when a request to it fails for want of a connection (here: it was stopped).
#[test]
fn a_task_logs_peers_connecting_and_lost() {
    let ports = [free_port(), free_port()];
    let dir = std::env::temp_dir().join(format!("magpie-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("worker0.json");
    let mut command = magpie();
    command
        .args([
            "--log-format",
            "json",
            "server",
            "--no-gpus",
            "--workers",
            "2",
        ])
        .env("MAGPIE_LOG", "magpie=info")
        .env(
            "TF_CONFIG",
            format!(
                r#"{{"cluster": {{"worker": ["127.0.0.1:{}", "127.0.0.1:{}"]}},
                    "task": {{"type": "worker", "index": 0}}}}"#,
                ports[0], ports[1]
            ),
        )
        .stderr(std::fs::File::create(&log).unwrap());
    let first = ServerProcess::start(command);
    let second = start_worker(ports, 1, &["--no-gpus", "--workers", "2"]);

    let g = magpie::Graph::new();
    let a = g
        .device("/job:worker/task:1", |g| g.constant(3.0f32))
        .unwrap();
    let b = g.add(a, a).unwrap();
    let session =
        magpie::ClientSession::connect(&format!("grpc://127.0.0.1:{}", ports[0]), &g).unwrap();
    let before = session
        .run(&[], &[b], &[])
        .map(|t| t[0].scalar_value::<f32>().unwrap());
    second.stop();
    let after = session.run(&[], &[b], &[]);
    drop(session);
    first.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(before.unwrap(), 6.0);
    assert!(after.is_err(), "a step on a stopped task fails");
    let event = |message: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["message"] == message)
            .filter(|v| v["fields"]["peer"] == "/job:worker/task:1")
            .filter(|v| v["fields"]["task"] == "/job:worker/task:0")
            .count()
    };
    assert_eq!(event("peer connected"), 1, "{text}");
    assert_eq!(event("peer lost"), 1, "{text}");
}

/// Over gRPC, a client of a `magpie server` sees the task's devices as the master lists
/// them (ListDevices), the default first, and an unpinned op runs on that default device
/// (the task's first GPU where the machine has one).
#[test]
fn a_servers_clients_see_its_devices_and_unpinned_ops_run_on_the_default() {
    let port = free_port();
    let mut command = magpie();
    command
        .args(["server", "--workers", "2", "--emulated-gpus"])
        .env(
            "TF_CONFIG",
            format!(
                r#"{{"cluster": {{"worker": ["127.0.0.1:{port}"]}}, "task": {{"type": "worker", "index": 0}}}}"#
            ),
        )
        .stderr(std::process::Stdio::null());
    let server = ServerProcess::start(command);
    let g = magpie::Graph::new();
    let a = g
        .constant(magpie::Tensor::from_vec([2], vec![1.5f32, -2.0]).unwrap())
        .unwrap();
    g.with_name("sq").square(a).unwrap();
    let got = magpie::grpc::connect(&format!("grpc://127.0.0.1:{port}"), &g).and_then(|s| {
        let devices = s.devices().to_vec();
        s.run_named(&[], &["sq:0"], &[], None)
            .map(|out| (devices, out))
    });
    server.stop();
    let (devices, out) = got.unwrap();
    let default = match magpie::gpu_status() {
        None => "/job:worker/replica:0/task:0/device:GPU:0",
        Some(_) => "/job:worker/replica:0/task:0/device:CPU:0",
    };
    assert_eq!(devices[0], default, "{devices:?}");
    assert!(devices.contains(&"/job:worker/replica:0/task:0/device:CPU:0".to_string()));
    assert_eq!(out.tensors[0].as_slice::<f32>().unwrap(), &[2.25, 4.0]);
    let sq = out.placement.iter().find(|(n, _)| n == "sq").unwrap();
    assert_eq!(sq.1, default);
}

/// The GPUs of this machine that are not emulated on its CPU.
fn real_gpus() -> usize {
    magpie::vulkan::discover().map_or(0, |gpus| gpus.iter().filter(|d| !d.is_emulated()).count())
}

/// A supervisor that reads the lines it wants and closes the server's stdout does not
/// stop or crash the task: later lines (its devices, "stopping") go nowhere, the task
/// keeps serving, and a SIGTERM still stops it cleanly (exit status 0).
#[test]
fn a_closed_stdout_neither_stops_nor_crashes_a_server() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let port = free_port();
    let mut child = magpie()
        .args(["server", "--no-gpus", "--workers", "2"])
        .env(
            "TF_CONFIG",
            format!(
                r#"{{"cluster": {{"worker": ["127.0.0.1:{port}"]}}, "task": {{"type": "worker", "index": 0}}}}"#
            ),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut serving = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut serving)
        .unwrap(); // the reader, and with it the pipe, is dropped here
    assert!(serving.starts_with("serving"), "{serving}");

    let g = magpie::Graph::new();
    let a = g.constant(2.0f32).unwrap();
    let b = g.add(a, a).unwrap();
    let value = magpie::ClientSession::connect(&format!("grpc://127.0.0.1:{port}"), &g)
        .and_then(|s| Ok(s.run(&[], &[b], &[])?[0].scalar_value::<f32>().unwrap()));
    // SAFETY: `kill` on our own child's pid, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(value.unwrap(), 4.0);
    assert!(status.success(), "the server exited with {status}");
}

/// `magpie probe-gpus` (hidden; what `magpie server` asks in a child process before it
/// loads Vulkan) counts the real GPUs that discovery in this process finds.
#[test]
fn the_gpu_probe_counts_the_real_gpus_discovery_finds() {
    let out = magpie().arg("probe-gpus").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let count: usize = printed
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{printed:?}: {e}"));
    assert_eq!(count, real_gpus());
}

/// The Vulkan driver libraries `pid` has mapped (Mesa's, the loader's).
#[cfg(target_os = "linux")]
fn vulkan_libraries_mapped(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut libs: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|path| path.contains("libvulkan"))
        .map(str::to_string)
        .collect();
    libs.dedup();
    libs
}

/// Loading Vulkan's drivers maps tens of MiB for good: a server with no real GPU to serve
/// (the emulated ones left out, as by default) never loads them, and one asked to serve
/// emulated GPUs does (where the machine has one, the check that the first is not
/// vacuous).
#[cfg(target_os = "linux")]
#[test]
fn a_server_without_a_real_gpu_does_not_load_vulkan() {
    if real_gpus() > 0 {
        eprintln!("skipped: this machine has a real GPU, which the server loads Vulkan for");
        return;
    }
    let start = |extra: &[&str]| {
        let port = free_port();
        let mut command = magpie();
        command
            .args(["server", "--workers", "2"])
            .args(extra)
            .env(
                "TF_CONFIG",
                format!(
                    r#"{{"cluster": {{"worker": ["127.0.0.1:{port}"]}}, "task": {{"type": "worker", "index": 0}}}}"#
                ),
            )
            .stderr(std::process::Stdio::null());
        ServerProcess::start(command)
    };
    let server = start(&[]);
    let mapped = vulkan_libraries_mapped(server.id());
    server.stop();
    assert_eq!(
        mapped,
        Vec::<String>::new(),
        "Vulkan loaded without a real GPU"
    );

    if magpie::vulkan::discover().is_ok_and(|gpus| !gpus.is_empty()) {
        let server = start(&["--emulated-gpus"]);
        let mapped = vulkan_libraries_mapped(server.id());
        server.stop();
        assert!(!mapped.is_empty(), "an emulated GPU served without Vulkan?");
    }
}
