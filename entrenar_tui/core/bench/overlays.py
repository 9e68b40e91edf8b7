"""Named overlays: the distillation strategies, a temperature range, and one-factor ablations.

Each returns overlays for `SweepSpec.variants` plus notes on anything it filled in that the
base config lacked (they go into the sweep's methodology).
"""

from __future__ import annotations

import math
from typing import Any

from ..distill.config import DistillConfig
from ..errors import InvalidInputError
from ..models import Model
from .spec import get_path, resolve_axis

STRATEGIES = ("ce-only", "kd-only", "progressive", "attention", "combined")


def even_mapping(student_layers: int, teacher_layers: int) -> list[list[int]]:
    """Student block i against the last teacher block of its span (TinyBERT's uniform map)."""
    return [
        [index, math.ceil((index + 1) * teacher_layers / student_layers) - 1]
        for index in range(student_layers)
    ]


def layer_counts(config: DistillConfig) -> tuple[int, int]:
    """(student, teacher) transformer block counts, from the headers only."""
    teacher = Model.open(config.teacher.model_id).arch.layers
    source = config.student.init_from_teacher
    student = source.size if source else Model.open(config.student.model_id).arch.layers
    if not teacher or not student:
        raise InvalidInputError(
            "cannot tell how many layers the teacher and student have",
            "give distillation.progressive.layer_mapping in the base config",
        )
    return student, teacher


def strategy_overlay(name: str, base: DistillConfig) -> tuple[dict[str, Any], list[str]]:
    """The overlay that makes `base` train with strategy `name`, and notes on what was filled
    in (for the sweep's methodology)."""
    if name not in STRATEGIES:
        raise InvalidInputError(
            f"unknown strategy {name!r}", f"choose from {', '.join(STRATEGIES)}"
        )
    if name == "ce-only":
        return _off({"distillation.alpha": 0.0}), []
    if name == "kd-only":
        alpha = base.distillation.alpha or 0.7
        return _off({"distillation.alpha": alpha}), []
    overlay = {"distillation.alpha": base.distillation.alpha or 0.7}
    notes: list[str] = []
    mapping = [list(pair) for pair in base.distillation.progressive.layer_mapping]
    if not mapping:
        mapping = even_mapping(*layer_counts(base))
        notes.append(f"{name}: no layer mapping in the base config; used the even map {mapping}")
    if name in ("progressive", "combined"):
        overlay |= {
            "distillation.progressive.enabled": True,
            "distillation.progressive.layer_mapping": mapping,
        }
    else:
        overlay["distillation.progressive.enabled"] = False
    if name in ("attention", "combined"):
        overlay["distillation.attention.enabled"] = True
        if name == "attention":  # progressive is off, so its mapping cannot stand in
            own = [list(pair) for pair in base.distillation.attention.layer_mapping or []]
            overlay["distillation.attention.layer_mapping"] = own or mapping
    else:
        overlay["distillation.attention.enabled"] = False
    return overlay, notes


def _off(overlay: dict[str, Any]) -> dict[str, Any]:
    return overlay | {
        "distillation.progressive.enabled": False,
        "distillation.attention.enabled": False,
    }


def strategy_variants(names: list[str], base: DistillConfig) -> tuple[list, list[str]]:
    """Overlays for each strategy, with `ce-only` added first: every comparison needs it."""
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown:
        raise InvalidInputError(
            f"unknown strategy {unknown[0]!r}", f"choose from {', '.join(STRATEGIES)}"
        )
    ordered = ["ce-only", *[name for name in dict.fromkeys(names) if name != "ce-only"]]
    variants, notes = [], []
    for name in ordered:
        overlay, filled = strategy_overlay(name, base)
        variants.append((name, overlay))
        notes += filled
    return variants, notes


