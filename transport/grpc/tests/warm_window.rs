//! The warm window (`GrpcOptions::warm_window`, `WarmCpus`) on real servers and clients
//! (127.0.0.1, free ports): off starts no spinner thread; on, a server's requests (or a
//! client's waits, blocking or async) wake the spinners, which sleep again once the process is idle and stay
//! asleep (no periodic wake), and stop with the last server or client that uses them.
//! States and counts from `/proc` and `WarmCpus`, no timings.
//!
//! The spinners are per process, so the tests of this file take turns (`SERIAL`).

#![cfg(target_os = "linux")]

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{pass_four_session, pass_four_steps};
use magpie_grpc::{GrpcOptions, WarmCpus, WarmStats, SPINNER_THREAD_PREFIX};
use magpie_scheduler::test_support::{eventually, thread_activity, threads_where};

static SERIAL: Mutex<()> = Mutex::new(());

/// Options with `warm` as the warm window and no periodic keepalive within a test.
fn options(warm: Option<Duration>) -> GrpcOptions {
    GrpcOptions {
        warm_window: warm,
        keepalive_interval: Duration::from_secs(3600),
        session_idle_timeout: None,
        ..GrpcOptions::default()
    }
}

/// The ids of this process's spinner threads.
fn spinner_threads() -> Vec<i32> {
    threads_where(|name| name.starts_with(SPINNER_THREAD_PREFIX))
}

/// Thread `tid`'s state letter and its context switches so far.
fn activity(tid: i32) -> (char, u64) {
    thread_activity(tid).expect("a spinner ended while its handle lives")
}

/// Whether this process runs no spinner: the host refused every one (no `SCHED_IDLE` or
/// no pinning for this process), or another process of the machine holds every CPU (a
/// server or bench running beside the tests). Then nothing spins, nothing is counted as
/// spinning, and the tests below have nothing to watch (`warm.rs`'s unit tests cover both
/// paths).
fn refused_everywhere(stats: &WarmStats) -> bool {
    if stats.spinners > 0 {
        return false;
    }
    assert!(stats.failed + stats.elsewhere >= 1, "{stats:?}");
    assert_eq!(
        spinner_threads(),
        Vec::<i32>::new(),
        "the refused ones ended"
    );
    eprintln!("no spinner runs in this process: {stats:?}");
    true
}

/// Waits until every spinner of the process sleeps; their stats then.
fn all_asleep() -> WarmStats {
    eventually("all asleep", || {
        let s = WarmCpus::running_stats().unwrap();
        s.asleep == s.spinners && s.spinning == 0
    });
    WarmCpus::running_stats().unwrap()
}

#[test]
fn off_starts_no_spinner_thread() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (server, session) = pass_four_session(options(None), options(None));
    pass_four_steps(&session, 20, Duration::ZERO);
    assert!(WarmCpus::running_stats().is_none());
    assert_eq!(spinner_threads(), Vec::<i32>::new());
    drop(session);
    server.stop(Duration::from_secs(1));
}

#[test]
fn a_server_warms_after_requests_then_its_spinners_sleep_and_stop_with_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = std::thread::available_parallelism().unwrap().get();
    let (server, session) =
        pass_four_session(options(Some(Duration::from_millis(1))), options(None));
    let started = WarmCpus::running_stats().expect("the server's spinners");
    let ran_or_ended = started.spinners + started.failed + started.elsewhere;
    assert!(ran_or_ended >= 1);
    assert!(ran_or_ended <= cpus.max(1) * 4);
    assert_eq!(spinner_threads().len(), started.spinners);
    if refused_everywhere(&started) {
        drop(session);
        server.stop(Duration::from_secs(1));
        return;
    }
    // Asleep first (the server's start touched them), so that the requests' touches
    // must wake them: spinners still spinning from an earlier touch would only have
    // their deadline moved.
    let started = all_asleep();
    pass_four_steps(&session, 20, Duration::ZERO);
    // The server's runtime went idle after the requests: its touches woke the spinners.
    eventually("woken by the requests", || {
        WarmCpus::running_stats().unwrap().wakes > started.wakes
    });
    // Idle: past the window every spinner sleeps...
    all_asleep();
    // ...and stays asleep: many samples in a row see each spinner thread in state `S`
    // with no context switch and no new wake (a periodic wake would be caught).
    let tids = spinner_threads();
    eventually("every spinner thread in state S", || {
        tids.iter().all(|&t| activity(t).0 == 'S')
    });
    let quiet = WarmCpus::running_stats().unwrap();
    let first: Vec<(char, u64)> = tids.iter().map(|&t| activity(t)).collect();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(2));
        let now: Vec<(char, u64)> = tids.iter().map(|&t| activity(t)).collect();
        assert!(now.iter().all(|(state, _)| *state == 'S'), "{now:?}");
        assert_eq!(now, first, "a spinner woke while the server was idle");
    }
    let later = WarmCpus::running_stats().unwrap();
    assert_eq!(later.wakes, quiet.wakes);
    assert_eq!(later.spun, quiet.spun);
    // The next burst wakes them again.
    pass_four_steps(&session, 5, Duration::ZERO);
    eventually("woken by the next burst", || {
        WarmCpus::running_stats().unwrap().wakes > later.wakes
    });
    drop(session);
    server.stop(Duration::from_secs(1));
    drop(server);
    // The runtime's hook held the last handle: the spinners are gone with it.
    eventually("spinners gone", || {
        WarmCpus::running_stats().is_none() && spinner_threads().is_empty()
    });
}

#[test]
fn a_client_warms_while_it_waits_for_its_responses() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (server, session) =
        pass_four_session(options(None), options(Some(Duration::from_millis(1))));
    let started = WarmCpus::running_stats().expect("the client's spinners");
    if refused_everywhere(&started) {
        drop(session);
        server.stop(Duration::from_secs(1));
        return;
    }
    let started = all_asleep();
    pass_four_steps(&session, 20, Duration::ZERO);
    eventually("woken by the client's waits", || {
        WarmCpus::running_stats().unwrap().wakes > started.wakes
    });
    drop(session);
    eventually("spinners gone with the session", || {
        WarmCpus::running_stats().is_none() && spinner_threads().is_empty()
    });
    server.stop(Duration::from_secs(1));
}

#[test]
fn a_client_warms_while_its_async_calls_wait() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (server, session) =
        pass_four_session(options(None), options(Some(Duration::from_millis(1))));
    let started = WarmCpus::running_stats().expect("the client's spinners");
    if refused_everywhere(&started) {
        drop(session);
        server.stop(Duration::from_secs(1));
        return;
    }
    // Only the shared runtime of async calls runs now (the session's own runtime runs
    // only under blocking calls, and the server keeps no window): its parks must touch.
    let started = all_asleep();
    for _ in 0..20 {
        let out =
            futures::executor::block_on(session.run_named_async(&[], &["y:0"], &[], None)).unwrap();
        assert_eq!(
            out.tensors[0].as_slice::<f32>().unwrap(),
            &[1.0, 2.0, 3.0, 4.0]
        );
    }
    eventually("woken by the async calls' waits", || {
        WarmCpus::running_stats().unwrap().wakes > started.wakes
    });
    // The shared runtime outlives the session but holds no window of its own.
    drop(session);
    eventually("spinners gone with the session", || {
        WarmCpus::running_stats().is_none() && spinner_threads().is_empty()
    });
    server.stop(Duration::from_secs(1));
}
