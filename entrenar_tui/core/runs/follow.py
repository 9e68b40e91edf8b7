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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

# Written by the launcher before the run starts (launch-config.yaml: a config edited in the app).
LAUNCH_FILES = ("launch.json", "console.log", "launch-config.yaml")
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
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
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
    except (OSError, ValueError, RecursionError):  # RecursionError: deeply nested JSON
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


def _pid(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _text(value: object) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    try:
        return json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        return "?"


def _error(value: object) -> dict | None:
    if not isinstance(value, dict):
        return None
    return {"message": _text(value.get("message")), "hint": _text(value.get("hint"))}


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _newer(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_mtime_ns > b.stat().st_mtime_ns
    except OSError:
        return False


def _is_stale(status: dict) -> bool:
    host = _str(status.get("host"))
    if host in (None, socket.gethostname()):
        return not pid_alive(status.get("pid"))
    age = _age_seconds(status.get("updated_at"))
    return age is not None and age > STALE_AFTER_S


def console_error(path: Path, start: int = 0) -> dict | None:
    """The last error a child wrote to console.log (from byte `start`, where its launch began):
    its `{"error": ...}` line (--json: a bad config, an unknown model) or an `error:` line with
    the `hint:` line after it."""
    try:
        with open(path / "console.log", "rb") as handle:
            handle.seek(max(0, start, handle.seek(0, os.SEEK_END) - 65536))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except (OSError, ValueError, OverflowError):
        return None
    following = ""  # the line after this one in the file
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return _error(data["error"])
        if line.startswith("error: "):
            hint = following[6:] if following.startswith("hint: ") else ""
            return {"message": line[7:], "hint": hint}
        following = line
    return None


def read_run(path: str | Path) -> RunSummary:
    """The run's state as a reader should show it (a dead `running` run is `stale`; a run whose
    process was launched after its last status.json is `starting`, or `failed` if that process
    died without writing one)."""
    path = Path(path)
    status = _read_json(path / "status.json")
    launch = _read_json(path / "launch.json")
    if status is None:
        return _from_launch(path, launch)
    summary = _from_status(path, status)
    relaunched = launch is not None and _newer(path / "launch.json", path / "status.json")
    if summary.state in ("running", "unreadable") or not relaunched:
        return summary
    # `resume` started a new process that has not written status.json yet (or died first).
    started = _from_launch(path, launch)
    return replace(started, step=summary.step, total_steps=summary.total_steps)


def _from_status(path: Path, status: dict) -> RunSummary:
    state = status.get("state")
    if state not in ("queued", "running", "finished", "failed", "stopped"):
        problem = {"message": "status.json has no known state", "hint": "is this a run directory?"}
        return RunSummary(path, "unreadable", error=problem)
    if state == "running" and _is_stale(status):
        state = "stale"
    return RunSummary(
        path=path,
        state=state,
        step=_int(status.get("step")),
        total_steps=_int(status.get("total_steps")),
        pid=_pid(status.get("pid")),
        host=_str(status.get("host")),
        started_at=_str(status.get("started_at")),
        updated_at=_str(status.get("updated_at")),
        error=_error(status.get("error")),
    )


def _launch_state(launch: dict) -> str:
    """`starting` while the launched process lives; from another host (where its pid means
    nothing) `starting` until STALE_AFTER_S have passed, then `stale`; else `failed`."""
    host = _str(launch.get("host"))
    if host in (None, socket.gethostname()):
        return "starting" if pid_alive(_pid(launch.get("pid"))) else "failed"
    age = _age_seconds(launch.get("started_at"))
    return "stale" if age is not None and age > STALE_AFTER_S else "starting"


def _from_launch(path: Path, launch: dict | None) -> RunSummary:
    """No usable status.json: a run being started, one that failed before it began, or junk."""
    if launch is None:
        if _exists(path / "status.json") or not _exists(path / "config.yaml"):
            problem = {
                "message": "status.json is missing or cannot be read",
                "hint": "is this a run directory?",
            }
            return RunSummary(path, "unreadable", error=problem)
        return RunSummary(path, "queued")
    state = _launch_state(launch)
    summary = RunSummary(
        path,
        state,
        pid=_pid(launch.get("pid")),
        host=_str(launch.get("host")),
        started_at=_str(launch.get("started_at")),
    )
    if state == "failed":
        summary.error = console_error(path, _int(launch.get("console_offset"))) or {
            "message": "the run's process ended before it wrote status.json",
            "hint": f"see {path / 'console.log'}",
        }
    return summary


def is_run_dir(path: Path) -> bool:
    try:
        return path.is_dir() and any(
            (path / name).exists() for name in ("status.json", "config.yaml", *LAUNCH_FILES)
        )
    except OSError:
        return False


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
            try:
                resolved = candidate.resolve()
            except (OSError, RuntimeError):  # a symlink loop
                continue
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
    _seen: bytes = field(default=b"", init=False, repr=False)  # the bytes just before offset

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def poll(self) -> list[dict]:
        self.reset = False
        try:
            with open(self.path, "rb") as handle:
                return self._read(handle)
        except OSError:
            return []

    def _read(self, handle) -> list[dict]:
        stat = os.fstat(handle.fileno())  # of the file opened, even if the path was just replaced
        if self.inode is not None and self._replaced(handle, stat):
            self.offset, self.partial, self._seen, self.reset = 0, b"", b"", True
        self.inode = stat.st_ino
        if stat.st_size <= self.offset:
            return []
        handle.seek(self.offset)
        chunk = handle.read(self.max_read)
        self.offset += len(chunk)
        self._seen = (self._seen + chunk)[-64:]
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        return [record for record in map(self._parse, lines) if record is not None]

    def _replaced(self, handle, stat: os.stat_result) -> bool:
        """A new file (inode), a shorter one, or one whose bytes before `offset` changed (a
        file replaced twice between polls can get the old inode number back)."""
        if stat.st_ino != self.inode or stat.st_size < self.offset:
            return True
        if not self._seen:
            return False
        handle.seek(self.offset - len(self._seen))
        return handle.read(len(self._seen)) != self._seen

    def _parse(self, line: bytes) -> dict | None:
        if not line.strip():
            return None
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            self.skipped += 1
            return None
        if not isinstance(record, dict):
            self.skipped += 1
            return None
        return record


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every complete line of a run's metrics.jsonl (a poll reads at most 8 MiB, so loop)."""
    tail, lines = MetricsTail(Path(run_dir) / "metrics.jsonl"), []
    while chunk := tail.poll():
        lines += chunk
    return lines


def tail_lines(path: str | Path, count: int = 20, max_bytes: int = 65536) -> list[str]:
    """The last `count` lines of a text file (events.log), reading at most `max_bytes`."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            start = max(0, end - max_bytes)
            handle.seek(max(0, start - 1))
            data = handle.read(end - start + (start > 0))
    except OSError:
        return []
    if start > 0:  # the byte before the window says whether its first line is whole
        cut = data[:1] != b"\n"
        data = data[1:]
        if cut:
            data = data.partition(b"\n")[2]
    return data.decode("utf-8", errors="replace").splitlines()[-count:]
