#!/usr/bin/env python3
"""Writes tests/fixtures/tf_variables.json: TensorFlow 2.21's own graphs and numbers for
the variable and optimizer tests (tests/tf_variables.rs).

For each variable form (resource variables, TF 2.x's default in graph mode; ref
variables after tf.compat.v1.disable_resource_variables()) and each optimizer
(GradientDescent, Momentum, Momentum with Nesterov, Adam), it builds the graph of
`optimizer.apply_gradients` over two float32 variables (one placed on /job:ps/task:0),
with their gradients fed through placeholders, runs three steps in TensorFlow and
records: the GraphDef (nodes with typed attributes), the feeds of each step, and the
value of every variable (slots and Adam's beta powers included) after each step.

Run with the TensorFlow venv:  $(scripts/tf-venv) scripts/tf_variables_fixture.py
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1
tf1.disable_eager_execution()

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tf_variables.json")

DTYPES = {tf.float32: "f32", tf.float64: "f64", tf.int32: "i32", tf.int64: "i64", tf.bool: "bool"}

GRADS = {
    "v": [[0.5, -1.0, 2.0], [0.25, 0.75, -1.5], [-2.0, 0.125, 1.0]],
    "w": [[[1.0, -0.5], [0.0, 3.0]], [[-0.25, 0.5], [2.0, -1.0]], [[0.5, 0.5], [-0.5, 0.0]]],
}


def attr_json(value):
    """One AttrValue as {kind: value}, or None for kinds the tests do not need."""
    kind = value.WhichOneof("value")
    if kind == "type":
        return {"dtype": DTYPES[tf.dtypes.as_dtype(value.type)]}
    if kind == "b":
        return {"bool": value.b}
    if kind == "i":
        return {"int": value.i}
    if kind == "f":
        return {"float": value.f}
    if kind == "s":
        return {"str": value.s.decode()}
    if kind == "shape":
        if value.shape.unknown_rank:
            return None
        return {"ints": [d.size for d in value.shape.dim]}
    if kind == "tensor":
        arr = tf.make_ndarray(value.tensor)
        return {
            "tensor": {
                "dtype": DTYPES[tf.dtypes.as_dtype(value.tensor.dtype)],
                "shape": list(arr.shape),
                "values": arr.flatten().tolist(),
            }
        }
    if kind == "list":
        if value.list.s:
            return {"strs": [s.decode() for s in value.list.s]}
        if value.list.i:
            return {"ints": list(value.list.i)}
        return {"strs": []}
    return None


def graph_json(graph):
    nodes = []
    for n in graph.as_graph_def().node:
        attrs = {}
        for k, v in sorted(n.attr.items()):
            j = attr_json(v)
            if j is not None:
                attrs[k] = j
        nodes.append({"name": n.name, "op": n.op, "inputs": list(n.input),
                      "device": n.device, "attrs": attrs})
    return nodes


def optimizer(name):
    if name == "gd":
        return tf1.train.GradientDescentOptimizer(0.1)
    if name == "momentum":
        return tf1.train.MomentumOptimizer(0.05, 0.9)
    if name == "nesterov":
        return tf1.train.MomentumOptimizer(0.05, 0.9, use_nesterov=True)
    if name == "adam":
        return tf1.train.AdamOptimizer(0.01)
    raise ValueError(name)


def build(form, opt_name, ps_device):
    """The graph of one case; `ps_device` pins `v` (the local reference run has no ps)."""
    graph = tf.Graph()
    with graph.as_default():
        with tf1.device(ps_device):
            v = tf1.Variable([1.0, 2.0, 3.0], name="v", use_resource=(form == "resource"))
        w = tf1.Variable([[0.5, -0.5], [1.5, 2.5]], name="w", use_resource=(form == "resource"))
        gv = tf1.placeholder(tf.float32, [3], name="grad_v")
        gw = tf1.placeholder(tf.float32, [2, 2], name="grad_w")
        optimizer(opt_name).apply_gradients([(gv, v), (gw, w)], name="train")
        tf1.global_variables_initializer()
        suffix = "/Read/ReadVariableOp:0" if form == "resource" else "/read:0"
        fetches = [var.op.name + suffix for var in tf1.global_variables()]
    return graph, fetches


def case(form, opt_name):
    pinned, fetches = build(form, opt_name, "/job:ps/task:0")
    graph, same = build(form, opt_name, None)
    assert fetches == same
    steps = []
    with tf1.Session(graph=graph) as sess:
        sess.run("init")
        for k in range(3):
            feeds = {"grad_v:0": GRADS["v"][k], "grad_w:0": GRADS["w"][k]}
            sess.run("train", feed_dict=feeds)
            values = sess.run(fetches)
            steps.append({
                "feeds": {name: np.asarray(x, np.float32).flatten().tolist()
                          for name, x in feeds.items()},
                "values": {f: np.asarray(x).flatten().tolist()
                           for f, x in zip(fetches, values)},
            })
    # An uninitialised read: TensorFlow's error class.
    with tf1.Session(graph=graph) as sess:
        try:
            sess.run(fetches[0])
            error = None
        except tf.errors.OpError as e:
            error = type(e).__name__
    return {"form": form, "optimizer": opt_name, "graph": graph_json(pinned),
            "fetches": fetches, "steps": steps, "uninitialised_error": error}


def main():
    cases = []
    for form in ["resource", "ref"]:
        for opt_name in ["gd", "momentum", "nesterov", "adam"]:
            cases.append(case(form, opt_name))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"tensorflow": tf.__version__, "cases": cases}, f, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
