//! Step timelines as Chrome trace JSON, which Perfetto (ui.perfetto.dev) and
//! `chrome://tracing` open: one complete event (`"ph": "X"`) per node, on a track per
//! scheduler worker (named `worker k`), with the device and output bytes as arguments.
//! A cluster step's timelines merge in
//! [`ClusterTimeline`](crate::distributed::ClusterTimeline).

use serde_json::{json, Value};

use super::step::NodeStats;

/// Renders a step's node records as a Chrome trace JSON document.
pub fn chrome_trace_json(nodes: &[NodeStats]) -> String {
    let mut events: Vec<Value> = Vec::with_capacity(nodes.len() + 1);
    events.push(json!({
        "name": "process_name", "ph": "M", "pid": 1,
        "args": { "name": "magpie step" }
    }));
    let mut workers: Vec<usize> = nodes.iter().map(|n| n.worker).collect();
    workers.sort_unstable();
    workers.dedup();
    for w in workers {
        events.push(json!({
            "name": "thread_name", "ph": "M", "pid": 1, "tid": w,
            "args": { "name": format!("worker {w}") }
        }));
    }
    for n in nodes {
        let ts = n.start.as_secs_f64() * 1e6;
        let dur = (n.end.saturating_sub(n.start)).as_secs_f64() * 1e6;
        events.push(json!({
            "name": n.node,
            "cat": n.op,
            "ph": "X",
            "ts": ts,
            "dur": dur,
            "pid": 1,
            "tid": n.worker,
            "args": { "op": n.op, "device": n.device, "output_bytes": n.output_bytes },
        }));
    }
    serde_json::to_string_pretty(&json!({ "traceEvents": events, "displayTimeUnit": "ns" }))
        .unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn one_complete_event_per_node() {
        let n = NodeStats {
            node: "z".into(),
            op: "Add".into(),
            device: "/job:localhost/replica:0/task:0/device:CPU:0".into(),
            worker: 1,
            start: Duration::from_micros(5),
            end: Duration::from_micros(7),
            output_bytes: 4,
        };
        let v: Value = serde_json::from_str(&chrome_trace_json(&[n])).unwrap();
        let thread = &v["traceEvents"][1];
        assert_eq!(thread["name"], "thread_name");
        assert_eq!(thread["args"]["name"], "worker 1");
        let ev = &v["traceEvents"][2];
        assert_eq!(ev["name"], "z");
        assert_eq!(ev["ph"], "X");
        assert_eq!(ev["tid"], 1);
        assert!((ev["dur"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    }
}
