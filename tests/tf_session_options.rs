//! TensorFlow's session options beyond a plain `run`, from its own Python client: partial
//! runs and soft placement.
//!
//! Partial runs (`sess.partial_run_setup`, `sess.partial_run`) against a cluster of
//! `magpie server` processes, compared with
//! TensorFlow's servers in the same run (`examples/tensorflow_client/programs.py`,
//! program `partial_run`): the values of each call, a stateful op (`assign_add`) run once
//! although two calls need it, and every mistake TensorFlow's master refuses with the
//! same `tf.errors` class and message.

mod common;
mod tf;

#[test]
fn partial_runs_give_tensorflows_values_and_errors() {
    let cluster = tf::MagpieCluster::start("tf-partial-run");
    let results = tf::compare(&cluster, &["partial_run"]);
    // Every value and every error (class and message) exactly TensorFlow's.
    tf::assert_same(&results, &["partial_run"], 0.0);
    let (m, _) = tf::sides(&results, "partial_run");
    assert_eq!(m["r1"], 3.0, "{m}");
    assert_eq!(m["inc"], 13.0, "{m}");
    assert_eq!(m["r2"], 52.0, "{m}");
    assert_eq!(m["v"], 13.0, "assign_add ran once: {m}");
    assert_eq!(m["v_after"], 15.0, "{m}");
    for case in [
        "fed_twice",
        "fetched_twice",
        "fetch_not_in_setup",
        "feed_not_in_setup",
        "needs_unfed",
        "finished",
    ] {
        assert_eq!(m[case]["error"], "InvalidArgumentError", "{case}: {m}");
    }
    assert!(
        m["finished"]["message"]
            .as_str()
            .unwrap()
            .contains("Must run PartialRunSetup"),
        "{m}"
    );
    cluster.stop();
}

/// `ConfigProto(allow_soft_placement=True)` runs what is pinned to a GPU the cluster
/// lacks; without it, TensorFlow's error class.
#[test]
fn soft_placement_from_tensorflows_config_proto() {
    let cluster = tf::MagpieCluster::start("tf-soft-placement");
    let results = tf::compare(&cluster, &["soft_placement"]);
    tf::assert_same(&results, &["soft_placement"], 0.0);
    let (m, _) = tf::sides(&results, "soft_placement");
    assert_eq!(m["soft"], 6.0, "{m}");
    assert_eq!(m["strict"]["error"], "InvalidArgumentError", "{m}");
    cluster.stop();
}
