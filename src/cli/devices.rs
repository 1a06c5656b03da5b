//! `magpie devices`: the machine's topology and, for each CPU layout, the devices a local
//! session would use.

use magpie::cpu::{layout_devices, select_nodes, CpuOptions, MachineTopology, PinningPlan};
use magpie::{CpuLayout, Device};

pub(crate) fn run(synthetic: Option<&str>) -> anyhow::Result<()> {
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
    magpie_cpu_kernels_and_gpus();
    Ok(())
}

fn magpie_cpu_kernels_and_gpus() {
    let options = magpie::local_options();
    println!("local_options() devices (the first is the default):");
    for d in &options.devices {
        println!("  {}  {}", d.name(), d.description());
        let kernels = magpie::registry::kernels_for(d.device_type());
        println!("    kernels ({}): {}", kernels.len(), kernels.join(", "));
    }
    if let Some(why) = magpie::gpu_status() {
        println!("no GPU devices: {why}");
    }
}
