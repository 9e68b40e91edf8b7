"""The teacher's cached targets (top-k + tail, or the output head's input) on disk, shared by every run that would compute the same
ones (the jobs of a sweep, or any runs pointed at one `distillation.teacher_cache.dir`).

A run writes each training block's targets the first time it computes them and reads the ones
another run wrote; on a CPU box the teacher's forward costs about as much as a student step,
so a sweep whose jobs share targets skips that work. Targets are kept under a key of everything
they depend on (teacher and its precision, data, block length, the cache's kind and, for top-k,
k and the temperature the tail logit is chosen for), one safetensors file per block written
atomically, so concurrent runs
never read a half-written file and a wrong cache can never be picked up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ..fsutil import atomic_path, write_json_atomic
from .config import DistillConfig

FORMAT_VERSION = 3  # bump when `_compress` or the hidden entry changes what it stores (3: no
# entry for the last position, which predicts nothing)
PARTS = {"topk": ("values", "indices", "tail"), "hidden": ("head_input",)}


def store_key(config: DistillConfig) -> dict:
    """Everything the stored targets depend on. Hidden states do not depend on T or k, so a
    temperature sweep shares one hidden-state cache."""
    teacher, cache = config.teacher, config.distillation.teacher_cache
    key = {
        "format": FORMAT_VERSION,
        "teacher": [teacher.model_id, teacher.revision, teacher.format, teacher.precision],
        "dataset": config.dataset.model_dump(mode="json"),
        "kind": cache.kind,
    }
    if cache.kind == "topk":
        key |= {"top_k": cache.top_k, "temperature": config.distillation.temperature}
    return key


class TeacherStore:
    def __init__(self, root: str | Path, config: DistillConfig) -> None:
        key = store_key(config)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.path = Path(root) / digest
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "key.json").exists():
            write_json_atomic(self.path / "key.json", key)
        self.parts = PARTS[config.distillation.teacher_cache.kind]
        self.read = self.written = 0

    def _file(self, block: int) -> Path:
        return self.path / f"block-{block:08d}.safetensors"

    def load(self, block: int) -> tuple[torch.Tensor, ...] | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self._file(block)
        if not path.exists():
            return None
        try:
            tensors = load_file(path)
            entry = tuple(tensors[name] for name in self.parts)
        except (SafetensorError, KeyError, OSError):
            return None  # unreadable: compute it again (and overwrite it below)
        self.read += 1
        return entry

    def save(self, block: int, entry: tuple[torch.Tensor, ...]) -> None:
        from safetensors.torch import save_file

        path = self._file(block)
        if path.exists():
            return
        tensors = {
            name: tensor.contiguous() for name, tensor in zip(self.parts, entry, strict=True)
        }
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary))
        self.written += 1
