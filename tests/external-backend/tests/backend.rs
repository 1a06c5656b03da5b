//! The toy backend, used as a user would: a graph on its device through core's `Session`
//! with a registry of its own, one kernel through the testkit, and core's conformance
//! suite.

use std::sync::Arc;

use magpie_core::device::Device;
use magpie_core::graph::{Attrs, DeviceName, Graph, PartialShape};
use magpie_core::kernel::KernelError;
use magpie_core::registry::{KernelKey, KernelRegistry, RegistryError};
use magpie_core::session::{Session, SessionOptions};
use magpie_core::tensor::{Shape, Tensor};
use magpie_core::testkit::{check_device_with, run_kernel_with, HostDevice, OpCheck};
use magpie_external_backend::{define_clamp, define_delay, register, ToyDevice, BACKEND};

fn toy() -> (Arc<ToyDevice>, KernelRegistry) {
    define_clamp().expect("Clamp defined");
    define_delay().expect("Delay defined");
    let registry = KernelRegistry::new();
    register(&registry).expect("toy kernels registered");
    (Arc::new(ToyDevice::new(0)), registry)
}

#[test]
fn a_graph_runs_on_the_toy_device() -> Result<(), Box<dyn std::error::Error>> {
    let (device, registry) = toy();
    let x = Tensor::from_vec(&[2usize, 2][..], vec![1.0f32, -2.0, 3.0, -4.0])?;
    let row = Tensor::from_vec(&[2usize][..], vec![10.0f32, 20.0])?;
    let g = Graph::new();
    let y = g.device("/device:TOY:0", |g| {
        let x = g.constant(x)?;
        let row = g.constant(row)?;
        let sum = g.add(x, row)?; // [[11, 18], [13, 16]]
        let prod = g.mul(sum, x)?; // [[11, -36], [39, -64]]
        g.op("Clamp")
            .input(prod)
            .attr("lo", -40.0f64)
            .attr("hi", 20.0f64)
            .build_output()
    })?;
    // Clamp's shape function: the output's shape is known before anything runs.
    assert_eq!(g.shape_of(y)?, PartialShape::from(Shape::new(&[2, 2])?));

    let devices: Vec<Arc<dyn Device>> = vec![device.clone()];
    let session = Session::new(&g, SessionOptions::with_devices(devices).kernels(registry))?;
    let out = session.run(&[], &[y], &[])?;
    assert_eq!(out[0].shape(), &Shape::new(&[2, 2])?);
    assert_eq!(out[0].as_slice::<f32>()?, [11.0, -36.0, 20.0, -40.0]);
    // Two constants, Add, Mul and Clamp: five kernels, all on the toy device.
    assert_eq!(device.kernels_run(), 5);
    Ok(())
}

#[test]
fn an_asynchronous_kernel_runs_on_cores_timer() -> Result<(), Box<dyn std::error::Error>> {
    let (device, registry) = toy();
    let g = Graph::new();
    let (slow, sum) = g.device("/device:TOY:0", |g| {
        let x = g.constant(vec![1.0f32, 2.0])?;
        // Two delays in parallel and one after: async kernels interleave with sync ones.
        let a = g.op("Delay").input(x).attr("millis", 5i64).build_output()?;
        let b = g.op("Delay").input(x).build_output()?; // millis = 1, the default
        let slow = g.op("Delay").input(a).attr("millis", 2i64).build_output()?;
        Ok::<_, magpie_core::graph::GraphError>((slow, g.add(a, b)?))
    })?;
    let devices: Vec<Arc<dyn Device>> = vec![device.clone()];
    let session = Session::new(&g, SessionOptions::with_devices(devices).kernels(registry))?;
    let out = session.run(&[], &[slow, sum], &[])?;
    assert_eq!(out[0].as_slice::<f32>()?, [1.0, 2.0]);
    assert_eq!(out[1].as_slice::<f32>()?, [2.0, 4.0]);
    // Const, three Delays, Add.
    assert_eq!(device.kernels_run(), 5);

    let negative = g
        .op("Delay")
        .input(slow)
        .attr("millis", -1i64)
        .build_output()?;
    let err = session.run(&[], &[negative], &[]).unwrap_err();
    assert!(err.to_string().contains("millis >= 0"), "{err}");
    Ok(())
}

