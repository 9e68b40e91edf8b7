"""`distill.yaml`: the schema (pydantic, extra="forbid"), overrides, and every problem at once.

Field names follow ARCHITECTURE.md so configs are portable between runs, sweeps and the TUI.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError
from ..memory.settings import TrainSettings


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Precision = Literal["fp32", "bf16", "fp16"]


class TeacherConfig(Strict):
    model_id: str
    revision: str | None = None
    format: Literal["auto", "safetensors", "gguf"] = "auto"
    precision: Precision = "fp32"  # the frozen teacher's weights; KD targets are fp32 anyway


class LoraConfig(Strict):
    enabled: bool = False
    rank: int = Field(16, ge=1, le=4096)
    alpha: float = Field(32.0, gt=0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    dropout: float = Field(0.05, ge=0, lt=1)


class InitFromTeacher(Strict):
    """Which teacher blocks the student keeps: a list, or a count chosen by measurement at the
    run's start (layers.py; the chosen list is written into the run's config)."""

    layers: list[int] | None = Field(None, min_length=1)
    count: int | None = Field(None, ge=1)
    select: Literal["auto", "block_influence", "greedy"] = "auto"

    @field_validator("layers")
    @classmethod
    def _distinct(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (len(set(v)) != len(v) or any(i < 0 for i in v)):
            raise ValueError("layers must be distinct, non-negative teacher layer indices")
        return v

    @model_validator(mode="after")
    def _one_way(self) -> InitFromTeacher:
        if (self.layers is None) == (self.count is None):
            raise ValueError(
                "give student.init_from_teacher.layers (a list) or .count (chosen by measurement)"
            )
        return self

    @property
    def size(self) -> int:
        return len(self.layers) if self.layers is not None else self.count


class QuantizationConfig(Strict):
    """A frozen base stored in 4 bits (nf4: QLoRA) or 8 bits (int8: LLM.int8), bitsandbytes."""

    method: Literal["nf4", "int8"] = "nf4"
    double_quant: bool = True  # nf4 only: quantise the absmax constants too


class StudentConfig(Strict):
    model_id: str | None = None
    init_from_teacher: InitFromTeacher | None = None
    lora: LoraConfig = LoraConfig()
    precision: Precision = "fp32"  # weights' storage and compute dtype (a quantized base: compute)
    quantization: QuantizationConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> StudentConfig:
        if (self.model_id is None) == (self.init_from_teacher is None):
            raise ValueError("give exactly one of student.model_id or student.init_from_teacher")
        if self.quantization is not None and not self.lora.enabled:
            raise ValueError(
                "a quantized base trains only through LoRA adapters: set student.lora.enabled"
            )
        if self.quantization is not None and self.model_id is None:
            raise ValueError(
                "a quantized base is loaded from its own weights: give student.model_id"
                " (not init_from_teacher)"
            )
        if self.quantization is not None and self.precision == "fp32":
            raise ValueError(
                "a quantized base computes in 16 bits: set student.precision to bf16 (or fp16)"
            )
        return self


LayerPair = tuple[int, int]


class ProgressiveConfig(Strict):
    enabled: bool = False
    layer_mapping: list[LayerPair] = []
    weight: float = Field(0.3, ge=0)
    loss: Literal["mse", "cosine"] = "mse"


class AttentionConfig(Strict):
    enabled: bool = False
    layer_mapping: list[LayerPair] | None = None  # None: progressive's mapping
    weight: float = Field(0.1, ge=0)
    loss: Literal["kl", "mse"] = "kl"


class TeacherCacheConfig(Strict):
    enabled: bool = False
    # topk: the top k logits + an even tail (6k+4 bytes a token, lossy at high T); hidden: the
    # output head's input (hidden_size values a token), the logits recomputed exactly from it
    kind: Literal["topk", "hidden"] = "topk"
    top_k: int = Field(64, ge=1)
    dir: str | None = None  # share the targets on disk with other runs (a sweep sets it)


class DistillationConfig(Strict):
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    progressive: ProgressiveConfig = ProgressiveConfig()
    attention: AttentionConfig = AttentionConfig()
    teacher_cache: TeacherCacheConfig = TeacherCacheConfig()


class TrainingConfig(Strict):
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(3e-4, gt=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    gradient_accumulation: int = Field(1, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # autocast over fp32 weights
    optimizer: Literal["adamw", "adamw8bit", "sgd"] = "adamw"
    master_weights: bool | None = None  # fp32 copies of 16-bit weights (None: on for full FT)
    gradient_checkpointing: bool = False
    log_every: int = Field(10, ge=1)
    eval_every: int | None = Field(None, ge=1)
    eval_max_blocks: int = Field(64, ge=1)  # held-out blocks scored at each evaluation


class DatasetConfig(Strict):
    source: Literal["builtin", "text", "jsonl", "huggingface"] = "builtin"
    path: str | None = None
    name: str | None = None
    split: str = "train"
    text_field: str = "text"
    eval_fraction: float = Field(0.05, ge=0, lt=1)
    max_length: int = Field(128, ge=8)
    streaming: bool = False
    max_documents: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _source_needs(self) -> DatasetConfig:
        if self.source in ("text", "jsonl") and not self.path:
            raise ValueError(f"dataset.source {self.source!r} needs dataset.path")
        if self.source == "huggingface" and not self.name:
            raise ValueError("dataset.source 'huggingface' needs dataset.name (e.g. wikitext)")
        return self


class OutputConfig(Strict):
    dir: str = "runs/distill"
    checkpoint_every: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    format: Literal["safetensors", "gguf", "pth", "apr"] = "safetensors"


class DistillConfig(Strict):
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    teacher: TeacherConfig
    student: StudentConfig
    distillation: DistillationConfig = DistillationConfig()
    training: TrainingConfig = TrainingConfig()
    dataset: DatasetConfig = DatasetConfig()
    output: OutputConfig = OutputConfig()

    @model_validator(mode="after")
    def _mappings(self) -> DistillConfig:
        prog = self.distillation.progressive
        if prog.enabled and not prog.layer_mapping:
            raise ValueError(
                "distillation.progressive.enabled needs a layer_mapping like [[0, 2], [1, 5]]"
            )
        training, student = self.training, self.student
        if training.mixed_precision != "no" and student.precision != "fp32":
            raise ValueError(
                "training.mixed_precision autocasts fp32 weights; with student.precision"
                f" {student.precision} the weights already compute in 16 bits: set it to no"
            )
        if training.master_weights and (student.precision == "fp32" or student.lora.enabled):
            raise ValueError(
                "training.master_weights keeps fp32 copies of 16-bit trained weights: it needs"
                " student.precision bf16 or fp16 and full fine-tuning (LoRA adapters are fp32)"
            )
        return self

    @property
    def attention_implementation(self) -> str:
        """SDPA's fused kernels, unless attention transfer needs the maps (eager only)."""
        return "eager" if self.distillation.attention.enabled else "sdpa"

    def student_settings(self, device: str) -> TrainSettings:
        """How the student trains, as the estimator, the planner and the trainer all read it."""
        student, training, lora = self.student, self.training, self.student.lora
        return TrainSettings(
            batch_size=training.batch_size,
            sequence_length=self.dataset.max_length,
            optimizer=training.optimizer,
            precision=student.precision,
            master_weights=training.master_weights,
            gradient_checkpointing=training.gradient_checkpointing,
            lora_rank=lora.rank if lora.enabled else None,
            lora_targets=tuple(lora.target_modules) if lora.enabled else None,
            lora_dropout=lora.dropout if lora.enabled else 0.0,
            quantize_base=student.quantization.method if student.quantization else None,
            double_quant=student.quantization.double_quant if student.quantization else True,
            attention=self.attention_implementation,
            device="cuda" if device.startswith("cuda") else "cpu",
        )

    def attention_mapping(self) -> list[LayerPair]:
        att = self.distillation.attention
        return (
            att.layer_mapping
            if att.layer_mapping is not None
            else self.distillation.progressive.layer_mapping
        )

    def config_hash(self) -> str:
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- loading


