"""`Model`: a resolved reference with lazy access to its tensor list, architecture and data.

Headers are read once and cached; tensor data is read one tensor at a time (memory-mapped),
so commands stream over models larger than RAM.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CorruptFileError, UnsupportedError
from . import arch as arch_mod
from .resolve import ModelSource, resolve
from .safetensors_format import read_header
from .tensors import TensorInfo

if TYPE_CHECKING:
    import numpy as np


def __getattr__(name: str):
    """Tensor-data helpers live in tensor_data (it imports numpy); re-exported lazily so that
    listing headers (`inspect info`) never pays numpy's import time."""
    if name in ("bf16_to_f32", "read_safetensors_tensor"):
        from . import tensor_data

        return getattr(tensor_data, name)
    raise AttributeError(name)


class Model:
    """A model's files, read lazily. Construct with `Model.open(ref)`."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source

    @classmethod
    def open(cls, ref: str | Path, revision: str | None = None) -> Model:
        return cls(resolve(ref, revision))

    @property
    def kind(self) -> str:
        return self.source.kind

    @cached_property
    def _gguf(self):
        from .gguf_format import open_gguf

        return open_gguf(self.source.weight_files[0])

    @cached_property
    def _pth(self) -> dict:
        import torch

        try:
            state = torch.load(
                self.source.weight_files[0], map_location="cpu", weights_only=True, mmap=True
            )
        except Exception as exc:  # torch raises many types for bad pickles
            raise CorruptFileError(
                f"{self.source.weight_files[0]}: not a loadable PyTorch state dict ({type(exc).__name__})",
                "only plain tensor state dicts are read (weights_only=True); re-save with torch.save(model.state_dict())",
            ) from exc
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise CorruptFileError(
                f"{self.source.weight_files[0]}: not a state dict", "save a dict of tensors"
            )
        return {k: v for k, v in state.items() if hasattr(v, "shape")}

    @cached_property
    def _apr(self):
        from ..convert.apr import read_apr

        return read_apr(self.source.weight_files[0])

    @cached_property
    def tensors(self) -> list[TensorInfo]:
        kind = self.source.kind
        if kind in ("safetensors", "adapter") and all(
            p.suffix == ".safetensors" for p in self.source.weight_files
        ):
            return [t for f in self.source.weight_files for t in read_header(f).tensors]
        if kind == "gguf":
            return self._gguf.tensors
        if kind in ("pth", "adapter"):
            return [
                _pth_info(name, t, self.source.weight_files[0]) for name, t in self._pth.items()
            ]
        if kind == "apr":
            return self._apr.tensors
        if kind == "config":
            return []
        raise UnsupportedError(
            f"cannot list tensors of a {kind} model", "convert it to safetensors first"
        )

    @cached_property
    def metadata(self) -> dict:
        if self.kind == "gguf":
            return self._gguf.metadata
        if self.kind == "apr":
            return self._apr.metadata
        if self.kind == "safetensors":
            return read_header(self.source.weight_files[0]).metadata
        return {}

    @cached_property
    def arch(self) -> arch_mod.ArchInfo:
        if self.kind == "gguf":
            from .gguf_format import arch_from_gguf

            return arch_from_gguf(self._gguf)
        if self.source.config and self.kind != "adapter":
            return arch_mod.from_config(self.source.config)
        if self.kind == "apr" and self._apr.config:
            return arch_mod.from_config(self._apr.config)
        from .detect import detect_from_tensors

        return detect_from_tensors(self.tensors)

    @property
    def parameters(self) -> int:
        """Trainable-style parameters: buffers (position ids, rotary tables, masks) excluded."""
        return sum(t.numel for t in self.tensors if not is_buffer(t))

    @property
    def dtypes(self) -> dict[str, int]:
        """Parameters per dtype."""
        counts: Counter = Counter()
        for t in self.tensors:
            counts[t.dtype] += t.numel
        return dict(counts.most_common())

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def read(self, info: TensorInfo) -> np.ndarray:
        """One tensor's values; floats (and quantised GGUF blocks) come back as float32."""
        if self.kind == "gguf":
            from .gguf_format import read_tensor

            return read_tensor(self._gguf, info.name)
        if self.kind in ("pth",) or (self.kind == "adapter" and info.offset < 0):
            t = self._pth[info.name]
            return t.float().numpy() if t.is_floating_point() else t.numpy()
        if self.kind == "apr":
            return self._apr.read(info.name)
        from .tensor_data import read_safetensors_tensor

        return read_safetensors_tensor(info)

    def iter_arrays(self):
        for info in self.tensors:
            yield info, self.read(info)


# Matched as whole dotted parts: GPT-2's parameter `attn.c_attn.bias` is not `attn.bias`.
_BUFFER_SUFFIXES = ("position_ids", "token_type_ids", "inv_freq", "attn.bias", "masked_bias")


def is_buffer(t: TensorInfo) -> bool:
    """Non-parameter tensors that checkpoints carry: integer ids, rotary caches, causal masks."""
    if t.dtype in {"I64", "I32", "I16", "I8", "U8", "BOOL"} and not t.dtype.startswith("Q"):
        return True
    return any(t.name == s or t.name.endswith("." + s) for s in _BUFFER_SUFFIXES)


def _pth_info(name: str, t, file: Path) -> TensorInfo:
    dtype = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
             "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32",
             "uint16": "U16", "uint8": "U8", "bool": "BOOL", "float8_e4m3fn": "F8_E4M3",
             "float8_e5m2": "F8_E5M2"}.get(str(t.dtype).removeprefix("torch."), str(t.dtype))  # fmt: skip
    return TensorInfo(name, tuple(t.shape), dtype, t.numel() * t.element_size(), file, -1)


def open_model(ref: str | Path, revision: str | None = None) -> Model:
    return Model.open(ref, revision)
