"""Building a sweep from a command's options and running it to the end.

`temperature_spec`, `strategy_spec` and `ablation_spec` turn what a user typed into a
SweepSpec; `run_sweep` writes (or continues) the sweep directory, skips what is finished,
runs the rest through an executor and returns every job's result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..distill.config import DistillConfig, config_from_data, load_config
from ..errors import InvalidInputError
from .executor import LocalExecutor
from .overlays import ablation_variants, strategy_variants, temperature_variants
from .spec import SweepSpec, seed_list
from .sweepdir import SweepDir, job_result

Event = Callable[[dict], None]


@dataclass
class BaseRef:
    """Where a sweep's base config comes from: a config file (or packaged example), or the
    original design's `--teacher/--student` (the starter config with those models)."""

    config: str | Path | None = None
    teacher: str | None = None
    student: str | None = None

    def load(self, overrides: list[str]) -> DistillConfig:
        import yaml

        from ..distill.config import load_yaml, resolve_config_path
        from ..distill.starter import starter_config

        if self.config is None and self.teacher is None:
            raise InvalidInputError(
                "give --config F, or --teacher (and --student) to sweep the starter config",
                "try: --config demo",
            )
        if self.config is not None:
            data = load_yaml(resolve_config_path(self.config))
        else:
            data = yaml.safe_load(starter_config(self.teacher))
        if self.teacher is not None:
            data.setdefault("teacher", {})["model_id"] = self.teacher
        if self.student is not None:
            data["student"] = {**(data.get("student") or {}), "model_id": self.student}
            data["student"].pop("init_from_teacher", None)
        elif self.config is None:
            data["student"]["init_from_teacher"]["layers"] = _every_third(self.teacher)
        return config_from_data(data, overrides)


def _every_third(teacher: str) -> list[int]:
    from ..models import Model

    layers = Model.open(teacher).arch.layers or 4
    return list(range(0, layers, 3))


def _base(ref, overrides: list[str]) -> tuple[DistillConfig, dict]:
    config = ref.load(overrides) if isinstance(ref, BaseRef) else load_config(ref, overrides)
    return config, config.model_dump(mode="json")


def temperature_spec(
    config_ref, overrides: list[str], values: list[float], seeds: int, baseline: float | None
) -> SweepSpec:
    """A temperature axis; the baseline (default: the lowest value) is what the others are
    tested against, as a sweep that asks "does a higher T help?" needs."""
    config, base = _base(config_ref, overrides)
    variants = temperature_variants(values)
    reference = baseline if baseline is not None else values[0]
    if reference not in values:
        variants = temperature_variants([reference]) + variants
    return SweepSpec(
        "temperature", base, variants, seed_list(config, seeds), baseline=f"T={reference:g}"
    )


def strategy_spec(config_ref, overrides: list[str], names: list[str], seeds: int) -> SweepSpec:
    config, base = _base(config_ref, overrides)
    variants, notes = strategy_variants(names, config)
    return SweepSpec("compare", base, variants, seed_list(config, seeds), notes=notes)


def ablation_spec(
    config_ref, overrides: list[str], factors: list[str], values: dict, seeds: int
) -> SweepSpec:
    config, base = _base(config_ref, overrides)
    variants, notes = ablation_variants(config, factors, values)
    return SweepSpec(
        "ablation", base, variants, seed_list(config, seeds), baseline="base", notes=notes
    )


@dataclass
class SweepOutcome:
    path: Path
    spec: SweepSpec
    results: dict[str, dict]  # key -> the latest results.jsonl line
    ran: int  # jobs run (or retried) by this call
    skipped: int  # jobs already finished before it

    def to_dict(self) -> dict:
        return {
            "sweep_dir": str(self.path),
            "ran": self.ran,
            "skipped": self.skipped,
            "jobs": len(self.spec.jobs()),
            "finished": sum(r["status"] == "finished" for r in self.results.values()),
            "failed": sum(r["status"] == "failed" for r in self.results.values()),
        }


def run_sweep(
    spec: SweepSpec,
    sweep_dir: str | Path,
    *,
    executor: LocalExecutor | None = None,
    emit: Event = lambda event: None,
) -> SweepOutcome:
    """Run every job of `spec` that has no finished result in `sweep_dir` yet."""
    spec.check()
    sweep = SweepDir(Path(sweep_dir))
    sweep.write_spec(spec)
    jobs = spec.jobs()
    done = {key for key, r in sweep.results().items() if r.get("status") == "finished"}
    todo = []
    for job in jobs:
        if job.key in done:
            continue
        run_dir = sweep.job_dir(job)
        if (run_dir / "status.json").exists() and _finished(run_dir):  # ended, not recorded
            sweep.append_result(job_result(job, run_dir, attempts=1))
            done.add(job.key)
            continue
        todo.append(job)
    emit(
        {
            "event": "sweep_start",
            "sweep_dir": str(sweep.path),
            "jobs": len(jobs),
            "skipped": len(jobs) - len(todo),
        }
    )
    if todo:
        (executor or LocalExecutor()).run(sweep, spec, todo, emit)
    keys = {job.key for job in jobs}
    results = {key: r for key, r in sweep.results().items() if key in keys}
    return SweepOutcome(sweep.path, spec, results, len(todo), len(jobs) - len(todo))


def _finished(run_dir: Path) -> bool:
    from ..runs.follow import read_run

    return read_run(run_dir).state == "finished"


def profile_spec(config_ref, overrides: list[str]) -> SweepSpec:
    """One job (the config as given, at its own seed): what `bench profile` trains."""
    config, base = _base(config_ref, overrides)
    return SweepSpec("profile", base, [("profile", {})], [config.seed])
