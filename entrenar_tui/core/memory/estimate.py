"""The one training-memory estimator: `inspect memory`, `lora plan`, `distill estimate` and the
TUI planner all call `estimate_memory`.

The estimate is the peak of one steady-state training step (the second and later: optimizer
state exists, gradients were set to None after the last step), taken as the largest of the
moments where memory peaks: the start of backward (every saved activation plus the loss
buffers), the output head's backward, a block's backward (or its recomputation under
gradient checkpointing) and the end of backward (every gradient). `breakdown` is what is
alive at that moment, so it always sums to `total_bytes`.

Conventions (also returned in `notes`):
- `precision` is the dtype the model's weights are stored and computed in. Full fine-tuning in
  fp16/bf16 keeps fp32 master weights and fp32 optimizer state by default (mixed precision as
  in ZeRO, Rajbhandari et al. 2020: 2 + 2 + 4 + 8 bytes per parameter); `master_weights=False`
  is pure 16-bit training, where torch's optimizers keep their state in the weights' dtype.
  HF Trainer's `bf16=True` over fp32 weights costs the same per parameter (4 + 4 + 8).
- LoRA adapters are fp32 (PEFT's `autocast_adapter_dtype`), as are their gradients and state.
- NF4 (QLoRA) stores block linear weights at 4 bits plus one absmax per 64 weights (fp32, or
  8 bits with fp32 second-level constants per 256 blocks under double quantisation); every
  other parameter is upcast to fp32, as PEFT's `prepare_model_for_kbit_training` does.
- AdamW is torch's fused kernel (HF Trainer's default from torch 2.8): no step temporaries.
- The forward runs without a KV cache, and the loss follows transformers: causal LMs upcast
  logits to fp32 before cross-entropy, masked LMs and T5 do not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..models.arch import ArchInfo
from ..sizes import format_bytes
from .activations import Saved, saved_inventory
from .notes import estimate_notes
from .options import (
    ADAM8BIT_BLOCK,
    ADAM8BIT_CPU_STEP_BYTES,
    ADAM8BIT_MIN_SIZE,
    CPU_RUNTIME_BYTES,
    CPU_STEP_BOOKKEEPING_BYTES,
    CUDA_CONTEXT_BYTES,
    CUDA_FRAGMENTATION,
    NF4_BLOCK,
    NF4_NESTED_BLOCK,
    PRECISION_BYTES,
)
from .settings import TrainSettings
from .shape import ModelShape, model_shape

KEYS = (
    "weights",
    "adapters",
    "master_weights",
    "optimizer",
    "gradients",
    "activations",
    "logits",
    "workspace",
    "overhead",
)


@dataclass
class MemoryEstimate:
    """Peak training memory of one configuration, with what is alive at the peak."""

    total_bytes: int
    breakdown: dict[str, int]
    parameters: int
    trainable_parameters: int
    peak_phase: str
    inputs: dict
    notes: list[str] = field(default_factory=list)

    @property
    def peak_tensor_bytes(self) -> int:
        """The peak of live tensors (what torch.cuda.max_memory_allocated reports)."""
        return self.total_bytes - self.breakdown["overhead"]

    @property
    def step_bytes(self) -> int:
        """What measuring the step sees: the tensor peak on CUDA (max_memory_allocated); on
        CPU the resident set's growth, which also holds the step's bookkeeping."""
        if self.inputs.get("device") == "cpu":
            return self.total_bytes - CPU_RUNTIME_BYTES
        return self.peak_tensor_bytes

    def to_dict(self) -> dict:
        data = asdict(self)
        data["peak_tensor_bytes"] = self.peak_tensor_bytes
        data["step_bytes"] = self.step_bytes
        return data

    def summary(self) -> str:
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in self.breakdown.items() if v)
        return f"{format_bytes(self.total_bytes)} at {self.peak_phase} ({parts})"


@dataclass(frozen=True)
class _Plan:
    """Validated inputs and the facts derived from them."""

    shape: ModelShape
    batch: int
    seq: int
    weight_bytes: int  # bytes per stored (unquantised) weight
    compute: int  # bytes per activation element
    lora: tuple  # LoRA-wrapped groups
    rank: int
    master: bool
    extra_parameters: int  # caller's count minus the module formulas' count


def _nf4_bytes(numel: int, double_quant: bool) -> int:
    """Packed 4-bit weights plus quantisation constants, per tensor (bitsandbytes Params4bit)."""
    blocks = math.ceil(numel / NF4_BLOCK)
    if not double_quant:
        return numel // 2 + 4 * blocks + 64  # fp32 absmax per block, the 16-entry NF4 code
    nested = math.ceil(blocks / NF4_NESTED_BLOCK)
    return numel // 2 + blocks + 4 * nested + 4 + 64 + 1024  # 8-bit absmax, its code and scales


def _int8_bytes(rows: int, columns: int) -> int:
    """LLM.int8 weights (bitsandbytes Int8Params): one byte per weight, one fp32 scale per row."""
    return rows * columns + 4 * rows


def _weights(plan: _Plan, quantize_base: str | None, double_quant: bool) -> int:
    if not quantize_base:
        return (plan.shape.parameters + plan.extra_parameters) * plan.weight_bytes
    total = plan.extra_parameters * 4
    for group in plan.shape.groups:
        if group.kind == "linear" and group.in_blocks:
            numel = group.in_features * group.out_features
            quantized = (
                _int8_bytes(group.out_features, group.in_features)
                if quantize_base == "int8"
                else _nf4_bytes(numel, double_quant)
            )
            total += group.count * (quantized + 4 * (group.each - numel))
        else:
            total += group.parameters * 4
    return total


def _trainable_tensors(plan: _Plan) -> list[tuple[int, int]]:
    """(numel, count) of every trainable tensor: what gradients and optimizer state cover."""
    if plan.lora:
        return [(plan.rank * g.in_features, g.count) for g in plan.lora] + [
            (plan.rank * g.out_features, g.count) for g in plan.lora
        ]
    tensors = [(plan.extra_parameters, 1)] if plan.extra_parameters > 0 else []
    for group in plan.shape.groups:
        width = group.out_features if group.kind in ("linear", "norm") else 0
        main = group.each - (width if group.bias else 0)
        tensors += [(main, group.count)] + ([(width, group.count)] if group.bias else [])
    return tensors


def _optimizer_bytes(optimizer: str, tensors: list[tuple[int, int]], state_bytes: int) -> int:
    if optimizer == "sgd":  # one momentum buffer
        return sum(n * k for n, k in tensors) * state_bytes
    if optimizer == "adamw":  # exp_avg and exp_avg_sq
        return sum(n * k for n, k in tensors) * 2 * state_bytes
    total = 0  # bitsandbytes AdamW8bit: two uint8 states plus an fp32 absmax per 256 values
    for numel, count in tensors:
        if numel < ADAM8BIT_MIN_SIZE:
            total += count * numel * 8
        else:
            total += count * (2 * numel + 2 * 4 * math.ceil(numel / ADAM8BIT_BLOCK))
    return total


def _transient(plan: _Plan, saved: Saved) -> int:
    """Per token: gradients alive together inside one block's backward, at its widest step.

    Measured at the SwiGLU product's backward, the widest step: the block output's gradient,
    the product's gradient (which replaces the freed product when the down projection trains,
    and is new when it is frozen) and both factors' gradients. A math-kernel attention's
    backward holds the probabilities' gradient instead, when that is wider.
    """
    shape, compute = plan.shape, plan.compute
    hidden, intermediate = shape.hidden, shape.intermediate
    mlp = hidden + 2 * intermediate if saved.full else hidden + 3 * intermediate
    attention = 0
    if saved.attention == "eager" or (saved.device == "cpu" and shape.dropout.get("attention")):
        attention = hidden + shape.heads * plan.seq
    return compute * max(mlp, attention)


def _activations(
    plan: _Plan, attention: str, device: str, checkpointing: bool, lora_dropout: float
) -> dict:
    """Bytes that backward finds at its peaks: saved activations (all of them, or the
    checkpointed inputs), one block's recomputed set, its backward temporaries, the loss."""
    shape, compute, tokens = plan.shape, plan.compute, plan.batch * plan.seq
    paths = frozenset(g.path for g in plan.lora)
    saved = Saved(
        compute,
        not plan.lora,
        paths,
        plan.rank,
        device,
        attention,
        input_grads=not plan.lora,
        lora_dropout=lora_dropout > 0,
    )
    inv = saved_inventory(shape, saved, plan.seq)
    layers = sum(count for count, _ in inv.blocks)
    block = max(per_token for _, per_token in inv.blocks)
    # at the first block's backward only that block's set (recomputed or kept) is left
    bottom = tokens * (block + inv.outside - inv.head) + inv.fixed
    if checkpointing:  # blocks keep their input; backward recomputes one block (less its output)
        kept = tokens * (layers * inv.block_input + inv.outside) + inv.fixed
        top = kept - tokens * inv.head + tokens * (block - inv.block_input)
    else:
        kept = tokens * (sum(count * per for count, per in inv.blocks) + inv.outside) + inv.fixed
        top = kept - tokens * inv.head
    loss_bytes = shape.options.get("loss_bytes") or compute
    return {
        "kept": kept,
        "top": top,
        "bottom": bottom,
        "transient": tokens * _transient(plan, saved),
        "loss": tokens * shape.vocab * loss_bytes,
        "loss_cast": tokens * shape.vocab * compute if loss_bytes != compute else 0,
        "hidden_grad": tokens * shape.hidden * compute,
    }


