//! The CPU device's count of the bytes its live tensors hold (`Device::memory_in_use`):
//! exact under in-place reuse, shared buffers, fetched outputs and variables, back where it
//! started once every tensor a step made is dropped; and the memory limit that bounds it.
//! Each test has a device of its own, so tests running at once do not share a count.

use magpie_core::device::Device;
use magpie_core::session::{Session, SessionOptions};
use magpie_core::tensor::MemoryLimit;
use magpie_cpu::CpuDevice;

use super::*;

/// A fresh CPU device (a count of its own), under `limit` if given.
fn device(limit: Option<u64>) -> Arc<CpuDevice> {
    magpie_cpu::register().expect("the CPU kernels register");
    magpie_core::distributed::kernels::register_kernels();
    let d = CpuDevice::new(0);
    Arc::new(match limit {
        Some(l) => d.with_memory_limit(Some(l)),
        None => d,
    })
}

/// A session over `device` alone.
fn session(g: &Graph, device: &Arc<CpuDevice>) -> Session {
    let devices: Vec<Arc<dyn Device>> = vec![device.clone()];
    Session::new(g, SessionOptions::with_devices(devices).num_workers(2)).unwrap()
}

fn in_use(d: &CpuDevice) -> u64 {
    d.memory_in_use().expect("a CPU device counts its memory")
}

/// Runs `node`'s kernel, built for `device`, once on `inputs` (moved in, so a kernel may
/// reuse them).
fn run_on(device: &Arc<CpuDevice>, node: &Arc<Node>, inputs: Vec<Tensor>) -> Vec<Tensor> {
    let dtypes: Vec<DType> = inputs.iter().map(Tensor::dtype).collect();
    let factory = lookup_kernel(&node.op, "CPU").unwrap();
    let dyn_device: Arc<dyn Device> = device.clone();
    let kernel = factory(&KernelInit {
        node,
        input_dtypes: &dtypes,
        device: &dyn_device,
    })
    .unwrap();
    let BoxedKernel::Sync(kernel) = kernel else {
        panic!("CPU kernels are synchronous");
    };
    let mut ctx = KernelContext::new(node, SmallVec::from_vec(inputs), 0);
    kernel.compute(&mut ctx).unwrap();
    ctx.into_outputs().into_vec()
}

/// `n` f32 elements charged to `device`, as one of its kernels would have made them.
fn charged(device: &CpuDevice, n: usize) -> Tensor {
    MemoryLimit::of(device)
        .collect([n], (0..n).map(|i| i as f32))
        .unwrap()
}

#[test]
fn a_step_counts_its_fetched_output_until_it_is_dropped_and_nothing_else() {
    let dev = device(None);
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let two = g.constant(2.0f32).unwrap();
    let one = g.constant(1.0f32).unwrap();
    // `a` is new; `b` is written into `a`'s buffer (its last use); `Identity` and
    // `Reshape` forward `b`'s buffer; `e` is new again and `f` reuses it.
    let a = g.mul(x, two).unwrap();
    let b = g.add(a, one).unwrap();
    let c = g.identity(b).unwrap();
    let d = g.reshape(c, &[32, 32]).unwrap();
    let e = g.square(x).unwrap();
    let f = g.neg(e).unwrap();
    let s = session(&g, &dev);
    let start = in_use(&dev);
    assert_eq!(start, 0);
    let feed = Tensor::from_vec([1024], vec![1.5f32; 1024]).unwrap();
    for _ in 0..3 {
        let out = s.run(&[(x, feed.clone())], &[d, f], &[]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap()[0], 4.0);
        assert_eq!(out[1].as_slice::<f32>().unwrap()[0], -2.25);
        // Only the fetched outputs are alive: two buffers of 4 KiB, each counted once.
        assert_eq!(in_use(&dev), 2 * 4096);
        assert_eq!(out[0].charged_bytes(), Some(4096));
        let [first, second]: [Tensor; 2] = out.try_into().unwrap();
        drop(first);
        assert_eq!(in_use(&dev), 4096);
        // A clone shares the buffer: still counted once, until the last one goes.
        let kept = second.clone();
        drop(second);
        assert_eq!(in_use(&dev), 4096);
        drop(kept);
        assert_eq!(in_use(&dev), start);
    }
    // The feed was the caller's: never counted.
    assert_eq!(feed.charged_bytes(), None);
}

