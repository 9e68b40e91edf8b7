"""A strict reader of the safetensors header: the 8-byte length, the JSON, the offsets.

We parse the header ourselves instead of `safetensors.safe_open` because (1) `inspect info`
must touch only the header, and safe_open maps the file and builds every slice, and (2)
`validate` must report *which* rule a file breaks with a hint, where the reference reader
gives one opaque message. The rules are the reference reader's (see the safetensors spec).
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptFileError
from .tensors import DTYPE_BYTES, TensorInfo

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the reference reader refuses larger headers
LFS_POINTER_PREFIX = b"version https://git-lfs"


@dataclass
class SafetensorsHeader:
    path: Path
    header_bytes: int
    file_size: int
    tensors: list[TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_start(self) -> int:
        return 8 + self.header_bytes


def _fail(path: Path, what: str, hint: str) -> CorruptFileError:
    return CorruptFileError(f"{path}: {what}", hint)


def _read_prefix(path: Path) -> tuple[int, int, bytes]:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read ({exc.strerror})", "check the path and permissions") from exc
    if head.startswith(LFS_POINTER_PREFIX[:8]):
        raise _fail(path, "is a Git-LFS pointer, not the weights", "run `git lfs pull` in its repository")
    if len(head) < 8:
        raise _fail(path, f"is {size} bytes, too short for a safetensors header", "the file is truncated; download it again")
    (n,) = struct.unpack("<Q", head)
    return size, n, head


def _load_json(path: Path, n: int) -> dict:
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, f"header is not UTF-8 (byte {exc.start})", "the file is corrupt; download it again") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"header is not valid JSON ({exc.msg} at char {exc.pos})", "the file is corrupt or not safetensors") from exc
    if not isinstance(obj, dict):
        raise _fail(path, "header JSON is not an object", "the file is not safetensors")
    return obj


def _tensor_from_entry(path: Path, name: str, entry: object, data_start: int) -> tuple[TensorInfo, int, int]:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise _fail(path, f"tensor {name!r} lacks dtype, shape or data_offsets", "the header is malformed")
    dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BYTES:
        raise _fail(path, f"tensor {name!r} has unknown dtype {dtype!r}", f"known dtypes: {', '.join(DTYPE_BYTES)}")
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise _fail(path, f"tensor {name!r} has invalid shape {shape!r}", "shapes are lists of non-negative integers")
    if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) and o >= 0 for o in offs)):
        raise _fail(path, f"tensor {name!r} has invalid data_offsets {offs!r}", "offsets are [begin, end] byte positions")
    begin, end = offs
    expected = int(math.prod(shape) * DTYPE_BYTES[dtype])
    if end - begin != expected:
        raise _fail(path, f"tensor {name!r} spans {end - begin} bytes but shape x dtype needs {expected}", "the header is inconsistent; the file is corrupt")
    info = TensorInfo(name, tuple(shape), dtype, expected, path, data_start + begin)
    return info, begin, end


def _check_layout(path: Path, spans: list[tuple[int, int, str]], data_bytes: int) -> None:
    """Offsets must tile the data region exactly: sorted, contiguous, no overlap, no hole."""
    position = 0
    for begin, end, name in sorted(spans):
        if begin < position:
            raise _fail(path, f"tensor {name!r} overlaps the previous tensor (starts at {begin}, previous ends at {position})", "the file is corrupt")
        if begin > position:
            raise _fail(path, f"hole of {begin - position} bytes before tensor {name!r}", "the file is corrupt or was written by a buggy tool")
        position = end
    if position != data_bytes:
        kind = "truncated" if position > data_bytes else "has trailing bytes"
        raise _fail(path, f"data region {kind}: tensors need {position} bytes, file holds {data_bytes}", "the file is truncated or corrupt; download it again")


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse and check the header of a .safetensors file without reading tensor data."""
    path = Path(path)
    size, n, _ = _read_prefix(path)
    if n > MAX_HEADER_BYTES:
        raise _fail(path, f"claims a {n}-byte header (limit {MAX_HEADER_BYTES})", "the file is corrupt or not safetensors")
    if 8 + n > size:
        raise _fail(path, f"header length {n} runs past the end of the {size}-byte file", "the file is truncated; download it again")
    obj = _load_json(path, n)
    metadata = obj.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise _fail(path, "__metadata__ is not an object", "the header is malformed")
    data_start = 8 + n
    tensors, spans = [], []
    for name, entry in obj.items():
        info, begin, end = _tensor_from_entry(path, name, entry, data_start)
        tensors.append(info)
        spans.append((begin, end, name))
    _check_layout(path, spans, size - data_start)
    return SafetensorsHeader(path, n, size, tensors, {str(k): str(v) for k, v in metadata.items()})
