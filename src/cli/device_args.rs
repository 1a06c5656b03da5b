//! The device flags `magpie server` and `magpie devices` share, and the [`TaskDevices`]
//! they ask for: one parse, so that `magpie devices` lists what `magpie server` with the
//! same flags serves.

use anyhow::bail;
use clap::Args;
use magpie::cluster::TaskDevices;
use magpie::CpuOptions;

/// Which of the machine's devices a task serves.
#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    /// Device specs of the local devices the task exposes, comma separated
    /// (e.g. `/device:CPU:*`); default: all, its GPUs and a CPU per NUMA node. The
    /// analogue of CUDA_VISIBLE_DEVICES.
    #[arg(long, value_name = "SPECS", value_delimiter = ',')]
    pub(crate) visible_devices: Option<Vec<String>>,
    /// Scheduler worker threads of the task (default: one per PU of the machine).
    #[arg(long)]
    pub(crate) workers: Option<usize>,
    /// Serve no GPU, only the CPU devices (by default the task serves every Vulkan
    /// GPU, and the first is its default device).
    #[arg(long)]
    pub(crate) no_gpus: bool,
    /// Also serve GPUs that a Vulkan driver emulates on the CPU (Mesa's lavapipe),
    /// which are left out by default: for trying the GPU paths without a GPU.
    #[arg(long, conflicts_with = "no_gpus")]
    pub(crate) emulated_gpus: bool,
    /// The most bytes the live tensors of each of the task's CPU devices may hold at
    /// once (default: the machine's memory, or its NUMA node's); an allocation past it
    /// fails the step at once with a resource-exhausted error naming this flag.
    #[arg(long, value_name = "BYTES")]
    pub(crate) cpu_memory_limit: Option<u64>,
    /// The most bytes the live tensors of each of the task's GPUs may hold at once
    /// (default: the GPU's largest device-local heap); an allocation past it fails the
    /// step at once with a resource-exhausted error naming this flag.
    #[arg(long, value_name = "BYTES")]
    pub(crate) gpu_memory_limit: Option<u64>,
}

impl DeviceArgs {
    /// The task's devices as the flags ask.
    ///
    /// # Errors
    /// `--workers 0`.
    pub(crate) fn task_devices(&self) -> anyhow::Result<TaskDevices> {
        if self.workers == Some(0) {
            bail!("--workers must be at least 1");
        }
        Ok(TaskDevices {
            cpu: CpuOptions {
                num_workers: self.workers,
                ..TaskDevices::default().cpu
            },
            gpus: !self.no_gpus,
            emulated_gpus: self.emulated_gpus,
            cpu_memory_limit: self.cpu_memory_limit,
            gpu_memory_limit: self.gpu_memory_limit,
            visible_devices: self.visible_devices.clone(),
        })
    }
}
