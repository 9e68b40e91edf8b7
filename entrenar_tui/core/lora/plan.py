"""`lora plan` and `lora compare`: which fine-tuning method fits a GPU, and what each one costs.

Both are built on the one memory estimator (`core.memory.estimate_memory`); nothing here
counts bytes itself. Decisions, also returned in each result's `notes`:

- Methods are named `full`, `lora[-RANK]` and `qlora[-RANK]` (`qlora-4bit` is QLoRA too).
  Full fine-tuning is bf16 mixed precision with fp32 master weights; LoRA keeps a bf16 base;
  QLoRA a 4-bit NF4 base with double quantisation. Adapters train with AdamW.
- `plan` searches candidates in order of expected quality, then throughput, and takes the
  first that fits: full (AdamW, then 8-bit AdamW, which matched 32-bit Adam in Dettmers et al.
  2022) > LoRA on every linear layer of the blocks (ranks 64, 32, 16, 8) > QLoRA on every linear
  layer (same ranks) > LoRA, then QLoRA, on the attention projections only. All-linear comes
  first because Dettmers et al. 2023 (QLoRA) found the targets matter more than the rank and
  that 4-bit QLoRA matches 16-bit LoRA there; attention-only targets are the last resort.
- For each candidate gradient checkpointing is tried off before on, and the micro-batch is the
  largest divisor of the effective batch that fits (16 by default, or `--batch-size`), with
  gradient accumulation making up the rest. Sequence length defaults to 2048 tokens.
- A candidate fits when the estimate's total (which already holds the CUDA context and 5%
  allocator slack) is at most the budget: VRAM less a 10% headroom by default. The headroom is
  there because cards expose less than their nominal size (a "16 GB" T4 shows 15 GiB, a
  "24 GB" A10G 22.5 GiB) and the estimate is within a few percent of measured peaks, not exact.
  With no headroom LoRA r=32 would "fit" Llama-2-7B into 16 GiB at 99% of the card.
- alpha = 2 x rank (a common convention: the update is scaled by alpha / rank = 2); dropout 0.05
  (distill.yaml's default; the QLoRA paper used 0.1 up to 13B and 0.05 above).
- Relative speed is FLOPs per token against full fine-tuning without checkpointing (6N, Kaplan
  et al. 2020): full 6N (+2N recomputation with checkpointing); LoRA 4N + 6A for A adapter
  parameters (no weight gradients for the frozen base; +2N + 2A with checkpointing). QLoRA has
  LoRA's FLOPs times 0.7 for dequantising the base at every matmul (Raschka 2023, "Practical
  Tips for Finetuning LLMs Using LoRA": QLoRA saved 33% memory for 39% more runtime, 1/1.39 =
  0.72). Batch-size efficiency is not modelled.
- Target modules are written as the module names PEFT matches (q_proj, ..., down_proj), never
  as ["all-linear"]: PEFT expands only the bare string, and a list would match nothing.
- `compare` puts every method at the same micro-batch (1), sequence length (2048) and
  checkpointing (on); a method without a rank uses 16; adapters go on every linear layer.
- Every candidate is a `TrainSettings` (bf16 weights; fp32 master weights for full
  fine-tuning), the object the trainer runs: `--write-config` writes it as distill.yaml keys
  (student.precision, student.quantization, training.optimizer, training.master_weights, ...),
  and `distill run` on that file trains exactly what was estimated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import InvalidInputError
from ..memory import MemoryEstimate, TrainSettings
from ..sizes import format_bytes
from .methods import (  # noqa: F401 (QLORA_SPEED, RANKS, DEFAULT_RANK: re-exported)
    DEFAULT_EFFECTIVE_BATCH,
    DEFAULT_HEADROOM,
    DEFAULT_RANK,
    DEFAULT_SEQUENCE_LENGTH,
    LORA_DROPOUT,
    QLORA_SPEED,
    RANKS,
    Method,
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
class Rejected:
    """A better option that does not fit, with the smallest configuration tried for it."""

    option: str  # e.g. "lora r=64 all-linear", "full (8-bit AdamW)"
    method: str
    rank: int | None
    target_set: str | None
    optimizer: str
    batch_size: int
    gradient_checkpointing: bool
    memory_bytes: int
    budget_bytes: int
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoraPlan:
    """The best configuration that fits, why, and what the better ones would have needed."""

    model: str
    method: str
    rank: int | None
    alpha: int | None
    target_set: str | None
    target_modules: list[str]
    optimizer: str
    quantize_base: str | None
    batch_size: int
    gradient_accumulation: int
    effective_batch_size: int
    gradient_checkpointing: bool
    sequence_length: int
    parameters: int
    trainable_parameters: int
    trainable_share: float
    memory: MemoryEstimate
    vram_bytes: int
    budget_bytes: int
    headroom: float
    utilization: float  # estimated memory / VRAM
    relative_speed: float  # tokens per second against full fine-tuning without checkpointing
    quality_note: str
    settings: TrainSettings | None = None  # exactly what was estimated, and what is written
    device: str = "cuda"
    rejected: list[Rejected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    config_written: str | None = None
    base_config: str | None = None  # the config the written one was built from

    def to_dict(self) -> dict:
        skip = ("memory", "rejected", "settings")
        data = {k: v for k, v in self.__dict__.items() if k not in skip}
        data["memory"] = self.memory.to_dict()
        data["settings"] = self.settings.to_dict() if self.settings else None
        data["rejected"] = [r.to_dict() for r in self.rejected]
        return data

    def config_fragment(self) -> dict:
        """The distill.yaml keys of this plan: every setting the estimate counted, so that
        `DistillConfig.student_settings` of the merged config is `self.settings`."""
        lora = {"enabled": False}
        if self.method != "full":
            lora = {
                "enabled": True,
                "rank": self.rank,
                "alpha": self.alpha,
                "target_modules": list(self.target_modules),
                "dropout": LORA_DROPOUT,
            }
        student = {"precision": self.settings.precision, "lora": lora}
        if self.quantize_base:
            student["quantization"] = {
                "method": self.quantize_base,
                "double_quant": self.settings.double_quant,
            }
        training = {
            "batch_size": self.batch_size,
            "gradient_accumulation": self.gradient_accumulation,
            "gradient_checkpointing": self.gradient_checkpointing,
            "optimizer": self.optimizer,
            "mixed_precision": "no",  # the weights are bf16 already
        }
        if self.settings.master_weights is not None:
            training["master_weights"] = self.settings.master_weights
        return {
            "student": student,
            "training": training,
            "dataset": {"max_length": self.sequence_length},
        }


# ---- plan --------------------------------------------------------------------------------------


def _candidates(method: Method) -> list[_Candidate]:
    ranks = (method.rank,) if method.rank else RANKS
    full = [_Candidate("full"), _Candidate("full", optimizer="adamw8bit")]
    if method.kind == "full":
        return [c for c in full if method.optimizer in (None, c.optimizer)]
    kinds = ("lora", "qlora") if method.kind == "auto" else (method.kind,)
    ordered = [(k, t) for t in ("all-linear", "attention") for k in kinds]
    adapters = [_Candidate(k, r, t) for k, t in ordered for r in ranks]
    return (full if method.kind == "auto" else []) + adapters


@dataclass
class _Search:
    """One candidate's search: the fit (if any) and the estimates that explain it."""

    fit: tuple[MemoryEstimate, int, bool] | None = None  # estimate, micro-batch, checkpointing
    smallest: tuple[MemoryEstimate, int, bool] | None = None
    without_checkpointing: MemoryEstimate | None = None  # micro-batch 1, when that did not fit


