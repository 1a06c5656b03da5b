//! TensorFlow's own Python client (`tf.compat.v1.Session("grpc://...")`, TensorFlow 2.21
//! from `scripts/tf-venv`) against a cluster of real `magpie server` processes: the
//! programs of `examples/tensorflow_client/programs.py` run against Magpie and against
//! TensorFlow's servers of the same shape in one Python process, and every fetched value
//! must be TensorFlow's. Mistakes must raise the `tf.errors` class TensorFlow raises, with
//! a message naming the node. The venv missing is a failure pointing at
//! `scripts/setup --check`, never a skip.

mod common;
mod tf;

use serde_json::Value;

/// The seed's examples, devices, callables, dtypes, and the error paths.
#[test]
fn tensorflows_client_gets_tensorflows_answers_from_magpie() {
    let cluster = tf::MagpieCluster::start("tf-client");
    let programs = [
        "control_dependencies",
        "remote_session",
        "list_devices",
        "make_callable",
        "dtypes_and_shapes",
        "unknown_op",
        "bad_feeds",
    ];
    let results = tf::compare(&cluster, &programs);

    // Values: exactly TensorFlow's (these programs do exact arithmetic).
    tf::assert_same(
        &results,
        &[
            "control_dependencies",
            "remote_session",
            "list_devices",
            "make_callable",
            "dtypes_and_shapes",
        ],
        0.0,
    );
    let (m, _) = tf::sides(&results, "remote_session");
    assert_eq!(m["c"], 3.0, "c = a * 3 with a = 1.0");
    let (m, _) = tf::sides(&results, "list_devices");
    assert_eq!(m["devices"].as_array().unwrap().len(), 3, "{m}");

    // An op Magpie lacks: TensorFlow computes it, Magpie says UNIMPLEMENTED naming op and
    // node.
    let (m, t) = tf::sides(&results, "unknown_op");
    assert_eq!(t["det"], -2.0, "{t}");
    assert_eq!(m["error"], "UnimplementedError", "{m}");
    let msg = m["message"].as_str().unwrap();
    assert!(
        msg.contains("MatrixDeterminant") && msg.contains("the_det"),
        "{msg}"
    );

    // Mistakes the client cannot catch: the same tf.errors class as TensorFlow's, naming
    // the node; the session serves on.
    let (m, t) = tf::sides(&results, "bad_feeds");
    for (case, node) in [("unfed", "unfed"), ("matmul", "mm")] {
        assert_eq!(
            m[case]["error"], t[case]["error"],
            "{case}: {m} against {t}"
        );
        assert_eq!(m[case]["error"], "InvalidArgumentError", "{case}: {m}");
        let msg = m[case]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("\"{node}\"")), "{case}: {msg}");
    }
    assert_eq!(m["after"], t["after"]);
    assert_eq!(m["after"], Value::from(vec![vec![2.0, 3.0]]));
    cluster.stop();
}
