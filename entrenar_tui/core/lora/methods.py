"""What `lora plan` and `lora compare` share: method names, the candidates' estimate (one call
to the memory estimator), relative speed and quality notes. The decisions are listed in
plan.py's docstring."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError
from ..memory import TrainSettings, estimate_for_model
from ..memory.shape import model_shape
from ..sizes import parse_size

RANKS = (64, 32, 16, 8)
DEFAULT_RANK = 16  # what `lora` or `qlora-4bit` means in compare (distill.yaml's default too)
DEFAULT_EFFECTIVE_BATCH = 16
DEFAULT_SEQUENCE_LENGTH = 2048
DEFAULT_HEADROOM = 0.10
QLORA_SPEED = 0.7  # dequantising NF4 weights at every matmul (see the module docstring)
LORA_DROPOUT = 0.05
_METHOD = re.compile(r"^(full|lora|qlora)(-4bit|-8bit)?(?:-(\d+))?$")
_METHOD_HINT = (
    "use full, full-8bit (8-bit AdamW), lora, lora-RANK, qlora, qlora-RANK or qlora-4bit"
    " (e.g. lora-16)"
)


@dataclass(frozen=True)
class Method:
    """A parsed method name: its kind and, when given, its rank."""

    kind: str
    rank: int | None = None
    optimizer: str | None = None  # None: the planner chooses (full: AdamW, then 8-bit AdamW)


def parse_method(text: str) -> Method:
    """`full`, `full-8bit` (8-bit AdamW), `lora`, `lora-16`, `qlora`, `qlora-64`, `qlora-4bit`
    (a 4-bit base, default rank)."""
    match = _METHOD.match(str(text).strip().lower())
    if not match or (match[1] == "full" and (match[3] or match[2] == "-4bit")):
        raise InvalidInputError(f"unknown method {text!r}", _METHOD_HINT)
    if match[2] == "-8bit" and match[1] != "full":
        raise InvalidInputError(
            f"unknown method {text!r}: -8bit names full fine-tuning's 8-bit AdamW", _METHOD_HINT
        )
    if match[2] == "-8bit":
        return Method("full", None, "adamw8bit")
    if match[2] and match[1] != "qlora":
        raise InvalidInputError(f"unknown method {text!r}: only QLoRA is 4-bit", _METHOD_HINT)
    rank = int(match[3]) if match[3] else None
    if rank is not None and not 1 <= rank <= 4096:
        raise InvalidInputError(f"LoRA rank must be 1 to 4096, not {rank}", _METHOD_HINT)
    return Method(match[1], rank)


@dataclass(frozen=True)
class _Candidate:
    kind: str
    rank: int | None = None
    target_set: str | None = None  # "all-linear" or "attention"
    optimizer: str = "adamw"

    @property
    def label(self) -> str:
        if self.kind == "full":
            return "full" + (" (8-bit AdamW)" if self.optimizer == "adamw8bit" else "")
        return f"{self.kind} r={self.rank} {self.target_set}" + (
            "-only" if self.target_set == "attention" else ""
        )


def _open(model):
    from ..models.handle import Model

    return Model.open(model) if isinstance(model, str | Path) else model


def _shape(model):
    config = model.source.config if model.source.config and model.kind != "gguf" else None
    return model_shape(model.arch, config)


def _all_linear_names(shape) -> list[str]:
    """PEFT target names for every linear layer in the blocks: for each, the shortest name
    suffix that matches no linear outside that set (BERT's `dense` would catch its head)."""
    groups = shape.lora_targets(["all-linear"])
    wanted = {g.path for g in groups}
    names: list[str] = []
    for path in (g.path for g in groups):
        parts = path.split(".")
        for start in range(len(parts) - 1, -1, -1):
            name = ".".join(parts[start:])
            if all(g.path in wanted for g in shape.linear_groups if g.matches(name)):
                break
        if name not in names:
            names.append(name)
    return names


def _targets(shape, target_set: str | None) -> list[str]:
    if target_set is None:
        return []
    return _all_linear_names(shape) if target_set == "all-linear" else shape.default_lora_targets


def candidate_settings(
    cand: _Candidate, targets, batch: int, seq: int, ckpt: bool, device: str, attention: str
) -> TrainSettings:
    """A candidate as the settings the trainer runs (bf16 weights; fp32 masters for full)."""
    adapters = cand.kind != "full"
    return TrainSettings(
        batch_size=batch,
        sequence_length=seq,
        precision="bf16",
        optimizer=cand.optimizer,
        master_weights=None if adapters else True,
        gradient_checkpointing=ckpt,
        lora_rank=cand.rank if adapters else None,
        lora_targets=tuple(targets) if adapters else None,
        lora_dropout=LORA_DROPOUT if adapters else 0.0,
        quantize_base="nf4" if cand.kind == "qlora" else None,
        double_quant=True,
        attention=attention,
        device=device,
    )


def _estimate(model, settings: TrainSettings):
    return estimate_for_model(model, settings=settings)


def relative_speed(kind: str, parameters: int, trainable: int, checkpointing: bool) -> float:
    """Training tokens per second against full fine-tuning without checkpointing (6N FLOPs)."""
    n, a = parameters, trainable
    if kind == "full":
        flops = 6 * n + (2 * n if checkpointing else 0)
    else:
        flops = 4 * n + 6 * a + ((2 * n + 2 * a) if checkpointing else 0)
    return 6 * n / flops * (QLORA_SPEED if kind == "qlora" else 1.0)


def quality_note(kind: str, rank: int | None, target_set: str | None, optimizer: str) -> str:
    """What the literature says about this method's quality against full fine-tuning."""
    if kind == "full":
        if optimizer == "adamw8bit":
            return "full fine-tuning; 8-bit AdamW matched 32-bit AdamW (Dettmers et al. 2022)"
        return "reference: every weight trains"
    if kind == "qlora":
        note = "matches 16-bit LoRA with all-linear targets (Dettmers et al. 2023)"
    else:
        note = (
            "close to full fine-tuning on instruction tuning (Hu et al. 2021; Dettmers et al. 2023)"
        )
    if target_set == "attention":
        note = "attention-only targets trail all-linear ones (Dettmers et al. 2023)"
    if rank is not None and rank < 16:
        note += "; low rank may underfit knowledge-heavy tasks (Biderman et al. 2024)"
    return note


def _budget(vram, headroom: float) -> tuple[int, int]:
    vram_bytes = parse_size(vram)
    if vram_bytes <= 0:
        raise InvalidInputError("--vram must be more than 0 bytes", "pass --vram 16GB")
    if not 0 <= headroom < 1:
        raise InvalidInputError(
            f"headroom is a fraction of VRAM from 0 to below 1, not {headroom!r}",
            "pass --headroom 0.1 (10%)",
        )
    return vram_bytes, int(vram_bytes * (1 - headroom))


def _positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInputError(
            f"{name} must be a positive integer, not {value!r}",
            f"pass --{name.replace('_', '-')} 8",
        )
