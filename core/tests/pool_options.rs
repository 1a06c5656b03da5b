//! Session options reach the pool a session creates: its worker count and its idle spin
//! (`SessionOptions::idle_spin`); a shared pool keeps its own.

use std::sync::Arc;

use magpie_core::graph::{DeviceName, Graph};
use magpie_core::registry::KernelRegistry;
use magpie_core::scheduler::{IdleSpin, ThreadPool};
use magpie_core::session::{Session, SessionOptions};
use magpie_core::Device;

#[derive(Debug)]
struct Host(DeviceName);

impl Device for Host {
    fn name(&self) -> &DeviceName {
        &self.0
    }
}

fn options() -> SessionOptions {
    let device: Arc<dyn Device> = Arc::new(Host(DeviceName::local("CPU", 0)));
    SessionOptions::with_devices(vec![device]).kernels(KernelRegistry::new())
}

#[test]
fn a_new_pool_gets_the_sessions_idle_spin() {
    let g = Graph::new();
    let default = Session::new(&g, options().num_workers(1)).unwrap();
    assert_eq!(default.pool().idle_spin(), IdleSpin::LONG);
    assert_eq!(default.pool().num_workers(), 1);

    let spin = IdleSpin::SHORT.max_searching(Some(1));
    let short = Session::new(&g, options().num_workers(2).idle_spin(spin)).unwrap();
    assert_eq!(short.pool().idle_spin(), spin);
    assert_eq!(short.pool().num_workers(), 2);
}

#[test]
fn a_shared_pool_keeps_its_own_idle_spin() {
    let pool = ThreadPool::builder()
        .num_workers(1)
        .idle_spin(IdleSpin::OFF)
        .build()
        .unwrap();
    let opts = SessionOptions {
        pool: Some(pool),
        ..options().idle_spin(IdleSpin::LONG)
    };
    let s = Session::new(&Graph::new(), opts).unwrap();
    assert_eq!(s.pool().idle_spin(), IdleSpin::OFF);
}