def _gradient_stages(plan: _Plan, grad_bytes: int, tensors: list[tuple[int, int]]) -> dict:
    """Gradient bytes: all, the head's (allocated first), and those not yet there when the
    first block's backward runs (that block's and the input embeddings')."""
    total = sum(n * k for n, k in tensors) * grad_bytes
    if plan.lora:
        per_block = (
            sum(plan.rank * (g.in_features + g.out_features) for g in plan.lora) * grad_bytes
        )
        return {"all": total, "head": 0, "late": per_block}
    shape = plan.shape
    per_block = sum(g.each for g in shape.groups if g.in_blocks) * grad_bytes
    embeddings = sum(g.parameters for g in shape.groups if g.kind == "embedding") * grad_bytes
    head = shape.vocab * shape.hidden * grad_bytes
    if shape.tied:  # the tied embedding's gradient arrives with the head's
        embeddings -= head
    return {"all": total, "head": head, "late": per_block + embeddings}


def _step_workspace(settings: TrainSettings, master: bool, tensors) -> int:
    """Temporaries of the optimizer step, at its largest tensor (the embedding, stepped first,
    while every other gradient is still alive): the fp32 copy of its gradient under master
    weights (optim.py steps one tensor at a time), and bitsandbytes' 8-bit AdamW on CPU, whose
    PyTorch fallback dequantises that tensor's two states and updates them in fp32: measured
    20.0 bytes per element at 4M and 16M elements. Fused AdamW and SGD allocate none."""
    largest = max((numel for numel, _count in tensors), default=0)
    per_element = (4 if master else 0) + (
        ADAM8BIT_CPU_STEP_BYTES
        if settings.optimizer == "adamw8bit" and settings.device == "cpu"
        else 0
    )
    return largest * per_element


