"""`merge_adapter`: fold a PEFT LoRA adapter into its base model, tensor by tensor.

W' = W + scale * scaling * (B @ A), transposed where the base stores [in, out] (GPT-2's Conv1D,
embeddings); DoRA: W' = m / ||W + dW||_row * (W + dW), the norm taken per output feature over
the input features, exactly as PEFT's DoraLinearLayer.get_weight_norm; modules_to_save replace
the base tensor; lora_B.bias is added to the base bias. Values are computed in float32 (float64
for F64 bases) and cast back to the base dtype (bfloat16 with round-to-nearest-even, as torch).

Why not PeftModel.merge_and_unload: it loads the whole base into memory (and torch). Here the
base is memory-mapped and read one tensor at a time, and the output safetensors is streamed.
Why our own write loop rather than safetensors.save_file (all tensors in memory at once) or
core/convert's streaming writer (it reads and hashes every tensor): tensors the adapter does not
touch are copied file to file inside the kernel (copy_file_range), so they never enter this
process's memory; peak memory is about one merged tensor (see benchmarks/bench_merge.py). The
header layout is core/convert's (`header_bytes`).
"""

from __future__ import annotations

import os
import resource
import shutil
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..convert.safetensors_writer import check_replaceable_folder, copy_aux_files, header_bytes
from ..errors import CorruptFileError, InvalidInputError, UnsupportedError
from ..fsutil import atomic_dir
from ..models.handle import Model
from ..models.tensor_data import bf16_to_f32, read_safetensors_tensor
from ..models.tensors import TensorInfo
from .adapter import Adapter, LoraModule, base_tensor_name, read_adapter

MERGEABLE_DTYPES = ("F32", "F16", "BF16", "F64")
_COPY_CHUNK = 64 * 1024 * 1024
_CACHE_SLICE = 1 << 16  # elements: 256 KiB of float32, within L2


@dataclass
class MergeResult:
    """What `merge_adapter` wrote."""

    base: str
    adapter: str
    output: str
    files: list[str]
    tensors_merged: int  # base weights changed by LoRA/DoRA (and biases by lora_B.bias)
    tensors_replaced: int  # base tensors replaced by modules_to_save
    tensors_copied: int  # base tensors written unchanged
    modules: int
    module_names: list[str]
    dtype: str  # the merged weights' dtype: the base's, kept
    scale: float
    bytes_written: int
    seconds: float
    peak_rss_bytes: int  # the process's peak resident memory so far (ru_maxrss)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Entry:
    """One output tensor: the base tensor it stands for, and how its bytes are made."""

    info: TensorInfo
    compute: Callable[[], np.ndarray] | None = field(default=None, repr=False)  # None: copy


# --------------------------------------------------------------------------- names and checks


def _missing_error(adapter: Adapter, base: Model, missing: list[str]) -> InvalidInputError:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    hint = f"this adapter does not belong to this base: {adapter.trained_on}; pass that base"
    if missing[0].startswith("lm_head") and (base.source.config or {}).get("tie_word_embeddings"):
        hint = "the base ties lm_head to the input embeddings, so it has no lm_head weight of its own; merging into a tied head is not supported"
    return InvalidInputError(f"base {base.source.ref} has no tensor {missing[0]}{more}", hint)


def _check_module_shape(adapter: Adapter, module: LoraModule, info: TensorInfo) -> None:
    expected = module.base_shape
    if tuple(info.shape) == expected:
        return
    hint = f"this adapter does not fit this base: {adapter.trained_on}"
    if tuple(info.shape) == expected[::-1] and not module.embedding:
        hint = "the base stores this weight transposed: set fan_in_fan_out to match the base (true for GPT-2 Conv1D) in adapter_config.json"
    raise InvalidInputError(
        f"{module.name}: base weight {info.name} is {list(info.shape)} but the adapter needs {list(expected)}",
        hint,
    )


