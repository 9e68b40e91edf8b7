"""The distillation loop: read it top to bottom.

`run_distillation` builds the teacher, the student and the loss (the student in the dtype,
quantization and optimizer its `TrainSettings` say: optim.py), then steps the optimizer with
warmup + decay, gradient accumulation and clipping, writing the run directory as it goes.
Determinism: the data order is a function of (seed, epoch) and the micro-batch counter, and the
checkpoint holds every RNG, so a resumed run continues bit-for-bit on CPU.
Under torchrun the student and the loss module (its hidden-state projections) train inside one
DistributedDataParallel wrapper, so every trainable parameter is averaged across ranks; the ranks
agree on the step's losses, a stop request and a non-finite loss with one all-reduce per step.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import CheckFailedError, InvalidInputError
from ..memory.settings import TrainSettings, device_problem
from .batches import _compress as _compress  # importable from here, as before the split
from .batches import micro_batch, predicting, predictions, teacher_targets, window_counts
from .config import DistillConfig
from .losses import LossTerms
from .optim import MasterWeights, make_optimizer, schedulable
from .teacher_store import TeacherStore

Event = Callable[[dict], None]


class TrainingDivergedError(CheckFailedError):
    """The loss became NaN/Inf: the run stops, the last good checkpoint stays."""


@dataclass
class RunResult:
    run_dir: str
    state: str
    step: int
    total_steps: int
    final_dir: str | None
    seconds: float
    tokens: int
    first_loss: float | None = None
    last_loss: float | None = None
    teacher_eval: dict | None = None
    student_eval_before: dict | None = None
    student_eval_after: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Setup:
    """Everything the loop needs, built once (and rebuilt identically on resume)."""

    config: DistillConfig
    device: str
    tokenizer: object
    teacher: torch.nn.Module
    student: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_blocks: list[list[int]]
    eval_blocks: list[list[int]]
    total_steps: int
    world_size: int = 1
    rank: int = 0
    teacher_cache: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict)  # _compress
    cache_coverage: float | None = None  # the top k's share of the teacher's mass, first batch
    cache_head_error: float | None = None  # kind hidden: max |recomputed - forward logit|
    teacher_store: TeacherStore | None = None  # targets shared on disk (teacher_cache.dir)
    trainable: torch.nn.Module | None = None  # StudentWithLoss, DDP-wrapped under torchrun
    scaler: torch.amp.GradScaler | None = None  # fp16 on CUDA only
    pad_id: int = 0  # fills blocks shorter than dataset.max_length
    params: list = field(default_factory=list)  # what trains: student and loss-module parameters


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    micro: int = 0  # micro-batches consumed (per rank)
    tokens: int = 0  # tokens trained on (all ranks)
    elapsed: float = 0.0  # training seconds before this process
    first_loss: float | None = None
    last_loss: float | None = None


# ------------------------------------------------------------------------------------- setup


def lr_lambda(scheduler: str, warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup, then cosine/linear decay to 0 or constant."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if scheduler == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return factor


def _build_loss(config: DistillConfig, student, teacher):
    from .losses import AttentionLoss, DistillationLoss, HiddenStateLoss

    distillation = config.distillation
    hidden = attention = None
    if distillation.progressive.enabled:
        hidden = HiddenStateLoss(
            distillation.progressive.layer_mapping,
            student.config.hidden_size,
            teacher.config.hidden_size,
            loss=distillation.progressive.loss,
        )
    if distillation.attention.enabled:
        attention = AttentionLoss(config.attention_mapping(), loss=distillation.attention.loss)
    return DistillationLoss(
        temperature=distillation.temperature,
        alpha=distillation.alpha,
        divergence=distillation.divergence,
        hidden_loss=hidden,
        hidden_weight=distillation.progressive.weight if hidden else 0.0,
        attention_loss=attention,
        attention_weight=distillation.attention.weight if attention else 0.0,
    )


def _build_student(config: DistillConfig, teacher, device: str, checkpointing: bool = False):
    from .modeling import load_causal_lm, student_from_teacher

    student_config, quantization = config.student, config.student.quantization
    if student_config.init_from_teacher is not None:
        student = student_from_teacher(
            teacher, student_config.init_from_teacher.layers, student_config.precision
        )
    else:
        student = load_causal_lm(
            student_config.model_id,
            device,
            config.attention_implementation,
            precision=student_config.precision,
            quantization=quantization,
        )
    if quantization is not None:  # fp32 norms, embeddings and head; input grads for checkpointing
        from peft import prepare_model_for_kbit_training

        _keep_4bit_trainable(student)

        student = prepare_model_for_kbit_training(student, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        student.gradient_checkpointing_enable()
    lora = student_config.lora
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        student = get_peft_model(
            student,
            LoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                target_modules=lora.target_modules,
                lora_dropout=lora.dropout,
            ),
        )
    return student if quantization is not None else student.to(device)


def return_freed_memory() -> None:
    """Make glibc give every freed block of 64 KiB or more back to the system at once.

    By default glibc raises its mmap threshold after the first large free, and activations
    freed after backward then stay in its heap: measured on a 27M-parameter bf16 student, the
    peak resident set was ~130 MiB above the live tensors, and the plan's estimate (which counts
    tensors) was off by 18 %. A fixed threshold keeps the resident set on the tensors, as the
    estimator's probe measures them. A no-op where libc has no mallopt (musl, macOS)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 65536)
    except (OSError, AttributeError):
        pass


