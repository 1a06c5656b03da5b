//! `magpie server --metrics-addr` from a real process: it prints where it serves
//! `/metrics`, and a scrape counts the steps run through it by outcome, their latency
//! histogram, its open sessions, the bytes a peer task sent it and the bytes its CPU
//! device's live tensors hold. Counts only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `/job:worker/task:{index}` of a two-task cluster; returns the process and the
/// lines it printed once serving (`lines` of them).
fn start(ports: [u16; 2], index: u32, extra: &[&str], lines: usize) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_magpie"))
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut got = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        got.push(line.trim().to_string());
    }
    assert!(got[0].starts_with("serving"), "{got:?}");
    (child, got)
}

fn stop(mut child: Child) {
    // SAFETY: `kill` on our own child's pid, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample of `metric` whose line contains every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_server_process_serves_metrics_that_count_its_steps() {
    let ports = [free_port(), free_port()];
    let (first, lines) = start(ports, 0, &["--metrics-addr", "127.0.0.1:0"], 2);
    let addr: SocketAddr = lines[1]
        .strip_prefix("metrics of /job:worker/task:0 at http://")
        .and_then(|l| l.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{lines:?}"))
        .parse()
        .unwrap();
    let (second, _) = start(ports, 1, &[], 1);

    let g = magpie::Graph::new();
    let a = g
        .device("/job:worker/task:1", |g| g.constant(3.0f32))
        .unwrap();
    let b = g.add(a, a).unwrap();
    // A variable on the master's CPU: its updated value (256 f32, allocated by the
    // device) outlives the step, so the device's gauge holds its 1024 bytes.
    let cpu = "/job:worker/task:0/device:CPU:0";
    let v = g
        .device(cpu, |g| g.variable("v", magpie::DType::F32))
        .unwrap();
    let ones = magpie::Tensor::from_vec([256], vec![1.0f32; 256]).unwrap();
    let init = g.device(cpu, |g| g.constant(ones.clone())).unwrap();
    let assign = v.assign(&g, init).unwrap();
    let delta = g.device(cpu, |g| g.constant(ones)).unwrap();
    let bump = v.assign_add(&g, delta).unwrap();
    let target = format!("grpc://127.0.0.1:{}", ports[0]);
    let outcome = magpie_grpc::connect(&target, &g).map(|s| {
        let ok = s.run(&[], &[b], &[]);
        let bad = s.run_named(&[], &["no_such_node:0"], &[], None);
        let before = scrape(addr);
        let updated = s
            .run(&[], &[], &[assign.node()])
            .and_then(|_| s.run(&[], &[bump], &[]));
        let value = updated.map(|t| t[0].as_slice::<f32>().unwrap()[0]);
        (ok.is_ok(), bad.is_err(), before, value, scrape(addr))
    });
    stop(second);
    stop(first);
    let (ok, bad, text, value, after) = outcome.unwrap();
    assert!(ok && bad, "{text}");
    assert_eq!(value.unwrap(), 2.0);
    // The CPU device counts its tensors: nothing once the first steps' outputs are gone,
    // the variable's value after the update.
    let device = "device=\"/job:worker/replica:0/task:0/device:CPU:0\"";
    assert_eq!(
        sample(&text, "magpie_device_memory_in_use_bytes", &[device]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&after, "magpie_device_memory_in_use_bytes", &[device]),
        Some(1024.0),
        "{after}"
    );
    assert!(
        sample(&after, "magpie_device_memory_limit_bytes", &[device]).is_some_and(|l| l > 0.0),
        "{after}"
    );
    assert_eq!(
        sample(&text, "magpie_steps_total", &["outcome=\"ok\""]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "magpie_steps_total",
            &["outcome=\"invalid_argument\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "magpie_step_duration_seconds_count", &[]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "magpie_sessions_open", &[]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "magpie_peer_received_bytes_total",
            &["peer=\"/job:worker/task:1\""]
        ),
        Some(4.0),
        "{text}"
    );
}