def _search(model, cand, targets, seq, effective, budget, device, attention) -> _Search:
    micro_batches = [b for b in range(effective, 0, -1) if effective % b == 0]
    found = _Search()
    for ckpt in (False, True):
        for batch in micro_batches:
            settings = candidate_settings(cand, targets, batch, seq, ckpt, device, attention)
            est = _estimate(model, settings)
            if est.total_bytes <= budget:
                found.fit = (est, batch, ckpt)
                return found
            found.smallest = (est, batch, ckpt)
        if not ckpt:
            found.without_checkpointing = found.smallest[0]
    return found


def _rejected(cand: _Candidate, search: _Search, vram: int, budget: int) -> Rejected:
    est, batch, ckpt = search.smallest
    reason = (
        f"needs {format_bytes(est.total_bytes)} at micro-batch {batch}"
        f"{' with gradient checkpointing' if ckpt else ''}; the budget is {format_bytes(budget)}"
    )
    if est.total_bytes <= vram:
        reason += f" (it fits {format_bytes(vram)} only without the headroom)"
    return Rejected(
        cand.label,
        cand.kind,
        cand.rank,
        cand.target_set,
        cand.optimizer,
        batch,
        ckpt,
        est.total_bytes,
        budget,
        reason,
    )


def _plan_notes(model, cand, search, seq_given, batch_given, headroom) -> list[str]:
    est, batch, ckpt = search.fit
    effective = DEFAULT_EFFECTIVE_BATCH if batch_given is None else batch_given
    notes = [
        f"sequence length {est.inputs['sequence_length']} tokens"
        + ("" if seq_given is not None else " (the default; set --sequence-length)"),
        f"micro-batch {batch} x gradient accumulation {effective // batch} = effective batch {effective}"
        + ("" if batch_given is not None else " (the default; set --batch-size)"),
        f"budget: VRAM less {headroom:.0%} headroom, for cards that expose less than their nominal size and the estimate's error",
        "speed: FLOPs per token against full fine-tuning without checkpointing (6N); LoRA skips the frozen base's weight gradients (4N), checkpointing recomputes the forward (+2N), QLoRA x0.7 for dequantisation",
        "bf16 weights (student.precision); on GPUs without bf16 (T4, V100) use fp16: the memory is the same",
    ]
    if cand.kind != "full":
        notes.append("alpha = 2 x rank (the update is scaled by alpha / rank = 2)")
    if ckpt and search.without_checkpointing:
        notes.append(
            f"gradient checkpointing is on: without it micro-batch 1 needs {format_bytes(search.without_checkpointing.total_bytes)}"
        )
    if cand.kind == "qlora":
        notes.append(
            "QLoRA: the base loads in 4-bit NF4 with double quantisation (bitsandbytes; student.quantization)"
        )
    if cand.optimizer == "adamw8bit":
        notes.append("8-bit AdamW from bitsandbytes (training.optimizer: adamw8bit)")
    if model.kind == "gguf":
        notes.append("the GGUF file's own quantisation is ignored: training loads 16-bit weights")
    return notes


