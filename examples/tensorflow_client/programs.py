"""TensorFlow 1.x-style graph programs, written for a stock TensorFlow 2.21 client
(`tf.compat.v1`, graph mode), that run unchanged against a Magpie cluster or against
TensorFlow's own servers.

Every program takes the cluster (job name -> list of "host:port", the shape
ps:1 + worker:2) and returns a dict of JSON values: fetched tensors as nested lists, or,
for a step that fails, {"error": <tf.errors class name>, "message": <text>}.
`compare.py` runs them against both and prints the results side by side; each can also
be run on its own:

    python programs.py control_dependencies --cluster cluster.json
"""

import json
import sys

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
v1.disable_eager_execution()


def target(cluster, job="worker", task=0):
    return "grpc://" + cluster[job][task]


def value(x):
    """A fetched value as JSON."""
    return np.asarray(x).tolist()


def error(e):
    return {"error": type(e).__name__, "message": e.message}


def control_dependencies(cluster):
    """The seed's first example: ops created under control_dependencies([a, b]) wait for
    a and b; then the graph grows (ExtendSession) and runs again."""
    g = tf.Graph()
    with g.as_default():
        a = tf.constant(1.0, name="a")
        b = tf.add(a, 2.0, name="b")
        with tf.control_dependencies([a, b]):
            x = tf.constant(3.0, name="x")
            y = tf.constant(4.0, name="y")
        z = tf.add(x, y, name="z")
        with v1.Session(target(cluster), graph=g) as sess:
            out = {"z": value(sess.run(z)), "x_y_b": value(sess.run([x, y, b]))}
            w = tf.multiply(z, b, name="w")  # the graph grows: ExtendSession
            out["w"] = value(sess.run(w))
            out["w_z_again"] = value(sess.run([w, z]))
    return out


def parameter_server(cluster):
    """The seed's second example: variables on /job:ps/task:0, computation on the
    workers, values kept on the ps task across steps."""
    g = tf.Graph()
    with g.as_default():
        with tf.device("/job:ps/task:0"):
            w = v1.Variable([[1.0, 2.0], [3.0, 4.0]], name="w")
            b = v1.Variable([0.5, -0.5], name="b")
        with tf.device("/job:worker/task:0"):
            x = v1.placeholder(tf.float32, [None, 2], name="x")
            y = tf.add(tf.matmul(x, w), b, name="y")
        with tf.device("/job:worker/task:1"):
            step = b.assign_add([1.0, 1.0])
        init = v1.global_variables_initializer()
        feed = {x: [[1.0, 1.0], [2.0, 0.0]]}
        with v1.Session(target(cluster), graph=g) as sess:
            sess.run(init)
            out = {"y0": value(sess.run(y, feed))}
            sess.run(step)
            sess.run(step)
            out["y2"] = value(sess.run(y, feed))
            out["b"] = value(sess.run(b))
    return out


def remote_session(cluster):
    """The seed's third example: a session on /job:worker/task:1 (its master) evaluating
    c = a * 3 with a = 1.0 (3.0; the book printed 9.0) and b * 3."""
    g = tf.Graph()
    with g.as_default():
        a = tf.constant(1.0, name="a")
        b = tf.add(a, 2.0, name="b")
        c = tf.multiply(a, 3.0, name="c")
        d = tf.multiply(b, 3.0, name="d")
        with v1.Session(target(cluster, "worker", 1), graph=g) as sess:
            return {"c": value(sess.run(c)), "d_c": value(sess.run([d, c]))}


def list_devices(cluster):
    """sess.list_devices() before any run (CreateSession with an empty graph)."""
    with tf.Graph().as_default():
        with v1.Session(target(cluster)) as sess:
            devices = sess.list_devices()
    return {
        "devices": sorted([d.name, d.device_type] for d in devices),
        "incarnations_nonzero": all(d.incarnation != 0 for d in devices),
    }


