"""The sweep directory on disk: sweep.yaml, one run directory per job, results.jsonl.

Several workers (processes, machines on a shared filesystem) append to one results.jsonl: each
result is one line under 4 KiB written with a single O_APPEND write, which POSIX keeps whole;
readers skip a partial last line, and the latest line for a key wins.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import yaml

from ..errors import InvalidInputError
from ..fsutil import write_text_atomic
from ..runs.follow import read_metrics, read_run
from .spec import Job, SweepSpec

METRICS = (
    "final_loss",
    "eval_loss",
    "eval_ppl",
    "eval_top1_agreement",
    "tokens_per_s",
    "peak_memory_bytes",
    "wall_s",
)
LOWER_IS_BETTER = {
    "final_loss": True,
    "eval_loss": True,
    "eval_ppl": True,
    "eval_top1_agreement": False,
    "tokens_per_s": False,
    "peak_memory_bytes": True,
    "wall_s": True,
}


def default_sweep_dir(command: str, root: str | Path = "runs/sweeps") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{command}-{stamp}"


@dataclass
class SweepDir:
    path: Path

    @property
    def spec_path(self) -> Path:
        return self.path / "sweep.yaml"

    @property
    def results_path(self) -> Path:
        return self.path / "results.jsonl"

    def job_dir(self, job: Job) -> Path:
        return self.path / "jobs" / job.key

    # ---------------------------------------------------------------- the spec
    def write_spec(self, spec: SweepSpec) -> None:
        """Write sweep.yaml, or check that the one there describes the same sweep (a re-run
        continues it; a different base or job set would mix incomparable results)."""
        if self.spec_path.exists():
            existing = self.read_spec()
            same = (existing.base, existing.seeds, existing.share_teacher)
            if same != (spec.base, spec.seeds, spec.share_teacher):
                raise InvalidInputError(
                    f"{self.path} holds a different sweep (its base config, seeds or teacher"
                    " sharing differ)",
                    "give a new --sweep-dir, or the same command and config as before",
                )
            known = {label for label, _ in existing.variants}
            spec.variants = existing.variants + [v for v in spec.variants if v[0] not in known]
            spec.notes = list(dict.fromkeys(existing.notes + spec.notes))
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.spec_path, yaml.safe_dump(spec.to_dict(), sort_keys=False))

    def read_spec(self) -> SweepSpec:
        from ..distill.config import load_yaml

        if not self.spec_path.is_file():
            raise InvalidInputError(
                f"{self.path} is not a sweep directory (no sweep.yaml)",
                "pass a folder that `entrenar bench` wrote",
            )
        data = load_yaml(self.spec_path)
        try:
            return SweepSpec.from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InvalidInputError(
                f"{self.spec_path} is not a sweep spec", "rerun the sweep into a new --sweep-dir"
            ) from None

    # ---------------------------------------------------------------- results
    def append_result(self, result: dict) -> None:
        line = (json.dumps(result, sort_keys=True, allow_nan=False) + "\n").encode()
        self.path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.results_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(descriptor, line)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def results(self) -> dict[str, dict]:
        return read_results(self.results_path)


def read_results(path: str | Path) -> dict[str, dict]:
    """The latest result line per job key; partial or malformed lines are skipped."""
    latest: dict[str, dict] = {}
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return latest
    for line in raw.split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            latest[record["key"]] = record
    return latest


def _finite(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def collect_metrics(run_dir: str | Path) -> dict:
    """The result metrics of one job, read from its run directory with the run follower."""
    lines = read_metrics(run_dir)
    train = [line for line in lines if line.get("kind") == "train"]
    evals = [line for line in lines if line.get("kind") == "eval" and line.get("step")]
    last_train = train[-1] if train else {}
    last_eval = evals[-1] if evals else {}
    times = [_finite(line.get("time_s")) for line in train]
    tokens = _finite(last_train.get("tokens"))
    elapsed = _finite(last_train.get("time_s"))
    memory = [m for m in (_finite(line.get("memory_bytes")) for line in train) if m is not None]
    return {
        "final_loss": _finite(last_train.get("loss")),
        "eval_loss": _finite(last_eval.get("eval_loss")),
        "eval_ppl": _finite(last_eval.get("eval_ppl")),
        "eval_top1_agreement": _finite(last_eval.get("eval_top1_agreement")),
        "tokens_per_s": tokens / elapsed if tokens and elapsed else None,
        "peak_memory_bytes": max(memory) if memory else None,
        "wall_s": max((t for t in times if t is not None), default=None),
        "steps": int(last_train.get("step") or 0),
    }


def job_result(job: Job, run_dir: Path, attempts: int) -> dict:
    """The results.jsonl line of an ended job: finished with metrics, or failed with its error."""
    summary = read_run(run_dir)
    finished = summary.state == "finished"
    error = None
    if not finished:
        error = summary.error or {
            "message": f"the job ended {summary.state}",
            "hint": f"see {run_dir / 'console.log'}",
        }
    return {
        "key": job.key,
        "label": job.label,
        "overlay": job.overlay,
        "seed": job.seed,
        "status": "finished" if finished else "failed",
        "attempts": attempts,
        "error": error,
        "metrics": collect_metrics(run_dir),
        "run_dir": str(run_dir),
    }


@dataclass
class SweepSummary:
    """One line of the Sweeps screen: what a sweep is and how far it has got."""

    path: Path
    command: str
    jobs: int
    finished: int
    failed: int
    running: int

    def to_dict(self) -> dict:
        return {**self.__dict__, "path": str(self.path)}


SWEEP_ROOTS = ("runs/sweeps", "sweeps")


def list_sweeps(*roots: str | Path) -> list[SweepSummary]:
    """Sweep directories (a folder holding sweep.yaml) directly under each root, newest first;
    one that cannot be read is listed as `unreadable` rather than hidden."""
    found = []
    for root in roots or SWEEP_ROOTS:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in root.iterdir():
            if (path / "sweep.yaml").is_file():
                found.append(_summary(SweepDir(path)))
    return sorted(found, key=lambda s: _mtime(s.path), reverse=True)


def _mtime(path: Path) -> float:
    try:
        return max(p.stat().st_mtime for p in (path, path / "sweep.yaml"))
    except OSError:
        return 0.0


def _summary(sweep: SweepDir) -> SweepSummary:
    from ..errors import EntrenarError

    try:
        spec = sweep.read_spec()
    except EntrenarError:
        return SweepSummary(sweep.path, "unreadable", 0, 0, 0, 0)
    keys = {job.key for job in spec.jobs()}
    results = {key: r for key, r in sweep.results().items() if key in keys}
    running = sum(1 for key in keys - set(results) if read_run(sweep.path / "jobs" / key).alive)
    statuses = [r.get("status") for r in results.values()]
    return SweepSummary(
        sweep.path,
        spec.command,
        len(keys),
        statuses.count("finished"),
        statuses.count("failed"),
        running,
    )
