"""Starting, stopping and resuming runs as child processes, and one-shot `entrenar` children.

A run is `entrenar distill run` in its own process session (`start_new_session`), its output in
`console.log` inside the run directory, so it keeps training when the app that started it quits
or the SSH connection drops (no SIGHUP reaches it). Heavy one-shot work (importing torch, an
SVD, a conversion) also runs as a child, so the caller's process never holds the GIL for long.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..errors import EntrenarError, InvalidInputError
from ..fsutil import write_json_atomic
from .follow import LAUNCH_FILES, pid_alive, read_run

# Set in a child's environment to the pid of the process it must not outlive: `distill run`
# then stops at a checkpoint when that process dies (sweep workers; the app's runs outlive it).
STOP_WITH_PARENT = "ENTRENAR_STOP_WITH_PARENT"


def entrenar_command(*args: str) -> list[str]:
    """The command line of `entrenar ARGS` with this interpreter (works without PATH)."""
    return [sys.executable, "-m", "entrenar_tui.cli.main", *args]


@dataclass
class LaunchedRun:
    run_dir: Path
    pid: int
    command: list[str]
    process: subprocess.Popen | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "pid": self.pid, "command": self.command}


def _check_empty(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise InvalidInputError(
            f"output directory {run_dir} is a file", "choose another output directory"
        )
    if run_dir.exists() and any(p.name not in LAUNCH_FILES for p in run_dir.iterdir()):
        raise InvalidInputError(
            f"output directory {run_dir} already exists and is not empty",
            "resume it, or choose another output directory",
        )


def _spawn(run_dir: Path, args: list[str], cwd: str | Path | None, env: dict | None):
    command = entrenar_command(*args, "--json")
    run_dir.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    with open(run_dir / "console.log", "ab") as log:
        console_offset = log.seek(0, os.SEEK_END)  # this launch's output starts here
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            env=child_env,
        )
    write_json_atomic(
        run_dir / "launch.json",
        {
            "pid": process.pid,
            "host": socket.gethostname(),
            "command": command,
            "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "console_offset": console_offset,
        },
    )
    return LaunchedRun(run_dir, process.pid, command, process)


def launch_run(
    config: str | Path,
    run_dir: str | Path,
    overrides: list[str] | None = None,
    *,
    cwd: str | Path | None = None,
    env: dict | None = None,
) -> LaunchedRun:
    """Start `entrenar distill run --config CONFIG --output RUN_DIR` in its own session."""
    run_dir = Path(run_dir)
    _check_empty(run_dir)
    args = ["distill", "run", "--config", str(config), "--output", str(run_dir)]
    for override in overrides or []:
        args += ["--set", override]
    return _spawn(run_dir, args, cwd, env)


def resume_run(
    run_dir: str | Path, *, cwd: str | Path | None = None, env: dict | None = None
) -> LaunchedRun:
    """Continue a stopped, failed or stale run from its last checkpoint."""
    run_dir = Path(run_dir)
    summary = read_run(run_dir)
    if summary.alive:
        raise InvalidInputError(
            f"{run_dir} is still {summary.state} (pid {summary.pid})", "stop it before resuming"
        )
    if summary.state == "finished":
        raise InvalidInputError(f"{run_dir} has finished", "start a new run to train further")
    return _spawn(run_dir, ["distill", "run", "--resume", str(run_dir)], cwd, env)


def stop_run(run_dir: str | Path) -> int:
    """SIGTERM the run's process: it finishes its step, writes a checkpoint and stops."""
    summary = read_run(run_dir)
    if not summary.alive or summary.pid is None:
        raise InvalidInputError(
            f"{run_dir} is not running (state {summary.state})", "nothing to stop"
        )
    if summary.host not in (None, socket.gethostname()):
        raise InvalidInputError(
            f"{run_dir} runs on {summary.host}, not on this machine",
            f"stop it there: kill -TERM {summary.pid}",
        )
    if not pid_alive(summary.pid):
        raise InvalidInputError(
            f"the run's process {summary.pid} is gone", "resume the run instead"
        )
    os.kill(summary.pid, signal.SIGTERM)
    return summary.pid


class ChildError(EntrenarError):
    """A one-shot child failed; carries the child's own message, hint and exit code."""

    def __init__(self, message: str, hint: str, code: int) -> None:
        super().__init__(message, hint)
        self.exit_code = code


def run_entrenar_json(args: list[str], timeout: float | None = None, cwd=None) -> dict:
    """Run `entrenar ARGS --json` to completion and return its JSON document.

    The child's `{"error": ...}` becomes a ChildError with the same message, hint and code, so
    a front end shows it exactly as the CLI would."""
    command = entrenar_command(*args, "--json")
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InvalidInputError(
            f"`entrenar {' '.join(args)}` took longer than {timeout:.0f} s",
            "run it from a terminal to see where it stops",
        ) from exc
    document = _last_json(done.stdout)
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        error = document["error"]
        code = error.get("code") if isinstance(error.get("code"), int) else done.returncode
        raise ChildError(str(error.get("message")), str(error.get("hint", "")), code)
    if document is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ChildError(
            f"`entrenar {' '.join(args)}` exited {done.returncode}: {tail[0]}",
            "run it from a terminal with --debug",
            done.returncode or 1,
        )
    if isinstance(document, dict):
        document.setdefault("exit_code", done.returncode)
    return document


def _last_json(text: str):
    """The whole stdout as one document, else its last line that parses."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def start_from_app(
    config_ref: str,
    edited_text: str | None,
    output: str | None,
    overrides: list[str] | None = None,
) -> LaunchedRun:
    """Start a run the way `distill run` would choose its directory (a packaged example gets a
    new `runs/NAME-YYYYMMDD-HHMMSS`). A config edited in the app is saved in the run directory
    as launch-config.yaml and run from there. Schema problems are raised before anything starts."""
    import yaml

    from ..distill.config import default_run_dir, load_config, parse_config
    from ..errors import ConfigError

    if edited_text is None:
        config = load_config(config_ref, overrides)
    else:
        try:
            data = yaml.safe_load(edited_text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"the edited config is not YAML: {exc}", "fix it and retry") from exc
        config, problems = parse_config(data if isinstance(data, dict) else {})
        if problems:
            first = problems[0]
            raise ConfigError(f"{first.path}: {first.message}", first.hint or "validate it first")
    run_dir = Path(output) if output else default_run_dir(config_ref, config)
    if edited_text is None:
        return launch_run(config_ref, run_dir, overrides)
    _check_empty(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    edited = run_dir / "launch-config.yaml"
    edited.write_text(edited_text, encoding="utf-8")
    return launch_run(edited, run_dir, overrides)