def parse_range(text: str, step: float) -> list[float]:
    """`1.0..8.0` with step 0.5 -> [1.0, 1.5, ..., 8.0] (both ends included)."""
    try:
        low_text, high_text = text.split("..")
        low, high = float(low_text), float(high_text)
    except ValueError:
        raise InvalidInputError(
            f"--range must look like 1.0..8.0, not {text!r}", "pass --range 1.0..8.0"
        ) from None
    if not (0 < low <= high) or step <= 0:
        raise InvalidInputError(
            f"--range {text} with --step {step} is empty or not positive",
            "temperatures are positive: pass --range 1.0..8.0 --step 0.5",
        )
    count = int(round((high - low) / step)) + 1
    if count > 200:
        raise InvalidInputError(f"{count} temperatures is too many", "raise --step")
    return [round(low + index * step, 10) for index in range(count)]


def temperature_variants(values: list[float]) -> list:
    return [(f"T={value:g}", {"distillation.temperature": value}) for value in values]


# ------------------------------------------------------------------------- ablation


def field_bounds(path: str) -> tuple[float | None, float | None, bool]:
    """(lower, upper, integer) of a numeric config field, from its pydantic constraints."""
    import annotated_types as at

    from .spec import field_info

    info = field_info(path)
    low = high = None
    for item in info.metadata:
        if isinstance(item, (at.Ge, at.Gt)):
            low = float(getattr(item, "ge", getattr(item, "gt", None)))
        if isinstance(item, (at.Le, at.Lt)):
            high = float(getattr(item, "le", getattr(item, "lt", None)))
    return low, high, info.annotation is int or "int" in str(info.annotation)


def _half_and_double(path: str, value: float) -> list[float]:
    low, high, integer = field_bounds(path)
    picks = []
    for candidate in (value / 2, value * 2):
        if integer:
            candidate = max(1, int(round(candidate)))
        if low is not None:
            candidate = max(candidate, low)
        if high is not None:
            candidate = min(candidate, high)
        if candidate != value and candidate not in picks:
            picks.append(candidate)
    return picks


def _flip(path: str, value: bool, base: DistillConfig) -> dict[str, Any]:
    """Turn a feature on or off, filling in what an enabled feature needs as strategies do."""
    overlay: dict[str, Any] = {path: not value}
    if not value and path in (
        "distillation.progressive.enabled",
        "distillation.attention.enabled",
    ):
        given = [list(pair) for pair in base.distillation.progressive.layer_mapping]
        mapping = given or even_mapping(*layer_counts(base))
        section = path.rsplit(".", 1)[0]
        if section.endswith("progressive") or not base.attention_mapping():
            overlay[f"{section}.layer_mapping"] = mapping
    return overlay


def ablation_variants(
    base: DistillConfig, factors: list[str], values: dict[str, list] | None = None
) -> tuple[list, list[str]]:
    """The base itself, then one factor changed at a time: booleans flipped, numbers at half
    and double (clipped to the field's bounds) unless `values` names them."""
    data = base.model_dump(mode="json")
    variants: list = [("base", {})]
    notes = []
    for factor in factors:
        path = resolve_axis(factor)
        current = get_path(data, path)
        if path in (values or {}):
            picks = values[path]
        elif isinstance(current, bool):
            overlay = _flip(path, current, base)
            variants.append((f"{path}={str(not current).lower()}", overlay))
            filled = [value for key, value in overlay.items() if key.endswith("layer_mapping")]
            if filled:
                notes.append(f"{path}: enabled with the layer mapping {filled[0]}")
            continue
        elif isinstance(current, (int, float)):
            picks = _half_and_double(path, current)
        else:
            raise InvalidInputError(
                f"cannot ablate {path} (value {current!r}): only booleans and numbers",
                f'give its values: --values "{factor}=a,b"',
            )
        variants += [(f"{path}={pick:g}", {path: pick}) for pick in picks]
    return variants, notes


def parse_values(items: list[str]) -> dict[str, list]:
    """`--values "temperature=1,4"` -> {"distillation.temperature": [1.0, 4.0]} (YAML scalars)."""
    import yaml

    values: dict[str, list] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not text.strip():
            raise InvalidInputError(
                f"--values {item!r} is not NAME=V1,V2", 'pass --values "temperature=1,4"'
            )
        try:
            picks = [yaml.safe_load(part) for part in text.split(",")]
        except yaml.YAMLError:
            raise InvalidInputError(f"--values {item!r}: unreadable value", "use numbers") from None
        values[resolve_axis(name.strip())] = picks
    return values