def make_callable(cluster):
    """Session.make_callable with a feed list, called several times."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None], name="x")
        y = tf.add(tf.multiply(x, 2.0), 1.0, name="y")
        s = tf.negative(y, name="s")
        with v1.Session(target(cluster), graph=g) as sess:
            f = sess.make_callable([y, s], feed_list=[x])
            first = f(np.array([1.0, 2.0, 3.0], np.float32))
            second = f(np.array([-4.0], np.float32))
            g2 = sess.make_callable(s, feed_list=[x])
            return {
                "first": [value(t) for t in first],
                "second": [value(t) for t in second],
                "negated": value(g2(np.arange(5, dtype=np.float32))),
            }


def dtypes_and_shapes(cluster):
    """Feeds and fetches of every dtype Magpie holds, of several ranks, including an
    empty tensor; a constant given by one repeated value."""
    g = tf.Graph()
    with g.as_default():
        f32 = v1.placeholder(tf.float32, [None, 3], name="f32")
        f64 = v1.placeholder(tf.float64, [2], name="f64")
        i32 = v1.placeholder(tf.int32, [], name="i32")
        i64 = v1.placeholder(tf.int64, [None], name="i64")
        bl = v1.placeholder(tf.bool, [3], name="bl")
        sevens = tf.constant(7.0, shape=[5], name="sevens")
        outs = [
            tf.identity(f32, name="f32_out"),
            tf.multiply(f64, 2.0, name="f64_out"),
            tf.add(i32, 1, name="i32_out"),
            tf.identity(i64, name="i64_out"),
            tf.identity(bl, name="bl_out"),
            sevens,
        ]
        feed = {
            f32: np.arange(6, dtype=np.float32).reshape(2, 3),
            f64: np.array([1.5, -2.25]),
            i32: 41,
            i64: np.array([], np.int64),
            bl: np.array([True, False, True]),
        }
        with v1.Session(target(cluster), graph=g) as sess:
            got = sess.run(outs, feed)
    return {
        "values": [value(t) for t in got],
        "dtypes": [str(np.asarray(t).dtype) for t in got],
        "shapes": [list(np.shape(t)) for t in got],
    }


def unknown_op(cluster):
    """An op Magpie lacks: TensorFlow computes it; Magpie refuses the graph with
    UnimplementedError naming op and node."""
    g = tf.Graph()
    with g.as_default():
        m = tf.constant([[1.0, 2.0], [3.0, 4.0]], name="m")
        det = tf.linalg.det(m, name="the_det")
        with v1.Session(target(cluster), graph=g) as sess:
            try:
                return {"det": value(sess.run(det))}
            except tf.errors.OpError as e:
                return error(e)


def bad_feeds(cluster):
    """Mistakes the client cannot catch: a placeholder left unfed, and a MatMul of fed
    operands whose shapes do not fit; each is InvalidArgumentError, and the session
    still serves afterwards."""
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [2], name="unfed")
        y = tf.multiply(x, 2.0, name="y")
        a = v1.placeholder(tf.float32, [None, None], name="a")
        b = v1.placeholder(tf.float32, [None, None], name="b")
        mm = tf.matmul(a, b, name="mm")
        ok = tf.add(a, 1.0, name="ok")
        out = {}
        with v1.Session(target(cluster), graph=g) as sess:
            try:
                out["unfed"] = value(sess.run(y))
            except tf.errors.OpError as e:
                out["unfed"] = error(e)
            try:
                out["matmul"] = value(sess.run(mm, {a: np.ones((2, 3)), b: np.ones((2, 3))}))
            except tf.errors.OpError as e:
                out["matmul"] = error(e)
            out["after"] = value(sess.run(ok, {a: [[1.0, 2.0]]}))
    return out


def reset(cluster):
    """Session.reset(target) clears the variables on every task: a new session finds the
    variable uninitialized, and initializes it afresh."""
    g = tf.Graph()
    with g.as_default():
        with tf.device("/job:ps/task:0"):
            v = v1.Variable(1.0, name="v")
        bump = v.assign_add(10.0)
        init = v.initializer
        out = {}
        with v1.Session(target(cluster), graph=g) as sess:
            sess.run(init)
            out["bumped"] = value(sess.run(bump))
        v1.Session.reset(target(cluster))
        with v1.Session(target(cluster), graph=g) as sess:
            try:
                out["after_reset"] = value(sess.run(v.read_value()))
            except tf.errors.OpError as e:
                out["after_reset"] = {"error": type(e).__name__}
            sess.run(init)
            out["reinitialized"] = value(sess.run(v.read_value()))
    return out


# --- training ------------------------------------------------------------------------

def _data(seed, n, d_in, d_out):
    r = np.random.RandomState(seed)
    x = r.normal(size=(n, d_in)).astype(np.float32)
    labels = r.randint(0, d_out, size=n)
    return x, np.eye(d_out, dtype=np.float32)[labels], r


def _optimizer(name, lr):
    if name == "gd":
        return v1.train.GradientDescentOptimizer(lr)
    if name == "momentum":
        return v1.train.MomentumOptimizer(lr, momentum=0.9)
    if name == "adam":
        return v1.train.AdamOptimizer(lr)
    raise ValueError(name)


def _train(cluster, build, optimizer, resource, steps=5):
    """Builds a model (variables on /job:ps/task:0, the forward pass on
    /job:worker/task:0, the backward pass and the updates on /job:worker/task:1), trains
    it for `steps` steps and returns the loss of every step and the final variables."""
    g = tf.Graph()
    with g.as_default():
        loss, variables, feed = build(resource)
        with tf.device("/job:worker/task:1"):
            train = optimizer.minimize(loss)
        init = v1.global_variables_initializer()
        out = {"loss": []}
        with v1.Session(target(cluster), graph=g) as sess:
            sess.run(init)
            for _ in range(steps):
                _, l = sess.run([train, loss], feed)
                out["loss"].append(float(l))
            out["variables"] = [value(t) for t in sess.run(variables)]
    return out


def _linear_regression(resource):
    r = np.random.RandomState(1)
    xs = r.normal(size=(16, 3)).astype(np.float32)
    ys = (xs @ np.array([[2.0], [-1.0], [0.5]], np.float32) + 0.3).astype(np.float32)
    with tf.device("/job:ps/task:0"):
        w = v1.Variable(np.zeros((3, 1), np.float32), name="w", use_resource=resource)
        b = v1.Variable(0.0, name="b", use_resource=resource)
    with tf.device("/job:worker/task:0"):
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        y = v1.placeholder(tf.float32, [None, 1], name="y")
        pred = tf.matmul(x, w) + b
        loss = tf.reduce_mean(tf.square(pred - y), name="loss")
    return loss, [w, b], {x: xs, y: ys}


def _mlp(resource):
    xs, labels, r = _data(2, 8, 4, 3)
    init = lambda *shape: (r.normal(size=shape) * 0.5).astype(np.float32)
    with tf.device("/job:ps/task:0"):
        w1 = v1.Variable(init(4, 5), name="w1", use_resource=resource)
        b1 = v1.Variable(np.zeros(5, np.float32), name="b1", use_resource=resource)
        w2 = v1.Variable(init(5, 3), name="w2", use_resource=resource)
        b2 = v1.Variable(np.zeros(3, np.float32), name="b2", use_resource=resource)
    with tf.device("/job:worker/task:0"):
        x = v1.placeholder(tf.float32, [None, 4], name="x")
        y = v1.placeholder(tf.float32, [None, 3], name="y")
        hidden = tf.nn.relu(tf.matmul(x, w1) + b1)
        logits = tf.matmul(hidden, w2) + b2
        loss = tf.reduce_mean(
            tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss"
        )
    return loss, [w1, b1, w2, b2], {x: xs, y: labels}


def linear_regression_gd(cluster):
    return _train(cluster, _linear_regression, _optimizer("gd", 0.1), resource=True)


def linear_regression_gd_ref(cluster):
    return _train(cluster, _linear_regression, _optimizer("gd", 0.1), resource=False)


def mlp_gd(cluster):
    return _train(cluster, _mlp, _optimizer("gd", 0.5), resource=True)


def mlp_momentum(cluster):
    return _train(cluster, _mlp, _optimizer("momentum", 0.1), resource=True)


def mlp_adam(cluster):
    return _train(cluster, _mlp, _optimizer("adam", 0.05), resource=True)


def mlp_gd_ref(cluster):
    return _train(cluster, _mlp, _optimizer("gd", 0.5), resource=False)


def mlp_momentum_ref(cluster):
    return _train(cluster, _mlp, _optimizer("momentum", 0.1), resource=False)


def mlp_adam_ref(cluster):
    return _train(cluster, _mlp, _optimizer("adam", 0.05), resource=False)


def soft_placement(cluster):
    """ConfigProto(allow_soft_placement=True): nodes pinned to a GPU the cluster lacks
    run on a device that can run them; without it, the step is InvalidArgumentError."""
    g = tf.Graph()
    with g.as_default():
        with tf.device("/job:worker/task:1/device:GPU:0"):
            a = tf.constant(2.0, name="on_a_missing_gpu")
            b = tf.multiply(a, 3.0, name="b")
        out = {}
        config = v1.ConfigProto(allow_soft_placement=True)
        with v1.Session(target(cluster), graph=g, config=config) as sess:
            out["soft"] = value(sess.run(b))
        with v1.Session(target(cluster), graph=g) as sess:
            try:
                out["strict"] = value(sess.run(b))
            except tf.errors.OpError as e:
                # The class only: TensorFlow's message names the colocation group.
                out["strict"] = {"error": type(e).__name__}
    return out


def partial_run(cluster):
    """sess.partial_run_setup / sess.partial_run: one step fed and fetched over several
    calls; a stateful op (assign_add) runs once whichever call needs it first; and the
    mistakes TensorFlow's master refuses (a feed fed twice, a fetch fetched twice, a feed
    or fetch not named at setup, a fetch that needs a feed not fed yet, a finished
    handle)."""
    g = tf.Graph()
    with g.as_default():
        a = v1.placeholder(tf.float32, [], name="a")
        b = v1.placeholder(tf.float32, [], name="b")
        c = v1.placeholder(tf.float32, [], name="c")
        d = v1.placeholder(tf.float32, [], name="d")
        v = v1.Variable(10.0, name="v")
        r1 = tf.add(a, b, name="r1")
        inc = v.assign_add(r1)
        r2 = tf.multiply(inc, c, name="r2")
        r3 = tf.multiply(d, 2.0, name="r3")
        out = {}

        def attempt(key, f):
            try:
                out[key] = value(f())
            except tf.errors.OpError as e:
                out[key] = error(e)

        with v1.Session(target(cluster), graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            h = sess.partial_run_setup([r1, inc, r2], [a, b, c])
            out["r1"] = value(sess.partial_run(h, r1, feed_dict={a: 1.0, b: 2.0}))
            attempt("fed_twice", lambda: sess.partial_run(h, inc, feed_dict={a: 5.0}))
            attempt("fetched_twice", lambda: sess.partial_run(h, r1))
            attempt("fetch_not_in_setup", lambda: sess.partial_run(h, r3, feed_dict={d: 1.0}))
            out["inc"] = value(sess.partial_run(h, inc))
            out["r2"] = value(sess.partial_run(h, r2, feed_dict={c: 4.0}))
            attempt("finished", lambda: sess.partial_run(h, r2, feed_dict={c: 4.0}))
            # assign_add ran once, although two calls needed its value.
            out["v"] = value(sess.run(v))

            h2 = sess.partial_run_setup([r1, r2], [a, b, c])
            attempt("needs_unfed", lambda: sess.partial_run(h2, r2, feed_dict={a: 1.0, b: 1.0}))
            # A refused call leaves the partial run as it was.
            out["after_refusal"] = value(sess.partial_run(h2, [r1, r2], feed_dict={a: 1.0, b: 1.0, c: 2.0}))
            out["v_after"] = value(sess.run(v))
            h3 = sess.partial_run_setup([r1], [a, b])
            attempt("feed_not_in_setup", lambda: sess.partial_run(h3, r1, feed_dict={a: 1.0, b: 1.0, c: 1.0}))
            out["r1_again"] = value(sess.partial_run(h3, r1, feed_dict={a: 2.0, b: 2.0}))
    return out


#: What tests/tf_client.rs runs (the client-facing protocol, no variables).
CLIENT = [
    "control_dependencies",
    "remote_session",
    "list_devices",
    "make_callable",
    "dtypes_and_shapes",
    "unknown_op",
    "bad_feeds",
]

#: What tests/tf_training.rs runs (variables and optimizers).
TRAINING = [
    "parameter_server",
    "reset",
    "linear_regression_gd",
    "linear_regression_gd_ref",
    "mlp_gd",
    "mlp_momentum",
    "mlp_adam",
    "mlp_gd_ref",
    "mlp_momentum_ref",
    "mlp_adam_ref",
]

#: What tests/tf_session_options.rs runs (partial runs, soft placement).
PARTIAL = ["partial_run", "soft_placement"]

PROGRAMS = {name: globals()[name] for name in CLIENT + TRAINING + PARTIAL}


def main(argv):
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("program", choices=sorted(PROGRAMS))
    p.add_argument("--cluster", required=True, help="cluster spec JSON file (job -> addresses)")
    args = p.parse_args(argv)
    with open(args.cluster) as f:
        cluster = json.load(f)
    print(json.dumps(PROGRAMS[args.program](cluster), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
