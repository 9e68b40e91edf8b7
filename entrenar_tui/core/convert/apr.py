"""APR: entrenar's plain JSON model format (spec in docs/apr-format.md).

One JSON document lists every tensor (name, dtype, shape, byte count, sha256) with the model's
config and metadata. Tensor bytes are little-endian and live either inline (base64 per tensor,
for small models: one self-contained, diffable file) or in a raw sidecar `<file>.bin` (for big
ones: memory-mapped, never base64-inflated). Values round-trip exactly: what is written is the
source's bytes, and every read checks them against the recorded sha256.

The raw-bytes helpers at the top (numpy views of each dtype, hashing, casts) are shared by the
safetensors and pth writers too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from ..errors import CorruptFileError, UnsupportedError
from ..models.tensor_data import NUMPY_DTYPES
from ..models.tensors import DTYPE_BYTES, FLOAT_DTYPES, TensorInfo

APR_VERSION = 1
ALIGNMENT = 64  # sidecar tensors start on 64-byte boundaries so memory maps are aligned
INLINE_LIMIT_BYTES = 16 * 1024 * 1024  # "auto" keeps models up to this size in one file

# numpy views of raw bytes; bfloat16 and float8 have no numpy type, so they stay as bits.
RAW_NUMPY: dict[str, type] = {
    **NUMPY_DTYPES,
    "BF16": np.uint16,
    "F8_E4M3": np.uint8,
    "F8_E5M2": np.uint8,
}

MAX_DIMS = 64  # numpy's limit on dimensions
MAX_ELEMENTS = 1 << 62  # numpy indexes with int64; bytes must fit too
_HINT = "the .apr file is damaged or was not written by entrenar; convert the model again"


class TensorSource(Protocol):
    """What the writers take: a tensor's description and a way to load its (output) bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    def load(self) -> np.ndarray: ...


def byte_view(arr: np.ndarray) -> np.ndarray:
    """The array's bytes as a flat uint8 view (no copy when already contiguous)."""
    return np.asarray(arr, order="C").reshape(-1).view(np.uint8)


def sha256_of(arr: np.ndarray) -> str:
    return hashlib.sha256(byte_view(arr)).hexdigest()


def write_hashed(f: BinaryIO, arr: np.ndarray, pool: ThreadPoolExecutor) -> str:
    """Write an array's bytes while another thread hashes them; returns the sha256.

    Hashing is about 40% of a conversion (profiled: 0.93 s of 2.2 s for a 538 MB model, hashed
    when written and again when verified); hashlib releases the GIL on large buffers, so on a
    machine with a free core it overlaps the write instead of following it.
    """
    data = byte_view(arr)
    digest = pool.submit(sha256_of, data)
    f.write(data)
    return digest.result()


def widen_to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw bytes (as RAW_NUMPY views them) -> float32 values, the way Model.read returns floats."""
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype.startswith("F8"):
        import torch

        torch_dtype = torch.float8_e4m3fn if dtype == "F8_E4M3" else torch.float8_e5m2
        return torch.from_numpy(np.array(raw)).view(torch_dtype).float().numpy()
    if dtype in ("F16", "F64"):
        return raw.astype(np.float32)
    return raw


def cast_raw(raw: np.ndarray, source_dtype: str, target: str | None) -> np.ndarray:
    """Cast float bytes to the target dtype; integers and same-dtype tensors pass through."""
    if target is None or source_dtype == target or source_dtype not in FLOAT_DTYPES:
        return raw
    values = (
        raw.astype(np.float64) if source_dtype == "F64" else widen_to_float32(raw, source_dtype)
    )
    if target == "F32":
        return values.astype(np.float32)
    if target == "F16":
        return values.astype(np.float16)
    import torch  # bfloat16 rounding (to nearest even) as torch and transformers do it

    bf16 = torch.from_numpy(np.asarray(values, order="C")).to(torch.bfloat16)
    return bf16.view(torch.int16).numpy().view(np.uint16)


@dataclass
class AprFile:
    """An opened .apr: tensor list, metadata, config; tensor bytes are read (and checked) on demand."""

    path: Path
    metadata: dict
    config: dict | None
    tensors: list[TensorInfo]
    data_mode: str  # inline | sidecar
    _entries: dict[str, dict] = field(default_factory=dict, repr=False)

    def info(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def read_raw(self, name: str) -> np.ndarray:
        """The tensor's stored bytes as a numpy array (bf16/f8 as unsigned bits), sha256-checked."""
        info, entry = self.info(name), self._entries[name]
        if self.data_mode == "inline":
            try:
                data = base64.b64decode(entry["b64"], validate=True)
            except (binascii.Error, TypeError, ValueError) as exc:
                raise CorruptFileError(
                    f"{self.path}: tensor {name!r} is not valid base64", _HINT
                ) from exc
            if len(data) != info.nbytes:
                raise CorruptFileError(
                    f"{self.path}: tensor {name!r} holds {len(data)} bytes, expected {info.nbytes}",
                    _HINT,
                )
            arr = np.frombuffer(data, dtype=RAW_NUMPY[info.dtype]).reshape(info.shape)
        elif info.nbytes == 0:
            arr = np.zeros(info.shape, dtype=RAW_NUMPY[info.dtype])
        else:
            arr = np.memmap(
                info.file, RAW_NUMPY[info.dtype], mode="r", offset=info.offset, shape=info.shape
            )
        if sha256_of(arr) != entry["sha256"]:
            raise CorruptFileError(f"{self.path}: tensor {name!r} fails its sha256 check", _HINT)
        return arr

    def read(self, name: str) -> np.ndarray:
        """Values as Model.read gives them: floats as float32 (bf16 widened), integers as stored."""
        return widen_to_float32(self.read_raw(name), self.info(name).dtype)


