//! Tests of the device wrapper that need a device of their own (tests run in parallel,
//! and counters or a failed state must not be shared): a hung GPU, injected as a
//! submission that waits on a timeline semaphore nobody signals (until the test lets it
//! go), fails its wait at the deadline and marks the device failed; pooled buffers are
//! reused across steps; the memory limit counts the bytes in use.

use std::sync::Arc;
use std::time::Duration;

use magpie_core::graph::Graph;
use magpie_core::graph::Output;
use magpie_core::session::{RunOptions, Session, SessionOptions};
use magpie_core::{DType, Device, KernelError, Tensor};
use vulkano::command_buffer::{SemaphoreSubmitInfo, SubmitInfo};
use vulkano::sync::fence::{Fence, FenceCreateInfo};
use vulkano::sync::semaphore::{
    Semaphore, SemaphoreCreateInfo, SemaphoreSignalInfo, SemaphoreType,
};
use vulkano::{Validated, VulkanError as VkResult};

use super::completion::{Completion, Pending};
use super::VulkanDevice;

/// A submission fenced with a raw fence.
struct RawFence(Arc<Fence>);

impl Pending for RawFence {
    fn wait(&self, timeout: Duration) -> Result<(), Validated<VkResult>> {
        self.0.wait(Some(timeout)).map_err(Validated::Error)
    }
}

/// A device of this test's own, or `None` (after saying why) when the machine has no
/// Vulkan device.
fn fresh_device() -> Option<VulkanDevice> {
    crate::register().unwrap();
    match super::discovery::find() {
        Ok(d) => Some((*d[0]).clone()),
        Err(e) => {
            eprintln!("SKIPPED: no Vulkan device: {e}");
            None
        }
    }
}

/// A graph `y = -(square(-x))` on the GPU and a session over `dev`.
fn chain_session(dev: &VulkanDevice) -> (Session, Output, Output) {
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g
        .device("/device:GPU:0", |g| {
            let a = g.neg(x)?;
            let b = g.square(a)?;
            g.neg(b)
        })
        .unwrap();
    let gpu: Arc<dyn Device> = Arc::new(dev.clone());
    let s = Session::new(&g, SessionOptions::with_devices(vec![gpu]).num_workers(2)).unwrap();
    (s, x, y)
}

#[test]
fn steps_reuse_pooled_buffers() {
    let Some(dev) = fresh_device() else { return };
    let (s, x, y) = chain_session(&dev);
    let input: Vec<f32> = (0..1000).map(|i| i as f32 / 100.0).collect();
    let feed = Tensor::from_vec([1000], input.clone()).unwrap();
    let run = || {
        let out = s.run(&[(x, feed.clone())], &[y], &[]).unwrap();
        let got = out[0].as_slice::<f32>().unwrap().to_vec();
        let want: Vec<f32> = input.iter().map(|v| -(v * v)).collect();
        assert_eq!(got, want);
    };
    run();
    let first = dev.memory_stats();
    assert!(first.tensors.allocations >= 1, "{first:?}");
    assert!(first.uploads.allocations >= 1 && first.downloads.allocations >= 1);
    for _ in 0..4 {
        run();
    }
    let later = dev.memory_stats();
    // Four more steps of the same shapes allocate nothing new: every buffer (tensors and
    // staging) comes from the pools.
    assert_eq!(
        later.tensors.allocations, first.tensors.allocations,
        "{later:?}"
    );
    assert_eq!(
        later.uploads.allocations, first.uploads.allocations,
        "{later:?}"
    );
    assert_eq!(
        later.downloads.allocations, first.downloads.allocations,
        "{later:?}"
    );
    // Each step leases four tensor buffers (the input and three outputs), one upload and
    // one download staging buffer.
    assert!(
        later.tensors.reuses >= first.tensors.reuses + 4 * 4,
        "{later:?}"
    );
    assert!(
        later.uploads.reuses >= first.uploads.reuses + 4,
        "{later:?}"
    );
    assert!(
        later.downloads.reuses >= first.downloads.reuses + 4,
        "{later:?}"
    );
    // Between steps no tensor lives on the device; the blocks wait in the pool.
    assert_eq!(later.tensors.in_use_bytes, 0, "{later:?}");
    assert_eq!(dev.memory_in_use(), Some(0));
    assert!(later.tensors.cached_bytes >= 4 * 1024, "{later:?}");
}

