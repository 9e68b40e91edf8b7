"""Measuring real training steps in a fresh process, to check `estimate_memory` against them.

`measure_training_step` runs the child process; `_probe_main` is that child (it imports torch,
transformers and peft). The package re-exports `MeasuredPeak` and `measure_training_step`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InvalidInputError
from ..models.arch import ArchInfo
from .options import validate_options
from .shape import model_shape


@dataclass
class MeasuredPeak:
    """Memory of real training steps, measured in a fresh process."""

    peak_bytes: int  # peak during the steps minus the process before the model existed
    model_bytes: int  # the built model (and adapters) alone
    baseline_bytes: int  # the process after imports and a warm-up step
    parameters: int
    trainable_parameters: int
    device: str
    method: str  # "VmHWM" (CPU resident set's high-water mark) or "max_memory_allocated" (CUDA)
    steps: int
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def measure_training_step(
    model_config: dict,
    *,
    batch_size: int,
    sequence_length: int,
    optimizer: str = "adamw",
    precision: str = "fp32",
    gradient_checkpointing: bool = False,
    lora_rank: int | None = None,
    lora_targets: list[str] | None = None,
    lora_dropout: float = 0.0,
    attention: str = "sdpa",
    device: str = "cpu",
    steps: int = 2,
    threads: int | None = None,
    timeout: float = 600,
) -> MeasuredPeak:
    """Run `steps` real training steps of a model built from `model_config` in a fresh process.

    On CPU the peak is the resident set's high-water mark (VmHWM, reset after the model is
    built, so only the steps count) minus the resident set before the model existed; glibc is
    told to return every allocation of 64 KiB or more at once (MALLOC_MMAP_THRESHOLD_), so the
    resident set follows live tensors. getrusage's ru_maxrss is not used: across exec it keeps
    the parent's high-water mark, so a child of a large process reports the parent's size. A warm-up step of a one-block copy runs first, so code pages and
    thread pools loaded on first use are not counted. On CUDA it is max_memory_allocated. Two
    steps by default: optimizer state is allocated lazily in the first, so the peak that a
    run keeps hitting shows from the second on. Precision here is pure: 16-bit weights train
    with 16-bit optimizer state (compare with `estimate_memory(..., master_weights=False)`).
    `threads` caps torch's threads in the child (side-by-side measurements).
    """
    import json
    import os
    import subprocess
    import sys

    validate_options(
        batch_size, sequence_length, optimizer, precision, lora_rank, None, attention, device
    )
    shape = model_shape(_arch_of(model_config), model_config)  # fails fast on unusable configs
    if optimizer == "adamw8bit":
        raise InvalidInputError(
            "measuring runs torch's own optimizers only", "measure with --optimizer adamw or sgd"
        )
    if lora_rank and lora_targets is None:
        lora_targets = shape.default_lora_targets
    spec = {
        "config": model_config,
        "batch": batch_size,
        "seq": sequence_length,
        "optimizer": optimizer,
        "precision": precision,
        "checkpointing": gradient_checkpointing,
        "lora_rank": lora_rank,
        "lora_targets": lora_targets,
        "lora_dropout": lora_dropout,
        "attention": attention,
        "device": device,
        "steps": steps,
        "threads": threads,
    }
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TRANSFORMERS_VERBOSITY="error")
    # a coverage tracer inherited from pytest-cov would add ~70 MB to what we measure
    for key in [k for k in env if k.startswith("COV_CORE_") or k == "COVERAGE_PROCESS_START"]:
        del env[key]
    command = [
        sys.executable,
        "-c",
        "from entrenar_tui.core.memory.probe import _probe_main; _probe_main()",
    ]
    try:
        done = subprocess.run(
            command,
            input=json.dumps(spec),
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise InvalidInputError(
            f"the measured training step took over {timeout:.0f} s",
            "measure a smaller configuration",
        ) from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InvalidInputError(
            f"the measured training step failed: {last}",
            "check that this configuration trains with transformers on this machine",
        )
    return MeasuredPeak(**json.loads(lines[-1]))


def measure_run_peak(config: str | Path, run_dir: str | Path, timeout: float = 1800) -> int:
    """The peak memory a real `entrenar distill run` of `config` reports (its train lines'
    largest `memory_bytes`: max_memory_allocated on CUDA, the resident set's peak on CPU), in a
    fresh process. `lora plan --write-config` checks its estimate against this."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    for key in [k for k in env if k.startswith("COV_CORE_") or k == "COVERAGE_PROCESS_START"]:
        del env[key]  # a coverage tracer would add ~70 MB to what is measured
    entrenar = Path(sys.executable).with_name("entrenar")
    command = [str(entrenar), "distill", "run", "--config", str(config), "--output", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InvalidInputError(f"the measured run failed: {last}", f"see {run_dir}/events.log")
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    peaks = [
        record["memory_bytes"] for record in map(json.loads, lines) if record["kind"] == "train"
    ]
    if not peaks:
        raise InvalidInputError(f"{run_dir} logged no training step", "set training.max_steps >= 1")
    return max(peaks)


def _arch_of(config: dict) -> ArchInfo:
    from ..models.arch import from_config

    return from_config(config)


# ---- the child process of measure_training_step (imports torch) --------------------------------

_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "num_decoder_layers")


def _build(spec: dict, layers: int | None = None):
    import torch
    import transformers

    params = dict(spec["config"])
    model_type = params.pop("model_type")
    for key in _LAYER_KEYS:
        if layers and key in params:
            params[key] = layers
    config = transformers.AutoConfig.for_model(model_type, **params)
    config._attn_implementation = spec["attention"]
    config.use_cache = False
    if model_type == "t5":
        config.decoder_start_token_id = config.decoder_start_token_id or 0
    kind = {
        "bert": "AutoModelForMaskedLM",
        "roberta": "AutoModelForMaskedLM",
        "t5": "AutoModelForSeq2SeqLM",
    }
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        spec["precision"]
    ]
    torch.manual_seed(0)
    with torch.device(spec["device"]):
        model = getattr(transformers, kind.get(model_type, "AutoModelForCausalLM")).from_config(
            config
        )
    model = model.to(dtype)
    if spec["lora_rank"]:
        import peft

        rank = spec["lora_rank"]
        lora = peft.LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=spec["lora_targets"],
            lora_dropout=spec.get("lora_dropout", 0.0),
        )
        model = peft.get_peft_model(model, lora)
    if spec["checkpointing"]:
        model.gradient_checkpointing_enable()
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if spec["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(trainable, lr=1e-4, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=True)
    return model, optimizer, config.vocab_size


def _train(model, optimizer, vocab: int, spec: dict, batch: int, seq: int, steps: int) -> None:
    import torch

    ids = torch.randint(0, vocab, (batch, seq), device=spec["device"])
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids.clone()).loss  # the outputs go before backward
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def _resident() -> tuple[int, int]:
    """(current, peak) resident set in bytes, from /proc/self/status."""
    lines = Path("/proc/self/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _probe_main() -> None:
    import gc
    import json
    import sys
    import time

    import torch

    spec = json.loads(sys.stdin.read())
    cuda = spec["device"] == "cuda"
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    model, optimizer, vocab = _build(spec, layers=1)
    _train(model, optimizer, vocab, spec, 1, min(8, spec["seq"]), 2)  # page in code and threads
    del model, optimizer
    gc.collect()
    baseline = torch.cuda.memory_allocated() if cuda else _resident()[0]
    started = time.perf_counter()
    model, optimizer, vocab = _build(spec)
    built = torch.cuda.memory_allocated() if cuda else _resident()[0]
    method = "max_memory_allocated" if cuda else "VmHWM"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:  # restart the high-water mark here (ru_maxrss would carry the parent's, across exec)
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            method = "VmHWM since start"  # the warm-up and the model's build count too
    _train(model, optimizer, vocab, spec, spec["batch"], spec["seq"], spec["steps"])
    peak = torch.cuda.max_memory_allocated() if cuda else _resident()[1]
    result = {
        "peak_bytes": peak - baseline,
        "model_bytes": built - baseline,
        "baseline_bytes": baseline,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": spec["device"],
        "method": method,
        "steps": spec["steps"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(result))
