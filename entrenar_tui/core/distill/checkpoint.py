"""Checkpoints and the final student: everything a resumed run needs to continue exactly
(weights, loss-module state, optimizer, scheduler, fp16 loss scaler, every device's RNG, data
position), written atomically."""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import torch

from .rundir import RunDir
from .trainer import Progress, Setup, _unwrap


def _checkpoint_bytes(s: Setup) -> int:
    params = sum(p.numel() * p.element_size() for p in _unwrap(s.student).parameters())
    return params * 3  # weights + AdamW m and v (an upper bound for LoRA)


def rng_state() -> dict:
    """Every generator a step draws from: Python's, torch's CPU one and each CUDA device's (LoRA
    dropout on a GPU draws from the CUDA one; without it a resume would not be bit-identical)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    python = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "python": list(python[1]),
        "python_pos": python[2],
    }


def restore_rng_state(state: dict) -> None:
    """Undo `rng_state`. CUDA states are restored where CUDA is present (device by device, as
    many as both sides have); a checkpoint from a CPU-only run leaves the CUDA generators alone."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        count = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([t.cpu() for t in cuda[:count]])


def save_checkpoint(setup: Setup, progress: Progress, run: RunDir) -> Path:
    def write(folder: Path) -> None:
        trainable = {k: v for k, v in _unwrap(setup.student).state_dict().items()}
        torch.save(
            {
                "student": trainable,
                "loss_fn": setup.loss_fn.state_dict(),
                "optimizer": setup.optimizer.state_dict(),
                "scheduler": setup.scheduler.state_dict(),
                "scaler": setup.scaler.state_dict() if setup.scaler is not None else None,
                "rng": rng_state(),
                "progress": asdict(progress),
            },
            folder / "trainer.pt",
        )

    return run.save_checkpoint(
        progress.step, write, _checkpoint_bytes(setup), setup.config.output.keep_checkpoints
    )


def load_checkpoint(s: Setup, folder: Path) -> Progress:
    state = torch.load(folder / "trainer.pt", map_location=s.device, weights_only=True)
    _unwrap(s.student).load_state_dict(state["student"])
    s.loss_fn.load_state_dict(state["loss_fn"])
    s.optimizer.load_state_dict(state["optimizer"])
    s.scheduler.load_state_dict(state["scheduler"])
    if s.scaler is not None and state.get("scaler"):
        s.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
    return Progress(**state["progress"])


def save_final(s: Setup, run: RunDir) -> Path:
    """The student in Hugging Face layout (or the PEFT adapter), with the tokenizer. Hidden-state
    projections are training-only: they live in the checkpoints, which is what a resume reads."""
    from ..fsutil import atomic_dir

    with atomic_dir(run.final) as tmp:
        _unwrap(s.student).save_pretrained(tmp)
        s.tokenizer.save_pretrained(tmp)
    return run.final
