"""Runs programs of `programs.py` against a Magpie cluster and against TensorFlow's own
servers (`tf.distribute.Server`, started in this process on free 127.0.0.1 ports, in the
same cluster shape), and prints one JSON object:

    {"program": {"magpie": {...}, "tensorflow": {...}}, ...}

A program that raises (rather than returning an error it expected) reports
{"crash": "<traceback>"} on that side. The Rust tests (tests/tf_client.rs,
tests/tf_training.rs) compare the two sides.

    python compare.py --cluster magpie-cluster.json --programs control_dependencies,make_callable
"""

import argparse
import json
import socket
import sys
import traceback

import programs
import tensorflow as tf


def free_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1:%d" % s.getsockname()[1]


def tensorflow_cluster(shape):
    """TensorFlow servers for every task of a cluster of `shape` (job -> task count),
    in this process. Returns the cluster (job -> addresses) and the servers (kept alive
    by the caller)."""
    cluster = {job: [free_address() for _ in range(n)] for job, n in shape.items()}
    spec = tf.train.ClusterSpec(cluster)
    servers = [
        tf.distribute.Server(spec, job_name=job, task_index=i, start=True)
        for job, addresses in cluster.items()
        for i in range(len(addresses))
    ]
    return cluster, servers


def run(program, cluster):
    try:
        return programs.PROGRAMS[program](cluster)
    except Exception:  # a program's own bug, reported rather than hidden
        return {"crash": traceback.format_exc()}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cluster", required=True, help="the Magpie cluster's spec (JSON)")
    p.add_argument("--programs", required=True, help="comma-separated program names")
    args = p.parse_args(argv)
    with open(args.cluster) as f:
        magpie = json.load(f)
    names = args.programs.split(",")
    for n in names:
        if n not in programs.PROGRAMS:
            sys.exit("unknown program %r (have: %s)" % (n, ", ".join(sorted(programs.PROGRAMS))))
    reference, servers = tensorflow_cluster({job: len(a) for job, a in magpie.items()})
    out = {}
    for n in names:
        out[n] = {"magpie": run(n, magpie), "tensorflow": run(n, reference)}
    # The last line of stdout: TensorFlow's own logging goes to stderr.
    print(json.dumps(out))
    sys.stdout.flush()
    del servers


if __name__ == "__main__":
    main(sys.argv[1:])
