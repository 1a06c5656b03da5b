//! Custom ops as first-class: declared, typed attributes checked at build, a shape
//! function over partial shapes, and `testkit::OpCheck` finding wrong kernels and
//! reporting the input that shows it. Needs the `testkit` feature.
#![cfg(feature = "testkit")]

use std::sync::Arc;

use magpie_core::graph::{
    register_op, shape_inference::rules, Arity, AttrError, AttrType, DeviceName, Graph, GraphDef,
    GraphError, NodeDef, OpDef, OpDefError, PartialShape,
};
use magpie_core::kernel::{BoxedKernel, Kernel, KernelContext, KernelError, KernelInit};
use magpie_core::registry::{KernelKey, KernelRegistry};
use magpie_core::tensor::{BroadcastLayout, DType, Shape, Tensor};
use magpie_core::testkit::{HostDevice, OpCheck};
use magpie_core::Device;

/// `LerpTo(x, y; t = 0.5)`: `x + t * (y - x)` with broadcasting, f32 or f64.
fn define_lerp() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let def = OpDef::new("LerpTo", Arity::Exact(2), |ins, _| {
            if ins[0] != ins[1] {
                return Err(OpDefError::DType {
                    input: 1,
                    expected: ins[0].to_string(),
                    got: ins[1],
                });
            }
            Ok(vec![ins[0]])
        })
        .attr_default("t", 0.5f64)
        .attr("mode", AttrType::Str)
        .with_shape_fn(|ctx| Ok(vec![rules::broadcast(&ctx.input(0), &ctx.input(1))?]));
        register_op(def).expect("LerpTo defined once");
    });
}

/// A kernel for `LerpTo`, right unless told to ignore broadcasting or the attribute.
struct Lerp {
    t: f64,
    /// Reads both inputs at the same offset, as if their shapes were equal.
    ignore_broadcasting: bool,
}

impl Kernel for Lerp {
    fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
        let (x, y) = (ctx.input(0), ctx.input(1));
        let layout = BroadcastLayout::new(x.shape(), y.shape())?;
        let (xs, ys) = (x.as_slice::<f32>()?, y.as_slice::<f32>()?);
        let t = self.t as f32;
        let values: Vec<f32> = layout
            .iter()
            .enumerate()
            .map(|(k, (i, j))| {
                let (i, j) = if self.ignore_broadcasting {
                    (k % xs.len().max(1), k % ys.len().max(1))
                } else {
                    (i, j)
                };
                xs[i] + t * (ys[j] - xs[i])
            })
            .collect();
        ctx.push_output(Tensor::from_vec(layout.output().clone(), values)?);
        Ok(())
    }
}

fn registry(ignore_broadcasting: bool) -> KernelRegistry {
    define_lerp();
    let registry = KernelRegistry::new();
    let factory = move |init: &KernelInit<'_>| {
        if init.input_dtypes[0] != DType::F32 {
            return Err(KernelError::Unimplemented {
                op: "LerpTo".into(),
                dtype: init.input_dtypes[0],
                device_type: "CPU".into(),
            });
        }
        Ok(BoxedKernel::Sync(Box::new(Lerp {
            t: init.node.attrs.float("t")?,
            ignore_broadcasting,
        })))
    };
    registry
        .register(KernelKey::new("LerpTo", "CPU"), factory)
        .expect("registered");
    registry
}

fn cpu() -> Arc<dyn Device> {
    Arc::new(HostDevice(DeviceName::local("CPU", 0)))
}

fn lerp_check(t: f64) -> OpCheck {
    OpCheck::elementwise("LerpTo", 2, move |v| v[0] + t * (v[1] - v[0]))
        .attr("mode", "linear")
        .seed(42)
        .cases(64)
}

#[test]
fn declared_attributes_are_checked_at_build_naming_node_and_attribute() {
    define_lerp();
    let g = Graph::new();
    let x = g.constant(vec![1.0f32, 2.0]).unwrap();
    let y = g.constant(vec![3.0f32, 4.0]).unwrap();

    // The default is filled in, so kernels read it.
    let id = g
        .op("LerpTo")
        .inputs([x, y])
        .attr("mode", "linear")
        .build()
        .unwrap();
    assert_eq!(g.node(id).unwrap().attrs.float("t"), Ok(0.5));

    let missing = g.op("LerpTo").name("no_mode").inputs([x, y]).build();
    match missing {
        Err(GraphError::InvalidNode { node, op, reason }) => {
            assert_eq!((node.as_str(), op.as_str()), ("no_mode", "LerpTo"));
            assert_eq!(reason, OpDefError::Attr(AttrError::Missing("mode".into())));
        }
        other => panic!("expected a missing attribute, got {other:?}"),
    }
    let mistyped = g
        .op("LerpTo")
        .name("int_t")
        .inputs([x, y])
        .attr("mode", "linear")
        .attr("t", 1i64)
        .build()
        .unwrap_err();
    let message = mistyped.to_string();
    assert!(
        message.contains("\"int_t\"") && message.contains("\"t\" should be a float, got an int"),
        "{message}"
    );
    let misspelt = g
        .op("LerpTo")
        .inputs([x, y])
        .attr("mode", "linear")
        .attr("tt", 0.1f64)
        .build()
        .unwrap_err();
    assert!(
        misspelt.to_string().contains("unknown attribute \"tt\""),
        "{misspelt}"
    );
}

