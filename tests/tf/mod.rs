//! Shared by the tests that drive Magpie with TensorFlow's own Python client
//! (`tf_client.rs`, `tf_training.rs`): a Magpie cluster of real `magpie server`
//! processes (ps:1, worker:2 on free 127.0.0.1 ports, CPU devices only, as TensorFlow's
//! servers have), the venv of `scripts/tf-venv`, and `examples/tensorflow_client/
//! compare.py`, which runs each program against that cluster and against TensorFlow's
//! own servers in one Python process and prints both sides' results as JSON.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{free_address, ServerProcess};

/// How long one run of `compare.py` may take (TensorFlow's import alone takes ~15 s).
const PYTHON_DEADLINE: Duration = Duration::from_secs(600);

/// The venv's interpreter, where `scripts/tf-venv` makes it. Panics, pointing at the
/// setup script, when it is missing: these tests are never skipped.
pub fn python() -> PathBuf {
    let venv = std::env::var_os("MAGPIE_TF_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/magpie/tf-venv"))
        })
        .expect("HOME or MAGPIE_TF_VENV is set");
    let py = venv.join("bin/python");
    assert!(
        py.exists(),
        "the TensorFlow venv is missing ({}): run `scripts/setup --check` (or `scripts/tf-venv`) \
         to make it; the TensorFlow-client tests need tensorflow-cpu 2.21 and are not skipped",
        py.display()
    );
    py
}

/// A Magpie cluster of `magpie server` processes, stopped when dropped.
pub struct MagpieCluster {
    /// The spec file (job -> addresses), read by `compare.py`.
    pub spec_file: PathBuf,
    servers: Vec<ServerProcess>,
}

impl MagpieCluster {
    /// ps:1 and worker:2, each exposing its CPU only.
    pub fn start(name: &str) -> MagpieCluster {
        let mut jobs = BTreeMap::new();
        jobs.insert("ps", vec![free_address()]);
        jobs.insert("worker", vec![free_address(), free_address()]);
        let dir = std::env::temp_dir().join(format!("magpie-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let spec_file = dir.join("cluster.json");
        std::fs::write(&spec_file, serde_json::to_string(&jobs).unwrap()).unwrap();
        let mut servers = Vec::new();
        for (job, addresses) in &jobs {
            for task in 0..addresses.len() {
                let task = task.to_string();
                servers.push(ServerProcess::server([
                    "--cluster",
                    spec_file.to_str().unwrap(),
                    "--job",
                    job,
                    "--task",
                    &task,
                    "--visible-devices",
                    "/device:CPU:0",
                ]));
            }
        }
        MagpieCluster { spec_file, servers }
    }

    /// Stops every server (SIGTERM, clean exit asserted).
    pub fn stop(self) {
        for s in self.servers {
            s.stop();
        }
    }
}

/// Runs `programs` with `compare.py` against `cluster` and TensorFlow's servers; returns
/// program -> {"magpie": .., "tensorflow": ..}.
pub fn compare(cluster: &MagpieCluster, programs: &[&str]) -> serde_json::Map<String, Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/tensorflow_client");
    let mut child = Command::new(python())
        .current_dir(&dir)
        .arg("compare.py")
        .arg("--cluster")
        .arg(&cluster.spec_file)
        .arg("--programs")
        .arg(programs.join(","))
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the venv's python starts");
    // Both pipes are drained on threads: a chatty stderr never blocks the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let until = Instant::now() + PYTHON_DEADLINE;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "compare.py ran past {PYTHON_DEADLINE:?}: {}",
                err.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    assert!(status.success(), "compare.py failed ({status}):\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    match serde_json::from_str::<Value>(last) {
        Ok(Value::Object(m)) => m,
        other => panic!("compare.py printed {stdout:?} ({other:?});\nstderr:\n{stderr}"),
    }
}

/// Whether two JSON values are equal, numbers within `rel` relative (and 1e-6
/// absolute) tolerance; the first difference as a path otherwise.
pub fn close(a: &Value, b: &Value, rel: f64, path: &str) -> Result<(), String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() <= 1e-6 + rel * x.abs().max(y.abs()) {
                Ok(())
            } else {
                Err(format!("{path}: {x} against {y}"))
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: {} elements against {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .try_for_each(|(i, (x, y))| close(x, y, rel, &format!("{path}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<_> = x.keys().collect();
            let ky: Vec<_> = y.keys().collect();
            if kx != ky {
                return Err(format!("{path}: keys {kx:?} against {ky:?}"));
            }
            x.iter()
                .try_for_each(|(k, v)| close(v, &y[k], rel, &format!("{path}.{k}")))
        }
        (x, y) if x == y => Ok(()),
        (x, y) => Err(format!("{path}: {x} against {y}")),
    }
}

/// One program's two sides.
pub fn sides<'a>(
    results: &'a serde_json::Map<String, Value>,
    program: &str,
) -> (&'a Value, &'a Value) {
    let r = &results[program];
    let (m, t) = (&r["magpie"], &r["tensorflow"]);
    assert!(
        m.get("crash").is_none(),
        "{program} crashed on Magpie:\n{}",
        m["crash"]
    );
    assert!(
        t.get("crash").is_none(),
        "{program} crashed on TensorFlow:\n{}",
        t["crash"]
    );
    (m, t)
}

/// Asserts that every program gave Magpie the values TensorFlow gave, within `rel`.
pub fn assert_same(results: &serde_json::Map<String, Value>, programs: &[&str], rel: f64) {
    let mut failures = Vec::new();
    for p in programs {
        let r = &results[*p];
        let (m, t) = (&r["magpie"], &r["tensorflow"]);
        // Every program's outcome in one report: a crash by its traceback's last line.
        let crash = |side: &Value| {
            side.get("crash")
                .and_then(Value::as_str)
                .map(|c| c.trim().lines().last().unwrap_or_default().to_string())
        };
        if let Some(c) = crash(m) {
            failures.push(format!("{p}: crashed on Magpie: {c}"));
            continue;
        }
        if let Some(c) = crash(t) {
            failures.push(format!("{p}: crashed on TensorFlow: {c}"));
            continue;
        }
        if let Err(e) = close(m, t, rel, p) {
            failures.push(format!("{e}\n  magpie: {m}\n  tensorflow: {t}"));
        }
    }
    assert!(
        failures.is_empty(),
        "Magpie differs from TensorFlow:\n{}",
        failures.join("\n")
    );
}