def _check_dtype(info: TensorInfo) -> None:
    if info.dtype not in MERGEABLE_DTYPES:
        raise UnsupportedError(
            f"base tensor {info.name} is {info.dtype}; merging needs a float32/16 or bfloat16 base",
            "convert the base to safetensors in f16, bf16 or f32 first",
        )


def check_finite(adapter: Adapter) -> None:
    """NaN or Inf anywhere in the adapter would spread into every merged weight."""
    infos = [t for m in adapter.modules.values() for t in m.tensors] + list(adapter.saved.values())
    for info in infos:
        if not np.isfinite(adapter.read(info)).all():
            raise CorruptFileError(
                f"{adapter.path}: {info.name} contains NaN or Inf values",
                "the adapter diverged or was damaged; use an earlier checkpoint",
            )


# --------------------------------------------------------------------------- values


def widen(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values -> float32 for arithmetic (float64 stays float64)."""
    if dtype == "BF16":
        return bf16_to_f32(np.asarray(raw))
    return np.asarray(raw, dtype=np.float64 if dtype == "F64" else np.float32)


def read_values(info: TensorInfo) -> np.ndarray:
    """A base tensor widened for arithmetic: float32, or float64 for F64."""
    return widen(read_safetensors_tensor(info, as_float32=False), info.dtype)


def cast_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """Float values -> the stored form of `dtype`; bfloat16 rounds to nearest even like torch.
    `values` may be overwritten (it is always a temporary here)."""
    if dtype == "BF16":
        values = np.ascontiguousarray(values, dtype=np.float32)
        nan = np.isnan(values)
        bits = values.view(np.uint32)
        bits += ((bits >> 16) & 1) + np.uint32(0x7FFF)  # uint32 wrap is fine: NaNs fixed below
        out = (bits >> 16).astype(np.uint16)
        out[nan] = 0x7FC0
        return out
    return values.astype(
        {"F32": np.float32, "F16": np.float16, "F64": np.float64}[dtype], copy=False
    )


def add_and_cast(raw: np.ndarray, delta: np.ndarray, dtype: str) -> np.ndarray:
    """Stored base values + a float32 update -> stored values of the same dtype.

    16-bit bases are done in slices small enough to stay in the CPU cache: widening, adding and
    rounding a whole tensor in separate numpy passes costs about 2.5x more time (memory-bound)."""
    if dtype == "F32":
        return np.add(delta, raw, out=delta)
    if dtype == "F64":
        return np.asarray(raw, dtype=np.float64) + delta
    flat_raw, flat_delta = raw.reshape(-1), delta.reshape(-1)
    out = np.empty(flat_raw.size, dtype=np.uint16 if dtype == "BF16" else np.float16)
    for start in range(0, flat_raw.size, _CACHE_SLICE):
        stop = start + _CACHE_SLICE
        values = widen(flat_raw[start:stop], dtype)
        values += flat_delta[start:stop]
        out[start:stop] = cast_to(values, dtype)
    return out.reshape(raw.shape)


def stored_delta(adapter: Adapter, module: LoraModule, scale: float) -> np.ndarray:
    """scale * scaling * B @ A as a contiguous float32 array in the base's stored layout."""
    a, b = adapter.read(module.a), adapter.read(module.b)
    factor = np.float32(scale * module.scaling)
    if module.transposed:
        return np.matmul(a.T * factor, b.T)  # (B @ A).T, computed as such: no transposed copy
    return np.matmul(b, a * factor)


def dora_weight(adapter: Adapter, module: LoraModule, base: np.ndarray, delta: np.ndarray):
    """m / ||W + dW||_row * (W + dW): the norm per output feature, over the input features."""
    combined = base + delta
    rows = combined.T if module.transposed else combined  # [out, in] view
    norm = np.linalg.norm(rows, axis=1)
    rows *= (adapter.read(module.magnitude) / norm)[:, None]
    return combined


def _merge_entry(adapter: Adapter, module: LoraModule, info: TensorInfo, scale: float):
    def compute() -> np.ndarray:
        raw = read_safetensors_tensor(info, as_float32=False)
        delta = stored_delta(adapter, module, scale)
        if module.magnitude is None:
            return add_and_cast(raw, delta, info.dtype)
        return cast_to(dora_weight(adapter, module, widen(raw, info.dtype), delta), info.dtype)

    return compute


def _bias_entry(adapter: Adapter, module: LoraModule, info: TensorInfo, scale: float):
    def compute() -> np.ndarray:
        extra = adapter.read(module.bias) * np.float32(scale * module.scaling)
        return cast_to(read_values(info) + extra, info.dtype)

    return compute


def _replace_entry(adapter: Adapter, saved: TensorInfo, info: TensorInfo):
    def compute() -> np.ndarray:
        return cast_to(np.array(adapter.read(saved), dtype=np.float32), info.dtype)

    return compute


# --------------------------------------------------------------------------- plan


def _plan_modules(adapter: Adapter, base: Model, names: set[str], scale: float) -> dict:
    by_name = {t.name: t for t in base.tensors}
    computed, missing = {}, []
    for module in adapter.modules.values():
        found = base_tensor_name(module.name + ".weight", names)
        if found is None:
            missing.append(module.name + ".weight")
            continue
        _check_dtype(by_name[found])
        _check_module_shape(adapter, module, by_name[found])
        computed[found] = _merge_entry(adapter, module, by_name[found], scale)
        if module.bias is not None:
            bias = base_tensor_name(module.name + ".bias", names)
            if bias is None:
                missing.append(module.name + ".bias")
            else:
                computed[bias] = _bias_entry(adapter, module, by_name[bias], scale)
    if missing:
        raise _missing_error(adapter, base, missing)
    return computed


def _plan_saved(adapter: Adapter, base: Model, names: set[str]) -> dict:
    by_name = {t.name: t for t in base.tensors}
    computed = {}
    for name, saved in adapter.saved.items():
        found = base_tensor_name(name, names)
        if found is None:
            raise _missing_error(adapter, base, [name])
        if by_name[found].shape != saved.shape:
            raise InvalidInputError(
                f"modules_to_save tensor {name} is {list(saved.shape)} but the base's {found} is {list(by_name[found].shape)}",
                f"this adapter does not fit this base: {adapter.trained_on}",
            )
        _check_dtype(by_name[found])
        computed[found] = _replace_entry(adapter, saved, by_name[found])
    return computed


def _open_base(base: str | Path) -> Model:
    model = Model.open(base)
    if model.kind == "adapter":
        raise InvalidInputError(
            f"{base} is an adapter, not a base model", "pass the model the adapter was trained on"
        )
    if model.kind != "safetensors":
        raise UnsupportedError(
            f"merging into a {model.kind} base is not supported",
            "convert the base to safetensors first (entrenar inspect convert BASE --to safetensors)",
        )
    return model


# --------------------------------------------------------------------------- writing


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int) -> None:
    """Copy bytes file to file in the kernel (no pass through this process's memory)."""
    while count > 0:
        try:
            done = os.copy_file_range(src_fd, dst_fd, count, offset)
        except (OSError, AttributeError):  # old kernels, other platforms, cross-device
            done = 0
        if done == 0:
            chunk = os.pread(src_fd, min(count, _COPY_CHUNK), offset)
            if not chunk:
                raise CorruptFileError(
                    f"base file ended early at byte {offset}", "the base is truncated"
                )
            _write_all(dst_fd, memoryview(chunk))
            done = len(chunk)
        offset += done
        count -= done