M_MMAP_THRESHOLD = -3  # glibc's malloc.h


def _keep_4bit_trainable(model) -> None:
    """bitsandbytes (0.50) repacks an NF4 weight for its AVX512-BF16 CPU kernel at the first
    forward under no_grad in eval mode (our evaluation), and every later training step then runs
    that kernel, which has no autograd: the adapters silently stop learning (measured: LoRA B
    unchanged after an evaluation and a step). Turning the repacking off keeps the trainable
    path; CPU evaluation of a 4-bit base is a little slower."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def check_device(config: DistillConfig, device: str) -> TrainSettings:
    """The student's settings, refused here (before any model loads) when the device cannot
    run them."""
    check_precision(config.training.mixed_precision, device)
    settings = config.student_settings(device)
    problem = device_problem(settings)
    if problem is None and config.teacher.precision == "fp16" and not device.startswith("cuda"):
        problem = ("an fp16 teacher does not run on CPU", "use teacher.precision: bf16 or fp32")
    if problem is not None:
        raise InvalidInputError(problem[0], problem[1])
    return settings


def build(config: DistillConfig) -> Setup:
    from .data import build_dataset, load_documents
    from .modeling import load_causal_lm, load_tokenizer, pick_device

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    world_size, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(config.device)
    settings = check_device(config, device)
    if device == "cpu":
        return_freed_memory()
    if device == "cuda" and world_size > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    tc = config.teacher
    tokenizer = load_tokenizer(tc.model_id, tc.revision, tc.format)
    teacher = load_causal_lm(
        tc.model_id,
        device,
        config.attention_implementation,
        revision=tc.revision,
        fmt=tc.format,
        precision=tc.precision,
    )
    teacher = teacher.eval().requires_grad_(False)
    student = _build_student(config, teacher, device, settings.gradient_checkpointing)
    loss_fn = _build_loss(config, student, teacher).to(device)
    ds = config.dataset
    docs = load_documents(
        ds.source, ds.path, ds.name, ds.split, ds.text_field, ds.streaming, ds.max_documents
    )
    data = build_dataset(docs, tokenizer, ds.max_length, ds.eval_fraction)
    training = config.training
    params = [p for p in list(student.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = make_optimizer(params, settings, training.learning_rate, training.weight_decay)
    per_step = training.batch_size * training.gradient_accumulation * world_size
    steps_per_epoch = max(1, len(data.train) // per_step)
    total = training.max_steps or training.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        schedulable(optimizer), lr_lambda(training.scheduler, training.warmup_steps, total)
    )
    trainable = StudentWithLoss(student, loss_fn, training.mixed_precision)
    if world_size > 1:
        trainable = _wrap_ddp(trainable, device)
    eval_blocks = data.eval[: training.eval_max_blocks]
    return Setup(
        config,
        device,
        tokenizer,
        teacher,
        student,
        loss_fn,
        optimizer,
        scheduler,
        data.train,
        eval_blocks,
        total,
        world_size,
        rank,
        trainable=trainable,
        scaler=grad_scaler(training.mixed_precision, device),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        teacher_store=_teacher_store(config),
        params=params,
    )


def _teacher_store(config: DistillConfig) -> TeacherStore | None:
    cache = config.distillation.teacher_cache
    return TeacherStore(cache.dir, config) if cache.enabled and cache.dir else None


def precision_problem(mixed_precision: str, device: str) -> tuple[str, str] | None:
    """(message, hint) when the precision cannot train on the device: fp16 needs loss scaling,
    which this trainer does on CUDA only; bf16 has fp32's range and needs none."""
    if mixed_precision == "fp16" and not device.startswith("cuda"):
        return (
            f"fp16 needs a CUDA device (this run is on {device})",
            "use mixed_precision: bf16 (or no) on CPU; fp16 is for CUDA, with loss scaling",
        )
    return None


