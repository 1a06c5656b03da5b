//! Helpers for tests of threads that wait (feature `test-support`; for the workspace's
//! own tests, through dev-dependencies, so no library build carries it): polling a
//! condition under a deadline, and what `/proc` says of this process's threads (asleep
//! or running, context switches), to check that idle threads sleep without measuring
//! time.
//!
//! Every wait here has a deadline: a condition that never holds fails the test with its
//! last complaint instead of hanging it. The deadlines are hang guards far above the
//! expected time, never timing claims.

use std::time::{Duration, Instant};

/// The deadline of [`eventually`]: far above what any condition of a test should take,
/// even on a loaded machine.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// How often the helpers poll.
const POLL: Duration = Duration::from_millis(2);

/// Polls `cond` until it holds; panics naming `what` ("never {what}") after
/// [`HANG_GUARD`].
///
/// # Panics
///
/// When `cond` does not hold within the hang guard.
#[track_caller]
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    eventually_ok(HANG_GUARD, || {
        if cond() {
            Ok(())
        } else {
            Err(format!("hang guard: never {what}"))
        }
    });
}

/// Polls `check` until it passes; panics with its last complaint after `deadline`.
///
/// # Panics
///
/// When `check` still fails at the deadline.
#[track_caller]
pub fn eventually_ok(deadline: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let until = Instant::now() + deadline;
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= until => panic!("{e} (after {deadline:?})"),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// What `/proc` says of thread `tid` of this process: its state letter (`R` running or
/// runnable, `S` asleep, ...) and its context switches so far (voluntary and not);
/// `None` once the thread has ended (or without `/proc`).
#[cfg(target_os = "linux")]
pub fn thread_activity(tid: i32) -> Option<(char, u64)> {
    let dir = format!("/proc/self/task/{tid}");
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // `pid (comm) state ...`: the name may hold spaces and parentheses.
    let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let switches = status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.rsplit(char::is_whitespace).next()?.parse::<u64>().ok())
        .sum();
    Some((state, switches))
}

/// The ids of this process's threads whose name (`/proc/self/task/*/comm`) `matches`.
#[cfg(target_os = "linux")]
pub fn threads_where(matches: impl Fn(&str) -> bool) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        matches(comm.trim_end())
            .then(|| e.file_name().to_str()?.parse().ok())
            .flatten()
    })
    .collect()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc, which Miri's isolation does not allow")]
    fn a_sleeping_thread_is_seen_asleep_by_name_and_gone_once_it_ends() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("ts-sleeper".into())
            .spawn(move || rx.recv())
            .unwrap();
        let mut tid = 0;
        eventually("the sleeper named and asleep", || {
            match threads_where(|n| n == "ts-sleeper")[..] {
                [id] => {
                    tid = id;
                    thread_activity(id).is_some_and(|(state, _)| state == 'S')
                }
                _ => false,
            }
        });
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
        assert_eq!(thread_activity(tid), None);
        assert!(threads_where(|n| n == "ts-sleeper").is_empty());
    }

    #[test]
    fn eventually_ok_fails_with_the_last_complaint_at_its_deadline() {
        let mut n = 0;
        let e = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            eventually_ok(Duration::ZERO, || {
                n += 1;
                Err(format!("complaint {n}"))
            })
        }))
        .unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert!(msg.starts_with("complaint 1"), "{msg}");
        let mut calls = 0;
        eventually("the third call", || {
            calls += 1;
            calls == 3
        });
        assert_eq!(calls, 3);
    }
}
