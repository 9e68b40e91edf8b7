"""Deterministic run directories for the snapshot tests: fixed metrics, times and an error."""

from __future__ import annotations

import json
import math
import os
import socket


def _write(path, text: str, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))


def _train_lines(steps: int) -> list[dict]:
    lines = []
    for step in range(1, steps + 1):
        kd = 6.0 * math.exp(-step / 25) + 1.5 + 0.25 * math.sin(step * 1.7)
        ce = 4.0 * math.exp(-step / 35) + 2.5 + 0.2 * math.cos(step * 1.3)
        lines.append(
            {
                "kind": "train",
                "step": step,
                "epoch": step / 120,
                "time_s": 2.5 * step,
                "tokens": 512 * step,
                "lr": 3e-4,
                "loss": 0.7 * kd + 0.3 * ce,
                "loss_kd": kd,
                "loss_ce": ce,
                "loss_hidden": 0.0,
                "loss_attention": 0.0,
                "tokens_per_s": 204.8,
                "memory_bytes": 2_900_000_000,
            }
        )
    return lines


def _eval(step: int, ppl: float, samples: list) -> dict:
    return {
        "kind": "eval",
        "step": step,
        "eval_loss": math.log(ppl),
        "eval_ppl": ppl,
        "eval_top1_agreement": 0.05 + step / 500,
        "teacher_eval_loss": math.log(36.79),
        "teacher_eval_ppl": 36.79,
        "samples": samples,
    }


def write_recorded_runs(root) -> None:
    """runs/demo-finished (100 steps, curves and evaluations) and runs/demo-failed (an error)."""
    host = socket.gethostname()
    finished = root / "runs" / "demo-finished"
    metrics = [_eval(0, 3_414_543.0, [])] + _train_lines(100)
    metrics.insert(51, _eval(50, 2_210.4, []))
    metrics.append(_eval(100, 641.36, [{"prompt": "def read(path):", "completion": " return"}]))
    status = {
        "state": "finished",
        "pid": 1,
        "host": host,
        "step": 100,
        "total_steps": 100,
        "started_at": "2026-12-01T10:00:00Z",
        "updated_at": "2026-12-01T10:05:00Z",
        "error": None,
    }
    _write(finished / "config.yaml", "seed: 0\n", 1_000_000)
    _write(finished / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics), 1_000_000)
    _write(finished / "events.log", "2026-12-01T10:05:00Z finished: 100 steps\n", 1_000_000)
    _write(finished / "status.json", json.dumps(status), 1_000_000)
    failed = root / "runs" / "demo-failed"
    error = {"message": "teacher smollm3-3b: no such model", "hint": "try smollm2-135m"}
    status = {**status, "state": "failed", "step": 0, "total_steps": 0, "error": error}
    _write(failed / "config.yaml", "seed: 0\n", 900_000)
    _write(failed / "events.log", "2026-12-01T09:00:00Z failed: no such model\n", 900_000)
    _write(failed / "status.json", json.dumps(status), 900_000)