#[test]
fn add_written_into_its_input_counts_the_buffer_once() {
    let dev = device(None);
    let add = op_node("Add", DType::F32, 2, &[]);
    let a = charged(&dev, 1024);
    let ptr = data_ptr(&a);
    assert_eq!(in_use(&dev), 4096);
    // `a` is moved in and unique: the output is `a`'s buffer, charged once.
    let out = run_on(&dev, &add, vec![a, Tensor::scalar(1.0f32)]);
    assert_eq!(data_ptr(&out[0]), ptr, "Add reused its input's buffer");
    assert_eq!(in_use(&dev), 4096);
    assert_eq!(out[0].as_slice::<f32>().unwrap()[3], 4.0);
    drop(out);
    assert_eq!(in_use(&dev), 0);

    // An input of the caller's (uncounted) reused in place becomes the device's.
    let fed = Tensor::from_vec([1024], vec![1.0f32; 1024]).unwrap();
    let out = run_on(&dev, &add, vec![fed, Tensor::scalar(1.0f32)]);
    assert_eq!(in_use(&dev), 4096);
    drop(out);
    assert_eq!(in_use(&dev), 0);

    // A shared input is not reused: the output is a new buffer, and both count.
    let a = charged(&dev, 1024);
    let out = run_on(&dev, &add, vec![a.clone(), Tensor::scalar(1.0f32)]);
    assert_ne!(data_ptr(&out[0]), data_ptr(&a));
    assert_eq!(in_use(&dev), 8192);
    drop((a, out));
    assert_eq!(in_use(&dev), 0);
}

#[test]
fn scalar_and_unary_kernels_in_place_keep_the_count_exact() {
    let dev = device(None);
    // A scalar written in place through `as_mut_slice`: the input tensor is the output.
    let mul = op_node("Mul", DType::F32, 2, &[]);
    let x = MemoryLimit::of(&*dev).collect([], [3.0f32]).unwrap();
    assert_eq!(in_use(&dev), 4);
    let out = run_on(&dev, &mul, vec![x, Tensor::scalar(2.0f32)]);
    assert_eq!(
        (out[0].scalar_value::<f32>().unwrap(), in_use(&dev)),
        (6.0, 4)
    );
    drop(out);
    assert_eq!(in_use(&dev), 0);
    // A unique scalar of the caller's written in place stays the caller's (uncounted);
    // shared inputs get a new scalar, which is the device's.
    let out = run_on(
        &dev,
        &mul,
        vec![Tensor::scalar(3.0f32), Tensor::scalar(2.0f32)],
    );
    assert_eq!(in_use(&dev), 0);
    let (a, b) = (Tensor::scalar(3.0f32), Tensor::scalar(2.0f32));
    let shared = run_on(&dev, &mul, vec![a.clone(), b.clone()]);
    assert_eq!(in_use(&dev), 4);
    drop((out, shared));
    assert_eq!(in_use(&dev), 0);

    // A unary op takes its unique input's elements and gives them back as its output.
    let neg = op_node("Neg", DType::F32, 1, &[]);
    let x = charged(&dev, 1024);
    let ptr = data_ptr(&x);
    let out = run_on(&dev, &neg, vec![x]);
    assert_eq!((data_ptr(&out[0]), in_use(&dev)), (ptr, 4096));
    drop(out);
    assert_eq!(in_use(&dev), 0);

    // Shape metadata and reductions are the device's tensors too.
    let x = charged(&dev, 1024);
    let shape = run_on(&dev, &op_node("Shape", DType::F32, 1, &[]), vec![x.clone()]);
    let sum = run_on(&dev, &op_node("Sum", DType::F32, 1, &[]), vec![x.clone()]);
    assert_eq!(in_use(&dev), 4096 + 4 + 4);
    drop((x, shape, sum));
    assert_eq!(in_use(&dev), 0);
}

#[test]
fn large_outputs_recycled_through_the_cache_are_counted_exactly() {
    let dev = device(None);
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g.exp(x).unwrap();
    let z = g.add(y, x).unwrap();
    let s = session(&g, &dev);
    // 4 MiB: above the size whose buffers return to the per-node cache.
    let n = 1 << 20;
    let feed = Tensor::from_vec([n], vec![0.0f32; n]).unwrap();
    for _ in 0..3 {
        let out = s.run(&[(x, feed.clone())], &[z], &[]).unwrap();
        assert_eq!(in_use(&dev), 4 << 20);
        drop(out);
        assert_eq!(in_use(&dev), 0, "a cached buffer is no tensor's");
    }
}

#[test]
fn variables_and_their_updates_are_counted_while_they_live() {
    let dev = device(None);
    let g = Graph::new();
    let v = g.variable("counted", DType::F32).unwrap();
    let init = g.constant(Tensor::from_vec([256], vec![1.0f32; 256]).unwrap());
    let assign = v.assign(&g, init.unwrap()).unwrap();
    let delta = g.constant(Tensor::from_vec([256], vec![0.5f32; 256]).unwrap());
    let delta = delta.unwrap();
    let bump = v.assign_add(&g, delta).unwrap();
    let s = session(&g, &dev);
    s.run(&[], &[], &[assign.node()]).unwrap();
    // `AssignAddVariableOp` allocates the new value through the device: the variable
    // holds it after the step.
    let out = s.run(&[], &[bump], &[]).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap()[0], 1.5);
    assert_eq!(in_use(&dev), 1024);
    drop(out);
    assert_eq!(in_use(&dev), 1024, "the variable's value outlives the step");
    s.run(&[], &[], &[bump.node()]).unwrap();
    assert_eq!(in_use(&dev), 1024, "an update replaces the value");
    // So do the optimizers' updates: a value they allocated replaces the counted one.
    let alpha = g.constant(0.5f32).unwrap();
    let apply = g
        .op("ResourceApplyGradientDescent")
        .attr("shared_name", "counted")
        .attr("dtype", DType::F32)
        .input(alpha)
        .input(delta)
        .build_output()
        .unwrap();
    let out = s.run(&[], &[apply], &[]).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap()[0], 2.0 - 0.5 * 0.5);
    assert_eq!((out[0].charged_bytes(), in_use(&dev)), (Some(1024), 1024));
    drop((out, s));
    assert_eq!(in_use(&dev), 0);
}

