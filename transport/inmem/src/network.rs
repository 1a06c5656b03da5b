//! [`InMemNetwork`]: the "wire" of in-process clusters — the running task servers by
//! address.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use magpie_core::distributed::TaskServer;
use parking_lot::RwLock;

/// Task servers by address. Tests make their own; [`InMemNetwork::global`] is the
/// process's default (what `inmem://` targets reach).
#[derive(Debug, Default)]
pub struct InMemNetwork {
    servers: RwLock<HashMap<String, Arc<TaskServer>>>,
}

static GLOBAL: LazyLock<Arc<InMemNetwork>> = LazyLock::new(|| Arc::new(InMemNetwork::default()));

impl InMemNetwork {
    /// A new, empty network.
    pub fn new() -> Arc<InMemNetwork> {
        Arc::new(InMemNetwork::default())
    }

    /// The process's default network.
    pub fn global() -> Arc<InMemNetwork> {
        Arc::clone(&GLOBAL)
    }

    /// The server at `address`, if one is serving there.
    pub fn lookup(&self, address: &str) -> Option<Arc<TaskServer>> {
        self.servers.read().get(address).cloned()
    }

    /// Binds `address`; `false` when it is taken.
    pub(crate) fn bind(&self, address: &str, server: Arc<TaskServer>) -> bool {
        let mut s = self.servers.write();
        if s.contains_key(address) {
            return false;
        }
        s.insert(address.to_string(), server);
        true
    }

    /// Frees `address` if `server` holds it.
    pub(crate) fn unbind(&self, address: &str, server: &Arc<TaskServer>) {
        let mut s = self.servers.write();
        if s.get(address).is_some_and(|x| Arc::ptr_eq(x, server)) {
            s.remove(address);
        }
    }
}
