//! Scheduler test: a pool whose only work is a pending future uses (almost) no CPU.
//!
//! Alone in its own test binary, because it measures the CPU time of the whole process.

use std::time::Duration;

use futures::channel::oneshot;
use magpie_scheduler::{TaskGraph, ThreadPool};

/// CPU time of the whole process, user + system.
fn process_cpu_time() -> Duration {
    // SAFETY: `getrusage` only writes the struct we pass; all-zero is a valid `rusage`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
fn a_pending_future_costs_no_cpu() {
    let pool = ThreadPool::new(2).unwrap();
    let mut g = TaskGraph::new();
    g.add_async(|| {
        let (tx, rx) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = tx.send(());
        });
        async move {
            let _ = rx.await;
        }
    });
    // Warm up: threads started, topology cached.
    pool.run(&TaskGraph::new()).unwrap();
    let before = process_cpu_time();
    pool.run(&g).unwrap();
    let used = process_cpu_time() - before;
    eprintln!("CPU time used while a future was pending for 300 ms: {used:?}");
    assert!(
        used < Duration::from_millis(60),
        "used {used:?} of CPU while waiting 300 ms"
    );
}
