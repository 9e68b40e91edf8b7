"""A strict reader of the safetensors header: the 8-byte length, the JSON, the offsets.

We parse the header ourselves instead of `safetensors.safe_open` because (1) `inspect info`
must touch only the header, and safe_open maps the file and builds every slice, and (2)
`validate` must report *which* rule a file breaks with a hint, where the reference reader
gives one opaque message. The rules are the reference reader's (see the safetensors spec),
and where the two differ this one is stricter: every header it accepts, safe_open accepts
(tests/property/test_header_fuzz.py checks that).

Each error carries `problem_code`, a short slug naming the broken rule ("overlap", "hole",
"truncated", ...), so `inspect validate` can report it without parsing messages.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptFileError
from .tensors import DTYPE_BYTES, TensorInfo

MAX_HEADER_BYTES = 100_000_000  # the reference reader's cap (decimal MB): larger is refused
LFS_POINTER_PREFIX = b"version https://git-lfs"
_U64_LIMIT = 2**64  # the reference parses sizes and offsets as u64/usize
# Valid UTF-8 cannot hold a surrogate, so one can only arrive as a \u escape.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


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


def _fail(path: Path, what: str, hint: str, code: str) -> CorruptFileError:
    err = CorruptFileError(f"{path}: {what}", hint)
    err.problem_code = code
    return err


def _read_prefix(path: Path) -> tuple[int, int, bytes]:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(8)
    except FileNotFoundError as exc:
        hint = "the file is missing; download the model again"
        raise _fail(path, "does not exist", hint, "missing_file") from exc
    except OSError as exc:
        hint = "check the path and permissions"
        raise _fail(path, f"cannot read ({exc.strerror})", hint, "unreadable") from exc
    if head.startswith(LFS_POINTER_PREFIX[:8]):
        hint = "run `git lfs pull` in its repository (or download the file itself)"
        raise _fail(path, "is a Git-LFS pointer, not the weights", hint, "lfs_pointer")
    if len(head) < 8:
        what = f"is {size} bytes, too short for a safetensors header"
        raise _fail(path, what, "the file is truncated; download it again", "truncated")
    (header_length,) = struct.unpack("<Q", head)
    return size, header_length, head


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN/Infinity; the spec does not


def _load_json(path: Path, header_length: int) -> dict:
    with open(path, "rb") as handle:
        handle.seek(8)
        raw = handle.read(header_length)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        what = f"header is not UTF-8 (byte {exc.start})"
        raise _fail(path, what, "the file is corrupt; download it again", "not_utf8") from exc
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        what = f"header is not valid JSON ({exc.msg} at char {exc.pos})"
        raise _fail(path, what, "the file is corrupt or not safetensors", "bad_json") from exc
    except (ValueError, RecursionError) as exc:  # huge integers, NaN, absurd nesting
        what = f"header is not valid JSON ({type(exc).__name__}: {str(exc)[:80]})"
        raise _fail(path, what, "the file is corrupt or not safetensors", "bad_json") from exc
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(obj):
        what = "header has a lone UTF-16 surrogate escape (not valid Unicode)"
        raise _fail(path, what, "the file is corrupt or not safetensors", "bad_json")
    if not isinstance(obj, dict):
        raise _fail(
            path, "header JSON is not an object", "the file is not safetensors", "bad_header"
        )
    return obj


def _has_lone_surrogate(obj: object) -> bool:
    """Python's json accepts a lone "\\ud800"; the reference (serde_json) refuses it anywhere."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _is_u64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64_LIMIT


def _byte_size(shape: list[int], dtype: str) -> int | None:
    """shape x dtype in bytes, or None where the reference's checked u64 arithmetic overflows."""
    count = 1
    for dim in shape:
        count *= dim
        if count >= _U64_LIMIT:
            return None
    size = int(count * DTYPE_BYTES[dtype])
    return size if size < _U64_LIMIT else None