def _nothing_fits(label: str, searches: list, vram: int, budget: int, headroom: float, method):
    cand, search = min(searches, key=lambda item: item[1].smallest[0].total_bytes)
    est, batch, ckpt = search.smallest
    hint = "more VRAM, a shorter --sequence-length, or a smaller model"
    if method.kind != "auto":
        hint = "try --method auto (it falls back to QLoRA), " + hint
    raise InvalidInputError(
        f"{label} needs at least {format_bytes(est.total_bytes)} to train ({cand.label}, micro-batch {batch}"
        f"{', gradient checkpointing' if ckpt else ''}); the budget is {format_bytes(budget)} ({format_bytes(vram)} less {headroom:.0%} headroom)",
        hint,
    )


def plan_lora(
    model,
    vram: str | int,
    *,
    method: str = "auto",
    batch_size: int | None = None,
    sequence_length: int | None = None,
    headroom: float = DEFAULT_HEADROOM,
    write_config: str | Path | None = None,
    device: str = "cuda",
    config: str | Path | None = None,
) -> LoraPlan:
    """The best fine-tuning configuration of `model` that fits `vram` (see the module docstring).

    `batch_size` is the effective batch (default 16), split into micro-batches when needed.
    `device` is where it trains: cuda counts a CUDA context and allocator slack, cpu the
    runtime's resident memory (`vram` is then the RAM to fit). `write_config` writes the plan's
    distill.yaml keys; with `config` (a base distill.yaml) it writes that config with the plan
    applied, one `distill run` takes as it is."""
    wanted = Method("auto") if str(method).strip().lower() == "auto" else parse_method(method)
    vram_bytes, budget = _budget(vram, headroom)
    seq = DEFAULT_SEQUENCE_LENGTH if sequence_length is None else sequence_length
    effective = DEFAULT_EFFECTIVE_BATCH if batch_size is None else batch_size
    _positive("sequence_length", seq)
    _positive("batch_size", effective)
    if write_config and Path(write_config).is_dir():
        raise InvalidInputError(f"{write_config} is a folder", "give a file, e.g. lora-plan.yaml")
    if device not in ("cuda", "cpu"):
        raise InvalidInputError(
            f"--device must be cuda or cpu, not {device!r}", "pass --device cpu"
        )
    base = load_base_config(config) if config else None
    attention = base.attention_implementation if base else "sdpa"
    handle = _open(model)
    shape, label = _shape(handle), str(handle.source.ref)
    searches = []
    for cand in _candidates(wanted):
        targets = _targets(shape, cand.target_set)
        search = _search(handle, cand, targets, seq, effective, budget, device, attention)
        if search.fit:
            break
        searches.append((cand, search))
    else:
        _nothing_fits(label, searches, vram_bytes, budget, headroom, wanted)
    est, batch, ckpt = search.fit
    rank, trainable = cand.rank, est.trainable_parameters
    plan = LoraPlan(
        model=label,
        method=cand.kind,
        rank=rank,
        alpha=2 * rank if rank else None,
        target_set=cand.target_set,
        target_modules=_targets(shape, cand.target_set),
        optimizer=cand.optimizer,
        quantize_base="nf4" if cand.kind == "qlora" else None,
        batch_size=batch,
        gradient_accumulation=effective // batch,
        effective_batch_size=effective,
        gradient_checkpointing=ckpt,
        sequence_length=seq,
        parameters=est.parameters,
        trainable_parameters=trainable,
        trainable_share=trainable / est.parameters,
        memory=est,
        vram_bytes=vram_bytes,
        budget_bytes=budget,
        headroom=headroom,
        utilization=est.total_bytes / vram_bytes,
        relative_speed=relative_speed(cand.kind, est.parameters, trainable, ckpt),
        quality_note=quality_note(cand.kind, rank, cand.target_set, cand.optimizer),
        settings=candidate_settings(
            cand, _targets(shape, cand.target_set), batch, seq, ckpt, device, attention
        ),
        device=device,
        rejected=[_rejected(c, s, vram_bytes, budget) for c, s in searches],
        notes=_plan_notes(handle, cand, search, sequence_length, batch_size, headroom),
        base_config=str(config) if config else None,
    )
    if write_config:
        write_plan_config(plan, write_config)
    return plan


