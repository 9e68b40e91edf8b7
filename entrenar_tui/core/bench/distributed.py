"""Sweeps over many machines: the jobs are Optuna trials in a shared storage, and any number of
workers (`entrenar bench worker`, or the sweep command's own) take them until none is left.

- A job is a trial whose fixed parameter `job` is the job key; enqueueing skips a key that is
  already waiting, running or complete, so enqueueing twice adds nothing.
- The storage's heartbeat (`RDBStorage(heartbeat_interval=...)`) marks a trial whose worker
  died as failed; `RetryHeartbeatStaleTrialCallback` puts it back in the queue, and the next
  worker resumes the job's run directory from its last checkpoint. (The dead worker's child
  stops itself at a checkpoint: it watches its parent, see STOP_WITH_PARENT.)
- A job that fails (the run ends failed) is re-queued once as attempt 2; a second failure is
  recorded in results.jsonl with its error.
- SQLite serves one host; PostgreSQL (`postgresql+psycopg://...`) many, because SQLite locks
  under concurrent writers. The sweep directory must be at the same path on every worker.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import EntrenarError, InvalidInputError
from ..runs.follow import read_run
from .executor import start_job, worker_environments
from .spec import Job, SweepSpec
from .sweepdir import SweepDir, job_result

Event = Callable[[dict], None]
SWEEP_DIR_ATTR = "entrenar_sweep_dir"
ATTEMPT_ATTR = "entrenar_attempt"
ACTIVE_STATES = ("WAITING", "RUNNING", "COMPLETE")


def open_study(url: str, name: str, heartbeat_s: int = 30, create: bool = False):
    """The study behind a sweep, on storage that retries the trials of dead workers."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_s,
            grace_period=3 * heartbeat_s,
            failed_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
            engine_kwargs={"pool_pre_ping": True},
        )
    except Exception as exc:  # a bad URL, a server that is down, a missing driver
        raise InvalidInputError(
            f"cannot open the Optuna storage {url}: {type(exc).__name__}: {exc}".splitlines()[0],
            "use sqlite:///sweeps.db on one host, postgresql+psycopg://USER@HOST/DB for many",
        ) from None
    if create:
        return optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
    try:
        return optuna.load_study(storage=storage, study_name=name)
    except KeyError:
        raise InvalidInputError(
            f"no study {name!r} in {url}",
            "start the sweep with --storage and --study first: it enqueues the jobs",
        ) from None


def enqueue_jobs(study, sweep: SweepDir, jobs: list[Job]) -> int:
    """Add a waiting trial per job not already waiting, running or complete; returns how many."""
    from optuna.trial import TrialState

    known = study.user_attrs.get(SWEEP_DIR_ATTR)
    target = str(sweep.path.resolve())
    if known not in (None, target):
        raise InvalidInputError(
            f"study {study.study_name!r} belongs to the sweep in {known}",
            "give each sweep its own --study name",
        )
    study.set_user_attr(SWEEP_DIR_ATTR, target)
    states = tuple(getattr(TrialState, name) for name in ACTIVE_STATES)
    queued = {
        t.system_attrs.get("fixed_params", t.params).get("job")
        for t in study.get_trials(deepcopy=False, states=states)
    }
    added = 0
    for job in jobs:
        if job.key not in queued:
            study.enqueue_trial({"job": job.key}, user_attrs={ATTEMPT_ATTR: 1})
            added += 1
    return added


