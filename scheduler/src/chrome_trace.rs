//! [`ChromeTraceObserver`]: an [`Observer`] that records one span per task and writes them
//! as Chrome trace JSON (one complete event, `"ph": "X"`, per task, on a track per
//! thread), which Perfetto (ui.perfetto.dev) and `chrome://tracing` open.
//!
//! Recording costs a clock read per event, an atomic store per start and a short mutex
//! section per finish; it is meant for studying runs, not for production hot paths.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::sync::plain::Mutex;

use super::observer::{Observer, TaskEvent};
use super::task_graph::TaskGraph;

/// One task's execution, as recorded by a [`ChromeTraceObserver`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Span {
    /// The task's index.
    pub task: u32,
    /// The thread that started it ([`TaskEvent::worker`]).
    pub worker: usize,
    /// When it started, from the observer's creation.
    pub start: Duration,
    /// When it finished, on the same clock.
    pub end: Duration,
}

/// Records a span per task of the runs it observes; renders them as Chrome trace JSON.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use magpie_scheduler::{ChromeTraceObserver, RunControl, TaskGraph, ThreadPool};
///
/// let mut graph = TaskGraph::new();
/// let a = graph.add(|| {});
/// let b = graph.add(|| {});
/// graph.precede(a, b);
/// graph.task(a).name("load");
/// graph.task(b).name("sum");
/// let trace = Arc::new(ChromeTraceObserver::for_graph(&graph));
/// let control = RunControl { observer: Some(trace.clone()), ..RunControl::default() };
/// ThreadPool::new(2).unwrap().run_with(&graph, &control).unwrap();
/// assert_eq!(trace.spans().len(), 2);
/// assert!(trace.to_json().contains(r#""name": "load""#));
/// ```
pub struct ChromeTraceObserver {
    origin: Instant,
    names: Vec<String>,
    /// Per task: nanoseconds since `origin` of its last start, plus one (0: none).
    starts: Box<[AtomicU64]>,
    /// Per task: the worker that started it.
    start_workers: Box<[AtomicU32]>,
    spans: Mutex<Vec<Span>>,
}

impl ChromeTraceObserver {
    /// An observer for runs of topologies of `num_tasks` tasks, named by index.
    pub fn new(num_tasks: usize) -> ChromeTraceObserver {
        ChromeTraceObserver::with_names((0..num_tasks).map(|t| format!("task {t}")).collect())
    }

    /// An observer for runs of topologies of `names.len()` tasks; task `t` is called
    /// `names[t]` in the trace.
    pub fn with_names(names: Vec<String>) -> ChromeTraceObserver {
        let n = names.len();
        ChromeTraceObserver {
            origin: Instant::now(),
            names,
            starts: (0..n).map(|_| AtomicU64::new(0)).collect(),
            start_workers: (0..n).map(|_| AtomicU32::new(0)).collect(),
            spans: Mutex::new(Vec::with_capacity(n)),
        }
    }

    /// An observer for runs of `graph`, with its tasks' names
    /// ([`TaskGraph::name`]; unnamed tasks are called `task <index>`).
    pub fn for_graph(graph: &TaskGraph) -> ChromeTraceObserver {
        let names = graph
            .ids()
            .map(|id| match graph.name(id) {
                Some(name) => name.to_owned(),
                None => format!("task {}", id.index()),
            })
            .collect();
        ChromeTraceObserver::with_names(names)
    }