def _write_shard(dest: Path, entries: list[_Entry], metadata: dict[str, str]) -> int:
    header = header_bytes([entry.info for entry in entries], metadata)
    sources: dict[Path, int] = {}
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, memoryview(struct.pack("<Q", len(header)) + header))
        for entry in entries:
            info = entry.info
            if entry.compute is None:
                if info.file not in sources:
                    sources[info.file] = os.open(info.file, os.O_RDONLY)
                _copy_range(sources[info.file], fd, info.offset, info.nbytes)
            else:
                values = np.ascontiguousarray(entry.compute())
                assert values.nbytes == info.nbytes, info.name
                _write_all(fd, memoryview(values.reshape(-1).view(np.uint8)))
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)
        for src in sources.values():
            os.close(src)


def _shard_metadata(base: Model, file: Path) -> dict[str, str]:
    from ..models.safetensors_format import read_header

    metadata = dict(read_header(file).metadata)
    metadata.setdefault("format", "pt")  # transformers refuses safetensors files without it
    return metadata


def _check_output(output: Path, base: Model, adapter: Adapter) -> None:
    out = output.resolve()
    for path in (base.source.path, adapter.path):
        src = Path(path).resolve()
        if out == src or src in out.parents or out in src.parents:
            raise InvalidInputError(
                f"output {output} would overwrite the input {path}",
                "write the merged model elsewhere",
            )
    if output.is_file():
        raise InvalidInputError(f"{output} is a file", "give a folder path for the merged model")
    if output.is_dir():
        check_replaceable_folder(output)


