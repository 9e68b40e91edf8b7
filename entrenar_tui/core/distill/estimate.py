"""`distill estimate`: will this run fit, and how long will it take?

Memory: the student's training step from the one estimator (core/memory/) plus the frozen
teacher's inference (weights, one block's transient activations, fp32 logits). Time: a few real
training steps of this configuration on this hardware, timed after a warm-up step.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field

from ..errors import InvalidInputError
from ..memory import PRECISION_BYTES, estimate_memory
from ..models import Model
from .config import DistillConfig
from .loss_workspace import workspace_bytes

FP32 = 4


@dataclass
class DistillEstimate:
    teacher: str
    student: str
    batch_size: int
    sequence_length: int
    device: str
    total_bytes: int
    breakdown: dict[str, int]
    student_estimate: dict
    teacher_parameters: int
    student_parameters: int
    seconds_per_step: float | None = None
    tokens_per_second: float | None = None
    total_steps: int | None = None
    estimated_seconds: float | None = None
    teacher_cache: dict | None = None  # kind, bytes per token, host and disk bytes (upper bound)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def teacher_inference_bytes(
    arch,
    parameters: int,
    batch: int,
    seq: int,
    weight_bytes: int = FP32,
    *,
    divergence: str = "forward_kl",
    device: str = "cpu",
) -> dict[str, int]:
    """Frozen teacher in inference mode: weights, the widest block's transient tensors, logits.
    Only one block's activations live at a time without autograd; the fp32 logits (and their
    softened copy for KD) dominate at large vocabularies."""
    tokens = batch * seq
    hidden, inter, vocab = arch.hidden_size or 0, arch.intermediate_size or 0, arch.vocab_size or 0
    block = tokens * (4 * hidden + 3 * inter) * weight_bytes
    if divergence == "forward_kl":  # three reused chunk workspaces (logit_grads.py)
        kd = workspace_bytes(device.split(":")[0], tokens, vocab)
    else:  # autograd in checkpointed 512-token chunks keeps ~5 fp32 (chunk x vocab) buffers
        kd = 5 * min(tokens, 512) * vocab * FP32
    return {
        "teacher_weights": parameters * weight_bytes,
        "teacher_activations": block,
        "teacher_logits": 2 * tokens * vocab * FP32,
        "kd_loss": kd,
    }


def teacher_cache_bytes(config: DistillConfig, arch) -> dict | None:
    """What the teacher cache holds (host memory, and the same on disk with teacher_cache.dir).

    The run caches every training block it sees in epoch 1, so its size is bounded by the
    tokens of the first epoch or of max_steps, whichever is fewer (the dataset's size is only
    known once it is tokenised: `tokens` is None when max_steps does not bound it)."""
    cache = config.distillation.teacher_cache
    if not cache.enabled:
        return None
    if cache.kind == "hidden":  # the head's input, in the teacher's compute dtype
        per_token = (arch.hidden_size or 0) * PRECISION_BYTES[config.teacher.precision]
    else:  # fp16 logit + int32 index per kept token, one fp32 tail logit
        per_token = 6 * cache.top_k + 4
    training = config.training
    tokens = None
    if training.max_steps is not None:
        blocks = training.max_steps * training.batch_size * training.gradient_accumulation
        tokens = blocks * (config.dataset.max_length - 1)  # the last position predicts nothing
    host = per_token * tokens if tokens is not None else None
    return {
        "kind": cache.kind,
        "bytes_per_token": per_token,
        "tokens": tokens,
        "host_bytes": host,
        "on_disk": cache.dir is not None,
        "disk_bytes": host if cache.dir else 0,
    }


def _cache_note(cache: dict) -> str:
    what = "the output head's input" if cache["kind"] == "hidden" else "top-k logits + a tail"
    gib = 2**30
    size = (
        f"at most {cache['host_bytes'] / gib:.2f} GiB for this run's {cache['tokens']:,} tokens"
        if cache["host_bytes"] is not None
        else f"{cache['bytes_per_token'] * 2**20 / gib:.2f} GiB per million tokens"
    )
    disk = " (and as much on disk, in teacher_cache.dir)" if cache["on_disk"] else ""
    return (
        f"the teacher cache ({what}) holds {cache['bytes_per_token']} bytes per training token "
        f"in host memory, not in the device total: {size}{disk}, filled during epoch 1"
    )


def _layers_text(init) -> str:
    if init.layers is not None:
        return f"teacher layers {init.layers}"
    return f"{init.count} teacher layers, chosen at the start ({init.select})"


def _student_arch(config: DistillConfig, teacher_model: Model):
    if config.student.init_from_teacher is not None:
        n = config.student.init_from_teacher.size
        arch = dataclasses.replace(teacher_model.arch, layers=n)
        cfg = dict(teacher_model.source.config) if teacher_model.source.config else None
        if cfg is not None:
            cfg["num_hidden_layers"] = n
        return arch, cfg, None
    student = Model.open(config.student.model_id)
    params = student.parameters if student.tensors and not student.source.config else None
    return student.arch, student.source.config if student.kind != "gguf" else None, params


def estimate_distillation(
    config: DistillConfig, measure_steps: int = 2, device: str | None = None
) -> DistillEstimate:
    """`device` None: the config's, where `auto` means CUDA when present."""
    if device is None:
        device = config.device if config.device != "auto" else auto_device()
    teacher = Model.open(config.teacher.model_id)
    arch, cfg, params = _student_arch(config, teacher)
    training = config.training
    seq = config.dataset.max_length
    settings = config.student_settings(device)
    student = estimate_memory(arch, settings, config=cfg, parameters=params)
    teacher_terms = teacher_inference_bytes(
        teacher.arch,
        teacher.parameters,
        training.batch_size,
        seq,
        PRECISION_BYTES[config.teacher.precision],
        divergence=config.distillation.divergence,
        device=device,
    )
    breakdown = {**teacher_terms, **{f"student_{k}": v for k, v in student.breakdown.items()}}
    result = DistillEstimate(
        teacher=config.teacher.model_id,
        student=config.student.model_id or _layers_text(config.student.init_from_teacher),
        batch_size=training.batch_size,
        sequence_length=seq,
        device=device,
        total_bytes=sum(breakdown.values()),
        breakdown=breakdown,
        student_estimate=student.to_dict(),
        teacher_parameters=teacher.parameters,
        student_parameters=student.parameters,
        notes=[
            f"teacher in {config.teacher.precision} in inference mode; the student as its settings say"
            f" ({settings.precision} weights, {settings.optimizer}"
            f"{', ' + settings.quantize_base + ' base' if settings.quantize_base else ''})",
            *student.notes,
        ],
    )
    result.teacher_cache = teacher_cache_bytes(config, teacher.arch)
    if result.teacher_cache is not None:
        result.notes.append(_cache_note(result.teacher_cache))
    if measure_steps:
        _measure(config, result, measure_steps)
    return result


