"""`convert_adapter`: a PEFT LoRA adapter as safetensors, pth (adapter_model.bin) or GGUF.

safetensors and pth keep PEFT's layout (a folder with adapter_config.json), so PEFT and
transformers load either. GGUF follows llama.cpp's LoRA adapter format as its
convert_lora_to_gguf.py writes it: general.type "adapter", adapter.type "lora",
adapter.lora.alpha, and per module `blk.N.attn_q.weight.lora_a` [r, in] / `.lora_b` [out, r]
(numpy order; GGUF's ne[] is reversed), with lora_b's rows of q/k permuted the way
convert_hf_to_gguf.py permutes the base weights, and token_embd's lora_a transposed.

llama.cpp keeps one alpha per file and scales each tensor by alpha / rank, so rsLoRA and
alpha_pattern cannot be stated in its metadata; their true scaling is folded into lora_b
(llama.cpp's own converter drops it). DoRA, LoRA biases and replaced embeddings or heads have
no llama.cpp equivalent and are refused with a hint to merge instead.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..convert.gguf_writer import permute_qk_rows
from ..errors import InvalidInputError, UnsupportedError
from ..fsutil import atomic_dir, atomic_path
from ..models.handle import Model
from .adapter import Adapter, LoraModule, read_adapter

FORMATS = ("safetensors", "pth", "gguf")
LLAMA_FAMILY = ("llama", "mistral")  # convert_hf_to_gguf.py writes both as arch "llama"
_SIDE_FILES = (
    "adapter_config.json",
    "README.md",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
)
_MERGE_HINT = (
    "merge the adapter into its base instead (entrenar lora merge) and convert the merged model"
)


@dataclass
class AdapterConvertResult:
    adapter: str
    format: str
    output: str
    files: list[str]
    tensors: int
    parameters: int
    file_size_bytes: int
    seconds: float
    alpha: float | None = None  # GGUF: adapter.lora.alpha as written
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- PEFT folders


def _load_state(adapter: Adapter) -> dict:
    """The adapter's tensors as torch tensors, names and dtypes untouched (adapters are small)."""
    file = adapter.model.source.weight_files[0]
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(file)
    import torch

    state = torch.load(file, map_location="cpu", weights_only=True)  # never unpickles code
    return {name: t.contiguous() for name, t in state.items() if isinstance(t, torch.Tensor)}


