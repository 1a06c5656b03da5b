//! The facade with both backends: graphs that mix CPU and GPU ops, compared with the
//! CPU alone. Skips with a message when the machine has no Vulkan device.

use magpie::{DType, Graph, Session, SessionOptions, Tensor};

fn values(shape: [usize; 2], seed: u32) -> Tensor {
    let v: Vec<f32> = (0..shape[0] * shape[1])
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 997) as f32 / 498.5 - 1.0
        })
        .collect();
    Tensor::from_vec(shape, v).unwrap()
}

fn close(a: &Tensor, b: &Tensor) {
    let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
            "element {i}: {x} vs {y}"
        );
    }
}

#[test]
fn cpu_and_gpu_ops_mix_in_one_graph() {
    let options = magpie::local_options();
    if let Some(why) = magpie::gpu_status() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    assert_eq!(
        options.devices[0].device_type(),
        "CPU",
        "the CPU stays the default"
    );
    let build = |g: &Graph, gpu: bool| {
        let a = g.placeholder(DType::F32, None).unwrap();
        let b = g.placeholder(DType::F32, None).unwrap();
        let a1 = g.add(a, g.constant(1.0f32).unwrap()).unwrap(); // CPU
        let gpu_part = |g: &Graph| {
            let m = g.matmul_t(a1, b, false, true)?;
            let e = g.exp(g.neg(g.square(m)?)?)?;
            g.sub(e, g.constant(0.25f32)?)
        };
        let y = if gpu {
            g.device("/device:GPU:0", gpu_part).unwrap()
        } else {
            gpu_part(g).unwrap()
        };
        let s = g.sum(y, Some(1), true).unwrap(); // CPU
        let z = if gpu {
            g.device("/device:GPU:0", |g| g.mul(s, s)).unwrap()
        } else {
            g.mul(s, s).unwrap()
        };
        (a, b, y, z)
    };
    let (ta, tb) = (values([31, 17], 1), values([23, 17], 2));
    let g = Graph::new();
    let (a, b, y, z) = build(&g, true);
    let out = Session::new(&g, options)
        .unwrap()
        .run_with_options(
            &magpie::RunOptions::default(),
            &[(a, ta.clone()), (b, tb.clone())],
            &[y, z],
            &[],
        )
        .unwrap();
    // In: a+1, b. Out: y (fetched and summed on the CPU, one copy), z. Back in: s.
    assert_eq!(out.metadata.copies, 5);
    let cg = Graph::new();
    let (ca, cb, cy, cz) = build(&cg, false);
    let cpu = Session::new(
        &cg,
        SessionOptions::with_devices(vec![magpie::cpu::cpu_device()]),
    )
    .unwrap();
    let want = cpu.run(&[(ca, ta), (cb, tb)], &[cy, cz], &[]).unwrap();
    close(&out.tensors[0], &want[0]);
    close(&out.tensors[1], &want[1]);
}

#[test]
fn a_graph_pinned_to_a_missing_gpu_lists_every_device() {
    let options = magpie::local_options();
    if magpie::gpu_status().is_some() {
        return;
    }
    let g = Graph::new();
    let v = g.constant(1.0f32).unwrap();
    let y = g.device("/device:GPU:7", |g| g.neg(v)).unwrap();
    let e = Session::new(&g, options)
        .unwrap()
        .run(&[], &[y], &[])
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("/device:GPU:7")
            && msg.contains("device:CPU:0")
            && msg.contains("device:GPU:0"),
        "{msg}"
    );
}
