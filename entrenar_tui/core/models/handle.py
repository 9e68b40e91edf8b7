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

        _check_zip(self.source.weight_files[0])
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
        tensors = {k: v for k, v in state.items() if isinstance(k, str) and hasattr(v, "shape")}
        for name, tensor in tensors.items():
            _check_pth_tensor(self.source.weight_files[0], name, tensor)
        return tensors

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
            tensor = self._pth[info.name].detach()  # a saved nn.Parameter requires grad
            return tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
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


def _check_zip(file: Path) -> None:
    """torch.save's zip stores records uncompressed: a record claiming more bytes than the
    file holds is corrupt, and torch's reader (miniz) would try to allocate what it claims."""
    import zipfile

    hint = "the file is corrupt or truncated; save it again with torch.save"
    try:
        if not zipfile.is_zipfile(file):
            return  # the legacy (pre-1.6) format; torch.load reads it with weights_only too
        with zipfile.ZipFile(file) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise CorruptFileError(f"{file}: not a readable zip archive ({exc})", hint) from exc
    size = file.stat().st_size
    for record in records:
        if max(record.file_size, record.compress_size) > size:
            raise CorruptFileError(
                f"{file}: record {record.filename[:80]!r} claims {record.file_size} bytes "
                f"in a {size}-byte file",
                hint,
            )


def _check_pth_tensor(file: Path, name: str, tensor) -> None:
    """Only dense CPU tensors whose bytes are in the file: a meta or sparse tensor has no
    such bytes, and a stride-0 (expanded) view of one stored value can claim terabytes that
    reading it would allocate."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise CorruptFileError(f"{file}: {name!r} is not a tensor", "save a dict of tensors")
    if tensor.is_meta or tensor.layout != torch.strided:
        what = "a meta tensor (no data)" if tensor.is_meta else f"a {tensor.layout} tensor"
        raise UnsupportedError(
            f"{file}: {name!r} is {what}",
            "save dense tensors: torch.save({k: v.to_dense() for k, v in state.items()})",
        )
    stored = tensor.untyped_storage().nbytes()
    if tensor.numel() * tensor.element_size() > stored:
        raise UnsupportedError(
            f"{file}: {name!r} is a view of shape {list(tensor.shape)} over {stored} stored bytes "
            "(stride 0: an expanded tensor)",
            "save real weights: torch.save({k: v.contiguous().clone() for k, v in state.items()})",
        )


def _pth_info(name: str, tensor, file: Path) -> TensorInfo:
    dtype = {
        "float32": "F32",
        "float16": "F16",
        "bfloat16": "BF16",
        "float64": "F64",
        "int64": "I64",
        "int32": "I32",
        "int16": "I16",
        "int8": "I8",
        "uint64": "U64",
        "uint32": "U32",
        "uint16": "U16",
        "uint8": "U8",
        "bool": "BOOL",
        "float8_e4m3fn": "F8_E4M3",
        "float8_e5m2": "F8_E5M2",
    }.get(str(tensor.dtype).removeprefix("torch."), str(tensor.dtype))
    return TensorInfo(
        name, tuple(tensor.shape), dtype, tensor.numel() * tensor.element_size(), file, -1
    )


def open_model(ref: str | Path, revision: str | None = None) -> Model:
    return Model.open(ref, revision)
