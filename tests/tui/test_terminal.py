"""The app in a real terminal (tmux): `entrenar tui --start` on a small config, keys 1-6 show six
different screens, and killing the terminal ends the app while the run trains on to the end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from test_runs_screen import tiny_config

from entrenar_tui.core.runs.follow import pid_alive, read_run

pytestmark = pytest.mark.slow

SCREEN_TITLES = ("Models", "Memory", "Runs", "Adapters", "Sweeps", "Shell")


def tmux(*args: str) -> str:
    done = subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def tmux_binary():
    path = shutil.which("tmux")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is not installed (make test installs it)")
        pytest.skip("tmux is not installed")
    return path


def test_real_terminal_six_screens_and_the_run_outlives_the_app(
    tmux_binary, tmp_path, tiny_lm_pair
):
    teacher, student = tiny_lm_pair
    config = tiny_config(tmp_path / "tiny.yaml", teacher, student, max_steps=60, eval_every=30)
    run_dir = tmp_path / "runs" / "in-tmux"
    session = f"entrenar-test-{uuid.uuid4().hex[:8]}"
    command = (
        f"cd {tmp_path} && HF_HUB_OFFLINE=1 {sys.executable} -m entrenar_tui.cli.main tui "
        f"--start {config} --output {run_dir}"
    )
    tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", command)
    try:
        app_pid = int(tmux("list-panes", "-t", session, "-F", "#{pane_pid}").split()[0])
        screens = {}
        for key, title in zip("123456", SCREEN_TITLES, strict=True):
            tmux("send-keys", "-t", session, key)
            screens[title] = wait_for(
                lambda title=title: _pane_with(session, f"— {title}"), 60, f"the {title} screen"
            )
        assert len(set(screens.values())) == 6
        wait_for(lambda: read_run(run_dir).state == "running", 120, "the run to be running")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=30)
    wait_for(lambda: not pid_alive(app_pid), 15, "the app to exit after its terminal went away")
    summary = wait_for(
        lambda: (s := read_run(run_dir)).state in ("finished", "failed", "stale") and s,
        600,
        "the run to end",
    )
    assert summary.state == "finished", summary.error


def _pane_with(session: str, marker: str) -> str | None:
    text = tmux("capture-pane", "-p", "-t", session)
    return text if marker in text else None
