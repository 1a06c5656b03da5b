//! The GPU probe of `magpie server`, in a child process: whether this machine has a real
//! GPU, asked before the server loads Vulkan itself.
//!
//! Creating a Vulkan instance loads every installed driver, and Mesa's (lavapipe's among
//! them) link LLVM: about 50 MiB of libraries stay mapped for the rest of the process even
//! once the instance is destroyed, and opening the emulated device adds about 25 MiB more
//! (BENCHMARKS.md, "Server memory"). A server that serves no emulated GPU (the default)
//! has nothing to gain from them on a machine whose only Vulkan device is lavapipe, so it
//! runs `magpie probe-gpus` first, which counts the real GPUs and exits; only if it
//! reports some does the server discover them itself.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long the child may take: a hang guard, tens of times what listing the devices
/// takes on a loaded machine.
const PROBE_DEADLINE: Duration = Duration::from_secs(30);

/// The hidden subcommand's name.
pub(crate) const SUBCOMMAND: &str = "probe-gpus";

/// `magpie probe-gpus`: prints how many real GPUs (with compute queues and timeline
/// semaphores, not emulated) this machine's Vulkan drivers offer; 0 without a driver.
pub(crate) fn run() -> anyhow::Result<()> {
    println!("{}", magpie::vulkan::count_real_gpus().unwrap_or(0));
    Ok(())
}

/// How many real GPUs `magpie probe-gpus` reports, run as a child of this process; `None`
/// when the child cannot be run or prints no number (the caller then discovers the GPUs
/// itself, as without the probe). A child that does not answer within
/// [`PROBE_DEADLINE`] is killed and counts as having found none, with a warning: the
/// driver that hangs it would hang this process too.
pub(crate) fn real_gpus() -> Option<usize> {
    let exe = std::env::current_exe().ok()?;
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| tracing::debug!(error = %e, "cannot run the GPU probe"))
        .ok()?;
    let mut stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    match rx.recv_timeout(PROBE_DEADLINE) {
        Ok(out) => {
            let _ = child.wait();
            out.trim().parse().ok()
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            tracing::warn!(
                deadline = ?PROBE_DEADLINE,
                "the GPU probe did not answer: serving no GPU"
            );
            Some(0)
        }
    }
}
