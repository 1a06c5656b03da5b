//! [`ClusterSpec`]: jobs of ordered task addresses, validated on construction.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::error::ClusterError;
use super::job_tasks::{self, JobTasks};
use crate::transport::TaskName;

/// Jobs of ordered task addresses. Always valid: every constructor checks it.
///
/// ```
/// use magpie_core::cluster::ClusterSpec;
/// let spec = ClusterSpec::builder()
///     .job("ps", ["127.0.0.1:2221"])
///     .job("worker", ["127.0.0.1:2222", "127.0.0.1:2223"])
///     .build()?;
/// assert_eq!(spec.num_tasks("worker"), 2);
/// assert_eq!(spec.address(&"/job:worker/task:1".parse()?)?, "127.0.0.1:2223");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSpec {
    jobs: BTreeMap<String, Vec<String>>,
}

/// Builds a [`ClusterSpec`] job by job.
#[derive(Clone, Debug, Default)]
pub struct ClusterSpecBuilder {
    jobs: BTreeMap<String, Vec<String>>,
}

impl ClusterSpecBuilder {
    /// Adds (or replaces) a job with its tasks' addresses, task 0 first.
    pub fn job<S: Into<String>>(
        mut self,
        name: &str,
        addresses: impl IntoIterator<Item = S>,
    ) -> Self {
        self.jobs.insert(
            name.to_string(),
            addresses.into_iter().map(Into::into).collect(),
        );
        self
    }

    /// Validates and returns the spec.
    ///
    /// # Errors
    /// As [`ClusterSpec::from_jobs`].
    pub fn build(self) -> Result<ClusterSpec, ClusterError> {
        ClusterSpec::from_jobs(self.jobs)
    }
}

impl ClusterSpec {
    /// A builder.
    pub fn builder() -> ClusterSpecBuilder {
        ClusterSpecBuilder::default()
    }

