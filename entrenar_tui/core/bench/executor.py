"""Running a sweep's jobs: each one `entrenar distill run` in its own run directory.

The local executor keeps `workers` children going (on CUDA, one GPU each through
CUDA_VISIBLE_DEVICES; on CPU, the cores split between them), follows their status files, and
retries a job that failed or was interrupted once, by resuming its own run directory from its
last checkpoint. Ctrl-C stops every child at a checkpoint; running the sweep again continues.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import EntrenarError
from ..fsutil import write_text_atomic
from ..runs.follow import read_run
from ..runs.launch import STOP_WITH_PARENT, LaunchedRun, launch_run, resume_run
from .spec import Job, SweepSpec
from .sweepdir import SweepDir, job_result

Event = Callable[[dict], None]
MAX_ATTEMPTS = 2  # the first try and one retry


def _gpu_ids() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [part for part in visible.split(",") if part.strip()]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(index) for index in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library: a CPU machine
        return []


def worker_environments(workers: int) -> list[dict[str, str]]:
    """One environment per worker slot: a GPU each where there are GPUs, else a share of the
    CPU cores (so N children do not each start a thread per core and thrash)."""
    gpus = _gpu_ids()
    tie = {STOP_WITH_PARENT: str(os.getpid())}  # a job stops when its worker dies
    if gpus:
        return [{**tie, "CUDA_VISIBLE_DEVICES": gpus[slot % len(gpus)]} for slot in range(workers)]
    if workers == 1:
        return [tie]
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [{**tie, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}] * workers


def start_job(sweep: SweepDir, spec: SweepSpec, job: Job, env: dict, cwd=None) -> LaunchedRun:
    """Start a job's `distill run`: resume its run directory if an earlier try got as far as
    starting (it has config.yaml), else a fresh run from the job's config."""
    run_dir = sweep.job_dir(job)
    if (run_dir / "config.yaml").exists():
        return resume_run(run_dir, cwd=cwd, env=env)
    config_path = run_dir / "launch-config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        config_path, yaml.safe_dump(spec.job_config(job, sweep.path), sort_keys=False)
    )
    return launch_run(config_path, run_dir, cwd=cwd, env=env)


@dataclass
class _Active:
    job: Job
    launched: LaunchedRun
    attempts: int
    slot: int
    last_step: int = -1


@dataclass
class LocalExecutor:
    workers: int = 1
    poll_s: float = 0.5
    cwd: str | Path | None = None
    _active: dict[str, _Active] = field(default_factory=dict, init=False)

    def run(self, sweep: SweepDir, spec: SweepSpec, jobs: list[Job], emit: Event) -> None:
        """Run `jobs` to an end each; every ended job gets its line in results.jsonl."""
        self._sweep, self._spec, self._emit = sweep, spec, emit
        self._environments = worker_environments(max(1, self.workers))
        free = deque(range(len(self._environments)))
        pending = deque(jobs)
        try:
            while pending or self._active:
                while pending and free:
                    self._start_or_record(pending.popleft(), free)
                time.sleep(self.poll_s)
                for key in list(self._active):
                    if self._poll(self._active[key]):
                        free.append(self._active.pop(key).slot)
        except KeyboardInterrupt:
            self.stop_all()
            raise

    def _start_or_record(self, job: Job, free: deque) -> None:
        """Start a job; one whose run directory cannot be started is recorded failed, and the
        sweep goes on with the others."""
        slot = free.popleft()
        try:
            self._start(job, 1, slot)
        except EntrenarError as exc:
            free.append(slot)
            result = job_result(job, self._sweep.job_dir(job), attempts=1)
            result |= {"status": "failed", "error": exc.to_dict()}
            self._sweep.append_result(result)
            self._emit({"event": "job_end", **result})

    def _start(self, job: Job, attempts: int, slot: int) -> None:
        launched = start_job(self._sweep, self._spec, job, self._environments[slot], self.cwd)
        run_dir = launched.run_dir
        self._active[job.key] = _Active(job, launched, attempts, slot)
        self._emit(
            {
                "event": "job_start",
                "key": job.key,
                "label": job.label,
                "seed": job.seed,
                "attempt": attempts,
                "run_dir": str(run_dir),
            }
        )

    def _poll(self, active: _Active) -> bool:
        """Report a running job's progress; end, or retry once, a job whose child exited."""
        process = active.launched.process
        if process is not None and process.poll() is None:
            summary = read_run(active.launched.run_dir)
            if summary.step != active.last_step:
                active.last_step = summary.step
                self._emit(
                    {
                        "event": "job_progress",
                        "key": active.job.key,
                        "step": summary.step,
                        "total_steps": summary.total_steps,
                    }
                )
            return False
        run_dir = active.launched.run_dir
        if read_run(run_dir).state != "finished" and active.attempts < MAX_ATTEMPTS:
            self._start(active.job, active.attempts + 1, active.slot)
            return False
        result = job_result(active.job, run_dir, active.attempts)
        self._sweep.append_result(result)
        self._emit({"event": "job_end", **result})
        return True

    def stop_all(self, grace_s: float = 120.0) -> None:
        """SIGTERM every child (each checkpoints and stops), then wait for them."""
        for active in self._active.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(active.launched.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for active in self._active.values():
            process = active.launched.process
            if process is None:
                continue
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
