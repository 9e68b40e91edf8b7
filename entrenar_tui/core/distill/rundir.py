"""The run directory (docs/architecture.md): provenance, status, metrics, events, checkpoints.

Everything here is written atomically so a reader (the TUI, `tail -f`, a resumed run) never
sees half a file, and a SIGKILL at any moment leaves a resumable directory behind.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from ..errors import InvalidInputError
from ..fsutil import atomic_dir, write_json_atomic, write_text_atomic

STATES = ("queued", "running", "finished", "failed", "stopped")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("entrenar-tui", "torch", "transformers", "peft", "safetensors", "gguf", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _hardware() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


@dataclass
class RunDir:
    path: Path

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.path / "final"

    # -------------------------------------------------------------- provenance & config
    def start(self, config_dump: dict, config_hash: str, command: list[str]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path / "config.yaml", yaml.safe_dump(config_dump, sort_keys=False))
        write_json_atomic(
            self.path / "run.json",
            {
                "command": command,
                "config_hash": config_hash,
                "versions": _versions(),
                "git_commit": _git_commit(),
                "hardware": _hardware(),
                "started_at": utc_now(),
                "argv": sys.argv,
            },
        )

    def read_config(self) -> dict:
        path = self.path / "config.yaml"
        if not path.exists():
            raise InvalidInputError(
                f"{self.path} is not a run directory (no config.yaml)",
                "pass the folder that `distill run` created",
            )
        from .config import load_yaml  # the hardened reader: YAML errors, bombs, bad bytes

        data = load_yaml(path)
        if not isinstance(data, dict):
            raise InvalidInputError(
                f"{path} does not hold a config (a YAML mapping)", "start a new run instead"
            )
        return data

    # -------------------------------------------------------------- status
    def status(self) -> dict:
        """The last status written, or {} when there is none or it cannot be read."""
        try:
            status = json.loads((self.path / "status.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        return status if isinstance(status, dict) else {}

    def write_status(
        self,
        state: str,
        step: int,
        total_steps: int,
        error: dict | None = None,
        started_at: str | None = None,
    ) -> None:
        assert state in STATES
        previous = self.status()
        write_json_atomic(
            self.path / "status.json",
            {
                "state": state,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "step": step,
                "total_steps": total_steps,
                "started_at": started_at or previous.get("started_at") or utc_now(),
                "updated_at": utc_now(),
                "error": error,
            },
        )

    # -------------------------------------------------------------- logs
    def append_metrics(self, record: dict) -> None:
        """One JSON line, appended with a single write so concurrent readers see whole lines."""
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def log(self, message: str) -> None:
        with open(self.path / "events.log", "a", encoding="utf-8") as f:
            f.write(f"{utc_now()} {message}\n")

    def metric_records(self) -> list[dict]:
        """Every whole record in metrics.jsonl; a line half written by a killed process (or
        anything that is not a JSON object with an integer step) is skipped."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and type(record.get("step", 0)) is int:
                records.append(record)
        return records

    def truncate_metrics_after(self, step: int) -> None:
        """On resume, drop lines from steps after the checkpoint (they will be recomputed), so
        each step is in the file once; `step` -1 empties it (a restart from step 0)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return
        if not path.is_file():
            raise InvalidInputError(f"{path} is not a file", "move it away and resume again")
        keep = [r for r in self.metric_records() if r.get("step", 0) <= step]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))

    def record_resume(self, config_dump: dict, config_hash: str, entry: dict) -> None:
        """Provenance of a resume in run.json (`resumes`); config.yaml as the run now uses it."""
        if entry.get("changes"):
            write_text_atomic(
                self.path / "config.yaml", yaml.safe_dump(config_dump, sort_keys=False)
            )
        try:
            provenance = json.loads((self.path / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            provenance = None
        provenance = provenance if isinstance(provenance, dict) else {}
        resumes = provenance.get("resumes")
        provenance["resumes"] = [*(resumes if isinstance(resumes, list) else []), entry]
        provenance["config_hash"] = config_hash
        write_json_atomic(self.path / "run.json", provenance)

    # -------------------------------------------------------------- checkpoints
    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}"

    def latest_checkpoint(self) -> Path | None:
        if not self.checkpoints.is_dir():
            return None
        done = sorted(
            p
            for p in self.checkpoints.iterdir()
            if p.name.startswith("step-") and (p / "trainer.pt").exists()
        )
        return done[-1] if done else None

    def save_checkpoint(self, step: int, write, expected_bytes: int, keep: int) -> Path:
        """`write(folder)` fills a temp folder; it is renamed into place only when complete."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.checkpoints).free
        if free < expected_bytes * 1.2 + (64 << 20):
            raise InvalidInputError(
                f"not enough disk space for a checkpoint: {free >> 20} MiB free, about {expected_bytes >> 20} MiB needed",
                f"free space on {self.checkpoints} or lower output.keep_checkpoints",
            )
        target = self.checkpoint_dir(step)
        started = time.perf_counter()
        with atomic_dir(target) as tmp:
            write(tmp)
        self._prune(keep)
        self.log(f"checkpoint step {step} written in {time.perf_counter() - started:.1f}s")
        return target

    def _prune(self, keep: int) -> None:
        done = sorted(p for p in self.checkpoints.iterdir() if p.name.startswith("step-"))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


class FollowerRunDir(RunDir):
    """What ranks other than 0 see under torchrun: reads work, writes are rank 0's job."""

    def start(self, *args, **kwargs) -> None:
        pass

    def write_status(self, *args, **kwargs) -> None:
        pass

    def append_metrics(self, record: dict) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def truncate_metrics_after(self, step: int) -> None:
        pass

    def record_resume(self, config_dump: dict, config_hash: str, entry: dict) -> None:
        pass

    def save_checkpoint(self, step: int, write, expected_bytes: int, keep: int) -> Path:
        return self.checkpoint_dir(step)
