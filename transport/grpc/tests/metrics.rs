//! Metrics and health on real sockets (127.0.0.1, free ports): `/metrics` counts steps by
//! outcome, their latency histogram, open sessions and bytes per peer; anything but
//! `GET /metrics` is a 404; the gRPC health service says `SERVING`, then `NOT_SERVING`
//! once a stop begins (while a step drains). Counts and codes only, no timings.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{free_port, op, register_test_ops};
use magpie_core::cluster::ClusterSpec;
use magpie_core::graph::Graph;
use magpie_core::testkit::host_task_options;
use magpie_grpc::{GrpcOptions, GrpcServer};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// One HTTP/1.1 request; returns the status code and the body.
fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (code, body)
}

fn scrape(addr: SocketAddr) -> String {
    let (code, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the sample of `metric` whose labels contain every one of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{metric}{{")) || l.starts_with(&format!("{metric} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn health(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Result<i32, String> {
    rt.block_on(async {
        let fut = async {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            let mut c = HealthClient::new(channel);
            let r = c
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|e| e.to_string())?;
            Ok(r.into_inner().status)
        };
        tokio::time::timeout(Duration::from_secs(10), fut)
            .await
            .map_err(|_| "no health answer within 10 s".to_string())?
    })
}

#[test]
fn metrics_count_steps_sessions_and_peer_bytes_and_only_get_metrics_is_served() {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("m", [format!("127.0.0.1:{}", free_port())])
        .job("w", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let grpc = GrpcOptions {
        metrics_addr: Some("127.0.0.1:0".into()),
        ..GrpcOptions::default()
    };
    let m = GrpcServer::start_with(&spec, "m", 0, &host_task_options("m"), grpc).unwrap();
    let w = GrpcServer::start(&spec, "w", 0, &host_task_options("w")).unwrap();
    let addr = m.metrics_addr().expect("a metrics address");
    assert!(w.metrics_addr().is_none());

    let text = scrape(addr);
    assert_eq!(
        sample(&text, "magpie_steps_total", &["outcome=\"ok\""]),
        Some(0.0)
    );
    assert_eq!(sample(&text, "magpie_sessions_open", &[]), Some(0.0));
    assert!(text.contains("task=\"/job:m/task:0\""), "{text}");

    // A tensor of 16 bytes crosses from w to m in each of two steps; a third step fails.
    let g = Graph::new();
    let x = op(&g, "/job:w/task:0", "x", "TestFour", &[]);
    op(&g, "/job:m/task:0", "y", "TestPass", &[x]);
    let s = magpie_grpc::connect(&format!("grpc://{}", m.local_addr()), &g).unwrap();
    for _ in 0..2 {
        let out = s.run_named(&[], &["y:0"], &[], None).unwrap();
        assert_eq!(out.tensors.len(), 1);
    }
    assert!(s.run_named(&[], &["no_such_node:0"], &[], None).is_err());

    let text = scrape(addr);
    assert_eq!(
        sample(&text, "magpie_steps_total", &["outcome=\"ok\""]),
        Some(2.0),
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
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "magpie_step_duration_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        Some(3.0),
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
            &["peer=\"/job:w/task:0\""]
        ),
        Some(32.0),
        "{text}"
    );
    for gauge in [
        "magpie_rendezvous_entries",
        "magpie_rendezvous_bytes",
        "magpie_scheduler_queued_jobs",
        "magpie_scheduler_workers",
    ] {
        assert!(
            sample(&text, gauge, &[]).is_some(),
            "{gauge} missing: {text}"
        );
    }
    assert!(sample(&text, "magpie_scheduler_steals_total", &["group=\"local\""]).is_some());
    // Both servers run with the default warm window: the process's spinners, one per CPU,
    // counted as running or as refused by the host (SCHED_IDLE or pinning).
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    let spinners = sample(&text, "magpie_warm_spinners", &[]).unwrap();
    let failed = sample(&text, "magpie_warm_spinners_failed", &[]).unwrap();
    let elsewhere = sample(&text, "magpie_warm_spinners_elsewhere", &[]).unwrap();
    let started = spinners + failed + elsewhere;
    assert!(started >= 1.0 && started <= cpus * 4.0, "{text}");
    assert!(
        sample(&text, "magpie_warm_wakes_total", &[]).is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "magpie_warm_spin_seconds_total", &[]).is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "magpie_warm_spinners_elsewhere", &[]).is_some(),
        "{text}"
    );
    for busy in [
        "magpie_busy_poll_spins_total",
        "magpie_busy_poll_caught_total",
        "magpie_busy_poll_preempted_total",
        "magpie_busy_poll_spinning",
    ] {
        assert!(sample(&text, busy, &[]).is_some(), "{busy} missing: {text}");
    }
    // The worker counts what it sent (its exposition without an HTTP endpoint).
    let sent = w.metrics_text();
    assert_eq!(
        sample(
            &sent,
            "magpie_peer_sent_bytes_total",
            &["peer=\"/job:m/task:0\""]
        ),
        Some(32.0),
        "{sent}"
    );
    assert!(sample(&sent, "magpie_partition_steps_total", &[]).unwrap_or(0.0) >= 2.0);

    // Only GET /metrics.
    assert_eq!(http(addr, "GET / HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(addr, "POST /metrics HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(addr, "GET /metrics/x HTTP/1.1\r\n\r\n").0, 404);
    assert_eq!(http(addr, "nonsense\r\n\r\n").0, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http(addr, &huge).0, 431);
    // Still serving after all that.
    scrape(addr);

    s.close().unwrap();
    let text = scrape(addr);
    assert_eq!(
        sample(&text, "magpie_sessions_open", &[]),
        Some(0.0),
        "{text}"
    );
    m.stop(Duration::from_secs(2));
    w.stop(Duration::from_secs(2));
    // The endpoint went with the server.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
}

#[test]
fn health_says_serving_then_not_serving_while_a_stop_drains() {
    register_test_ops();
    let spec = ClusterSpec::builder()
        .job("m", [format!("127.0.0.1:{}", free_port())])
        .build()
        .unwrap();
    let m = std::sync::Arc::new(GrpcServer::start(&spec, "m", 0, &host_task_options("m")).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(
        health(&rt, m.local_addr()),
        Ok(ServingStatus::Serving as i32)
    );

    // A step that never finishes by itself keeps the stop draining until its deadline.
    let g = Graph::new();
    op(&g, "/job:m/task:0", "hang", "TestHang", &[]);
    let s = magpie_grpc::connect(&m.target(), &g).unwrap();
    let step = std::thread::spawn(move || {
        let _ = s.run_named(&[], &["hang:0"], &[], Some(Duration::from_secs(120)));
    });
    magpie_scheduler::test_support::eventually("the step started", || {
        m.core().master().running_steps() > 0
    });
    let stopper = {
        let m = std::sync::Arc::clone(&m);
        std::thread::spawn(move || m.stop(Duration::from_secs(10)))
    };
    // While it drains, health checks see NOT_SERVING (polled: no timing assumed).
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match health(&rt, m.local_addr()) {
            Ok(s) if s == ServingStatus::NotServing as i32 => break,
            Ok(s) if s == ServingStatus::Serving as i32 && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => panic!("health during the drain: {other:?}"),
        }
    }
    // Done: end the drain early by cancelling the step through its deadline.
    assert!(stopper.join().unwrap() >= 1);
    step.join().unwrap();
}