#[test]
fn the_limit_bounds_the_bytes_live_tensors_hold() {
    // 40 KiB tensors under a 64 KiB limit: one fits, two at once do not.
    let dev = device(Some(64 << 10));
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let two = g.constant(2.0f32).unwrap();
    let three = g.constant(3.0f32).unwrap();
    let a = g.mul(x, two).unwrap();
    let b = g.mul(x, three).unwrap();
    let both = g.add(a, b).unwrap();
    let s = session(&g, &dev);
    let feed = Tensor::from_vec([10240], vec![1.0f32; 10240]).unwrap();
    let e = s.run(&[(x, feed.clone())], &[both], &[]).unwrap_err();
    assert_eq!(e.code(), magpie_core::Code::ResourceExhausted, "{e}");
    let text = e.to_string();
    for want in [
        "/job:localhost/replica:0/task:0/device:CPU:0",
        "cannot allocate 40960 bytes",
        "40960 bytes are in use of the device's memory limit of 65536 bytes",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    // A device no server limit set names no flag (`magpie server` marks its CPUs with
    // `with_memory_limit_setting`, and tests/limits.rs checks the flag is named there).
    assert!(!text.contains("--cpu-memory-limit"), "{text}");
    // The failed step left nothing counted, and one tensor at a time still fits.
    assert_eq!(in_use(&dev), 0);
    let out = s.run(&[(x, feed)], &[a], &[]).unwrap();
    assert_eq!(
        (out[0].as_slice::<f32>().unwrap()[0], in_use(&dev)),
        (2.0, 40960)
    );
    drop(out);
    assert_eq!(in_use(&dev), 0);
}

#[test]
fn a_step_memory_limit_bounds_one_steps_tensors_on_all_devices_together() {
    use magpie_core::tensor::StepMemoryLimit;
    // Two CPU devices, each under no limit of its own: the step's limit (48 KiB) bounds
    // the bytes one step's tensors hold on both together.
    let (d0, d1) = (device(None), device(None));
    let d1 = Arc::new(d1.renamed(magpie_core::graph::DeviceName::local("CPU", 1)));
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let two = g.constant(2.0f32).unwrap();
    let a = g.with_device("/device:CPU:0").unwrap().mul(x, two).unwrap();
    let b = g.with_device("/device:CPU:1").unwrap().mul(x, two).unwrap();
    let sum = g
        .with_device("/device:CPU:0")
        .unwrap()
        .with_name("sum")
        .add(a, b)
        .unwrap();
    let devices: Vec<Arc<dyn Device>> = vec![d0.clone(), d1.clone()];
    let options = SessionOptions {
        step_memory_limit: Some(StepMemoryLimit::new(48 << 10)),
        ..SessionOptions::with_devices(devices).num_workers(2)
    };
    let s = Session::new(&g, options).unwrap();
    let feed = Tensor::from_vec([5120], vec![1.0f32; 5120]).unwrap(); // 20 KiB
                                                                      // `a` and `b` (20 KiB each, one per device) fit; fetched, they stay alive, so `sum`
                                                                      // needs 20 KiB more: past the step's limit, though each device holds only 20 KiB.
    let out = s.run(&[(x, feed.clone())], &[a, b], &[]).unwrap();
    assert_eq!((in_use(&d0), in_use(&d1)), (20480, 20480));
    drop(out);
    let e = s.run(&[(x, feed.clone())], &[a, b, sum], &[]).unwrap_err();
    assert_eq!(e.code(), magpie_core::Code::ResourceExhausted, "{e}");
    let text = e.to_string();
    for want in [
        "sum",
        "cannot allocate 20480 bytes",
        "40960 bytes are in use of the step's memory limit of 49152 bytes",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    // A session's own limit names no server flag.
    assert!(!text.contains("magpie server"), "{text}");
    // Nothing stays counted, and the next step starts from nothing.
    assert_eq!((in_use(&d0), in_use(&d1)), (0, 0));
    let out = s.run(&[(x, feed.clone())], &[a, b], &[]).unwrap();
    assert_eq!(out[1].as_slice::<f32>().unwrap()[0], 2.0);
    drop(out);
    // A step's own limit replaces the session's: 64 KiB hold all three.
    let roomier = magpie_core::session::RunOptions {
        step_memory_limit: Some(StepMemoryLimit::new(64 << 10)),
        ..Default::default()
    };
    let out = s
        .run_with_options(&roomier, &[(x, feed)], &[a, b, sum], &[])
        .unwrap();
    assert_eq!(out.tensors[2].as_slice::<f32>().unwrap()[0], 4.0);
}
