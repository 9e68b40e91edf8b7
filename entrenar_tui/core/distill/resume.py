"""`distill run --resume`: what a resume may change, the checks that keep a run directory whole
(one process at a time, a finished run's final/ kept unless asked to train longer), and the
record of each resume in run.json.

A resume continues the same experiment, so only fields that do not change what the finished
student would be at a given step may change: how long to train and how often to log, evaluate
and checkpoint. Anything else is a new run."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InvalidInputError
from .config import DistillConfig, apply_overrides, parse_config
from .rundir import RunDir

RESUMABLE = (
    "training.max_steps",
    "training.epochs",
    "training.log_every",
    "training.eval_every",
    "output.checkpoint_every",
    "output.keep_checkpoints",
)


@dataclass
class ResumePlan:
    config: DistillConfig  # the stored config with the --set changes applied
    changes: dict[str, list]  # field path -> [before, after]
    checkpoint: Path | None  # the one training continues from; None: restart from step 0
    from_step: int

    def record(self) -> dict:
        return {"from_step": self.from_step, "changes": self.changes}


def _leaves(data: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = value
    return out


def config_changes(before: DistillConfig, after: DistillConfig) -> dict[str, list]:
    old, new = _leaves(before.model_dump(mode="json")), _leaves(after.model_dump(mode="json"))
    return {
        k: [old.get(k), new.get(k)]
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    }


def checkpoint_step(checkpoint: Path | None) -> int:
    return int(checkpoint.name.removeprefix("step-")) if checkpoint is not None else 0


def _refuse_live(run: RunDir) -> None:
    from ..runs.follow import read_run

    summary = read_run(run.path)
    launched_as_this_process = summary.pid == os.getpid()  # the app's launcher wrote launch.json
    if summary.state in ("running", "starting") and not launched_as_this_process:
        raise InvalidInputError(
            f"{run.path} is still running (pid {summary.pid} on {summary.host or 'this host'})",
            "stop it first (Ctrl-C, or t on the Runs screen); a run whose process died shows "
            "as stale and can be resumed",
        )


def _stored_config(run: RunDir, overrides: list[str]) -> tuple[DistillConfig, DistillConfig]:
    stored = run.read_config()
    if not isinstance(stored, dict):
        raise InvalidInputError(
            f"{run.path}/config.yaml is not a mapping", "fix the file or start a new run"
        )
    before, problems = parse_config(copy.deepcopy(stored))
    if problems:
        raise InvalidInputError(
            f"{run.path}/config.yaml no longer validates: "
            f"{problems[0].path}: {problems[0].message}",
            "fix the file or start a new run",
        )
    if not overrides:
        return before, before
    after, problems = parse_config(apply_overrides(copy.deepcopy(stored), overrides))
    if problems:
        first = problems[0]
        raise ConfigError(
            f"--set {first.path}: {first.message}",
            first.hint or f"on resume these fields can change: {', '.join(RESUMABLE)}",
        )
    return before, after


def _refuse_fixed(run: RunDir, changes: dict[str, list]) -> None:
    fixed = [k for k in changes if k not in RESUMABLE]
    if fixed:
        raise InvalidInputError(
            f"--resume cannot change {', '.join(fixed)}: the resumed run would no longer be "
            "the experiment its checkpoints belong to",
            f"on resume only {', '.join(RESUMABLE)} can change; to train with other settings "
            f"start a new run: entrenar distill run --config {run.path / 'config.yaml'} "
            "--set ... --output NEW_DIR",
        )


def _check_length(run: RunDir, config: DistillConfig, changes: dict, from_step: int) -> None:
    """A finished run resumes only to train longer; no run resumes to fewer steps than it has."""
    status = run.status()
    finished = status.get("state") == "finished" or (
        run.final.is_dir() and status.get("state") not in ("running", "stopped", "failed")
    )
    at = int(status.get("step") or 0) if finished else from_step
    max_steps = config.training.max_steps
    longer = "training.max_steps" in changes or "training.epochs" in changes
    resume_cmd = f"entrenar distill run --resume {run.path} --set training.max_steps=N"
    if finished and not longer:
        raise InvalidInputError(
            f"{run.path} already finished at step {at}; its student is in {run.final}",
            f"to train it longer: {resume_cmd} (N > {at}); to train again, start a new run",
        )
    if max_steps is not None and (max_steps < at or (finished and max_steps <= at)):
        raise InvalidInputError(
            f"{run.path} is already at step {at}; training.max_steps {max_steps} adds no steps",
            f"to train longer use a larger value: {resume_cmd} (N > {at})",
        )


def plan_resume(run: RunDir, overrides: list[str]) -> ResumePlan:
    """Check everything before anything in the run directory changes."""
    _refuse_live(run)
    before, after = _stored_config(run, overrides)
    changes = config_changes(before, after)
    _refuse_fixed(run, changes)
    checkpoint = run.latest_checkpoint()
    from_step = checkpoint_step(checkpoint)
    _check_length(run, after, changes, from_step)
    return ResumePlan(after, changes, checkpoint, from_step)


def resumed_config(run: RunDir, overrides: list[str]) -> DistillConfig:
    """The config a resume trains with, as ranks other than 0 read it (rank 0 checks)."""
    return _stored_config(run, overrides)[1]


def schedule_note(plan: ResumePlan) -> str | None:
    """A longer max_steps stretches a decaying schedule: say what the lr does at the resume."""
    from .trainer import lr_lambda

    old, new = plan.changes.get("training.max_steps", [None, None])
    training = plan.config.training
    if old is None or new is None or training.scheduler == "constant":
        return None
    before = lr_lambda(training.scheduler, training.warmup_steps, old)(plan.from_step)
    after = lr_lambda(training.scheduler, training.warmup_steps, new)(plan.from_step)
    return (
        f"training.max_steps {old} -> {new}: the {training.scheduler} schedule now decays over {new} "
        f"steps (lr factor at step {plan.from_step}: {before:.3f} -> {after:.3f})"
    )
