"""A run directory's life: a batch too big for the data, resume (with and without a checkpoint,
of a finished run, with --config/--set), and a second Ctrl-C. Tiny real models; real processes
where the behaviour is about processes and signals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from test_distill_run import metrics, write_config
from typer.testing import CliRunner

from entrenar_tui.cli.main import app
from entrenar_tui.core.distill.rundir import RunDir

runner = CliRunner()


def _cli(*args: str):
    return [sys.executable, "-m", "entrenar_tui.cli.main", *args]


def _status(run_dir) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def _train_steps(run_dir) -> list[int]:
    return [m["step"] for m in metrics(run_dir) if m["kind"] == "train"]


def _tree_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _training_blocks(tokenizer_dir, max_documents: int, block_size: int) -> int:
    """Full blocks of the built-in corpus, counted here without the project's packer."""
    from transformers import AutoTokenizer

    from entrenar_tui.core.distill.data import builtin_corpus

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tok(builtin_corpus(max_documents), add_special_tokens=False)["input_ids"]
    return sum(len(x) + 1 for x in ids) // block_size  # +1: the EOS after each document


# --------------------------------------------------------------------------- item 4: batch size


@pytest.fixture(scope="module")
def oversized_batch(tiny_lm_pair, tmp_path_factory):
    teacher, student = tiny_lm_pair
    root = tmp_path_factory.mktemp("oversized")
    config = write_config(root / "c.yaml", teacher, student, batch_size=5000)
    data = yaml.safe_load(config.read_text())
    data["dataset"].update(max_documents=20, eval_fraction=0.0)
    config.write_text(yaml.safe_dump(data))
    return config, _training_blocks(teacher, 20, 32)


def test_validate_reports_a_batch_larger_than_the_blocks(oversized_batch):
    config, blocks = oversized_batch
    assert 0 < blocks < 5000
    result = runner.invoke(app, ["distill", "validate", "--config", str(config), "--json"])
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    assert not report["ok"]
    [problem] = [p for p in report["problems"] if p["path"] == "training.batch_size"]
    assert problem["severity"] == "error" and problem["value"] == 5000
    assert f"{blocks} training blocks" in problem["message"]


@pytest.mark.slow
def test_run_refuses_a_batch_larger_than_the_blocks(oversized_batch, tmp_path):
    config, blocks = oversized_batch
    run_dir = tmp_path / "run"
    result = runner.invoke(
        app, ["distill", "run", "--config", str(config), "--output", str(run_dir)]
    )
    assert result.exit_code == 2, result.output
    assert "training.batch_size" in result.stderr and f"{blocks} training blocks" in result.stderr
    assert "bug" not in result.stderr
    assert _status(run_dir)["state"] == "failed"
    trained = (run_dir / "metrics.jsonl").exists() and _train_steps(run_dir)
    assert not trained, "refused before the first step"


# --------------------------------------------------------------------------- item 5: resume


def test_truncating_metrics_skips_a_half_written_last_line(tmp_path):
    """A process killed mid-write leaves a partial last line; resume must not choke on it."""
    run = RunDir(tmp_path)
    lines = [{"kind": "train", "step": s, "loss": 1.0} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines) + '{"kind": "train", "st'
    )
    run.truncate_metrics_after(2)
    assert [
        json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ] == [1, 2]