#[test]
fn registering_twice_changes_nothing_and_another_factory_is_refused() {
    let (_, registry) = toy();
    register(&registry).expect("the same kernels again");
    let mut ops = registry.kernels_for("TOY");
    ops.sort();
    assert_eq!(ops, ["Add", "Clamp", "Const", "Delay", "Mul"]);
    let other = registry.register(KernelKey::new("Add", "TOY").backend(BACKEND), |_| {
        Err(KernelError::Cancelled)
    });
    assert!(
        matches!(other, Err(RegistryError::AlreadyRegistered { ref op, .. }) if op == "Add"),
        "{other:?}"
    );
}

#[test]
fn one_kernel_runs_in_a_line() -> Result<(), Box<dyn std::error::Error>> {
    let (device, registry) = toy();
    let device: Arc<dyn Device> = device;
    let mut attrs = Attrs::new();
    attrs.set("lo", 0.0f64);
    attrs.set("hi", 1.0f64);
    let x = Tensor::from_vec(&[4usize][..], vec![-1.0f32, 0.25, 0.5, 3.0])?;
    let out = run_kernel_with(&registry, &device, "Clamp", &attrs, &[x])?;
    assert_eq!(out[0].as_slice::<f32>()?, [0.0, 0.25, 0.5, 1.0]);

    attrs.set("lo", 2.0f64);
    let err = run_kernel_with(&registry, &device, "Clamp", &attrs, &[out[0].clone()]);
    assert!(
        matches!(&err, Err(KernelError::InvalidArgument(m)) if m.contains("lo <= hi")),
        "{err:?}"
    );
    Ok(())
}

#[test]
fn a_toy_kernel_on_another_device_type_is_a_clear_error() {
    define_clamp().expect("Clamp defined");
    // The toy kernels registered, wrongly, for every CPU device.
    let registry = KernelRegistry::new();
    let toy_add = {
        let (_, toy_registry) = toy();
        toy_registry
            .lookup_for("Add", "TOY", BACKEND)
            .expect("registered")
    };
    registry
        .register(KernelKey::new("Add", "CPU"), move |init| toy_add(init))
        .expect("registered for CPU");
    let cpu: Arc<dyn Device> = Arc::new(HostDevice(DeviceName::local("CPU", 0)));
    let one = Tensor::scalar(1.0f32);
    let err = run_kernel_with(&registry, &cpu, "Add", &Attrs::new(), &[one.clone(), one]);
    match err {
        Err(KernelError::WrongDevice { op, expected, .. }) => {
            assert_eq!(op, "Add");
            assert!(expected.ends_with("ToyDevice"), "{expected}");
        }
        other => panic!("expected WrongDevice, got {other:?}"),
    }
}

#[test]
fn clamp_matches_its_reference_over_random_inputs() -> Result<(), Box<dyn std::error::Error>> {
    let (device, registry) = toy();
    let device: Arc<dyn Device> = device;
    let report = OpCheck::elementwise("Clamp", 1, |v| v[0].clamp(-1.0, 2.0))
        .attr("lo", -1.0f64)
        .attr("hi", 2.0f64)
        .values(-5.0, 5.0)
        .seed(9)
        .cases(40)
        .run_with(&registry, &device)?;
    assert_eq!(report.cases, 40);
    assert!(report.shapes_checked);
    Ok(())
}

#[test]
fn a_clamp_without_its_attributes_fails_at_build() {
    define_clamp().expect("Clamp defined");
    let g = Graph::new();
    let x = g.constant(1.0f32).expect("a constant");
    let err = g
        .op("Clamp")
        .name("clamp")
        .input(x)
        .attr("lo", 0.0f64)
        .build()
        .expect_err("hi is missing");
    let message = err.to_string();
    assert!(
        message.contains("\"clamp\"") && message.contains("missing attribute \"hi\""),
        "{message}"
    );
}

#[test]
fn the_toy_device_passes_core_conformance() -> Result<(), Box<dyn std::error::Error>> {
    let (device, registry) = toy();
    let report = check_device_with(&registry, device)?;
    for op in ["Add", "Const", "Mul"] {
        assert!(report.ops_covered.iter().any(|o| o == op), "{report:?}");
    }
    assert!(report.checks > 0);
    Ok(())
}
