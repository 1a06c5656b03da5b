"""The TensorFlow side of scripts/bench-remote-vs-tensorflow: the remote steps of
benches/remote_vs_tensorflow.rs on TensorFlow 2.21's own servers
(`tf.distribute.Server`, one process per task, on 127.0.0.1), driven by TensorFlow's
client (`tf.compat.v1.Session("grpc://...")` on worker 0, Grappler and constant folding
off so the graph runs as built), one JSON line per workload on stdout with the median,
min and max of --reps timed steps after --warmup untimed ones.

Workloads (the same graphs as the Magpie side):
- remote_trivial: one task (worker:1); `y = -c` with `c = 1.0`, both on worker 0,
  y fetched;
- three_tasks: ps:1 + worker:2; `w = 2.0` on ps, `x = w * 5.0` on worker 0,
  `y = x + w` on worker 1, y (12.0) fetched: three tensors cross tasks.

Each step is a call of `Session.make_callable(y)` (TensorFlow's cheapest client path,
RunCallable); `--sess-run` times `Session.run(y)` instead.

  python scripts/bench_remote_tensorflow.py --reps 300 [--warmup 30] [--sess-run]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import rewriter_config_pb2  # noqa: E402

tf1 = tf.compat.v1
tf1.disable_eager_execution()

SERVER = (
    "import sys, json, os\n"
    "os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
    "import tensorflow as tf\n"
    "c = json.loads(sys.argv[1])\n"
    "s = tf.distribute.Server(tf.train.ClusterSpec(c), job_name=sys.argv[2],\n"
    "                         task_index=int(sys.argv[3]))\n"
    "print('ready', flush=True)\n"
    "s.join()\n"
)


def free_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % s.getsockname()[1]


def start_servers(shape):
    """TensorFlow's servers for `shape` ({job: tasks}), one process per task."""
    cluster = {job: [free_address() for _ in range(n)] for job, n in shape.items()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(cluster), job, str(i)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for job, addresses in cluster.items()
        for i in range(len(addresses))
    ]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            stop(procs)
            raise SystemExit("bench_remote_tensorflow: a TensorFlow server did not start")
    return cluster, procs


def stop(procs):
    for p in procs:
        p.kill()
        p.wait()


def remote_trivial(g):
    with g.as_default(), tf.device("/job:worker/task:0"):
        return tf.negative(tf.constant(1.0))


def three_tasks(g):
    with g.as_default():
        with tf.device("/job:ps/task:0"):
            w = tf.constant(2.0)
        with tf.device("/job:worker/task:0"):
            x = tf.multiply(w, tf.constant(5.0))
        with tf.device("/job:worker/task:1"):
            return tf.add(x, w)


WORKLOADS = [
    ("remote_trivial", {"worker": 1}, remote_trivial, 1),
    ("three_tasks", {"ps": 1, "worker": 2}, three_tasks, 3),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--sess-run", action="store_true", help="time Session.run, not a callable")
    p.add_argument("--workloads", default="remote_trivial,three_tasks")
    a = p.parse_args()
    config = tf1.ConfigProto(
        graph_options=tf1.GraphOptions(
            rewrite_options=rewriter_config_pb2.RewriterConfig(
                disable_meta_optimizer=True,
                constant_folding=rewriter_config_pb2.RewriterConfig.OFF,
            ),
            optimizer_options=tf1.OptimizerOptions(opt_level=tf1.OptimizerOptions.L0),
        ),
    )
    wanted = a.workloads.split(",")
    for name, shape, build, tasks in WORKLOADS:
        if name not in wanted:
            continue
        cluster, procs = start_servers(shape)
        try:
            g = tf.Graph()
            y = build(g)
            target = "grpc://" + cluster["worker"][0]
            with tf1.Session(target, graph=g, config=config) as s:
                step = (lambda: s.run(y)) if a.sess_run else s.make_callable(y)
                for _ in range(a.warmup):
                    step()
                times = []
                check = 0.0
                for _ in range(max(a.reps, 1)):
                    t = time.perf_counter()
                    out = step()
                    times.append(time.perf_counter() - t)
                    check = float(out)
        finally:
            stop(procs)
        times.sort()
        print(json.dumps({
            "side": "tensorflow", "workload": name, "tasks": tasks,
            "client": "Session.run" if a.sess_run else "make_callable",
            "median_s": times[len(times) // 2], "min_s": times[0], "max_s": times[-1],
            "check": check,
        }))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
