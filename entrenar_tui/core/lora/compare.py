"""`lora compare`: several fine-tuning methods side by side at the same settings.

Split from plan.py, which holds the shared pieces (method names, the estimate of one
candidate, relative speed, quality notes) and, in its docstring, the decisions both follow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import InvalidInputError
from ..sizes import format_bytes
from .plan import (
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
    rows = []
    for name, method in parsed:
        rank = method.rank or (DEFAULT_RANK if method.kind != "full" else None)
        cand = _Candidate(method.kind, rank, None if method.kind == "full" else "all-linear")
        targets = _targets(shape, cand.target_set)
        est = _estimate(handle, cand, targets, batch_size, sequence_length, gradient_checkpointing)
        rows.append(MethodRow(
            name, method.kind, rank, 2 * rank if rank else None, targets, est.total_bytes, est.breakdown,
            est.trainable_parameters, est.trainable_parameters / est.parameters,
            relative_speed(method.kind, est.parameters, est.trainable_parameters, gradient_checkpointing),
            quality_note(method.kind, rank, cand.target_set, cand.optimizer),
            None if budget is None else est.total_bytes <= budget,
        ))  # fmt: skip
    notes = [
        "full: bf16 mixed precision, fp32 master weights, AdamW; LoRA: bf16 base; QLoRA: NF4 double-quantised base; adapters on every linear layer of the blocks, alpha = 2 x rank",  # fmt: skip
        "speed: FLOPs per token against full fine-tuning without checkpointing; QLoRA x0.7 for dequantisation",  # fmt: skip
    ]
    if vram_bytes is not None:
        notes.append(f"fits: within {format_bytes(budget)} ({format_bytes(vram_bytes)} less {headroom:.0%} headroom)")  # fmt: skip
    return MethodComparison(str(handle.source.ref), batch_size, sequence_length, gradient_checkpointing, vram_bytes, budget, headroom, rows, notes)  # fmt: skip
