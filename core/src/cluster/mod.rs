//! Cluster specifications: jobs of ordered task addresses (TensorFlow's
//! `tf.train.ClusterSpec`).
//!
//! A cluster is a set of named jobs (`ps`, `worker`), each an ordered list of task
//! addresses (`host:port`); task `i` of job `j` is `/job:j/task:i`. Several tasks may share
//! a machine (different ports) or a process. A spec is built in Rust
//! ([`ClusterSpec::builder`]), read from a JSON or TOML file ([`ClusterSpec::from_file`]),
//! or taken from the `TF_CONFIG` environment variable ([`TfConfig`]). Every constructor
//! validates: no empty job, no duplicate address, every address `host:port`.

mod error;
mod job_tasks;
mod spec;
mod tf_config;

pub use error::ClusterError;
pub use spec::{ClusterSpec, ClusterSpecBuilder};
pub use tf_config::{TfConfig, EVALUATOR, TF_CONFIG};