#[test]
fn the_memory_limit_counts_live_tensors() {
    let Some(dev) = fresh_device() else { return };
    // 1000 f32s take a 4096-byte block; the chain keeps at most two alive at once
    // (an op's input and its output), so 8 KiB is enough and 6 KiB is not.
    dev.set_memory_limit(8192);
    let (s, x, y) = chain_session(&dev);
    let feed = Tensor::from_vec([1000], vec![1.0f32; 1000]).unwrap();
    let options = RunOptions {
        track_memory: true,
        ..Default::default()
    };
    let out = s
        .run_with_options(&options, &[(x, feed.clone())], &[y], &[])
        .unwrap();
    // The executor's accounting counts the GPU's tensors too.
    let gpu_peak = out
        .metadata
        .memory
        .iter()
        .find(|m| m.device.contains("GPU:0"))
        .map(|m| m.peak_bytes);
    assert!(
        gpu_peak.is_some_and(|p| p >= 4000),
        "{:?}",
        out.metadata.memory
    );

    dev.set_memory_limit(6144);
    let e = s.run(&[(x, feed)], &[y], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("cannot allocate 4096 bytes") && msg.contains("GPU:0"),
        "{msg}"
    );
    assert!(msg.contains("memory limit of 6144 bytes"), "{msg}");
    assert!(
        !msg.contains("magpie server"),
        "no server set the limit: {msg}"
    );
    assert!(
        matches!(e.code(), magpie_core::Code::ResourceExhausted),
        "{e:?}"
    );

    // Set by a server's flag, the limit's refusals name the flag.
    dev.set_memory_limit_setting(magpie_core::limits::Limit::GpuMemory);
    assert_eq!(
        dev.memory_limit_setting(),
        Some(magpie_core::limits::Limit::GpuMemory)
    );
    let feed = Tensor::from_vec([1000], vec![1.0f32; 1000]).unwrap();
    let e = s.run(&[(x, feed)], &[y], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("--gpu-memory-limit"), "{msg}");
    assert!(
        matches!(e.code(), magpie_core::Code::ResourceExhausted),
        "{e:?}"
    );
}

/// A device of this test's own (breaking it leaves other tests' devices alone), or
/// `None` when the machine has no Vulkan device.
fn own_device() -> Option<VulkanDevice> {
    let devices = match super::discovery::find() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: no Vulkan device: {e}");
            return None;
        }
    };
    Some((*devices[0]).clone())
}

/// Submits work that cannot start until `gate` reaches 1, watched like a kernel's.
fn hang(dev: &VulkanDevice, gate: &Arc<Semaphore>) -> Completion {
    let shared = &dev.shared;
    let fence = Arc::new(
        Fence::new(
            shared.stream.queue.device().clone(),
            FenceCreateInfo::default(),
        )
        .unwrap(),
    );
    let submit = SubmitInfo {
        wait_semaphores: vec![SemaphoreSubmitInfo {
            value: 1,
            ..SemaphoreSubmitInfo::new(Arc::clone(gate))
        }],
        ..Default::default()
    };
    shared
        .stream
        .queue
        .with(|mut q| {
            // SAFETY: the semaphore and the fence are kept alive by the pending job
            // (leaked when its wait fails) and by the test; the fence is unsignalled and
            // used once; waiting for a timeline value not yet signalled is valid
            // (wait-before-signal).
            unsafe { q.submit(&[submit], Some(&fence)) }
        })
        .unwrap();
    shared
        .stream
        .waiter
        .watch(Box::new(RawFence(fence)), "InjectedHang", &dev.name)
}

