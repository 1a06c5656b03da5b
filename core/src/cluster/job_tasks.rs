//! How a job's tasks are written in a cluster spec: TensorFlow's list form
//! (`"worker": ["h:1", "h:2"]`) or its map form (`"worker": {"0": "h:1", "1": "h:2"}`).
//!
//! Both forms give a job its tasks in index order. A map must name every index from 0 to
//! its largest: TensorFlow allows sparse maps (a process that knows only some tasks of a
//! job), but a Magpie cluster needs an address for every task it may place work on, so a
//! gap is an error naming the missing task rather than a silently shorter job.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One job's tasks, in either form.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum JobTasks {
    /// `["host:port", ...]`: task `i` at position `i`.
    List(Vec<String>),
    /// `{"index": "host:port", ...}`.
    Map(BTreeMap<String, String>),
}

impl JobTasks {
    /// The addresses in task order; `Err` says which index is malformed or missing.
    pub(super) fn into_addresses(self, job: &str) -> Result<Vec<String>, String> {
        let map = match self {
            JobTasks::List(v) => return Ok(v),
            JobTasks::Map(m) => m,
        };
        let mut by_index: BTreeMap<u32, String> = BTreeMap::new();
        for (key, address) in map {
            let index: u32 = key
                .trim()
                .parse()
                .map_err(|_| format!("job {job:?}: task index {key:?} is not a number"))?;
            if by_index.insert(index, address).is_some() {
                return Err(format!("job {job:?}: task index {index} is given twice"));
            }
        }
        let mut addresses = Vec::with_capacity(by_index.len());
        for (expected, (index, address)) in by_index.into_iter().enumerate() {
            if index as usize != expected {
                return Err(format!(
                    "job {job:?}: task {expected} has no address (the map form must name \
                     every task from 0; sparse jobs are not supported)"
                ));
            }
            addresses.push(address);
        }
        Ok(addresses)
    }
}

/// Jobs in either form -> job -> addresses in task order.
pub(super) fn resolve(
    jobs: BTreeMap<String, JobTasks>,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    jobs.into_iter()
        .map(|(job, tasks)| {
            let addresses = tasks.into_addresses(&job)?;
            Ok((job, addresses))
        })
        .collect()
}
