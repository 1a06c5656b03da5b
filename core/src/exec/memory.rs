//! Per-step memory accounting and per-device memory budgets.
//!
//! A tensor counts against its producer's device from the moment it is stored until the
//! last consumer that reads it has finished (or, for a fetched tensor, until the step
//! ends). Each device's live bytes and peak are tracked; the peak is reported in the
//! step's metadata.
//!
//! # Budgets
//! A device may have a budget. A node on such a device that declares its output bytes
//! (attribute `_output_bytes`) first reserves them: if they do not fit beside the live
//! bytes, the node waits — in a future, holding no worker — until memory is freed. If
//! nothing that could free memory remains (no task running, none ready to start, only
//! waiters), the step fails with [`SessionError::MemoryBudgetExceeded`] naming the op, the
//! device and the budget: a budget never hangs a step.
//!
//! To know "none ready to start", the gate keeps its own count of unfinished predecessors
//! per task, updated as tasks finish, and the number of tasks that are ready but not
//! started. All of it lives under one mutex, and is only kept when some device of the
//! plan has a budget; without budgets the accounting is two atomics per tensor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};

use parking_lot::Mutex;

use super::error::SessionError;
use super::plan::ExecPlan;

/// Peak memory of one device in one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMemoryStats {
    /// The device's full name.
    pub device: String,
    /// The most bytes of live tensors it held at once.
    pub peak_bytes: u64,
    /// Its budget, if it has one.
    pub budget: Option<u64>,
}

struct DeviceMemory {
    live: AtomicU64,
    peak: AtomicU64,
}

struct Waiter {
    task: u32,
    device: usize,
    bytes: u64,
    waker: Waker,
}

/// Memory accounting for one step.
pub(crate) struct MemoryTracker {
    devices: Box<[DeviceMemory]>,
    gate: Option<Mutex<Gate>>,
}

struct Gate {
    budgets: Vec<Option<u64>>,
    /// Unfinished predecessors of each task.
    pending: Vec<u32>,
    /// Tasks whose predecessors have all finished but that have not started.
    ready: usize,
    /// Tasks started and not finished, not waiting for memory.
    active: usize,
    waiters: Vec<Waiter>,
    /// Set when only waiters remain: every waiter then fails.
    stuck: bool,
}

impl MemoryTracker {
    pub(crate) fn new(plan: &ExecPlan) -> MemoryTracker {
        let devices = plan
            .devices
            .iter()
            .map(|_| DeviceMemory {
                live: AtomicU64::new(0),
                peak: AtomicU64::new(0),
            })
            .collect();
        let gate = plan.budgets.iter().any(Option::is_some).then(|| {
            let topo = &plan.topology;
            let pending: Vec<u32> = (0..topo.len() as u32)
                .map(|t| topo.num_predecessors(t))
                .collect();
            Mutex::new(Gate {
                budgets: plan.budgets.clone(),
                ready: pending.iter().filter(|p| **p == 0).count(),
                pending,
                active: 0,
                waiters: Vec::new(),
                stuck: false,
            })
        });
        MemoryTracker { devices, gate }
    }

    /// Counts `bytes` as live on `device`.
    pub(crate) fn add(&self, device: usize, bytes: u64) {
        let d = &self.devices[device];
        let now = d.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        d.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Releases `bytes` on `device`.
    pub(crate) fn release(&self, device: usize, bytes: u64) {
        self.devices[device]
            .live
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A task starts (budget mode only).
    pub(crate) fn task_started(&self) {
        if let Some(g) = &self.gate {
            let mut g = g.lock();
            g.ready = g.ready.saturating_sub(1);
            g.active += 1;
        }
    }

    /// A task finished, its outputs stored and its inputs released (budget mode only).
    pub(crate) fn task_finished(&self, plan: &ExecPlan, task: u32) {
        if let Some(g) = &self.gate {
            let mut g = g.lock();
            for s in plan.topology.successors(task) {
                let p = &mut g.pending[*s as usize];
                *p -= 1;
                if *p == 0 {
                    g.ready += 1;
                }
            }
            g.active = g.active.saturating_sub(1);
            g.check_stuck(&self.devices);
            for w in g.waiters.drain(..) {
                w.waker.wake();
            }
        }
    }

    /// Reserves `bytes` on `device` for task `task`, waiting until they fit under the
    /// budget. Fails when they never can.
    pub(crate) async fn reserve(
        &self,
        plan: &ExecPlan,
        task: u32,
        device: usize,
        bytes: u64,
    ) -> Result<(), SessionError> {
        let Some(gate) = &self.gate else {
            self.add(device, bytes);
            return Ok(());
        };
        let mut waiting = false;
        std::future::poll_fn(|cx| {
            let mut g = gate.lock();
            let budget = g.budgets[device].unwrap_or(u64::MAX);
            let live = self.devices[device].live.load(Ordering::Relaxed);
            if live.saturating_add(bytes) <= budget {
                self.add(device, bytes);
                if waiting {
                    g.active += 1;
                    g.waiters.retain(|w| w.task != task);
                }
                return Poll::Ready(Ok(()));
            }
            if !waiting {
                waiting = true;
                g.active = g.active.saturating_sub(1);
            }
            g.waiters.retain(|w| w.task != task);
            g.waiters.push(Waiter {
                task,
                device,
                bytes,
                waker: cx.waker().clone(),
            });
            g.check_stuck(&self.devices);
            if g.stuck {
                g.waiters.retain(|w| w.task != task);
                for w in g.waiters.drain(..) {
                    w.waker.wake();
                }
                let node = &plan.nodes[task as usize].node;
                return Poll::Ready(Err(SessionError::MemoryBudgetExceeded {
                    node: node.name.clone(),
                    op: node.op.to_string(),
                    device: plan.device_name(task as usize),
                    budget,
                    needed: bytes,
                    live,
                }));
            }
            Poll::Pending
        })
        .await
    }

    /// Per-device peaks.
    pub(crate) fn stats(&self, plan: &ExecPlan) -> Vec<DeviceMemoryStats> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceMemoryStats {
                device: plan.devices[i].name().to_string(),
                peak_bytes: d.peak.load(Ordering::Relaxed),
                budget: plan.budgets[i],
            })
            .collect()
    }
}

impl Gate {
    /// Only waiters remain and none of them fits: nothing can ever free memory.
    fn check_stuck(&mut self, devices: &[DeviceMemory]) {
        let fits = |w: &Waiter| {
            let live = devices[w.device].live.load(Ordering::Relaxed);
            live.saturating_add(w.bytes) <= self.budgets[w.device].unwrap_or(u64::MAX)
        };
        if self.active == 0 && self.ready == 0 && !self.waiters.iter().any(fits) {
            self.stuck = !self.waiters.is_empty();
        }
    }
}
