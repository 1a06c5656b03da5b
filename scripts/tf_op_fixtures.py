#!/usr/bin/env python3
"""Evaluates TensorFlow's ops on fixed inputs and writes what TensorFlow computed, as the
fixture the Rust test `tests/tf_ops.rs` checks Magpie against.

    $(scripts/tf-venv) scripts/tf_op_fixtures.py     # rewrites tests/fixtures/tf_ops.json

Each case builds, with TensorFlow 2.21 in graph mode, one node of an op of
`docs/tensorflow-ops.txt` over `Const` inputs named `in0`, `in1`, ...; the fixture holds
the inputs, the op's NodeDef exactly as TensorFlow wrote it (op, inputs, attributes), and
either the outputs (dtype, shape, values) or that TensorFlow refused the case (when
running; a case its shape inference refuses at build is run over placeholders of unknown
shape instead, and records that too). Non-finite floats are written as the strings "nan", "inf", "-inf".

Also writes `tests/fixtures/tf_mlp.json`: the whole GraphDef (forward and backward) of
`tf_op_list.py`'s 2-layer MLP with resource variables replaced by constants, the feeds,
and TensorFlow's values of the loss and of every variable's gradient.
"""

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1
raw = tf.raw_ops
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

DTYPES = {
    tf.float32: "f32",
    tf.float64: "f64",
    tf.int32: "i32",
    tf.int64: "i64",
    tf.bool: "bool",
}


def f32(v):
    return np.array(v, dtype=np.float32)


def f64(v):
    return np.array(v, dtype=np.float64)


def i32(v):
    return np.array(v, dtype=np.int32)


def i64(v):
    return np.array(v, dtype=np.int64)


def value(x):
    """A number as JSON: non-finite floats as strings."""
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (float, np.floating)):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return float(x)
    return int(x)


def tensor_json(arr):
    arr = np.asarray(arr)
    return {
        "dtype": DTYPES[tf.as_dtype(arr.dtype)],
        "shape": list(arr.shape),
        "values": [value(v) for v in arr.reshape(-1).tolist()],
    }


def attr_json(a):
    """A NodeDef attribute in the fixture's typed form, or None for one Magpie never
    reads (functions, tensors)."""
    kind = a.WhichOneof("value")
    if kind == "type":
        return {"type": DTYPES[tf.as_dtype(a.type)]}
    if kind == "b":
        return {"b": a.b}
    if kind == "i":
        return {"i": a.i}
    if kind == "f":
        return {"f": a.f}
    if kind == "s":
        return {"s": a.s.decode()}
    if kind == "shape":
        if a.shape.unknown_rank:
            return None
        return {"ints": [d.size for d in a.shape.dim]}
    if kind == "list":
        if a.list.s:
            return {"strs": [s.decode() for s in a.list.s]}
        return {"ints": list(a.list.i)}
    return None


def node_json(node):
    attrs = {}
    for k, v in sorted(node.attr.items()):
        j = attr_json(v)
        if j is not None:
            attrs[k] = j
    return {"name": node.name, "op": node.op, "inputs": list(node.input), "attrs": attrs}


def case(name, build, *inputs):
    """One case: `build(*input_tensors)` makes the node under test (named "y") over
    constants; when TensorFlow's shape inference refuses that, over placeholders of
    unknown shape fed the same values, so that the kernel decides."""
    out = {"name": name, "inputs": [tensor_json(x) for x in inputs]}
    try:
        return run_case(out, build, inputs, placeholders=False)
    except (ValueError, tf.errors.OpError) as e:
        out["build_error"] = str(e).splitlines()[0][:200]
        return run_case(out, build, inputs, placeholders=True)


def run_case(out, build, inputs, placeholders):
    g = tf.Graph()
    with g.as_default():
        if placeholders:
            ts = [tf1.placeholder(tf.as_dtype(np.asarray(x).dtype), None, name=f"in{i}")
                  for i, x in enumerate(inputs)]
        else:
            ts = [tf.constant(x, name=f"in{i}") for i, x in enumerate(inputs)]
        build(*ts)
        op = g.get_operation_by_name("y")
        out["node"] = node_json(next(n for n in g.as_graph_def().node if n.name == op.name))
        feeds = dict(zip(ts, inputs)) if placeholders else {}
        with tf1.Session(graph=g) as sess:
            try:
                vals = sess.run(list(op.outputs), feeds)
                out["outputs"] = [tensor_json(v) for v in vals]
            except tf.errors.OpError as e:
                out["error"] = str(e).splitlines()[0][:200]
    return out


