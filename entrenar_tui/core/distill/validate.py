"""`distill validate`: every problem in a config at once, including the ones only the models
can reveal (layer indices, vocabularies), each with its field path, the bad value and a fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EntrenarError
from ..models import Model
from .config import (
    Problem,
    apply_overrides,
    load_yaml,
    parse_config,
    resolve_config_path,
)


@dataclass
class ConfigReport:
    config_path: str
    problems: list[Problem] = field(default_factory=list)
    teacher: dict | None = None
    student: dict | None = None

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_dict(self) -> dict:
        return {
            "config_path": self.config_path,
            "ok": self.ok,
            "problems": [p.model_dump() for p in self.problems],
            "teacher": self.teacher,
            "student": self.student,
        }


def _arch(ref: str, path: str, problems: list[Problem]):
    try:
        return Model.open(ref).arch
    except EntrenarError as exc:
        problems.append(Problem(path=path, message=exc.message, value=ref, hint=exc.hint))
        return None


def _check_mapping(
    name: str, mapping: list, s_layers: int | None, t_layers: int | None, problems: list[Problem]
) -> None:
    for i, (student_layer, teacher_layer) in enumerate(mapping):
        if s_layers is not None and not 0 <= student_layer < s_layers:
            problems.append(
                Problem(
                    path=f"{name}[{i}][0]",
                    message=f"student layer {student_layer} out of range",
                    value=student_layer,
                    hint=f"the student has layers 0..{s_layers - 1}",
                )
            )
        if t_layers is not None and not 0 <= teacher_layer < t_layers:
            problems.append(
                Problem(
                    path=f"{name}[{i}][1]",
                    message=f"teacher layer {teacher_layer} out of range",
                    value=teacher_layer,
                    hint=f"the teacher has layers 0..{t_layers - 1}",
                )
            )


def _get(data: dict, path: str):
    """A value from the raw config dict, or None when any part is missing or mistyped."""
    node = data
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _pairs(value) -> list:
    ok = isinstance(value, list) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(i, int) for i in p)
        for p in value
    )
    return value if ok else []


def _student_shape(
    data: dict, teacher, problems: list[Problem]
) -> tuple[int | None, int | None, object]:
    layers = _get(data, "student.init_from_teacher.layers")
    if isinstance(layers, list) and all(isinstance(i, int) for i in layers):
        bad = [i for i in layers if teacher.layers is not None and i >= teacher.layers]
        if bad:
            problems.append(
                Problem(
                    path="student.init_from_teacher.layers",
                    message=f"teacher layers {bad} do not exist",
                    value=layers,
                    hint=f"the teacher has layers 0..{teacher.layers - 1}",
                )
            )
        return len(layers), teacher.vocab_size, None
    count = _get(data, "student.init_from_teacher.count")
    if isinstance(count, int) and not isinstance(count, bool):
        if teacher.layers is not None and count > teacher.layers:
            problems.append(
                Problem(
                    path="student.init_from_teacher.count",
                    message=f"{count} layers cannot be cut from a {teacher.layers}-layer teacher",
                    value=count,
                    hint=f"choose a count from 1 to {teacher.layers}",
                )
            )
        return count, teacher.vocab_size, None
    ref = _get(data, "student.model_id")
    student = _arch(ref, "student.model_id", problems) if isinstance(ref, str) else None
    return (student.layers, student.vocab_size, student) if student else (None, None, None)


def _model_checks(data: dict, problems: list[Problem]) -> tuple[dict | None, dict | None]:
    """Checks that need the models' facts (headers only), run even when the schema has errors."""
    ref = _get(data, "teacher.model_id")
    teacher = _arch(ref, "teacher.model_id", problems) if isinstance(ref, str) else None
    if teacher is None:
        return None, None
    s_layers, s_vocab, student = _student_shape(data, teacher, problems)
    if s_vocab is not None and teacher.vocab_size is not None and s_vocab != teacher.vocab_size:
        problems.append(
            Problem(
                path="student.model_id",
                message=f"vocabulary mismatch: student {s_vocab} vs teacher {teacher.vocab_size} tokens",
                value=_get(data, "student.model_id"),
                hint="KD compares token distributions: use a student with the teacher's tokenizer",
            )
        )
    for section in ("progressive", "attention"):
        mapping = _pairs(_get(data, f"distillation.{section}.layer_mapping"))
        if _get(data, f"distillation.{section}.enabled") is True:
            _check_mapping(
                f"distillation.{section}.layer_mapping", mapping, s_layers, teacher.layers, problems
            )
    top_k = _get(data, "distillation.teacher_cache.top_k")
    vocab = teacher.vocab_size
    topk_kind = _get(data, "distillation.teacher_cache.kind") in (None, "topk")
    if topk_kind and isinstance(top_k, int) and vocab is not None and top_k >= vocab:
        problems.append(
            Problem(
                path="distillation.teacher_cache.top_k",
                message=f"top_k {top_k} keeps the whole {vocab}-token vocabulary",
                value=top_k,
                hint=f"use a top_k below {vocab} (the default is 64), or disable the cache",
            )
        )
    return teacher.to_dict(), student.to_dict() if student else None