class Problem(BaseModel):
    """One thing wrong with a config: where, what, and how to fix it."""

    path: str
    message: str
    value: Any = None
    hint: str = ""
    severity: Literal["error", "warning"] = "error"


def _fields_at(loc: tuple) -> list[str]:
    """Field names valid at a location in the schema, for did-you-mean."""
    model: Any = DistillConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        ann = field.annotation
        candidates = [
            a
            for a in getattr(ann, "__args__", (ann,))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if not candidates:
            return []
        model = candidates[0]
    return list(model.model_fields)


def _problem_from(err: dict) -> Problem:
    loc = tuple(
        p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "tuple[")))
    )
    path = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        options = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), options, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"valid keys here: {', '.join(options)}"
        return Problem(path=path, message="unknown key", value=err.get("input"), hint=hint)
    if err["type"] == "missing":
        return Problem(
            path=path, message="required key is missing", hint=f"add {path}: ... to the config"
        )
    msg = err["msg"].removeprefix("Value error, ")
    hint = _HINTS.get(err["type"], "")
    return Problem(path=path, message=msg, value=err.get("input"), hint=hint or _hint_for(path))


_HINTS = {
    "literal_error": "use one of the listed values",
    "greater_than": "use a positive value",
    "int_parsing": "use a whole number",
    "float_parsing": "use a number",
}


