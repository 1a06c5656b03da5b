//! [`TfConfig`]: the cluster and this process's task from the `TF_CONFIG` environment
//! variable, as TensorFlow reads it:
//! `{"cluster": {"ps": [...], "worker": [...]}, "task": {"type": "worker", "index": 0}}`.
//!
//! Jobs may be lists or maps from task index to address (see
//! [`ClusterSpec::from_json`]). Task types are job names (`chief`, `worker`, `ps`, ...),
//! checked against the cluster, except `evaluator`: as in TensorFlow, an evaluator is not
//! part of the cluster (an `evaluator` job in `cluster` is left out of it), so its task
//! is not checked against the cluster and it serves no task of it.

use serde::Deserialize;

use super::error::ClusterError;
use super::spec::ClusterSpec;
use crate::transport::TaskName;

/// The environment variable read by [`TfConfig::from_env`].
pub const TF_CONFIG: &str = "TF_CONFIG";

/// The task type of TensorFlow's evaluator, which is not part of the cluster.
pub const EVALUATOR: &str = "evaluator";

/// A parsed `TF_CONFIG`: the cluster, and the task this process runs (validated against
/// the cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TfConfig {
    /// The cluster.
    pub cluster: ClusterSpec,
    /// This process's task, when `TF_CONFIG` names one. An evaluator's task is
    /// `/job:evaluator/task:N`, which is not in [`cluster`](TfConfig::cluster).
    pub task: Option<TaskName>,
}

#[derive(Deserialize)]
struct Raw {
    cluster: serde_json::Value,
    #[serde(default)]
    task: Option<RawTask>,
}

#[derive(Deserialize)]
struct RawTask {
    #[serde(rename = "type")]
    job: String,
    #[serde(default)]
    index: u32,
}

impl TfConfig {
    /// Parses a `TF_CONFIG` value.
    ///
    /// # Errors
    /// [`ClusterError::Parse`] for text that is not `TF_CONFIG` JSON; otherwise as
    /// [`ClusterSpec::from_jobs`] for its cluster, and [`ClusterError::UnknownJob`] or
    /// [`ClusterError::TaskOutOfRange`] for a task (other than the evaluator) that is not
    /// in the cluster.
    pub fn parse(text: &str) -> Result<TfConfig, ClusterError> {
        let parse = |detail: String| ClusterError::Parse {
            source_name: TF_CONFIG.into(),
            detail,
        };
        let mut raw: Raw = serde_json::from_str(text).map_err(|e| parse(e.to_string()))?;
        if let Some(jobs) = raw.cluster.as_object_mut() {
            jobs.remove(EVALUATOR);
        }
        let cluster = ClusterSpec::from_json(&raw.cluster.to_string()).map_err(|e| match e {
            ClusterError::Parse { detail, .. } => parse(detail),
            other => other,
        })?;
        let task = match raw.task {
            Some(t) => {
                let task = TaskName {
                    job: t.job,
                    index: t.index,
                };
                if task.job != EVALUATOR {
                    cluster.check_task(&task)?;
                }
                Some(task)
            }
            None => None,
        };
        Ok(TfConfig { cluster, task })
    }

    /// Whether this process is TensorFlow's evaluator (task type `evaluator`): a client
    /// of the cluster, not one of its tasks.
    pub fn is_evaluator(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.job == EVALUATOR)
    }

    /// Reads and parses `TF_CONFIG`; `Ok(None)` when it is unset.
    ///
    /// # Errors
    /// [`ClusterError::Parse`] when the variable is not valid Unicode; otherwise as
    /// [`TfConfig::parse`].
    pub fn from_env() -> Result<Option<TfConfig>, ClusterError> {
        match std::env::var(TF_CONFIG) {
            Ok(text) => TfConfig::parse(&text).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(ClusterError::Parse {
                source_name: TF_CONFIG.into(),
                detail: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_and_task() {
        let c = TfConfig::parse(
            r#"{"cluster": {"ps": ["h:1"], "worker": ["h:2", "h:3"]},
                "task": {"type": "worker", "index": 1}}"#,
        )
        .unwrap();
        assert_eq!(c.cluster.num_tasks("worker"), 2);
        assert_eq!(c.task.unwrap().to_string(), "/job:worker/task:1");
    }

    #[test]
    fn task_out_of_range_and_unknown_job() {
        let e = TfConfig::parse(
            r#"{"cluster": {"worker": ["h:2"]}, "task": {"type": "worker", "index": 4}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(e, ClusterError::TaskOutOfRange { index: 4, .. }),
            "{e}"
        );
        let e = TfConfig::parse(
            r#"{"cluster": {"worker": ["h:2"]}, "task": {"type": "chief", "index": 0}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("chief"), "{e}");
    }

    #[test]
    fn map_form_jobs_give_tasks_in_index_order() {
        let c = TfConfig::parse(
            r#"{"cluster": {"chief": ["h:5"], "worker": {"1": "h:2", "0": "h:1"}},
                "task": {"type": "worker", "index": 1}}"#,
        )
        .unwrap();
        let w1 = TaskName::new("worker", 1);
        assert_eq!(c.cluster.address(&w1).unwrap(), "h:2");
        assert_eq!(
            c.cluster.address(&TaskName::new("worker", 0)).unwrap(),
            "h:1"
        );
        assert_eq!(c.cluster.num_tasks("chief"), 1);
        assert_eq!(c.task, Some(w1));
        assert!(!c.is_evaluator());
    }

    #[test]
    fn a_sparse_map_names_the_missing_task() {
        let e = TfConfig::parse(r#"{"cluster": {"worker": {"1": "h:2"}}}"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("TF_CONFIG") && msg.contains("task 0"), "{msg}");
        let e = TfConfig::parse(r#"{"cluster": {"worker": {"x": "h:2"}}}"#).unwrap_err();
        assert!(e.to_string().contains("\"x\""), "{e}");
    }

    #[test]
    fn an_evaluator_is_not_part_of_the_cluster() {
        let c = TfConfig::parse(
            r#"{"cluster": {"chief": ["h:5"], "worker": ["h:1"], "evaluator": ["h:9"]},
                "task": {"type": "evaluator", "index": 0}}"#,
        )
        .unwrap();
        assert!(c.is_evaluator());
        assert_eq!(c.cluster.jobs().collect::<Vec<_>>(), ["chief", "worker"]);
        assert_eq!(c.task.unwrap().to_string(), "/job:evaluator/task:0");
    }

    #[test]
    fn malformed_config_names_the_variable() {
        let e = TfConfig::parse("{not json").unwrap_err();
        assert!(e.to_string().contains("TF_CONFIG"), "{e}");
        let e = TfConfig::parse(r#"{"cluster": {"worker": ["nohost"]}}"#).unwrap_err();
        assert!(matches!(e, ClusterError::MalformedAddress { .. }), "{e}");
    }
}
