//! Whole graphs on the GPU: copies counted, concurrent steps, device errors as step
//! errors.

use magpie_core::graph::Graph;
use magpie_core::session::RunOptions;
use magpie_core::{DType, KernelError, Tensor};

use super::common::{data, gpu, gpu_session, ATOL, RTOL};
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
    let s = gpu_session(&g, &gpu);
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
    let s = std::sync::Arc::new(gpu_session(&g, &gpu));
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
    let s = gpu_session(&g, &gpu);
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
    let s = gpu_session(&g, &gpu);
    let e = s.run(&[], &[y], &[]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("requests device /device:GPU:7, which no device matches; devices: ")
            && msg.contains("device:GPU:0"),
        "{msg}"
    );
}

#[test]
fn unsupported_dtypes_are_declined_by_name() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let y = g
        .device("/device:GPU:0", |g| {
            g.neg(g.constant(Tensor::from(vec![1i32, 2]))?)
        })
        .unwrap();
    let s = gpu_session(&g, &gpu);
    let e = s.run(&[], &[y], &[]).unwrap_err();
    assert!(
        matches!(e.kernel_error(), Some(KernelError::Unimplemented { .. })),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("Const has no kernel for dtype i32 on GPU"),
        "{msg}"
    );
    // A host tensor of a dtype the GPU lacks, sent to a GPU op: the error names that op,
    // not the copy the executor would insert for it.
    let g = Graph::new();
    let x = g.placeholder(magpie_core::DType::I32, None).unwrap();
    let y = g
        .with_device("/device:GPU:0")
        .unwrap()
        .with_name("gpu_neg")
        .neg(x)
        .unwrap();
    let s = gpu_session(&g, &gpu);
    let e = s
        .run(&[(x, Tensor::from(vec![1i32]))], &[y], &[])
        .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("node \"gpu_neg\" (Neg)"), "{msg}");
    assert!(
        msg.contains("Neg has no kernel for dtype i32 on GPU"),
        "{msg}"
    );
}

#[test]
fn bad_shapes_are_invalid_arguments() {
    let Some(gpu) = gpu() else { return };
    let g = Graph::new();
    let a = g.constant(data(&[2, 3], 1, false)).unwrap();
    let b = g.constant(data(&[4, 2], 1, false)).unwrap();
    // Known shapes fail at build; shapes known only when fed fail in the GPU kernels.
    let gpu_g = g.with_device("/device:GPU:0").unwrap();
    assert!(gpu_g.matmul(a, b).is_err());
    assert!(gpu_g.add(a, b).is_err());
    let x = g.placeholder(DType::F32, None).unwrap();
    let (m, add) = g
        .device("/device:GPU:0", |g| Ok((g.matmul(x, b)?, g.add(x, b)?)))
        .unwrap();
    let s = gpu_session(&g, &gpu);
    for (y, needle) in [
        (m, "MatMul shapes [2, 3] and [4, 2]"),
        (add, "[2, 3] and [4, 2]"),
    ] {
        let e = s
            .run(&[(x, data(&[2, 3], 1, false))], &[y], &[])
            .unwrap_err();
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
