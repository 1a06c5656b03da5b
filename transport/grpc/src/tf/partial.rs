//! TensorFlow's partial runs (`PartialRunSetup`, then `RunStep` with a
//! `partial_run_handle`): one step whose feeds arrive and whose fetches leave over several
//! calls, each call feeding some of the tensors named at setup and fetching some others.
//!
//! # What the client sees (TensorFlow's rules, checked as its master checks them)
//! - A handle this session does not hold (never made, finished, failed, expired) is
//!   `INVALID_ARGUMENT` "Must run PartialRunSetup before performing partial runs".
//! - A feed not named at setup, or fed before, is `INVALID_ARGUMENT` ("The feed x:0 was
//!   not specified in partial_run_setup." / "... has already been fed."); the same for
//!   fetches ("... has already been fetched."). A fetch that needs a feed not fed yet is
//!   `INVALID_ARGUMENT` "Fetch x:0 can't be computed from the feeds that have been fed so
//!   far." These checks leave the partial run as it was.
//! - A call that fails while it runs ends the partial run (its handle is gone), as does
//!   the call after which every feed was fed and every fetch fetched (that call also runs
//!   the setup's targets). A call whose client goes away mid-step ends it too.
//! - Calls on one handle run one at a time: a call made while another is running on the
//!   same handle finds no such handle (TensorFlow would run the two concurrently).
//!
//! # How Magpie runs it
//! Each call runs one ordinary step of the master session over the nodes that call
//! needs, and **no node runs twice** across the calls of one partial run: every output a
//! call computes that a later call may need (an input of a node the pending fetches and
//! targets depend on, or a pending fetch itself) is kept here and fed to the later
//! calls, so the nodes behind it are pruned away. A control edge from a node a call runs
//! to a node an earlier call ran is already satisfied: that call runs on a copy of the
//! session's graph without those edges (a master session of its own for the one step,
//! released after it), so the earlier node does not run again — a resource variable's
//! `assign_add` read by two calls is the common case. Unlike TensorFlow's, the step is
//! not alive on the workers between calls: nothing waits there, so a partial run the
//! client abandons holds only the tensors kept here.
//!
//! # Bounds
//! A session holds at most [`MAX_PARTIAL_RUNS`] partial runs; one idle for
//! [`PARTIAL_RUN_IDLE`] expires (its handle is gone), and all go with the session
//! (`CloseSession`, idle timeout). Fed tensors are within the master's
//! `max_tensor_bytes` each, and one call's within its `max_message_bytes` together however
//! few bytes their typed values take ([`DecodeLimits`](super::conv::DecodeLimits)). What
//! partial runs keep between calls — the tensors fed so far and the outputs later calls
//! need — is charged to one account per master
//! ([`KeptBytes`]) under `--partial-run-bytes`, all sessions together, and given back when
//! the partial run ends (finished, failed, expired, or closed with its session): a call
//! whose new feeds would pass it is refused before it runs, leaving the run as it was; a
//! call whose outputs to keep would pass it fails and ends the run. The master session a
//! call with cut control edges opens for its one step takes a place among
//! `--max-sessions` for as long as it lives, and is released when the call ends.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use std::sync::Arc;

use magpie_core::graph::{Graph, NodeId, Output};
use magpie_core::limits::Limit;
use magpie_core::tensor::{Charge, MemoryAccount, Tensor};
use parking_lot::Mutex;
use tonic::{Code, Status};

use crate::service::limit_status;
use crate::status::status;

/// Partial runs one session may hold at once.
pub(crate) const MAX_PARTIAL_RUNS: usize = 64;

/// How long a partial run may wait for its next call before it expires.
pub(crate) const PARTIAL_RUN_IDLE: Duration = Duration::from_secs(600);

/// One tensor named at setup.
#[derive(Debug)]
struct Named {
    name: String,
    output: Output,
    /// Fed (a feed) or fetched (a fetch) by an earlier call.
    done: bool,
}

