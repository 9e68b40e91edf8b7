"""Which models (and adapters) a user has at hand: packaged, under a folder, in the Hugging Face
cache, or opened lately. Discovery only looks at names, sizes and small JSON files; it never
opens weights, so listing stays fast enough to redo on every refresh.

Every entry's `ref` is what `resolve()` takes, so whatever is listed can be inspected.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError
from .resolve import HUB_ID, PACKAGED, packaged_path

MAX_DEPTH = 2  # cwd/model, cwd/models/model; deeper is somebody else's project
FILE_KINDS = {".safetensors": "safetensors", ".gguf": "gguf", ".pth": "pth", ".apr": "apr"}
# what a folder with a config.json holds, in resolve()'s order of preference
FOLDER_WEIGHTS = (
    ("safetensors", "*.safetensors"),
    ("gguf", "*.gguf"),
    ("apr", "*.apr"),
    ("pth", "*.bin"),
    ("pth", "*.pth"),
)
SKIP_DIRS = {"checkpoints", "__pycache__", "node_modules", "site-packages", "venv"}
SOURCE_LABELS = {
    "packaged": "packaged",
    "local": "working dir",
    "runs": "runs",
    "models-dir": "--models",
    "hf-cache": "HF cache",
    "recent": "recent",
}


@dataclass(frozen=True)
class CatalogEntry:
    ref: str  # what resolve() takes
    source: str  # a SOURCE_LABELS key
    kind: str  # safetensors | gguf | pth | apr | adapter | hub | "-" (unknown, missing)
    size_bytes: int | None  # weights on disk; None when unknown
    note: str = ""  # "not installed", "missing", ...

    @property
    def key(self) -> str:
        """Unique within one listing: the same model may be packaged and recent."""
        return f"{self.source}:{self.ref}"


# --------------------------------------------------------------------------- one path


def _size(paths: Iterable[Path]) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def folder_model(folder: Path) -> tuple[str, int] | None:
    """(kind, weight bytes) when `folder` is a model folder: config.json and weights."""
    if not (folder / "config.json").is_file():
        return None
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            return "safetensors", _size(folder / f for f in set(shards.values()))
        except (OSError, ValueError, AttributeError):
            return "safetensors", 0
    for kind, pattern in FOLDER_WEIGHTS:
        found = sorted(folder.glob(pattern))
        if found:
            return kind, _size(found)
    return None


def is_adapter_folder(folder: Path) -> bool:
    return (folder / "adapter_config.json").is_file()


def _path_entry(ref: str, path: Path, source: str) -> CatalogEntry | None:
    """An entry for a model file or folder, or None when `path` is neither."""
    if path.is_file() and path.suffix.lower() in FILE_KINDS:
        kind = FILE_KINDS[path.suffix.lower()]
        sidecar = path.with_name(path.name + ".bin")  # an APR's raw bytes (docs/apr-format.md)
        extra = sidecar.stat().st_size if kind == "apr" and sidecar.is_file() else 0
        return CatalogEntry(ref, source, kind, path.stat().st_size + extra)
    if path.is_dir():
        if is_adapter_folder(path):
            return CatalogEntry(ref, source, "adapter", _size(path.glob("adapter_model.*")))
        found = folder_model(path)
        if found:
            return CatalogEntry(ref, source, found[0], found[1])
    return None


# --------------------------------------------------------------------------- sources


def packaged_models() -> list[CatalogEntry]:
    """The packaged short names; one that is not installed is listed and says so."""
    out = []
    for name in PACKAGED:
        try:
            path = packaged_path(name)
        except ModelNotFoundError as exc:
            out.append(CatalogEntry(name, "packaged", "-", None, f"not installed ({exc.hint})"))
            continue
        entry = _path_entry(name, path, "packaged")
        out.append(entry or CatalogEntry(name, "packaged", "-", None, "not installed"))
    return out


def _skipped(path: Path) -> bool:
    return path.name.startswith(".") or path.name in SKIP_DIRS


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name.lower())
    except OSError:  # unreadable folders are not an error worth showing
        return []


def _walk(folder: Path, depth: int, max_depth: int, want) -> Iterator[Path]:
    """Paths `want` accepts, at most `max_depth` below the root. Accepted folders are leaves,
    and so are adapter folders: their weights are not models of their own."""
    for child in _children(folder):
        if child.is_dir() and _skipped(child):
            continue
        if want(child):
            yield child
        elif child.is_dir() and depth + 1 < max_depth and not is_adapter_folder(child):
            yield from _walk(child, depth + 1, max_depth, want)


def _is_model(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in FILE_KINDS
    return path.is_dir() and not is_adapter_folder(path) and folder_model(path) is not None


def _shown(path: Path, root: Path, shown_root: str) -> str:
    """The ref as the user would type it: relative to the working dir, or under `shown_root`."""
    relative = path.relative_to(root)
    if shown_root in ("", "."):
        return str(relative) if str(relative) != "." else "."
    return str(Path(shown_root) / relative)


def scan_models(root: str | Path, source: str, max_depth: int = MAX_DEPTH) -> list[CatalogEntry]:
    """Model folders (config.json + weights) and weight files under `root`, hidden dirs,
    virtual envs and checkpoint folders skipped. `root` itself may be a model."""
    folder = Path(root).expanduser()
    shown_root = str(root)
    if _is_model(folder):
        entry = _path_entry(shown_root, folder, source)
        return [entry] if entry else []
    if not folder.is_dir():
        return []
    entries = (
        _path_entry(_shown(p, folder, shown_root), p, source)
        for p in _walk(folder, 0, max_depth, _is_model)
    )
    return [e for e in entries if e is not None]


def run_outputs(runs_dir: str | Path, want_adapters: bool = False) -> list[CatalogEntry]:
    """`runs/*/final`: what finished runs exported (models, or adapters with `want_adapters`)."""
    runs = Path(runs_dir)
    out = []
    for run in _children(runs) if runs.is_dir() else []:
        final = run / "final"
        if not final.is_dir() or is_adapter_folder(final) != want_adapters:
            continue
        entry = _path_entry(str(Path(runs_dir) / run.name / "final"), final, "runs")
        if entry:
            out.append(entry)
    return out


def hf_cache_dir() -> Path:
    """The hub cache as huggingface_hub resolves it, read from the environment now (its own
    constant is frozen when it is first imported)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    home = os.environ.get("HF_HOME") or str(Path(xdg) / "huggingface")
    return Path(home).expanduser() / "hub"


