#!/usr/bin/env python3
"""Lists the TensorFlow ops that the programs of issue 13 put in their GraphDefs.

The acceptance list of the TensorFlow-client work is generated, not guessed: this script
builds, with TensorFlow 2.21 in graph mode (`tf.compat.v1`), every program a stock client
is expected to run against Magpie, and writes the sorted set of op names of their
GraphDefs, each with the programs that emit it and whether it is a variable/optimizer op.

    $(scripts/tf-venv) scripts/tf_op_list.py            # rewrites docs/tensorflow-ops.txt
    $(scripts/tf-venv) scripts/tf_op_list.py --check    # fails if the committed list is stale

Programs (issue 13, item 3):
- the seed's three examples: control dependencies; variables under
  `tf.device("/job:ps/task:0")`; `c = a * 3` on `/job:worker/task:1`;
- linear regression and a 2-layer MLP (dense layers, relu, softmax cross-entropy via
  `tf.nn.softmax_cross_entropy_with_logits`, mean loss), trained with
  `GradientDescentOptimizer`, `MomentumOptimizer` and `AdamOptimizer`, variables on
  `/job:ps/task:0`, forward and backward passes split over two workers, with ref variables
  (`tf.compat.v1.disable_resource_variables()`) and with resource variables;
- `list_devices()`, `make_callable` and `Session.reset` add no ops of their own (they reuse
  a graph above), so they are listed as a program with the ops of the graph they run.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "tensorflow-ops.txt")

PS = "/job:ps/task:0"
WORKERS = ["/job:worker/task:0", "/job:worker/task:1"]

# Ops that create, read, write or update variables: helper 13c's part (translated in
# core/src/graph/tf_import/variables.rs). Everything else is an ordinary op.
VARIABLE_OPS = {
    "VariableV2",
    "Variable",
    "Assign",
    "AssignAdd",
    "AssignSub",
    "IsVariableInitialized",
    "VarHandleOp",
    "ReadVariableOp",
    "AssignVariableOp",
    "AssignAddVariableOp",
    "AssignSubVariableOp",
    "VarIsInitializedOp",
    "DestroyResourceOp",
}


def is_variable_op(op):
    """A variable op, or an optimizer's update of one (`Apply*`, `ResourceApply*`)."""
    return op in VARIABLE_OPS or op.startswith("Apply") or op.startswith("ResourceApply")


def seed_control_dependencies():
    a = tf.constant(1.0, name="a")
    b = tf.add(a, 2.0, name="b")
    with tf1.control_dependencies([a, b]):
        x = tf.constant(3.0, name="x")
        y = tf.constant(4.0, name="y")
    tf.add(x, y, name="z")


def seed_ps_variables():
    with tf.device(PS):
        w = tf1.Variable(tf.constant([1.0, 2.0, 3.0]), name="weights")
        b = tf1.Variable(0.5, name="bias")
    with tf.device(WORKERS[0]):
        x = tf.constant([[1.0, 1.0, 1.0]], name="x")
        tf.add(tf.linalg.matvec(x, w), b, name="y")
    with tf.device(WORKERS[1]):
        b.assign_add(1.0, name="step")
    tf1.global_variables_initializer()


def seed_worker_session():
    with tf.device(WORKERS[1]):
        a = tf.constant(1.0, name="a")
        tf.add(a, 2, name="b")
        tf.multiply(a, 3, name="c")


def _params(shapes):
    """Variables on ps with fixed initial values (comparable across runtimes)."""
    out = []
    with tf.device(PS):
        for i, (name, shape) in enumerate(shapes):
            init = np.linspace(-0.5, 0.5, int(np.prod(shape)), dtype=np.float32).reshape(shape)
            out.append(tf1.Variable(init * (1 + 0.1 * i), name=name))
    return out


def _optimizer(kind):
    if kind == "sgd":
        return tf1.train.GradientDescentOptimizer(0.1)
    if kind == "momentum":
        return tf1.train.MomentumOptimizer(0.1, momentum=0.9)
    return tf1.train.AdamOptimizer(0.01)


def _train(loss_per_worker, params, kind):
    """Averages the workers' losses; gradients on the workers, updates on ps."""
    loss = tf.reduce_mean(tf.stack(loss_per_worker), name="loss")
    opt = _optimizer(kind)
    grads = opt.compute_gradients(loss, var_list=params, colocate_gradients_with_ops=True)
    with tf.device(PS):
        opt.apply_gradients(grads, name="train")
    tf1.global_variables_initializer()
    return loss


def linear_regression(kind):
    w, b = _params([("w", [3, 1]), ("b", [1])])
    losses = []
    for i, dev in enumerate(WORKERS):
        with tf.device(dev):
            x = tf1.placeholder(tf.float32, [None, 3], name=f"x{i}")
            y = tf1.placeholder(tf.float32, [None, 1], name=f"y{i}")
            pred = tf.matmul(x, w) + b
            losses.append(tf.reduce_mean(tf.square(pred - y)))
    _train(losses, [w, b], kind)


def mlp(kind):
    w1, b1, w2, b2 = _params([("w1", [4, 8]), ("b1", [8]), ("w2", [8, 3]), ("b2", [3])])
    losses = []
    for i, dev in enumerate(WORKERS):
        with tf.device(dev):
            x = tf1.placeholder(tf.float32, [None, 4], name=f"x{i}")
            labels = tf1.placeholder(tf.float32, [None, 3], name=f"labels{i}")
            hidden = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, w1), b1))
            logits = tf.matmul(hidden, w2) + b2
            xent = tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            losses.append(tf.reduce_mean(xent))
    _train(losses, [w1, b1, w2, b2], kind)


def programs():
    """(name, builder, resource variables?) for every program."""
    out = [
        ("seed:control_dependencies", seed_control_dependencies, True),
        ("seed:ps_variables[ref]", seed_ps_variables, False),
        ("seed:ps_variables[resource]", seed_ps_variables, True),
        ("seed:worker_session", seed_worker_session, True),
    ]
    for model, build in [("linear", linear_regression), ("mlp", mlp)]:
        for kind in ["sgd", "momentum", "adam"]:
            for resource in [False, True]:
                tag = "resource" if resource else "ref"
                out.append((f"{model}:{kind}[{tag}]", (lambda b=build, k=kind: b(k)), resource))
    return out


def ops_of(build, resource):
    if resource:
        tf1.enable_resource_variables()
    else:
        tf1.disable_resource_variables()
    graph = tf.Graph()
    with graph.as_default():
        build()
    return {node.op for node in graph.as_graph_def().node}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--check", action="store_true", help="fail if the list is stale")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()

    users = {}
    for name, build, resource in programs():
        for op in ops_of(build, resource):
            users.setdefault(op, []).append(name)
    lines = [
        "# The ops of the GraphDefs of issue 13's programs, as TensorFlow 2.21 builds them.",
        "# Generated by scripts/tf_op_list.py; do not edit. Columns: op, kind (variable =",
        "# a variable or optimizer-update op, translated in tf_import/variables.rs; op = an",
        "# ordinary op), the programs that emit it. list_devices/make_callable/reset run",
        "# the graphs below and add no op.",
    ]
    for op in sorted(users):
        kind = "variable" if is_variable_op(op) else "op"
        lines.append(f"{op}\t{kind}\t{','.join(sorted(users[op]))}")
    text = "\n".join(lines) + "\n"
    if args.check:
        with open(args.out) as f:
            if f.read() != text:
                sys.exit(f"{args.out} is stale: rerun scripts/tf_op_list.py")
        return
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"{len(users)} ops -> {args.out}")


if __name__ == "__main__":
    main()
