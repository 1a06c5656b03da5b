"""Times TensorFlow's own Python client (`tf.compat.v1.Session("grpc://...")`) against
a Magpie cluster and against TensorFlow's servers of the same shape (ps:1, worker:2,
`tf.distribute.Server`, each in its own process), side by side in one run, alternating
the two for several rounds:

- trivial: `y = x + 1` on /job:worker/task:0, x fed, y fetched;
- mlp_step: one training step (GradientDescent) of the 2-layer MLP of `programs.py`,
  variables on /job:ps/task:0, forward on worker 0, backward on worker 1.

Prints a Markdown table of median microseconds per step (per round: the mean over
`--steps` steps after a warm-up). A workload that fails on one side is reported as such.
With `--metrics URL` (the Prometheus endpoint of the Magpie task the client talks to),
it also prints the time per step Magpie's master spent inside its RunStep handler
(`magpie_step_duration_seconds`), so the client's and the wire's share of a step is the
difference. `scripts/bench-tf-client` starts the Magpie cluster and runs this.

    python bench.py --cluster magpie-cluster.json [--rounds 3] [--steps 300] [--metrics URL]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

import numpy as np

import compare
import programs

tf = programs.tf
v1 = programs.v1


def trivial(cluster):
    g = tf.Graph()
    with g.as_default():
        with tf.device("/job:worker/task:0"):
            x = v1.placeholder(tf.float32, [], name="x")
            y = tf.add(x, 1.0, name="y")
    sess = v1.Session(programs.target(cluster), graph=g)
    feed = {x: 1.0}
    return sess, lambda: sess.run(y, feed)


def mlp_step(cluster):
    g = tf.Graph()
    with g.as_default():
        loss, _, feed = programs._mlp(True)
        with tf.device("/job:worker/task:1"):
            train = programs._optimizer("gd", 0.1).minimize(loss)
        init = v1.global_variables_initializer()
    sess = v1.Session(programs.target(cluster), graph=g)
    sess.run(init)
    return sess, lambda: sess.run([train, loss], feed)


WORKLOADS = {"trivial": trivial, "mlp_step": mlp_step}


def time_steps(cluster, workload, warmup, steps):
    """Mean seconds per step, or the error's one-line description."""
    try:
        sess, step = WORKLOADS[workload](cluster)
        try:
            for _ in range(warmup):
                step()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            return (time.perf_counter() - start) / steps
        finally:
            sess.close()
    except tf.errors.OpError as e:
        return "%s: %s" % (type(e).__name__, e.message.strip().splitlines()[-1][:120])


def handler_time(url):
    """(seconds, steps) that the Magpie master's RunStep handler has spent so far."""
    total = count = 0.0
    with urllib.request.urlopen(url, timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("magpie_step_duration_seconds_sum"):
                total = float(line.split()[-1])
            elif line.startswith("magpie_step_duration_seconds_count"):
                count = float(line.split()[-1])
    return total, count


def tensorflow_servers(shape):
    """TensorFlow's servers, one process per task (as Magpie's are)."""
    cluster = {job: [compare.free_address() for _ in range(n)] for job, n in shape.items()}
    code = (
        "import sys, json, tensorflow as tf; c = json.loads(sys.argv[1]); "
        "s = tf.distribute.Server(tf.train.ClusterSpec(c), job_name=sys.argv[2], "
        "task_index=int(sys.argv[3])); print('ready', flush=True); s.join()"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, json.dumps(cluster), job, str(i)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
        )
        for job, addresses in cluster.items()
        for i in range(len(addresses))
    ]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a TensorFlow server did not start")
    return cluster, procs


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", required=True, help="the Magpie cluster's spec (JSON)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--workloads", default="trivial,mlp_step")
    p.add_argument("--metrics", help="Prometheus URL of the Magpie task the client calls")
    args = p.parse_args(argv)
    with open(args.cluster) as f:
        magpie = json.load(f)
    reference, procs = tensorflow_servers({job: len(a) for job, a in magpie.items()})
    try:
        results = {}
        inside = {}
        for w in args.workloads.split(","):
            for _ in range(args.rounds):
                for side, cluster in (("magpie", magpie), ("tensorflow", reference)):
                    steps = args.steps if w == "trivial" else max(args.steps // 5, 10)
                    before = handler_time(args.metrics) if args.metrics and side == "magpie" else None
                    r = time_steps(cluster, w, args.warmup, steps)
                    results.setdefault((w, side), []).append(r)
                    if before is not None:
                        after = handler_time(args.metrics)
                        n = after[1] - before[1]
                        if n > 0:
                            inside.setdefault(w, []).append((after[0] - before[0]) / n * 1e6)
        print("| workload | Magpie, µs/step | TensorFlow 2.21, µs/step | Magpie / TensorFlow |")
        print("|---|---|---|---|")
        for w in args.workloads.split(","):
            cells = []
            medians = []
            for side in ("magpie", "tensorflow"):
                rs = results[(w, side)]
                errors = [r for r in rs if isinstance(r, str)]
                if errors:
                    cells.append("fails: " + errors[0])
                    medians.append(None)
                    continue
                us = [r * 1e6 for r in rs]
                medians.append(statistics.median(us))
                cells.append("%.0f (rounds: %s)" % (medians[-1], ", ".join("%.0f" % u for u in us)))
            ratio = "%.2f" % (medians[0] / medians[1]) if None not in medians else "–"
            print("| %s | %s | %s | %s |" % (w, cells[0], cells[1], ratio))
        for w, us in inside.items():
            # Warm-up and `init` steps are in these means too (same handler, same step).
            print("%s: Magpie's RunStep handler, µs/step per round: %s" % (w, ", ".join("%.0f" % u for u in us)))
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