def _phases(
    persistent: dict, act: dict, grads: dict, dequant: int, step_ws: int
) -> list[tuple[str, dict]]:
    """What is alive at each moment where a training step can peak."""
    block_ws = act["transient"] + dequant
    phases = [
        (
            "the loss backward",
            {"activations": act["kept"], "logits": 3 * act["loss"], "workspace": dequant},
        ),
        (
            "the output head's backward",
            {
                "activations": act["kept"],
                "logits": act["loss"] + act["loss_cast"],
                "gradients": grads["head"],
                "workspace": act["hidden_grad"] + dequant,
            },
        ),
        (
            "the last block's backward",
            {"activations": act["top"], "gradients": grads["head"], "workspace": block_ws},
        ),
        (
            "the first block's backward",
            {
                "activations": act["bottom"],
                "gradients": grads["all"] - grads["late"],
                "workspace": block_ws,
            },
        ),
        ("the end of backward", {"gradients": grads["all"], "workspace": act["hidden_grad"]}),
        ("the optimizer step", {"gradients": grads["all"], "workspace": step_ws}),
    ]
    return [
        (name, {k: persistent.get(k, 0) + parts.get(k, 0) for k in KEYS}) for name, parts in phases
    ]


def estimate_memory(
    arch: ArchInfo,
    settings: TrainSettings | None = None,
    *,
    parameters: int | None = None,
    config: dict | None = None,
    **options,
) -> MemoryEstimate:
    """Peak memory of training `arch` with `settings` (or the same fields as keywords);
    `config` (config.json) sharpens it."""
    if settings is None:
        settings = TrainSettings.from_options(**options)
    elif options:
        settings = settings.with_(**options)
    shape = model_shape(arch, config)
    rank = settings.lora_rank
    targets = (list(settings.lora_targets or ()) or shape.default_lora_targets) if rank else None
    lora = tuple(shape.lora_targets(targets)) if rank else ()
    weight_bytes = PRECISION_BYTES[settings.precision]
    master = bool(lora == () and settings.uses_master_weights)
    extra = (parameters - shape.parameters) if parameters else 0
    # PEFT's k-bit preparation upcasts the embeddings and norms to fp32, so a quantized base's
    # residual stream and every linear's output are fp32 (measured on CPU, test_plan_runs)
    compute = 4 if settings.quantize_base else weight_bytes
    plan = _Plan(
        shape,
        settings.batch_size,
        settings.sequence_length,
        weight_bytes,
        compute,
        lora,
        rank or 0,
        master,
        extra,
    )
    tensors = _trainable_tensors(plan)
    trainable = sum(n * k for n, k in tensors)
    grad_bytes = 4 if lora else weight_bytes
    state_bytes = 4 if (lora or master) else weight_bytes
    quantize_base = settings.quantize_base
    persistent = {
        "weights": _weights(plan, quantize_base, settings.double_quant),
        "adapters": 4 * trainable if lora else 0,
        "master_weights": 4 * trainable if master else 0,
        "optimizer": _optimizer_bytes(settings.optimizer, tensors, state_bytes),
    }
    device = settings.device
    act = _activations(
        plan, settings.attention, device, settings.gradient_checkpointing, settings.lora_dropout
    )
    dequant = 0  # bitsandbytes dequantises one quantized weight at a time for each matmul
    if quantize_base:
        widest = max(g.in_features * g.out_features for g in shape.linear_groups if g.in_blocks)
        dequant = widest * weight_bytes
    step_ws = _step_workspace(settings, master, tensors)
    grads = _gradient_stages(plan, grad_bytes, tensors)
    phases = _phases(persistent, act, grads, dequant, step_ws)
    peak_phase, breakdown = max(phases, key=lambda item: sum(item[1].values()))
    tensor_peak = sum(breakdown.values())
    slack = CUDA_CONTEXT_BYTES + int(CUDA_FRAGMENTATION * tensor_peak)
    breakdown["overhead"] = (
        slack if device == "cuda" else CPU_RUNTIME_BYTES + CPU_STEP_BOOKKEEPING_BYTES
    )
    inputs = settings.with_(lora_targets=targets).to_dict()
    inputs["master_weights"] = master
    return MemoryEstimate(
        total_bytes=sum(breakdown.values()),
        breakdown=breakdown,
        parameters=shape.parameters + plan.extra_parameters,
        trainable_parameters=trainable,
        peak_phase=peak_phase,
        inputs=inputs,
        notes=estimate_notes(plan, settings),
    )


def estimate_for_model(model, settings: TrainSettings | None = None, **options) -> MemoryEstimate:
    """`estimate_memory` for a model reference (path, hub id, packaged name) or an open Model."""
    from ..models.handle import Model

    if isinstance(model, str | Path):
        model = Model.open(model)
    config = model.source.config if model.source.config and model.kind != "gguf" else None
    options.setdefault("config", config)
    if config is None and model.tensors:
        options.setdefault("parameters", model.parameters)
    return estimate_memory(model.arch, settings, **options)