def load_base_config(path: str | Path):
    """The base distill.yaml a written plan starts from, checked as `distill run` would."""
    from ..distill.config import load_config

    return load_config(path)


def plan_config_yaml(plan: LoraPlan) -> str:
    """The plan as distill.yaml, with a comment header saying what it assumes: the keys to merge,
    or (with a base config) the base with the plan applied."""
    import yaml

    what = (
        "full fine-tuning"
        if plan.method == "full"
        else f"{plan.method} r={plan.rank} ({plan.target_set})"
    )
    header = [
        f"# entrenar lora plan: {plan.model} on {format_bytes(plan.vram_bytes)} of {plan.device} memory",
        f"# {what}: about {format_bytes(plan.memory.total_bytes)} ({plan.utilization:.0%}) at {plan.sequence_length} tokens (dataset.max_length)",
        f"# effective batch {plan.effective_batch_size} = batch_size {plan.batch_size} x gradient_accumulation {plan.gradient_accumulation}",
    ]
    header += [f"# {n}" for n in plan.notes if n.startswith(("QLoRA", "8-bit"))]
    data = plan.config_fragment()
    if plan.base_config:
        data = _applied(plan, data)
        header.append(f"# {plan.base_config} with the plan applied; the student is {plan.model}")
    else:
        header.append("# merge these keys into distill.yaml")
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    return "\n".join(header) + "\n" + body


def _applied(plan: LoraPlan, fragment: dict) -> dict:
    """The base config's own YAML with the plan's keys merged in (the student becomes the
    planned model), validated as a whole."""
    from ..distill.config import load_yaml, parse_config
    from ..errors import ConfigError

    data = load_yaml(plan.base_config)
    student = data.setdefault("student", {})
    student.pop("init_from_teacher", None)
    student["model_id"] = plan.model
    for section, values in fragment.items():
        data.setdefault(section, {}).update(values)
    _config, problems = parse_config(data)
    if problems:
        raise ConfigError(
            f"the plan applied to {plan.base_config} is not a valid config:"
            f" {problems[0].path}: {problems[0].message}",
            problems[0].hint,
        )
    return data


def write_plan_config(plan: LoraPlan, path: str | Path) -> Path:
    """Write the plan's distill.yaml fragment atomically; record where in the plan."""
    from ..fsutil import write_text_atomic

    path = Path(path)
    write_text_atomic(path, plan_config_yaml(plan))
    plan.config_written = str(path)
    return path
