#!/usr/bin/env python3
"""numpy's figures for the workloads of `benches/kernels.rs`, to run in the same session.

Prints, on one line: f32 matrix product GFLOP/s at 512, 1024 and 2048 (median of
repeated `a @ b`), then elementwise add of two 16M-float tensors in GiB/s (3 x 64 MiB
moved, median of 20). Run it with the machine's OpenBLAS tuning variables unset:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 scripts/numpy_baseline.py
"""
import time

import numpy as np

out = []
for n in [512, 1024, 2048]:
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    reps = max(5, int(4e9 / (2 * n**3)))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    ts.sort()
    out.append(f"{2 * n**3 / ts[len(ts) // 2] / 1e9:.0f}")
x = np.arange(16 << 20, dtype=np.float32)
y = x.copy()
ts = []
for _ in range(20):
    t = time.perf_counter()
    z = x + y
    ts.append(time.perf_counter() - t)
    del z
ts.sort()
out.append(f"{3 * 64 / 1024 / ts[10]:.1f}GiB/s")
print(" ".join(out))