def _available_memory(device: str) -> tuple[str, int]:
    import psutil

    if device in ("cuda", "auto"):
        import torch

        if torch.cuda.is_available():
            return "cuda", torch.cuda.get_device_properties(0).total_memory
    return "cpu", psutil.virtual_memory().available


def _memory_warning(config, problems: list[Problem]) -> None:
    """The estimator's verdict, as a warning: estimates can be off, the user decides."""
    from ..sizes import format_bytes
    from .estimate import estimate_distillation

    device, available = _available_memory(config.device)
    try:
        need = estimate_distillation(config, measure_steps=0, device=device).total_bytes
    except EntrenarError as exc:
        problems.append(
            Problem(
                path="(memory)",
                message=f"could not estimate memory: {exc.message}",
                hint=exc.hint,
                severity="warning",
            )
        )
        return
    if need > available:
        problems.append(
            Problem(
                path="training.batch_size",
                value=config.training.batch_size,
                severity="warning",
                message=f"the run needs about {format_bytes(need)} but {device} has {format_bytes(available)} available",
                hint="lower training.batch_size or dataset.max_length, enable training.gradient_checkpointing or student.lora",
            )
        )


def _teacher_tokenizer(ref: str, problems: list[Problem]):
    from .modeling import load_tokenizer

    try:
        return load_tokenizer(ref)
    except EntrenarError as exc:
        problem = Problem(path="teacher.model_id", message=exc.message, value=ref, hint=exc.hint)
    except (OSError, ValueError) as exc:
        problem = Problem(
            path="teacher.model_id",
            message=f"cannot load the teacher's tokenizer ({type(exc).__name__}: {exc})",
            value=ref,
            hint="the teacher folder needs its tokenizer files (tokenizer.json or similar)",
        )
    problems.append(problem)
    return None


def _data_check(config, problems: list[Problem]) -> None:
    """Tokenise and pack the dataset as the run will, to count its training blocks: a batch
    larger than an epoch cannot be drawn, and only the data can tell."""
    from .data import batch_size_hint, batch_size_problem, dataset_for

    tokenizer = _teacher_tokenizer(config.teacher.model_id, problems)
    if tokenizer is None:
        return
    try:
        data = dataset_for(config, tokenizer)
    except EntrenarError as exc:
        problems.append(Problem(path="dataset", message=exc.message, hint=exc.hint))
        return
    batch = config.training.batch_size
    problem = batch_size_problem(len(data.train), batch, data.block_size)
    if problem:
        problems.append(
            Problem(
                path="training.batch_size",
                message=problem,
                value=batch,
                hint=batch_size_hint(len(data.train)),
            )
        )


def _precision_check(config, problems: list[Problem]) -> None:
    """Settings the device cannot run (fp16 on CPU, a quantized base or 8-bit AdamW without
    bitsandbytes) are refused here, with what would work, never at the first step."""
    import torch

    from ..errors import EntrenarError
    from .trainer import check_device

    device = "cuda" if config.device != "cpu" and torch.cuda.is_available() else "cpu"
    try:
        check_device(config, device)
    except EntrenarError as error:
        path = _setting_path(error.message)
        problems.append(Problem(path=path, message=error.message, hint=error.hint))


def _setting_path(message: str) -> str:
    for words, path in (
        ("mixed_precision", "training.mixed_precision"),
        ("teacher", "teacher.precision"),
        ("AdamW", "training.optimizer"),
        ("bitsandbytes", "student.quantization"),
    ):
        if words in message:
            return path
    return "student.precision"


def validate_config(
    ref: str | Path, overrides: list[str] | None = None, check_models: bool = True
) -> ConfigReport:
    path = resolve_config_path(ref)
    data = apply_overrides(load_yaml(path), overrides or [])
    config, problems = parse_config(data)
    report = ConfigReport(str(path), problems)
    if config is not None:
        _precision_check(config, report.problems)
    if check_models:
        report.teacher, report.student = _model_checks(data, report.problems)
    if config is not None and check_models and report.ok:
        _data_check(config, report.problems)
    if config is not None and check_models and report.ok:
        _memory_warning(config, report.problems)
    if (
        config is not None
        and config.distillation.attention.enabled
        and not config.attention_mapping()
    ):
        report.problems.append(
            Problem(
                path="distillation.attention.layer_mapping",
                message="attention transfer is enabled without a layer mapping",
                hint="set attention.layer_mapping or progressive.layer_mapping",
            )
        )
    return report
