//! Cluster timelines: a traced step's node records from every task, aligned on the
//! master's clock, and rendered as one Chrome trace (Perfetto, `chrome://tracing`).
//!
//! # Clocks
//!
//! Each task reports when its partition's step started by its own clock
//! ([`TaskTimeline::start_unix_micros`]). Machines' clocks differ, so the master does not
//! trust that time as is: the task's step can only have run between the moment the
//! master sent the request and the moment the answer came back (both by the master's
//! clock). The task's start, taken as a time on the master's clock, is clamped into that
//! window (less the step's own span), so a task whose clock runs ahead or behind still
//! lands where its step actually ran; tasks on one machine keep their exact times.
//!
//! # The trace
//!
//! One process per (task, device) — named by the full device name —, one thread per
//! scheduler worker of that task (named `worker k`), one complete event per node, and a
//! flow arrow from each `_Send` to its `_Recv` on the other task.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{json, Value};

use crate::exec::NodeStats;
use crate::transport::{TaskName, TaskTimeline};

/// The prefixes of the `_Send`/`_Recv` nodes the partitioner inserts; a pair shares the
/// rest of its name.
const SEND_PREFIX: &str = "_magpie/send/";
const RECV_PREFIX: &str = "_magpie/recv/";

/// A traced step's timelines from every task it ran on, on the master's clock.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterTimeline {
    /// One entry per task, in the order of the step's partitions.
    pub tasks: Vec<AlignedTimeline>,
}

/// One task's timeline placed on the master's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct AlignedTimeline {
    /// The task.
    pub task: TaskName,
    /// When the task's step started, from the moment the master sent the step out.
    pub offset: Duration,
    /// The task's node records, times from its own step start.
    pub nodes: Vec<NodeStats>,
}

impl AlignedTimeline {
    /// Places `timeline` of `task` on the master's clock: the request left at `sent` and
    /// the answer came at `answered` (both Unix microseconds by the master's clock).
    pub fn align(task: TaskName, timeline: TaskTimeline, sent: u64, answered: u64) -> Self {
        let window = answered.saturating_sub(sent);
        let span = u64::try_from(timeline.span().as_micros()).unwrap_or(u64::MAX);
        let latest = window.saturating_sub(span);
        // The task's start relative to the send, by the two clocks as they are; clamped
        // into [0, latest] (see the module docs).
        let raw = i128::from(timeline.start_unix_micros) - i128::from(sent);
        let offset = raw.clamp(0, i128::from(latest)) as u64;
        AlignedTimeline {
            task,
            offset: Duration::from_micros(offset),
            nodes: timeline.nodes,
        }
    }
}

impl ClusterTimeline {
    /// Every node record of the step, with its start and end on the master's clock (from
    /// the moment the step was sent out), and its task.
    pub fn events(&self) -> impl Iterator<Item = (&TaskName, &NodeStats, Duration, Duration)> {
        self.tasks.iter().flat_map(|t| {
            t.nodes
                .iter()
                .map(move |n| (&t.task, n, t.offset + n.start, t.offset + n.end))
        })
    }

