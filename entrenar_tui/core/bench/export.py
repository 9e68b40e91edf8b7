"""A sweep's results as CSV: one row per job, for spreadsheets and pandas."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..fsutil import write_text_atomic
from .report import load_sweep
from .sweepdir import METRICS


def results_csv(target: str | Path) -> str:
    _, spec, results = load_sweep(target)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["key", "setting", "seed", "status", "attempts", *METRICS, "overlay", "error"])
    for job in spec.jobs():
        record = results.get(job.key)
        if record is None:
            overlay = json.dumps(job.overlay, sort_keys=True)
            writer.writerow(
                [job.key, job.label, job.seed, "not run", 0, *[""] * len(METRICS), overlay, ""]
            )
            continue
        metrics = record.get("metrics") or {}
        error = (record.get("error") or {}).get("message", "")
        writer.writerow(
            [
                job.key,
                job.label,
                job.seed,
                record.get("status"),
                record.get("attempts"),
                *("" if metrics.get(m) is None else metrics[m] for m in METRICS),
                json.dumps(job.overlay, sort_keys=True),
                error,
            ]
        )
    return buffer.getvalue()


def write_csv(path: str | Path, target: str | Path) -> None:
    write_text_atomic(path, results_csv(target))
