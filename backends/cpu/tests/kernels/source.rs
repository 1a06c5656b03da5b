//! `Const`, `Placeholder`, `PlaceholderWithDefault`, `Identity` and `RandomUniform`.

use magpie_core::graph::AttrValue;
use magpie_core::{DType, Graph};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

#[test]
fn const_hands_out_its_value_without_copying() {
    for dtype in DType::ALL {
        let value = typed(dtype, &[2, 2], &[1, 0, 3, 4]);
        let g = Graph::new();
        let c = g.constant(value.clone()).unwrap();
        let node = node_of(&g, c);
        let first = run1(&node, vec![]);
        let second = run1(&node, vec![]);
        assert_eq!(first, value);
        assert!(first.shares_buffer_with(&value) && second.shares_buffer_with(&first));
    }
}

#[test]
fn an_unfed_placeholder_fails() {
    for dtype in DType::ALL {
        let g = Graph::new();
        let p = g.placeholder(dtype, Some(&shape(&[2]))).unwrap();
        let node = node_of(&g, p);
        assert_eq!(
            run_err(&node, vec![]),
            "invalid argument: placeholder must be fed"
        );
    }
}

#[test]
fn forwarding_ops_share_their_input() {
    for op in ["PlaceholderWithDefault", "Identity"] {
        for dtype in DType::ALL {
            let node = op_node(op, dtype, 1, &[]);
            for dims in [&[][..], &[1], &[1023]] {
                let x = typed(dtype, dims, &vec![1; shape(dims).num_elements()]);
                let out = run1(&node, vec![x.clone()]);
                assert!(out.shares_buffer_with(&x), "{op} {dtype}");
                assert_eq!(out, x);
            }
        }
    }
}

fn random_node(dtype: DType, dims: &[usize], seed: u64) -> Arc<Node> {
    let g = Graph::new();
    let r = g.random_uniform(dims, dtype, seed).unwrap();
    node_of(&g, r)
}

#[test]
fn random_uniform_is_reproducible_and_in_range() {
    let node = random_node(DType::F32, &[3, 5], 42);
    let a = run1(&node, vec![]);
    let b = run1(&node, vec![]);
    assert_eq!(a, b);
    assert_eq!((a.dtype(), a.dims()), (DType::F32, &[3, 5][..]));
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let want: Vec<f32> = (0..15).map(|_| rng.random::<f32>()).collect();
    assert_eq!(a.as_slice::<f32>().unwrap(), &want[..]);
    assert!(want.iter().all(|v| (0.0..1.0).contains(v)));
    assert_eq!(run1(&random_node(DType::F32, &[3, 5], 42), vec![]), a);
    assert_ne!(run1(&random_node(DType::F32, &[3, 5], 43), vec![]), a);

    let node = random_node(DType::F64, &[1023], 7);
    let a = run1(&node, vec![]);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let want: Vec<f64> = (0..1023).map(|_| rng.random::<f64>()).collect();
    assert_eq!(a.as_slice::<f64>().unwrap(), &want[..]);
    assert!(want.iter().all(|v| (0.0..1.0).contains(v)));

    assert_eq!(
        run1(&random_node(DType::F64, &[], 7), vec![])
            .scalar_value::<f64>()
            .unwrap(),
        want[0]
    );
    assert_eq!(
        run1(&random_node(DType::F64, &[0, 3], 7), vec![]).dims(),
        &[0, 3]
    );
}

#[test]
fn random_uniform_takes_the_seed_as_u64() {
    let node = raw_node(
        "RandomUniform",
        &[
            ("shape", AttrValue::Ints(vec![4])),
            ("seed", AttrValue::Int(-1)),
            ("dtype", AttrValue::DType(DType::F32)),
        ],
    );
    let mut rng = ChaCha8Rng::seed_from_u64(u64::MAX);
    let want: Vec<f32> = (0..4).map(|_| rng.random::<f32>()).collect();
    assert_eq!(run1(&node, vec![]).as_slice::<f32>().unwrap(), &want[..]);
}

#[test]
fn random_uniform_makes_only_floats() {
    for dtype in [DType::I32, DType::I64, DType::Bool] {
        let node = raw_node(
            "RandomUniform",
            &[
                ("shape", AttrValue::Ints(vec![2])),
                ("seed", AttrValue::Int(1)),
                ("dtype", AttrValue::DType(dtype)),
            ],
        );
        assert_eq!(
            build(&node, &[]).unwrap_err(),
            unimplemented("RandomUniform", dtype)
        );
    }
}
