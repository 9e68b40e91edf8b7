"""The distillation loop: read it top to bottom.

`run_distillation` builds the teacher, the student and the loss, then steps an AdamW loop with
warmup + decay, gradient accumulation and clipping, writing the run directory as it goes.
Determinism: the data order is a function of (seed, epoch) and the micro-batch counter, and the
checkpoint holds every RNG, so a resumed run continues bit-for-bit on CPU.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import CheckFailedError
from .config import DistillConfig

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

    d = config.distillation
    hidden = attention = None
    if d.progressive.enabled:
        hidden = HiddenStateLoss(
            d.progressive.layer_mapping,
            student.config.hidden_size,
            teacher.config.hidden_size,
            loss=d.progressive.loss,
        )
    if d.attention.enabled:
        attention = AttentionLoss(config.attention_mapping(), loss=d.attention.loss)
    return DistillationLoss(
        temperature=d.temperature,
        alpha=d.alpha,
        divergence=d.divergence,
        hidden_loss=hidden,
        hidden_weight=d.progressive.weight if hidden else 0.0,
        attention_loss=attention,
        attention_weight=d.attention.weight if attention else 0.0,
    )


def _build_student(config: DistillConfig, teacher, device: str):
    from .modeling import load_causal_lm, student_from_teacher

    if config.student.init_from_teacher is not None:
        student = student_from_teacher(teacher, config.student.init_from_teacher.layers)
    else:
        student = load_causal_lm(config.student.model_id, device)
    if config.training.gradient_checkpointing:
        student.gradient_checkpointing_enable()
    lora = config.student.lora
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
    return student.to(device)


def build(config: DistillConfig) -> Setup:
    from .data import build_dataset, load_documents
    from .modeling import load_causal_lm, load_tokenizer, pick_device

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    world_size, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(config.device)
    if device == "cuda" and world_size > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    tokenizer = load_tokenizer(config.teacher.model_id)
    teacher = load_causal_lm(config.teacher.model_id, device).eval().requires_grad_(False)
    student = _build_student(config, teacher, device)
    loss_fn = _build_loss(config, student, teacher).to(device)
    ds = config.dataset
    docs = load_documents(
        ds.source, ds.path, ds.name, ds.split, ds.text_field, ds.streaming, ds.max_documents
    )
    data = build_dataset(docs, tokenizer, ds.max_length, ds.eval_fraction)
    t = config.training
    params = [p for p in list(student.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    # fused: one kernel per step, no foreach temporaries (what the memory estimator assumes)
    optimizer = torch.optim.AdamW(
        params, lr=t.learning_rate, weight_decay=t.weight_decay, fused=True
    )
    per_step = t.batch_size * t.gradient_accumulation * world_size
    steps_per_epoch = max(1, len(data.train) // per_step)
    total = t.max_steps or t.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(t.scheduler, t.warmup_steps, total)
    )
    if world_size > 1:
        student = _wrap_ddp(student, device)
    eval_blocks = data.eval[: t.eval_max_blocks]
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
    )


def _wrap_ddp(student, device: str):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return DistributedDataParallel(
        student, device_ids=[device] if device.startswith("cuda") else None
    )


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


# ------------------------------------------------------------------------------------- data


def micro_batch(s: Setup, micro: int) -> tuple[list[int], torch.Tensor]:
    """Block indices and ids of this rank's `micro`-th micro-batch. Global micro-batch g covers
    blocks [g*B, (g+1)*B) of the epoch's permutation; rank r takes g = micro*W + r, so W ranks with
    accumulation A see exactly the blocks one process sees with accumulation A*W."""
    bs = s.config.training.batch_size
    per_epoch = len(s.train_blocks) // bs
    g = micro * s.world_size + s.rank
    epoch, index = divmod(g, per_epoch)
    order = torch.randperm(
        len(s.train_blocks), generator=torch.Generator().manual_seed(s.config.seed * 1000 + epoch)
    )
    chosen = order[index * bs : (index + 1) * bs].tolist()
    ids = torch.tensor([s.train_blocks[i] for i in chosen], dtype=torch.long, device=s.device)
    return chosen, ids


def teacher_logits(s: Setup, blocks: list[int], ids: torch.Tensor, want_states: bool):
    """Teacher forward under no_grad, or its top-k cache once every block has been seen. With the
    cache enabled, cached and uncached steps both use the reconstruction of `_compress`, so they
    compute the same loss."""
    cache = s.config.distillation.teacher_cache
    cached = cache.enabled and not want_states and all(b in s.teacher_cache for b in blocks)
    outputs = None
    if cached:
        entries = [s.teacher_cache[b] for b in blocks]
        parts = [torch.stack([e[i] for e in entries]).to(s.device) for i in range(3)]
    else:
        with torch.no_grad():
            need_att = s.loss_fn.needs_attentions
            outputs = s.teacher(
                input_ids=ids,
                output_hidden_states=want_states,
                output_attentions=need_att and want_states,
            )
        if not cache.enabled:
            return outputs.logits, outputs
        parts = _compress(outputs.logits, cache.top_k, s.config.distillation.temperature)
        if s.cache_coverage is None:
            s.cache_coverage = _coverage(outputs.logits, parts, s.config.distillation.temperature)
        for row, b in enumerate(blocks):
            s.teacher_cache[b] = tuple(p[row].cpu() for p in parts)
    values, indices, tail = parts
    full = tail.float().expand(*indices.shape[:-1], _unwrap(s.student).config.vocab_size)
    return full.clone().scatter_(-1, indices.long(), values.float()), outputs


def _coverage(logits: torch.Tensor, parts, temperature: float) -> float:
    """Mean share of the teacher's probability (at T) that the kept top k hold."""
    total = torch.logsumexp(logits.float() / temperature, -1)
    head = torch.logsumexp(parts[0].float() / temperature, -1)
    return float((head - total).exp().mean())