/// The state of one partial run between its calls.
#[derive(Debug)]
pub(crate) struct PartialRun {
    feeds: Vec<Named>,
    fetches: Vec<Named>,
    targets: Vec<NodeId>,
    /// The tensors fed so far.
    fed: Vec<(Output, Tensor)>,
    /// Outputs earlier calls computed that later calls may need.
    kept: Vec<(Output, Tensor)>,
    /// Node indices earlier calls ran.
    ran: HashSet<usize>,
    last_used: Instant,
    /// The bytes of `fed` and `kept`, charged to the master's [`KeptBytes`] until the run
    /// ends.
    charges: Vec<Charge>,
}

/// The bytes a master's partial runs keep between their calls, under
/// `--partial-run-bytes` (module docs).
#[derive(Debug)]
pub(crate) struct KeptBytes {
    account: Arc<MemoryAccount>,
    limit: u64,
}

impl KeptBytes {
    /// Nothing kept yet, at most `limit` bytes.
    pub(crate) fn new(limit: u64) -> KeptBytes {
        KeptBytes {
            account: Arc::new(MemoryAccount::new()),
            limit,
        }
    }

    /// Bytes kept now (for tests).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> u64 {
        self.account.in_use()
    }

    /// Charges `bytes` of `what` (`None` for none).
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` naming `--partial-run-bytes` when they would pass the limit.
    pub(crate) fn charge(&self, bytes: u64, what: &str) -> Result<Option<Charge>, Status> {
        if bytes == 0 {
            return Ok(None);
        }
        MemoryAccount::try_charge(&self.account, bytes, self.limit)
            .map(Some)
            .map_err(|in_use| {
                limit_status(
                    Limit::PartialRunBytes,
                    self.limit,
                    format!(
                        "{bytes} bytes of {what} asked for, {in_use} bytes kept by this \
                         master's partial runs"
                    ),
                )
            })
    }
}

/// Bytes of `tensors` together.
fn bytes_of<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> u64 {
    tensors
        .into_iter()
        .map(|t| t.size_in_bytes() as u64)
        .fold(0, u64::saturating_add)
}

/// What one call runs: the step's feeds, fetches (the client's first, then those to keep)
/// and targets, and what the call changes once the step succeeded.
#[derive(Debug)]
pub(crate) struct Call {
    /// Every tensor fed so far and every kept output.
    pub(crate) feeds: Vec<(Output, Tensor)>,
    /// The client's fetches, then the outputs to keep.
    pub(crate) fetches: Vec<Output>,
    /// The setup's targets on the last call; none before.
    pub(crate) targets: Vec<NodeId>,
    /// How many of `fetches` are the client's.
    pub(crate) client_fetches: usize,
    /// Whether this call completes the partial run.
    pub(crate) last: bool,
    /// Control edges to cut for this call's step (`(node, control input)` by name): the
    /// control input ran in an earlier call.
    pub(crate) cut_controls: Vec<(String, String)>,
    new_feeds: Vec<usize>,
    new_fetches: Vec<usize>,
    ran: Vec<usize>,
    /// The charge of the tensors this call feeds first, kept once it succeeds
    /// ([`Call::charge_feeds`]).
    charges: Vec<Charge>,
}

impl Call {
    /// Charges the tensors this call feeds for the first time, which the partial run keeps
    /// for its later calls, to `kept`.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` naming `--partial-run-bytes` (the call must not run).
    pub(crate) fn charge_feeds(&mut self, kept: &KeptBytes, base: usize) -> Result<(), Status> {
        let new = self.feeds.iter().skip(base).take(self.new_feeds.len());
        let bytes = bytes_of(new.map(|(_, t)| t));
        self.charges
            .extend(kept.charge(bytes, "tensors fed to a partial run")?);
        Ok(())
    }
}

