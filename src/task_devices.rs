//! What a cluster task serves of its machine (`magpie server`): the CPU backend's devices
//! (by default one per NUMA node, with all their cores as the scheduler's workers, pinned
//! where the OS allows) and every Vulkan GPU, each named for the task
//! (`/job:worker/replica:0/task:1/device:GPU:0`). The first GPU is the task's default
//! device when it has one, else `CPU:0` — TensorFlow's choice; `gpus: false` or
//! visible-device specs that name no GPU leave the GPUs out (the ps task of the default
//! cluster). A GPU emulated on the CPU (Mesa's lavapipe) is served only when asked for
//! (`emulated_gpus`): it would otherwise become the default device of every task on a
//! machine without a GPU, and run every unpinned op slower than the CPU.
//!
//! [`task_server_options`](crate::cluster::task_server_options) stays the light choice
//! for in-process clusters: one CPU device and two workers per task.

use std::sync::Arc;

use magpie_core::device::Device;
use magpie_core::distributed::ServerOptions;
use magpie_core::graph::{DeviceName, DeviceSpec};
use magpie_core::limits::Limit;
use magpie_core::transport::TaskName;
use magpie_cpu::{CpuLayout, CpuOptions, CpuRuntime, CpuSetupError};
use magpie_vulkan::VulkanError;

/// Which of its machine's devices a task serves, and how.
#[derive(Clone, Debug)]
pub struct TaskDevices {
    /// How the CPU backend lays itself over the machine: by default one device per NUMA
    /// node and one worker per PU; `num_workers` sets the task's scheduler threads.
    pub cpu: CpuOptions,
    /// Serve the machine's Vulkan GPUs (default `true`); none without a Vulkan driver.
    pub gpus: bool,
    /// Serve GPUs that a Vulkan driver emulates on the CPU, such as Mesa's lavapipe
    /// (default `false`: they compute no faster than the CPU devices, and the first GPU
    /// would become the default device). For tests of the GPU paths on a machine
    /// without a GPU.
    pub emulated_gpus: bool,
    /// The most bytes the live tensors of each CPU device may hold at once (default: the
    /// memory of its NUMA node, or of the machine).
    pub cpu_memory_limit: Option<u64>,
    /// The most bytes the live tensors of each GPU may hold at once (default: its largest
    /// device-local heap). A server's GPUs name `--gpu-memory-limit` when they refuse an
    /// allocation either way.
    pub gpu_memory_limit: Option<u64>,
    /// Device specs of the devices the task exposes (`/device:CPU:*`); `None`: all. When
    /// no spec can match a GPU, the GPUs are not even opened.
    pub visible_devices: Option<Vec<String>>,
}

impl Default for TaskDevices {
    fn default() -> Self {
        TaskDevices {
            cpu: CpuOptions::with_layout(CpuLayout::PerNumaNode),
            gpus: true,
            emulated_gpus: false,
            cpu_memory_limit: None,
            gpu_memory_limit: None,
            visible_devices: None,
        }
    }
}

impl TaskDevices {
    /// Whether the GPUs are wanted: asked for, and some visible spec (if any is given)
    /// could match a device of type `GPU`. A spec that does not parse counts as one that
    /// could (the server reports it when it starts).
    pub fn wants_gpus(&self) -> bool {
        self.gpus
            && self.visible_devices.as_ref().is_none_or(|specs| {
                specs.iter().any(|s| {
                    DeviceSpec::parse(s).map_or(true, |spec| {
                        spec.device_type
                            .as_deref()
                            .is_none_or(|t| t.eq_ignore_ascii_case(magpie_vulkan::DEVICE_TYPE))
                    })
                })
            })
    }
}

/// Why a task's devices could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TaskDevicesError {
    /// The CPU options are wrong for this machine (e.g. a NUMA node it does not have).
    #[error("the CPU devices of {task}: {source}")]
    Cpu {
        /// The task.
        task: String,
        /// What the CPU backend refused.
        #[source]
        source: CpuSetupError,
    },
    /// The task's name makes no valid GPU device name.
    #[error("the GPUs of {task}: {source}")]
    Gpu {
        /// The task.
        task: String,
        /// What the Vulkan backend refused.
        #[source]
        source: VulkanError,
    },
    /// The task would expose no device, or its visible-device specs are wrong.
    #[error("the visible devices of {task}: {reason}")]
    Visible {
        /// The task.
        task: String,
        /// Why (the server's own words).
        reason: String,
    },
}

/// The devices a task over its machine serves, as `devices` asks, the default device
/// first: [`machine_server_options`]'s devices filtered by its visible-device specs,
/// exactly as the task's worker filters them (`magpie devices` lists these, `magpie
/// server` serves them).
///
/// # Errors
/// As [`machine_server_options`]; besides, [`TaskDevicesError::Visible`] when the specs
/// do not parse or match no device.
pub fn served_devices(
    task: &TaskName,
    devices: &TaskDevices,
) -> Result<Vec<Arc<dyn Device>>, TaskDevicesError> {
    let options = machine_server_options(task, devices)?;
    options
        .visible(task)
        .map_err(|reason| TaskDevicesError::Visible {
            task: task.to_string(),
            reason,
        })
}