def _write_peft_folder(adapter: Adapter, target: str, folder: Path) -> list[str]:
    import torch

    state = _load_state(adapter)
    if target == "safetensors":
        from safetensors.torch import save_file

        save_file(state, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    else:
        torch.save(state, folder / "adapter_model.bin")
    for name in _SIDE_FILES:
        if (adapter.path / name).is_file():
            shutil.copyfile(adapter.path / name, folder / name)
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- GGUF


def permute_rows(b: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """The base weights' q/k permutation on the rows of lora_b (A is unchanged); k uses the
    key/value head count."""
    return permute_qk_rows(b, n_head_kv if n_head_kv is not None else n_head)


def _base_arch(adapter: Adapter, base: str | Path | None):
    ref = base or adapter.base_model_name_or_path
    if not ref:
        raise InvalidInputError(
            "GGUF conversion needs the base model's config (head counts for llama.cpp's q/k layout)",
            "pass the base model (--base PATH or hub id); only its config.json is read",
        )
    arch = Model.open(ref).arch
    if arch.model_type not in LLAMA_FAMILY:
        raise UnsupportedError(
            f"GGUF LoRA output supports llama-family bases; this base is {arch.model_type}",
            "convert to safetensors or pth, or merge the adapter and convert the merged model",
        )
    if not arch.heads:
        raise InvalidInputError(
            f"base {ref}: no attention head count in its config",
            "pass the base's folder with config.json",
        )
    return arch


def _check_gguf_able(adapter: Adapter) -> None:
    if adapter.use_dora or any(m.magnitude is not None for m in adapter.modules.values()):
        raise UnsupportedError("llama.cpp has no DoRA adapters", _MERGE_HINT)
    if any(m.bias is not None for m in adapter.modules.values()):
        raise UnsupportedError("llama.cpp LoRA adapters have no lora_B bias", _MERGE_HINT)
    for name in adapter.saved:
        if "norm" not in name:  # norms are carried as plain tensors, like llama.cpp's converter
            raise UnsupportedError(
                f"modules_to_save {name} has no place in a llama.cpp adapter", _MERGE_HINT
            )


def _gguf_name(table, name: str, tied: bool) -> str:
    if tied and name.endswith("lm_head"):
        raise UnsupportedError(
            "the adapter targets lm_head, which this base ties to the embeddings", _MERGE_HINT
        )
    mapped = table.get_name(name)
    if mapped is None:
        raise UnsupportedError(f"module {name} has no llama.cpp tensor", _MERGE_HINT)
    return mapped + ".weight"


def _module_tensors(adapter: Adapter, module: LoraModule, name: str, arch, alpha: float):
    """(lora_a, lora_b) for one module, in llama.cpp's layout and with the scaling folded in."""
    lora_a = np.array(adapter.read(module.a), dtype=np.float32)
    lora_b = np.array(adapter.read(module.b), dtype=np.float32)
    llama_cpp_scaling = alpha / module.rank  # what llama.cpp will apply (rank = lora_b's ne[0])
    if not np.isclose(module.scaling, llama_cpp_scaling, rtol=1e-7, atol=0):
        lora_b *= np.float32(module.scaling / llama_cpp_scaling)
    if ".attn_q." in name:
        lora_b = permute_rows(lora_b, arch.heads, arch.heads)
    elif ".attn_k." in name:
        lora_b = permute_rows(lora_b, arch.heads, arch.kv_heads)
    if module.embedding:
        lora_a = lora_a.T  # llama.cpp gathers rows of token_embd's lora_a by token id
    return np.ascontiguousarray(lora_a), np.ascontiguousarray(lora_b)


def _write_gguf(adapter: Adapter, arch, path: Path) -> tuple[int, list[str]]:
    import gguf

    _check_gguf_able(adapter)
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, arch.layers or 0)
    alpha, notes = float(adapter.lora_alpha), []
    if adapter.use_rslora or adapter.alpha_pattern:
        notes.append(
            "rsLoRA/alpha_pattern scaling folded into lora_b (llama.cpp uses alpha / rank)"
        )
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_name(adapter.path.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    count = 0
    for module in adapter.modules.values():
        name = _gguf_name(table, module.name, bool(arch.tied_embeddings))
        lora_a, lora_b = _module_tensors(adapter, module, name, arch, alpha)
        writer.add_tensor(name + ".lora_a", lora_a)
        writer.add_tensor(name + ".lora_b", lora_b)
        count += 2
    for saved_name, info in adapter.saved.items():
        mapped = table.get_name(saved_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise UnsupportedError(
                f"modules_to_save {saved_name} has no llama.cpp tensor", _MERGE_HINT
            )
        writer.add_tensor(mapped, np.array(adapter.read(info), dtype=np.float32))
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return count, notes


# --------------------------------------------------------------------------- the operation


def _check_output(adapter: Adapter, target: str, output: Path) -> None:
    out, src = output.resolve(), adapter.path.resolve()
    if out == src or src in out.parents or out in src.parents:
        raise InvalidInputError(
            f"output {output} would overwrite the adapter {adapter.path}", "write it somewhere else"
        )
    if target == "gguf":
        if output.suffix.lower() != ".gguf" or output.is_dir():
            raise InvalidInputError(
                f"GGUF output {output} should be a file ending in .gguf",
                f"e.g. {output.stem or 'adapter'}.gguf",
            )
    elif output.is_file() or (
        output.is_dir() and any(output.iterdir()) and not (output / "adapter_config.json").exists()
    ):
        raise InvalidInputError(
            f"{output} exists and is not an adapter folder",
            "give a new folder path (an earlier adapter folder there is replaced)",
        )


def convert_adapter(
    adapter: str | Path, to: str, output: str | Path, base: str | Path | None = None
) -> AdapterConvertResult:
    """Write the adapter in another format; GGUF needs the base's config (`base`, or the
    adapter's base_model_name_or_path) for llama.cpp's q/k layout."""
    started = time.perf_counter()
    target = str(to).lower()
    if target not in FORMATS:
        raise InvalidInputError(
            f"unknown adapter format {to!r}", f"use one of: {', '.join(FORMATS)}"
        )
    lora = read_adapter(adapter)
    output = Path(output).expanduser()
    _check_output(lora, target, output)
    notes: list[str] = []
    alpha = None
    if target == "gguf":
        arch = _base_arch(lora, base)
        with atomic_path(output) as tmp:
            tensors, notes = _write_gguf(lora, arch, tmp)
        files, size, alpha = [output.name], output.stat().st_size, float(lora.lora_alpha)
    else:
        with atomic_dir(output) as folder:
            files = _write_peft_folder(lora, target, folder)
        tensors = len(lora.model.tensors)
        size = sum((output / f).stat().st_size for f in files)
    return AdapterConvertResult(
        adapter=str(adapter),
        format=target,
        output=str(output),
        files=files,
        tensors=tensors,
        parameters=lora.parameters + lora.saved_parameters,
        file_size_bytes=size,
        seconds=round(time.perf_counter() - started, 4),
        alpha=alpha,
        notes=notes,
    )
