"""PyTorch's figures for the cases `vulkan --figures` times (BENCHMARKS.md, "Vulkan on a
real GPU"): MatMul f32 (TF32 off, then on), f16 and bf16 at 1024/4096/8192; add of 16M
floats; 100 dependent elementwise ops on 1024 floats (eager, and replayed as one CUDA
graph). Each case first runs for at least WARM_S seconds (at least 3 times) so the GPU's
clocks are up, as Magpie's side does; then 20 runs are timed with CUDA events, and the
median and the best are reported. Inputs seeded random in [-1, 1). One JSON object per
line on stdout."""

import json
import statistics
import time

import torch

WARM_S = 1.0


def times_ms(fn, reps=20, warm_s=WARM_S):
    """(median, best) milliseconds of `fn` over `reps` runs, after a timed warm-up."""
    start = time.monotonic()
    warm = 0
    while warm < 3 or time.monotonic() - start < warm_s:
        fn()
        torch.cuda.synchronize()
        warm += 1
    times = []
    for _ in range(reps):
        begin = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times), min(times)


def emit(**kw):
    print(json.dumps(kw), flush=True)


def main():
    dev = torch.device("cuda")
    emit(kind="device", name=torch.cuda.get_device_name(0), torch=torch.__version__,
         cuda=torch.version.cuda)
    g = torch.Generator(device=dev).manual_seed(1)

    def rand(*shape, dtype=torch.float32):
        return (torch.rand(*shape, generator=g, device=dev) * 2 - 1).to(dtype)

    for n in (1024, 4096, 8192):
        for label, dtype, tf32 in (("f32", torch.float32, False), ("tf32", torch.float32, True),
                                   ("f16", torch.float16, None), ("bf16", torch.bfloat16, None)):
            if tf32 is not None:
                torch.backends.cuda.matmul.allow_tf32 = tf32
            a, b = rand(n, n, dtype=dtype), rand(n, n, dtype=dtype)
            ms, best = times_ms(lambda: torch.matmul(a, b))
            # Correctness of the library's product, as our own kernels are checked.
            ref = a.double() @ b.double()
            err = ((torch.matmul(a, b).double() - ref).norm() / ref.norm()).item()
            emit(kind="time", op="matmul", precision=label, allow_tf32=bool(tf32), n=n,
                 step_s=ms / 1e3, best_step_s=best / 1e3,
                 tflops=round(2 * n ** 3 / (ms / 1e3) / 1e12, 2),
                 best_tflops=round(2 * n ** 3 / (best / 1e3) / 1e12, 2), rel_err=err)
    torch.backends.cuda.matmul.allow_tf32 = False

    n = 16 * 1024 * 1024
    x, y = rand(n), rand(n)
    out = torch.empty_like(x)
    ms, best = times_ms(lambda: torch.add(x, y, out=out))
    emit(kind="time", op="add", n=n, per_add_s=ms / 1e3, best_per_add_s=best / 1e3,
         tb_per_s=round(12 * n / (ms / 1e3) / 1e12, 3),
         best_tb_per_s=round(12 * n / (best / 1e3) / 1e12, 3))
    # A device copy: the bandwidth ceiling (bytes read + written).
    big = rand(512 * 1024 * 1024 // 4 * 4)
    dst = torch.empty_like(big)
    ms, best = times_ms(lambda: dst.copy_(big))
    emit(kind="time", op="copy", bytes=big.numel() * 4,
         tb_per_s=round(2 * big.numel() * 4 / (ms / 1e3) / 1e12, 3),
         best_tb_per_s=round(2 * big.numel() * 4 / (best / 1e3) / 1e12, 3))

    v = torch.ones(1024, device=dev)

    def chain():
        z = v
        for i in range(100):
            z = -z if i % 2 == 0 else z + z
        return z

    ms, best = times_ms(chain)
    emit(kind="chain", mode="eager", ops=100, us_per_op=round(ms * 1e3 / 100, 3),
         best_us_per_op=round(best * 1e3 / 100, 3))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            chain()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        chain()
    ms, best = times_ms(graph.replay)
    emit(kind="chain", mode="cuda_graph", ops=100, us_per_op=round(ms * 1e3 / 100, 3),
         best_us_per_op=round(best * 1e3 / 100, 3))


if __name__ == "__main__":
    main()