    /// The merged Chrome trace JSON of the step (see the module docs).
    pub fn chrome_trace_json(&self) -> String {
        let mut events: Vec<Value> = Vec::new();
        let mut pids: HashMap<String, usize> = HashMap::new();
        let mut threads: HashSet<(usize, usize)> = HashSet::new();
        // Where each send and receive ran, by the name they share: (pid, tid, mid-time).
        let mut sends: HashMap<&str, (usize, usize, f64)> = HashMap::new();
        let mut recvs: Vec<(&str, usize, usize, f64)> = Vec::new();
        for (task, n, start, end) in self.events() {
            let next = pids.len() + 1;
            let pid = *pids.entry(n.device.clone()).or_insert_with(|| {
                events.push(json!({
                    "name": "process_name", "ph": "M", "pid": next,
                    "args": { "name": n.device }
                }));
                events.push(json!({
                    "name": "process_sort_index", "ph": "M", "pid": next,
                    "args": { "sort_index": next }
                }));
                next
            });
            if threads.insert((pid, n.worker)) {
                events.push(json!({
                    "name": "thread_name", "ph": "M", "pid": pid, "tid": n.worker,
                    "args": { "name": format!("worker {}", n.worker) }
                }));
            }
            let ts = start.as_secs_f64() * 1e6;
            let dur = end.saturating_sub(start).as_secs_f64() * 1e6;
            events.push(json!({
                "name": n.node,
                "cat": n.op,
                "ph": "X",
                "ts": ts,
                "dur": dur,
                "pid": pid,
                "tid": n.worker,
                "args": {
                    "op": n.op, "device": n.device, "task": task.to_string(),
                    "output_bytes": n.output_bytes
                },
            }));
            let mid = ts + dur / 2.0;
            if let Some(edge) = n.node.strip_prefix(SEND_PREFIX) {
                sends.insert(edge, (pid, n.worker, mid));
            } else if let Some(edge) = n.node.strip_prefix(RECV_PREFIX) {
                recvs.push((edge, pid, n.worker, mid));
            }
        }
        let mut flow = 0u64;
        for (edge, pid, tid, ts) in recvs {
            let Some(&(spid, stid, sts)) = sends.get(edge) else {
                continue;
            };
            flow += 1;
            events.push(json!({
                "name": "tensor", "cat": "send/recv", "ph": "s", "id": flow,
                "pid": spid, "tid": stid, "ts": sts
            }));
            events.push(json!({
                "name": "tensor", "cat": "send/recv", "ph": "f", "bp": "e", "id": flow,
                "pid": pid, "tid": tid, "ts": ts.max(sts)
            }));
        }
        serde_json::to_string_pretty(&json!({ "traceEvents": events, "displayTimeUnit": "ns" }))
            .unwrap_or_else(|_| "{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, device: &str, worker: usize, start_us: u64, end_us: u64) -> NodeStats {
        NodeStats {
            node: name.into(),
            op: "Op".into(),
            device: device.into(),
            worker,
            start: Duration::from_micros(start_us),
            end: Duration::from_micros(end_us),
            output_bytes: 4,
        }
    }

    #[test]
    fn a_task_clock_ahead_or_behind_is_clamped_into_the_request_window() {
        let timeline = |start| TaskTimeline {
            start_unix_micros: start,
            nodes: vec![node("a", "d", 0, 0, 100)],
        };
        let t = || TaskName::new("worker", 0);
        // Sent at 1000, answered at 1500: the step (100 µs) started in [1000, 1400].
        let same = AlignedTimeline::align(t(), timeline(1200), 1000, 1500);
        assert_eq!(same.offset, Duration::from_micros(200));
        let behind = AlignedTimeline::align(t(), timeline(10), 1000, 1500);
        assert_eq!(behind.offset, Duration::ZERO);
        let ahead = AlignedTimeline::align(t(), timeline(9_000_000), 1000, 1500);
        assert_eq!(ahead.offset, Duration::from_micros(400));
    }

    #[test]
    fn the_trace_has_a_process_per_device_named_threads_and_flows() {
        let a = "/job:ps/replica:0/task:0/device:CPU:0";
        let b = "/job:worker/replica:0/task:0/device:CPU:0";
        let tl = ClusterTimeline {
            tasks: vec![
                AlignedTimeline {
                    task: TaskName::new("ps", 0),
                    offset: Duration::ZERO,
                    nodes: vec![node("_magpie/send/e0", a, 1, 0, 10)],
                },
                AlignedTimeline {
                    task: TaskName::new("worker", 0),
                    offset: Duration::from_micros(5),
                    nodes: vec![node("_magpie/recv/e0", b, 0, 0, 20)],
                },
            ],
        };
        let v: Value = serde_json::from_str(&tl.chrome_trace_json()).unwrap();
        let events = v["traceEvents"].as_array().unwrap();
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e["name"] == "process_name")
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [a, b]);
        let threads = events.iter().filter(|e| e["name"] == "thread_name").count();
        assert_eq!(threads, 2);
        let recv = events
            .iter()
            .find(|e| e["name"] == "_magpie/recv/e0")
            .unwrap();
        assert_eq!(
            recv["ts"].as_f64().unwrap(),
            5.0,
            "the worker's offset applies"
        );
        let flows: Vec<&str> = events
            .iter()
            .filter(|e| e["cat"] == "send/recv")
            .map(|e| e["ph"].as_str().unwrap())
            .collect();
        assert_eq!(flows, ["s", "f"]);
    }
}
