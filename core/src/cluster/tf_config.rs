//! [`TfConfig`]: the cluster and this process's task from the `TF_CONFIG` environment
//! variable, as TensorFlow reads it:
//! `{"cluster": {"ps": [...], "worker": [...]}, "task": {"type": "worker", "index": 0}}`.

use serde::Deserialize;

use super::error::ClusterError;
use super::spec::ClusterSpec;
use crate::transport::TaskName;

/// The environment variable read by [`TfConfig::from_env`].
pub const TF_CONFIG: &str = "TF_CONFIG";

/// A parsed `TF_CONFIG`: the cluster, and the task this process runs (validated against
/// the cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TfConfig {
    /// The cluster.
    pub cluster: ClusterSpec,
    /// This process's task, when `TF_CONFIG` names one.
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
    pub fn parse(text: &str) -> Result<TfConfig, ClusterError> {
        let parse = |detail: String| ClusterError::Parse {
            source_name: TF_CONFIG.into(),
            detail,
        };
        let raw: Raw = serde_json::from_str(text).map_err(|e| parse(e.to_string()))?;
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
                cluster.check_task(&task)?;
                Some(task)
            }
            None => None,
        };
        Ok(TfConfig { cluster, task })
    }

    /// Reads and parses `TF_CONFIG`; `Ok(None)` when it is unset.
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
    fn malformed_config_names_the_variable() {
        let e = TfConfig::parse("{not json").unwrap_err();
        assert!(e.to_string().contains("TF_CONFIG"), "{e}");
        let e = TfConfig::parse(r#"{"cluster": {"worker": ["nohost"]}}"#).unwrap_err();
        assert!(matches!(e, ClusterError::MalformedAddress { .. }), "{e}");
    }
}
