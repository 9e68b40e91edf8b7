"""The estimator's inputs: the choices it understands, the constants it adds, and one check
of a caller's settings shared by the estimate and the measurement (`probe.py`)."""

from __future__ import annotations

from ..errors import InvalidInputError

MIB = 2**20
OPTIMIZERS = ("adamw", "adamw8bit", "sgd")
PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
CUDA_CONTEXT_BYTES = 512 * MIB  # CUDA context, cuBLAS/cuDNN handles and workspaces
CUDA_FRAGMENTATION = 0.05  # caching-allocator slack over the tensor peak
CPU_RUNTIME_BYTES = 400 * MIB  # the Python, torch and transformers runtime itself
# What a CPU step holds beyond its tensors: autograd graph nodes, oneDNN scratch, small-block
# malloc arenas. Measured 1.3-3.0 MiB over the 18 rows of benchmarks/bench_memory.py, flat in
# model and batch size, so a constant (without it the smallest rows read -10 %).
CPU_STEP_BOOKKEEPING_BYTES = 2 * MIB
NF4_BLOCK, NF4_NESTED_BLOCK = 64, 256
ADAM8BIT_MIN_SIZE, ADAM8BIT_BLOCK = 4096, 256  # bitsandbytes keeps 32-bit state below 4096 elements
ADAM8BIT_CPU_STEP_BYTES = 20  # per element of the tensor being stepped (estimate._step_workspace)


def check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise InvalidInputError(
            f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}",
            f"pass --{name.replace('_', '-')} {allowed[0]}",
        )


def validate_options(
    batch_size, sequence_length, optimizer, precision, lora_rank, quantize_base, attention, device
) -> None:
    for name, value in (("batch_size", batch_size), ("sequence_length", sequence_length)):
        if not isinstance(value, int) or value < 1:
            raise InvalidInputError(
                f"{name} must be a positive integer, not {value!r}",
                f"pass --{name.replace('_', '-')} 8",
            )
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_choice("precision", precision, tuple(PRECISION_BYTES))
    check_choice("attention", attention, ("sdpa", "eager"))
    check_choice("device", device, ("cuda", "cpu"))
    check_choice("quantize_base", quantize_base, (None, "nf4", "int8"))
    if lora_rank is not None and (not isinstance(lora_rank, int) or lora_rank < 1):
        raise InvalidInputError(
            f"lora_rank must be a positive integer, not {lora_rank!r}", "pass --lora-rank 16"
        )
    if quantize_base and lora_rank is None:
        raise InvalidInputError(
            f"a quantized ({quantize_base}) base can only be trained through LoRA adapters",
            "add --lora-rank 16 (QLoRA)",
        )
