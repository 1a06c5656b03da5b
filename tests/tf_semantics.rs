//! TensorFlow's numerics on the TensorFlow import path (`docs/tensorflow-semantics.md`):
//! a graph imported with `Graph::import_tensorflow` gets TensorFlow 2.21's values where
//! Magpie's own API keeps a rule of its own (float -> int `Cast`), and where Magpie
//! adopted TensorFlow's (`Relu` of NaN). Values measured with
//! `$(scripts/tf-venv) scripts/tf_semantics_probe.py`.

use magpie::graph::{AttrValue, GraphDef, NodeDef};
use magpie::{DType, Graph, Tensor};

fn node(name: &str, op: &str, inputs: &[&str], attrs: Vec<(&str, AttrValue)>) -> NodeDef {
    NodeDef {
        name: name.into(),
        op: op.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        device: String::new(),
        attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

const INPUTS: [f32; 11] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    1e20,
    -1e20,
    3e9,
    -3e9,
    300.0,
    -1.5,
    2.7,
    -0.0,
];

/// A `Cast` as TensorFlow writes it (`SrcT`, `DstT`, `Truncate`), with Magpie's `dtype`.
fn cast(name: &str, to: DType) -> NodeDef {
    node(
        name,
        "Cast",
        &["x"],
        vec![
            ("SrcT", DType::F32.into()),
            ("DstT", to.into()),
            ("Truncate", false.into()),
            ("dtype", to.into()),
        ],
    )
}

fn imported() -> Graph {
    let def = GraphDef {
        nodes: vec![
            node(
                "x",
                "Placeholder",
                &[],
                vec![
                    ("dtype", DType::F32.into()),
                    ("shape", AttrValue::Ints(vec![-1])),
                ],
            ),
            cast("to_i32", DType::I32),
            cast("to_i64", DType::I64),
            node("relu", "Relu", &["x"], vec![("T", DType::F32.into())]),
        ],
    };
    Graph::import_tensorflow(&def).unwrap()
}

#[test]
fn float_to_int_casts_give_tensorflows_values_on_the_tensorflow_path() {
    let g = imported();
    let s = magpie::local_session(&g).unwrap();
    let out = |n: &str| g.node_by_name(n).unwrap().output(0);
    let x = out("x");
    let got = s
        .run(
            &[(x, Tensor::from(INPUTS.to_vec()))],
            &[out("to_i32"), out("to_i64")],
            &[],
        )
        .unwrap();
    let (m32, m64) = (i32::MIN, i64::MIN);
    assert_eq!(
        got[0].to_vec::<i32>().unwrap(),
        [m32, m32, m32, m32, m32, m32, m32, 300, -1, 2, 0]
    );
    assert_eq!(
        got[1].to_vec::<i64>().unwrap(),
        [
            m64,
            m64,
            m64,
            m64,
            m64,
            3_000_000_000,
            -3_000_000_000,
            300,
            -1,
            2,
            0
        ]
    );
    // Magpie's own graph keeps saturating.
    let own = Graph::new();
    let p = own.placeholder(DType::F32, None).unwrap();
    let c = own.cast(p, DType::I32).unwrap();
    let s = magpie::local_session(&own).unwrap();
    let v = s
        .run(&[(p, Tensor::from(INPUTS.to_vec()))], &[c], &[])
        .unwrap();
    assert_eq!(
        v[0].to_vec::<i32>().unwrap(),
        [
            0,
            i32::MAX,
            i32::MIN,
            i32::MAX,
            i32::MIN,
            i32::MAX,
            i32::MIN,
            300,
            -1,
            2,
            0
        ]
    );
}

#[test]
fn relu_keeps_nan_and_negative_zero_on_every_path() {
    let g = imported();
    let s = magpie::local_session(&g).unwrap();
    let x = g.node_by_name("x").unwrap().output(0);
    let relu = g.node_by_name("relu").unwrap().output(0);
    let got = s
        .run(&[(x, Tensor::from(INPUTS.to_vec()))], &[relu], &[])
        .unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    // TensorFlow 2.21: [nan, inf, 0, 1e20, 0, 3e9, 0, 300, 0, 2.7, -0.0].
    assert!(got[0].is_nan(), "{got:?}");
    assert_eq!(
        &got[1..],
        &[
            f32::INFINITY,
            0.0,
            1e20,
            0.0,
            3e9,
            0.0,
            300.0,
            0.0,
            2.7,
            -0.0
        ]
    );
    assert!(got[10].is_sign_negative());
}