def _hint_for(path: str) -> str:
    if path.endswith("alpha") and path.startswith("distillation"):
        return "alpha weights KD against CE: 0 = CE only, 1 = KD only"
    if path.endswith("temperature"):
        return "typical temperatures are 1-4 (Hinton et al. use 2-20)"
    if path.startswith("student"):
        return "student: {model_id: ORG/NAME} or student: {init_from_teacher: {layers: [0, 2, 4]}}"
    return "see `entrenar distill init` for a commented example"


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`--set training.learning_rate=1e-4`: values parse as YAML (numbers, lists, booleans)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"bad --set {item!r}", "use --set key.path=value, e.g. --set training.max_steps=100"
            )
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(
                    f"--set {key}: {part} is not a section", "set a leaf key, not inside a value"
                )
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_yaml(raw, f"--set {key.strip()}") if raw.strip() else None
    return data


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config {path} ({exc.strerror})",
            "check the path; `entrenar distill init` writes a starter config",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start})", "save the config as UTF-8"
        ) from exc
    data = parse_yaml(text, str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping",
            "start with keys like teacher:, student:, training:",
        )
    return data


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]|\\U0000[dD][89a-fA-F]")
MAX_YAML_VALUES = 100_000  # values once aliases are expanded; a config holds a few hundred
MAX_YAML_DEPTH = 64  # nesting: the schema is 4 levels deep; deeper input is not a config


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses alias bombs and deep nesting before anything is built.

    Each `*ref` shares its anchor's node, so a few lines of aliases can stand for 10^9 values
    that pydantic would validate and `model_dump()` expand (billion laughs). Every composed
    node records how many values it expands to; nesting is counted on the way down, so
    neither the loader nor pydantic recurse without bound."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _YamlLimit(f"is nested more than {MAX_YAML_DEPTH} levels deep")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if not hasattr(node, "expanded"):  # an alias returns its anchor, already counted
            node.expanded = 1 + sum(_expanded(child) for child in _children(node))
            if node.expanded > MAX_YAML_VALUES:
                raise _YamlLimit(f"expands to over {MAX_YAML_VALUES:,} values (aliases?)")
        return node


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _expanded(node) -> int:
    return getattr(node, "expanded", 1)


class _YamlLimit(Exception):
    """A document the bounded loader refuses to build."""


def parse_yaml(text: str, where: str) -> Any:
    """YAML text -> data, every failure a ConfigError naming `where` (a file or a --set).

    Beyond syntax errors, PyYAML's constructors raise plain ValueError/KeyError/TypeError for
    values such as `!!bool 'x'`, `!!timestamp 'x'` or integers over 4,300 digits."""
    if _SURROGATE_ESCAPE.search(text):
        raise ConfigError(
            f"{where}: a \\u escape names a UTF-16 surrogate, which is not a character",
            "write the character itself (the file is UTF-8)",
        )
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{where} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}"[:300],
            "check indentation and colons; YAML needs spaces, not tabs",
        ) from exc
    except _YamlLimit as exc:
        raise ConfigError(
            f"{where}: YAML {exc}", "write the values out; configs need no deep structure"
        ) from exc
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise ConfigError(
            f"{where}: a YAML value cannot be read ({type(exc).__name__}: {str(exc)[:120]})",
            "quote strings and drop explicit tags such as !!bool or !!timestamp",
        ) from exc


def parse_config(data: dict) -> tuple[DistillConfig | None, list[Problem]]:
    """Validate a config dict; never raises for schema problems, returns them all."""
    try:
        return DistillConfig.model_validate(data), []
    except ValidationError as exc:
        return None, [_problem_from(e) for e in exc.errors()]


def packaged_example(name: str) -> Path | None:
    from importlib.resources import files

    candidate = files("entrenar_tui") / "examples" / f"{name}.yaml"
    return Path(str(candidate)) if candidate.is_file() else None


def resolve_config_path(ref: str | Path) -> Path:
    """A path, or the name of a packaged example (`--config demo`)."""
    path = Path(ref)
    if path.exists():
        return path
    example = packaged_example(str(ref))
    if example is not None and "/" not in str(ref):
        return example
    return path


def default_run_dir(ref: str | Path, config: DistillConfig) -> Path:
    """`output.dir`, except for a packaged example (`--config demo`): a new
    `runs/demo-YYYYMMDD-HHMMSS` each time, so running the demo twice just works."""
    from ..fsutil import timestamped_dir

    packaged = not Path(ref).exists() and packaged_example(str(ref)) is not None
    return timestamped_dir(config.output.dir) if packaged else Path(config.output.dir)


def load_config(ref: str | Path, overrides: list[str] | None = None) -> DistillConfig:
    """Load, override and validate; raise ConfigError listing every problem."""
    return config_from_data(load_yaml(resolve_config_path(ref)), overrides)


def config_from_data(data: dict, overrides: list[str] | None = None) -> DistillConfig:
    """Override and validate a config mapping; raise ConfigError listing every problem."""
    data = apply_overrides(data, overrides or [])
    config, problems = parse_config(data)
    if problems:
        first = problems[0]
        raise ConfigError(
            f"{len(problems)} problem(s) in config; first: {first.path}: {first.message}",
            first.hint or "run `entrenar distill validate --config F` to list them all",
            problems=[p.model_dump() for p in problems],
        )
    return config