def _kill_after_steps(config, run_dir, steps: int) -> None:
    """Start a real run and SIGKILL it once `steps` train lines are in metrics.jsonl."""
    proc = subprocess.Popen(
        _cli("distill", "run", "--config", str(config), "--output", str(run_dir), "--json"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            path = run_dir / "metrics.jsonl"
            if path.exists() and path.read_text().count('"kind": "train"') >= steps:
                return
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (rc {proc.returncode}) before step {steps}")
            time.sleep(0.02)
        raise AssertionError(f"no step {steps} within 240 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_resume_without_a_checkpoint_restarts_cleanly(tiny_lm_pair, tmp_path):
    """Killed before its first checkpoint: --resume trains from step 0 again, each step is in
    metrics.jsonl once, and the result equals a run that was never interrupted."""
    teacher, student = tiny_lm_pair
    config = write_config(tmp_path / "c.yaml", teacher, student, max_steps=200, eval_every=None)
    data = yaml.safe_load(config.read_text())
    data["output"]["checkpoint_every"] = None
    config.write_text(yaml.safe_dump(data))
    killed = tmp_path / "killed"
    _kill_after_steps(config, killed, 3)
    assert not (killed / "checkpoints").exists()
    short = ["--set", "training.max_steps=8"]
    resumed = runner.invoke(app, ["distill", "run", "--resume", str(killed), "--json", *short])
    assert resumed.exit_code == 0, resumed.output
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    assert any(e["event"] == "note" and "step 0" in e["message"] for e in events)
    assert _train_steps(killed) == list(range(1, 9))
    assert [m["step"] for m in metrics(killed) if m["kind"] == "eval"] == [0, 8]

    straight = tmp_path / "straight"
    done = runner.invoke(
        app, ["distill", "run", "--config", str(config), "--output", str(straight), *short]
    )
    assert done.exit_code == 0, done.output
    assert (
        _tree_bytes(killed / "final")["model.safetensors"]
        == _tree_bytes(straight / "final")["model.safetensors"]
    )


@pytest.fixture(scope="module")
def finished_once(tiny_lm_pair, tmp_path_factory):
    """A run that finished at step 6 (its last checkpoint is step 4); tests copy it."""
    teacher, student = tiny_lm_pair
    root = tmp_path_factory.mktemp("finished")
    config = write_config(root / "c.yaml", teacher, student, max_steps=6, eval_every=None)
    run_dir = root / "run"
    result = runner.invoke(
        app, ["distill", "run", "--config", str(config), "--output", str(run_dir)]
    )
    assert result.exit_code == 0, result.output
    return config, run_dir


@pytest.fixture
def finished(finished_once, tmp_path):
    config, run_dir = finished_once
    shutil.copytree(run_dir, tmp_path / "run")
    return config, tmp_path / "run"


def _unchanged(run_dir):
    """A snapshot of what a refused resume must leave alone."""
    names = ("metrics.jsonl", "status.json", "config.yaml", "run.json")
    return {n: (run_dir / n).read_bytes() for n in names}, _tree_bytes(run_dir / "final")


@pytest.mark.slow
def test_resuming_a_finished_run_is_refused_and_keeps_final(finished):
    _, run_dir = finished
    before = _unchanged(run_dir)
    result = runner.invoke(app, ["distill", "run", "--resume", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert "already finished" in result.stderr and "training.max_steps" in result.stderr
    assert _unchanged(run_dir) == before


@pytest.mark.slow
def test_resume_with_a_longer_max_steps_continues_and_is_recorded(finished):
    _, run_dir = finished
    result = runner.invoke(
        app, ["distill", "run", "--resume", str(run_dir), "--set", "training.max_steps=10"]
    )
    assert result.exit_code == 0, result.output
    assert _status(run_dir)["state"] == "finished" and _status(run_dir)["step"] == 10
    assert _train_steps(run_dir) == list(range(1, 11))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["max_steps"] == 10
    [resume] = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert resume["changes"] == {"training.max_steps": [6, 10]} and resume["from_step"] == 4


# --------------------------------------------------------------------------- item 6: --config/--set


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--set", "training.lr=1"], "unknown key"),
        (["--set", "training.learning_rate=0.1"], "training.learning_rate"),
        (["--set", "training.max_steps=3"], "already at step 6"),
        (["--config", "c.yaml"], "--config"),
        (["--output", "elsewhere"], "--output"),
    ],
)
def test_resume_refuses_what_it_cannot_apply(finished, extra, expected):
    config, run_dir = finished
    extra = [str(config) if x == "c.yaml" else x for x in extra]
    before = _unchanged(run_dir)
    result = runner.invoke(app, ["distill", "run", "--resume", str(run_dir), *extra])
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and "hint:" in result.stderr
    assert _unchanged(run_dir) == before


# --------------------------------------------------------------------------- item 7: Ctrl-C twice


def _read_until(stream, needle: str, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = stream.readline()
        if needle in line:
            return
        if not line:
            raise AssertionError(f"the stream ended before {needle!r}")
    raise AssertionError(f"no {needle!r} within {timeout} s")


@pytest.mark.slow
def test_second_ctrl_c_marks_the_run_stopped_and_names_the_checkpoint(tiny_lm_pair, tmp_path):
    teacher, student = tiny_lm_pair
    # long steps (accumulation 24), so the second SIGINT lands inside the step the first one let run
    config = write_config(
        tmp_path / "c.yaml",
        teacher,
        student,
        max_steps=400,
        eval_every=None,
        gradient_accumulation=24,
        batch_size=4,
    )
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _cli("distill", "run", "--config", str(config), "--output", str(run_dir), "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _read_until(proc.stdout, '"event": "checkpoint"')
        proc.send_signal(signal.SIGINT)
        _read_until(proc.stderr, "stopping:")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    last = RunDir(run_dir).latest_checkpoint()
    assert last is not None
    status = _status(run_dir)
    assert status["state"] == "stopped" and status["step"] == int(last.name.split("-")[1])
    error = json.loads(out.splitlines()[-1])["error"]
    assert error["code"] == 130 and str(last) in error["message"] + error["hint"]
    assert "nothing was written" not in out + err
