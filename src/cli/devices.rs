//! `magpie devices`: the devices a local session would use.

pub(crate) fn run() -> anyhow::Result<()> {
    let options = magpie::local_options();
    println!("local devices (the first is the default):");
    for d in &options.devices {
        println!("  {}  {}", d.name(), d.description());
        let kernels = magpie::registry::kernels_for(d.device_type());
        println!("    kernels ({}): {}", kernels.len(), kernels.join(", "));
    }
    if let Some(why) = magpie::gpu_status() {
        println!("no GPU devices: {why}");
    }
    Ok(())
}