#[test]
fn imported_nodes_are_checked_the_same_way() {
    define_lerp();
    let placeholder = |name: &str| NodeDef {
        name: name.into(),
        op: "Placeholder".into(),
        attrs: vec![("dtype".into(), DType::F32.into())],
        ..NodeDef::default()
    };
    let lerp = NodeDef {
        name: "lerp".into(),
        op: "LerpTo".into(),
        inputs: vec!["a".into(), "b".into()],
        ..NodeDef::default()
    };
    let def = GraphDef {
        nodes: vec![placeholder("a"), placeholder("b"), lerp],
    };
    let err = Graph::import(&def).unwrap_err();
    assert!(
        matches!(&err, GraphError::InvalidNode { node, .. } if node == "lerp"),
        "{err}"
    );
    assert!(
        err.to_string().contains("missing attribute \"mode\""),
        "{err}"
    );
}

#[test]
fn the_shape_function_works_on_partial_shapes() {
    define_lerp();
    let g = Graph::new();
    let x = g
        .placeholder(DType::F32, Some(&Shape::new(&[4, 1]).unwrap()))
        .unwrap();
    // A placeholder of unknown shape: the output's shape stays unknown, never an error.
    let unknown = g.placeholder(DType::F32, None).unwrap();
    let row = g.constant(vec![1.0f32, 2.0, 3.0]).unwrap();
    let y = g
        .op("LerpTo")
        .inputs([x, row])
        .attr("mode", "linear")
        .build_output()
        .unwrap();
    assert_eq!(
        g.shape_of(y).unwrap(),
        PartialShape::from(Shape::new(&[4, 3]).unwrap())
    );
    let z = g
        .op("LerpTo")
        .inputs([x, unknown])
        .attr("mode", "linear")
        .build_output()
        .unwrap();
    assert!(!g.shape_of(z).unwrap().is_fully_known());
    // Known shapes that cannot broadcast fail at build, naming the node.
    let bad = g.constant(vec![1.0f32, 2.0]).unwrap();
    let err = g
        .op("LerpTo")
        .name("mismatch")
        .inputs([row, bad])
        .attr("mode", "linear")
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, GraphError::InvalidNode { node, reason: OpDefError::Shape(_), .. } if node == "mismatch"),
        "{err}"
    );
}

#[test]
fn op_check_passes_a_right_kernel_over_empty_and_broadcast_inputs() {
    let report = lerp_check(0.5).run_with(&registry(false), &cpu()).unwrap();
    assert_eq!(report.cases, 64);
    assert!(report.shapes_checked);
    assert!(report.elements > 0);
    // The attribute reaches the kernel: another `t`, checked against its own reference.
    let report = lerp_check(0.25)
        .attr("t", 0.25f64)
        .run_with(&registry(false), &cpu())
        .unwrap();
    assert_eq!(report.cases, 64);
}

#[test]
fn op_check_finds_a_kernel_that_ignores_broadcasting_and_shows_the_input() {
    let err = lerp_check(0.5)
        .run_with(&registry(true), &cpu())
        .unwrap_err();
    // Case 3 is the first where reading both inputs in step goes wrong: [2, 1] with
    // [1, 3] (case 2, [2, 3] with [3], happens to read right).
    assert_eq!((err.case, err.seed), (3, 42));
    assert_eq!(err.inputs.len(), 2);
    assert!(err.inputs[0].starts_with("input 0: f32 [2, 1] = "), "{err}");
    assert!(err.inputs[1].starts_with("input 1: f32 [1, 3] = "), "{err}");
    assert!(err.to_string().contains("case 3 of seed 42"), "{err}");
    assert!(err.reason.contains("differs at element"), "{err}");
}

#[test]
fn op_check_finds_a_wrong_value_and_a_wrong_shape_function() {
    // The reference says t = 0.75, the kernel uses the default 0.5.
    let err = lerp_check(0.75)
        .run_with(&registry(false), &cpu())
        .unwrap_err();
    assert!(err.reason.contains("differs at element"), "{err}");

    // An op whose shape function claims a shape its kernel does not produce.
    register_op(
        OpDef::new("WrongShape", Arity::Exact(1), |ins, _| Ok(vec![ins[0]]))
            .with_shape_fn(|_| Ok(vec![PartialShape::scalar()])),
    )
    .unwrap();
    let registry = KernelRegistry::new();
    struct Copy;
    impl Kernel for Copy {
        fn compute(&self, ctx: &mut KernelContext<'_>) -> Result<(), KernelError> {
            let x = ctx.input(0).clone();
            ctx.push_output(x);
            Ok(())
        }
    }
    registry
        .register(KernelKey::new("WrongShape", "CPU"), |_: &KernelInit<'_>| {
            Ok(BoxedKernel::Sync(Box::new(Copy)))
        })
        .unwrap();
    let err = OpCheck::elementwise("WrongShape", 1, |v| v[0])
        .run_with(&registry, &cpu())
        .unwrap_err();
    // Case 0 (scalars) agrees; case 1 (an empty vector) does not.
    assert_eq!(err.case, 1);
    assert!(
        err.reason
            .contains("the shape function infers output 0 as []"),
        "{err}"
    );
}

#[test]
fn op_check_accepts_inputs_refused_on_both_sides_and_names_an_undefined_op() {
    // f64 inputs: the kernel declines them, and so does this reference.
    let report = OpCheck::new("LerpTo", 2, |inputs, _| {
        if inputs[0].dtype() != DType::F32 {
            return Err("f32 only".into());
        }
        Err("not reached".into())
    })
    .attr("mode", "linear")
    .dtype(DType::F64)
    .cases(5)
    .run_with(&registry(false), &cpu())
    .unwrap();
    assert_eq!((report.cases, report.rejected), (5, 5));

    let err = OpCheck::elementwise("NoSuchOp", 1, |v| v[0])
        .run_with(&KernelRegistry::new(), &cpu())
        .unwrap_err();
    assert!(err.reason.contains("not defined"), "{err}");
}
