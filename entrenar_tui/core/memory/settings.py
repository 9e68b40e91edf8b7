"""The one object that says how a model trains: `inspect memory`, `lora plan`, `distill
estimate` and the trainer all take a `TrainSettings`, so a setting cannot exist in one and not
the others. The estimator counts what it says; `distill.yaml` maps onto it
(`DistillConfig.student_settings`) and the trainer builds from that mapping."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ..errors import InvalidInputError
from .options import validate_options

QUANTIZATIONS = ("nf4", "int8")


@dataclass(frozen=True)
class TrainSettings:
    """How one training step runs.

    `precision` is the dtype the weights are stored and computed in. `master_weights` (None:
    the default) keeps fp32 copies of 16-bit trained weights for the optimizer; it is on by
    default for 16-bit full fine-tuning and meaningless for LoRA (adapters are fp32 anyway).
    `quantize_base` stores the frozen base's block linears in 4 bits (nf4, QLoRA) or 8 bits
    (int8, LLM.int8) and needs LoRA adapters to train."""

    batch_size: int
    sequence_length: int
    optimizer: str = "adamw"
    precision: str = "fp32"
    master_weights: bool | None = None
    gradient_checkpointing: bool = False
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] | None = None
    lora_dropout: float = 0.0  # PEFT's default; distill.yaml's student.lora.dropout is 0.05
    quantize_base: str | None = None
    double_quant: bool = True
    attention: str = "sdpa"
    device: str = "cuda"

    def __post_init__(self) -> None:
        validate_options(
            self.batch_size,
            self.sequence_length,
            self.optimizer,
            self.precision,
            self.lora_rank,
            self.quantize_base,
            self.attention,
            self.device,
        )
        if not 0 <= self.lora_dropout < 1:
            raise InvalidInputError(
                f"lora_dropout must be from 0 to below 1, not {self.lora_dropout!r}",
                "use 0.05 (distill.yaml's default) or 0",
            )
        if self.lora_targets is not None and not isinstance(self.lora_targets, tuple):
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    @classmethod
    def from_options(cls, **options) -> TrainSettings:
        """Keyword options (the estimator's historical signature) as settings; an unknown
        name is an error that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown training setting {unknown[0]!r}", f"known: {', '.join(sorted(known))}"
            )
        return cls(**options)

    @property
    def uses_master_weights(self) -> bool:
        """fp32 master copies exist: 16-bit full fine-tuning unless turned off."""
        return not self.lora_rank and self.precision != "fp32" and self.master_weights is not False

    def with_(self, **changes) -> TrainSettings:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["lora_targets"] = list(self.lora_targets) if self.lora_targets else None
        data["master_weights"] = self.uses_master_weights
        return data


def device_problem(settings: TrainSettings) -> tuple[str, str] | None:
    """Why these settings cannot train on their device (message, hint), or None.

    Checked here, at validate time, so a run never fails at its first step. Measured on this
    project's CPU (bitsandbytes 0.50): its 8-bit AdamW, NF4 and int8 layers all run on CPU;
    pure fp16 weights train on CPU only through slow emulation, without loss scaling."""
    if settings.precision == "fp16" and settings.device == "cpu":
        return (
            "fp16 weights do not train on CPU (no fp16 arithmetic, no loss scaling)",
            "use precision bf16 (or fp32) on CPU; fp16 is for CUDA GPUs without bf16",
        )
    needs_bnb = settings.quantize_base or settings.optimizer == "adamw8bit"
    if needs_bnb and not _bitsandbytes_available():
        what = settings.quantize_base or "8-bit AdamW"
        return (
            f"{what} needs bitsandbytes, which is not installed",
            "pip install bitsandbytes (>= 0.48 runs on CPU too), or choose adamw and no quantization",
        )
    return None


def _bitsandbytes_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None
