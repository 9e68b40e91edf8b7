"""A shell session: its models, settings, started runs and history, saved as JSON after every
command to `$ENTRENAR_HOME/sessions/YYYY-MM-DD-NNN.json` (default `~/.entrenar`).

Every save is atomic (temp file, fsync, rename), so a shell killed mid-save leaves the previous
file whole. A store that cannot be written (read-only, full, a flaky network filesystem) turns
into a memory-only session with one warning; the shell goes on.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from ..errors import InvalidInputError
from ..fsutil import write_json_atomic

SETTINGS = {  # what `set KEY VALUE` accepts, with its type and default
    "temperature": (float, 2.0),
    "alpha": (float, 0.7),
    "steps": (int, 100),
    "batch": (int, 4),
    "seq": (int, 128),
    "rank": (int, 16),
    "learning_rate": (float, 3e-4),
    "eval_blocks": (int, 16),  # held-out blocks scored before and after a run
    "device": (str, "auto"),
}


def entrenar_home() -> Path:
    return Path(os.environ.get("ENTRENAR_HOME") or Path.home() / ".entrenar")


@dataclass
class Session:
    id: str = ""
    model: str | None = None  # the current model (fetch/load)
    teacher: str | None = None
    student: str | None = None
    student_layers: list[int] | None = None  # a student made of these teacher layers
    settings: dict = field(default_factory=lambda: {k: v for k, (_, v) in SETTINGS.items()})
    runs: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # {command, started_at, duration_s, status}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Session:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        kinds = {
            "settings": dict,
            "runs": list,
            "history": list,
            "student_layers": (list, type(None)),
        }
        texts = ("id", "model", "teacher", "student")
        wrong = [k for k, kind in kinds.items() if k in known and not isinstance(known[k], kind)]
        wrong += [k for k in texts if known.get(k) is not None and not isinstance(known[k], str)]
        if wrong:
            raise InvalidInputError(
                f"the session file does not hold a session (bad {', '.join(wrong)})",
                "start a new one with `entrenar shell`",
            )
        session = cls(**known)
        session.settings = {**cls().settings, **session.settings}
        return session


class SessionStore:
    """Where sessions live; `path` is None once saving has failed (memory only)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or entrenar_home()) / "sessions"
        self.warning: str | None = None

    def new_id(self) -> str:
        today = date.today().isoformat()
        taken = {p.stem for p in self.root.glob(f"{today}-*.json")} if self.root.is_dir() else set()
        number = 1
        while f"{today}-{number:03d}" in taken:
            number += 1
        return f"{today}-{number:03d}"

    def path_of(self, session_id: str) -> Path:
        return self.root / f"{session_id}.json"

    def save(self, session: Session) -> Path | None:
        if self.warning is not None:
            return None
        try:
            path = self.path_of(session.id)
            write_json_atomic(path, session.to_dict())
            return path
        except OSError as exc:
            self.warning = (
                f"sessions cannot be saved in {self.root} ({exc.strerror or exc}); this session "
                "is kept in memory only"
            )
            return None

    def latest(self) -> str | None:
        files = sorted(self.root.glob("*.json")) if self.root.is_dir() else []
        return files[-1].stem if files else None

    def load(self, session_id: str | None = None) -> Session:
        """The session `session_id`, or the latest one."""
        session_id = session_id or self.latest()
        if session_id is None:
            raise InvalidInputError(
                f"no saved sessions in {self.root}", "start one with `entrenar shell`"
            )
        path = self.path_of(session_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInputError(
                f"no session {session_id!r} in {self.root}",
                f"saved sessions: {', '.join(p.stem for p in sorted(self.root.glob('*.json'))) or 'none'}",
            ) from None
        except (OSError, ValueError):
            raise InvalidInputError(
                f"{path} is not a readable session", "start a new one with `entrenar shell`"
            ) from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"{path} is not a session", "start a new one")
        session = Session.from_dict(data)
        session.id = session_id
        return session