def _copy_aux(base: Model, folder: Path) -> None:
    source = base.source.path if base.source.path.is_dir() else base.source.path.parent
    copy_aux_files(source, folder)
    if base.source.index:  # same shards, same names: the index holds as it is
        shutil.copyfile(
            source / "model.safetensors.index.json", folder / "model.safetensors.index.json"
        )


def _write_output(base: Model, computed: dict, folder: Path) -> tuple[list[str], int]:
    files, written = [], 0
    for file in base.source.weight_files:
        entries = [_Entry(t, computed.get(t.name)) for t in base.tensors if t.file == file]
        keep_name = base.source.index or len(base.source.weight_files) > 1
        name = file.name if keep_name else "model.safetensors"
        written += _write_shard(folder / name, entries, _shard_metadata(base, file))
        files.append(name)
    _copy_aux(base, folder)
    return files, written


# --------------------------------------------------------------------------- the operation


def _dominant_dtype(base: Model, merged: list[str]) -> str:
    by_name = {t.name: t.dtype for t in base.tensors}
    dtypes = [by_name[n] for n in merged] or [t.dtype for t in base.tensors]
    return max(set(dtypes), key=dtypes.count)


def merge_adapter(
    base: str | Path, adapter: str | Path, output: str | Path, scale: float = 1.0
) -> MergeResult:
    """Write base + adapter as a Hugging Face model folder at `output` (atomically): config and
    tokenizer files copied, the base's tensor names, dtypes and shards kept. `scale` multiplies
    the LoRA/DoRA update and LoRA biases; modules_to_save replace base tensors regardless."""
    started = time.perf_counter()
    if not np.isfinite(scale):
        raise InvalidInputError(
            f"scale={scale}", "scale is a finite number (1.0: the adapter as trained)"
        )
    lora = read_adapter(adapter)
    model = _open_base(base)
    output = Path(output).expanduser()
    _check_output(output, model, lora)
    names = {t.name for t in model.tensors}
    computed = _plan_modules(lora, model, names, scale)
    merged = sorted(computed)
    replaced = _plan_saved(lora, model, names)
    computed.update(replaced)
    check_finite(lora)
    with atomic_dir(output) as folder:
        files, written = _write_output(model, computed, folder)
    return MergeResult(
        base=str(base),
        adapter=str(adapter),
        output=str(output),
        files=files,
        tensors_merged=len(merged),
        tensors_replaced=len(replaced),
        tensors_copied=len(model.tensors) - len(computed),
        modules=len(lora.modules),
        module_names=list(lora.modules),
        dtype=_dominant_dtype(model, merged),
        scale=float(scale),
        bytes_written=written,
        seconds=round(time.perf_counter() - started, 4),
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
