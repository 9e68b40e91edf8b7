"""Our Q8_0/Q4_0 quantisation (entrenar_tui.core.convert.quants) vs gguf-py's, same arrays, same run.

Goal: ratio (gguf-py / ours) >= 2x on large float32 matrices, with byte-identical output
(asserted on every repetition). Runs alternate ours and gguf-py so both see the same machine
load; the table gives the best and the median of `--repeats`.

    python benchmarks/bench_quantize.py [--repeats 5] [--shapes 4096x4096,11008x4096]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import gguf
import numpy as np
import torch

from entrenar_tui.core.convert import quants


def timed(fn, arr: np.ndarray, qtype) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn(arr, qtype)
    return time.perf_counter() - start, out


def bench(shape: tuple[int, int], qtype, repeats: int) -> dict:
    arr = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    ours, theirs = [], []
    quants.quantize(arr[:64], qtype)  # first call imports torch: not part of the timing
    for _ in range(repeats):
        t_ours, a = timed(quants.quantize, arr, qtype)
        t_theirs, b = timed(gguf.quants.quantize, arr, qtype)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), (
            "bytes differ"
        )
        ours.append(t_ours)
        theirs.append(t_theirs)
    return {
        "shape": "x".join(map(str, shape)),
        "type": qtype.name,
        "gguf_best": min(theirs),
        "ours_best": min(ours),
        "gguf_median": statistics.median(theirs),
        "ours_median": statistics.median(ours),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", default="4096x4096,11008x4096")
    args = parser.parse_args()
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    print(f"cpus={os.cpu_count()} torch_threads={torch.get_num_threads()} repeats={args.repeats}")
    header = f"{'shape':>11} {'type':>5} | {'gguf-py best':>12} {'ours best':>10} {'ratio':>6} | {'gguf-py med':>11} {'ours med':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for shape in shapes:
        for qtype in (gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0):
            r = bench(shape, qtype, args.repeats)
            print(
                f"{r['shape']:>11} {r['type']:>5} | {r['gguf_best']:>11.3f}s {r['ours_best']:>9.3f}s "
                f"{r['gguf_best'] / r['ours_best']:>5.1f}x | {r['gguf_median']:>10.3f}s "
                f"{r['ours_median']:>8.3f}s {r['gguf_median'] / r['ours_median']:>5.1f}x"
            )
    print("all outputs byte-identical to gguf.quants.quantize")


if __name__ == "__main__":
    main()
