//! The CPU device and kernel registration.

use magpie_core::device::Device;
use magpie_core::graph::{registered_ops, DeviceName};
use magpie_core::registry::{has_kernel, kernels_for};
use magpie_cpu::CpuDevice;

#[test]
fn register_is_idempotent_and_covers_every_standard_op() {
    magpie_cpu::register().expect("the CPU kernels register");
    magpie_cpu::register().expect("the CPU kernels register");
    let registered = kernels_for("CPU");
    for op in magpie_cpu::supported_ops() {
        assert!(registered.iter().any(|r| r == op), "{op} registered");
    }
    for op in registered_ops() {
        assert!(has_kernel(&op, "CPU"), "standard op {op} has a CPU kernel");
    }
    assert_eq!(magpie_cpu::supported_ops().count(), 52);
}

#[test]
fn the_default_device_is_local_cpu_zero() {
    let d = magpie_cpu::cpu_device();
    assert_eq!(
        d.name().to_string(),
        "/job:localhost/replica:0/task:0/device:CPU:0"
    );
    assert_eq!(d.device_type(), "CPU");
    let cores = std::thread::available_parallelism().unwrap().get();
    let unit = if cores == 1 { "core" } else { "cores" };
    assert_eq!(d.description(), format!("CPU, {cores} {unit}"));
    // The memory limit defaults to the machine's memory, as hwloc reports it.
    let machine = magpie_cpu::machine_memory();
    assert_eq!(d.memory_limit(), machine);
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("MemTotal in /proc/meminfo");
        let bytes = machine.expect("hwloc reports this machine's memory");
        assert!(
            bytes / 2 <= kib * 1024 && kib * 1024 <= bytes.saturating_mul(2),
            "hwloc says {bytes} bytes, /proc/meminfo {kib} KiB"
        );
    }
    let small = CpuDevice::new(1).with_memory_limit(Some(1 << 20));
    assert_eq!(small.memory_limit(), Some(1 << 20));
    assert_eq!(CpuDevice::new(3).name(), &DeviceName::local("CPU", 3));
}

#[test]
fn a_device_may_carry_a_cluster_name() {
    let name = DeviceName::parse("/job:worker/replica:0/task:2/device:CPU:1").unwrap();
    let d = CpuDevice::with_name(name.clone());
    assert_eq!(d.name(), &name);
    assert_eq!(d.device_type(), "CPU");
}

#[test]
#[should_panic(expected = "a CpuDevice needs device type CPU")]
fn a_device_of_another_type_is_refused() {
    CpuDevice::with_name(DeviceName::local("GPU", 0));
}