#[test]
fn a_hung_gpu_fails_the_wait_at_its_deadline_and_later_steps_fast() {
    let Some(dev) = own_device() else { return };
    crate::register().unwrap();
    let gate = Arc::new(
        Semaphore::new(
            dev.shared.stream.queue.device().clone(),
            SemaphoreCreateInfo {
                semaphore_type: SemaphoreType::Timeline,
                initial_value: 0,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    dev.set_wait_timeout(Duration::from_millis(200));
    assert_eq!(dev.failure(), None);

    let err = futures::executor::block_on(hang(&dev, &gate)).unwrap_err();
    let KernelError::Device(msg) = &err else {
        panic!("expected a device error, got {err:?}")
    };
    assert!(
        msg.contains("GPU:0") && msg.contains("InjectedHang"),
        "{msg}"
    );
    assert!(
        msg.contains("did not finish") && msg.contains("marked failed"),
        "{msg}"
    );
    assert_eq!(dev.failure().as_deref(), Some(msg.as_str()));

    // Later work fails at once with the device's failure.
    let again = dev.upload("Const", &[1.0, 2.0]).unwrap_err();
    assert!(
        matches!(&again, KernelError::Device(m) if m.starts_with("_CopyFromHost") || m.starts_with("Const")),
        "{again:?}"
    );
    assert!(
        again.to_string().contains("did not finish InjectedHang"),
        "{again}"
    );

    // So does a whole step on the device, with the same error.
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g.device("/device:GPU:0", |g| g.neg(x)).unwrap();
    let gpu: Arc<dyn Device> = Arc::new(dev.clone());
    let s = Session::new(&g, SessionOptions::with_devices(vec![gpu]).num_workers(2)).unwrap();
    let step = s
        .run(
            &[(x, Tensor::from_vec([2], vec![1.0f32, 2.0]).unwrap())],
            &[y],
            &[],
        )
        .unwrap_err();
    assert!(
        step.to_string().contains("did not finish InjectedHang"),
        "{step}"
    );

    // A step that gives the failed device no GPU work is not failed by it.
    let g = Graph::new();
    let nothing = g.device("/device:GPU:0", |g| g.no_op()).unwrap();
    let gpu: Arc<dyn Device> = Arc::new(dev.clone());
    let s = Session::new(&g, SessionOptions::with_devices(vec![gpu]).num_workers(2)).unwrap();
    s.run(&[], &[], &[nothing]).unwrap();

    // Let the injected work go, so the queue drains before the process exits.
    // SAFETY: a host signal of a timeline semaphore to a value above its current one.
    unsafe {
        gate.signal(SemaphoreSignalInfo {
            value: 1,
            ..Default::default()
        })
    }
    .unwrap();
}

#[test]
fn a_chain_of_100_gpu_ops_runs_in_one_submission() {
    let Some(dev) = fresh_device() else { return };
    // No batch is submitted for lingering during the test: only the fetch's download
    // submits, so the count does not depend on how fast this machine records.
    dev.set_batch_linger(Duration::from_secs(3600));
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g
        .device("/device:GPU:0", |g| {
            let mut y = x;
            for i in 0..100 {
                y = if i % 2 == 0 { g.neg(y)? } else { g.add(y, y)? };
            }
            Ok(y)
        })
        .unwrap();
    let gpu: Arc<dyn Device> = Arc::new(dev.clone());
    let s = Session::new(&g, SessionOptions::with_devices(vec![gpu]).num_workers(2)).unwrap();
    let input: Vec<f32> = (0..1000).map(|i| i as f32 - 500.0).collect();
    let feed = Tensor::from_vec([1000], input.clone()).unwrap();
    for _ in 0..2 {
        let out = s
            .run_with_options(&RunOptions::default(), &[(x, feed.clone())], &[y], &[])
            .unwrap();
        // Negate and double, 50 times: v * 2^50, exact in f32.
        let want: Vec<f32> = input.iter().map(|&v| v * 2f32.powi(50)).collect();
        assert_eq!(out.tensors[0].as_slice::<f32>().unwrap(), &want[..]);
        let submissions: Vec<_> = out
            .metadata
            .device_counters
            .iter()
            .filter(|c| c.name == "submissions")
            .collect();
        assert_eq!(submissions.len(), 1, "{:?}", out.metadata.device_counters);
        assert!(submissions[0].device.ends_with("GPU:0"));
        // The upload, 100 dispatches and the download: one batch, one submission.
        assert_eq!(
            submissions[0].delta, 1,
            "{:?}",
            out.metadata.device_counters
        );
    }
    assert_eq!(dev.submissions(), 2);
}

#[test]
fn work_nobody_waits_for_is_submitted_after_the_linger() {
    let Some(dev) = fresh_device() else { return };
    dev.set_batch_linger(Duration::from_millis(1));
    let out = dev.alloc("ZerosLike", 16).unwrap();
    let o = Arc::clone(&out);
    dev.enqueue("ZerosLike", move |r| r.fill(&o, 0)).unwrap();
    // The flusher submits the batch once it has lingered; nothing here waits on it. Poll
    // with a deadline (a hang would fail the test, not block it).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dev.submissions() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lingering batch was never submitted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(dev.submissions(), 1);
}

#[test]
fn a_step_with_only_gpu_targets_finishes_its_work_before_returning() {
    let Some(dev) = fresh_device() else { return };
    // Nothing lingers into a later submission: only the step's end submits.
    dev.set_batch_linger(Duration::from_secs(3600));
    let g = Graph::new();
    let y = g
        .device("/device:GPU:0", |g| {
            let c = g.constant(Tensor::from_vec([4], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap())?;
            g.square(c)
        })
        .unwrap();
    let gpu: Arc<dyn Device> = Arc::new(dev.clone());
    let s = Session::new(&g, SessionOptions::with_devices(vec![gpu]).num_workers(2)).unwrap();
    let out = s
        .run_with_options(&RunOptions::default(), &[], &[], &[y.node])
        .unwrap();
    // The step's end submitted the batch (upload and square) and waited for it.
    assert_eq!(dev.submissions(), 1);
    assert_eq!(out.metadata.device_counters.len(), 1);
    assert_eq!(out.metadata.device_counters[0].delta, 1);
    let timeline = dev.shared.stream.completed_value();
    assert_eq!(timeline, 1, "the GPU has run the step's batch");
}

/// `n` values in [-1, 1) from a seeded LCG.
fn lcg(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// ‖got − op(a) op(b)‖ / ‖op(a) op(b)‖, the product in f64.
#[allow(clippy::too_many_arguments)]
fn matmul_error(
    a: &[f32],
    b: &[f32],
    got: &[f32],
    m: usize,
    k: usize,
    n: usize,
    ta: bool,
    tb: bool,
) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for i in 0..m {
        for j in 0..n {
            let r: f64 = (0..k)
                .map(|p| {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    f64::from(x) * f64::from(y)
                })
                .sum();
            let d = f64::from(got[i * n + j]) - r;
            num += d * d;
            den += r * r;
        }
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn f16_dispatches(dev: &VulkanDevice) -> u64 {
    dev.counters()
        .iter()
        .find(|(name, _)| *name == "matmul_f16_dispatches")
        .map(|(_, v)| *v)
        .expect("the device reports the counter")
}

/// With `MatMulPrecision::F16`, MatMul runs on the matrix units where the device has
/// them (every product counted, within f16 operand rounding of the f64 product), and
/// falls back to the f32 shader where it has not (lavapipe: none counted, f32 accuracy),
/// at awkward sizes and every transpose; back at F32 it is the f32 shader again.
#[test]
fn f16_matmul_runs_on_the_matrix_units_or_falls_back_to_f32() {
    use super::MatMulPrecision;
    let Some(dev) = fresh_device() else { return };
    assert_eq!(dev.matmul_precision(), MatMulPrecision::F32);
    dev.set_matmul_precision(MatMulPrecision::F16);
    assert_eq!(dev.matmul_precision(), MatMulPrecision::F16);
    let units = dev.f16_matrix_units().map_err(str::to_string);
    if dev.is_emulated() {
        let why = units
            .as_ref()
            .expect_err("an emulated GPU has no matrix units");
        assert!(!why.is_empty());
    }
    let gpu: Arc<dyn Device> = Arc::new(dev.clone());
    let run = |m: usize, k: usize, n: usize, ta: bool, tb: bool, bound: f64| {
        let a = lcg(m * k, (m * 31 + k) as u64);
        let b = lcg(k * n, (n * 17 + k) as u64);
        let sa = if ta { [k, m] } else { [m, k] };
        let sb = if tb { [n, k] } else { [k, n] };
        let g = Graph::new();
        let xa = g.placeholder(DType::F32, None).unwrap();
        let xb = g.placeholder(DType::F32, None).unwrap();
        let y = g
            .device("/device:GPU:0", |g| g.matmul_t(xa, xb, ta, tb))
            .unwrap();
        let s = Session::new(
            &g,
            SessionOptions::with_devices(vec![gpu.clone()]).num_workers(2),
        )
        .unwrap();
        let feeds = [
            (xa, Tensor::from_vec(sa, a.clone()).unwrap()),
            (xb, Tensor::from_vec(sb, b.clone()).unwrap()),
        ];
        let out = s.run(&feeds, &[y], &[]).unwrap();
        assert_eq!(out[0].shape().dims(), &[m, n]);
        let err = matmul_error(&a, &b, out[0].as_slice::<f32>().unwrap(), m, k, n, ta, tb);
        assert!(
            err <= bound,
            "[{m}, {k}] x [{k}, {n}] ta={ta} tb={tb}: relative error {err:e} > {bound:e}"
        );
    };
    let bound = if units.is_ok() { 5e-3 } else { 1e-5 };
    let before = f16_dispatches(&dev);
    let mut products = 0;
    for (m, k, n) in [
        (1, 1, 1),
        (7, 5, 3),
        (129, 129, 129),
        (129, 1000, 7),
        (7, 129, 1000),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            run(m, k, n, ta, tb, bound);
            products += 1;
        }
    }
    let on_units = f16_dispatches(&dev) - before;
    assert_eq!(
        on_units,
        if units.is_ok() { products } else { 0 },
        "{units:?}"
    );

    dev.set_matmul_precision(MatMulPrecision::F32);
    let before = f16_dispatches(&dev);
    run(129, 129, 129, false, false, 1e-5);
    assert_eq!(f16_dispatches(&dev), before, "F32 again: the f32 shader");
}
