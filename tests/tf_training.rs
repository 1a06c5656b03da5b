//! TensorFlow's own Python client training models on a Magpie cluster (real `magpie
//! server` processes): variables on `/job:ps/task:0`, the forward pass on
//! `/job:worker/task:0`, the backward pass on `/job:worker/task:1`; linear regression and
//! a two-layer MLP (dense, relu, softmax cross-entropy, mean loss) trained with
//! GradientDescent, Momentum and Adam, over resource variables (`VarHandleOp`,
//! `ResourceApply*`) and ref variables (`VariableV2`, `Apply*`); the seed's parameter
//! server example; `Session.reset(target)`. The loss of every step and the final
//! variables must be TensorFlow's (run in the same test against its own servers) within
//! 1e-5 relative.

mod common;
mod tf;

const PROGRAMS: [&str; 10] = [
    "parameter_server",
    "reset",
    "linear_regression_gd",
    "linear_regression_gd_ref",
    "mlp_gd",
    "mlp_momentum",
    "mlp_adam",
    "mlp_gd_ref",
    "mlp_momentum_ref",
    "mlp_adam_ref",
];

#[test]
fn tensorflows_client_trains_on_magpie_as_on_tensorflow() {
    let cluster = tf::MagpieCluster::start("tf-training");
    let results = tf::compare(&cluster, &PROGRAMS);
    tf::assert_same(&results, &PROGRAMS, 1e-5);

    // Reset cleared the variable on the ps task: reading it fails as in TensorFlow, and
    // initializing it again gives its initial value.
    let (m, _) = tf::sides(&results, "reset");
    assert_eq!(m["bumped"], 11.0);
    assert_eq!(m["after_reset"]["error"], "FailedPreconditionError", "{m}");
    assert_eq!(m["reinitialized"], 1.0);
    // Training made progress (the programs are not trivially equal).
    for p in ["linear_regression_gd", "mlp_adam", "mlp_adam_ref"] {
        let (m, _) = tf::sides(&results, p);
        let loss: Vec<f64> = m["loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(loss.last() < loss.first(), "{p}: {loss:?}");
    }
    cluster.stop();
}
