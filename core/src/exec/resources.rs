//! Resource pools: named capacities that throttle the ops that declare them, so that
//! communication-heavy ops run one at a time and the device can do other work meanwhile.
//!
//! A pool has a capacity (`net` = 1, `disk` = 2); an op needs one slot of every pool it
//! names (attribute `_pools`, or [`Graph::with_resource_pools`](crate::graph::Graph)).
//! Host↔device copies need the implicit pool `copy:<device>` of their device (capacity
//! [`DEFAULT_COPY_POOL_CAPACITY`] unless the session declares that pool itself).
//!
//! # Guarantees
//! - At most `capacity` ops of a pool run at once, across every step of the session.
//! - An op waiting for a slot holds no worker thread: it waits in a future.
//! - Waiters are served in the order they asked (the semaphore is fair).
//! - No deadlock between pools: an op acquires its pools in one global order (by pool
//!   index), so two ops never hold slots the other waits for.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::SessionError;

/// The capacity of a device's implicit copy pool when the session does not declare it.
pub const DEFAULT_COPY_POOL_CAPACITY: usize = 1;

/// One pool, shared by every plan of a session.
#[derive(Clone)]
pub(crate) struct PoolHandle {
    pub(crate) index: usize,
    pub(crate) name: Arc<str>,
    semaphore: Arc<Semaphore>,
}

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool {:?}", self.name)
    }
}

/// The pools of one session.
#[derive(Default)]
pub(crate) struct ResourcePools {
    pools: Mutex<HashMap<String, PoolHandle>>,
}

impl fmt::Debug for ResourcePools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pools = self.pools.lock();
        f.debug_list().entries(pools.values()).finish()
    }
}

/// The name of a device's implicit copy pool.
pub(crate) fn copy_pool_name(device: &str) -> String {
    format!("copy:{device}")
}

impl ResourcePools {
    /// The pools a session declares. A zero capacity or a name given twice is an error.
    pub(crate) fn new(declared: &[(String, usize)]) -> Result<ResourcePools, SessionError> {
        let pools = ResourcePools::default();
        for (name, capacity) in declared {
            if *capacity == 0 {
                return Err(SessionError::InvalidOptions(format!(
                    "resource pool {name:?} has capacity 0: no op needing it could ever run"
                )));
            }
            let mut map = pools.pools.lock();
            if map.contains_key(name) {
                return Err(SessionError::InvalidOptions(format!(
                    "resource pool {name:?} is declared twice"
                )));
            }
            let index = map.len();
            map.insert(name.clone(), PoolHandle::new(index, name, *capacity));
        }
        Ok(pools)
    }

    /// The pool `name`, which the session must have declared; the error names the node.
    pub(crate) fn get(&self, name: &str, node: &str, op: &str) -> Result<PoolHandle, SessionError> {
        let pools = self.pools.lock();
        if let Some(p) = pools.get(name) {
            return Ok(p.clone());
        }
        let mut declared: Vec<String> = pools
            .keys()
            .filter(|k| !k.starts_with("copy:"))
            .cloned()
            .collect();
        declared.sort();
        Err(SessionError::UnknownResourcePool {
            node: node.to_string(),
            op: op.to_string(),
            pool: name.to_string(),
            declared,
        })
    }

    /// The pool `name`, created with `capacity` if the session did not declare it.
    pub(crate) fn get_or_create(&self, name: &str, capacity: usize) -> PoolHandle {
        let mut map = self.pools.lock();
        let index = map.len();
        map.entry(name.to_string())
            .or_insert_with(|| PoolHandle::new(index, name, capacity))
            .clone()
    }
}

impl PoolHandle {
    fn new(index: usize, name: &str, capacity: usize) -> PoolHandle {
        PoolHandle {
            index,
            name: name.into(),
            semaphore: Arc::new(Semaphore::new(capacity)),
        }
    }
}

/// Slots held while an op runs; dropping them frees the slots.
#[derive(Debug)]
pub(crate) struct Permits(#[allow(dead_code)] Vec<OwnedSemaphorePermit>);

/// Waits (without a thread) for one slot of each pool, in the pools' global order.
/// `pools` must be sorted by index.
pub(crate) async fn acquire(pools: &[PoolHandle]) -> Permits {
    let mut held = Vec::with_capacity(pools.len());
    for p in pools {
        // A pool's semaphore is never closed, so acquiring cannot fail.
        if let Ok(permit) = Arc::clone(&p.semaphore).acquire_owned().await {
            held.push(permit);
        }
    }
    Permits(held)
}
