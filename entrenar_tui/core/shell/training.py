"""The shell's `distill` and `finetune`: a config from the session, the dry run's plan, a run
started in the background (the same child process as the app's), and `watch` following it.

`finetune` is the distillation trainer with alpha 0 (cross-entropy only) and LoRA on the
student, the current model; the teacher is that same model (the trainer needs one)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import yaml

from ..errors import InvalidInputError
from ..fsutil import write_text_atomic
from .session import Session


def distill_config(session: Session, options: dict) -> dict:
    """The distill.yaml a `distill` command trains with, from the session and its options."""
    if not session.teacher:
        raise InvalidInputError("no teacher yet", "set teacher MODEL (or fetch MODEL)")
    settings = session.settings
    if session.student and not session.student_layers:
        student = {"model_id": session.student}
    else:
        layers = session.student_layers or _every_third(session.teacher)
        student = {"init_from_teacher": {"layers": layers}}
    training = _training(settings, options)
    config = {
        "device": settings["device"],
        "teacher": {"model_id": session.teacher},
        "student": student,
        "distillation": {
            "temperature": options.get("temperature", settings["temperature"]),
            "alpha": options.get("alpha", settings["alpha"]),
        },
        "training": training,
        "dataset": {"source": "builtin", "max_length": settings["seq"]},
    }
    from ..distill.config import config_from_data

    config_from_data(config)  # every problem now, with its field, not in the child
    return config


def _every_third(teacher: str) -> list[int]:
    from ..models import Model

    return list(range(0, Model.open(teacher).arch.layers or 1, 3))


def finetune_config(session: Session, options: dict) -> dict:
    """The distill.yaml of `finetune`: the current model trained through LoRA adapters on the
    builtin corpus with cross-entropy alone (distillation.alpha 0)."""
    model = session.model or session.teacher
    if not model:
        raise InvalidInputError("no model yet", "fetch one first: fetch smollm2-135m")
    settings = session.settings
    rank = options.get("rank", settings["rank"])
    training = _training(settings, options)
    config = {
        "device": settings["device"],
        "teacher": {"model_id": model},
        "student": {"model_id": model, "lora": _lora(model, rank)},
        "distillation": {"temperature": settings["temperature"], "alpha": 0.0},
        "training": training,
        "dataset": {"source": "builtin", "max_length": settings["seq"]},
    }
    from ..distill.config import config_from_data

    config_from_data(config)
    return config


def _lora(model: str, rank: int) -> dict:
    """LoRA on the attention projections of the model's family, alpha = 2 x rank (as `lora
    plan` writes)."""
    from ..memory.shape import model_shape
    from ..models import Model

    handle = Model.open(model)
    config = handle.source.config if handle.kind != "gguf" else None
    targets = model_shape(handle.arch, config).default_lora_targets
    return {"enabled": True, "rank": rank, "alpha": 2 * rank, "target_modules": targets}


def estimate_plan(config: dict):
    """(parsed config, its DistillEstimate with two steps timed on this machine)."""
    from ..distill.config import config_from_data
    from ..distill.estimate import estimate_distillation

    parsed = config_from_data(config)
    return parsed, estimate_distillation(parsed, measure_steps=2)


def plan_text(parsed, estimate) -> str:
    """The dry run: teacher, student, parameter counts, the loss, memory and a time estimate
    from two measured steps."""
    from ..sizes import format_bytes

    distillation, lora = parsed.distillation, parsed.student.lora
    alpha = distillation.alpha
    loss = f"KL(T={distillation.temperature:g}) * {alpha:g} + CE * {1 - alpha:g}"
    if alpha == 0:
        loss = "CE (alpha 0: no distillation term)"
    student = f"{estimate.student} ({estimate.student_parameters / 1e6:.1f}M)"
    if lora.enabled:
        trainable = estimate.student_estimate["trainable_parameters"]
        student += f" + LoRA r={lora.rank} on {', '.join(lora.target_modules)}"
        student += f" ({trainable / 1e6:.2f}M trainable)"
    lines = [
        "Dry run configuration:",
        f"  Teacher: {estimate.teacher} ({estimate.teacher_parameters / 1e6:.1f}M)",
        f"  Student: {student}",
        f"  Loss: {loss}",
        f"  Memory: {format_bytes(estimate.total_bytes)} on {estimate.device}",
    ]
    if estimate.estimated_seconds is not None:
        lines.append(
            f"  Estimated time: {_clock(estimate.estimated_seconds)} for {estimate.total_steps}"
            f" steps ({estimate.seconds_per_step:.2f} s/step measured on this machine)"
        )
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


def start_run(session: Session, config: dict, output: str | None, prefix: str = "shell"):
    """`entrenar distill run` as a child in its own session: the prompt comes back at once."""
    from ..runs.launch import launch_run
    from .output import Output

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(output or f"runs/{prefix}-{stamp}")
    config_path = run_dir / "launch-config.yaml"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(config_path, yaml.safe_dump(config, sort_keys=False))
    launched = launch_run(config_path, run_dir)
    session.runs.append(str(run_dir))
    message = f"✓ Training in the background: {run_dir} (pid {launched.pid}); `watch` follows it"
    return Output("text", launched.to_dict(), message)


def follow_run(run_dir: Path, poll_s: float = 0.5) -> Iterator[str]:
    """Progress lines of a run until it ends (the caller stops on Ctrl-C)."""
    from ..runs.follow import MetricsTail, read_run

    tail = MetricsTail(run_dir / "metrics.jsonl")
    while True:
        for line in tail.poll():
            if line.get("kind") == "train":
                yield (
                    f"step {line['step']}: loss {line['loss']:.4f}, "
                    f"{line.get('tokens_per_s', 0):.0f} tok/s"
                )
            elif line.get("kind") == "eval" and line.get("eval_ppl"):
                yield f"step {line['step']}: eval ppl {line['eval_ppl']:.2f}"
        summary = read_run(run_dir)
        if not summary.alive:
            error = f": {summary.error['message']}" if summary.error else ""
            yield f"{run_dir}: {summary.state} at step {summary.step}{error}"
            return
        time.sleep(poll_s)


def _training(settings: dict, options: dict) -> dict:
    """The training block `distill` and `finetune` share: the session's batch, rate and
    evaluation size, and --epochs or --steps (`--learning-rate` where the command has it)."""
    training = {
        "batch_size": settings["batch"],
        "learning_rate": options.get("learning-rate", settings["learning_rate"]),
        "warmup_steps": 0,
        "log_every": 1,
        "eval_max_blocks": settings["eval_blocks"],
    }
    if "epochs" in options:
        training["epochs"] = options["epochs"]
    else:
        training["max_steps"] = options.get("steps", settings["steps"])
    return training
