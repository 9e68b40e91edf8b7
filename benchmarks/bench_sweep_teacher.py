"""A sweep's wall time with the teacher's targets shared between its jobs, against the same
jobs each computing their own, timed in the same run.

The sweep is an ablation of distillation.alpha (the base, half and double) on the packaged
demo setting (SmolLM2-135M teacher, every third layer as the student) with the top-k + tail
teacher cache on, so the jobs train on identical targets either way: with --share-teacher the
jobs of one seed visit the same blocks and all but the first read them from teacher/, so the
teacher's forward runs once per seed instead of once per job. The losses must come out equal.

    python benchmarks/bench_sweep_teacher.py [--steps 12] [--seeds 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(out: Path, share: bool, steps: int, seeds: int) -> tuple[float, dict]:
    command = [sys.executable, "-m", "entrenar_tui.cli.main", "bench", "ablation"]
    command += ["--base-config", "demo", "--ablate", "alpha", "--seeds", str(seeds)]
    command += ["--steps", str(steps), "--sweep-dir", str(out), "--json"]
    command += ["--set", "distillation.teacher_cache.enabled=true"]
    command += ["--set", "training.eval_every=null", "--set", "training.eval_max_blocks=8"]
    command += ["--set", "output.checkpoint_every=null"]
    command.append("--share-teacher" if share else "--no-share-teacher")
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"sweep failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.splitlines()[-1])
    return elapsed, result


def training_seconds(result: dict) -> float:
    """The jobs' training time (steps only: no process start, model loading or evaluations)."""
    return sum(sum(row["values"]["wall_s"]) for row in result["rows"])


def losses(result: dict) -> dict[str, list[float]]:
    return {row["label"]: row["values"]["final_loss"] for row in result["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="keep the sweeps here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    # first without sharing, so the GGUF teacher's one-time dequantisation is not counted for it
    alone_s, alone = sweep(root / "alone", False, args.steps, args.seeds)
    shared_s, shared = sweep(root / "shared", True, args.steps, args.seeds)
    jobs = alone["jobs"]
    print(f"{jobs} jobs ({len(alone['rows'])} settings x {args.seeds} seeds, {args.steps} steps)")
    print(f"each job computes its teacher targets: {alone_s:7.1f} s")
    print(f"targets shared through teacher/:       {shared_s:7.1f} s")
    print(f"ratio shared / alone: {shared_s / alone_s:.2f}x")
    alone_train, shared_train = training_seconds(alone), training_seconds(shared)
    print(
        f"training steps only: {alone_train:.1f} s vs {shared_train:.1f} s"
        f" ({shared_train / alone_train:.2f}x; the rest is start-up, loading and evaluation)"
    )
    same = losses(alone) == losses(shared)
    print(f"final losses identical: {same}")
    if not same:
        sys.exit(f"losses differ: {losses(alone)} vs {losses(shared)}")


if __name__ == "__main__":
    main()