def cases():
    x23 = f32([[1.5, -2.0, 0.0], [3.25, -0.5, 7.0]])
    e03 = np.zeros((0, 3), np.float32)
    c = []
    add = c.append
    # AddN
    add(case("addn_3", lambda a, b, d: raw.AddN(inputs=[a, b, d], name="y"), x23, x23 * 2, x23 - 1))
    add(case("addn_1_i32", lambda a: raw.AddN(inputs=[a], name="y"), i32([1, -2, 3, 4])))
    add(case("addn_empty", lambda a, b: raw.AddN(inputs=[a, b], name="y"), e03, e03))
    # AddV2, RealDiv, Sub, Mul (broadcasting), FloorMod
    add(case("addv2_bcast", lambda a, b: raw.AddV2(x=a, y=b, name="y"),
             f32(np.arange(6).reshape(2, 1, 3)), f32([[10], [20], [30], [40]])))
    add(case("addv2_i32", lambda a, b: raw.AddV2(x=a, y=b, name="y"), i32([1, 2]), i32(5)))
    add(case("realdiv_bcast", lambda a, b: raw.RealDiv(x=a, y=b, name="y"),
             x23, f32([2.0, 0.0, -4.0])))
    add(case("sub_i32_scalar", lambda a, b: raw.Sub(x=a, y=b, name="y"), i32(2), i32(1)))
    add(case("mul_empty_bcast", lambda a, b: raw.Mul(x=a, y=b, name="y"), e03, f32([1, 2, 3])))
    for dt, name in [(i32, "i32"), (i64, "i64"), (f32, "f32"), (f64, "f64")]:
        add(case(f"floormod_{name}", lambda a, b: raw.FloorMod(x=a, y=b, name="y"),
                 dt([-7, 7, -7, 7, 0, 6]), dt([3, 3, -3, -3, 5, 3])))
    add(case("floormod_f32_frac", lambda a, b: raw.FloorMod(x=a, y=b, name="y"),
             f32([-7.5, 7.5, 2.25]), f32([2.0, -2.0, 0.5])))
    add(case("floormod_bcast", lambda a, b: raw.FloorMod(x=a, y=b, name="y"),
             i32([[1, 2, 3], [4, 5, 6]]), i32([2, -3, 4])))
    add(case("floormod_by_zero", lambda a, b: raw.FloorMod(x=a, y=b, name="y"),
             i32([1, 2]), i32([1, 0])))
    # BiasAdd, BiasAddGrad
    add(case("biasadd_2d", lambda a, b: raw.BiasAdd(value=a, bias=b, name="y"),
             x23, f32([0.5, -1.0, 2.0])))
    add(case("biasadd_3d", lambda a, b: raw.BiasAdd(value=a, bias=b, name="y"),
             f32(np.arange(12).reshape(2, 2, 3)), f32([1, 2, 3])))
    add(case("biasadd_nchw", lambda a, b: raw.BiasAdd(value=a, bias=b, data_format="NCHW", name="y"),
             f32(np.arange(24).reshape(2, 3, 2, 2)), f32([100, 200, 300])))
    add(case("biasadd_empty", lambda a, b: raw.BiasAdd(value=a, bias=b, name="y"),
             e03, f32([1, 2, 3])))
    add(case("biasadd_i32", lambda a, b: raw.BiasAdd(value=a, bias=b, name="y"),
             i32([[1, 2], [3, 4]]), i32([10, -10])))
    add(case("biasadd_bad_bias", lambda a, b: raw.BiasAdd(value=a, bias=b, name="y"),
             x23, f32([1, 2])))
    add(case("biasaddgrad_2d", lambda a: raw.BiasAddGrad(out_backprop=a, name="y"),
             f32(np.arange(12).reshape(4, 3) * 0.5)))
    add(case("biasaddgrad_nchw", lambda a: raw.BiasAddGrad(out_backprop=a, data_format="NCHW", name="y"),
             f32(np.arange(24).reshape(2, 3, 4))))
    add(case("biasaddgrad_empty", lambda a: raw.BiasAddGrad(out_backprop=a, name="y"), e03))
    # BroadcastGradientArgs
    for k, (a, b) in enumerate([([1], [1]), ([2, 3], [3]), ([2, 1], [1, 3]), ([], [2, 2]),
                                ([1, 1], [1]), ([2, 3], [2, 3]), ([4, 1, 5], [1, 1, 1, 5]),
                                ([0, 3], [1, 3]), ([1, 0], [5, 1]), ([2], [3])]):
        dt = i64 if k % 2 else i32
        add(case(f"bga_{k}", lambda s0, s1: raw.BroadcastGradientArgs(s0=s0, s1=s1, name="y"),
                 dt(a), dt(b)))
    # Cast (ordinary values; NaN and out-of-range are item 4's)
    add(case("cast_i32_f32", lambda a: raw.Cast(x=a, DstT=tf.float32, name="y"), i32([3, -2, 0])))
    add(case("cast_f32_i64", lambda a: raw.Cast(x=a, DstT=tf.int64, name="y"), f32([3.7, -2.7, 0.0])))
    add(case("cast_f32_bool", lambda a: raw.Cast(x=a, DstT=tf.bool, name="y"), f32([3.7, 0.0])))
    # ConcatV2
    add(case("concat_axis1", lambda a, b, ax: raw.ConcatV2(values=[a, b], axis=ax, name="y"),
             x23, f32([[9], [8]]), i32(1)))
    add(case("concat_neg_axis", lambda a, b, ax: raw.ConcatV2(values=[a, b], axis=ax, name="y"),
             x23, x23, i64(-1)))
    add(case("concat_empty_rows", lambda a, b, d, ax: raw.ConcatV2(values=[a, b, d], axis=ax, name="y"),
             e03, x23, e03, i32(0)))
    add(case("concat_shape_vectors", lambda a, b, ax: raw.ConcatV2(values=[a, b], axis=ax, name="y"),
             i32([-1]), i32([3]), i32(0)))
    add(case("concat_bad_dims", lambda a, b, ax: raw.ConcatV2(values=[a, b], axis=ax, name="y"),
             x23, f32([[1, 2]]), i32(1)))
    # ExpandDims, Squeeze
    for k, ax in enumerate([0, -1, 2, 1]):
        add(case(f"expanddims_{k}", lambda a, d: raw.ExpandDims(input=a, axis=d, name="y"), x23, i32(ax)))
    add(case("expanddims_scalar", lambda a, d: raw.ExpandDims(input=a, axis=d, name="y"), f32(4.0), i64(0)))
    add(case("expanddims_bad_axis", lambda a, d: raw.ExpandDims(input=a, axis=d, name="y"), x23, i32(3)))
    x131 = f32(np.arange(3).reshape(1, 3, 1))
    add(case("squeeze_all", lambda a: raw.Squeeze(input=a, name="y"), x131))
    add(case("squeeze_0", lambda a: raw.Squeeze(input=a, axis=[0], name="y"), x131))
    add(case("squeeze_neg", lambda a: raw.Squeeze(input=a, axis=[-1], name="y"), x131))
    add(case("squeeze_not_one", lambda a: raw.Squeeze(input=a, axis=[1], name="y"), x131))
    # Fill
    add(case("fill_2x3", lambda d, v: raw.Fill(dims=d, value=v, name="y"), i32([2, 3]), f32(1.5)))
    add(case("fill_scalar", lambda d, v: raw.Fill(dims=d, value=v, name="y"),
             np.zeros((0,), np.int32), f32(1.0)))
    add(case("fill_empty_i64", lambda d, v: raw.Fill(dims=d, value=v, name="y"), i64([0, 4]), i32(7)))
    add(case("fill_bool", lambda d, v: raw.Fill(dims=d, value=v, name="y"), i32([2]), np.array(True)))
    add(case("fill_vector_value", lambda d, v: raw.Fill(dims=d, value=v, name="y"), i32([2]), f32([1.0])))
    add(case("fill_matrix_value", lambda d, v: raw.Fill(dims=d, value=v, name="y"), i32([2]), f32([[1.0]])))
    add(case("fill_negative", lambda d, v: raw.Fill(dims=d, value=v, name="y"), i32([-1]), f32(1.0)))
    # GatherV2
    add(case("gather_shape_entry", lambda p, i, a: raw.GatherV2(params=p, indices=i, axis=a, name="y"),
             i32([5, 3]), i32(1), i32(0)))
    add(case("gather_cols", lambda p, i, a: raw.GatherV2(params=p, indices=i, axis=a, name="y"),
             f32(np.arange(12).reshape(3, 4)), i32([2, 0, 2]), i32(1)))
    add(case("gather_matrix_idx", lambda p, i, a: raw.GatherV2(params=p, indices=i, axis=a, name="y"),
             f32(np.arange(6).reshape(3, 2)), i64([[0, 1], [2, 2]]), i64(0)))
    add(case("gather_empty_idx", lambda p, i, a: raw.GatherV2(params=p, indices=i, axis=a, name="y"),
             x23, np.zeros((0,), np.int32), i32(-1)))
    add(case("gather_out_of_range", lambda p, i, a: raw.GatherV2(params=p, indices=i, axis=a, name="y"),
             i32([5, 3]), i32([2]), i32(0)))
    # Identity, ZerosLike, Neg, Square
    add(case("identity_bool", lambda a: raw.Identity(input=a, name="y"), np.array([True, False])))
    add(case("zeroslike_i32", lambda a: raw.ZerosLike(x=a, name="y"), i32([[1, 2, 3]])))
    add(case("zeroslike_empty", lambda a: raw.ZerosLike(x=a, name="y"), e03))
    add(case("neg", lambda a: raw.Neg(x=a, name="y"), x23))
    add(case("square_i64", lambda a: raw.Square(x=a, name="y"), i64([-3, 4])))
    # LogSoftmax
    add(case("logsoftmax_2x3", lambda a: raw.LogSoftmax(logits=a, name="y"), x23))
    add(case("logsoftmax_large", lambda a: raw.LogSoftmax(logits=a, name="y"), f32([[1000.0, 0.0, -1000.0]])))
    add(case("logsoftmax_f64_1d", lambda a: raw.LogSoftmax(logits=a, name="y"), f64([0.1, 0.2, 0.7, -3.0])))
    add(case("logsoftmax_empty", lambda a: raw.LogSoftmax(logits=a, name="y"), e03))
    # MatMul
    a23 = f32(np.arange(6).reshape(2, 3) - 2.5)
    b34 = f32(np.arange(12).reshape(3, 4) * 0.25)
    add(case("matmul", lambda a, b: raw.MatMul(a=a, b=b, name="y"), a23, b34))
    add(case("matmul_ta", lambda a, b: raw.MatMul(a=a, b=b, transpose_a=True, name="y"), a23.T.copy(), b34))
    add(case("matmul_tb", lambda a, b: raw.MatMul(a=a, b=b, transpose_b=True, name="y"), a23, b34.T.copy()))
    add(case("matmul_k0", lambda a, b: raw.MatMul(a=a, b=b, name="y"),
             np.zeros((2, 0), np.float32), np.zeros((0, 3), np.float32)))
    # Sum, Mean, Prod with the axes as a tensor
    x234 = f32(np.arange(24).reshape(2, 3, 4) * 0.5 - 3)
    for op, fn in [("sum", raw.Sum), ("mean", raw.Mean), ("prod", raw.Prod)]:
        for k, (axes, keep) in enumerate([(i32([0]), False), (i32([1]), True), (i32([0, 2]), False),
                                          (i32(-1), False), (np.zeros((0,), np.int32), False),
                                          (i64([2, 0, 1]), True), (i32([1, 1]), False)]):
            add(case(f"{op}_{k}", lambda a, ax, fn=fn, keep=keep: fn(input=a, axis=ax, keep_dims=keep, name="y"),
                     x234 if op != "prod" else x234 * 0.1, axes))
        add(case(f"{op}_i32", lambda a, ax, fn=fn: fn(input=a, axis=ax, name="y"),
                 i32([[1, 2, 3], [4, 5, -7]]), i32([1])))
        add(case(f"{op}_empty_f32", lambda a, ax, fn=fn: fn(input=a, axis=ax, name="y"), e03, i32([0])))
        add(case(f"{op}_bad_axis", lambda a, ax, fn=fn: fn(input=a, axis=ax, name="y"), x23, i32([2])))
    add(case("mean_empty_i32", lambda a, ax: raw.Mean(input=a, axis=ax, name="y"),
             np.zeros((0, 3), np.int32), i32([0])))
    add(case("prod_shape", lambda a, ax: raw.Prod(input=a, axis=ax, name="y"), i32([3]), i32([0])))
    # Pack, Unpack
    add(case("pack_scalars", lambda a, b: raw.Pack(values=[a, b], name="y"), f32(1.5), f32(-2.0)))
    add(case("pack_axis1", lambda a, b, d: raw.Pack(values=[a, b, d], axis=1, name="y"), x23, x23 + 1, x23 * 2))
    add(case("pack_neg_axis", lambda a, b: raw.Pack(values=[a, b], axis=-1, name="y"), x23, x23 * 3))
    add(case("pack_one_i32", lambda a: raw.Pack(values=[a], name="y"), i32(4)))
    add(case("pack_empty", lambda a, b: raw.Pack(values=[a, b], axis=1, name="y"), e03, e03))
    add(case("unpack_vector", lambda a: raw.Unpack(value=a, num=2, name="y"), f32([0.25, 0.75])))
    add(case("unpack_axis1", lambda a: raw.Unpack(value=a, num=3, axis=1, name="y"), x23))
    add(case("unpack_neg_axis_i64", lambda a: raw.Unpack(value=a, num=2, axis=-1, name="y"),
             i64([[1, 2], [3, 4], [5, 6]])))
    # Relu, ReluGrad (no NaN: item 4's)
    add(case("relu", lambda a: raw.Relu(features=a, name="y"), x23))
    add(case("relugrad", lambda g, f: raw.ReluGrad(gradients=g, features=f, name="y"),
             f32([[1, 2, 3], [4, 5, 6]]), x23))
    add(case("relugrad_i32", lambda g, f: raw.ReluGrad(gradients=g, features=f, name="y"),
             i32([1, 2, 3]), i32([-1, 0, 1])))
    add(case("relugrad_empty", lambda g, f: raw.ReluGrad(gradients=g, features=f, name="y"), e03, e03))
    # Reshape with the shape as a tensor
    for k, s in enumerate([i32([3, 2]), i32([-1]), i64([3, -1]), i32([1, 6, 1]), i32([2, 3])]):
        add(case(f"reshape_{k}", lambda a, s: raw.Reshape(tensor=a, shape=s, name="y"), x23, s))
    add(case("reshape_to_scalar", lambda a, s: raw.Reshape(tensor=a, shape=s, name="y"),
             f32([5.0]), np.zeros((0,), np.int32)))
    add(case("reshape_empty", lambda a, s: raw.Reshape(tensor=a, shape=s, name="y"), e03, i32([3, 0])))
    add(case("reshape_bad", lambda a, s: raw.Reshape(tensor=a, shape=s, name="y"), x23, i32([4])))
    # Shape
    add(case("shape_i32", lambda a: raw.Shape(input=a, name="y"), x234))
    add(case("shape_i64", lambda a: raw.Shape(input=a, out_type=tf.int64, name="y"), e03))
    add(case("shape_scalar", lambda a: raw.Shape(input=a, name="y"), f32(3.0)))
    # Slice
    add(case("slice_vector", lambda a, b, s: raw.Slice(input=a, begin=b, size=s, name="y"),
             i32([4, 3]), i32([1]), i32([1])))
    add(case("slice_rest", lambda a, b, s: raw.Slice(input=a, begin=b, size=s, name="y"),
             f32(np.arange(12).reshape(3, 4)), i32([1, 0]), i32([2, -1])))
    add(case("slice_3d", lambda a, b, s: raw.Slice(input=a, begin=b, size=s, name="y"),
             x234, i64([1, 1, 1]), i64([1, 2, 2])))
    add(case("slice_empty", lambda a, b, s: raw.Slice(input=a, begin=b, size=s, name="y"),
             x23, i32([1, 3]), i32([1, 0])))
    add(case("slice_outside", lambda a, b, s: raw.Slice(input=a, begin=b, size=s, name="y"),
             x23, i32([1, 2]), i32([1, 2])))
    # SoftmaxCrossEntropyWithLogits (both outputs)
    labels = f32([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    add(case("xent", lambda f, l: raw.SoftmaxCrossEntropyWithLogits(features=f, labels=l, name="y"), x23, labels))
    add(case("xent_large", lambda f, l: raw.SoftmaxCrossEntropyWithLogits(features=f, labels=l, name="y"),
             f32([[1000.0, -1000.0, 0.0], [50.0, 50.0, 50.0]]), labels))
    add(case("xent_f64", lambda f, l: raw.SoftmaxCrossEntropyWithLogits(features=f, labels=l, name="y"),
             f64([[0.1, 0.2], [3.0, -1.0], [0.0, 0.0]]), f64([[1, 0], [0.5, 0.5], [0, 1]])))
    add(case("xent_bcast_labels", lambda f, l: raw.SoftmaxCrossEntropyWithLogits(features=f, labels=l, name="y"),
             x23, f32([[0.25, 0.25, 0.5]])))
    add(case("xent_empty", lambda f, l: raw.SoftmaxCrossEntropyWithLogits(features=f, labels=l, name="y"), e03, e03))
    # Tile
    add(case("tile_grad_of_mean", lambda a, m: raw.Tile(input=a, multiples=m, name="y"), f32([0.5]), i32([4])))
    add(case("tile_2d", lambda a, m: raw.Tile(input=a, multiples=m, name="y"), x23, i32([2, 1])))
    add(case("tile_3d", lambda a, m: raw.Tile(input=a, multiples=m, name="y"),
             f32(np.arange(6).reshape(1, 2, 3)), i64([2, 2, 1])))
    add(case("tile_zero", lambda a, m: raw.Tile(input=a, multiples=m, name="y"), x23, i32([0, 2])))
    add(case("tile_bool", lambda a, m: raw.Tile(input=a, multiples=m, name="y"), np.array([True, False]), i32([2])))
    add(case("tile_negative", lambda a, m: raw.Tile(input=a, multiples=m, name="y"), x23, i32([-1, 2])))
    # Awkward shapes across the families
    add(case("biasadd_nchw_rank2", lambda a, b: raw.BiasAdd(value=a, bias=b, data_format="NCHW", name="y"),
             x23, f32([1, 2, 3])))
    add(case("biasaddgrad_nchw_rank2", lambda a: raw.BiasAddGrad(out_backprop=a, data_format="NCHW", name="y"),
             x23))
    add(case("squeeze_to_scalar", lambda a: raw.Squeeze(input=a, name="y"), f32([[7.0]])))
    add(case("squeeze_keeps_zero", lambda a: raw.Squeeze(input=a, name="y"), np.zeros((1, 0, 1), np.float32)))
    add(case("concat_scalars", lambda a, b, ax: raw.ConcatV2(values=[a, b], axis=ax, name="y"),
             f32(1.0), f32(2.0), i32(0)))
    add(case("unpack_none", lambda a: raw.Unpack(value=a, num=0, name="y"), e03))
    add(case("gather_empty_params", lambda p, i, a: raw.GatherV2(params=p, indices=i, axis=a, name="y"),
             np.zeros((2, 0), np.float32), i32([1, 0, 1]), i32(0)))
    add(case("tile_scalar", lambda a, m: raw.Tile(input=a, multiples=m, name="y"),
             f32(2.5), np.zeros((0,), np.int32)))
    add(case("slice_scalar", lambda a, b, s: raw.Slice(input=a, begin=b, size=s, name="y"),
             f32(2.5), np.zeros((0,), np.int32), np.zeros((0,), np.int32)))
    add(case("sum_scalar_no_axes", lambda a, ax: raw.Sum(input=a, axis=ax, name="y"),
             f32(2.5), np.zeros((0,), np.int32)))
    add(case("mean_keep_empty", lambda a, ax: raw.Mean(input=a, axis=ax, keep_dims=True, name="y"),
             e03, i32([0, 1])))
    add(case("prod_empty_i64", lambda a, ax: raw.Prod(input=a, axis=ax, name="y"),
             np.zeros((0, 2), np.int64), i32([0])))
    add(case("logsoftmax_empty_vector", lambda a: raw.LogSoftmax(logits=a, name="y"), np.zeros((0,), np.float32)))
    add(case("logsoftmax_no_classes", lambda a: raw.LogSoftmax(logits=a, name="y"), np.zeros((2, 0), np.float32)))
    add(case("xent_no_classes", lambda f, l: raw.SoftmaxCrossEntropyWithLogits(features=f, labels=l, name="y"),
             np.zeros((2, 0), np.float32), np.zeros((2, 0), np.float32)))
    add(case("xent_vectors", lambda f, l: raw.SoftmaxCrossEntropyWithLogits(features=f, labels=l, name="y"),
             f32([1.0, 2.0]), f32([0.0, 1.0])))
    add(case("shape_bool", lambda a: raw.Shape(input=a, name="y"), np.array([[True], [False]])))
    add(case("expanddims_empty", lambda a, d: raw.ExpandDims(input=a, axis=d, name="y"), e03, i32(1)))
    add(case("reshape_scalar_shape", lambda a, s: raw.Reshape(tensor=a, shape=s, name="y"), x23, i32(6)))
    add(case("floormod_min_by_minus_one", lambda a, b: raw.FloorMod(x=a, y=b, name="y"),
             i32([-2147483648, 5]), i32([-1, -1])))
    add(case("pack_mismatch", lambda a, b: raw.Pack(values=[a, b], name="y"), x23, f32([1, 2, 3])))
    add(case("relugrad_mismatch", lambda g, f: raw.ReluGrad(gradients=g, features=f, name="y"), x23, f32([1, 2, 3])))
    add(case("bga_rank2_shape", lambda s0, s1: raw.BroadcastGradientArgs(s0=s0, s1=s1, name="y"),
             i32([[2, 3]]), i32([3])))
    # Beyond the acceptance list: common ops of TensorFlow programs
    nan = float("nan")
    for op, fn in [("maximum", raw.Maximum), ("minimum", raw.Minimum)]:
        add(case(f"{op}_f32", lambda a, b, fn=fn: fn(x=a, y=b, name="y"),
                 f32([1.0, -2.0, nan, 3.0, 0.0]), f32([0.5, -1.0, 1.0, nan, -0.0])))
        add(case(f"{op}_i64_bcast", lambda a, b, fn=fn: fn(x=a, y=b, name="y"),
                 i64([[1, 5], [-3, 2]]), i64([2, 0])))
    add(case("log", lambda a: raw.Log(x=a, name="y"), f32([1.0, 2.718281828, 0.0, -1.0, 1e-30])))
    add(case("tanh", lambda a: raw.Tanh(x=a, name="y"), f32([0.0, 0.5, -2.0, 20.0, -20.0])))
    add(case("tanh_f64", lambda a: raw.Tanh(x=a, name="y"), f64([0.1, -0.7])))
    add(case("sigmoid", lambda a: raw.Sigmoid(x=a, name="y"), f32([0.0, 0.5, -2.0, 20.0, -20.0, 90.0, -90.0])))
    add(case("tanhgrad", lambda y, d: raw.TanhGrad(y=y, dy=d, name="y"), f32([0.0, 0.5, -0.9]), f32([1.0, 2.0, -3.0])))
    add(case("sigmoidgrad", lambda y, d: raw.SigmoidGrad(y=y, dy=d, name="y"), f32([0.5, 0.25, 0.99]), f32([1.0, 2.0, -3.0])))
    add(case("softmax", lambda a: raw.Softmax(logits=a, name="y"), x23))
    add(case("softmax_large", lambda a: raw.Softmax(logits=a, name="y"), f32([[1000.0, 0.0, -1000.0]])))
    add(case("softmax_empty", lambda a: raw.Softmax(logits=a, name="y"), e03))
    add(case("size_i32", lambda a: raw.Size(input=a, name="y"), x234))
    add(case("size_i64_empty", lambda a: raw.Size(input=a, out_type=tf.int64, name="y"), e03))
    add(case("rank", lambda a: raw.Rank(input=a, name="y"), x234))
    add(case("rank_scalar", lambda a: raw.Rank(input=a, name="y"), i32(3)))
    add(case("transpose_2d", lambda a, p: raw.Transpose(x=a, perm=p, name="y"), x23, i32([1, 0])))
    add(case("transpose_3d", lambda a, p: raw.Transpose(x=a, perm=p, name="y"), x234, i64([2, 0, 1])))
    add(case("transpose_identity", lambda a, p: raw.Transpose(x=a, perm=p, name="y"), x234, i32([0, 1, 2])))
    add(case("transpose_empty", lambda a, p: raw.Transpose(x=a, perm=p, name="y"), e03, i32([1, 0])))
    add(case("transpose_scalar", lambda a, p: raw.Transpose(x=a, perm=p, name="y"), f32(2.0), np.zeros((0,), np.int32)))
    add(case("transpose_bad_perm", lambda a, p: raw.Transpose(x=a, perm=p, name="y"), x23, i32([0, 0])))
    add(case("stopgradient", lambda a: raw.StopGradient(input=a, name="y"), x23))
    add(case("oneslike_f32", lambda a: raw.OnesLike(x=a, name="y"), x23))
    add(case("oneslike_bool", lambda a: raw.OnesLike(x=a, name="y"), np.array([True, False])))
    add(case("oneslike_empty_i64", lambda a: raw.OnesLike(x=a, name="y"), np.zeros((0, 2), np.int64)))
    return c


def mlp_fixture():
    """The MLP's forward and backward GraphDef, variables as constants, with TF's values."""
    w1 = np.linspace(-0.5, 0.5, 32, dtype=np.float32).reshape(4, 8)
    b1 = np.linspace(-0.1, 0.1, 8, dtype=np.float32)
    w2 = np.linspace(0.4, -0.4, 24, dtype=np.float32).reshape(8, 3)
    b2 = np.array([0.05, -0.05, 0.0], np.float32)
    rng = np.random.RandomState(7)
    x = rng.uniform(-1, 1, (5, 4)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[rng.randint(0, 3, 5)]
    g = tf.Graph()
    with g.as_default():
        params = [tf.constant(v, name=n) for n, v in [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]]
        xp = tf1.placeholder(tf.float32, [None, 4], name="x")
        lp = tf1.placeholder(tf.float32, [None, 3], name="labels")
        hidden = tf.nn.relu(tf.nn.bias_add(tf.matmul(xp, params[0]), params[1]))
        logits = tf.matmul(hidden, params[2]) + params[3]
        xent = tf.nn.softmax_cross_entropy_with_logits(labels=lp, logits=logits)
        loss = tf.reduce_mean(xent, name="loss")
        grads = tf.gradients(loss, params)
        fetches = [loss] + grads
        with tf1.Session(graph=g) as sess:
            vals = sess.run(fetches, {xp: x, lp: labels})
        nodes = [node_json(n) for n in g.as_graph_def().node]
    consts = {n: tensor_json(v) for n, v in [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)]}
    for n in nodes:
        if n["op"] == "Const":
            const = next(o for o in g.get_operations() if o.name == n["name"])
            n["value"] = tensor_json(tf.get_static_value(const.outputs[0]))
    return {
        "nodes": nodes,
        "feeds": {"x:0": tensor_json(x), "labels:0": tensor_json(labels)},
        "fetches": [t.name for t in fetches],
        "values": [tensor_json(v) for v in vals],
        "params": consts,
    }


def main():
    tf1.disable_eager_execution()
    path = os.path.join(ROOT, "tests", "fixtures")
    os.makedirs(path, exist_ok=True)
    all_cases = cases()
    with open(os.path.join(path, "tf_ops.json"), "w") as f:
        json.dump({"cases": all_cases}, f, indent=None, separators=(",", ":"))
        f.write("\n")
    with open(os.path.join(path, "tf_mlp.json"), "w") as f:
        json.dump(mlp_fixture(), f, indent=None, separators=(",", ":"))
        f.write("\n")
    errors = sum(1 for c in all_cases if "error" in c or "outputs" not in c)
    print(f"{len(all_cases)} cases ({errors} refused by TensorFlow) -> tests/fixtures/")


if __name__ == "__main__":
    main()