def _measure(config: DistillConfig, result: DistillEstimate, steps: int) -> None:
    """Time real steps of this configuration (after one warm-up step)."""
    import torch

    from .trainer import Progress, build, train_step

    small = config.model_copy(
        update={
            "dataset": config.dataset.model_copy(
                update={"max_documents": config.dataset.max_documents or 400, "eval_fraction": 0.0}
            )
        }
    )
    init = small.student.init_from_teacher
    if init is not None and init.layers is None:  # timing does not depend on which layers
        first = init.model_copy(update={"layers": list(range(init.count)), "count": None})
        small = small.model_copy(
            update={"student": small.student.model_copy(update={"init_from_teacher": first})}
        )
    setup = build(small)
    needed = (steps + 1) * config.training.batch_size * config.training.gradient_accumulation
    if len(setup.train_blocks) < needed:
        raise InvalidInputError(
            f"the dataset has too few blocks ({len(setup.train_blocks)}) to time {steps + 1} steps",
            "lower dataset.max_length or add text",
        )
    progress = Progress()
    train_step(setup, progress, None)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(setup, progress, None)
    if setup.device.startswith("cuda"):
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - started) / steps
    training = config.training
    full_steps = training.max_steps
    result.seconds_per_step = per_step
    result.tokens_per_second = (
        training.batch_size * training.gradient_accumulation * config.dataset.max_length / per_step
    )
    result.device = setup.device
    if full_steps:
        result.total_steps = full_steps
        result.estimated_seconds = per_step * full_steps
    else:
        result.notes.append(
            "set training.max_steps for a total time estimate (epochs depend on the corpus size)"
        )


# ---------------------------------------------------------------- what `distill estimate` runs


def auto_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def estimate_config(teacher, student, batch_size, sequence_length, config, overrides):
    """The config `distill estimate` measures: `--config` with the options applied, or a teacher
    alone with the default student (every third of its layers)."""
    from ..errors import ConfigError
    from .config import apply_overrides, load_config, parse_config

    sets = list(overrides)
    if batch_size:
        sets.append(f"training.batch_size={batch_size}")
    if sequence_length:
        sets.append(f"dataset.max_length={sequence_length}")
    if config:
        if teacher:
            sets.append(f"teacher.model_id={teacher}")
        return load_config(config, sets)
    if not teacher:
        raise InvalidInputError(
            "give --teacher T or --config F",
            "e.g. entrenar distill estimate --teacher smollm2-135m --batch-size 4 --sequence-length 128",
        )
    if student:
        student_part = {"model_id": student}
    else:
        layers = Model.open(teacher).arch.layers or 1
        student_part = {"init_from_teacher": {"layers": list(range(0, layers, 3))}}
    cfg, problems = parse_config(
        apply_overrides(
            {
                "teacher": {"model_id": teacher},
                "student": student_part,
                "training": {"max_steps": 100},
            },
            sets,
        )
    )
    if problems:
        raise ConfigError(f"{problems[0].path}: {problems[0].message}", problems[0].hint)
    return cfg