fn invalid(message: String) -> Status {
    status(Code::InvalidArgument, message)
}

/// The error TensorFlow gives for a handle it does not hold.
pub(crate) fn no_such_run() -> Status {
    invalid("Must run PartialRunSetup before performing partial runs".into())
}

impl PartialRun {
    /// A partial run of these resolved feeds, fetches and targets (`(name, output)`).
    pub(crate) fn new(
        feeds: Vec<(String, Output)>,
        fetches: Vec<(String, Output)>,
        targets: Vec<NodeId>,
    ) -> PartialRun {
        let named = |v: Vec<(String, Output)>| {
            v.into_iter()
                .map(|(name, output)| Named {
                    name,
                    output,
                    done: false,
                })
                .collect()
        };
        PartialRun {
            feeds: named(feeds),
            fetches: named(fetches),
            targets,
            fed: Vec::new(),
            kept: Vec::new(),
            ran: HashSet::new(),
            last_used: Instant::now(),
            charges: Vec::new(),
        }
    }

    /// How many tensors earlier calls fed (a call's feeds start with them, then its new
    /// ones: [`Call::charge_feeds`]).
    pub(crate) fn fed_before(&self) -> usize {
        self.fed.len()
    }

    /// Checks one call (TensorFlow's checks, module docs) and plans its step over
    /// `graph`. Leaves the partial run unchanged; [`PartialRun::finish`] applies a call
    /// whose step succeeded.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for the mistakes of the module docs; `INTERNAL` when a node an
    /// earlier call ran is reached through a data edge (the graph changed under the
    /// partial run).
    pub(crate) fn plan(
        &self,
        graph: &Graph,
        feeds: Vec<(String, Tensor)>,
        fetches: &[String],
    ) -> Result<Call, Status> {
        let mut new_feeds = Vec::with_capacity(feeds.len());
        let mut step_feeds = self.fed.clone();
        for (name, t) in feeds {
            let k = self
                .feeds
                .iter()
                .position(|f| f.name == name)
                .ok_or_else(|| {
                    invalid(format!(
                        "The feed {name} was not specified in partial_run_setup."
                    ))
                })?;
            if self.feeds[k].done || new_feeds.contains(&k) {
                return Err(invalid(format!("The feed {name} has already been fed.")));
            }
            new_feeds.push(k);
            step_feeds.push((self.feeds[k].output, t));
        }
        let mut new_fetches = Vec::with_capacity(fetches.len());
        for name in fetches {
            let k = self
                .fetches
                .iter()
                .position(|f| f.name == *name)
                .ok_or_else(|| {
                    invalid(format!(
                        "The fetch {name} was not specified in partial_run_setup."
                    ))
                })?;
            if self.fetches[k].done || new_fetches.contains(&k) {
                return Err(invalid(format!(
                    "The fetch {name} has already been fetched."
                )));
            }
            new_fetches.push(k);
        }
        let last = self
            .feeds
            .iter()
            .enumerate()
            .all(|(k, f)| f.done || new_feeds.contains(&k))
            && self
                .fetches
                .iter()
                .enumerate()
                .all(|(k, f)| f.done || new_fetches.contains(&k));

        // Outputs available without running anything: fed now or before, or kept.
        let available: HashSet<Output> = step_feeds
            .iter()
            .map(|(o, _)| *o)
            .chain(self.kept.iter().map(|(o, _)| *o))
            .collect();
        let pending_feeds: HashSet<Output> = self
            .feeds
            .iter()
            .enumerate()
            .filter(|(k, f)| !f.done && !new_feeds.contains(k))
            .map(|(_, f)| f.output)
            .collect();

        // The nodes this call runs: the fetches' producers and what they need, cut at
        // the available outputs (the last call adds the targets).
        let mut run: HashSet<usize> = HashSet::new();
        let mut cut_controls: Vec<(String, String)> = Vec::new();
        let mut stack: Vec<NodeId> = Vec::new();
        for &k in &new_fetches {
            let f = &self.fetches[k];
            if available.contains(&f.output) {
                continue;
            }
            if pending_feeds.contains(&f.output) {
                return Err(cannot_compute(&f.name));
            }
            stack.push(f.output.node);
        }
        let targets = if last {
            self.targets.clone()
        } else {
            Vec::new()
        };
        stack.extend(targets.iter().copied());
        while let Some(id) = stack.pop() {
            if !run.insert(id.index()) {
                continue;
            }
            let node = graph.node(id).ok_or_else(|| {
                status(Code::Internal, format!("partial run: node {id:?} is gone"))
            })?;
            if self.ran.contains(&id.index()) {
                return Err(status(
                    Code::Internal,
                    format!(
                        "partial run: node {:?} ran in an earlier call of this partial run, \
                         and its output was not kept (was the graph changed?)",
                        node.name
                    ),
                ));
            }
            for input in &node.inputs {
                if available.contains(input) {
                    continue;
                }
                if pending_feeds.contains(input) {
                    // TensorFlow names the feed the fetch cannot do without.
                    let feed = self
                        .feeds
                        .iter()
                        .find(|f| f.output == *input)
                        .map_or_else(|| node.name.clone(), |f| f.name.clone());
                    return Err(cannot_compute(&feed));
                }
                stack.push(input.node);
            }
            for c in &node.control_inputs {
                if self.ran.contains(&c.index()) {
                    cut_controls.push((node.name.clone(), graph.name_of(*c)));
                } else {
                    stack.push(*c);
                }
            }
        }

        // What later calls may need of this call's outputs: inputs of the nodes the
        // pending fetches and targets depend on, and pending fetches themselves.
        let mut keep: Vec<Output> = Vec::new();
        if !last {
            let pending: Vec<&Named> = self
                .fetches
                .iter()
                .enumerate()
                .filter(|(k, f)| !f.done && !new_fetches.contains(k))
                .map(|(_, f)| f)
                .collect();
            let mut later: Vec<NodeId> = pending.iter().map(|f| f.output.node).collect();
            later.extend(self.targets.iter().copied());
            let mut seen: HashSet<usize> = HashSet::new();
            let mut wanted: HashSet<Output> = pending.iter().map(|f| f.output).collect();
            while let Some(id) = later.pop() {
                if !seen.insert(id.index()) {
                    continue;
                }
                if run.contains(&id.index()) {
                    continue;
                }
                let Some(node) = graph.node(id) else { continue };
                for input in &node.inputs {
                    wanted.insert(*input);
                    later.push(input.node);
                }
                later.extend(node.control_inputs.iter().copied());
            }
            keep = wanted
                .into_iter()
                .filter(|o| run.contains(&o.node.index()) && !available.contains(o))
                .collect();
            keep.sort_by_key(|o| (o.node.index(), o.index));
        }

        let mut step_fetches: Vec<Output> = new_fetches
            .iter()
            .map(|&k| self.fetches[k].output)
            .collect();
        let client_fetches = step_fetches.len();
        step_fetches.extend(keep);
        step_feeds.extend(self.kept.iter().cloned());
        Ok(Call {
            feeds: step_feeds,
            fetches: step_fetches,
            targets,
            client_fetches,
            last,
            cut_controls,
            new_feeds,
            new_fetches,
            ran: run.into_iter().collect(),
            charges: Vec::new(),
        })
    }

