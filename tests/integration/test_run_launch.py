"""Runs as child processes (core/runs/launch.py), followed through their files
(core/runs/follow.py): launch, stop with SIGTERM, resume, a launch that fails before its run
starts, and one-shot `entrenar --json` children. Real processes on tiny real models."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import yaml
from test_distill_run import write_config

from entrenar_tui.core.errors import InvalidInputError
from entrenar_tui.core.runs.follow import MetricsTail, read_run
from entrenar_tui.core.runs.launch import (
    ChildError,
    launch_run,
    resume_run,
    run_entrenar_json,
    stop_run,
)

pytestmark = pytest.mark.slow

WAIT_S = 120  # generous: the child imports torch on a shared machine
MAX_STEPS = 150  # a few seconds of training, so that a stop lands mid-run


@pytest.fixture
def launched():
    """Every LaunchedRun a test starts; any child still alive at the end is killed."""
    runs = []
    yield runs
    for run in runs:
        if run.process is not None and run.process.poll() is None:
            os.kill(run.pid, signal.SIGKILL)
            run.process.wait(timeout=30)


def wait_until(condition, what: str, timeout: float = WAIT_S, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Follower:
    """What the Runs screen does: poll the tail, clear what it drew when the file is replaced."""

    def __init__(self, run_dir):
        self.tail = MetricsTail(run_dir / "metrics.jsonl")
        self.records: list[dict] = []
        self.resets = 0

    def poll(self) -> list[dict]:
        new = self.tail.poll()
        if self.tail.reset:
            self.records, self.resets = [], self.resets + 1
        self.records += new
        return [r for r in self.records if r.get("kind") == "train"]


def test_launch_stop_resume_finish(tiny_lm_pair, tmp_path, launched):
    teacher, student = tiny_lm_pair
    config = write_config(tmp_path / "c.yaml", teacher, student, eval_every=None)
    run_dir = tmp_path / "run"
    first = launch_run(
        config,
        run_dir,
        [f"training.max_steps={MAX_STEPS}", "output.checkpoint_every=null"],
        cwd=tmp_path,
    )
    launched.append(first)
    launch = json.loads((run_dir / "launch.json").read_text())
    assert launch["pid"] == first.pid and launch["console_offset"] == 0
    assert read_run(run_dir).state in ("starting", "running")

    # The child leads its own session: no SIGHUP from our terminal reaches it.
    assert os.getsid(first.pid) == first.pid != os.getsid(0)

    follower = Follower(run_dir)
    wait_until(lambda: read_run(run_dir).state == "running" and follower.poll(), "train records")
    running = read_run(run_dir)
    assert running.pid == first.pid and running.total_steps == MAX_STEPS
    assert 0 < running.step < MAX_STEPS, "the run finished before it could be stopped"

    assert stop_run(run_dir) == first.pid
    assert first.process.wait(timeout=WAIT_S) == 0
    stopped = wait_until(lambda: (r := read_run(run_dir)).state == "stopped" and r, "stopped")
    assert 0 < stopped.step < MAX_STEPS and stopped.error is None
    assert (run_dir / "checkpoints" / f"step-{stopped.step:06d}" / "trainer.pt").exists()
    with pytest.raises(InvalidInputError, match="not running"):
        stop_run(run_dir)

    second = resume_run(run_dir, cwd=tmp_path)
    launched.append(second)
    assert read_run(run_dir).alive  # `starting`, though status.json still says stopped
    with pytest.raises(InvalidInputError, match="is still (starting|running)"):
        resume_run(run_dir)  # a second process on the same directory is refused
    assert json.loads((run_dir / "launch.json").read_text())["console_offset"] > 0
    assert second.process.wait(timeout=WAIT_S * 2) == 0
    finished = read_run(run_dir)
    assert finished.state == "finished" and finished.step == MAX_STEPS
    assert (run_dir / "final" / "model.safetensors").exists()

    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    steps = [r["step"] for r in map(json.loads, lines) if r["kind"] == "train"]
    assert steps == list(range(1, MAX_STEPS + 1))  # each step once, across the resume
    assert [r["step"] for r in follower.poll()] == steps and follower.resets >= 1
    console = (run_dir / "console.log").read_text().splitlines()
    events = [json.loads(line) for line in console if line.startswith("{")]
    ends = [e["state"] for e in events if e.get("event") == "end"]
    assert ends == ["stopped", "finished"]
    with pytest.raises(InvalidInputError, match="has finished"):
        resume_run(run_dir)


def test_launch_with_a_bad_config_ends_failed_with_its_message(tmp_path, launched):
    config = tmp_path / "bad.yaml"
    config.write_text(
        yaml.safe_dump({"teacher": {"model_id": "t"}, "student": {"model_id": "s"}, "bogus": 1})
    )
    run = launch_run(config, tmp_path / "run")
    launched.append(run)
    assert run.process.wait(timeout=WAIT_S) == 2
    summary = read_run(tmp_path / "run")
    assert summary.state == "failed" and not summary.alive
    assert "bogus: unknown key" in summary.error["message"]
    assert "valid keys" in summary.error["hint"]
    assert not (tmp_path / "run" / "status.json").exists()


def test_launch_into_a_non_empty_directory_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="not empty"):
        launch_run(tmp_path / "c.yaml", run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]  # nothing started
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        launch_run(tmp_path / "c.yaml", tmp_path / "file")


def test_run_entrenar_json_returns_the_childs_document():
    info = run_entrenar_json(["inspect", "info", "minilm-l6"], timeout=120)
    assert info["parameters"] == 22713216 and info["exit_code"] == 0


def test_run_entrenar_json_raises_the_childs_error():
    with pytest.raises(ChildError) as caught:
        run_entrenar_json(["inspect", "info", "/no/such/file.safetensors"], timeout=120)
    error = caught.value
    assert error.exit_code == 2 and "/no/such/file.safetensors" in error.message
    assert error.hint and error.to_dict()["code"] == 2


def test_a_stop_during_setup_ends_the_run_at_once(tiny_lm_pair, tmp_path, launched):
    """Before the first step there is nothing to finish: SIGTERM as soon as the run says it is
    running (it is still loading models, data and the first evaluation) stops it there, at
    step 0 with no checkpoint, instead of training a first step and checkpointing it."""
    teacher, student = tiny_lm_pair
    config = write_config(tmp_path / "c.yaml", teacher, student)
    run = launch_run(config, tmp_path / "run")
    launched.append(run)
    wait_until(lambda: (run.run_dir / "status.json").exists(), "the run to start", every=0.002)
    os.kill(run.pid, signal.SIGTERM)
    assert run.process.wait(timeout=WAIT_S) == 130
    summary = read_run(run.run_dir)
    assert summary.state == "stopped" and summary.step == 0
    assert run.run_dir.joinpath("checkpoints").is_dir() is False or not any(
        run.run_dir.joinpath("checkpoints").iterdir()
    )
    assert "interrupted before the first checkpoint" in (run.run_dir / "events.log").read_text()
