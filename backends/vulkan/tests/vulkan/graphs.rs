//! Whole graphs: CPU and GPU ops mixed, copies counted, device errors as step errors.

use magpie_core::graph::Graph;
use magpie_core::session::{RunOptions, Session, SessionError, SessionOptions};
use magpie_core::{DType, KernelError, Tensor};

use super::common::{cpu, data, gpu, mixed_session, ATOL, RTOL};
use magpie_core::testkit::reference::assert_close;

#[test]
fn a_chain_of_ten_gpu_ops_copies_in_once_and_out_once() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g
        .device("/device:GPU:0", |g| {
            let mut y = x;
            for i in 0..10 {
                y = if i % 2 == 0 { g.neg(y)? } else { g.square(y)? };
            }
            Ok(y)
        })
        .unwrap();
    let s = mixed_session(&g, &gpu);
    let input = data(&[1023], 1, false);
    let out = s
        .run_with_options(&RunOptions::default(), &[(x, input.clone())], &[y], &[])
        .unwrap();
    assert_eq!(out.metadata.copies, 2, "one copy in, one copy out");
    let expected: Vec<f32> = input
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|v| {
            let mut v = *v;
            for i in 0..10 {
                v = if i % 2 == 0 { -v } else { v * v };
            }
            v
        })
        .collect();
    let expected = Tensor::from_vec([1023], expected).unwrap();
    assert_close(&out.tensors[0], &expected, RTOL, ATOL).unwrap();
}

#[test]
fn cpu_and_gpu_ops_mix_in_one_graph() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let a = g.placeholder(DType::F32, None).unwrap();
    let b = g.placeholder(DType::F32, None).unwrap();
    // CPU: a + 1; GPU: (a + 1) x b, relu; CPU: sum; GPU: fetched again.
    let one = g.constant(1.0f32).unwrap();
    let a1 = g.add(a, one).unwrap();
    let (m, r) = g
        .device("/device:GPU:0", |g| {
            let m = g.matmul(a1, b)?;
            Ok((m, g.relu(m)?))
        })
        .unwrap();
    let total = g.sum(r, None, false).unwrap();
    let s = mixed_session(&g, &gpu);
    let (ta, tb) = (data(&[33, 17], 2, false), data(&[17, 9], 3, false));
    let out = s
        .run(&[(a, ta.clone()), (b, tb.clone())], &[total, m], &[])
        .unwrap();

    let cpu_s = Session::new(&g, SessionOptions::with_devices(vec![cpu()]));
    // The same graph pinned to a GPU cannot run on a CPU-only session: build it again.
    assert!(cpu_s.is_ok());
    let g2 = Graph::new();
    let a2 = g2.placeholder(DType::F32, None).unwrap();
    let b2 = g2.placeholder(DType::F32, None).unwrap();
    let one = g2.constant(1.0f32).unwrap();
    let m2 = g2.matmul(g2.add(a2, one).unwrap(), b2).unwrap();
    let total2 = g2.sum(g2.relu(m2).unwrap(), None, false).unwrap();
    let s2 = Session::new(&g2, SessionOptions::with_devices(vec![cpu()])).unwrap();
    let want = s2.run(&[(a2, ta), (b2, tb)], &[total2, m2], &[]).unwrap();
    assert_close(&out[0], &want[0], RTOL, ATOL).unwrap();
    assert_close(&out[1], &want[1], RTOL, ATOL).unwrap();
}

#[test]
fn steps_reuse_constants_and_run_concurrently() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let x = g.placeholder(DType::F32, None).unwrap();
    let y = g
        .device("/device:GPU:0", |g| {
            let w = g.constant(data(&[64, 64], 4, false))?;
            g.matmul(x, w)
        })
        .unwrap();
    let s = std::sync::Arc::new(mixed_session(&g, &gpu));
    let first = s.run(&[(x, data(&[8, 64], 5, false))], &[y], &[]).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = std::sync::Arc::clone(&s);
            let first = first[0].clone();
            std::thread::spawn(move || {
                for _ in 0..10 {
                    let out = s.run(&[(x, data(&[8, 64], 5, false))], &[y], &[]).unwrap();
                    assert_close(&out[0], &first, 0.0, 0.0).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn out_of_memory_is_a_step_error_not_a_panic() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let v = g.constant(1.0f32).unwrap();
    let huge = g
        .device("/device:GPU:0", |g| g.fill(&[1 << 40], v))
        .unwrap();
    let s = mixed_session(&g, &gpu);
    let e = s.run(&[], &[huge], &[]).unwrap_err();
    match e.kernel_error() {
        Some(KernelError::ResourceExhausted(msg)) => {
            assert!(msg.contains("Fill") && msg.contains("GPU:0"), "{msg}");
        }
        other => panic!("expected ResourceExhausted, got {other:?}: {e}"),
    }
    // The session still works.
    let small = g.device("/device:GPU:0", |g| g.fill(&[3], v)).unwrap();
    let out = s.run(&[], &[small], &[]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![1.0; 3]);
}

#[test]
fn a_graph_pinned_to_a_missing_gpu_lists_the_devices() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let v = g.constant(1.0f32).unwrap();
    let y = g.device("/device:GPU:7", |g| g.neg(v)).unwrap();
    let s = mixed_session(&g, &gpu);
    let e = s.run(&[], &[y], &[]).unwrap_err();
    assert!(matches!(e, SessionError::NoMatchingDevice { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("GPU:7") && msg.contains("device:GPU:0") && msg.contains("device:CPU:0"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtypes_are_declined_by_name() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let a = g.constant(Tensor::from(vec![1i32, 2])).unwrap();
    let y = g.device("/device:GPU:0", |g| g.neg(a)).unwrap();
    let s = mixed_session(&g, &gpu);
    let e = s.run(&[], &[y], &[]).unwrap_err();
    assert!(
        matches!(e.kernel_error(), Some(KernelError::Unimplemented { .. })),
        "{e}"
    );
    // The first node to decline is the copy that would bring the i32 input to the GPU.
    let msg = e.to_string();
    assert!(msg.contains("no kernel for dtype i32 on GPU"), "{msg}");
}

#[test]
fn bad_shapes_are_invalid_arguments() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let a = g.constant(data(&[2, 3], 1, false)).unwrap();
    let b = g.constant(data(&[4, 2], 1, false)).unwrap();
    let (m, add) = g
        .device("/device:GPU:0", |g| Ok((g.matmul(a, b)?, g.add(a, b)?)))
        .unwrap();
    let s = mixed_session(&g, &gpu);
    for (y, needle) in [
        (m, "MatMul shapes [2, 3] and [4, 2]"),
        (add, "[2, 3] and [4, 2]"),
    ] {
        let e = s.run(&[], &[y], &[]).unwrap_err();
        assert!(
            matches!(e.kernel_error(), Some(KernelError::InvalidArgument(_))),
            "{e}"
        );
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn devices_describe_themselves() {
    let Some(_) = gpu() else { return };
    for d in magpie_vulkan::discover().unwrap() {
        use magpie_core::Device;
        assert_eq!(d.device_type(), "GPU");
        assert_eq!(d.memory_space(), magpie_core::MemorySpace::Device);
        assert!(d.memory_limit().unwrap_or(0) > 0);
        eprintln!("{}  {}", d.name(), d.description());
    }
}