def _compress(logits: torch.Tensor, k: int, temperature: float):
    """(top-k logits as fp16, their int32 indices, one fp32 logit for every other token).

    The tail logit is chosen so that, at the run's temperature, the tokens outside the top k keep
    their total probability, spread evenly. Dropping the tail instead (-inf) renormalises the top
    k: SmolLM2-135M's top 64 hold only 19 % of the mass at T=2, so that target is ~5x sharper than
    the teacher's (gradient cosine 0.79 against full KD, vs 0.998 with the even tail; measured
    on the demo's first batch)."""
    logits = logits.float()
    vocab = logits.shape[-1]
    top = logits.topk(min(k, vocab - 1), dim=-1)
    values = top.values.half()
    scaled_total = torch.logsumexp(logits / temperature, -1, keepdim=True)
    scaled_head = torch.logsumexp(values.float() / temperature, -1, keepdim=True)
    gap = (scaled_head - scaled_total).clamp_max(-1e-7)  # log of the top k's share, < 0
    tail_share = torch.log(-torch.expm1(gap))  # log(1 - share)
    tail = temperature * (scaled_total + tail_share - math.log(vocab - top.indices.shape[-1]))
    return values, top.indices.int(), tail


# ------------------------------------------------------------------------------------- step


def _autocast(s: Setup):
    mp = s.config.training.mixed_precision
    if mp == "no":
        return torch.autocast(device_type="cpu", enabled=False)
    dtype = torch.bfloat16 if mp == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if s.device.startswith("cuda") else "cpu", dtype=dtype)


def _micro_loss(s: Setup, micro: int, window_tokens: int, window_positions: int):
    blocks, ids = micro_batch(s, micro)
    want_states = s.loss_fn.needs_hidden_states or s.loss_fn.needs_attentions
    t_logits, t_out = (
        teacher_logits(s, blocks, ids, want_states)
        if s.loss_fn.needs_teacher_logits or want_states
        else (None, None)
    )
    with _autocast(s):
        out = s.student(
            input_ids=ids,
            output_hidden_states=s.loss_fn.needs_hidden_states,
            output_attentions=s.loss_fn.needs_attentions,
        )
    labels = ids[:, 1:]
    terms = s.loss_fn(
        out.logits[:, :-1],
        labels,
        t_logits[:, :-1] if t_logits is not None else None,
        num_tokens=window_tokens,
        num_positions=window_positions,
        student_hidden=out.hidden_states[1:] if out.hidden_states else None,
        teacher_hidden=t_out.hidden_states[1:]
        if t_out is not None and t_out.hidden_states
        else None,
        student_attentions=out.attentions,
        teacher_attentions=t_out.attentions if t_out is not None else None,
    )
    return terms, ids.numel()


def _check_finite(terms, step: int, last_checkpoint: Path | None) -> None:
    if torch.isfinite(terms.loss):
        return
    bad = [k for k, v in terms.to_dict().items() if k != "loss" and not math.isfinite(v)]
    where = (
        f"last good checkpoint: {last_checkpoint}"
        if last_checkpoint
        else "no checkpoint was written yet"
    )
    raise TrainingDivergedError(
        f"loss became non-finite at step {step + 1} (term(s): {', '.join(bad) or 'total'})",
        f"lower training.learning_rate, enable max_grad_norm, or use mixed_precision: no; {where}",
    )


def train_step(s: Setup, p: Progress, last_checkpoint: Path | None) -> dict:
    """One optimizer step over `gradient_accumulation` micro-batches."""
    t = s.config.training
    seq = s.config.dataset.max_length
    window_tokens = t.batch_size * t.gradient_accumulation * (seq - 1) * s.world_size
    window_positions = t.batch_size * t.gradient_accumulation * seq * s.world_size
    sums = {"loss": 0.0, "loss_kd": 0.0, "loss_ce": 0.0, "loss_hidden": 0.0, "loss_attention": 0.0}
    for _ in range(t.gradient_accumulation):
        terms, n = _micro_loss(s, p.micro, window_tokens, window_positions)
        _check_finite(terms, p.step, last_checkpoint)
        # DDP averages gradients over ranks; the loss is already normalised by the global window.
        (terms.loss * s.world_size).backward()
        for k, v in terms.to_dict().items():
            sums[k] += v * s.world_size
        p.micro += 1
        p.tokens += n * s.world_size
    if t.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(
            [q for g in s.optimizer.param_groups for q in g["params"]], t.max_grad_norm
        )
    lr = s.scheduler.get_last_lr()[0]
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    p.step += 1
    return {**_reduce(s, sums), "lr": lr}


def _reduce(s: Setup, sums: dict) -> dict:
    if s.world_size == 1:
        return sums
    import torch.distributed as dist

    vec = torch.tensor(list(sums.values()), dtype=torch.float64, device=s.device)
    dist.all_reduce(vec)
    return {k: float(v) / s.world_size for k, v in zip(sums, vec.tolist(), strict=True)}
