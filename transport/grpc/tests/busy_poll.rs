//! Busy polling (`GrpcOptions::busy_poll`) on a real server and client (127.0.0.1, free
//! ports): off, nothing spins; on, the server spins after its answers and the client for
//! them, each spin ended by the message it waits for (or by a preemption, on a loaded
//! machine); steps farther apart than the window stop the server's spinning. Counts from the server's and the
//! process's [`BusyPollStats`], no timings: the window is long enough that a debug build
//! on a loaded machine answers within it.
//!
//! The process's counts are shared by the tests of this file, which take turns
//! (`SERIAL`).

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{pass_four_session, pass_four_steps};
use magpie_grpc::{BusyPollStats, GrpcOptions, GrpcServer, RemoteSession};

static SERIAL: Mutex<()> = Mutex::new(());

/// Options with `busy` as the busy-poll window, no warm window and no periodic
/// keepalive within a test.
fn options(busy: Option<Duration>) -> GrpcOptions {
    GrpcOptions {
        busy_poll: busy,
        warm_window: None,
        keepalive_interval: Duration::from_secs(3600),
        session_idle_timeout: None,
        ..GrpcOptions::default()
    }
}

/// A one-task server and a session on it (`common::pass_four_session`), both with
/// `busy` as their busy-poll window.
fn server_and_session(busy: Option<Duration>) -> (GrpcServer, RemoteSession) {
    pass_four_session(options(busy), options(busy))
}

/// `n` checked steps, `pause` apart.
fn steps(session: &RemoteSession, n: usize, pause: Duration) {
    pass_four_steps(session, n, pause);
}

#[test]
fn off_nothing_spins() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = BusyPollStats::now();
    let (server, session) = server_and_session(None);
    steps(&session, 20, Duration::ZERO);
    assert_eq!(server.busy_poll_stats(), BusyPollStats::default());
    assert_eq!(BusyPollStats::now().spins, before.spins, "the client spun");
    drop(session);
    server.stop(Duration::from_secs(1));
}

#[test]
fn on_the_server_spins_after_answers_and_the_client_for_them() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = BusyPollStats::now();
    // A window no step of a debug build comes near: a spin ends when its message comes,
    // or earlier when another thread wants its CPU (a loaded machine; spinning then
    // backs off), never by running out its window.
    let (server, session) = server_and_session(Some(Duration::from_millis(200)));
    steps(&session, 50, Duration::ZERO);
    let at_server = server.busy_poll_stats();
    assert!(at_server.spins >= 1, "{at_server:?}");
    assert!(
        at_server.caught + at_server.preempted >= 1,
        "no request (nor preemption) ended a spin of the server: {at_server:?}"
    );
    let process = BusyPollStats::now();
    let client_spins = process.spins - before.spins - at_server.spins;
    let client_ended = (process.caught + process.preempted)
        - (before.caught + before.preempted)
        - (at_server.caught + at_server.preempted);
    assert!(client_spins >= 1, "the client never spun: {process:?}");
    assert!(
        client_ended >= 1,
        "no answer (nor preemption) ended a spin of the client: {process:?}"
    );
    drop(session);
    server.stop(Duration::from_secs(1));
    // Spinner tasks end with their window or their runtime: the server's has stopped.
    assert_eq!(server.busy_poll_stats().spinning, 0);
}

#[test]
fn steps_farther_apart_than_the_window_stop_the_spinning() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let window = Duration::from_micros(500);
    let (server, session) = server_and_session(Some(window));
    // Ten times the window between steps: the average gap passes the window within a
    // few steps (the first spins, before any gap was seen).
    let pause = 10 * window;
    steps(&session, 10, pause);
    let learned = server.busy_poll_stats();
    steps(&session, 20, pause);
    let after = server.busy_poll_stats();
    assert_eq!(
        after.spins, learned.spins,
        "the server kept spinning between steps {pause:?} apart: {learned:?} -> {after:?}"
    );
    drop(session);
    server.stop(Duration::from_secs(1));
}