    /// A spec from job → addresses, validated.
    ///
    /// # Errors
    /// [`ClusterError::NoJobs`], [`ClusterError::BadJobName`] (a name other than letters,
    /// digits, `_` and `-`), [`ClusterError::EmptyJob`], [`ClusterError::MalformedAddress`]
    /// (naming the task) and [`ClusterError::DuplicateAddress`] (naming both tasks).
    pub fn from_jobs(jobs: BTreeMap<String, Vec<String>>) -> Result<ClusterSpec, ClusterError> {
        if jobs.is_empty() {
            return Err(ClusterError::NoJobs);
        }
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (job, addresses) in &jobs {
            if job.is_empty()
                || !job
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ClusterError::BadJobName { job: job.clone() });
            }
            if addresses.is_empty() {
                return Err(ClusterError::EmptyJob { job: job.clone() });
            }
            for (i, address) in addresses.iter().enumerate() {
                let task = format!("/job:{job}/task:{i}");
                check_address(address).map_err(|reason| ClusterError::MalformedAddress {
                    task: task.clone(),
                    address: address.clone(),
                    reason,
                })?;
                if let Some(first) = seen.insert(address.as_str(), task.clone()) {
                    return Err(ClusterError::DuplicateAddress {
                        address: address.clone(),
                        first,
                        second: task,
                    });
                }
            }
        }
        Ok(ClusterSpec { jobs })
    }

    /// Parses JSON: `{"ps": ["host:port"], "worker": [...]}`, or the same under a
    /// `"cluster"` key. A job may also be a map from task index to address
    /// (`"worker": {"0": "h:1", "1": "h:2"}`, TensorFlow's map form) naming every task
    /// from 0.
    ///
    /// # Errors
    /// [`ClusterError::Parse`] for text that is not such JSON; otherwise as
    /// [`ClusterSpec::from_jobs`].
    pub fn from_json(text: &str) -> Result<ClusterSpec, ClusterError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| parse_error("JSON", e))?;
        let value = value.get("cluster").cloned().unwrap_or(value);
        let jobs: BTreeMap<String, JobTasks> =
            serde_json::from_value(value).map_err(|e| parse_error("JSON", e))?;
        ClusterSpec::from_jobs(job_tasks::resolve(jobs).map_err(|e| parse_error("JSON", e))?)
    }

    /// Parses TOML: `ps = ["host:port"]` and `worker = [...]` at the top level, or in a
    /// `[cluster]` table; a job may also be a table from task index to address
    /// (`[worker]` with `0 = "h:1"`).
    ///
    /// # Errors
    /// [`ClusterError::Parse`] for text that is not such TOML; otherwise as
    /// [`ClusterSpec::from_jobs`].
    pub fn from_toml(text: &str) -> Result<ClusterSpec, ClusterError> {
        let mut table: toml::Table = text.parse().map_err(|e| parse_error("TOML", e))?;
        let table = match table.remove("cluster") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                return Err(parse_error("TOML", "`cluster` must be a table"));
            }
            None => table,
        };
        let jobs: BTreeMap<String, JobTasks> = table
            .try_into()
            .map_err(|e: toml::de::Error| parse_error("TOML", e))?;
        ClusterSpec::from_jobs(job_tasks::resolve(jobs).map_err(|e| parse_error("TOML", e))?)
    }

    /// Reads a `.json` or `.toml` file (by extension; otherwise JSON is tried first).
    ///
    /// # Errors
    /// [`ClusterError::Parse`] naming the file when it cannot be read or parsed; otherwise
    /// as [`ClusterSpec::from_jobs`].
    pub fn from_file(path: &Path) -> Result<ClusterSpec, ClusterError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ClusterError::Parse {
            source_name: name.clone(),
            detail: e.to_string(),
        })?;
        let named = |e: ClusterError| match e {
            ClusterError::Parse { detail, .. } => ClusterError::Parse {
                source_name: name.clone(),
                detail,
            },
            other => other,
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => ClusterSpec::from_toml(&text).map_err(named),
            Some("json") => ClusterSpec::from_json(&text).map_err(named),
            _ => ClusterSpec::from_json(&text)
                .or_else(|_| ClusterSpec::from_toml(&text))
                .map_err(named),
        }
    }

    /// Job names, sorted.
    pub fn jobs(&self) -> impl Iterator<Item = &str> {
        self.jobs.keys().map(String::as_str)
    }

    /// The number of tasks of `job` (0 for an unknown job).
    pub fn num_tasks(&self, job: &str) -> usize {
        self.jobs.get(job).map_or(0, Vec::len)
    }

    /// Every task, by job then index.
    pub fn tasks(&self) -> Vec<TaskName> {
        self.jobs
            .iter()
            .flat_map(|(job, a)| {
                (0..a.len() as u32).map(move |index| TaskName {
                    job: job.clone(),
                    index,
                })
            })
            .collect()
    }

    /// Checks that `task` exists.
    ///
    /// # Errors
    /// As [`address`](Self::address).
    pub fn check_task(&self, task: &TaskName) -> Result<(), ClusterError> {
        self.address(task).map(|_| ())
    }

    /// The address of `task`.
    ///
    /// # Errors
    /// [`ClusterError::UnknownJob`] or [`ClusterError::TaskOutOfRange`].
    pub fn address(&self, task: &TaskName) -> Result<&str, ClusterError> {
        let addresses = self
            .jobs
            .get(&task.job)
            .ok_or_else(|| ClusterError::UnknownJob {
                job: task.job.clone(),
                jobs: self.jobs.keys().cloned().collect(),
            })?;
        addresses
            .get(task.index as usize)
            .map(String::as_str)
            .ok_or_else(|| ClusterError::TaskOutOfRange {
                job: task.job.clone(),
                index: task.index,
                num_tasks: addresses.len(),
            })
    }

    /// The task at `address`, if any.
    pub fn task_at(&self, address: &str) -> Option<TaskName> {
        self.jobs.iter().find_map(|(job, a)| {
            a.iter().position(|x| x == address).map(|i| TaskName {
                job: job.clone(),
                index: i as u32,
            })
        })
    }

    /// The spec as JSON (`{"job": ["host:port", ...]}`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.jobs).unwrap_or_default()
    }

    /// The spec as TOML (`job = ["host:port", ...]`, one line per job), the format
    /// [`ClusterSpec::from_toml`] reads.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.jobs).unwrap_or_default()
    }
}

fn parse_error(format: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Parse {
        source_name: format.to_string(),
        detail: e.to_string(),
    }
}

