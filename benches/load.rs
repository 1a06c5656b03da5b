//! Load and soak: concurrent clients against a 3-task `magpie server` cluster with TLS and
//! a cluster token (issue 11, item 6). Not a criterion bench: it reports a time series.
//!
//! Three `magpie server` processes (`/job:worker/task:{0,1,2}`) serve on 127.0.0.1 with a
//! certificate signed by a CA made here (rcgen; nothing is committed) and a token file;
//! `MAGPIE_LOAD_CLIENTS` client threads (default 16) each open a session on task 0 over
//! `grpcs://` with the token and run steps of a graph spanning the three tasks
//! (`x` on task 0, `-x` on task 1, `-x + -x` on task 2, fetched on task 0: two tensors
//! cross tasks per step) for `MAGPIE_LOAD_SECS` seconds (default 30). Every second it
//! samples each server's resident size (`VmRSS` of `/proc/<pid>/status`) and prints it
//! with the steps so far; at the end, steps/s, p50/p99/max step latency, the errors (any
//! error fails the run) and each server's RSS growth (`VmRSS`, and `RssAnon`: without
//! mapped files) from the end of warm-up (the first fifth of the run) to the end.
//!
//! `MAGPIE_LOAD_PLAINTEXT=1` runs the same without TLS or token, for the cost of security.
//! `MAGPIE_LOAD_MASTER_WRAPPER` is a command (split at whitespace) that task 0's server
//! runs under, e.g. `heaptrack -o /tmp/master` for a heap profile of the master: the bench
//! then samples and stops the `magpie` process below the wrapper, and stops it with
//! SIGKILL so that a profile's "leaked" bytes are those the server held at the end.
//!
//! Run: `cargo bench --bench load` (env: `MAGPIE_LOAD_SECS`, `MAGPIE_LOAD_CLIENTS`,
//! `MAGPIE_LOAD_PLAINTEXT`, `MAGPIE_LOAD_MASTER_WRAPPER`). Linux only (it reads `/proc`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magpie::grpc::{AuthToken, GrpcOptions, TlsOptions};
use magpie::{Graph, Tensor};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

const TASKS: u32 = 3;
const TOKEN: &str = "load-bench-token-0123456789abcdef";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CA's certificate, and a task certificate and key it signed for 127.0.0.1, in PEM.
fn pki() -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "load CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "load task");
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Writes `content` to `dir/name`, mode 600; returns the path.
fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A `magpie server` child (or the wrapper it runs under) and the server's own process
/// id; the server is killed when dropped, and the child waited for.
struct Server {
    child: Child,
    pid: u32,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: `kill` has no memory-safety preconditions; `pid` is a process this bench
        // started (directly or under its wrapper) and has not yet waited for.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The process below `root` (itself included) whose executable is `exe`: the server a
/// wrapper started. Searches `/proc` for descendants; `root` when none is found.
fn server_pid(root: u32, exe: &Path) -> u32 {
    let is_server =
        |pid: u32| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe);
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut below = vec![root];
    let mut i = 0;
    while i < below.len() {
        if is_server(below[i]) {
            return below[i];
        }
        let p = below[i];
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                if let Some(c) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                    if parent(c) == Some(p) && !below.contains(&c) {
                        below.push(c);
                    }
                }
            }
        }
        i += 1;
    }
    root
}