    /// Applies `call`, whose step succeeded with `tensors` (one per `call.fetches`): the
    /// outputs to keep are charged to `kept` beside the call's new feeds. Returns the
    /// client's fetches.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` naming `--partial-run-bytes` when the outputs to keep would
    /// pass it (the caller ends the partial run).
    pub(crate) fn finish(
        &mut self,
        mut call: Call,
        mut tensors: Vec<Tensor>,
        kept_bytes: &KeptBytes,
    ) -> Result<Vec<Tensor>, Status> {
        let kept = tensors.split_off(call.client_fetches.min(tensors.len()));
        self.charges.extend(kept_bytes.charge(
            bytes_of(&kept),
            "outputs a partial run keeps for its later calls",
        )?);
        self.charges.append(&mut call.charges);
        for (o, t) in call.fetches[call.client_fetches..].iter().zip(kept) {
            self.kept.push((*o, t));
        }
        let base = self.fed.len();
        for (i, &k) in call.new_feeds.iter().enumerate() {
            self.feeds[k].done = true;
            if let Some((o, t)) = call.feeds.get(base + i) {
                self.fed.push((*o, t.clone()));
            }
        }
        for &k in &call.new_fetches {
            self.fetches[k].done = true;
        }
        self.ran.extend(call.ran);
        self.last_used = Instant::now();
        Ok(tensors)
    }
}

