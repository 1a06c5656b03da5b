"""The TensorFlow side of scripts/bench-vs-tensorflow: the graphs of
benches/vs_tensorflow.rs built in TensorFlow 2.21's graph mode (tf.compat.v1, Grappler
off, inter-op threads as given, intra-op 1), one JSON line per workload on stdout with the
median, min and max of --reps timed Session.run calls after --warmup untimed ones.

  python scripts/bench_vs_tensorflow.py --threads 3 --reps 30
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import rewriter_config_pb2  # noqa: E402

tf1 = tf.compat.v1
tf1.disable_eager_execution()

N = 10_000


def values(n, seed):
    i = np.arange(n, dtype=np.uint64)
    return (((i * 7919 + seed * 104729) % 1000).astype(np.float32) / 1000.0 - 0.5)


def chain(g):
    with g.as_default():
        x = tf1.placeholder(tf.float32, shape=[])
        one = tf.constant(1.0)
        acc = x
        for _ in range(N):
            acc = tf.add(acc, one)
    return x, np.float32(0.0), acc, N


def fan_tree(g):
    with g.as_default():
        x = tf1.placeholder(tf.float32, shape=[])
        one = tf.constant(1.0)
        level = [tf.add(x, one) for _ in range(N)]
        ops = N
        while len(level) > 1:
            nxt = []
            for k in range(0, len(level), 2):
                if k + 1 < len(level):
                    nxt.append(tf.add(level[k], level[k + 1]))
                    ops += 1
                else:
                    nxt.append(level[k])
            level = nxt
    return x, np.float32(0.0), level[0], ops


def mlp(g):
    with g.as_default():
        x = tf1.placeholder(tf.float32, shape=[None, 256])

        def c(shape, seed):
            return tf.constant(values(int(np.prod(shape)), seed).reshape(shape))

        w1, b1, w2, b2 = c([256, 256], 1), c([256], 2), c([256, 10], 3), c([10], 4)
        h = tf.nn.relu(tf.add(tf.matmul(x, w1), b1))
        y = tf.add(tf.matmul(h, w2), b2)
    return x, values(64 * 256, 0).reshape([64, 256]), y, 6


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=3)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()
    config = tf1.ConfigProto(
        inter_op_parallelism_threads=a.threads,
        intra_op_parallelism_threads=1,
        graph_options=tf1.GraphOptions(
            rewrite_options=rewriter_config_pb2.RewriterConfig(
                disable_meta_optimizer=True,
                constant_folding=rewriter_config_pb2.RewriterConfig.OFF,
            ),
            optimizer_options=tf1.OptimizerOptions(opt_level=tf1.OptimizerOptions.L0),
        ),
    )
    for name, build in [("chain", chain), ("fan_tree", fan_tree), ("mlp", mlp)]:
        g = tf.Graph()
        x, value, fetch, ops = build(g)
        with tf1.Session(graph=g, config=config) as s:
            for _ in range(a.warmup):
                s.run(fetch, {x: value})
            times = []
            check = 0.0
            for _ in range(max(a.reps, 1)):
                t = time.perf_counter()
                out = s.run(fetch, {x: value})
                times.append(time.perf_counter() - t)
                check = float(np.sum(out, dtype=np.float64))
        times.sort()
        print(json.dumps({
            "side": "tensorflow", "workload": name, "ops": ops, "threads": a.threads,
            "median_s": times[len(times) // 2], "min_s": times[0], "max_s": times[-1],
            "check": check,
        }))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
