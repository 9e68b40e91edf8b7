"""The shell's `distill`: a config from the session, the dry run's plan, a run started in the
background (the same child process as the app's), and `watch` following it."""

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
    training = {
        "batch_size": settings["batch"],
        "learning_rate": settings["learning_rate"],
        "warmup_steps": 0,
        "log_every": 1,
        "eval_max_blocks": settings["eval_blocks"],
    }
    if "epochs" in options:
        training["epochs"] = options["epochs"]
    else:
        training["max_steps"] = options.get("steps", settings["steps"])
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


def plan_text(config: dict) -> str:
    """The dry run: teacher, student, parameter counts, the loss, memory and a time estimate
    from two measured steps."""
    from ..distill.config import config_from_data
    from ..distill.estimate import estimate_distillation
    from ..sizes import format_bytes

    parsed = config_from_data(config)
    estimate = estimate_distillation(parsed, measure_steps=2)
    distillation = parsed.distillation
    alpha = distillation.alpha
    loss = f"KL(T={distillation.temperature:g}) * {alpha:g} + CE * {1 - alpha:g}"
    lines = [
        "Dry run configuration:",
        f"  Teacher: {estimate.teacher} ({estimate.teacher_parameters / 1e6:.1f}M)",
        f"  Student: {estimate.student} ({estimate.student_parameters / 1e6:.1f}M)",
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


def start_run(session: Session, config: dict, output: str | None):
    """`entrenar distill run` as a child in its own session: the prompt comes back at once."""
    from ..runs.launch import launch_run
    from .evaluate import Output

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(output or f"runs/shell-{stamp}")
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