/// Server options for `task` over its machine, as `devices` asks: the GPUs first (the
/// first is the default device), then the CPU devices, every one named for the task, and
/// the CPU backend's pool (pinned workers, NUMA steal groups). The CPU, distributed and
/// Vulkan kernels are registered. A machine without a Vulkan driver serves its CPUs
/// alone (logged at info level). One step may hold at most
/// [`default_step_memory_limit`] bytes of tensors on the task
/// ([`ServerOptions::step_memory_limit`]).
///
/// ```
/// use magpie::cluster::{machine_server_options, TaskDevices};
/// use magpie::transport::TaskName;
///
/// let ps = TaskDevices {
///     visible_devices: Some(vec!["/device:CPU:*".into()]),
///     ..TaskDevices::default()
/// };
/// let options = machine_server_options(&TaskName::new("ps", 0), &ps)?;
/// assert_eq!(options.devices[0].name().to_string(), "/job:ps/replica:0/task:0/device:CPU:0");
/// # Ok::<(), magpie::cluster::TaskDevicesError>(())
/// ```
///
/// # Errors
///
/// [`TaskDevicesError`] for CPU options this machine cannot meet, or a job name that
/// makes no device name.
pub fn machine_server_options(
    task: &TaskName,
    devices: &TaskDevices,
) -> Result<ServerOptions, TaskDevicesError> {
    crate::register_backends();
    let mut out: Vec<Arc<dyn Device>> = Vec::new();
    if devices.wants_gpus() {
        match magpie_vulkan::discover_for_task(&task.job, task.index) {
            // Discovery orders emulated devices last, so the real GPUs keep GPU:0.. .
            Ok(gpus) => out.extend(
                gpus.into_iter()
                    .filter(|d| devices.emulated_gpus || !d.is_emulated())
                    .map(|d| {
                        // The task's GPU limit is the operator's (`--gpu-memory-limit`, by
                        // default the device's heap): its errors name that flag.
                        d.set_memory_limit_setting(Limit::GpuMemory);
                        if let Some(bytes) = devices.gpu_memory_limit {
                            d.set_memory_limit(bytes);
                        }
                        d as Arc<dyn Device>
                    }),
            ),
            Err(e @ VulkanError::BadName(_)) => {
                return Err(TaskDevicesError::Gpu {
                    task: task.to_string(),
                    source: e,
                })
            }
            Err(why) => tracing::info!(%task, %why, "no GPU devices"),
        }
    }
    let runtime = CpuRuntime::build(&devices.cpu).map_err(|source| TaskDevicesError::Cpu {
        task: task.to_string(),
        source,
    })?;
    for cpu in runtime.devices() {
        let name = DeviceName {
            job: task.job.clone(),
            replica: 0,
            task: task.index,
            ..cpu.name().clone()
        };
        // The task's CPU limit is the operator's (`--cpu-memory-limit`, by default the
        // memory of the device's NUMA node or machine): its errors name that flag.
        let mut cpu = cpu
            .renamed(name)
            .with_memory_limit_setting(Limit::CpuMemory);
        if let Some(bytes) = devices.cpu_memory_limit {
            cpu = cpu.with_memory_limit(Some(bytes));
        }
        out.push(Arc::new(cpu));
    }
    Ok(ServerOptions {
        pool: Some(runtime.pool().clone()),
        visible_devices: devices.visible_devices.clone(),
        step_memory_limit: default_step_memory_limit(),
        ..ServerOptions::with_devices(out)
    })
}

/// The default bound on the bytes one step's tensors hold on a task (`magpie server
/// --step-memory-limit`): half the machine's memory, so that no one step (no one
/// client) can take all of it; `None` when the machine does not say how much it has.
pub fn default_step_memory_limit() -> Option<u64> {
    magpie_cpu::machine_memory().map(|bytes| bytes / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wants(gpus: bool, visible: Option<&[&str]>) -> bool {
        TaskDevices {
            gpus,
            visible_devices: visible.map(|v| v.iter().map(|s| s.to_string()).collect()),
            ..TaskDevices::default()
        }
        .wants_gpus()
    }

    #[test]
    fn gpus_are_opened_only_when_some_visible_spec_could_match_one() {
        assert!(wants(true, None));
        assert!(!wants(false, None));
        assert!(!wants(true, Some(&["/device:CPU:*"])));
        assert!(!wants(true, Some(&["/device:CPU:0", "/device:TPU:0"])));
        assert!(wants(true, Some(&["/device:CPU:0", "/device:GPU:1"])));
        assert!(
            wants(true, Some(&["/device:gpu:0"])),
            "device types ignore case"
        );
        assert!(
            wants(true, Some(&["/job:ps/task:0"])),
            "no type: any device"
        );
        assert!(
            wants(true, Some(&["not a spec"])),
            "reported when the server starts"
        );
        assert!(!wants(false, Some(&["/device:GPU:0"])));
    }
}