# --------------------------------------------------------------------------- reading


def _fail(path: Path, what: str) -> CorruptFileError:
    return CorruptFileError(f"{path}: {what}", _HINT)


def _load_document(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read().decode("utf-8"))
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read ({exc.strerror})", "check the path") from exc
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, 5000-digit ints, nesting
        raise _fail(path, f"not a JSON document ({type(exc).__name__}: {str(exc)[:120]})") from exc
    if not isinstance(doc, dict) or doc.get("format") != "apr":
        raise _fail(path, 'not an APR document (no "format": "apr")')
    version = doc.get("version")
    if version != APR_VERSION:
        raise UnsupportedError(
            f"{path}: APR version {version!r} is not supported (this entrenar reads {APR_VERSION})",
            "upgrade entrenar, or re-export the model with this version",
        )
    for key, kind in (("metadata", dict), ("tensors", list)):
        if not isinstance(doc.get(key), kind):
            raise _fail(path, f"{key!r} is missing or not a {kind.__name__}")
    if doc.get("config") is not None and not isinstance(doc["config"], dict):
        raise _fail(path, "'config' is neither an object nor null")
    if doc.get("data") not in ("inline", "sidecar"):
        raise _fail(path, f"'data' is {doc.get('data')!r}, expected 'inline' or 'sidecar'")
    return doc


def _sidecar_path(path: Path, doc: dict, override: Path | None) -> Path:
    name = doc.get("sidecar")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise _fail(path, f"sidecar name {name!r} is not a plain file name")
    sidecar = override or path.parent / name
    if not sidecar.is_file():
        raise CorruptFileError(
            f"{path}: its data file {sidecar.name} is missing",
            f"keep {name} next to {path.name}; they are one model",
        )
    return sidecar


