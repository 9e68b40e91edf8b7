"""Estimate vs measurement: the memory estimator against real CPU training steps.

Each row trains a small model for two steps in a fresh process (`measure_training_step`:
resident-set high-water mark over the steps, minus the process before the model existed)
and compares it with `estimate_memory(..., device="cpu").step_bytes` (the estimate less the
runtime, which the measurement's baseline also leaves out). "total err"
compares the whole estimate, runtime included, with the process's peak resident set.

    .venv/bin/python benchmarks/bench_memory.py [--workers 2] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from entrenar_tui.core.memory import estimate_memory, measure_training_step
from entrenar_tui.core.models.arch import from_config
from entrenar_tui.core.sizes import format_bytes

ARCHES = {
    "llama-like": dict(
        model_type="llama",
        vocab_size=2000,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=512,
    ),
    "gpt2-like": dict(
        model_type="gpt2", vocab_size=2000, n_embd=256, n_layer=4, n_head=4, n_positions=512
    ),
}
METHODS = {"full": None, "lora r=8": 8, "lora r=64": 64}
SHAPES = [(2, 64), (4, 128), (8, 256)]


def run_row(arch: str, method: str, batch: int, seq: int, threads: int) -> dict:
    config, rank = ARCHES[arch], METHODS[method]
    settings = dict(batch_size=batch, sequence_length=seq, lora_rank=rank)
    measured = measure_training_step(config, threads=threads, **settings)
    estimate = estimate_memory(from_config(config), config=config, device="cpu", **settings)
    error = (estimate.step_bytes - measured.peak_bytes) / measured.peak_bytes
    whole = measured.peak_bytes + measured.baseline_bytes  # the process, runtime included
    row = dict(arch=arch, method=method, batch=batch, seq=seq, estimate=estimate.step_bytes)
    row |= dict(measured=measured.peak_bytes, error=error, phase=estimate.peak_phase)
    return row | dict(total_error=(estimate.total_bytes - whole) / whole)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="measurements run side by side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each measurement")
    parser.add_argument("--quick", action="store_true", help="the smallest shape only")
    parser.add_argument(
        "--plans-only", action="store_true", help="only the planner's methods, run for real"
    )
    args = parser.parse_args()
    if args.plans_only:
        return print_plan_rows()
    shapes = SHAPES[:1] if args.quick else SHAPES
    rows = [(a, m, b, s, args.threads) for a in ARCHES for m in METHODS for b, s in shapes]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(lambda row: run_row(*row), rows))
    print(
        f"{'arch':10} {'method':10} {'batch x seq':>11} {'estimate':>11} {'measured':>11} {'error':>8} {'total err':>9}  peak at"
    )
    for r in results:
        shape = f"{r['batch']} x {r['seq']}"
        print(
            f"{r['arch']:10} {r['method']:10} {shape:>11} {format_bytes(r['estimate']):>11} "
            f"{format_bytes(r['measured']):>11} {100 * r['error']:+7.2f}% {100 * r['total_error']:+8.2f}%  {r['phase']}"
        )
    worst = max(results, key=lambda r: abs(r["error"]))
    print(
        f"worst error: {100 * worst['error']:+.2f}% ({worst['arch']}, {worst['method']}, "
        f"{worst['batch']} x {worst['seq']}); {len(results)} rows in {time.perf_counter() - started:.0f} s"
    )
    worst_total = max(abs(r["total_error"]) for r in results)
    print(f"worst whole-process error (runtime included): {100 * worst_total:.2f}%")
    return print_plan_rows()


def print_plan_rows() -> int:
    """The planner's methods as `distill run` trains them (benchmarks/plan_memory.py), on CUDA
    when there is one (max_memory_allocated), else on CPU."""
    import torch
    from plan_memory import plan_rows

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"\nlora plan --write-config, then distill run ({device}):")
    rows = plan_rows(device)
    print(f"{'method':10} {'estimate':>11} {'measured':>11} {'error':>8}")
    for r in rows:
        print(
            f"{r['method']:10} {format_bytes(r['estimate_bytes']):>11} "
            f"{format_bytes(r['measured_bytes']):>11} {100 * r['error']:+7.2f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
