"""Reading run directories while they are being written: the TUI's Runs screen, the shell's
`watch` and the sweep engine all use these.

A run writes `status.json` atomically and appends whole lines to `metrics.jsonl`, but a reader
can still meet a file being created, a last line half flushed, a directory made by hand, or a
process that died without writing its end state. None of that raises here: the reader reports
what it can and says why the rest is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

LAUNCH_FILES = ("launch.json", "console.log")  # written by the launcher before the run starts
STALE_AFTER_S = 600  # a `running` run on another host with no update for this long is stale
MAX_STATUS_BYTES = 1 << 20


@dataclass
class RunSummary:
    """What a list of runs shows: `state` may be `stale` or `starting`, which are never written."""

    path: Path
    state: str  # queued|running|finished|failed|stopped, or derived: starting|stale|unreadable
    step: int = 0
    total_steps: int = 0
    pid: int | None = None
    host: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    error: dict | None = None  # {message, hint}

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def alive(self) -> bool:
        return self.state in ("running", "starting", "queued")

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "state": self.state,
            "step": self.step,
            "total_steps": self.total_steps,
            "pid": self.pid,
            "host": self.host,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "error": self.error,
        }


def pid_alive(pid: int | None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except OverflowError:
        return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A child that exited but was not reaped still answers kill(0); /proc says it is dead."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _read_json(path: Path) -> dict | None:
    """A JSON object, or None when the file is missing, partial, too big or not an object."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_STATUS_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _age_seconds(stamp: object) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - when).total_seconds()


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _error(value: object) -> dict | None:
    if not isinstance(value, dict):
        return None
    return {"message": str(value.get("message", "")), "hint": str(value.get("hint", ""))}


def _is_stale(status: dict) -> bool:
    host = status.get("host")
    if host in (None, socket.gethostname()):
        return not pid_alive(status.get("pid"))
    age = _age_seconds(status.get("updated_at"))
    return age is not None and age > STALE_AFTER_S


def console_error(path: Path) -> dict | None:
    """The `{"error": ...}` line a child wrote to console.log when it failed before its run
    directory existed (a bad config, an unknown model), or its last `error:`/`hint:` lines."""
    try:
        with open(path / "console.log", "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    message = hint = None
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return _error(data["error"])
        if line.startswith("hint: ") and hint is None:
            hint = line[6:]
        elif line.startswith("error: ") and message is None:
            message = line[7:]
    return {"message": message, "hint": hint or ""} if message else None


def read_run(path: str | Path) -> RunSummary:
    """The run's state as a reader should show it (a dead `running` run is `stale`)."""
    path = Path(path)
    status = _read_json(path / "status.json")
    if status is None:
        return _from_launch(path)
    state = status.get("state")
    if state not in ("queued", "running", "finished", "failed", "stopped"):
        problem = {"message": "status.json has no known state", "hint": "is this a run directory?"}
        return RunSummary(path, "unreadable", error=problem)
    if state == "running" and _is_stale(status):
        state = "stale"
    pid = status.get("pid")
    return RunSummary(
        path=path,
        state=state,
        step=_int(status.get("step")),
        total_steps=_int(status.get("total_steps")),
        pid=pid if isinstance(pid, int) else None,
        host=status.get("host") if isinstance(status.get("host"), str) else None,
        started_at=status.get("started_at") if isinstance(status.get("started_at"), str) else None,
        updated_at=status.get("updated_at") if isinstance(status.get("updated_at"), str) else None,
        error=_error(status.get("error")),
    )


def _from_launch(path: Path) -> RunSummary:
    """No status.json yet: a run being started, one that failed before it began, or junk."""
    launch = _read_json(path / "launch.json")
    if launch is None:
        state = "unreadable" if (path / "status.json").exists() else "queued"
        if not (path / "config.yaml").exists() and state == "queued":
            state = "unreadable"
        return RunSummary(path, state)
    pid = launch.get("pid") if isinstance(launch.get("pid"), int) else None
    if pid_alive(pid):
        return RunSummary(path, "starting", pid=pid, started_at=launch.get("started_at"))
    error = console_error(path) or {
        "message": "the run's process ended before it wrote status.json",
        "hint": f"see {path / 'console.log'}",
    }
    return RunSummary(path, "failed", pid=pid, started_at=launch.get("started_at"), error=error)


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("status.json", "config.yaml", *LAUNCH_FILES)
    )


def list_runs(*roots: str | Path) -> list[RunSummary]:
    """Every run directory directly under each root (and the roots themselves if they are runs),
    newest first."""
    seen: dict[Path, RunSummary] = {}
    for root in roots:
        root = Path(root)
        candidates = [root] if is_run_dir(root) else []
        with contextlib.suppress(OSError):
            candidates += [p for p in root.iterdir() if not p.name.startswith(".")]
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved not in seen and is_run_dir(candidate):
                seen[resolved] = read_run(candidate)
    return sorted(seen.values(), key=_mtime, reverse=True)


def _mtime(run: RunSummary) -> float:
    times = []
    for name in ("status.json", "config.yaml", *LAUNCH_FILES):
        with contextlib.suppress(OSError):
            times.append((run.path / name).stat().st_mtime)
    return max(times, default=0.0)


@dataclass
class MetricsTail:
    """Follows `metrics.jsonl` from its last byte offset; never re-reads what it has seen.

    A half-written last line stays in a buffer until its newline arrives. When the file is
    replaced (a resumed run drops the lines after its checkpoint) `reset` is set and reading
    starts over, so the caller can clear what it drew."""

    path: Path
    offset: int = 0
    partial: bytes = b""
    inode: int | None = None
    skipped: int = 0  # lines that were not JSON objects
    max_read: int = 8 << 20  # bytes per poll: a huge file is caught up over several polls
    reset: bool = field(default=False)

    def poll(self) -> list[dict]:
        self.reset = False
        try:
            stat = self.path.stat()
        except OSError:
            return []
        if self.inode is not None and (stat.st_ino != self.inode or stat.st_size < self.offset):
            self.offset, self.partial, self.reset = 0, b"", True
        self.inode = stat.st_ino
        if stat.st_size == self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(self.max_read)
        except OSError:
            return []
        self.offset += len(chunk)
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        return [record for record in map(self._parse, lines) if record is not None]

    def _parse(self, line: bytes) -> dict | None:
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except ValueError:
            self.skipped += 1
            return None
        if not isinstance(record, dict):
            self.skipped += 1
            return None
        return record


def tail_lines(path: str | Path, count: int = 20, max_bytes: int = 65536) -> list[str]:
    """The last `count` lines of a text file (events.log), reading at most `max_bytes`."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - max_bytes))
            data = f.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if end > max_bytes and lines:
        lines = lines[1:]  # the first line was cut
    return lines[-count:]