/// TensorFlow's refusal of a fetch that needs `feed`, not fed yet.
fn cannot_compute(feed: &str) -> Status {
    invalid(format!(
        "Fetch {feed} can't be computed from the feeds that have been fed so far."
    ))
}

/// The partial runs of one session, by handle.
#[derive(Debug)]
pub(crate) struct PartialRuns {
    runs: Mutex<HashMap<String, PartialRun>>,
    /// How long a run may stay unused ([`PARTIAL_RUN_IDLE`]).
    idle: Duration,
}

impl Default for PartialRuns {
    fn default() -> PartialRuns {
        PartialRuns::with_idle(PARTIAL_RUN_IDLE)
    }
}

impl PartialRuns {
    /// A table whose runs expire after `idle` unused.
    pub(crate) fn with_idle(idle: Duration) -> PartialRuns {
        PartialRuns {
            runs: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// Adds `run` under `handle`, dropping expired runs first.
    ///
    /// # Errors
    /// `RESOURCE_EXHAUSTED` when the session holds [`MAX_PARTIAL_RUNS`] live ones.
    pub(crate) fn insert(&self, handle: String, run: PartialRun) -> Result<(), Status> {
        let mut runs = self.runs.lock();
        let idle = self.idle;
        runs.retain(|_, r| r.last_used.elapsed() < idle);
        if runs.len() >= MAX_PARTIAL_RUNS {
            return Err(status(
                Code::ResourceExhausted,
                format!(
                    "the session holds {MAX_PARTIAL_RUNS} partial runs (finish some, or \
                     let them expire after {PARTIAL_RUN_IDLE:?} idle)"
                ),
            ));
        }
        runs.insert(handle, run);
        Ok(())
    }

    /// Takes the run of `handle` out for one call (a concurrent call on the same handle
    /// does not find it); `None` when there is none or it expired.
    pub(crate) fn take(&self, handle: &str) -> Option<PartialRun> {
        let mut runs = self.runs.lock();
        let run = runs.remove(handle)?;
        (run.last_used.elapsed() < self.idle).then_some(run)
    }

    /// Puts a run back after a call that did not end it.
    pub(crate) fn put_back(&self, handle: String, mut run: PartialRun) {
        run.last_used = Instant::now();
        self.runs.lock().insert(handle, run);
    }

    /// Partial runs held now (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.runs.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magpie_core::tensor::DType;

    fn code_and_message(e: Status) -> (Code, String) {
        (e.code(), e.message().to_string())
    }

    /// `r1 = a + b` (a data edge), `after` with a control edge on `r1`'s node, `r2 =
    /// after * c`.
    fn graph() -> (Graph, [Output; 6]) {
        let g = Graph::new();
        let a = g.placeholder(DType::F32, None).unwrap();
        let b = g.placeholder(DType::F32, None).unwrap();
        let c = g.placeholder(DType::F32, None).unwrap();
        let r1 = g.add(a, b).unwrap();
        let after = g
            .op("Identity")
            .input(c)
            .control_input(r1.node)
            .build_output()
            .unwrap();
        let r2 = g.mul(after, r1).unwrap();
        (g, [a, b, c, r1, after, r2])
    }

    fn run(outs: &[Output; 6]) -> PartialRun {
        let [a, b, c, r1, _, r2] = *outs;
        PartialRun::new(
            vec![("a:0".into(), a), ("b:0".into(), b), ("c:0".into(), c)],
            vec![("r1:0".into(), r1), ("r2:0".into(), r2)],
            vec![],
        )
    }

    #[test]
    fn calls_keep_what_later_calls_need_and_cut_satisfied_control_edges() {
        let (g, outs) = graph();
        let [a, b, _, r1, _, r2] = outs;
        let mut pr = run(&outs);
        let one = Tensor::scalar(1.0f32);
        let first = pr
            .plan(
                &g,
                vec![("a:0".into(), one.clone()), ("b:0".into(), one.clone())],
                &["r1:0".to_string()],
            )
            .unwrap();
        assert!(!first.last);
        // r1 is fetched, and kept: r2 needs it later (its node also gates `after`).
        assert_eq!(first.fetches, vec![r1, r1]);
        assert_eq!(first.client_fetches, 1);
        assert_eq!(first.feeds.len(), 2);
        assert!(first.cut_controls.is_empty());
        let two = Tensor::scalar(2.0f32);
        let kept = KeptBytes::new(1 << 20);
        let got = pr.finish(first, vec![two.clone(), two], &kept).unwrap();
        assert_eq!(got.len(), 1);
        // r1 (4 bytes) is kept; the feeds were not charged (no `charge_feeds`).
        assert_eq!(kept.in_use(), 4);

        // The second call: r1's node ran, so `after`'s control edge on it is cut, and
        // r1 is fed from what was kept.
        let second = pr
            .plan(&g, vec![("c:0".into(), one)], &["r2:0".to_string()])
            .unwrap();
        assert!(second.last);
        assert_eq!(second.fetches, vec![r2]);
        let fed: Vec<Output> = second.feeds.iter().map(|(o, _)| *o).collect();
        assert!(
            fed.contains(&a) && fed.contains(&b) && fed.contains(&r1),
            "{fed:?}"
        );
        assert_eq!(second.cut_controls.len(), 1);
        assert_eq!(second.cut_controls[0].1, g.name_of(r1.node));
    }

    #[test]
    fn mistakes_are_tensorflows_and_leave_the_run_as_it_was() {
        let (g, outs) = graph();
        let mut pr = run(&outs);
        let one = || Tensor::scalar(1.0f32);
        let e = pr
            .plan(&g, vec![("a:0".into(), one())], &["r2:0".to_string()])
            .unwrap_err();
        assert_eq!(
            code_and_message(e),
            (
                Code::InvalidArgument,
                "Fetch b:0 can't be computed from the feeds that have been fed so far.".into()
            )
        );
        let e = pr.plan(&g, vec![("z:0".into(), one())], &[]).unwrap_err();
        assert_eq!(
            code_and_message(e).1,
            "The feed z:0 was not specified in partial_run_setup."
        );
        let e = pr.plan(&g, vec![], &["z:0".to_string()]).unwrap_err();
        assert_eq!(
            code_and_message(e).1,
            "The fetch z:0 was not specified in partial_run_setup."
        );
        let call = pr
            .plan(
                &g,
                vec![("a:0".into(), one()), ("b:0".into(), one())],
                &["r1:0".to_string()],
            )
            .unwrap();
        pr.finish(call, vec![one(), one()], &KeptBytes::new(1 << 20))
            .unwrap();
        let e = pr.plan(&g, vec![("a:0".into(), one())], &[]).unwrap_err();
        assert_eq!(code_and_message(e).1, "The feed a:0 has already been fed.");
        let e = pr.plan(&g, vec![], &["r1:0".to_string()]).unwrap_err();
        assert_eq!(
            code_and_message(e).1,
            "The fetch r1:0 has already been fetched."
        );
    }

    #[test]
    fn what_partial_runs_keep_is_bounded_and_given_back_when_they_end() {
        let (g, outs) = graph();
        let kept = KeptBytes::new(10);
        let one = || Tensor::scalar(1.0f32);
        let mut pr = run(&outs);
        let mut call = pr
            .plan(
                &g,
                vec![("a:0".into(), one()), ("b:0".into(), one())],
                &["r1:0".to_string()],
            )
            .unwrap();
        // Two new feeds of 4 bytes: 8 of 10.
        call.charge_feeds(&kept, pr.fed_before()).unwrap();
        assert_eq!(kept.in_use(), 8);
        // Keeping r1 (4 more bytes) passes the limit: the call fails naming the flag.
        let e = pr.finish(call, vec![one(), one()], &kept).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        for w in ["--partial-run-bytes", "4 bytes", "8 bytes kept", "10"] {
            assert!(e.message().contains(w), "{w:?} not in {}", e.message());
        }
        // The failed call's charges went with it; ending the run gives back the rest.
        drop(pr);
        assert_eq!(kept.in_use(), 0);

        // Under a roomier limit the run keeps 12 bytes until it is dropped.
        let kept = KeptBytes::new(12);
        let mut pr = run(&outs);
        let mut call = pr
            .plan(
                &g,
                vec![("a:0".into(), one()), ("b:0".into(), one())],
                &["r1:0".to_string()],
            )
            .unwrap();
        call.charge_feeds(&kept, pr.fed_before()).unwrap();
        pr.finish(call, vec![one(), one()], &kept).unwrap();
        assert_eq!(kept.in_use(), 12);
        // A new feed past the limit is refused before the call runs.
        let mut call = pr
            .plan(&g, vec![("c:0".into(), one())], &["r2:0".to_string()])
            .unwrap();
        let e = call.charge_feeds(&kept, pr.fed_before()).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        drop(call);
        assert_eq!(kept.in_use(), 12);
        drop(pr);
        assert_eq!(kept.in_use(), 0);
    }

    #[test]
    fn a_charge_that_would_wrap_the_account_is_refused_under_the_largest_limit() {
        // `--partial-run-bytes 18446744073709551615`: a sum past u64::MAX is still refused.
        let kept = KeptBytes::new(u64::MAX);
        let held = kept.charge(10, "a feed").unwrap();
        let e = kept.charge(u64::MAX - 5, "outputs").unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(
            e.message().contains("--partial-run-bytes"),
            "{}",
            e.message()
        );
        assert_eq!(kept.in_use(), 10);
        drop(held);
        assert_eq!(kept.in_use(), 0);
    }

    #[test]
    fn runs_are_bounded_and_expire() {
        let (_, outs) = graph();
        let runs = PartialRuns::default();
        for k in 0..MAX_PARTIAL_RUNS {
            runs.insert(format!("h{k}"), run(&outs)).unwrap();
        }
        let e = runs.insert("one more".into(), run(&outs)).unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        // A call takes the run out; a concurrent call finds nothing.
        let r = runs.take("h0").unwrap();
        assert!(runs.take("h0").is_none());
        runs.put_back("h0".into(), r);
        assert_eq!(runs.len(), MAX_PARTIAL_RUNS);

        let expiring = PartialRuns::with_idle(Duration::ZERO);
        expiring.insert("h".into(), run(&outs)).unwrap();
        assert!(expiring.take("h").is_none(), "expired");
        expiring.insert("h2".into(), run(&outs)).unwrap();
        expiring.insert("h3".into(), run(&outs)).unwrap();
        assert_eq!(expiring.len(), 1, "expired runs are dropped on insert");
    }
}
