"""The shell's `evaluate`: held-out loss and perplexity through the trainer's own evaluation
(core/distill/evaluate.py), for a run's student on the blocks that run held out, or for any
causal LM on the builtin corpus at the session's block length."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InvalidInputError


@dataclass
class HeldOut:
    target: str
    kind: str  # "run" or "model"
    student: str  # what was scored: the run's final/ or the model reference
    eval_loss: float
    eval_ppl: float
    tokens: int
    blocks: int
    block_size: int
    device: str
    recorded: dict | None = None  # a run's last eval line in metrics.jsonl

    def to_dict(self) -> dict:
        return asdict(self)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "config.yaml").is_file()


def evaluate_run(run_path: str | Path, device_setting: str = "auto") -> HeldOut:
    """A finished run's student (final/: a full model, or a LoRA adapter merged into its base)
    scored on the run's own held-out blocks at its batch size, as its last evaluation did."""
    from ..distill.config import config_from_data
    from ..distill.data import dataset_for
    from ..distill.evaluate import evaluate
    from ..distill.modeling import load_causal_lm, load_tokenizer, pick_device
    from ..distill.rundir import RunDir

    run = RunDir(Path(run_path))
    config = config_from_data(run.read_config())
    if (
        not (run.final / "config.json").exists()
        and not (run.final / "adapter_config.json").exists()
    ):
        raise InvalidInputError(
            f"{run.path} has no final student yet (it is running or stopped early)",
            f"`watch {run.path}` until it finishes, then evaluate it",
        )
    device = pick_device(device_setting)
    teacher = config.teacher
    tokenizer = load_tokenizer(teacher.model_id, teacher.revision, teacher.format)
    blocks = dataset_for(config, tokenizer).eval[: config.training.eval_max_blocks]
    _need_blocks(blocks, "the run's dataset holds no held-out blocks (eval_fraction 0?)")
    if (run.final / "adapter_config.json").exists():
        from ..distill.export import _rebuild_student

        student, _, _ = _rebuild_student(run, None, run.final)
        student = student.to(device)
    else:
        student = load_causal_lm(str(run.final), device)
    result = evaluate(student, blocks, config.training.batch_size, device)
    evals = [line for line in run.metric_records() if line.get("kind") == "eval"]
    return HeldOut(
        str(run_path),
        "run",
        str(run.final),
        result.eval_loss,
        result.eval_ppl,
        result.tokens,
        len(blocks),
        config.dataset.max_length,
        device,
        evals[-1] if evals else None,
    )


def evaluate_model(
    ref: str, block_size: int, max_blocks: int, batch_size: int, device_setting: str = "auto"
) -> HeldOut:
    """A causal LM on the builtin corpus's held-out documents (the split a run would hold out)."""
    from ..distill.config import DatasetConfig
    from ..distill.data import build_dataset, load_documents
    from ..distill.evaluate import evaluate
    from ..distill.modeling import load_causal_lm, load_tokenizer, pick_device

    device = pick_device(device_setting)
    dataset = DatasetConfig(source="builtin", max_length=block_size)
    tokenizer = load_tokenizer(ref)
    docs = load_documents("builtin", None, None, "train", "text", False, None)
    blocks = build_dataset(docs, tokenizer, block_size, dataset.eval_fraction).eval[:max_blocks]
    _need_blocks(blocks, f"the builtin corpus holds no held-out block of {block_size} tokens")
    model = load_causal_lm(ref, device)
    result = evaluate(model, blocks, batch_size, device)
    return HeldOut(
        ref,
        "model",
        ref,
        result.eval_loss,
        result.eval_ppl,
        result.tokens,
        len(blocks),
        block_size,
        device,
    )


def _need_blocks(blocks: list, message: str) -> None:
    if not blocks:
        raise InvalidInputError(message, "use shorter blocks: set seq 64")