def _check_entry(path: Path, entry: object, inline: bool) -> tuple[str, str, tuple[int, ...], int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise _fail(path, f"tensor entry {str(entry)[:60]!r} has no name")
    name, dtype, shape = entry["name"], entry.get("dtype"), entry.get("shape")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise _fail(path, f"tensor {name!r} has unknown dtype {str(dtype)[:40]!r}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise _fail(path, f"tensor {name!r} has invalid shape {str(shape)[:80]}")
    if len(shape) > MAX_DIMS or math.prod(shape) >= MAX_ELEMENTS:
        raise _fail(path, f"tensor {name!r} has shape {str(shape)[:80]}, which numpy cannot hold")
    nbytes = int(math.prod(shape) * DTYPE_BYTES[dtype])
    if entry.get("nbytes") != nbytes:
        raise _fail(
            path, f"tensor {name!r} claims {entry.get('nbytes')!r} bytes, shape x dtype is {nbytes}"
        )
    if not isinstance(entry.get("sha256"), str):
        raise _fail(path, f"tensor {name!r} has no sha256")
    if inline and not isinstance(entry.get("b64"), str):
        raise _fail(path, f"tensor {name!r} has no inline data ('b64')")
    return name, dtype, tuple(shape), nbytes


def _sidecar_offset(path: Path, entry: dict, nbytes: int, sidecar_size: int) -> int:
    offset = entry.get("offset")
    if type(offset) is not int or offset < 0 or offset + nbytes > sidecar_size:
        raise _fail(path, f"tensor {entry['name']!r} offset {offset!r} lies outside the data file")
    return offset


def read_apr(path: str | Path, sidecar: Path | None = None) -> AprFile:
    """Open an .apr file and check its structure; tensor bytes are checked when read.

    `sidecar` overrides where the data file is (used to verify a file before it is renamed).
    """
    path = Path(path)
    doc = _load_document(path)
    inline = doc["data"] == "inline"
    data_file = path if inline else _sidecar_path(path, doc, sidecar)
    data_size = 0 if inline else os.path.getsize(data_file)
    tensors, entries = [], {}
    for entry in doc["tensors"]:
        name, dtype, shape, nbytes = _check_entry(path, entry, inline)
        if name in entries:
            raise _fail(path, f"tensor {name!r} is listed twice")
        offset = -1 if inline else _sidecar_offset(path, entry, nbytes, data_size)
        tensors.append(TensorInfo(name, shape, dtype, nbytes, data_file, offset))
        entries[name] = entry
    return AprFile(path, doc["metadata"], doc.get("config"), tensors, doc["data"], entries)


# --------------------------------------------------------------------------- writing


def choose_data_mode(tensors: Iterable[TensorSource], data: str = "auto") -> str:
    if data != "auto":
        return data
    return "inline" if sum(t.nbytes for t in tensors) <= INLINE_LIMIT_BYTES else "sidecar"


def _loaded(t: TensorSource) -> np.ndarray:
    arr = np.asarray(t.load(), order="C")
    if arr.nbytes != t.nbytes:
        raise ValueError(f"tensor {t.name}: loaded {arr.nbytes} bytes, planned {t.nbytes}")
    return arr


def _head(metadata: dict, config: dict | None, mode: str, sidecar_name: str | None) -> str:
    """Everything before the tensor list, so tensors can be streamed after it."""
    doc = {"format": "apr", "version": APR_VERSION, "data": mode}
    if sidecar_name:
        doc["sidecar"] = sidecar_name
    doc |= {"metadata": metadata, "config": config}
    return json.dumps(doc, indent=1)[:-2] + ',\n "tensors": [\n'


def _entry(t: TensorSource, digest: str) -> dict:
    return {
        "name": t.name,
        "dtype": t.dtype,
        "shape": list(t.shape),
        "nbytes": t.nbytes,
        "sha256": digest,
    }


def write_apr_inline(
    path: Path, tensors: list[TensorSource], metadata: dict, config: dict | None
) -> dict[str, str]:
    """Stream one JSON file, base64 tensor after tensor. Returns each tensor's sha256."""
    digests = {}
    with open(path, "w", encoding="utf-8") as out:
        out.write(_head(metadata, config, "inline", None))
        for i, tensor in enumerate(tensors):
            arr = _loaded(tensor)
            digests[tensor.name] = sha256_of(arr)
            entry = _entry(tensor, digests[tensor.name]) | {
                "b64": base64.b64encode(byte_view(arr)).decode()
            }
            out.write(("  " if i == 0 else ",\n  ") + json.dumps(entry))
        out.write("\n ]\n}\n")
    return digests


def write_apr_sidecar(
    path: Path,
    data_path: Path,
    sidecar_name: str,
    tensors: list[TensorSource],
    metadata: dict,
    config: dict | None,
) -> dict[str, str]:
    """Raw bytes into `data_path` (aligned, one tensor at a time), then the JSON index into `path`."""
    digests, entries, offset = {}, [], 0
    with open(data_path, "wb") as out, ThreadPoolExecutor(1) as pool:
        for tensor in tensors:
            pad = -offset % ALIGNMENT
            out.write(b"\0" * pad)
            offset += pad
            digests[tensor.name] = write_hashed(out, _loaded(tensor), pool)
            entries.append(_entry(tensor, digests[tensor.name]) | {"offset": offset})
            offset += tensor.nbytes
        os.fsync(out.fileno())
    with open(path, "w", encoding="utf-8") as out:
        out.write(_head(metadata, config, "sidecar", sidecar_name))
        out.write(",\n".join("  " + json.dumps(e) for e in entries) + "\n ]\n}\n")
    return digests