@dataclass
class StudyWorker:
    """One worker loop: take a waiting trial, run its job to an end, record it; repeat until
    nothing waits and nothing runs (a running trial may still go stale and come back)."""

    study: object
    env: dict
    emit: Event
    poll_s: float = 1.0
    cwd: str | Path | None = None

    def run(self) -> int:
        import optuna
        from optuna.trial import TrialState

        done = 0
        while True:
            optuna.storages.fail_stale_trials(self.study)
            waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if waiting:
                self.study.optimize(self._objective, n_trials=1, catch=(JobFailed,))
                done += 1
                continue
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if not running:
                return done
            time.sleep(self.poll_s)

    def _objective(self, trial) -> float:
        import optuna

        if ATTEMPT_ATTR not in trial.user_attrs:  # not an enqueued job: another worker took
            raise optuna.TrialPruned()  # the last waiting trial first, and Optuna made a new one
        sweep = SweepDir(Path(self.study.user_attrs[SWEEP_DIR_ATTR]))
        spec = sweep.read_spec()
        jobs = {job.key: job for job in spec.jobs()}
        job = jobs[trial.suggest_categorical("job", list(jobs))]
        attempt = int(trial.user_attrs.get(ATTEMPT_ATTR, 1))
        try:
            run_dir = _run_one(sweep, spec, job, attempt, self.env, self.emit, self.cwd)
        except EntrenarError as exc:  # the run directory could not be started or resumed
            self.emit({"event": "note", "message": f"{job.label}: {exc.message}"})
            run_dir = sweep.job_dir(job)
        summary = read_run(run_dir)
        if summary.state == "finished":
            result = job_result(job, run_dir, attempt)
            sweep.append_result(result)
            self.emit({"event": "job_end", **result})
            value = result["metrics"].get(spec.metric)
            return float(value) if value is not None else float("nan")
        if attempt < 2:
            self.study.enqueue_trial({"job": job.key}, user_attrs={ATTEMPT_ATTR: attempt + 1})
        else:
            result = job_result(job, run_dir, attempt)
            sweep.append_result(result)
            self.emit({"event": "job_end", **result})
        raise JobFailed(f"{job.label} seed {job.seed} ended {summary.state}")


class JobFailed(Exception):
    """A job's run ended without finishing (its trial is marked failed)."""


def _run_one(sweep, spec, job, attempt, env, emit, cwd) -> Path:
    """Run one job to its end in this worker, first waiting out a run that a dead worker's
    child is still stopping (it checkpoints, then exits)."""
    run_dir = sweep.job_dir(job)
    deadline = time.monotonic() + 600
    while read_run(run_dir).alive and time.monotonic() < deadline:
        time.sleep(1.0)
    if read_run(run_dir).state == "finished":
        return run_dir
    launched = start_job(sweep, spec, job, env, cwd)
    emit(
        {
            "event": "job_start",
            "key": job.key,
            "label": job.label,
            "seed": job.seed,
            "attempt": attempt,
            "run_dir": str(run_dir),
        }
    )
    last_step = -1
    while launched.process.poll() is None:
        time.sleep(1.0)
        summary = read_run(run_dir)
        if summary.step != last_step:
            last_step = summary.step
            emit(
                {
                    "event": "job_progress",
                    "key": job.key,
                    "step": summary.step,
                    "total_steps": summary.total_steps,
                }
            )
    return run_dir


def run_workers(study, workers: int, emit: Event, cwd=None) -> int:
    """`workers` worker loops in threads of this process (each child is a process, so the
    threads only wait); returns how many trials they ran."""
    environments = worker_environments(max(1, workers))
    loops = [StudyWorker(study, env, emit, cwd=cwd) for env in environments]
    counts = [0] * len(loops)
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            counts[index] = loops[index].run()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(len(loops))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts)


@dataclass
class StudyExecutor:
    """The sweep command's executor with --storage: enqueue, then work the queue locally."""

    url: str
    study_name: str
    workers: int = 1
    heartbeat_s: int = 30

    def run(self, sweep: SweepDir, spec: SweepSpec, jobs: list[Job], emit: Event) -> None:
        study = open_study(self.url, self.study_name, self.heartbeat_s, create=True)
        added = enqueue_jobs(study, sweep, jobs)
        emit({"event": "enqueued", "study": self.study_name, "added": added})
        if self.workers > 0:
            run_workers(study, self.workers, emit)


def worker_main(url: str, study_name: str, workers: int, heartbeat_s: int, emit: Event) -> dict:
    """`entrenar bench worker`: take this study's jobs until none is left."""
    study = open_study(url, study_name, heartbeat_s)
    if SWEEP_DIR_ATTR not in study.user_attrs:
        raise InvalidInputError(
            f"study {study_name!r} has no sweep attached", "start it with `entrenar bench ...`"
        )
    emit({"event": "worker_start", "study": study_name, "pid": os.getpid()})
    ran = run_workers(study, workers, emit)
    return {"study": study_name, "trials": ran, "sweep_dir": study.user_attrs[SWEEP_DIR_ATTR]}