def check_precision(mixed_precision: str, device: str) -> None:
    problem = precision_problem(mixed_precision, device)
    if problem is not None:
        raise InvalidInputError(f"training.mixed_precision: {problem[0]}", problem[1])


def grad_scaler(mixed_precision: str, device: str) -> torch.amp.GradScaler | None:
    """Loss scaling for fp16: without it small gradients (most logit gradients at a large
    vocabulary) flush to zero in half precision."""
    if mixed_precision == "fp16" and device.startswith("cuda"):
        return torch.amp.GradScaler("cuda")
    return None


class StudentWithLoss(torch.nn.Module):
    """Every trainable module in one: the student and the loss module (hidden-state projections).

    DistributedDataParallel wraps this, not the student alone, so the projections' gradients are
    averaged across ranks too; clipping then sees the same gradients on every rank. Its inputs
    are tensors (or tuples of them) only, which DDP can move between devices as they are."""

    def __init__(self, student: torch.nn.Module, loss_fn: torch.nn.Module, precision: str) -> None:
        super().__init__()
        self.student = student
        self.loss_fn = loss_fn
        self.precision = precision

    def forward(self, ids, labels, attention_mask, teacher: tuple, **counts) -> LossTerms:
        """Student forward (autocast to the run's precision) and the loss against the teacher's
        (logits, per-block hidden states, attentions)."""
        teacher_logits, teacher_hidden, teacher_attentions = teacher
        loss_fn = self.loss_fn
        with _autocast(self.precision, ids.device.type):
            out = self.student(
                input_ids=ids,
                attention_mask=attention_mask,
                output_hidden_states=loss_fn.needs_hidden_states,
                output_attentions=loss_fn.needs_attentions,
                **predicting(self.student, ids),
            )
        seq = ids.shape[1]
        return loss_fn(
            predictions(out.logits, seq),
            labels,
            predictions(teacher_logits, seq) if teacher_logits is not None else None,
            attention_mask=attention_mask,
            **counts,
            student_hidden=out.hidden_states[1:] if out.hidden_states else None,
            teacher_hidden=teacher_hidden,
            student_attentions=out.attentions,
            teacher_attentions=teacher_attentions,
        )


def _wrap_ddp(trainable: torch.nn.Module, device: str):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    # causal LMs carry no running statistics: nothing to broadcast at every forward
    return DistributedDataParallel(
        trainable,
        device_ids=[device] if device.startswith("cuda") else None,
        broadcast_buffers=False,
    )


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


# ------------------------------------------------------------------------------------- step