/// Checks `host:port`: a non-empty host (a name, an IPv4 address or a bracketed IPv6
/// address) and a port in 1..=65535.
fn check_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_string())?;
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        host.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return Err(format!("host {host:?} is not a host name or IP address"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port {port:?} is not in 1..=65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(job: &str, index: u32) -> TaskName {
        TaskName {
            job: job.into(),
            index,
        }
    }

    #[test]
    fn builds_and_resolves() {
        let s = ClusterSpec::builder()
            .job("ps", ["machine-a:2221"])
            .job("worker", ["machine-a:2222", "machine-b:2222"])
            .build()
            .unwrap();
        assert_eq!(s.jobs().collect::<Vec<_>>(), ["ps", "worker"]);
        assert_eq!(s.address(&task("worker", 1)).unwrap(), "machine-b:2222");
        assert_eq!(s.task_at("machine-a:2221"), Some(task("ps", 0)));
        assert_eq!(s.tasks().len(), 3);
    }

    #[test]
    fn toml_and_json_round_trip() {
        let s = ClusterSpec::builder()
            .job("ps", ["machine-a:2221"])
            .job("worker", ["machine-a:2222", "machine-b:2222"])
            .build()
            .unwrap();
        assert_eq!(ClusterSpec::from_toml(&s.to_toml()).unwrap(), s);
        assert_eq!(ClusterSpec::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn toml_map_form_is_read_in_index_order() {
        let s =
            ClusterSpec::from_toml("ps = [\"a:1\"]\n[worker]\n1 = \"b:2\"\n0 = \"b:1\"\n").unwrap();
        assert_eq!(s.address(&task("worker", 0)).unwrap(), "b:1");
        assert_eq!(s.address(&task("worker", 1)).unwrap(), "b:2");
        let e = ClusterSpec::from_toml("[worker]\n0 = \"b:1\"\n2 = \"b:3\"\n").unwrap_err();
        assert!(e.to_string().contains("task 1 has no address"), "{e}");
    }

    #[test]
    fn empty_job_is_refused() {
        let e = ClusterSpec::builder()
            .job("ps", Vec::<String>::new())
            .build()
            .unwrap_err();
        assert_eq!(e, ClusterError::EmptyJob { job: "ps".into() });
        assert!(e.to_string().contains("\"ps\""));
        assert_eq!(
            ClusterSpec::builder().build().unwrap_err(),
            ClusterError::NoJobs
        );
    }

    #[test]
    fn duplicate_address_names_both_tasks() {
        let e = ClusterSpec::builder()
            .job("ps", ["h:1"])
            .job("worker", ["h:2", "h:1"])
            .build()
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("h:1"), "{msg}");
        assert!(msg.contains("/job:ps/task:0"), "{msg}");
        assert!(msg.contains("/job:worker/task:1"), "{msg}");
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "nohost", ":80", "h:0", "h:99999", "h:port", "a b:1", "[zz]:1",
        ] {
            let e = ClusterSpec::builder().job("w", [bad]).build().unwrap_err();
            assert!(
                matches!(e, ClusterError::MalformedAddress { ref address, .. } if address == bad),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("/job:w/task:0"), "{e}");
        }
        ClusterSpec::builder()
            .job(
                "w",
                ["[::1]:80", "127.0.0.1:1", "my-host.example.com:65535"],
            )
            .build()
            .unwrap();
    }

    #[test]
    fn task_index_out_of_range() {
        let s = ClusterSpec::builder().job("w", ["h:1"]).build().unwrap();
        let e = s.address(&task("w", 3)).unwrap_err();
        assert_eq!(
            e,
            ClusterError::TaskOutOfRange {
                job: "w".into(),
                index: 3,
                num_tasks: 1
            }
        );
        assert!(matches!(
            s.check_task(&task("ps", 0)),
            Err(ClusterError::UnknownJob { .. })
        ));
    }

    #[test]
    fn json_and_toml() {
        let j = ClusterSpec::from_json(r#"{"ps": ["h:1"], "worker": ["h:2", "h:3"]}"#).unwrap();
        let t = ClusterSpec::from_toml("ps = [\"h:1\"]\nworker = [\"h:2\", \"h:3\"]\n").unwrap();
        let t2 = ClusterSpec::from_toml("[cluster]\nps = [\"h:1\"]\nworker = [\"h:2\", \"h:3\"]\n")
            .unwrap();
        assert_eq!(j, t);
        assert_eq!(t, t2);
        assert_eq!(ClusterSpec::from_json(&j.to_json()).unwrap(), j);
        assert!(matches!(
            ClusterSpec::from_json("{\"ps\": 3}"),
            Err(ClusterError::Parse { .. })
        ));
        assert!(matches!(
            ClusterSpec::from_toml("ps = ["),
            Err(ClusterError::Parse { .. })
        ));
        assert!(matches!(
            ClusterSpec::from_toml("ps = []"),
            Err(ClusterError::EmptyJob { .. })
        ));
    }

    #[test]
    fn from_file_by_extension() {
        let dir = std::env::temp_dir().join(format!("magpie-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml_path = dir.join("c.toml");
        std::fs::write(&toml_path, "worker = [\"h:2\"]\n").unwrap();
        assert_eq!(
            ClusterSpec::from_file(&toml_path)
                .unwrap()
                .num_tasks("worker"),
            1
        );
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{").unwrap();
        let e = ClusterSpec::from_file(&bad).unwrap_err();
        assert!(e.to_string().contains("bad.json"), "{e}");
        let missing = ClusterSpec::from_file(&dir.join("missing.toml")).unwrap_err();
        assert!(missing.to_string().contains("missing.toml"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
