"""What a sweep is: a base config, overlays (axes, strategies, ablations) and seeds, as jobs.

An overlay is a flat {dotted.path: value} dict applied to the base config; a job is one overlay
at one seed, keyed by a short hash of both, so the same job always lands in the same folder and
a re-run finds what is already done. Every job's config is validated before anything starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..distill.config import DistillConfig, parse_config
from ..errors import ConfigError, InvalidInputError

SECTION_ORDER = ("distillation", "training")  # where a bare axis name is looked up first


@dataclass
class Job:
    key: str
    overlay: dict[str, Any]
    seed: int
    label: str  # what the job stands for in tables: "temperature=2.5", "kd-only"

    def to_dict(self) -> dict:
        return {"key": self.key, "overlay": self.overlay, "seed": self.seed, "label": self.label}


def job_key(overlay: dict[str, Any], seed: int) -> str:
    text = json.dumps({"overlay": overlay, "seed": seed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ------------------------------------------------------------------------- field paths


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += _leaf_paths(annotation, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


CONFIG_PATHS = _leaf_paths(DistillConfig)


def resolve_axis(name: str) -> str:
    """A config field by dotted path, or a bare name looked up in `distillation`, then
    `training`, then anywhere (`alpha` -> `distillation.alpha`)."""
    if name in CONFIG_PATHS:
        return name
    suffix = [p for p in CONFIG_PATHS if p.endswith(f".{name}")]
    for section in SECTION_ORDER:
        direct = f"{section}.{name}"
        if direct in suffix:
            return direct
    if len(suffix) == 1:
        return suffix[0]
    if suffix:
        raise InvalidInputError(
            f"axis {name!r} is ambiguous: it could be {', '.join(suffix)}",
            f"name it by its dotted path, e.g. {suffix[0]}",
        )
    import difflib

    near = difflib.get_close_matches(
        name, CONFIG_PATHS + [p.rsplit(".", 1)[-1] for p in CONFIG_PATHS], 1
    )
    hint = (
        f"did you mean {near[0]}?" if near else "use a dotted config path like distillation.alpha"
    )
    raise InvalidInputError(f"no config field is called {name!r}", hint)


def field_info(path: str):
    """The pydantic FieldInfo of a dotted config path."""
    model: Any = DistillConfig
    *parents, leaf = path.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    return model.model_fields[leaf]


def get_path(data: dict, path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def apply_overlay(base: dict, overlay: dict[str, Any]) -> dict:
    """A deep copy of `base` with each dotted path set (missing sections are created)."""
    data = copy.deepcopy(base)
    for path, value in overlay.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = copy.deepcopy(value)
    return data


# ------------------------------------------------------------------------- the sweep


@dataclass
class SweepSpec:
    command: str
    base: dict  # the resolved base config (as written to sweep.yaml)
    variants: list[tuple[str, dict[str, Any]]]  # (label, overlay), in table order
    seeds: list[int]
    baseline: str | None = None  # the label others are compared with
    metric: str = "eval_ppl"
    notes: list[str] = field(default_factory=list)
    share_teacher: bool = False  # jobs that need only the teacher's logits share its targets

    def jobs(self) -> list[Job]:
        return [
            Job(job_key(overlay, seed), overlay, seed, label)
            for label, overlay in self.variants
            for seed in self.seeds
        ]

    def job_config(self, job: Job, sweep_path: Path | None = None) -> dict:
        """The job's full config; with `share_teacher`, a job whose losses need only the
        teacher's logits reads and writes its targets in the sweep's teacher/ folder."""
        config = apply_overlay(self.base, {**job.overlay, "seed": job.seed})
        if self.share_teacher and sweep_path is not None and _logits_only(config):
            folder = str(Path(sweep_path).resolve() / "teacher")
            cache = {"enabled": True, "kind": "hidden", "dir": folder}
            config = apply_overlay(
                config, {f"distillation.teacher_cache.{k}": v for k, v in cache.items()}
            )
        return config

    def share_teacher_targets(self) -> None:
        """Let logit-only jobs share the teacher's targets, and say so in the methodology."""
        self.share_teacher = True
        self.notes.append(
            "teacher targets: jobs whose losses need only the teacher's logits keep the output"
            " head's input, computed once per teacher and data in teacher/ and shared by every"
            " temperature and alpha; the logits are recomputed from it exactly"
            " (--no-share-teacher: every job runs its own teacher)"
        )

    def check(self) -> None:
        """Every job's config must pass the schema before anything runs."""
        for job in self.jobs()[:: max(1, len(self.seeds))]:
            _, problems = parse_config(self.job_config(job))
            errors = [p for p in problems if p.severity == "error"]
            if errors:
                raise ConfigError(
                    f"{job.label}: {errors[0].path}: {errors[0].message}",
                    errors[0].hint or "fix the base config or the sweep's values",
                )

    def to_dict(self) -> dict:
        return {
            "command": self.command,
            "metric": self.metric,
            "baseline": self.baseline,
            "seeds": self.seeds,
            "variants": [{"label": label, "overlay": overlay} for label, overlay in self.variants],
            "notes": self.notes,
            "share_teacher": self.share_teacher,
            "base": self.base,
        }

    @classmethod
    def from_dict(cls, data: dict) -> SweepSpec:
        return cls(
            command=data["command"],
            base=data["base"],
            variants=[(v["label"], v["overlay"]) for v in data["variants"]],
            seeds=list(data["seeds"]),
            baseline=data.get("baseline"),
            metric=data.get("metric", "eval_ppl"),
            notes=list(data.get("notes") or []),
            share_teacher=bool(data.get("share_teacher", False)),
        )


def _logits_only(config: dict) -> bool:
    """True when no hidden-state or attention term is on (those need the teacher every step)."""
    distillation = config.get("distillation") or {}
    uses = [(distillation.get(name) or {}).get("enabled") for name in ("progressive", "attention")]
    return not any(uses) and (distillation.get("alpha", 0.7) or 0) > 0


def seed_list(base: DistillConfig, count: int) -> list[int]:
    if count < 1:
        raise InvalidInputError("--seeds must be at least 1", "pass --seeds 3")
    return [base.seed + index for index in range(count)]