def _check_entry(path: Path, name: str, entry: object) -> None:
    malformed = "the header is malformed; the file is corrupt or was written by a buggy tool"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise _fail(
            path, f"tensor {name!r} lacks dtype, shape or data_offsets", malformed, "bad_header"
        )
    dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        hint = f"known dtypes: {', '.join(DTYPE_BYTES)}"
        raise _fail(path, f"tensor {name!r} has unknown dtype {dtype!r}", hint, "unknown_dtype")
    if not (isinstance(shape, list) and all(_is_u64(d) for d in shape)):
        hint = "shapes are lists of non-negative integers"
        raise _fail(path, f"tensor {name!r} has invalid shape {shape!r}", hint, "bad_header")
    if not (isinstance(offs, list) and len(offs) == 2 and all(_is_u64(o) for o in offs)):
        hint = "offsets are [begin, end] byte positions"
        raise _fail(path, f"tensor {name!r} has invalid data_offsets {offs!r}", hint, "bad_header")


def _tensor_from_entry(
    path: Path, name: str, entry: object, data_start: int
) -> tuple[TensorInfo, int, int]:
    _check_entry(path, name, entry)
    dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
    expected = _byte_size(shape, dtype)
    if expected is None:
        what = f"tensor {name!r} has shape {shape} too large to address"
        raise _fail(path, what, "the header is corrupt", "size_mismatch")
    if end - begin != expected:
        what = f"tensor {name!r} spans {end - begin} bytes but shape x dtype needs {expected}"
        hint = "the header is inconsistent; the file is corrupt"
        raise _fail(path, what, hint, "size_mismatch")
    info = TensorInfo(name, tuple(shape), dtype, expected, path, data_start + begin)
    return info, begin, end


def _check_layout(path: Path, spans: list[tuple[int, int, str]], data_bytes: int) -> None:
    """Offsets must tile the data region exactly: sorted, contiguous, no overlap, no hole."""
    position = 0
    for begin, end, name in sorted(spans):
        if begin < position:
            what = f"tensor {name!r} overlaps the previous tensor (starts at {begin}, previous ends at {position})"
            raise _fail(path, what, "the file is corrupt; download it again", "overlap")
        if begin > position:
            what = f"hole of {begin - position} bytes before tensor {name!r}"
            hint = "the file is corrupt or was written by a buggy tool"
            raise _fail(path, what, hint, "hole")
        position = end
    if position != data_bytes:
        truncated = position > data_bytes
        what = f"data region {'truncated' if truncated else 'has trailing bytes'}: tensors need {position} bytes, file holds {data_bytes}"
        hint = "the file is truncated or corrupt; download it again"
        raise _fail(path, what, hint, "truncated" if truncated else "trailing_bytes")


def _metadata(path: Path, obj: dict) -> dict[str, str]:
    metadata = obj.pop("__metadata__", None)
    if metadata is None:  # absent or null; [] or "" are refused, as the reference does
        return {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        hint = "__metadata__ must map strings to strings"
        raise _fail(path, "__metadata__ is not a string-to-string object", hint, "bad_header")
    return metadata


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse and check the header of a .safetensors file without reading tensor data."""
    path = Path(path)
    size, header_length, _ = _read_prefix(path)
    if header_length > MAX_HEADER_BYTES:
        what = f"claims a {header_length}-byte header (limit {MAX_HEADER_BYTES})"
        raise _fail(path, what, "the file is corrupt or not safetensors", "header_too_large")
    if 8 + header_length > size:
        what = f"header length {header_length} runs past the end of the {size}-byte file"
        raise _fail(path, what, "the file is truncated; download it again", "header_past_eof")
    obj = _load_json(path, header_length)
    metadata = _metadata(path, obj)
    data_start = 8 + header_length
    tensors, spans = [], []
    for name, entry in obj.items():
        info, begin, end = _tensor_from_entry(path, name, entry, data_start)
        tensors.append(info)
        spans.append((begin, end, name))
    _check_layout(path, spans, size - data_start)
    return SafetensorsHeader(path, header_length, size, tensors, metadata)
