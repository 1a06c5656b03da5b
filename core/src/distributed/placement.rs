//! Cluster placement: which device of which task runs each node.
//!
//! - A node colocated with another (attribute
//!   [`COLOCATE_ATTR`], set by the variable helpers) goes
//!   where that node goes.
//! - A node without a device spec goes to the master's default device (its task's first
//!   device), as TensorFlow's master places unpinned nodes on its own default device —
//!   or, when that device has no kernel for the op, to the master task's first device that
//!   has one, then to any device of the cluster that has one.
//! - A node with a spec goes to the first device the spec matches that has a kernel,
//!   the master's own devices first (so `/device:CPU:0` means the master's CPU, as in
//!   TensorFlow). A spec nothing matches fails naming the node and the spec.
//! - With soft placement (`allow_soft_placement`, TensorFlow's `ConfigProto` option and
//!   [`MasterSessionOptions::allow_soft_placement`](super::MasterSessionOptions)), a
//!   pinned node whose spec matches no device, or only devices without a kernel for its
//!   op, is placed as TensorFlow places it: on the first device of the spec's job,
//!   replica and task (its device type and index dropped) that has a kernel, and when
//!   there is none, as if it were unpinned. Without soft placement such a pin is an
//!   error naming the node and the spec.

use std::sync::Arc;

use super::error::MasterError;
use super::ops::COLOCATE_ATTR;
use crate::graph::{Graph, Node};
use crate::registry::KernelRegistry;
use crate::transport::{DeviceInfo, TaskName};

/// Places every node of `needed` (indices into `nodes`) on one of `devices`, which
/// are listed with the master task's devices first. Returns the device index per node
/// (`None` for nodes not needed). A device can run a node when some backend in `kernels`
/// has a kernel for its op on the device's type (the task that hosts the device builds
/// the kernel from its own registry). With `allow_soft_placement`, a pin no device
/// satisfies is relaxed as the module docs say instead of failing.
///
/// # Errors
/// [`MasterError`] naming the node when no device can run it, its spec matches none
/// (without soft placement), or its colocation target does not exist.
pub fn place_nodes(
    graph: &Graph,
    nodes: &[Arc<Node>],
    needed: &[bool],
    devices: &[DeviceInfo],
    master: &TaskName,
    kernels: &KernelRegistry,
    allow_soft_placement: bool,
) -> Result<Vec<Option<usize>>, MasterError> {
    let mut placed: Vec<Option<usize>> = vec![None; nodes.len()];
    let cx = Cx {
        graph,
        nodes,
        devices,
        master,
        kernels,
        soft: allow_soft_placement,
    };
    for (i, &need) in needed.iter().enumerate().take(nodes.len()) {
        if need {
            place_one(&cx, i, &mut placed, 0)?;
        }
    }
    Ok(placed)
}

/// What every placement decision reads.
struct Cx<'a> {
    graph: &'a Graph,
    nodes: &'a [Arc<Node>],
    devices: &'a [DeviceInfo],
    master: &'a TaskName,
    kernels: &'a KernelRegistry,
    /// Soft placement: a pin no device can satisfy is relaxed instead of failing.
    soft: bool,
}

fn place_one(
    cx: &Cx<'_>,
    i: usize,
    placed: &mut Vec<Option<usize>>,
    depth: usize,
) -> Result<usize, MasterError> {
    let graph = cx.graph;
    if let Some(d) = placed[i] {
        return Ok(d);
    }
    let node = &cx.nodes[i];
    if let Ok(target) = node.attrs.string(COLOCATE_ATTR) {
        let t = graph
            .node_by_name(&target)
            .filter(|id| id.index() != i && depth < 64)
            .ok_or_else(|| MasterError::BadColocation {
                node: node.name.clone(),
                target: target.clone(),
            })?;
        let d = place_one(cx, t.index(), placed, depth + 1)?;
        placed[i] = Some(d);
        return Ok(d);
    }
    let d = if node.device.is_empty() {
        unpinned(cx, node)?
    } else {
        pinned(cx, node)?
    };
    placed[i] = Some(d);
    Ok(d)
}

/// Whether some backend has a kernel for `node`'s op on `d`'s device type.
fn can_run(cx: &Cx<'_>, node: &Node, d: &DeviceInfo) -> bool {
    cx.kernels
        .has_kernel_for_type(&node.op, &d.name.device_type)
}

/// An unpinned node: the master's default device, else the master's first device that
/// can run it, else any device of the cluster that can.
fn unpinned(cx: &Cx<'_>, node: &Node) -> Result<usize, MasterError> {
    let Cx {
        devices, master, ..
    } = *cx;
    match devices.iter().position(|d| master.owns(&d.name)) {
        Some(first) if can_run(cx, node, &devices[first]) => Ok(first),
        _ => devices
            .iter()
            .position(|d| master.owns(&d.name) && can_run(cx, node, d))
            .or_else(|| devices.iter().position(|d| can_run(cx, node, d)))
            .ok_or_else(|| MasterError::NoKernel {
                node: node.name.clone(),
                op: node.op.to_string(),
                spec: String::new(),
                matched: devices.iter().map(|d| d.name.to_string()).collect(),
            }),
    }
}

/// A pinned node: the first device its spec matches that can run it; with soft
/// placement, a pin nothing satisfies is relaxed (module docs).
fn pinned(cx: &Cx<'_>, node: &Node) -> Result<usize, MasterError> {
    let devices = cx.devices;
    let matched: Vec<usize> = (0..devices.len())
        .filter(|&k| node.device.matches(&devices[k].name))
        .collect();
    if let Some(&k) = matched.iter().find(|&&k| can_run(cx, node, &devices[k])) {
        return Ok(k);
    }
    if cx.soft {
        let mut task_only = (*node.device).clone();
        task_only.device_type = None;
        task_only.device_index = None;
        let same_task = devices
            .iter()
            .position(|d| task_only.matches(&d.name) && can_run(cx, node, d));
        return match same_task {
            Some(k) => Ok(k),
            None => unpinned(cx, node),
        };
    }
    if matched.is_empty() {
        return Err(MasterError::NoMatchingDevice {
            node: node.name.clone(),
            op: node.op.to_string(),
            spec: node.device.to_string(),
            available: devices.iter().map(|d| d.name.to_string()).collect(),
        });
    }
    Err(MasterError::NoKernel {
        node: node.name.clone(),
        op: node.op.to_string(),
        spec: node.device.to_string(),
        matched: matched
            .iter()
            .map(|&k| devices[k].name.to_string())
            .collect(),
    })
}
