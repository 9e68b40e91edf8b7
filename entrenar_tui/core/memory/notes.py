"""The conventions an estimate rests on, as sentences returned in its `notes`."""

from __future__ import annotations

from ..sizes import format_bytes
from .options import (
    CPU_RUNTIME_BYTES,
    CPU_STEP_BOOKKEEPING_BYTES,
    CUDA_CONTEXT_BYTES,
    CUDA_FRAGMENTATION,
)
from .settings import TrainSettings


def estimate_notes(plan, settings: TrainSettings) -> list[str]:
    """`plan` is the estimator's validated plan (shape, lora groups, rank, master...)."""
    optimizer, quantize = settings.optimizer, settings.quantize_base
    checkpointing, device = settings.gradient_checkpointing, settings.device
    family = plan.shape.family
    candidates = [
        (
            True,
            "peak of a steady-state step: optimizer state exists, gradients are None between steps",
        ),
        (
            bool(plan.lora),
            f"LoRA r={plan.rank} on {', '.join(g.path for g in plan.lora)}; adapters, their gradients and optimizer state in fp32",
        ),
        (
            not plan.lora and plan.weight_bytes == 2,
            "16-bit full fine-tuning with fp32 master weights and optimizer state"
            if plan.master
            else "pure 16-bit training: optimizer state in the weights' dtype",
        ),
        (
            quantize == "nf4",
            "NF4 base: block linear weights at 4 bits plus absmax constants; embeddings, head, norms and biases upcast to fp32",
        ),
        (
            quantize == "int8",
            "int8 base (LLM.int8): block linear weights at 1 byte plus an fp32 scale per row; embeddings, head, norms and biases upcast to fp32",
        ),
        (
            bool(quantize),
            "quantized-base activations are fp32: PEFT's k-bit preparation upcasts the embeddings and norms, so the residual stream and each linear's output are fp32 (measured on CPU with bitsandbytes)",
        ),
        (
            optimizer == "adamw",
            "AdamW is the fused kernel (HF Trainer's default); torch's foreach AdamW adds 4 bytes per trainable parameter during step()",
        ),
        (
            checkpointing,
            "gradient checkpointing keeps each block's input and recomputes one block at a time",
        ),
        (
            family not in ("bert", "roberta", "t5"),
            "the causal-LM loss upcasts logits to fp32: log-softmax, its gradient and the logits' gradient peak together",
        ),
        (
            bool(plan.shape.options.get("read_as")),
            f"the {plan.shape.options.get('read_as')} architecture is read as a LLaMA-shaped decoder",
        ),
        (
            family in ("bert", "roberta"),
            "trained as a masked LM (the MLM head, no pooler), loss over every position",
        ),
        (family == "t5", "encoder and decoder both run sequence_length tokens"),
        (
            bool(plan.extra_parameters),
            f"the given parameter count differs from the module formulas by {plan.extra_parameters:+,}; the difference counts as embedding-like weights",
        ),
        (
            device == "cuda",
            f"overhead: CUDA context {format_bytes(CUDA_CONTEXT_BYTES)} and {CUDA_FRAGMENTATION:.0%} allocator slack",
        ),
        (
            device == "cpu",
            f"overhead: the Python, torch and transformers runtime, {format_bytes(CPU_RUNTIME_BYTES)}, and {format_bytes(CPU_STEP_BOOKKEEPING_BYTES)} of autograd and allocator bookkeeping",
        ),
    ]
    return [text for wanted, text in candidates if wanted]