def _autocast(precision: str, device_type: str):
    if precision == "no":
        return torch.autocast(device_type=device_type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def _micro_loss(s: Setup, micro: int, window_tokens: int, window_positions: int) -> LossTerms:
    batch = micro_batch(s, micro)
    return s.trainable(
        batch.ids,
        batch.labels,
        batch.attention_mask,
        teacher_targets(s, batch),
        num_tokens=window_tokens,
        num_positions=window_positions,
    )


STEP_TERMS = ("loss", "loss_kd", "loss_ce", "loss_hidden", "loss_attention")


def _divergence_error(terms: dict, step: int, last_checkpoint: Path | None):
    """The error every rank raises when the agreed losses of a step are not finite."""
    bad = [k for k in STEP_TERMS[1:] if not math.isfinite(terms[k])]
    where = (
        f"last good checkpoint: {last_checkpoint}"
        if last_checkpoint
        else "no checkpoint was written yet"
    )
    return TrainingDivergedError(
        f"loss became non-finite at step {step + 1} (term(s): {', '.join(bad) or 'total'})",
        f"lower training.learning_rate, enable max_grad_norm, or use mixed_precision: no; {where}",
    )


def _sync_context(s: Setup, last: bool):
    """DDP all-reduces gradients on the window's last backward only (one reduction per step)."""
    if last or s.world_size == 1 or not hasattr(s.trainable, "no_sync"):
        return contextlib.nullcontext()
    return s.trainable.no_sync()


def _optimizer_step(setup: Setup) -> None:
    """Clip (on unscaled gradients) and step; with fp16 the scaler skips a step with inf/NaN."""
    max_norm = setup.config.training.max_grad_norm
    if isinstance(setup.optimizer, MasterWeights):  # unscales, clips and steps per tensor
        setup.optimizer.step(max_norm)
        setup.scheduler.step()
        setup.optimizer.zero_grad(set_to_none=True)
        return
    params = setup.params
    if setup.scaler is not None:
        setup.scaler.unscale_(setup.optimizer)
    if max_norm:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
    if setup.scaler is not None:
        setup.scaler.step(setup.optimizer)
        setup.scaler.update()
    else:
        setup.optimizer.step()
    setup.scheduler.step()
    setup.optimizer.zero_grad(set_to_none=True)


def train_step(
    setup: Setup,
    progress: Progress,
    last_checkpoint: Path | None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """One optimizer step over `gradient_accumulation` micro-batches.

    Returns the step's losses (means over ranks), its learning rate and `stop`: whether any rank
    asked to stop (`should_stop`, asked once per step), so that all ranks stop after this step.
    A non-finite loss on any rank raises on every rank, before the optimizer step."""
    accumulation = setup.config.training.gradient_accumulation
    window_tokens, window_positions = window_counts(setup, progress.micro)
    sums = dict.fromkeys(STEP_TERMS, 0.0)
    for index in range(accumulation):
        with _sync_context(setup, last=index == accumulation - 1):
            terms = _micro_loss(setup, progress.micro, window_tokens, window_positions)
            # DDP averages gradients over ranks; the loss is already normalised by the global
            # window, so scale by W to get the window's sum. A NaN still goes backward: every
            # rank must reach the same all-reduces; the step is refused below.
            loss = terms.loss * setup.world_size
            if isinstance(setup.optimizer, MasterWeights):
                loss = setup.optimizer.scale_loss(loss)
            (setup.scaler.scale(loss) if setup.scaler is not None else loss).backward()
        for term, value in terms.to_dict().items():
            sums[term] += value * setup.world_size
        progress.micro += 1
    stop_requested = bool(should_stop()) if should_stop is not None else False
    agreed, stop = _agree(setup, sums, stop_requested)
    if not all(math.isfinite(v) for v in agreed.values()):
        setup.optimizer.zero_grad(set_to_none=True)
        raise _divergence_error(agreed, progress.step, last_checkpoint)
    lr = setup.scheduler.get_last_lr()[0]
    _optimizer_step(setup)
    progress.step += 1
    progress.tokens += window_positions
    return {**agreed, "lr": lr, "stop": stop}


def _agree(s: Setup, sums: dict, stop_requested: bool) -> tuple[dict, bool]:
    """The step's mean losses over ranks and whether any rank asked to stop: one all-reduce."""
    if s.world_size == 1:
        return sums, stop_requested
    import torch.distributed as dist

    values = [*sums.values(), float(stop_requested)]
    vec = torch.tensor(values, dtype=torch.float64, device=s.device)
    dist.all_reduce(vec)
    *totals, stops = vec.tolist()
    return {k: v / s.world_size for k, v in zip(sums, totals, strict=True)}, stops > 0
