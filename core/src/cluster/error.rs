//! [`ClusterError`]: what is wrong with a cluster specification or a task reference.

/// A cluster specification (or a reference to one of its tasks) is invalid. Each variant
/// names the job, task or address involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The spec has no job at all.
    #[error("cluster spec has no jobs")]
    NoJobs,
    /// A job lists no task.
    #[error("job {job:?} has no tasks")]
    EmptyJob {
        /// The job.
        job: String,
    },
    /// A job name is not a valid name (letters, digits, `_`, `-`).
    #[error("job name {job:?} is invalid: use letters, digits, '_' or '-'")]
    BadJobName {
        /// The name.
        job: String,
    },
    /// Two tasks have the same address.
    #[error("address {address} is used by both {first} and {second}")]
    DuplicateAddress {
        /// The address.
        address: String,
        /// The first task using it (`/job:j/task:i`).
        first: String,
        /// The second.
        second: String,
    },
    /// An address is not `host:port`.
    #[error("task {task} has malformed address {address:?}: {reason}")]
    MalformedAddress {
        /// The task.
        task: String,
        /// The address.
        address: String,
        /// What is wrong.
        reason: String,
    },
    /// A task index is beyond its job's tasks.
    #[error("task index {index} is out of range for job {job:?}, which has {num_tasks} task(s)")]
    TaskOutOfRange {
        /// The job.
        job: String,
        /// The index asked for.
        index: u32,
        /// How many tasks the job has.
        num_tasks: usize,
    },
    /// A job is not in the spec.
    #[error("job {job:?} is not in the cluster; jobs: {}", .jobs.join(", "))]
    UnknownJob {
        /// The job asked for.
        job: String,
        /// The jobs that exist.
        jobs: Vec<String>,
    },
    /// A spec file or `TF_CONFIG` could not be read or parsed.
    #[error("cannot read cluster spec from {source_name}: {detail}")]
    Parse {
        /// The file or variable.
        source_name: String,
        /// What went wrong.
        detail: String,
    },
}
