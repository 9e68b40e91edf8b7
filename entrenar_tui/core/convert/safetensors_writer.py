"""Safetensors output: one streamed file, or a Hugging Face folder around it.

Why our own writer: `safetensors.numpy.save_file` / `torch.save_file` take a dict of every
tensor, so the whole model must be in memory at once (and, for a sharded 70B source, in RAM).
The format is simple enough to stream: the header needs only names, dtypes and shapes, which
are known before any data is read, so we write the header first and then append each tensor's
bytes one at a time. The layout is the reference one (8-byte little-endian header length,
JSON header padded with spaces to a multiple of 8, tensors back to back in header order), and
files written here pass both our strict reader and `safetensors.safe_open`.
"""

from __future__ import annotations

import json
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from ..models.tensors import TensorInfo
from .apr import RAW_NUMPY, TensorSource, write_hashed

# Files a Hugging Face model folder carries besides the weights; copied when the source has them.
AUX_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
)


def safetensors_raw(info: TensorInfo) -> np.ndarray:
    """A safetensors tensor's bytes, memory-mapped (bf16/f8 as unsigned bits)."""
    dtype = RAW_NUMPY[info.dtype]
    if info.nbytes == 0:
        return np.zeros(info.shape, dtype)
    mapped = np.memmap(info.file, dtype, mode="r", offset=info.offset, shape=max(info.numel, 1))
    return mapped.reshape(info.shape)


def header_bytes(tensors: list[TensorSource], metadata: dict[str, str]) -> bytes:
    """The JSON header for tensors laid out back to back in the given order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return blob + b" " * (-len(blob) % 8)


def write_safetensors(
    path: Path, tensors: list[TensorSource], metadata: dict[str, str]
) -> dict[str, str]:
    """Stream tensors into one .safetensors file; returns each tensor's sha256 of written bytes."""
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names in one safetensors file")
    header = header_bytes(tensors, metadata)
    digests = {}
    with open(path, "wb") as out, ThreadPoolExecutor(1) as pool:
        out.write(struct.pack("<Q", len(header)))
        out.write(header)
        for tensor in tensors:
            arr = np.asarray(tensor.load(), order="C")
            if arr.nbytes != tensor.nbytes:
                raise ValueError(
                    f"tensor {tensor.name}: loaded {arr.nbytes} bytes, planned {tensor.nbytes}"
                )
            digests[tensor.name] = write_hashed(out, arr, pool)
    return digests


def copy_aux_files(
    source_dir: Path | None, dest_dir: Path, skip: tuple[str, ...] = ()
) -> list[str]:
    """Copy config, generation config and tokenizer files that exist in the source folder."""
    copied = []
    if source_dir is None or not source_dir.is_dir():
        return copied
    for name in AUX_FILES:
        if name not in skip and (source_dir / name).is_file():
            shutil.copyfile(source_dir / name, dest_dir / name)
            copied.append(name)
    return copied


def check_replaceable_folder(folder: Path) -> None:
    """An existing output folder is replaced whole, so it may hold only a model's files."""
    for entry in folder.iterdir():
        ours = entry.name in AUX_FILES or (entry.name.startswith("model") and entry.is_file())
        if not ours:
            raise InvalidInputError(
                f"{folder} exists and holds {entry.name!r}, which is not part of a model folder",
                "the output folder is replaced whole: give a new or empty folder",
            )


def write_hf_folder(
    folder: Path,
    tensors: list[TensorSource],
    metadata: dict[str, str],
    config: dict | None,
    source_dir: Path | None,
) -> dict[str, str]:
    """model.safetensors + config.json + tokenizer files in `folder` (a temp dir the caller renames)."""
    digests = write_safetensors(folder / "model.safetensors", tensors, metadata)
    copy_aux_files(source_dir, folder, skip=("config.json",) if config is not None else ())
    if config is not None:
        text = json.dumps(config, indent=2, sort_keys=True) + "\n"
        (folder / "config.json").write_text(text, encoding="utf-8")
    return digests


# --------------------------------------------------------------------------- GGUF sources


def load_gguf_with_transformers(path: Path, dtype: str):
    """Load a GGUF whole through transformers: dequantised, q/k un-permuted, HF names.

    Returns the model (plain, no longer marked as GGUF-quantised) and its config as a dict.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from ..distill.modeling import quiet_transformers
    from ..errors import UnsupportedError

    quiet_transformers()  # its "Converting and de-quantizing GGUF tensors" bar is not ours
    torch_dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[dtype]
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=torch_dtype
        )
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise UnsupportedError(
            f"{path.name}: transformers cannot load this GGUF ({str(exc).splitlines()[0][:160]})",
            "only architectures transformers reads from GGUF convert (llama, mistral, qwen2, ...)",
        ) from exc
    # The weights are plain tensors now; without this save_pretrained refuses ("not serializable").
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    return model, config


def aliases(state: dict) -> frozenset[str]:
    """Names that share storage with an earlier tensor (tied embeddings): save_pretrained drops them."""
    seen, shared = set(), set()
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            shared.add(name)
        seen.add(key)
    return frozenset(shared)


def save_transformers_folder(model, gguf_path: Path, folder: Path) -> list[str]:
    """save_pretrained the model and the GGUF's tokenizer into `folder`; returns notes."""
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (ValueError, KeyError, IndexError, TypeError, NotImplementedError, OSError) as exc:
        return [f"no tokenizer written: transformers could not read it from the GGUF ({exc})"]
    tokenizer.save_pretrained(folder)
    return []
