"""The Memory screen's form and texts, without Textual: the fields, parsing them into the
estimator's settings (an error per unusable field), the verdict and the plan's lines."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text

from ..core.errors import EntrenarError, InvalidInputError
from ..core.lora.methods import LORA_DROPOUT
from ..core.lora.plan import LoraPlan
from ..core.memory import OPTIMIZERS, PRECISION_BYTES
from ..core.sizes import format_bytes, parse_size

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_PLAN_PATH = "lora-plan.yaml"
DEBOUNCE_S = 0.15  # long enough to skip the keystrokes in between, short enough to feel live
# The form, top to bottom: name (widget id memory-NAME), label, default, choices (None: typed).
FIELDS = (
    ("model", "model", DEFAULT_MODEL, None),
    ("vram", "VRAM", "16GB", None),
    ("method", "method", "full", (("full", "full"), ("LoRA", "lora"), ("QLoRA", "qlora"))),
    ("rank", "LoRA rank", "16", None),
    ("targets", "targets", "attention", (("attention", "attention"), ("all linear", "all-linear"))),
    ("batch", "batch", "4", None),
    ("accumulation", "accumulate", "4", None),
    ("sequence_length", "seq length", "512", None),
    ("optimizer", "optimizer", "adamw", OPTIMIZERS),
    ("precision", "precision", "bf16", tuple(PRECISION_BYTES)),
    ("device", "device", "cuda", ("cuda", "cpu")),
)
LABELS = {name: label for name, label, _, _ in FIELDS} | {"estimate": "estimate"}
PLAN_ONLY = ("vram", "accumulation")  # the estimate needs neither


@dataclass
class FieldError:
    field: str  # a form field's name (a key of LABELS)
    message: str
    hint: str = ""


@dataclass
class Settings:
    """The form parsed: its raw values, and the numbers in it (None where not usable)."""

    values: dict
    model: str
    method: str
    vram: int | None
    rank: int | None
    batch: int | None
    accumulation: int | None
    sequence_length: int | None
    errors: list[FieldError] = field(default_factory=list)

    def estimate_settings(self) -> dict:
        """The estimator's keywords for these settings (LoRA ones only for LoRA methods)."""
        lora = self.method != "full"
        targets = ["all-linear"] if self.values["targets"] == "all-linear" else None
        return dict(
            batch_size=self.batch,
            sequence_length=self.sequence_length,
            optimizer=self.values["optimizer"],
            precision=self.values["precision"],
            gradient_checkpointing=bool(self.values["checkpointing"]),
            device=self.values["device"],
            lora_rank=self.rank if lora else None,
            lora_targets=targets if lora else None,
            lora_dropout=LORA_DROPOUT if lora else 0.0,  # what a written plan trains with
            quantize_base="nf4" if self.method == "qlora" else None,
        )

    @property
    def can_estimate(self) -> bool:
        return all(e.field in PLAN_ONLY for e in self.errors)


def _whole(values: dict, name: str, errors: list[FieldError]) -> int | None:
    text = str(values[name]).strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    errors.append(FieldError(name, f"must be a positive whole number, not {text!r}", "e.g. 4"))
    return None


def _vram(text: str, errors: list[FieldError]) -> int | None:
    try:
        vram = parse_size(text)
        if vram <= 0:
            raise InvalidInputError("must be more than 0 bytes", "e.g. 16GB")
    except EntrenarError as exc:
        errors.append(FieldError("vram", exc.message, exc.hint))
        return None
    return vram


def parse_form(values: dict) -> Settings:
    """Settings from the form's raw values, with an error for each field that is not usable."""
    errors: list[FieldError] = []
    model = str(values["model"]).strip()
    if not model:
        errors.append(FieldError("model", "give a model", "a packaged name, a path or org/name"))
    lora = values["method"] != "full"
    return Settings(
        values=values,
        model=model,
        method=values["method"],
        vram=_vram(str(values["vram"]), errors),
        rank=_whole(values, "rank", errors) if lora else None,
        batch=_whole(values, "batch", errors),
        accumulation=_whole(values, "accumulation", errors),
        sequence_length=_whole(values, "sequence_length", errors),
        errors=errors,
    )


def verdict(total: int, vram: int) -> tuple[str, bool]:
    """ "fits: A of B, C to spare" or "does not fit: needs A of B, C over"."""
    if total <= vram:
        spare = format_bytes(vram - total)
        return f"fits: {format_bytes(total)} of {format_bytes(vram)}, {spare} to spare", True
    over = format_bytes(total - vram)
    return f"does not fit: needs {format_bytes(total)} of {format_bytes(vram)}, {over} over", False


def human_count(n: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(n)


def plan_label(plan: LoraPlan) -> str:
    if plan.method == "full":
        return "full fine-tuning" + (", 8-bit AdamW" if plan.optimizer == "adamw8bit" else "")
    return f"{plan.method} r={plan.rank} {plan.target_set}"


def plan_text(plan: LoraPlan) -> Text:
    ckpt = "on" if plan.gradient_checkpointing else "off"
    text = Text(f"plan for {format_bytes(plan.vram_bytes)}: ", style="bold")
    text.append(plan_label(plan), style="bold green")
    text.append(
        f"\nbatch {plan.batch_size} x {plan.gradient_accumulation} accumulation"
        f" = {plan.effective_batch_size}, checkpointing {ckpt}, {plan.sequence_length} tokens"
        f"\n{format_bytes(plan.memory.total_bytes)} ({plan.utilization:.0%} of VRAM),"
        f" speed x{plan.relative_speed:.2f}, {human_count(plan.trainable_parameters)} trainable"
    )
    text.append(f"\n{plan.quality_note}\nw writes it as a config, p applies it", style="dim")
    return text
