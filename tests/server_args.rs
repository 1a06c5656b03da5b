//! `magpie server`'s arguments: what it refuses before starting, and why, from a real
//! process (`--task` is required with `--job`; an evaluator in `TF_CONFIG` has no task
//! to serve).

use std::process::Command;

fn magpie() -> Command {
    Command::new(env!("CARGO_BIN_EXE_magpie"))
}

#[test]
fn job_without_task_is_refused_naming_the_flag() {
    let out = magpie()
        .args(["server", "--cluster", "/dev/null", "--job", "worker"])
        .env_remove("TF_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--task"), "{err}");
}

#[test]
fn tf_config_evaluator_has_no_task_to_serve() {
    let out = magpie()
        .arg("server")
        .env(
            "TF_CONFIG",
            r#"{"cluster": {"worker": {"0": "127.0.0.1:5"}, "evaluator": ["127.0.0.1:6"]},
                "task": {"type": "evaluator", "index": 0}}"#,
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("evaluator") && err.contains("not part of the cluster"),
        "{err}"
    );
}
