"""The models a user opened lately, kept in `$ENTRENAR_HOME/recent.json` (default ~/.entrenar).

A list of references, newest first, at most MAX_RECENT. The file is written atomically so two
app instances never leave half a file; a file that is unreadable or malformed is ignored (it
holds nothing that cannot be rebuilt by opening the models again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .fsutil import write_json_atomic
from .models.resolve import PACKAGED

MAX_RECENT = 20
RECENT_FILE = "recent.json"


def entrenar_home() -> Path:
    """`$ENTRENAR_HOME`, else ~/.entrenar: where the app keeps its own small state."""
    return Path(os.environ.get("ENTRENAR_HOME") or "~/.entrenar").expanduser()


def recent_file() -> Path:
    return entrenar_home() / RECENT_FILE


def load_recent(path: Path | None = None) -> list[str]:
    """The stored references, newest first; [] when the file is missing or not ours."""
    path = path or recent_file()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    refs = data.get("models") if isinstance(data, dict) else None
    if not isinstance(refs, list):
        return []
    clean = [r for r in refs if isinstance(r, str) and r.strip()]
    return list(dict.fromkeys(clean))[:MAX_RECENT]


def add_recent(ref: str, path: Path | None = None) -> list[str]:
    """Put `ref` first (moving it if it was there already), keep MAX_RECENT, save, return them.

    Relative paths are stored absolute: the app may be started from another folder next time."""
    path = path or recent_file()
    stored = _absolute_if_path(ref)
    refs = [stored, *(r for r in load_recent(path) if r != stored)][:MAX_RECENT]
    write_json_atomic(path, {"models": refs})
    return refs


def _absolute_if_path(ref: str) -> str:
    if ref in PACKAGED:  # resolve() reads a packaged name before any path of that name
        return ref
    candidate = Path(ref).expanduser()
    return str(candidate.resolve()) if candidate.exists() else ref