/// `field` (`VmRSS`, `RssAnon`) of process `pid`'s `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let secs = env_or("MAGPIE_LOAD_SECS", 30);
    let clients = env_or("MAGPIE_LOAD_CLIENTS", 16) as usize;
    let plaintext = env_or("MAGPIE_LOAD_PLAINTEXT", 0) == 1;
    let dir = std::env::temp_dir().join(format!("magpie-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let addresses: Vec<String> = (0..TASKS)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let cluster = serde_json::json!({ "worker": addresses }).to_string();
    let cluster_file = write(&dir, "cluster.json", &cluster);
    let (ca, cert, key) = pki();
    let ca_file = write(&dir, "ca.pem", &ca);
    let cert_file = write(&dir, "task.pem", &cert);
    let key_file = write(&dir, "task.key", &key);
    let token_file = write(&dir, "token", TOKEN);

    let wrapper: Vec<String> = std::env::var("MAGPIE_LOAD_MASTER_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let exe = Path::new(env!("CARGO_BIN_EXE_magpie"));
    let mut servers = Vec::new();
    for task in 0..TASKS {
        let mut c = match wrapper.split_first() {
            Some((program, args)) if task == 0 => {
                let mut c = Command::new(program);
                c.args(args).arg(exe);
                c
            }
            _ => Command::new(exe),
        };
        c.arg("server").arg("--cluster").arg(&cluster_file).args([
            "--job",
            "worker",
            "--task",
            &task.to_string(),
        ]);
        if !plaintext {
            c.arg("--tls-cert")
                .arg(&cert_file)
                .arg("--tls-key")
                .arg(&key_file)
                .arg("--tls-ca")
                .arg(&ca_file)
                .arg("--auth-token-file")
                .arg(&token_file);
        }
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("magpie server starts");
        // A wrapper may print lines of its own first.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("serving") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "task {task} ended before serving"
            );
        }
        eprint!("{line}");
        // Keep reading (and dropping) what the server or its wrapper says, so that
        // neither ever blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let pid = server_pid(child.id(), exe);
        servers.push(Server { child, pid });
    }
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();

    let options = if plaintext {
        GrpcOptions::default()
    } else {
        GrpcOptions {
            tls: Some(TlsOptions::new().with_ca_pem(ca).unwrap()),
            auth_token: Some(AuthToken::new(TOKEN).unwrap()),
            ..GrpcOptions::default()
        }
    };
    let scheme = if plaintext { "grpc" } else { "grpcs" };
    let target = format!("{scheme}://{}", addresses[0]);

    let stop = Arc::new(AtomicBool::new(false));
    let steps = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let mut threads = Vec::new();
    for client in 0..clients {
        let (stop, steps, errors, latencies) = (
            Arc::clone(&stop),
            Arc::clone(&steps),
            Arc::clone(&errors),
            Arc::clone(&latencies),
        );
        let target = target.clone();
        let options = options.clone();
        threads.push(std::thread::spawn(move || {
            let g = Graph::new();
            let on = |t: u32| g.with_device(&format!("/job:worker/task:{t}")).unwrap();
            let x = on(0).placeholder(magpie::DType::F32, None).unwrap();
            let y = on(1).neg(x).unwrap();
            let z = on(2).add(y, y).unwrap();
            let session = match magpie::grpc::connect_with(&target, &g, options) {
                Ok(s) => s,
                Err(e) => {
                    errors.lock().unwrap().push(format!("client {client}: {e}"));
                    return;
                }
            };
            let feed = Tensor::from_vec([4], vec![client as f32; 4]).unwrap();
            let mut mine = Vec::with_capacity(1 << 16);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match session.run(&[(x, feed.clone())], &[z], &[]) {
                    Ok(v) if v[0].as_slice::<f32>().ok() == Some(&[-2.0 * client as f32; 4]) => {
                        mine.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        steps.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(v) => errors
                        .lock()
                        .unwrap()
                        .push(format!("client {client}: wrong value {:?}", v[0])),
                    Err(e) => errors.lock().unwrap().push(format!("client {client}: {e}")),
                }
            }
            latencies.lock().unwrap().extend(mine);
            let _ = session.close();
        }));
    }

    let started = Instant::now();
    let mut samples: Vec<(u64, u64, Vec<u64>, Vec<u64>)> = Vec::new();
    println!(
        "{clients} clients, {TASKS} tasks, {} for {secs} s",
        if plaintext {
            "plaintext"
        } else {
            "TLS + token"
        }
    );
    println!("  t(s)      steps   RSS task0/1/2 (MiB)");
    for t in 1..=secs {
        std::thread::sleep(
            (started + Duration::from_secs(t)).saturating_duration_since(Instant::now()),
        );
        let rss: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();
        let n = steps.load(Ordering::Relaxed);
        println!(
            "{t:>6} {n:>10}   {}",
            rss.iter()
                .map(|k| format!("{:.1}", *k as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        let anon: Vec<u64> = pids.iter().map(|&p| status_kib(p, "RssAnon")).collect();
        samples.push((t, n, rss, anon));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let total = steps.load(Ordering::Relaxed);
    println!(
        "steps: {total} ({:.0} steps/s); latency p50 {} µs, p99 {} µs, max {} µs",
        total as f64 / elapsed,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    let warm = samples.get(samples.len() / 5).or(samples.first());
    if let (Some((t0, n0, rss0, anon0)), Some((t1, n1, rss1, anon1))) = (warm, samples.last()) {
        for task in 0..TASKS as usize {
            let growth = (rss1[task] as f64 - rss0[task] as f64) / rss0[task].max(1) as f64;
            println!(
                "task {task}: RSS {:.1} MiB at {t0} s -> {:.1} MiB at {t1} s ({:+.2} % over {} steps)",
                rss0[task] as f64 / 1024.0,
                rss1[task] as f64 / 1024.0,
                growth * 100.0,
                n1 - n0
            );
            // Anonymous pages only: the heap and stacks, without the mapped libraries
            // (a task that probes for GPUs maps the Vulkan loader and drivers).
            println!(
                "task {task}: RssAnon {:.1} MiB -> {:.1} MiB ({:+.2} %)",
                anon0[task] as f64 / 1024.0,
                anon1[task] as f64 / 1024.0,
                (anon1[task] as f64 - anon0[task] as f64) / anon0[task].max(1) as f64 * 100.0
            );
        }
    }
    let errors = errors.lock().unwrap();
    println!("errors: {}", errors.len());
    for e in errors.iter().take(10) {
        println!("  {e}");
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(errors.is_empty(), "{} step(s) failed", errors.len());
}
