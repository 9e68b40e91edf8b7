"""`lora compare`: several fine-tuning methods side by side at the same settings.

The shared pieces (method names, the estimate of one candidate, relative speed, quality notes)
are in methods.py; plan.py's docstring lists the decisions both follow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import InvalidInputError
from ..sizes import format_bytes
from .methods import (
    DEFAULT_HEADROOM,
    DEFAULT_RANK,
    DEFAULT_SEQUENCE_LENGTH,
    _budget,
    _Candidate,
    _estimate,
    _open,
    _positive,
    _shape,
    _targets,
    candidate_settings,
    parse_method,
    quality_note,
    relative_speed,
)


@dataclass
class MethodRow:
    method: str
    kind: str
    rank: int | None
    alpha: int | None
    target_modules: list[str]
    memory_bytes: int
    breakdown: dict[str, int]
    trainable_parameters: int
    trainable_share: float
    relative_speed: float
    quality_note: str
    fits: bool | None


@dataclass
class MethodComparison:
    """Several methods at the same batch and sequence length, side by side."""

    model: str
    batch_size: int
    sequence_length: int
    gradient_checkpointing: bool
    vram_bytes: int | None
    budget_bytes: int | None
    headroom: float
    rows: list[MethodRow]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def compare_methods(
    model,
    methods: list[str],
    *,
    batch_size: int = 1,
    sequence_length: int = DEFAULT_SEQUENCE_LENGTH,
    vram: str | int | None = None,
    gradient_checkpointing: bool = True,
    headroom: float = DEFAULT_HEADROOM,
) -> MethodComparison:
    """Memory, trainable parameters, relative speed and a quality note per method, all at the
    same settings. LoRA and QLoRA target every linear layer; a method without a rank uses 16."""
    if isinstance(methods, str):
        methods = methods.split(",")
    methods = [m for m in methods if m.strip()]
    if not methods:
        raise InvalidInputError("no methods to compare", "pass --methods full,lora-16,qlora-4bit")
    parsed = [(m.strip(), parse_method(m)) for m in methods]
    _positive("batch_size", batch_size)
    _positive("sequence_length", sequence_length)
    vram_bytes, budget = _budget(vram, headroom) if vram is not None else (None, None)
    handle = _open(model)
    shape = _shape(handle)
    rows = [
        _row(
            handle, shape, name, method, batch_size, sequence_length, gradient_checkpointing, budget
        )
        for name, method in parsed
    ]
    notes = [
        "full: bf16 mixed precision, fp32 master weights, AdamW; LoRA: bf16 base; QLoRA: NF4 "
        "double-quantised base; adapters on every linear layer of the blocks, alpha = 2 x rank",
        "speed: FLOPs per token against full fine-tuning without checkpointing; QLoRA x0.7 for "
        "dequantisation",
    ]
    if vram_bytes is None:
        notes.append(
            "fits: - without --vram (nothing to fit into); pass --vram 24GB to mark which fit"
        )
    else:
        notes.append(
            f"fits: within {format_bytes(budget)} ({format_bytes(vram_bytes)} less "
            f"{headroom:.0%} headroom)"
        )
    return MethodComparison(
        str(handle.source.ref),
        batch_size,
        sequence_length,
        gradient_checkpointing,
        vram_bytes,
        budget,
        headroom,
        rows,
        notes,
    )


def _row(handle, shape, name, method, batch_size, sequence_length, checkpointing, budget):
    """One method's estimate at the shared settings."""
    rank = method.rank or (DEFAULT_RANK if method.kind != "full" else None)
    cand = _Candidate(method.kind, rank, None if method.kind == "full" else "all-linear")
    targets = _targets(shape, cand.target_set)
    settings = candidate_settings(
        cand, targets, batch_size, sequence_length, checkpointing, "cuda", "sdpa"
    )
    est = _estimate(handle, settings)
    trainable = est.trainable_parameters
    return MethodRow(
        method=name,
        kind=method.kind,
        rank=rank,
        alpha=2 * rank if rank else None,
        target_modules=targets,
        memory_bytes=est.total_bytes,
        breakdown=est.breakdown,
        trainable_parameters=trainable,
        trainable_share=trainable / est.parameters,
        relative_speed=relative_speed(method.kind, est.parameters, trainable, checkpointing),
        quality_note=quality_note(method.kind, rank, cand.target_set, cand.optimizer),
        fits=None if budget is None else est.total_bytes <= budget,
    )