    fn since_origin(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin)
    }

    /// The spans recorded so far, by start time.
    pub fn spans(&self) -> Vec<Span> {
        let mut spans = self.spans.lock().clone();
        spans.sort_by_key(|s| (s.start, s.end, s.task));
        spans
    }

    /// Takes the spans recorded so far (by start time), leaving none: call it between runs
    /// to trace each run apart. The clock keeps running from the observer's creation.
    pub fn take_spans(&self) -> Vec<Span> {
        let mut spans = std::mem::take(&mut *self.spans.lock());
        spans.sort_by_key(|s| (s.start, s.end, s.task));
        spans
    }

    /// The spans recorded so far as a Chrome trace JSON document.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\n  \"displayTimeUnit\": \"ns\",\n  \"traceEvents\": [\n");
        out.push_str(
            "    {\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 1, \
             \"args\": {\"name\": \"magpie-scheduler run\"}}",
        );
        for s in self.spans() {
            let name = self.names.get(s.task as usize).map_or("?", String::as_str);
            let ts = s.start.as_secs_f64() * 1e6;
            let dur = s.end.saturating_sub(s.start).as_secs_f64() * 1e6;
            out.push_str(",\n    {\"name\": \"");
            escape_json(&mut out, name);
            let _ = write!(
                out,
                "\", \"ph\": \"X\", \"ts\": {ts:.3}, \"dur\": {dur:.3}, \"pid\": 1, \
                 \"tid\": {}, \"args\": {{\"task\": {}}}}}",
                s.worker, s.task
            );
        }
        out.push_str("\n  ]\n}\n");
        out
    }
}

/// Appends `s` to `out` as the inside of a JSON string.
fn escape_json(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

impl Observer for ChromeTraceObserver {
    fn task_started(&self, event: &TaskEvent) {
        let t = event.task as usize;
        let (Some(start), Some(worker)) = (self.starts.get(t), self.start_workers.get(t)) else {
            return;
        };
        let ns = u64::try_from(self.since_origin(event.at).as_nanos()).unwrap_or(u64::MAX - 1);
        // `Relaxed`: the same task's `task_finished` happens after this call (see
        // `observer`), which orders these stores before its loads.
        worker.store(event.worker as u32, Ordering::Relaxed);
        start.store(ns + 1, Ordering::Relaxed);
    }

    fn task_finished(&self, event: &TaskEvent) {
        let t = event.task as usize;
        let Some(start) = self.starts.get(t).map(|s| s.swap(0, Ordering::Relaxed)) else {
            return;
        };
        if start == 0 {
            return;
        }
        let span = Span {
            task: event.task,
            worker: self.start_workers[t].load(Ordering::Relaxed) as usize,
            start: Duration::from_nanos(start - 1),
            end: self.since_origin(event.at),
        };
        self.spans.lock().push(span);
    }
}

impl fmt::Debug for ChromeTraceObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChromeTraceObserver")
            .field("tasks", &self.names.len())
            .field("spans", &self.spans.lock().len())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(magpie_loom)))]
mod tests {
    use super::*;

    #[test]
    fn spans_pair_starts_with_ends_and_render_as_json() {
        let names = vec!["a \"quoted\"\nname".to_owned(), "b".to_owned()];
        let trace = ChromeTraceObserver::with_names(names);
        let t0 = Instant::now();
        trace.task_started(&TaskEvent::new(1, 3, t0));
        trace.task_started(&TaskEvent::new(0, 0, t0));
        trace.task_finished(&TaskEvent::new(0, 1, t0 + Duration::from_micros(2)));
        trace.task_finished(&TaskEvent::new(1, 2, t0 + Duration::from_micros(5)));
        // Out of range, or finished twice: ignored.
        trace.task_started(&TaskEvent::new(9, 0, t0));
        trace.task_finished(&TaskEvent::new(1, 2, t0));
        let spans = trace.spans();
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[1].task, spans[1].worker), (1, 3));
        assert!(spans.iter().all(|s| s.start <= s.end));
        let json = trace.to_json();
        assert!(json.contains(r#""name": "a \"quoted\"\nname""#), "{json}");
        assert!(json.contains(r#""tid": 3"#));
        assert_eq!(json.matches("\"ph\": \"X\"").count(), 2);
        assert_eq!(trace.take_spans().len(), 2);
        assert!(trace.spans().is_empty());
    }
}
