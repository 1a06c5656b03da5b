//! The CPU device passes core's conformance testkit.

#[test]
fn cpu_device_passes_the_conformance_suite() {
    magpie_cpu::register().expect("the CPU kernels register");
    let report = match magpie_core::testkit::check_device(magpie_cpu::cpu_device()) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    // Every standard op with a deterministic result is covered.
    for op in [
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Neg",
        "Square",
        "Sqrt",
        "Exp",
        "Relu",
        "MatMul",
        "Sum",
        "Mean",
        "Reshape",
        "Cast",
        "Fill",
        "ZerosLike",
        "Identity",
        "Const",
    ] {
        assert!(
            report.ops_covered.iter().any(|o| o == op),
            "{op} not covered"
        );
    }
    assert!(report.checks > 300, "only {} checks ran", report.checks);
    // Only the float-only ops decline integer dtypes.
    for declined in &report.unsupported {
        assert!(
            declined.starts_with("Sqrt i") || declined.starts_with("Exp i"),
            "CPU declined {declined}"
        );
    }
}
