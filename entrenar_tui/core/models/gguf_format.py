"""GGUF files through gguf-py: tensor list, metadata, architecture facts, dequantised reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import CorruptFileError, UnsupportedError
from .arch import FAMILIES, ArchInfo
from .tensors import TensorInfo

# Metadata too large to be worth returning to users (tokenizer tables).
_BULKY = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.scores",
)


_PLAIN_TYPES = {"F32", "F16", "F64", "I8", "I16", "I32", "I64"}


@lru_cache(maxsize=1)
def _readable_types() -> frozenset:
    """GGML types gguf-py can dequantise (its numpy kernels), plus the plain integer types."""
    import gguf
    from gguf.quants import _type_traits

    Q = gguf.GGMLQuantizationType
    plain = {Q.F32, Q.F16, Q.BF16, Q.F64, Q.I8, Q.I16, Q.I32, Q.I64}
    return frozenset(plain | set(_type_traits))


@dataclass
class GGUFFile:
    path: Path
    tensors: list[TensorInfo]
    metadata: dict
    reader: object  # gguf.GGUFReader; kept for tensor data


def _fast_reader_class():
    """gguf-py wraps every field and vocabulary string in its own np.memmap view; the memmap
    subclass makes each view ~10x dearer than a plain ndarray view of the same mapping. Reading
    through plain views opens SmolLM2 (49k tokens) in 0.9 s instead of 5.7 s (same bytes)."""
    import gguf

    class FastGGUFReader(gguf.GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain")
            if plain is None:
                plain = self.__dict__["_plain"] = self.data.view(np.ndarray)
            dt, count = np.dtype(dtype), int(count)
            if offset < 0 or count < 0 or offset + dt.itemsize * count > len(plain):
                # gguf-py slices past the end and gets a short array; a count of 2^63 then
                # walks an array past EOF for ever. A claim the file cannot hold is corrupt.
                raise ValueError(f"{count} x {dt} at byte {offset} runs past the end of the file")
            arr = plain[offset : offset + dt.itemsize * count].view(dt)
            order = self.byte_order if override_order is None else override_order
            return arr.view(arr.dtype.newbyteorder(order))

    return FastGGUFReader


@lru_cache(maxsize=4)
def _open_cached(path: Path, mtime: float) -> GGUFFile:
    try:
        reader = _fast_reader_class()(path, "r")
        metadata = _metadata(reader)
    except MemoryError:
        raise
    except Exception as exc:  # gguf-py raises what numpy and enum raise on bad bytes
        raise CorruptFileError(
            f"{path}: not a readable GGUF file ({type(exc).__name__}: {str(exc)[:160]})",
            "the file is corrupt or truncated; download it again",
        ) from exc
    for tensor in reader.tensors:
        _check_tensor(path, tensor)
    tensors = [
        TensorInfo(
            name=t.name,
            shape=tuple(
                int(d) for d in reversed(t.shape.tolist())
            ),  # GGUF stores ne[] fastest-first
            dtype=t.tensor_type.name,
            nbytes=int(t.n_bytes),
            file=path,
            offset=int(t.data_offset),
        )
        for t in reader.tensors
    ]
    return GGUFFile(path, tensors, metadata, reader)


def _metadata(reader) -> dict:
    """Key -> value; strings are decoded strictly (invalid UTF-8 is a corrupt file)."""
    metadata = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        metadata[key] = f"<{len(fld.data)} entries>" if key in _BULKY else fld.contents()
    return metadata


def _check_tensor(path: Path, tensor) -> None:
    """Types this reader can dequantise, and shapes numpy can hold (gguf-py checks neither)."""
    import gguf

    kind = tensor.tensor_type
    if kind not in _readable_types():
        raise UnsupportedError(
            f"{path}: tensor {tensor.name!r} has GGML type {kind.name}, which entrenar cannot read",
            f"readable types: {', '.join(sorted(t.name for t in _readable_types()))}; "
            "convert the model with llama.cpp to one of them",
        )
    block, type_size = gguf.GGML_QUANT_SIZES[kind]
    dims = [int(d) for d in tensor.shape.tolist()]
    if dims and dims[0] % block:
        raise CorruptFileError(
            f"{path}: tensor {tensor.name!r} has {dims[0]} columns, not a multiple of the "
            f"{kind.name} block of {block}",
            "the file is corrupt; download it again",
        )
    numel = math.prod(dims)
    if numel != int(tensor.n_elements) or numel * type_size // block != tensor.data.nbytes:
        raise CorruptFileError(
            f"{path}: tensor {tensor.name!r} shape {dims} does not match its data",
            "the file is corrupt or truncated; download it again",
        )


def open_gguf(path: str | Path) -> GGUFFile:
    path = Path(path).resolve()
    return _open_cached(path, path.stat().st_mtime)


def read_tensor(gf: GGUFFile, name: str) -> np.ndarray:
    """Dequantised float32 array in row-major (numpy) shape."""
    tensor = next(t for t in gf.reader.tensors if t.name == name)
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    if int(tensor.n_elements) == 0:  # gguf-py's dequantisers cannot reshape empty rows
        return np.zeros(shape, dtype=np.float32)
    try:
        return _values(tensor).reshape(shape)
    except ValueError as exc:  # the header's shape disagrees with the data
        raise CorruptFileError(
            f"{gf.path}: tensor {name!r} does not hold the {list(shape)} values its header claims",
            "the file is corrupt; download it again",
        ) from exc


def _values(tensor) -> np.ndarray:
    import gguf

    if tensor.tensor_type.name in _PLAIN_TYPES:  # big-endian files hold >f4 views
        raw = np.asarray(tensor.data)
        return raw.astype(raw.dtype.newbyteorder("=")).astype(np.float32, copy=False)
    values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(values, dtype=np.float32)


def arch_from_gguf(gf: GGUFFile) -> ArchInfo:
    md = gf.metadata
    arch = str(md.get("general.architecture", "unknown"))

    def get(key: str):
        return md.get(f"{arch}.{key}")

    names = {t.name for t in gf.tensors}
    heads = get("attention.head_count")
    hidden = get("embedding_length")
    vocab = get("vocab_size")
    if vocab is None:
        emb = next((t for t in gf.tensors if t.name == "token_embd.weight"), None)
        vocab = emb.shape[0] if emb else None
    model_type = {"gptneox": "gpt_neox"}.get(arch, arch)
    return ArchInfo(
        model_type=model_type,
        family=FAMILIES.get(model_type, arch),
        layers=get("block_count"),
        hidden_size=hidden,
        heads=heads,
        kv_heads=get("attention.head_count_kv") or heads,
        head_dim=(get("attention.key_length") or (hidden // heads if hidden and heads else None)),
        intermediate_size=get("feed_forward_length"),
        vocab_size=vocab,
        max_positions=get("context_length"),
        tied_embeddings="output.weight" not in names,
        gated_mlp=any(n.endswith("ffn_gate.weight") for n in names),
        source="gguf",
    )
