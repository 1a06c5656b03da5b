#!/usr/bin/env python3
"""Prints what TensorFlow 2.21 does in the cases where Magpie's own numerics differed
(issue 13, item 4): the values docs/tensorflow-semantics.md and the tests quote.

Run with the TensorFlow venv:  $(scripts/tf-venv) scripts/tf_semantics_probe.py
"""

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1
tf1.disable_eager_execution()
tf1.disable_resource_variables()


def first_line(e):
    """The error's class and the first line of TensorFlow's own message."""
    for line in e.message.splitlines():
        line = line.strip()
        if line and not line.startswith(("Graph execution", "Detected at", "Node:", "File", "[[")):
            if not line.startswith(("tf1.", "s.run", "main()", "out =", "return", "self.")):
                return f"{type(e).__name__}: {line}"
    return type(e).__name__


def main():
    g = tf.Graph()
    with g.as_default():
        x32 = tf1.placeholder(tf.float32, [None])
        x64 = tf1.placeholder(tf.float64, [None])
        relu32, relu64 = tf.nn.relu(x32), tf.nn.relu(x64)
        casts = {(s, d.name): tf.cast(x, d) for s, x in [("f32", x32), ("f64", x64)]
                 for d in [tf.int32, tf.int64, tf.uint8, tf.bool]}
        ei = tf1.placeholder(tf.int32, [None, 3])
        means = {"int32 all axes": tf.reduce_mean(ei), "int32 axis 0": tf.reduce_mean(ei, axis=0)}
        empty = tf1.placeholder(tf.float32, None)
        spec = tf1.placeholder(tf.int32, [None])
        reshaped = tf.reshape(empty, spec)
        dims = tf1.placeholder(tf.int32, None)
        value = tf1.placeholder(tf.float32, None)
        filled = tf.raw_ops.Fill(dims=dims, value=value)
        # Pruning with feeds.
        v = tf1.Variable(0.0, name="v")
        inc = tf1.assign_add(v, 1.0, name="inc")
        y = tf.identity(inc, name="y")
        with tf1.control_dependencies([inc]):
            z = tf.constant(5.0, name="z")
        init = tf1.global_variables_initializer()
    vals = [np.nan, np.inf, -np.inf, 1e20, -1e20, 3e9, -3e9, 300.0, -1.5, 2.7, 255.9, 256.0, -0.0]
    with tf1.Session(graph=g) as s:
        r = s.run(relu32, {x32: [np.nan, -np.nan, -0.0, -1.5, 2.5, -np.inf, np.inf]})
        print("Relu f32 [nan, -nan, -0.0, -1.5, 2.5, -inf, inf] ->", r.tolist(),
              "signbit", np.signbit(r).tolist())
        print("Relu f64 [nan, -1, 2] ->", s.run(relu64, {x64: [np.nan, -1.0, 2.0]}).tolist())
        print("Cast inputs", vals)
        for (src, dst), c in casts.items():
            feed = x32 if src == "f32" else x64
            print(f"Cast {src} -> {dst}:", s.run(c, {feed: vals}).tolist())
        for k, m in means.items():
            print(f"Mean {k} of a [0, 3] tensor:", s.run(m, {ei: np.zeros([0, 3], np.int32)}).tolist())
        for shape, target in [([0], [-1]), ([0, 3], [-1, 3]), ([0, 3], [0, -1]), ([0, 3], [3, -1]),
                              ([0, 3], [-1, 0]), ([0], [2, -1]), ([0, 6], [0, -1, 2]),
                              ([0, 3], [0, -1, 2]), ([0, 4, 0], [0, -1]), ([0, 4, 0], [-1, 2, 0]),
                              ([2, 0], [-1, 0, 5]), ([0], [-1, 0]), ([0, 3], [2, -1, 0]),
                              ([0, 3], [0, 0, -1]), ([0], [0, -1]), ([0, 3], [4, -1]),
                              ([3], [0, -1])]:
            try:
                out = s.run(reshaped, {empty: np.zeros(shape, np.float32), spec: target}).shape
            except tf.errors.OpError as e:
                out = first_line(e)
            print(f"Reshape {shape} into {target}:", out)
        for d, val in [([2], np.float32(2)), ([2], np.array([2], np.float32)),
                       ([2], np.zeros([0], np.float32)), ([2], np.zeros([2], np.float32)),
                       ([2], np.zeros([1, 1], np.float32))]:
            try:
                out = s.run(filled, {dims: d, value: val}).tolist()
            except tf.errors.OpError as e:
                out = first_line(e)
            print(f"Fill {d} with a value of shape {list(np.shape(val))}:", out)
        s.run(init)
        print("fetch y = Identity(inc) feeding inc:0 ->", s.run(y, {inc: 10.0}), "v", s.run(v))
        print("fetch inc:0 feeding inc:0 ->", s.run(inc, {inc: 10.0}), "v", s.run(v))
        print("fetch z (control input ^inc) feeding inc:0 ->", s.run(z, {inc: 10.0}), "v", s.run(v))
        print("fetch y, target inc, feeding inc:0 ->", s.run([y, inc.op], {inc: 10.0})[0], "v", s.run(v))


if __name__ == "__main__":
    main()
