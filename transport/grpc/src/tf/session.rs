//! [`TfSession`]: what a session opened through TensorFlow's master service keeps beside
//! its [`MasterSession`](magpie_core::distributed::MasterSession): the graph version
//! `ExtendSession` checks, the session's options from its `ConfigProto`, and its
//! callables (`MakeCallable`).
//!
//! # Soft placement
//! With `allow_soft_placement`, a node pinned to a device the cluster lacks is placed as
//! TensorFlow would place it: its device type and index are dropped when its task has no
//! such device, and the whole pin is dropped when no task matches (the master then
//! places it on its default device). Without it, such a pin is an error naming the node
//! (Magpie's placement).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use magpie_core::graph::{DeviceSpec, GraphDef};
use magpie_core::transport::DeviceInfo;
use parking_lot::Mutex;

/// Callables one session may hold at once.
pub(crate) const MAX_CALLABLES: usize = 4096;

/// A callable: a signature made once (`MakeCallable`) and run many times
/// (`RunCallable`) with positional feeds.
#[derive(Debug, Clone)]
pub(crate) struct Callable {
    pub(crate) feeds: Vec<String>,
    pub(crate) fetches: Vec<String>,
    pub(crate) targets: Vec<String>,
    pub(crate) timeout: Option<Duration>,
}

#[derive(Debug, Default)]
struct Callables {
    next: i64,
    by_handle: HashMap<i64, Arc<Callable>>,
}

/// The TensorFlow state of one session.
#[derive(Debug)]
pub(crate) struct TfSession {
    /// The graph's version: 0 when created, one more per `ExtendSession`. Held while an
    /// extension is checked and applied, so two extensions never both pass the check.
    pub(crate) version: Mutex<i64>,
    /// The step deadline from `ConfigProto.operation_timeout_in_ms`, if set.
    pub(crate) step_timeout: Option<Duration>,
    /// `ConfigProto.allow_soft_placement`.
    pub(crate) soft_placement: bool,
    callables: Mutex<Callables>,
}

impl TfSession {
    /// A session's state from its `ConfigProto`'s fields.
    pub(crate) fn new(soft_placement: bool, operation_timeout_ms: i64) -> TfSession {
        TfSession {
            version: Mutex::new(0),
            step_timeout: u64::try_from(operation_timeout_ms)
                .ok()
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            soft_placement,
            callables: Mutex::new(Callables::default()),
        }
    }

    /// Adds a callable; `None` when the session holds [`MAX_CALLABLES`] already.
    pub(crate) fn add_callable(&self, c: Callable) -> Option<i64> {
        let mut cs = self.callables.lock();
        if cs.by_handle.len() >= MAX_CALLABLES {
            return None;
        }
        let handle = cs.next;
        cs.next += 1;
        cs.by_handle.insert(handle, Arc::new(c));
        Some(handle)
    }

    /// The callable of `handle`.
    pub(crate) fn callable(&self, handle: i64) -> Option<Arc<Callable>> {
        self.callables.lock().by_handle.get(&handle).cloned()
    }

    /// Releases the callable of `handle`; whether it existed.
    pub(crate) fn release_callable(&self, handle: i64) -> bool {
        self.callables.lock().by_handle.remove(&handle).is_some()
    }

    /// With soft placement, relaxes the device pins of `def` that no device of
    /// `devices` satisfies (see the module docs); without, leaves `def` as it is.
    pub(crate) fn place_softly(&self, def: &mut GraphDef, devices: &[DeviceInfo]) {
        if !self.soft_placement {
            return;
        }
        relax_pins(def, devices);
    }
}

/// Relaxes every pin of `def` no device of `devices` satisfies. Pins that do not parse
/// are left for the import to report.
pub(crate) fn relax_pins(def: &mut GraphDef, devices: &[DeviceInfo]) {
    let fits = |s: &DeviceSpec| devices.iter().any(|d| s.matches(&d.name));
    for node in &mut def.nodes {
        if node.device.is_empty() {
            continue;
        }
        let Ok(mut spec) = DeviceSpec::parse(&node.device) else {
            continue;
        };
        if fits(&spec) {
            continue;
        }
        spec.device_type = None;
        spec.device_index = None;
        node.device = if fits(&spec) {
            spec.to_string()
        } else {
            String::new()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magpie_core::graph::{DeviceName, NodeDef};

    fn node(name: &str, device: &str) -> NodeDef {
        NodeDef {
            name: name.into(),
            op: "NoOp".into(),
            inputs: vec![],
            device: device.into(),
            attrs: vec![],
        }
    }

    #[test]
    fn soft_placement_drops_what_the_cluster_lacks() {
        let devices = vec![DeviceInfo {
            name: DeviceName::parse("/job:worker/replica:0/task:0/device:CPU:0").unwrap(),
            description: String::new(),
        }];
        let mut def = GraphDef {
            nodes: vec![
                node("a", "/job:worker/task:0/device:GPU:0"),
                node("b", "/job:ps/task:0"),
                node("c", "/job:worker/task:0/device:CPU:0"),
                node("d", ""),
            ],
        };
        relax_pins(&mut def, &devices);
        let got: Vec<&str> = def.nodes.iter().map(|n| n.device.as_str()).collect();
        assert_eq!(
            got,
            vec![
                "/job:worker/task:0",
                "",
                "/job:worker/task:0/device:CPU:0",
                ""
            ]
        );

        let strict = TfSession::new(false, 0);
        let mut def = GraphDef {
            nodes: vec![node("a", "/device:GPU:0")],
        };
        strict.place_softly(&mut def, &devices);
        assert_eq!(def.nodes[0].device, "/device:GPU:0");
    }

    #[test]
    fn callables_are_bounded_and_released() {
        let s = TfSession::new(false, 2500);
        assert_eq!(s.step_timeout, Some(Duration::from_millis(2500)));
        let c = Callable {
            feeds: vec![],
            fetches: vec!["y:0".into()],
            targets: vec![],
            timeout: None,
        };
        let h = s.add_callable(c.clone()).unwrap();
        assert_eq!(s.callable(h).unwrap().fetches, vec!["y:0".to_string()]);
        assert!(s.release_callable(h));
        assert!(!s.release_callable(h));
        for _ in 0..MAX_CALLABLES {
            s.add_callable(c.clone()).unwrap();
        }
        assert!(s.add_callable(c).is_none());
    }
}
