//! The dataflow executor: maps a graph's nodes onto scheduler tasks.
//!
//! `plan` prunes, places and instantiates kernels once per signature of feeds, fetches
//! and targets; `step` runs one step of a plan on a
//! [`ThreadPool`](crate::scheduler::ThreadPool). The scheduler below knows nothing of
//! tensors; this layer knows nothing of sessions or clusters.

mod error;
pub(crate) mod memory;
mod placement;
pub(crate) mod plan;
pub(crate) mod plan_cache;
pub(crate) mod prune;
pub(crate) mod resources;
mod short_list;
pub(crate) mod slot;
pub(crate) mod step;
mod timeline;

pub use error::SessionError;
pub use memory::DeviceMemoryStats;
pub use plan::MEMORY_HEAVY_DECLARED_BYTES;
pub use resources::DEFAULT_COPY_POOL_CAPACITY;
pub use step::NodeStats;
pub use timeline::chrome_trace_json;
