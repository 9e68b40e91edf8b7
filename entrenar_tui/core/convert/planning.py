"""The tensors a conversion writes (`PlannedTensor`: output dtype, shape, and how to load its
bytes, cast when asked) and the read-back check of what was written (`verify_output`).

Split from dispatch.py, which plans, writes and verifies with these.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ..errors import CheckFailedError, UnsupportedError, bug_hint
from ..models.handle import Model
from ..models.tensors import DTYPE_BYTES, FLOAT_DTYPES, TensorInfo
from .apr import cast_raw, sha256_of
from .safetensors_writer import safetensors_raw

HASH_THREADS = min(4, os.cpu_count() or 1)


@dataclass
class PlannedTensor:
    """One output tensor: its output dtype/shape/size, and how to load its output bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    source_dtype: str
    loader: Callable[[], np.ndarray] = field(repr=False)

    def load(self) -> np.ndarray:
        return self.loader()

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


# --------------------------------------------------------------------------- reading sources


def raw_reader(model: Model) -> Callable[[TensorInfo], np.ndarray]:
    """How to read each tensor's stored bytes for this model's format."""
    if model.kind == "apr":
        return lambda info: model._apr.read_raw(info.name)
    if model.kind == "pth":
        from .pth import torch_to_raw

        return lambda info: torch_to_raw(model._pth[info.name])
    return safetensors_raw


def _load_cast(read: Callable[[str], np.ndarray], name: str, dtype: str, cast: str | None):
    return cast_raw(read(name), dtype, cast)


def _plan(
    tensors: list[tuple[str, str, tuple[int, ...]]],
    read: Callable[[str], np.ndarray],
    cast: str | None,
) -> list[PlannedTensor]:
    planned = []
    for name, dtype, shape in tensors:
        if dtype not in DTYPE_BYTES:
            raise UnsupportedError(
                f"tensor {name!r} has dtype {dtype}, which entrenar cannot convert",
                f"supported dtypes: {', '.join(DTYPE_BYTES)}",
            )
        out = cast if cast and dtype in FLOAT_DTYPES else dtype
        nbytes = int(np.prod(shape, dtype=np.int64) * DTYPE_BYTES[out])
        loader = partial(_load_cast, read, name, dtype, out if out != dtype else None)
        planned.append(PlannedTensor(name, out, tuple(shape), nbytes, dtype, loader))
    return planned


def plan_model(model: Model, cast: str | None) -> list[PlannedTensor]:
    """Output tensors for a file-backed model, streamed from its files one at a time."""
    read = raw_reader(model)
    by_name = {t.name: t for t in model.tensors}
    described = [(t.name, t.dtype, t.shape) for t in model.tensors]
    return _plan(described, lambda name: read(by_name[name]), cast)


def plan_state_dict(state: dict, cast: str | None) -> list[PlannedTensor]:
    """Output tensors from an in-memory torch state dict (a GGUF loaded by transformers)."""
    from .pth import dtype_name, torch_to_raw

    described = [(name, dtype_name(t), tuple(t.shape)) for name, t in state.items()]
    return _plan(described, lambda name: torch_to_raw(state[name]), cast)


# --------------------------------------------------------------------------- verification


def _described(t: TensorInfo | PlannedTensor) -> str:
    return f"{t.dtype}{list(t.shape)}"


def verify_output(
    planned: list[PlannedTensor],
    digests: dict[str, str],
    tensors: list[TensorInfo],
    read: Callable[[TensorInfo], np.ndarray],
    optional: frozenset[str] = frozenset(),
) -> dict:
    """Compare the re-opened output with what was meant to be written, one tensor at a time."""
    expected = {p.name: p for p in planned}
    found = {t.name: t for t in tensors}
    problems = [f"missing tensor {n}" for n in expected if n not in found and n not in optional]
    problems += [f"unexpected tensor {n}" for n in found if n not in expected]
    comparable = [t for t in tensors if t.name in expected]
    same_kind = [t for t in comparable if _described(t) == _described(expected[t.name])]
    problems += [
        f"{t.name}: wrote {_described(expected[t.name])}, read {_described(t)}"
        for t in comparable
        if _described(t) != _described(expected[t.name])
    ]
    with ThreadPoolExecutor(HASH_THREADS) as pool:  # hashlib releases the GIL
        read_back = pool.map(lambda info: sha256_of(read(info)), same_kind)
        problems += [
            f"{t.name}: bytes read back differ from bytes written"
            for t, digest in zip(same_kind, read_back, strict=True)
            if digest != digests[t.name]
        ]
    if problems:
        raise CheckFailedError(
            f"the converted model failed verification ({len(problems)} problems; first: {problems[0]})",
            "nothing was written; " + bug_hint(),
        )
    lossless = all(p.dtype == p.source_dtype for p in planned)
    return {
        "method": "re-opened the output; names, dtypes, shapes and a sha256 per tensor",
        "tensors_checked": len(found),
        "values": "identical to the source" if lossless else "identical to the cast source",
        "lossless": lossless,
        "aliases_dropped": sorted(n for n in optional if n not in found),
    }