def _hub_kind(repo) -> str:
    names = {f.file_name for revision in repo.revisions for f in revision.files}
    for kind, pattern in FOLDER_WEIGHTS:
        if any(Path(n).match(pattern) for n in names):
            return kind
    return "hub"


def hf_cache_models(cache_dir: str | Path | None = None) -> list[CatalogEntry]:
    """Model repos in the Hugging Face cache; a missing or empty cache is simply none."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    cache = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
    try:
        info = scan_cache_dir(cache)
    except (CacheNotFound, OSError, ValueError):
        return []
    repos = sorted((r for r in info.repos if r.repo_type == "model"), key=lambda r: r.repo_id)
    return [CatalogEntry(r.repo_id, "hf-cache", _hub_kind(r), r.size_on_disk) for r in repos]


def recent_models(refs: Iterable[str]) -> list[CatalogEntry]:
    """Entries for stored references; one whose file is gone is kept and marked missing."""
    out = []
    for ref in refs:
        if ref in PACKAGED:
            entry = next((e for e in packaged_models() if e.ref == ref), None)
            out.append(CatalogEntry(ref, "recent", entry.kind, entry.size_bytes, entry.note))
            continue
        found = _path_entry(ref, Path(ref).expanduser(), "recent")
        if found:
            out.append(found)
        elif HUB_ID.match(ref) and not Path(ref).expanduser().exists():
            out.append(CatalogEntry(ref, "recent", "hub", None))
        else:
            out.append(CatalogEntry(ref, "recent", "-", None, "missing"))
    return out


def discover(
    cwd: str | Path = ".",
    model_dirs: Iterable[str] = (),
    runs_dir: str | Path = "runs",
    recent: Iterable[str] = (),
    cache_dir: str | Path | None = None,
) -> list[CatalogEntry]:
    """Everything the Models screen lists, grouped by source in a fixed order."""
    entries = packaged_models()
    entries += scan_models(cwd, "local")
    entries += run_outputs(runs_dir)
    for folder in model_dirs:
        entries += scan_models(folder, "models-dir")
    entries += hf_cache_models(cache_dir)
    entries += recent_models(recent)
    unique = {e.key: e for e in reversed(entries)}  # overlapping --models folders: list once
    return [e for e in entries if unique.get(e.key) is e]


# --------------------------------------------------------------------------- adapters


def find_adapters(
    root: str | Path = ".", runs_dir: str | Path = "runs", max_depth: int = MAX_DEPTH
) -> list[CatalogEntry]:
    """PEFT adapter folders (adapter_config.json) under `root`, and runs' exported adapters."""
    folder = Path(root)
    found = [
        CatalogEntry(
            _shown(p, folder, str(root)), "local", "adapter", _size(p.glob("adapter_model.*"))
        )
        for p in _walk(folder, 0, max_depth, lambda p: p.is_dir() and is_adapter_folder(p))
    ]
    known = {e.ref for e in found}
    return found + [e for e in run_outputs(runs_dir, want_adapters=True) if e.ref not in known]


def adapter_base(folder: str | Path) -> str | None:
    """The base model an adapter names (adapter_config.json's base_model_name_or_path)."""
    try:
        config = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return base if isinstance(base, str) and base else None
