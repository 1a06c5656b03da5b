//! `magpie devices`: the machine's topology and, for each CPU layout, the devices and
//! worker pinning it would give; then exactly the devices `magpie server` with the same
//! device flags would serve as the task (`served_devices`, the server's own code path),
//! the default first, with their kernels.

use anyhow::Context;
use magpie::cluster::served_devices;
use magpie::cpu::{layout_devices, select_nodes, CpuOptions, MachineTopology, PinningPlan};
use magpie::transport::TaskName;
use magpie::{CpuLayout, Device};

use super::DeviceArgs;

/// Prints the topology (`synthetic`'s, else the machine's), each layout's devices, and
/// the devices `task` would serve as `args` ask.
pub(crate) fn run(
    synthetic: Option<&str>,
    task: &TaskName,
    args: &DeviceArgs,
) -> anyhow::Result<()> {
    // Flags the server would refuse are refused before anything is printed.
    let wanted = args.task_devices()?;
    let topology = match synthetic {
        Some(d) => MachineTopology::synthetic(d)?,
        None => match MachineTopology::detect() {
            Ok((t, _)) => t,
            Err(e) => MachineTopology::assumed(e.to_string()),
        },
    };
    print!("{topology}");
    for layout in [CpuLayout::Single, CpuLayout::PerNumaNode] {
        let options = CpuOptions::with_layout(layout);
        let nodes = select_nodes(&topology, &options)?;
        let workers = topology.num_pus();
        let plan = PinningPlan::new(&topology, &nodes, workers);
        println!();
        println!("layout {layout}: {workers} worker(s)");
        let devices = layout_devices(&topology, &nodes, layout);
        for (i, d) in devices.iter().enumerate() {
            let branch = if i + 1 == devices.len() {
                "└─"
            } else {
                "├─"
            };
            println!("{branch} {}  {}", d.name(), d.description());
            let indent = if i + 1 == devices.len() {
                "   "
            } else {
                "│  "
            };
            let on: Vec<String> = plan
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| d.numa_node().is_none_or(|n| n == w.node))
                .map(|(i, w)| format!("{i}→PU{}", w.pu))
                .collect();
            println!("{indent}   workers (worker→PU): {}", on.join(" "));
        }
    }
    println!();
    let served = served_devices(task, &wanted)
        .with_context(|| format!("setting up the devices of {task}"))?;
    print_served(task, &served);
    Ok(())
}

/// The served devices: first the line `magpie server` prints when it starts, then one
/// entry per device with its description and kernels, the default marked.
fn print_served(task: &TaskName, served: &[std::sync::Arc<dyn Device>]) {
    let names: Vec<String> = served.iter().map(|d| d.name().to_string()).collect();
    println!(
        "devices of {task} (the first is the default): {}",
        names.join(", ")
    );
    for (i, d) in served.iter().enumerate() {
        let default = if i == 0 { " (default)" } else { "" };
        println!("  {}{default}  {}", d.name(), d.description());
        let kernels = magpie::registry::kernels_for(d.device_type());
        println!("    kernels ({}): {}", kernels.len(), kernels.join(", "));
    }
    if let Some(why) = magpie::gpu_status() {
        println!("no GPU devices: {why}");
    }
}
